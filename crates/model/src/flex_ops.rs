//! The whole unrolled LSTM sequence as one Burn operation on the flex CPU
//! backend, with a hand-written backward pass (`kernel`): one autodiff node
//! instead of a dozen per time step.
//!
//! The operation takes the input projections `p` `[steps * batch, 4H]` (or,
//! `lstm_sequence_lookup`, a projected table `[vocab, 4H]` and the id of
//! each row: one-hot and embedded inputs, looked up step by step inside),
//! the recurrent weights `wh` `[H, 4H]` and the initial state `h0`, `c0`
//! `[batch, H]`, and returns `[steps * batch + batch, H]`: the outputs of
//! every step, then the final cell state. Other backends run the same
//! computation as ordinary Burn operations (`Lstm::forward_projected`).

use std::sync::Arc;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::kernel::{self, Precision, Projections, SeqDims, SplitCache};
use crate::lstm::Projected;

/// The LSTM sequence operation.
#[backend_extension(Flex, Autodiff)]
pub trait LstmSeqBackend: Backend {
    /// `[steps * batch, 4H]`, `[H, 4H]`, `[batch, H]`, `[batch, H]` -> `[steps * batch + batch, H]`;
    /// the recurrent products in `precision` where it applies.
    fn lstm_sequence(
        p: FloatTensor<Self>,
        wh: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self>;

    /// [`lstm_sequence`](LstmSeqBackend::lstm_sequence) with input
    /// projections looked up: row `ids[r]` of `table` `[vocab, 4H]` for row
    /// `r`; `ids` `[steps * batch]` (int).
    fn lstm_sequence_lookup(
        table: FloatTensor<Self>,
        ids: IntTensor<Self>,
        wh: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self>;

    /// Mean softmax cross-entropy of `h w + b` against `labels`:
    /// `[n, d]`, `[d, v]`, `[1, v]`, `[n]` (int) -> `[1]`.
    fn linear_cross_entropy(
        h: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        labels: IntTensor<Self>,
    ) -> FloatTensor<Self>;

    /// `tanh` of every element with [`kernel::tanh`] (vectorised; Burn's
    /// calls the C library's per element), any shape.
    fn fast_tanh(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// Rows `start..start + len` of `x` `[rows, d]`, a view, as Burn's
    /// `narrow`; its backward pass writes the parent's gradient in one pass
    /// (the rows' gradient, zeros around it), where `narrow`'s zero-fills
    /// the parent's shape, copies that into an aligned buffer, then
    /// assigns the rows (2% of a mirror step: every LSTM's outputs and
    /// final state are rows of its operation's output).
    fn rows(x: FloatTensor<Self>, start: usize, len: usize) -> FloatTensor<Self>;
}

/// The values and shape of a flex tensor, with `tanh` applied.
fn tanh_host(x: FlexTensor) -> (Vec<usize>, Vec<f32>) {
    let (shape, mut v) = host(x);
    kernel::math::tanh_all(&mut v);
    (shape, v)
}

/// `f` of a flex tensor's shape and values: borrowed from its buffer where
/// they lie there contiguously (no copy: the gradient of an LSTM sequence
/// is megabytes), else copied once by [`host`].
pub(crate) fn with_host<R>(t: FlexTensor, f: impl FnOnce(&[usize], &[f32]) -> R) -> R {
    if let Some(values) = t.as_slice::<f32>() {
        return f(t.layout().shape(), values);
    }
    let (shape, values) = host(t);
    f(&shape, &values)
}

/// `t` with its f32 values contiguous in its buffer ([`f32s`] reads them):
/// itself, or a strided view copied once.
pub(crate) fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

/// The values of a tensor [`contiguous`] made.
pub(crate) fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice().expect("a contiguous f32 tensor")
}

/// The shape and values of a flex tensor, copied once. `into_data` copies
/// a tensor that autodiff also holds twice (to bytes, then to aligned
/// bytes) and then once more into a `Vec<f32>` (the aligned allocation
/// cannot become one): about 6% of the mirror model's training time.
fn host(t: FlexTensor) -> (Vec<usize>, Vec<f32>) {
    if let Some(values) = t.as_slice::<f32>() {
        return (t.layout().shape().to_vec(), values.to_vec());
    }
    let data = t.into_data();
    let shape = data.shape().to_vec();
    (shape, data.try_into_vec_as::<f32>().expect("f32 tensor"))
}

/// Registers each gradient `(values, shape)` for its parent, where autodiff
/// tracks the parent (`None`: not tracked): the end of a hand-written
/// backward pass whose gradients are all computed together.
pub(crate) fn register_grads<const N: usize>(
    grads: &mut Gradients,
    parents: [Option<NodeId>; N],
    values: [(Vec<f32>, Vec<usize>); N],
) {
    for (parent, (values, shape)) in parents.into_iter().zip(values) {
        if let Some(id) = parent {
            grads.register::<Flex>(id, FlexTensor::from_data(TensorData::new(values, shape)));
        }
    }
}

fn flex(values: Vec<f32>, shape: [usize; 2]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The sizes of a sequence of `rows` input rows, `width` projections each.
fn dims_of(rows: usize, width: usize, wh: &[usize], h0: &[usize]) -> SeqDims {
    let (batch, hidden) = (h0[0], h0[1]);
    assert_eq!(wh, [hidden, 4 * hidden], "recurrent weights");
    assert_eq!(width, 4 * hidden, "input projections");
    assert_eq!(rows % batch, 0, "rows are whole steps");
    SeqDims {
        steps: rows / batch,
        batch,
        hidden,
    }
}

/// The sequence's operands but its input projections: contiguous flex
/// tensors, read in place by both passes ([`f32s`]; a decoder step used to
/// copy the recurrent weights each time).
struct Inputs {
    wh: FlexTensor,
    h0: FlexTensor,
    c0: FlexTensor,
}

/// The sequence over the input projections `p` (read in their buffer where
/// they lie contiguously: [`with_host`]), or over the rows of the table `p`
/// named by `ids`: its output tensor, the sizes, and the operands the
/// backward pass keeps.
fn run(
    p: FlexTensor,
    ids: Option<&[u32]>,
    [wh, h0, c0]: [FlexTensor; 3],
    precision: Precision,
    cache: &mut SplitCache,
) -> (FlexTensor, SeqDims, Inputs) {
    let i = Inputs {
        wh: contiguous(wh),
        h0: contiguous(h0),
        c0: contiguous(c0),
    };
    let (dims, (mut out, c_last)) = with_host(p, |ps, p| {
        let input = match ids {
            None => Projections::Rows(p),
            Some(ids) => Projections::Lookup { table: p, ids },
        };
        let rows = input.rows(ps[1]);
        let dims = dims_of(rows, ps[1], i.wh.layout().shape(), i.h0.layout().shape());
        let (wh, h0, c0) = (f32s(&i.wh), f32s(&i.h0), f32s(&i.c0));
        (
            dims,
            kernel::forward_split(dims, input, wh, (h0, c0), precision, cache),
        )
    });
    out.extend_from_slice(&c_last);
    (
        flex(out, [(dims.steps + 1) * dims.batch, dims.hidden]),
        dims,
        i,
    )
}

/// Input ids as table rows.
fn ids_host(t: FlexTensor) -> Vec<u32> {
    labels_host(t)
        .into_iter()
        .map(|id| u32::try_from(id).unwrap_or_else(|_| panic!("input id {id} out of range")))
        .collect()
}

fn labels_host(t: FlexTensor) -> Vec<i64> {
    t.into_data()
        .try_into_vec_as::<i64>()
        .expect("integer labels")
}

/// Host copies of the classifier's operands and its forward result.
#[derive(Debug)]
struct Xent {
    h: Vec<f32>,
    w: Vec<f32>,
    labels: Vec<i64>,
    dims: (usize, usize, usize),
    loss: f64,
    probs: Vec<f32>,
}

fn xent(h: FlexTensor, w: FlexTensor, b: FlexTensor, labels: FlexTensor) -> Xent {
    let (hs, h) = host(h);
    let (ws, w) = host(w);
    let (_, b) = host(b);
    let labels = labels_host(labels);
    let (n, d, v) = (hs[0], hs[1], ws[1]);
    assert_eq!(ws[0], d, "classifier weights");
    let (loss, probs) = kernel::linear_xent(&h, &w, &b, &labels, n, d, v);
    Xent {
        h,
        w,
        labels,
        dims: (n, d, v),
        loss,
        probs,
    }
}

fn scalar(x: f64) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(vec![x as f32], [1]))
}

impl LstmSeqBackend for Flex {
    fn lstm_sequence(
        p: FlexTensor,
        wh: FlexTensor,
        h0: FlexTensor,
        c0: FlexTensor,
        precision: Precision,
    ) -> FlexTensor {
        run(p, None, [wh, h0, c0], precision, &mut SplitCache::default()).0
    }

