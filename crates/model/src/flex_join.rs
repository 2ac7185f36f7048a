//! A bidirectional encoder's two output sequences joined into batch-major
//! rows ([`crate::kernel::join`]) as one Burn operation on the flex CPU
//! backend, with its backward: one pass and one node in place of a
//! reversal, a concatenation and a transposition (and their gradients).
//! Other backends use those operations (`Mirror::encode_with`).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{Tensor, TensorData};

use crate::flex_ops::{contiguous, f32s, register_grads, with_host};
use crate::kernel::join::{JoinDims, join, split};

/// The join operation.
#[backend_extension(Flex, Autodiff)]
pub trait JoinBackend: Backend {
    /// `[batch, len, 2h]` from two time-major `[len * batch, h]` sequences,
    /// each in reversed source order where its flag says so (see
    /// [`crate::kernel::join`]).
    fn join_directions(
        first: FloatTensor<Self>,
        second: FloatTensor<Self>,
        batch: usize,
        first_reversed: bool,
        second_reversed: bool,
    ) -> FloatTensor<Self>;
}

/// The sizes of a join of `first` and `second`.
fn dims(first: &FlexTensor, second: &FlexTensor, batch: usize, reversed: [bool; 2]) -> JoinDims {
    let (a, b) = (first.layout().shape(), second.layout().shape());
    assert!(
        a.len() == 2 && a == b && batch > 0 && a[0] % batch == 0,
        "directions to join: {a:?} and {b:?}, batch {batch}"
    );
    JoinDims {
        len: a[0] / batch,
        batch,
        h: a[1],
        reversed,
    }
}

fn forward(
    first: FlexTensor,
    second: FlexTensor,
    batch: usize,
    reversed: [bool; 2],
) -> (FlexTensor, JoinDims) {
    let [first, second] = [first, second].map(contiguous);
    let d = dims(&first, &second, batch, reversed);
    let out = join([f32s(&first), f32s(&second)], d);
    (
        FlexTensor::from_data(TensorData::new(out, [d.batch, d.len, 2 * d.h])),
        d,
    )
}

impl JoinBackend for Flex {
    fn join_directions(
        first: FlexTensor,
        second: FlexTensor,
        batch: usize,
        first_reversed: bool,
        second_reversed: bool,
    ) -> FlexTensor {
        forward(first, second, batch, [first_reversed, second_reversed]).0
    }
}

#[derive(Debug)]
struct JoinBackward;

impl Backward<Flex, 2> for JoinBackward {
    type State = JoinDims;

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let d = ops.state;
        let dirs = with_host(grads.consume::<Flex>(&ops.node), |_, dj| split(dj, d));
        let shape = vec![d.len * d.batch, d.h];
        let [first, second] = dirs;
        register_grads(
            grads,
            ops.parents.map(|p| p.map(|node| node.id)),
            [(first, shape.clone()), (second, shape)],
        );
    }
}

impl<C: CheckpointStrategy> JoinBackend for Autodiff<Flex, C> {
    fn join_directions(
        first: FloatTensor<Self>,
        second: FloatTensor<Self>,
        batch: usize,
        first_reversed: bool,
        second_reversed: bool,
    ) -> FloatTensor<Self> {
        let reversed = [first_reversed, second_reversed];
        let nodes = [first.node(), second.node()];
        let (out, d) = forward(
            first.into_primitive(),
            second.into_primitive(),
            batch,
            reversed,
        );
        match JoinBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(d, out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

/// `[batch, len, 2h]` joined from two time-major `[len * batch, h]`
/// sequences (see [`JoinBackend::join_directions`]); flex tensors only.
pub fn join_directions(
    first: Tensor<2>,
    second: Tensor<2>,
    batch: usize,
    reversed: [bool; 2],
) -> Tensor<3> {
    let out = <Dispatch as JoinBackend>::join_directions(
        first.into_dispatch(),
        second.into_dispatch(),
        batch,
        reversed[0],
        reversed[1],
    );
    Tensor::<3>::from_dispatch(out)
}
