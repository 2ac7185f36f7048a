//! The character language model of the notebook and its problems 1-2:
//! input (one-hot, embedding or bigram embedding) -> stacked LSTM layers ->
//! linear classifier over the next character.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor};
use tokenizer::rng::Rng;

use crate::dropout::Dropout;
use crate::init::{self, InitScheme};
use crate::lstm::{CellLayout, Lstm, LstmConfig, LstmInput, LstmState, Precision};

/// How input ids reach the first LSTM layer.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// One-hot rows (the notebook's first model): `x W` is a row lookup.
    OneHot,
    /// A learned embedding table `[vocab_size, d_embedding]` (problems 2a and 2b).
    Embedding,
}

/// Configuration of a [`CharLm`].
///
/// ```
/// use burn::tensor::Device;
/// use model::{CharLmConfig, ids_tensor};
/// let device = Device::flex();
/// let lm = CharLmConfig::new(27, 27).with_d_hidden(32).init(0, &device);
/// let (batch, steps) = (2, 5);
/// let ids = ids_tensor(vec![1; batch * steps], &device); // time-major
/// let (hidden, _state) = lm.forward_hidden(ids, batch, lm.zero_state(batch, &device), false);
/// assert_eq!(hidden.dims(), [steps * batch, 32]);
/// ```
#[derive(Config, Debug)]
pub struct CharLmConfig {
    /// Number of input ids (27 for characters, 729 for bigrams).
    pub vocab_size: usize,
    /// Number of output classes (27: the next character).
    pub output_size: usize,
    /// Input representation.
    #[config(default = "InputKind::OneHot")]
    pub input: InputKind,
    /// Embedding width (for [`InputKind::Embedding`]).
    #[config(default = 128)]
    pub d_embedding: usize,
    /// Units per LSTM layer.
    #[config(default = 64)]
    pub d_hidden: usize,
    /// Number of stacked LSTM layers.
    #[config(default = 1)]
    pub n_layers: usize,
    /// Gate parameter layout.
    #[config(default = "CellLayout::Fused")]
    pub layout: CellLayout,
    /// Initialisation.
    #[config(default = "InitScheme::Default")]
    pub init: InitScheme,
    /// Probability of keeping a value on the non-recurrent connections (the
    /// input embedding, between layers and before the classifier); 1 = no dropout.
    #[config(default = 1.0)]
    pub keep_prob: f64,
    /// Probability of keeping each recurrent weight during training
    /// (DropConnect on the hidden-to-hidden matrices, Merity et al., arXiv
    /// 1708.02182: one mask per layer and training step, the same at every
    /// time step); 1 = none.
    #[config(default = 1.0)]
    pub recurrent_keep_prob: f64,
}

/// Character-level LSTM language model.
#[derive(Module, Debug)]
pub struct CharLm {
    /// Embedding table `[vocab_size, d_embedding]` ([`InputKind::Embedding`] only).
    pub embedding: Option<Param<Tensor<2>>>,
    /// LSTM layers, first to last.
    pub layers: Vec<Lstm>,
    /// Classifier weights `[d_hidden, output_size]`.
    pub w: Param<Tensor<2>>,
    /// Classifier bias `[1, output_size]`.
    pub b: Param<Tensor<2>>,
    /// Keep probability of dropout.
    pub keep_prob: f64,
    /// Keep probability of the recurrent weights (DropConnect).
    pub recurrent_keep_prob: f64,
    /// Precision of the LSTM's products (a setting of the run, not of the
    /// model: not saved; f32 unless [`with_precision`](Self::with_precision)).
    #[module(skip)]
    pub precision: Precision,
}

impl CharLmConfig {
    /// Checks the sizes and probabilities; the message names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("output_size", self.output_size),
            ("d_embedding", self.d_embedding),
            ("d_hidden", self.d_hidden),
            ("n_layers", self.n_layers),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("{name} must be at least 1, got 0"));
            }
        }
        for (name, p) in [
            ("keep_prob", self.keep_prob),
            ("recurrent_keep_prob", self.recurrent_keep_prob),
        ] {
            if !(p > 0.0 && p <= 1.0) {
                return Err(format!("{name} must be in (0, 1], got {p}"));
            }
        }
        Ok(())
    }

    /// Initialises the model, drawing every parameter from `rng`.
    pub fn init_with(&self, rng: &mut Rng, device: &Device) -> CharLm {
        let embedding = match self.input {
            InputKind::OneHot => None,
            InputKind::Embedding => Some(init::embedding(
                self.init,
                self.vocab_size,
                self.d_embedding,
                rng,
                device,
            )),
        };
        let mut layers = Vec::with_capacity(self.n_layers);
        for k in 0..self.n_layers {
            let d_input = match (k, self.input) {
                (0, InputKind::OneHot) => self.vocab_size,
                (0, InputKind::Embedding) => self.d_embedding,
                _ => self.d_hidden,
            };
            layers.push(
                LstmConfig::new(d_input, self.d_hidden)
                    .with_layout(self.layout)
                    .with_init(self.init)
                    .init_with(rng, device),
            );
        }
        let w = init::weight(self.init, self.d_hidden, self.output_size, rng, device);
        let b = Param::from_tensor(Tensor::zeros([1, self.output_size], device));
        CharLm {
            embedding,
            layers,
            w,
            b,
            keep_prob: self.keep_prob,
            recurrent_keep_prob: self.recurrent_keep_prob,
            precision: Precision::F32,
        }
    }

    /// Initialises the model from a seed.
    pub fn init(&self, seed: u64, device: &Device) -> CharLm {
        self.init_with(&mut Rng::new(seed), device)
    }
}