    fn lstm_sequence_lookup(
        table: FlexTensor,
        ids: FlexTensor,
        wh: FlexTensor,
        h0: FlexTensor,
        c0: FlexTensor,
        precision: Precision,
    ) -> FlexTensor {
        let ids = ids_host(ids);
        run(
            table,
            Some(&ids),
            [wh, h0, c0],
            precision,
            &mut SplitCache::default(),
        )
        .0
    }

    fn linear_cross_entropy(
        h: FlexTensor,
        w: FlexTensor,
        b: FlexTensor,
        labels: FlexTensor,
    ) -> FlexTensor {
        scalar(xent(h, w, b, labels).loss)
    }

    fn fast_tanh(x: FlexTensor) -> FlexTensor {
        let (shape, y) = tanh_host(x);
        FlexTensor::from_data(TensorData::new(y, shape))
    }

    fn rows(x: FlexTensor, start: usize, len: usize) -> FlexTensor {
        x.narrow(0, start, len)
    }
}

#[derive(Debug)]
struct RowsBackward;

impl Backward<Flex, 1> for RowsBackward {
    /// The parent's shape `[rows, d]` and the first row taken.
    type State = ([usize; 2], usize);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let ([rows, d], start) = ops.state;
        let parent = with_host(grads.consume::<Flex>(&ops.node), |_, dy| {
            assert!(
                start * d + dy.len() <= rows * d,
                "the rows' gradient inside the parent's"
            );
            let mut g = Vec::with_capacity(rows * d);
            g.resize(start * d, 0.0);
            g.extend_from_slice(dy);
            g.resize(rows * d, 0.0);
            g
        });
        register_grads(
            grads,
            ops.parents.map(|p| p.map(|node| node.id)),
            [(parent, vec![rows, d])],
        );
    }
}

