//! The LSTM cell of the notebook, in two parameterisations.
//!
//! With gate pre-activations `i, f, u, o` (input, forget, cell update,
//! output):
//!
//! ```text
//! c' = sigmoid(f) * c + sigmoid(i) * tanh(u)
//! h' = sigmoid(o) * tanh(c')
//! ```
//!
//! - [`CellLayout::Gates`]: the notebook's cell, four input matrices
//!   (`ix, fx, cx, ox`, each `[d_input, d_hidden]`), four recurrent matrices
//!   (`im, fm, cm, om`, `[d_hidden, d_hidden]`) and one bias per gate (`[1, d_hidden]`):
//!   eight matrix products per step.
//! - [`CellLayout::Fused`]: the notebook's problem 1, one `[d_input, 4 d_hidden]`
//!   and one `[d_hidden, 4 d_hidden]` matrix (gates side by side in the order
//!   `i, f, u, o`) and one `[1, 4 d_hidden]` bias: two products per step.
//!
//! Unlike `burn::nn::Lstm` there is one bias per gate, as in the notebook.
//! The input projection of all time steps is computed at once (it does not
//! depend on the state); only the recurrent product runs step by step.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::activation::{sigmoid, tanh};
use burn::tensor::{Device, Int, Tensor, TensorData};
use tokenizer::rng::Rng;

use crate::dropout::Dropout;
use crate::init::{self, InitScheme};
pub use crate::kernel::Precision;

/// How the gate parameters are laid out.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum CellLayout {
    /// Four separate matrices per input (the notebook's cell).
    Gates,
    /// One matrix four gates wide per input (problem 1).
    Fused,
}

/// Configuration of one LSTM layer.
#[derive(Config, Debug)]
pub struct LstmConfig {
    /// Width of the input (the vocabulary size for one-hot input).
    pub d_input: usize,
    /// Number of units.
    pub d_hidden: usize,
    /// Parameter layout.
    #[config(default = "CellLayout::Fused")]
    pub layout: CellLayout,
    /// Initialisation.
    #[config(default = "InitScheme::Default")]
    pub init: InitScheme,
}

/// The parameters of one gate block: the full four gates in the fused
/// layout, a single gate in the gates layout.
#[derive(Module, Debug)]
pub struct GateBlock {
    /// Input weights `[d_input, width]`.
    pub wx: Param<Tensor<2>>,
    /// Recurrent weights `[d_hidden, width]`.
    pub wh: Param<Tensor<2>>,
    /// Bias `[1, width]`.
    pub b: Param<Tensor<2>>,
}

/// One LSTM layer.
#[derive(Module, Debug)]
pub struct Lstm {
    /// Four blocks (`i, f, u, o`) of width `d_hidden` in the gates layout, one of width `4 d_hidden` fused.
    pub blocks: Vec<GateBlock>,
    /// Number of units.
    pub d_hidden: usize,
}

/// The state carried from step to step: output `h` and cell `c`, each `[batch, d_hidden]`.
#[derive(Debug, Clone)]
pub struct LstmState {
    /// Hidden output `[batch, d_hidden]`.
    pub h: Tensor<2>,
    /// Cell state `[batch, d_hidden]`.
    pub c: Tensor<2>,
}

impl LstmState {
    /// Zeros for a batch.
    pub fn zeros(batch: usize, d_hidden: usize, device: &Device) -> Self {
        LstmState {
            h: Tensor::zeros([batch, d_hidden], device),
            c: Tensor::zeros([batch, d_hidden], device),
        }
    }

    /// The same values, cut from the autodiff graph (truncated backpropagation).
    pub fn detach(self) -> Self {
        LstmState {
            h: self.h.detach(),
            c: self.c.detach(),
        }
    }

    /// The batch rows `rows` (in that order, repeats allowed): beam search
    /// keeping, copying and dropping hypotheses.
    pub fn select_rows(self, rows: &Tensor<1, Int>) -> Self {
        LstmState {
            h: self.h.select(0, rows.clone()),
            c: self.c.select(0, rows.clone()),
        }
    }

    /// Moved to `device`.
    pub fn to_device(self, device: &Device) -> Self {
        LstmState {
            h: self.h.to_device(device),
            c: self.c.to_device(device),
        }
    }
}

