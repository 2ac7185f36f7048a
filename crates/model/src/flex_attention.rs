//! Windowed attention ([`crate::kernel::attention`]) as one Burn operation on the
//! flex CPU backend, with its hand-written backward: one autodiff node in
//! place of the dense scores, bias, softmax and context products (and
//! their `[rows, positions]` intermediates). Other backends compute the
//! same function densely, masked (`Mirror::context`).

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{Tensor, TensorData};

use crate::flex_ops::{contiguous, f32s, with_host};
use crate::kernel::attention::{
    AttnDims, Operands, Windows, attention_backward, attention_forward,
};

/// The windowed attention operation.
#[backend_extension(Flex, Autodiff)]
pub trait WindowAttentionBackend: Backend {
    /// Contexts `[sentences, steps, e]` of decoder rows `dec` `[sentences,
    /// steps, h]` over `keys` `[sentences, len, h]` and `values`
    /// `[sentences, len, e]`, each row restricted to its window and biased
    /// by `scale * table[bucket]` (`table` `[buckets, 1]`).
    fn window_attention(
        dec: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        table: FloatTensor<Self>,
        windows: Arc<Windows>,
        scale: f32,
    ) -> FloatTensor<Self>;
}

/// The operands (contiguous flex tensors: a handle to their buffers, read
/// in place by both passes; only a strided view is copied, once), and the
/// forward's results.
#[derive(Debug)]
struct Forward {
    dec: FlexTensor,
    keys: FlexTensor,
    values: FlexTensor,
    table: FlexTensor,
    windows: Arc<Windows>,
    scale: f32,
    dims: AttnDims,
    /// Shapes of dec, keys, values, table, for their gradients.
    shapes: [Vec<usize>; 4],
    alpha: Vec<f32>,
}

fn forward(
    dec: FlexTensor,
    keys: FlexTensor,
    values: FlexTensor,
    table: FlexTensor,
    windows: Arc<Windows>,
    scale: f32,
) -> (FlexTensor, Forward) {
    let [dec, keys, values, table] = [dec, keys, values, table].map(contiguous);
    let [ds, ks, vs, ts] = [&dec, &keys, &values, &table].map(|t| t.layout().shape().to_vec());
    assert!(
        ds.len() == 3 && ks.len() == 3 && vs.len() == 3 && ts.len() == 2 && ts[1] == 1,
        "attention operands are [sentences, rows, width], the table [buckets, 1]"
    );
    assert!(
        ds[0] == ks[0] && ks[0] == vs[0] && ks[1] == vs[1] && ds[2] == ks[2],
        "attention operands of one batch: {ds:?}, {ks:?}, {vs:?}"
    );
    assert_eq!(
        (ds[1], ks[1]),
        (windows.steps, windows.len),
        "windows for these shapes"
    );
    let dims = AttnDims { h: ds[2], e: vs[2] };
    let out_shape = [ds[0], ds[1], dims.e];
    let mut f = Forward {
        dec,
        keys,
        values,
        table,
        windows,
        scale,
        dims,
        shapes: [ds, ks, vs, ts],
        alpha: vec![],
    };
    let (context, alpha) = attention_forward(&f.operands());
    f.alpha = alpha;
    (
        FlexTensor::from_data(TensorData::new(context, out_shape)),
        f,
    )
}

impl Forward {
    fn operands(&self) -> Operands<'_> {
        Operands {
            dec: f32s(&self.dec),
            keys: f32s(&self.keys),
            values: f32s(&self.values),
            table: f32s(&self.table),
            scale: self.scale,
            windows: &self.windows,
            dims: self.dims,
        }
    }
}

impl WindowAttentionBackend for Flex {
    fn window_attention(
        dec: FlexTensor,
        keys: FlexTensor,
        values: FlexTensor,
        table: FlexTensor,
        windows: Arc<Windows>,
        scale: f32,
    ) -> FlexTensor {
        forward(dec, keys, values, table, windows, scale).0
    }
}

#[derive(Debug)]
struct WindowAttentionBackward;

impl Backward<Flex, 4> for WindowAttentionBackward {
    type State = Arc<Forward>;

    fn backward(
        self,
        ops: Ops<Self::State, 4>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let f = &*ops.state;
        let (ddec, dkeys, dvalues, dtable) =
            with_host(grads.consume::<Flex>(&ops.node), |_, dctx| {
                attention_backward(&f.operands(), &f.alpha, dctx)
            });
        for ((parent, grad), shape) in ops
            .parents
            .into_iter()
            .zip([ddec, dkeys, dvalues, dtable])
            .zip(&f.shapes)
        {
            if let Some(node) = parent {
                let grad = FlexTensor::from_data(TensorData::new(grad, shape.clone()));
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

impl<C: CheckpointStrategy> WindowAttentionBackend for Autodiff<Flex, C> {
    fn window_attention(
        dec: FloatTensor<Self>,
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        table: FloatTensor<Self>,
        windows: Arc<Windows>,
        scale: f32,
    ) -> FloatTensor<Self> {
        let nodes = [dec.node(), keys.node(), values.node(), table.node()];
        match WindowAttentionBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, f) = forward(
                    dec.into_primitive(),
                    keys.into_primitive(),
                    values.into_primitive(),
                    table.into_primitive(),
                    windows,
                    scale,
                );
                prep.finish(Arc::new(f), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(<Flex as WindowAttentionBackend>::window_attention(
                    dec.into_primitive(),
                    keys.into_primitive(),
                    values.into_primitive(),
                    table.into_primitive(),
                    windows,
                    scale,
                ))
            }
        }
    }
}

/// Contexts `[sentences, steps, e]` of windowed attention (see
/// [`WindowAttentionBackend::window_attention`]); flex tensors only.
pub fn window_attention(
    dec: Tensor<3>,
    keys: Tensor<3>,
    values: Tensor<3>,
    table: Tensor<2>,
    windows: Arc<Windows>,
    scale: f32,
) -> Tensor<3> {
    let out = <Dispatch as WindowAttentionBackend>::window_attention(
        dec.into_dispatch(),
        keys.into_dispatch(),
        values.into_dispatch(),
        table.into_dispatch(),
        windows,
        scale,
    );
    Tensor::<3>::from_dispatch(out)
}