impl CharLm {
    /// The model with the LSTM's products in `precision` where the kernels
    /// take it ([`Precision`]; f32 elsewhere). The trainer sets it for the
    /// training steps only: its summaries validate and sample in f32.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Units per layer.
    pub fn d_hidden(&self) -> usize {
        self.layers[0].d_hidden
    }

    /// Number of output classes.
    pub fn output_size(&self) -> usize {
        self.w.val().dims()[1]
    }

    /// Zero state for `batch` sequences, one per layer.
    pub fn zero_state(&self, batch: usize, device: &Device) -> Vec<LstmState> {
        self.layers
            .iter()
            .map(|l| LstmState::zeros(batch, l.d_hidden, device))
            .collect()
    }

    /// Runs the model over a batch of sequences.
    ///
    /// - `ids`: input ids `[steps * batch]`, time-major (row `t * batch + b`).
    /// - `state`: one state per layer, `[batch, d_hidden]` each.
    /// - `train`: whether dropout (and DropConnect) is active.
    ///
    /// Returns logits `[steps * batch, output_size]` (time-major) and the final states.
    pub fn forward(
        &self,
        ids: Tensor<1, Int>,
        batch: usize,
        state: Vec<LstmState>,
        train: bool,
    ) -> (Tensor<2>, Vec<LstmState>) {
        let (hidden, state) = self.forward_hidden(ids, batch, state, train);
        (self.classify(hidden, train), state)
    }

    /// The last layer's outputs `[steps * batch, d_hidden]` and the final states.
    pub fn forward_hidden(
        &self,
        ids: Tensor<1, Int>,
        batch: usize,
        state: Vec<LstmState>,
        train: bool,
    ) -> (Tensor<2>, Vec<LstmState>) {
        assert_eq!(state.len(), self.layers.len(), "one state per layer");
        let dropout = Dropout::new(self.keep_prob);
        let recurrent_dropout = Dropout::new(self.recurrent_keep_prob);
        let mut input = match &self.embedding {
            None => LstmInput::OneHot(ids),
            Some(table) => LstmInput::embedded(table.val(), ids, dropout, train),
        };
        let mut new_state = Vec::with_capacity(self.layers.len());
        let mut out = None;
        for (k, (layer, s)) in self.layers.iter().zip(state).enumerate() {
            if k > 0 {
                let prev: Tensor<2> = out.take().expect("previous layer output");
                input = LstmInput::Dense(dropout.forward(prev, train));
            }
            let wh = recurrent_dropout.forward(layer.recurrent_weights(), train);
            let (o, s) = layer.forward_with(&input, wh, batch, s, self.precision);
            out = Some(o);
            new_state.push(s);
        }
        (out.expect("at least one layer"), new_state)
    }

    /// Mean cross-entropy `[1]` of the classifier on LSTM outputs `[rows, d_hidden]`
    /// against `labels` `[rows]` (dropout first when training). On flex the
    /// classifier, softmax and loss are one fused operation.
    pub fn loss(&self, hidden: Tensor<2>, labels: Tensor<1, Int>, train: bool) -> Tensor<1> {
        let hidden = Dropout::new(self.keep_prob).forward(hidden, train);
        classifier_loss(hidden, self.w.val(), self.b.val(), labels)
    }

    /// Logits `[rows, output_size]` of LSTM outputs `[rows, d_hidden]` (dropout first when training).
    pub fn classify(&self, hidden: Tensor<2>, train: bool) -> Tensor<2> {
        let hidden = Dropout::new(self.keep_prob).forward(hidden, train);
        hidden.matmul(self.w.val()) + self.b.val()
    }
}

/// Mean softmax cross-entropy `[1]` of the classifier `hidden w + b`
/// (`[n, d]`, `[d, v]`, `[1, v]`) against `labels` `[n]`: on flex one
/// fused operation ([`crate::flex_ops::linear_cross_entropy`]), elsewhere
/// the product, then [`cross_entropy`].
pub fn classifier_loss(
    hidden: Tensor<2>,
    w: Tensor<2>,
    b: Tensor<2>,
    labels: Tensor<1, Int>,
) -> Tensor<1> {
    #[cfg(feature = "flex")]
    if crate::flex_ops::supported(&hidden.device()) {
        return crate::flex_ops::linear_cross_entropy(hidden, w, b, labels);
    }
    cross_entropy(hidden.matmul(w) + b, labels)
}

/// Mean softmax cross-entropy of logits `[n, v]` against labels `[n]`: a `[1]` tensor.
pub fn cross_entropy(logits: Tensor<2>, labels: Tensor<1, Int>) -> Tensor<1> {
    let n = labels.dims()[0];
    burn::tensor::activation::log_softmax(logits, 1)
        .gather(1, labels.reshape([n, 1]))
        .mean()
        .neg()
}
