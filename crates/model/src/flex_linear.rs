//! A dense layer `x w + b` ([`crate::kernel::linear`]) as one Burn
//! operation on the flex CPU backend, with its hand-written backward: one
//! node and three products on the `gemm` crate, where Burn's product,
//! broadcast addition and transposed products allocate, zero-fill and copy
//! around each product. Other backends use those operations
//! (`Lstm::projected`).

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
use crate::kernel::Precision;
use crate::kernel::linear::{LinearDims, linear_backward, linear_forward};

/// The dense layer operation.
#[backend_extension(Flex, Autodiff)]
pub trait LinearBackend: Backend {
    /// `x w + b`: `[rows, d_in]`, `[d_in, d_out]`, `[1, d_out]` -> `[rows,
    /// d_out]`, the products by `w` in `precision` where it applies.
    fn linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self>;
}

/// The operands, contiguous (handles to their buffers, read in place by
/// both passes), their sizes and the precision of the products.
#[derive(Debug)]
struct Operands {
    x: FlexTensor,
    w: FlexTensor,
    dims: LinearDims,
    precision: Precision,
}

fn forward(
    x: FlexTensor,
    w: FlexTensor,
    b: FlexTensor,
    precision: Precision,
) -> (Operands, FlexTensor) {
    let [x, w, b] = [x, w, b].map(contiguous);
    let (xs, ws, bs) = (x.layout().shape(), w.layout().shape(), b.layout().shape());
    assert!(
        xs.len() == 2 && ws.len() == 2 && xs[1] == ws[0] && bs[..] == [1, ws[1]],
        "dense layer operands: x {xs:?}, w {ws:?}, b {bs:?}"
    );
    let dims = LinearDims {
        rows: xs[0],
        d_in: ws[0],
        d_out: ws[1],
    };
    let y = linear_forward(f32s(&x), f32s(&w), f32s(&b), dims, precision);
    let y = FlexTensor::from_data(TensorData::new(y, [dims.rows, dims.d_out]));
    let operands = Operands {
        x,
        w,
        dims,
        precision,
    };
    (operands, y)
}

impl LinearBackend for Flex {
    fn linear(x: FlexTensor, w: FlexTensor, b: FlexTensor, precision: Precision) -> FlexTensor {
        forward(x, w, b, precision).1
    }
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = Arc<Operands>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let o = &*ops.state;
        let d = o.dims;
        let g = with_host(grads.consume::<Flex>(&ops.node), |shape, dy| {
            assert_eq!(shape, [d.rows, d.d_out], "dense layer output gradient");
            linear_backward(f32s(&o.x), f32s(&o.w), dy, d, o.precision)
        });
        register_grads(
            grads,
            ops.parents.map(|p| p.map(|node| node.id)),
            [
                (g.dx, vec![d.rows, d.d_in]),
                (g.dw, vec![d.d_in, d.d_out]),
                (g.db, vec![1, d.d_out]),
            ],
        );
    }
}

impl<C: CheckpointStrategy> LinearBackend for Autodiff<Flex, C> {
    fn linear(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), w.node(), b.node()];
        let (operands, y) = forward(
            x.into_primitive(),
            w.into_primitive(),
            b.into_primitive(),
            precision,
        );
        match LinearBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(Arc::new(operands), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// `x w + b` (see [`LinearBackend::linear`]); flex tensors only.
pub fn linear(x: Tensor<2>, w: Tensor<2>, b: Tensor<2>, precision: Precision) -> Tensor<2> {
    let out = <Dispatch as LinearBackend>::linear(
        x.into_dispatch(),
        w.into_dispatch(),
        b.into_dispatch(),
        precision,
    );
    Tensor::<2>::from_dispatch(out)
}