#[derive(Debug)]
struct TanhBackward;

impl Backward<Flex, 1> for TanhBackward {
    /// The output `y` and its shape: `dx = dy (1 - y^2)`.
    type State = (Vec<usize>, Arc<Vec<f32>>);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (shape, y) = ops.state;
        let (_, mut d) = host(grads.consume::<Flex>(&ops.node));
        for (d, y) in d.iter_mut().zip(y.iter()) {
            *d *= 1.0 - y * y;
        }
        register_grads(
            grads,
            ops.parents.map(|p| p.map(|node| node.id)),
            [(d, shape)],
        );
    }
}

#[derive(Debug)]
struct XentBackward;

/// The classifier's backward state.
#[derive(Debug, Clone)]
struct XentState(Arc<Xent>);

impl Backward<Flex, 3> for XentBackward {
    type State = XentState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let x = &*ops.state.0;
        let (n, d, v) = &x.dims;
        let (_, dloss) = host(grads.consume::<Flex>(&ops.node));
        let (dh, dw, db) = kernel::linear_xent_backward(
            &x.h,
            &x.w,
            x.probs.clone(),
            &x.labels,
            *n,
            *d,
            *v,
            dloss[0],
        );
        let [ph, pw, pb] = ops.parents;
        if let Some(node) = ph {
            grads.register::<Flex>(node.id, flex(dh, [*n, *d]));
        }
        if let Some(node) = pw {
            grads.register::<Flex>(node.id, flex(dw, [*d, *v]));
        }
        if let Some(node) = pb {
            grads.register::<Flex>(node.id, flex(db, [1, *v]));
        }
    }
}

#[derive(Debug)]
struct LstmSeqBackward;

/// What the backward pass needs, shared cheaply.
#[derive(Debug, Clone)]
struct SeqState {
    dims: SeqDims,
    cache: Arc<SplitCache>,
    wh: FlexTensor,
    h0: FlexTensor,
    c0: FlexTensor,
    /// A lookup's ids and table rows.
    lookup: Option<Arc<Lookup>>,
}