/// The distinct values of `ids` in order of first appearance, and for each
/// id its place among them: `ids[k] == distinct[position[k]]`.
fn distinct_ids(ids: &Tensor<1, Int>) -> (Vec<i64>, Vec<i64>) {
    let ids = ids
        .clone()
        .into_data()
        .try_into_vec_as::<i64>()
        .expect("integer ids");
    let mut place = std::collections::HashMap::with_capacity(ids.len());
    let mut distinct = Vec::new();
    let position = ids
        .iter()
        .map(|&id| {
            *place.entry(id).or_insert_with(|| {
                distinct.push(id);
                distinct.len() as i64 - 1
            })
        })
        .collect();
    (distinct, position)
}

/// A layer's input projections `[n, 4 d_hidden]`: every row's, or the
/// rows of a projected table named by ids (looked up inside the flex
/// sequence operation, step by step, instead of copied out first).
// made once per layer call and moved: boxing the larger variant would gain nothing
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub(crate) enum Projected {
    /// `[n, 4 d_hidden]`.
    Rows(Tensor<2>),
    /// Row `ids[r]` of `table` `[vocab, 4 d_hidden]` for row `r`.
    Lookup {
        /// The projected table, bias included.
        table: Tensor<2>,
        /// Ids `[n]`.
        ids: Tensor<1, Int>,
    },
}

impl Projected {
    /// `n`.
    pub(crate) fn rows(&self) -> usize {
        match self {
            Projected::Rows(p) => p.dims()[0],
            Projected::Lookup { ids, .. } => ids.dims()[0],
        }
    }

    /// The rows themselves.
    fn into_rows(self) -> Tensor<2> {
        match self {
            Projected::Rows(p) => p,
            Projected::Lookup { table, ids } => table.select(0, ids),
        }
    }
}

/// What an LSTM layer reads.
// made once per forward pass and borrowed: boxing the larger variant would gain nothing
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum LstmInput {
    /// One-hot rows given by their ids `[n]`: `x W` is row `id` of `W`.
    OneHot(Tensor<1, Int>),
    /// Dense rows `[n, d_input]`.
    Dense(Tensor<2>),
    /// Rows of an embedding `table` `[vocab, d_input]` given by their ids `[n]`:
    /// `x W` is row `id` of `table W`, which is projected once instead of row by
    /// row when it has fewer rows than the input (27 characters against 3200
    /// rows of a batch: `n / vocab` times less arithmetic, forward and backward);
    /// with more rows, the rows of the distinct ids are (about 300 of 729
    /// bigrams in a batch of 640).
    Embedded {
        /// The embedding table `[vocab, d_input]`.
        table: Tensor<2>,
        /// Ids `[n]`.
        ids: Tensor<1, Int>,
    },
}

impl LstmInput {
    /// The rows of `table` named by `ids`, with dropout when it is active:
    /// without it, [`LstmInput::Embedded`] (the first layer projects the
    /// table, not every row); with it, the dropped rows as [`LstmInput::Dense`].
    pub fn embedded(table: Tensor<2>, ids: Tensor<1, Int>, dropout: Dropout, train: bool) -> Self {
        if dropout.active(train) {
            LstmInput::Dense(dropout.forward(table.select(0, ids), train))
        } else {
            LstmInput::Embedded { table, ids }
        }
    }
}

impl LstmConfig {
    /// Initialises the layer, drawing from `rng`.
    pub fn init_with(&self, rng: &mut Rng, device: &Device) -> Lstm {
        let (n_blocks, width) = match self.layout {
            CellLayout::Gates => (4, self.d_hidden),
            CellLayout::Fused => (1, 4 * self.d_hidden),
        };
        let mut blocks = Vec::with_capacity(n_blocks);
        // Creation order of the notebook: (x, m, b) for i, f, c, o.
        let mut xs = vec![];
        let mut hs = vec![];
        for _ in 0..4 {
            xs.push(init::weight(self.init, self.d_input, self.d_hidden, rng, device).val());
            hs.push(init::weight(self.init, self.d_hidden, self.d_hidden, rng, device).val());
        }
        let bias = |gate: usize| -> f32 {
            if self.init == InitScheme::Default && gate == 1 {
                1.0
            } else {
                0.0
            }
        };
        let bias_block = |gates: std::ops::Range<usize>| -> Param<Tensor<2>> {
            let values: Vec<f32> = gates
                .flat_map(|g| std::iter::repeat_n(bias(g), self.d_hidden))
                .collect();
            let n = values.len();
            Param::from_tensor(Tensor::from_data(TensorData::new(values, [1, n]), device))
        };
        match self.layout {
            CellLayout::Gates => {
                for (g, (x, h)) in xs.into_iter().zip(hs).enumerate() {
                    blocks.push(GateBlock {
                        wx: Param::from_tensor(x),
                        wh: Param::from_tensor(h),
                        b: bias_block(g..g + 1),
                    });
                }
            }
            CellLayout::Fused => blocks.push(GateBlock {
                wx: Param::from_tensor(Tensor::cat(xs, 1).detach()),
                wh: Param::from_tensor(Tensor::cat(hs, 1).detach()),
                b: bias_block(0..4),
            }),
        }
        debug_assert_eq!(blocks[0].b.val().dims()[1], width);
        Lstm {
            blocks,
            d_hidden: self.d_hidden,
        }
    }
}

