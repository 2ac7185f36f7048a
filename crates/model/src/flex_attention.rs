//! Windowed attention and the attentional layer over it
//! ([`crate::kernel::attentional`]) as one Burn operation on the flex CPU
//! backend, with its hand-written backward: one autodiff node in place of
//! the dense scores, bias, softmax and context products (and their
//! `[rows, positions]` intermediates), the join with the decoder rows, the
//! layer's product, bias and `tanh`. Other backends compute the same
//! function densely, masked (`Mirror::attended`).

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{Tensor, TensorData};

use crate::flex_ops::{contiguous, f32s, register_grads, with_host};
use crate::kernel::attention::{AttnDims, Windows};
use crate::kernel::attentional::{Inputs, Layer, Saved, attentional_backward, attentional_forward};

/// The windowed attention operation with its attentional layer.
#[backend_extension(Flex, Autodiff)]
pub trait WindowedAttentionalBackend: Backend {
    /// `tanh([ctx; dec] w + b)` `[sentences * steps, h]` for decoder rows
    /// `dec` `[sentences, steps, h]`, where `ctx` `[.., e]` is their
    /// attention over `values` `[sentences, len, e]` with keys `values w_a`
    /// (`w_a` `[e, h]`), each row restricted to its window and biased by
    /// `scale * table[bucket]` (`table` `[buckets, 1]`); `w` `[e + h, h]`,
    /// `b` `[1, h]`.
    #[allow(clippy::too_many_arguments)]
    fn windowed_attentional(
        dec: FloatTensor<Self>,
        values: FloatTensor<Self>,
        w_a: FloatTensor<Self>,
        table: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        windows: Arc<Windows>,
        scale: f32,
    ) -> FloatTensor<Self>;
}

/// The operands, in parent order: decoder rows, values, the score's
/// weights, bias table, layer weights and bias.
type AttentionalOperands = [FlexTensor; 6];

/// The operands (contiguous flex tensors: a handle to their buffers, read
/// in place by both passes; only a strided view is copied, once), the
/// forward's output (a handle too) and what it saved.
#[derive(Debug)]
struct Forward {
    operands: AttentionalOperands,
    windows: Arc<Windows>,
    scale: f32,
    dims: AttnDims,
    /// Shapes of the operands, for their gradients.
    shapes: [Vec<usize>; 6],
    out: FlexTensor,
    saved: Saved,
}

fn forward(operands: AttentionalOperands, windows: Arc<Windows>, scale: f32) -> Forward {
    let operands = operands.map(contiguous);
    let shapes = operands.each_ref().map(|t| t.layout().shape().to_vec());
    let [dec, values, w_a, table, w, b] = &shapes;
    assert!(
        dec.len() == 3
            && values.len() == 3
            && table.len() == 2
            && table[1] == 1
            && dec[0] == values[0],
        "attention operands are [sentences, rows, width] of one batch, the table [buckets, 1]: {dec:?}, {values:?}, {table:?}"
    );
    let dims = AttnDims {
        h: dec[2],
        e: values[2],
    };
    assert!(
        w_a[..] == [dims.e, dims.h] && w[..] == [dims.e + dims.h, dims.h] && b[..] == [1, dims.h],
        "attentional layer {w_a:?}, {w:?}, {b:?} for widths e {}, h {}",
        dims.e,
        dims.h
    );
    assert_eq!(
        (dec[1], values[1]),
        (windows.steps, windows.len),
        "windows for these shapes"
    );
    let out_shape = [dec[0] * dec[1], dims.h];
    let mut f = Forward {
        operands,
        windows,
        scale,
        dims,
        shapes,
        out: FlexTensor::from_data(TensorData::new(Vec::<f32>::new(), [0, dims.h])),
        saved: Saved::default(),
    };
    let (y, saved) = attentional_forward(&f.inputs(), f.layer());
    f.out = FlexTensor::from_data(TensorData::new(y, out_shape));
    f.saved = saved;
    f
}

impl Forward {
    fn inputs(&self) -> Inputs<'_> {
        let [dec, values, _, table, ..] = &self.operands;
        Inputs {
            dec: f32s(dec),
            values: f32s(values),
            table: f32s(table),
            scale: self.scale,
            windows: &self.windows,
            dims: self.dims,
        }
    }

    fn layer(&self) -> Layer<'_> {
        let [_, _, w_a, _, w, b] = &self.operands;
        Layer {
            w_a: f32s(w_a),
            w: f32s(w),
            b: f32s(b),
        }
    }
}

impl WindowedAttentionalBackend for Flex {
    fn windowed_attentional(
        dec: FlexTensor,
        values: FlexTensor,
        w_a: FlexTensor,
        table: FlexTensor,
        w: FlexTensor,
        b: FlexTensor,
        windows: Arc<Windows>,
        scale: f32,
    ) -> FlexTensor {
        forward([dec, values, w_a, table, w, b], windows, scale).out
    }
}

#[derive(Debug)]
struct WindowedAttentionalBackward;

impl Backward<Flex, 6> for WindowedAttentionalBackward {
    type State = Arc<Forward>;

    fn backward(
        self,
        ops: Ops<Self::State, 6>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let f = &*ops.state;
        let g = with_host(grads.consume::<Flex>(&ops.node), |_, dy| {
            attentional_backward(&f.inputs(), f.layer(), &f.saved, f32s(&f.out), dy)
        });
        let [dec, values, w_a, table, w, b] = f.shapes.clone();
        register_grads(
            grads,
            ops.parents.map(|p| p.map(|node| node.id)),
            [
                (g.ddec, dec),
                (g.dvalues, values),
                (g.dw_a, w_a),
                (g.dtable, table),
                (g.dw, w),
                (g.db, b),
            ],
        );
    }
}

impl<C: CheckpointStrategy> WindowedAttentionalBackend for Autodiff<Flex, C> {
    fn windowed_attentional(
        dec: FloatTensor<Self>,
        values: FloatTensor<Self>,
        w_a: FloatTensor<Self>,
        table: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        windows: Arc<Windows>,
        scale: f32,
    ) -> FloatTensor<Self> {
        let operands = [dec, values, w_a, table, w, b];
        let nodes = operands.each_ref().map(|t| t.node());
        let primitives = operands.map(|t| t.into_primitive());
        let tracked = WindowedAttentionalBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful();
        let f = forward(primitives, windows, scale);
        match tracked {
            OpsKind::Tracked(prep) => {
                let out = f.out.clone();
                prep.finish(Arc::new(f), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(f.out),
        }
    }
}

/// `tanh([ctx; dec] w + b)` `[sentences * steps, h]` of windowed attention
/// (see [`WindowedAttentionalBackend::windowed_attentional`]); flex tensors only.
#[allow(clippy::too_many_arguments)]
pub fn windowed_attentional(
    dec: Tensor<3>,
    values: Tensor<3>,
    w_a: Tensor<2>,
    table: Tensor<2>,
    w: Tensor<2>,
    b: Tensor<2>,
    windows: Arc<Windows>,
    scale: f32,
) -> Tensor<2> {
    let out = <Dispatch as WindowedAttentionalBackend>::windowed_attentional(
        dec.into_dispatch(),
        values.into_dispatch(),
        w_a.into_dispatch(),
        table.into_dispatch(),
        w.into_dispatch(),
        b.into_dispatch(),
        windows,
        scale,
    );
    Tensor::<2>::from_dispatch(out)
}