/// The ids of a sequence's input rows and the rows of the table they name.
#[derive(Debug)]
struct Lookup {
    ids: Vec<u32>,
    vocab: usize,
}

impl Backward<Flex, 4> for LstmSeqBackward {
    type State = SeqState;

    fn backward(
        self,
        ops: Ops<Self::State, 4>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let s = ops.state;
        let (rows, hd, b) = (s.dims.steps * s.dims.batch, s.dims.hidden, s.dims.batch);
        // the backward pass writes its gradients over the cache: its own
        // copy where autodiff kept another (not in a plain backward pass)
        let cache = Arc::try_unwrap(s.cache).unwrap_or_else(|shared| (*shared).clone());
        // a detached initial state (carried over from the previous batch)
        // takes no gradient: the first step's product for it is skipped
        let dh0_wanted = ops.parents[2].is_some();
        let g = with_host(grads.consume::<Flex>(&ops.node), |_, d_out| {
            let (dhs, dc_last) = d_out.split_at(rows * hd);
            let (wh, h0, c0) = (f32s(&s.wh), f32s(&s.h0), f32s(&s.c0));
            let lookup = s.lookup.as_deref().map(|l| (&l.ids[..], l.vocab));
            let (state, d_out) = ((h0, c0), (dhs, dc_last));
            kernel::backward_split(s.dims, cache, wh, state, d_out, lookup, dh0_wanted)
        });
        let [p, wh, h0, c0] = ops.parents;
        if let Some(node) = p {
            let grad = match s.lookup.as_deref() {
                None => flex(g.dp, [rows, 4 * hd]),
                Some(Lookup { vocab, .. }) => flex(g.dtable, [*vocab, 4 * hd]),
            };
            grads.register::<Flex>(node.id, grad);
        }
        if let Some(node) = wh {
            grads.register::<Flex>(node.id, flex(g.dwh, [hd, 4 * hd]));
        }
        if let Some(node) = h0 {
            grads.register::<Flex>(node.id, flex(g.dh0, [b, hd]));
        }
        if let Some(node) = c0 {
            grads.register::<Flex>(node.id, flex(g.dc0, [b, hd]));
        }
    }
}

impl<C: CheckpointStrategy> LstmSeqBackend for Autodiff<Flex, C> {
    fn rows(x: FloatTensor<Self>, start: usize, len: usize) -> FloatTensor<Self> {
        match RowsBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.into_primitive();
                let shape = x.layout().shape();
                let parent = [shape[0], shape[1]];
                prep.finish((parent, start), x.narrow(0, start, len))
            }
            OpsKind::UnTracked(prep) => prep.finish(x.into_primitive().narrow(0, start, len)),
        }
    }

    fn fast_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match TanhBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (shape, y) = tanh_host(x.into_primitive());
                let out = FlexTensor::from_data(TensorData::new(y.clone(), shape.clone()));
                prep.finish((shape, Arc::new(y)), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(<Flex as LstmSeqBackend>::fast_tanh(x.into_primitive()))
            }
        }
    }

    fn lstm_sequence(
        p: FloatTensor<Self>,
        wh: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self> {
        tracked_sequence::<C>(p, None, [wh, h0, c0], precision)
    }

    fn lstm_sequence_lookup(
        table: FloatTensor<Self>,
        ids: IntTensor<Self>,
        wh: FloatTensor<Self>,
        h0: FloatTensor<Self>,
        c0: FloatTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self> {
        tracked_sequence::<C>(table, Some(ids_host(ids)), [wh, h0, c0], precision)
    }

    fn linear_cross_entropy(
        h: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        labels: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        let nodes = [h.node(), w.node(), b.node()];
        match XentBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let x = xent(
                    h.into_primitive(),
                    w.into_primitive(),
                    b.into_primitive(),
                    labels,
                );
                let loss = scalar(x.loss);
                prep.finish(XentState(Arc::new(x)), loss)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(<Flex as LstmSeqBackend>::linear_cross_entropy(
                    h.into_primitive(),
                    w.into_primitive(),
                    b.into_primitive(),
                    labels,
                ))
            }
        }
    }
}