impl Lstm {
    /// The parameter layout.
    pub fn layout(&self) -> CellLayout {
        if self.blocks.len() == 1 {
            CellLayout::Fused
        } else {
            CellLayout::Gates
        }
    }

    /// Width of the input.
    pub fn d_input(&self) -> usize {
        self.blocks[0].wx.val().dims()[0]
    }

    /// Input projections of every row, bias included: `[n, 4 d_hidden]`, gates `i, f, u, o`.
    pub fn project_input(&self, input: &LstmInput) -> Tensor<2> {
        self.projected(input, Precision::F32).into_rows()
    }

    /// [`project_input`](Self::project_input), with the rows of a one-hot or
    /// embedded input left to look up in their projected table.
    ///
    /// With separate gate matrices the weights are put side by side first
    /// (a `[d_input, 4 d_hidden]` copy, small) so that the rows are looked up
    /// or multiplied once, not once per gate and then joined. A dense
    /// input's products run in `precision` where the flex kernel applies it
    /// ([`crate::kernel::linear`]).
    #[cfg_attr(not(feature = "flex"), allow(unused_variables))]
    fn projected(&self, input: &LstmInput, precision: Precision) -> Projected {
        let (wx, b) = (self.input_weights(), self.biases());
        match input {
            LstmInput::OneHot(ids) => Projected::Lookup {
                table: wx + b,
                ids: ids.clone(),
            },
            #[cfg(feature = "flex")]
            LstmInput::Dense(x) if crate::flex_ops::supported(&x.device()) => {
                Projected::Rows(crate::flex_linear::linear(x.clone(), wx, b, precision))
            }
            LstmInput::Dense(x) => Projected::Rows(x.clone().matmul(wx) + b),
            LstmInput::Embedded { table, ids } if table.dims()[0] <= ids.dims()[0] => {
                Projected::Lookup {
                    table: table.clone().matmul(wx) + b,
                    ids: ids.clone(),
                }
            }
            LstmInput::Embedded { table, ids } => {
                // more rows than the batch (729 bigrams against 640): the
                // distinct ids' rows are projected once each, then looked up
                let (distinct, position) = distinct_ids(ids);
                let device = ids.device();
                Projected::Lookup {
                    table: table
                        .clone()
                        .select(0, crate::ids_tensor(distinct, &device))
                        .matmul(wx)
                        + b,
                    ids: crate::ids_tensor(position, &device),
                }
            }
        }
    }

    /// One step from pre-activations `[batch, 4 d_hidden]` (input projection + recurrent product).
    pub fn cell(&self, pre: Tensor<2>, c: Tensor<2>) -> LstmState {
        let gates = pre.chunk(4, 1);
        let mut it = gates.into_iter();
        let (i, f, u, o) = (
            it.next().expect("4 gates"),
            it.next().expect("4 gates"),
            it.next().expect("4 gates"),
            it.next().expect("4 gates"),
        );
        let c = sigmoid(f) * c + sigmoid(i) * tanh(u);
        let h = sigmoid(o) * tanh(c.clone());
        LstmState { h, c }
    }

    /// Runs the layer over a sequence.
    ///
    /// - `input`: rows of the sequence, time-major: row `t * batch + b` is step `t` of sequence `b`.
    /// - `batch`: number of sequences.
    /// - `state`: the state before the first step, `[batch, d_hidden]` each.
    ///
    /// Returns the outputs `[steps * batch, d_hidden]` (time-major) and the final state.
    pub fn forward(
        &self,
        input: &LstmInput,
        batch: usize,
        state: LstmState,
    ) -> (Tensor<2>, LstmState) {
        self.forward_with(
            input,
            self.recurrent_weights(),
            batch,
            state,
            Precision::F32,
        )
    }