/// The sequence operation on autodiff flex tensors (see [`run`]).
fn tracked_sequence<C: CheckpointStrategy>(
    p: FloatTensor<Autodiff<Flex, C>>,
    ids: Option<Vec<u32>>,
    [wh, h0, c0]: [FloatTensor<Autodiff<Flex, C>>; 3],
    precision: Precision,
) -> FloatTensor<Autodiff<Flex, C>> {
    let nodes = [p.node(), wh.node(), h0.node(), c0.node()];
    let [p, wh, h0, c0] = [p, wh, h0, c0].map(|t| t.into_primitive());
    let tracked = LstmSeqBackward
        .prepare::<C>(nodes)
        .compute_bound()
        .stateful();
    // a lookup's table rows, for its gradient
    let lookup_vocab = p.layout().shape()[0];
    let mut cache = SplitCache::default();
    let (out, dims, i) = run(p, ids.as_deref(), [wh, h0, c0], precision, &mut cache);
    match tracked {
        OpsKind::Tracked(prep) => {
            let state = SeqState {
                dims,
                cache: Arc::new(cache),
                wh: i.wh,
                h0: i.h0,
                c0: i.c0,
                lookup: ids.map(|ids| {
                    Arc::new(Lookup {
                        ids,
                        vocab: lookup_vocab,
                    })
                }),
            };
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// Mean softmax cross-entropy of the classifier `h w + b` against `labels`, in one operation: `[1]`.
pub fn linear_cross_entropy(
    h: Tensor<2>,
    w: Tensor<2>,
    b: Tensor<2>,
    labels: Tensor<1, Int>,
) -> Tensor<1> {
    let out = <Dispatch as LstmSeqBackend>::linear_cross_entropy(
        h.into_dispatch(),
        w.into_dispatch(),
        b.into_dispatch(),
        labels.into_dispatch(),
    );
    Tensor::<1>::from_dispatch(out)
}

/// `tanh` of every element: one vectorised pass on flex, Burn's `tanh` elsewhere.
pub fn tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !supported(&x.device()) {
        return x.tanh();
    }
    Tensor::<D>::from_dispatch(<Dispatch as LstmSeqBackend>::fast_tanh(x.into_dispatch()))
}

/// Rows `start..start + len` of `x` (on flex: [`LstmSeqBackend::rows`]).
///
/// # Panics
/// On rows past `x`'s.
pub fn take_rows(x: Tensor<2>, start: usize, len: usize) -> Tensor<2> {
    let rows = x.dims()[0];
    assert!(
        start.checked_add(len).is_some_and(|end| end <= rows),
        "rows {start}..{start}+{len} of {rows}"
    );
    if !supported(&x.device()) {
        return x.narrow(0, start, len);
    }
    Tensor::<2>::from_dispatch(<Dispatch as LstmSeqBackend>::rows(
        x.into_dispatch(),
        start,
        len,
    ))
}

/// Whether tensors on `device` can use the flex operations (the LSTM
/// sequence, the fused classifier, `tanh`, rows; the dense layer,
/// `flex_linear`; the mirror's join and attentional layer).
pub fn supported(device: &Device) -> bool {
    crate::device::is_flex(device)
}

/// Runs the sequence operation: outputs `[steps * batch, H]` and final cell
/// `[batch, H]`, the recurrent products in `precision` where it applies.
pub(crate) fn lstm_sequence(
    input: Projected,
    wh: Tensor<2>,
    (h0, c0): (Tensor<2>, Tensor<2>),
    precision: Precision,
) -> (Tensor<2>, Tensor<2>) {
    let [batch, hidden] = h0.dims();
    let rows = input.rows();
    let (wh, h0, c0) = (wh.into_dispatch(), h0.into_dispatch(), c0.into_dispatch());
    let out = match input {
        Projected::Rows(p) => {
            <Dispatch as LstmSeqBackend>::lstm_sequence(p.into_dispatch(), wh, h0, c0, precision)
        }
        Projected::Lookup { table, ids } => <Dispatch as LstmSeqBackend>::lstm_sequence_lookup(
            table.into_dispatch(),
            ids.into_dispatch(),
            wh,
            h0,
            c0,
            precision,
        ),
    };
    let out = Tensor::<2>::from_dispatch(out);
    let hs = take_rows(out.clone(), 0, rows);
    let c = take_rows(out, rows, batch);
    debug_assert_eq!(c.dims(), [batch, hidden]);
    (hs, c)
}