    /// [`forward`](Self::forward) with recurrent weights `wh` `[d_hidden, 4
    /// d_hidden]` in place of the layer's own: the same matrix at every
    /// step, so a DropConnect mask on it (Merity et al., arXiv 1708.02182)
    /// drops recurrent connections without a mask per step. The recurrent
    /// products (and a dense input's) run in `precision` where the
    /// fused kernel runs and the CPU supports it (see [`Precision`]).
    pub fn forward_with(
        &self,
        input: &LstmInput,
        wh: Tensor<2>,
        batch: usize,
        state: LstmState,
        precision: Precision,
    ) -> (Tensor<2>, LstmState) {
        // what the recurrent products run in for the threads' parts of this
        // batch (`kernel::split`), so that a dense input's take the same:
        // validation one sequence at a time is f32 throughout
        let parts: Vec<usize> = crate::kernel::batch_parts(batch)
            .iter()
            .map(|p| p.1)
            .collect();
        let precision = precision.for_parts(&parts, wh.dims()[0]);
        self.sequence(
            self.projected(input, precision),
            wh,
            batch,
            state,
            precision,
        )
    }

    /// [`forward`](Self::forward) from input projections `[steps * batch, 4 d_hidden]`.
    pub fn forward_projected(
        &self,
        pre: Tensor<2>,
        batch: usize,
        state: LstmState,
    ) -> (Tensor<2>, LstmState) {
        let pre = Projected::Rows(pre);
        self.sequence(pre, self.recurrent_weights(), batch, state, Precision::F32)
    }

    /// The steps from input projections with recurrent weights `wh`: the
    /// fused kernel on flex, [`reference_sequence`](Self::reference_sequence) elsewhere.
    #[cfg_attr(not(feature = "flex"), allow(unused_variables))]
    fn sequence(
        &self,
        pre: Projected,
        wh: Tensor<2>,
        batch: usize,
        state: LstmState,
        precision: Precision,
    ) -> (Tensor<2>, LstmState) {
        let rows = pre.rows();
        assert_eq!(
            rows % batch,
            0,
            "{rows} input rows are not a whole number of steps of batch {batch}"
        );
        #[cfg(feature = "flex")]
        if crate::flex_ops::supported(&wh.device()) {
            let (hs, c) = crate::flex_ops::lstm_sequence(pre, wh, (state.h, state.c), precision);
            let h = crate::flex_ops::take_rows(hs.clone(), rows - batch, batch);
            return (hs, LstmState { h, c });
        }
        self.reference_sequence(pre.into_rows(), wh, batch, state)
    }

    /// All recurrent weights side by side, `[d_hidden, 4 d_hidden]`.
    pub fn recurrent_weights(&self) -> Tensor<2> {
        self.side_by_side(|b| &b.wh)
    }

    /// All input weights side by side, `[d_input, 4 d_hidden]`.
    pub fn input_weights(&self) -> Tensor<2> {
        self.side_by_side(|b| &b.wx)
    }

    /// All biases side by side, `[1, 4 d_hidden]`.
    pub fn biases(&self) -> Tensor<2> {
        self.side_by_side(|b| &b.b)
    }

    /// One parameter of every gate block, joined along the gates (the
    /// parameter itself for the fused layout).
    fn side_by_side(&self, param: impl Fn(&GateBlock) -> &Param<Tensor<2>>) -> Tensor<2> {
        if self.blocks.len() == 1 {
            param(&self.blocks[0]).val()
        } else {
            Tensor::cat(self.blocks.iter().map(|b| param(b).val()).collect(), 1)
        }
    }

    /// [`forward_projected`](Self::forward_projected) as plain Burn operations,
    /// step by step (any backend; the reference the fused kernel is tested against).
    pub fn forward_reference(
        &self,
        pre: Tensor<2>,
        batch: usize,
        state: LstmState,
    ) -> (Tensor<2>, LstmState) {
        self.reference_sequence(pre, self.recurrent_weights(), batch, state)
    }

    /// [`forward_reference`](Self::forward_reference) with recurrent weights `wh`.
    fn reference_sequence(
        &self,
        pre: Tensor<2>,
        wh: Tensor<2>,
        batch: usize,
        state: LstmState,
    ) -> (Tensor<2>, LstmState) {
        let [rows, _] = pre.dims();
        let steps = rows / batch;
        let LstmState { mut h, mut c } = state;
        let mut outputs = Vec::with_capacity(steps);
        for t in 0..steps {
            let x_t = pre.clone().narrow(0, t * batch, batch);
            let next = self.cell(x_t + h.matmul(wh.clone()), c);
            h = next.h;
            c = next.c;
            outputs.push(h.clone());
        }
        (Tensor::cat(outputs, 0), LstmState { h, c })
    }
}
