//! Problem 3: a sequence-to-sequence LSTM (Sutskever et al., arXiv 1409.3215)
//! that writes every word of a sentence backwards, with optional attention
//! over the encoder outputs (Luong et al., arXiv 1508.04025, "general" score).
//!
//! - Encoder: a character embedding and stacked LSTM layers reading the source
//!   (optionally reversed, as Sutskever et al. recommend), optionally also a
//!   second stack reading it backwards (bidirectional), whose outputs are
//!   joined per position.
//! - Decoder: its own embedding and LSTM layers, started from the encoder's
//!   final state (of the forward-reading stack), fed the previous target
//!   character (teacher forcing in training).
//! - Attention: scores `h_t W_a e_s` over source positions `s`, context
//!   `sum_s softmax(scores)_s e_s`, and `tanh([context; h_t] W_c + b_c)` in
//!   place of `h_t` before the output layer.
//!
//! - Locating (optional, [`attention`]): attention restricted to the source
//!   word being written and biased by the position relative to the letter
//!   due, both taken from the decoder's place in its own output. With them
//!   the model mirrors sentences far longer than it was trained on.
//!
//! All sequences of a call have the same source length (the trainer batches
//! by length), so there is no padding to mask.

pub mod attention;
mod decode;

use std::sync::Arc;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use tokenizer::rng::Rng;

use crate::dropout::Dropout;
use crate::ids_tensor;
use crate::init::{self, InitScheme};
use crate::lstm::{CellLayout, Lstm, LstmConfig, LstmInput, LstmState};
use attention::{Bias, Locating, SourceWords, Windows};

/// Most relative-position buckets each side a model may have (the recipe
/// and a run's config.json are both checked against it).
pub const MAX_RELATIVE_SPAN: usize = 1024;

/// Configuration of a [`Mirror`] model.
#[derive(Config, Debug)]
pub struct MirrorConfig {
    /// Symbols (27 characters + padding, start, end = 30).
    pub vocab_size: usize,
    /// Id of the start symbol (the decoder's first input).
    pub start_id: usize,
    /// Id of the end symbol.
    pub end_id: usize,
    /// Embedding width of source and target symbols.
    #[config(default = 32)]
    pub d_embedding: usize,
    /// Units of every encoder and decoder layer.
    #[config(default = 128)]
    pub d_hidden: usize,
    /// Layers of the encoder and of the decoder.
    #[config(default = 1)]
    pub n_layers: usize,
    /// Attention over the encoder outputs.
    #[config(default = true)]
    pub attention: bool,
    /// A second encoder stack reading the source backwards.
    #[config(default = true)]
    pub bidirectional: bool,
    /// Feed the source to the (forward) encoder reversed.
    #[config(default = false)]
    pub reverse_source: bool,
    /// Dropout keep probability on non-recurrent connections.
    #[config(default = 1.0)]
    pub keep_prob: f64,
    /// Attention only over the source word being written and its delimiter
    /// (the source gets an end symbol, the last word's delimiter).
    #[config(default = false)]
    pub word_window: bool,
    /// Learned attention bias per position relative to the letter due,
    /// `span` buckets each side (0: none).
    #[config(default = 0)]
    pub relative_span: usize,
}

/// The word-mirroring encoder-decoder.
#[derive(Module, Debug)]
pub struct Mirror {
    /// Source embedding `[vocab, d_embedding]`.
    pub src_embedding: Param<Tensor<2>>,
    /// Target embedding `[vocab, d_embedding]`.
    pub tgt_embedding: Param<Tensor<2>>,
    /// Encoder layers reading forwards (or the reversed source).
    pub encoder: Vec<Lstm>,
    /// Encoder layers reading backwards (bidirectional only).
    pub encoder_back: Vec<Lstm>,
    /// Decoder layers.
    pub decoder: Vec<Lstm>,
    /// Attention score matrix `[d_enc, d_hidden]` (attention only).
    pub attn_score: Option<Param<Tensor<2>>>,
    /// Attention output matrix `[d_enc + d_hidden, d_hidden]` (attention only).
    pub attn_out: Option<Param<Tensor<2>>>,
    /// Attention output bias `[1, d_hidden]` (attention only).
    pub attn_bias: Option<Param<Tensor<2>>>,
    /// Relative-position attention bias `[2 * relative_span + 1, 1]`.
    pub attn_relative: Option<Param<Tensor<2>>>,
    /// Output layer `[d_hidden, vocab]`.
    pub out_w: Param<Tensor<2>>,
    /// Output bias `[1, vocab]`.
    pub out_b: Param<Tensor<2>>,
    /// Dropout keep probability.
    pub keep_prob: f64,
    /// Whether the forward encoder reads the source reversed.
    pub reverse_source: bool,
    /// Start symbol.
    pub start_id: usize,
    /// End symbol.
    pub end_id: usize,
    /// Attention restricted to the current word.
    pub word_window: bool,
    /// Relative-position buckets each side.
    pub relative_span: usize,
}

/// The encoder's result for a batch.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Outputs per source position, batch-major `[batch, src_len, d_enc]`.
    pub outputs: Tensor<3>,
    /// Attention keys `outputs W_a`, `[batch, src_len, d_hidden]` (attention
    /// only; not made for the windowed operation, which makes its own).
    pub keys: Option<Tensor<3>>,
    /// Final state of each forward encoder layer: the decoder's initial state.
    pub state: Vec<LstmState>,
    /// The words of each source (locating attention only).
    pub words: Vec<SourceWords>,
}

impl MirrorConfig {
    /// Checks sizes and probabilities; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("d_embedding", self.d_embedding),
            ("d_hidden", self.d_hidden),
            ("n_layers", self.n_layers),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1, got 0"));
            }
        }
        if self.start_id >= self.vocab_size || self.end_id >= self.vocab_size {
            return Err("start_id and end_id must be below vocab_size".into());
        }
        if (self.word_window || self.relative_span > 0) && !self.attention {
            return Err("word_window and relative_span need attention = true".into());
        }
        if self.relative_span > MAX_RELATIVE_SPAN {
            return Err(format!(
                "relative_span must be at most {MAX_RELATIVE_SPAN}, got {}",
                self.relative_span
            ));
        }
        if !(self.keep_prob > 0.0 && self.keep_prob <= 1.0) {
            return Err(format!(
                "keep_prob must be in (0, 1], got {}",
                self.keep_prob
            ));
        }
        Ok(())
    }

    /// Width of the encoder outputs.
    pub fn d_enc(&self) -> usize {
        if self.bidirectional {
            2 * self.d_hidden
        } else {
            self.d_hidden
        }
    }

    /// Initialises the model from a seed.
    pub fn init(&self, seed: u64, device: &Device) -> Mirror {
        let rng = &mut Rng::new(seed);
        let (e, h) = (self.d_embedding, self.d_hidden);
        let scheme = InitScheme::Default;
        let stack = |rng: &mut Rng, first_input: usize| -> Vec<Lstm> {
            (0..self.n_layers)
                .map(|k| {
                    let d_in = if k == 0 {
                        first_input
                    } else if self.bidirectional {
                        2 * h
                    } else {
                        h
                    };
                    LstmConfig::new(d_in, h)
                        .with_layout(CellLayout::Fused)
                        .with_init(scheme)
                        .init_with(rng, device)
                })
                .collect()
        };
        let src_embedding = init::embedding(scheme, self.vocab_size, e, rng, device);
        let tgt_embedding = init::embedding(scheme, self.vocab_size, e, rng, device);
        let encoder = stack(rng, e);
        let encoder_back = if self.bidirectional {
            stack(rng, e)
        } else {
            vec![]
        };
        let decoder: Vec<Lstm> = (0..self.n_layers)
            .map(|k| {
                LstmConfig::new(if k == 0 { e } else { h }, h)
                    .with_layout(CellLayout::Fused)
                    .with_init(scheme)
                    .init_with(rng, device)
            })
            .collect();
        let d_enc = self.d_enc();
        let (attn_score, attn_out, attn_bias) = if self.attention {
            (
                Some(init::weight(scheme, d_enc, h, rng, device)),
                Some(init::weight(scheme, d_enc + h, h, rng, device)),
                Some(Param::from_tensor(Tensor::zeros([1, h], device))),
            )
        } else {
            (None, None, None)
        };
        let attn_relative = (self.attention && self.relative_span > 0)
            .then(|| Param::from_tensor(Tensor::zeros([2 * self.relative_span + 1, 1], device)));
        Mirror {
            src_embedding,
            tgt_embedding,
            encoder,
            encoder_back,
            decoder,
            attn_score,
            attn_out,
            attn_bias,
            attn_relative,
            out_w: init::weight(scheme, h, self.vocab_size, rng, device),
            out_b: Param::from_tensor(Tensor::zeros([1, self.vocab_size], device)),
            keep_prob: self.keep_prob,
            reverse_source: self.reverse_source,
            start_id: self.start_id,
            end_id: self.end_id,
            word_window: self.word_window,
            relative_span: self.relative_span,
        }
    }
}

/// The relative-position table is stored in units of `1 / RELATIVE_SCALE`:
/// Adam moves a parameter by about its learning rate per step whatever the
/// gradient's size, and the bias must reach a peak of tens (a sharp pointer)
/// in a few hundred steps, not thousands.
const RELATIVE_SCALE: f32 = 10.0;

/// Id of the space between words.
const SPACE: u8 = 0;

/// What one attention call looks at: keys and values `[rows, positions, _]`,
/// and how its scores are restricted.
struct AttentionView {
    /// `None` where the windowed operation makes them from the values.
    keys: Option<Tensor<3>>,
    values: Tensor<3>,
    scores: Scores,
}

/// Which scores an attention call computes, and their bias.
enum Scores {
    /// Every position's, unbiased.
    All,
    /// Every position's (of the keys given: decoding gathers each row's
    /// window), plus an additive bias `[rows, steps, positions]` (masked
    /// positions at [`attention::MASKED`]).
    Biased(Box<Tensor<3>>),
    /// Only those of each row's window, with its relative bias: the same
    /// function as `Biased` with the windows' dense bias, by the windowed
    /// operation, which also makes the keys from the values and applies the
    /// attentional layer (flex only: see [`Mirror::windowed`]).
    Windowed(Arc<Windows>),
}

/// How [`Mirror::encode_with`] makes its result.
#[derive(Debug, Clone, Copy)]
struct Encoding {
    /// The two directions joined by the flex operation (where
    /// [`Mirror::windowed`] allows), else by Burn's operations.
    flex_join: bool,
    /// The attention keys made (`Encoded::keys`).
    keys: bool,
}

/// Time-major rows `[steps * batch, d]` as batch-major `[batch, steps, d]`.
fn batch_major(x: Tensor<2>, steps: usize, batch: usize) -> Tensor<3> {
    let d = x.dims()[1];
    x.reshape([steps, batch, d]).swap_dims(0, 1)
}

impl Mirror {
    /// Units per layer.
    pub fn d_hidden(&self) -> usize {
        self.decoder[0].d_hidden
    }

    /// Number of symbols.
    pub fn vocab_size(&self) -> usize {
        self.out_w.val().dims()[1]
    }

    fn run_stack(
        &self,
        layers: &[Lstm],
        first: LstmInput,
        batch: usize,
        dropout: Dropout,
        train: bool,
        state: Option<Vec<LstmState>>,
    ) -> (Tensor<2>, Vec<LstmState>) {
        let device = self.out_b.val().device();
        let mut input = first;
        let mut out = None;
        let mut finals = Vec::with_capacity(layers.len());
        let mut state = state.map(|s| s.into_iter());
        for (k, layer) in layers.iter().enumerate() {
            if k > 0 {
                let prev: Tensor<2> = out.take().expect("previous layer output");
                input = LstmInput::Dense(dropout.forward(prev, train));
            }
            let s0 = state
                .as_mut()
                .and_then(|s| s.next())
                .unwrap_or_else(|| LstmState::zeros(batch, layer.d_hidden, &device));
            let (o, s) = layer.forward(&input, batch, s0);
            out = Some(o);
            finals.push(s);
        }
        (out.expect("at least one layer"), finals)
    }

    /// Encodes sources of one length.
    ///
    /// - `src`: symbol ids `[batch][src_len]`, every row the same length.
    pub fn encode(&self, src: &[Vec<u8>], train: bool, device: &Device) -> Encoded {
        let how = Encoding {
            flex_join: Self::windowed(device),
            keys: true,
        };
        self.encode_with(src, train, device, how)
    }

    /// [`encode`](Self::encode) as `how` says.
    fn encode_with(&self, src: &[Vec<u8>], train: bool, device: &Device, how: Encoding) -> Encoded {
        let locating = self.locating();
        // the end symbol closes the last word: where the decoder finds that it is due
        let ended: Vec<Vec<u8>>;
        let src = if locating.is_used() {
            ended = src
                .iter()
                .map(|s| s.iter().copied().chain([self.end_id as u8]).collect())
                .collect();
            &ended[..]
        } else {
            src
        };
        let batch = src.len();
        let len = src[0].len();
        assert!(
            src.iter().all(|s| s.len() == len),
            "sources of one length per call"
        );
        let dropout = Dropout::new(self.keep_prob);
        let ordered = |reverse: bool| -> LstmInput {
            let ids: Vec<i64> = (0..len)
                .flat_map(|t| {
                    let t = if reverse { len - 1 - t } else { t };
                    src.iter().map(move |s| s[t] as i64)
                })
                .collect();
            LstmInput::embedded(
                self.src_embedding.val(),
                ids_tensor(ids, device),
                dropout,
                train,
            )
        };
        let (fwd, state) = self.run_stack(
            &self.encoder,
            ordered(self.reverse_source),
            batch,
            dropout,
            train,
            None,
        );
        let back = (!self.encoder_back.is_empty()).then(|| {
            let input = ordered(!self.reverse_source);
            self.run_stack(&self.encoder_back, input, batch, dropout, train, None)
                .0
        });
        // batch-major rows `[batch, len, d_enc]` in source order, laid out
        // once: every decoding step gathers from them, and a strided view
        // would be copied whole at each step
        let reversed = [self.reverse_source, !self.reverse_source];
        let outputs = match back {
            Some(back) if how.flex_join => join_directions(fwd, back, batch, reversed),
            back => {
                let in_order = |x, reversed| {
                    if reversed {
                        reverse_time(x, len, batch, device)
                    } else {
                        x
                    }
                };
                let fwd = in_order(fwd, reversed[0]);
                let joined = match back {
                    Some(back) => Tensor::cat(vec![fwd, in_order(back, reversed[1])], 1),
                    None => fwd,
                };
                batch_major(joined, len, batch)
            }
        };
        let d = outputs.dims()[2];
        let rows = outputs.reshape([batch * len, d]);
        let keys = self.attn_score.as_ref().filter(|_| how.keys).map(|w| {
            rows.clone()
                .matmul(w.val())
                .reshape([batch, len, self.d_hidden()])
        });
        let outputs = rows.reshape([batch, len, d]);
        let words = if locating.is_used() {
            src.iter().map(|s| SourceWords::new(s, SPACE)).collect()
        } else {
            vec![]
        };
        Encoded {
            outputs,
            keys,
            state,
            words,
        }
    }

    /// How this model's attention uses the decoder's place.
    pub fn locating(&self) -> Locating {
        Locating {
            word_window: self.word_window,
            span: self.relative_span,
        }
    }

    /// The additive attention bias `[rows, steps, positions]` of a [`Bias`].
    fn bias_tensor(&self, bias: Bias, dims: [usize; 3], device: &Device) -> Tensor<3> {
        let mask = Tensor::<1>::from_floats(bias.mask.as_slice(), device).reshape(dims);
        match &self.attn_relative {
            Some(table) => {
                let rel = table.val().select(0, ids_tensor(bias.bucket, device));
                mask + rel.reshape(dims).mul_scalar(RELATIVE_SCALE)
            }
            None => mask,
        }
    }

    /// The attention context `[b, t, d_enc]` of decoder outputs `[b, t, h]`
    /// over every position, plus the additive bias `[b, t, s]` if any.
    fn context(
        keys: Tensor<3>,
        values: Tensor<3>,
        bias: Option<Tensor<3>>,
        dec: Tensor<3>,
    ) -> Tensor<3> {
        let scores = dec.matmul(keys.swap_dims(1, 2)); // [b, t, s]
        let scores = match bias {
            Some(bias) => scores + bias,
            None => scores,
        };
        softmax(scores, 2).matmul(values)
    }

    /// [`Scores::Windowed`]'s attentional hidden state `[b * t, h]` of
    /// decoder outputs `[b, t, h]`, by the windowed operation (which makes
    /// the keys from the values).
    fn windowed_attentional(
        &self,
        dec: Tensor<3>,
        values: Tensor<3>,
        windows: Arc<Windows>,
        [w_a, w_c, b_c]: [Tensor<2>; 3],
    ) -> Tensor<2> {
        #[cfg(feature = "flex")]
        {
            let table = match &self.attn_relative {
                Some(table) => table.val(),
                None => Tensor::zeros([1, 1], &dec.device()),
            };
            crate::flex_attention::windowed_attentional(
                dec,
                values,
                w_a,
                table,
                w_c,
                b_c,
                windows,
                RELATIVE_SCALE,
            )
        }
        #[cfg(not(feature = "flex"))]
        {
            let _ = (dec, values, windows, w_a, w_c, b_c);
            unreachable!("windowed scores are made only where the operation exists")
        }
    }

    /// Whether attention on `device` runs windowed ([`Scores::Windowed`]).
    fn windowed(device: &Device) -> bool {
        #[cfg(feature = "flex")]
        return crate::flex_ops::supported(device);
        #[cfg(not(feature = "flex"))]
        {
            let _ = device;
            false
        }
    }

    /// Output logits for decoder outputs, batch-major `[batch, steps, d_hidden]` -> `[batch * steps, vocab]`.
    fn readout(&self, view: Option<AttentionView>, dec: Tensor<3>, train: bool) -> Tensor<2> {
        self.output_layer(self.attended(view, dec, train))
    }

    /// What the output layer reads for decoder outputs, batch-major
    /// `[batch, steps, d_hidden]` -> `[batch * steps, d_hidden]`: the
    /// attentional hidden state (or the outputs themselves without
    /// attention), dropout applied when training.
    fn attended(&self, view: Option<AttentionView>, dec: Tensor<3>, train: bool) -> Tensor<2> {
        let [b, t, h] = dec.dims();
        let hidden = match (view, &self.attn_score, &self.attn_out, &self.attn_bias) {
            (Some(view), Some(w_a), Some(w_c), Some(b_c)) => {
                let AttentionView {
                    keys,
                    values,
                    scores,
                } = view;
                let layer = [w_a.val(), w_c.val(), b_c.val()];
                match scores {
                    Scores::Windowed(windows) => {
                        self.windowed_attentional(dec, values, windows, layer)
                    }
                    Scores::All => Self::dense_attentional(dec, keys, values, None, layer),
                    Scores::Biased(bias) => {
                        Self::dense_attentional(dec, keys, values, Some(*bias), layer)
                    }
                }
            }
            _ => dec.reshape([b * t, h]),
        };
        Dropout::new(self.keep_prob).forward(hidden, train)
    }

    /// The attentional hidden state `[b * t, h]` of decoder outputs `[b, t,
    /// h]` by Burn's operations: attention over every position of the
    /// given keys (plus `bias`), joined with the outputs, `tanh([ctx; dec]
    /// W_c + b_c)`.
    fn dense_attentional(
        dec: Tensor<3>,
        keys: Option<Tensor<3>>,
        values: Tensor<3>,
        bias: Option<Tensor<3>>,
        [_, w_c, b_c]: [Tensor<2>; 3],
    ) -> Tensor<2> {
        let [b, t, _] = dec.dims();
        let keys = keys.expect("dense attention is given its keys");
        let context = Self::context(keys, values, bias, dec.clone()); // [b, t, d_enc]
        let joined = Tensor::cat(vec![context, dec], 2);
        let d = joined.dims()[2];
        fast_tanh(joined.reshape([b * t, d]).matmul(w_c) + b_c)
    }

    /// Logits `[rows, vocab]` of attended rows `[rows, d_hidden]`.
    fn output_layer(&self, hidden: Tensor<2>) -> Tensor<2> {
        hidden.matmul(self.out_w.val()) + self.out_b.val()
    }

    /// Teacher-forced decoding: logits `[batch * (tgt_len + 1), vocab]`,
    /// batch-major (row `b * (tgt_len + 1) + t` predicts target symbol `t` of
    /// sentence `b`, the last one the end symbol).
    ///
    /// - `tgt`: target ids `[batch][tgt_len]` (no start or end symbols), one length.
    pub fn forward(
        &self,
        src: &[Vec<u8>],
        tgt: &[Vec<u8>],
        train: bool,
        device: &Device,
    ) -> Tensor<2> {
        let windowed = Self::windowed(device);
        self.output_layer(self.teacher_forced(src, tgt, train, device, windowed))
    }

    /// Mean cross-entropy `[1]` of teacher-forced decoding against the
    /// targets and their end symbols ([`labels`](Self::labels)). On flex the
    /// output layer, softmax and loss are one fused operation, as the
    /// character models' ([`crate::charlm::classifier_loss`]).
    pub fn loss(
        &self,
        src: &[Vec<u8>],
        tgt: &[Vec<u8>],
        train: bool,
        device: &Device,
    ) -> Tensor<1> {
        let hidden = self.teacher_forced(src, tgt, train, device, Self::windowed(device));
        let labels = crate::ids_tensor(self.labels(tgt), device);
        crate::charlm::classifier_loss(hidden, self.out_w.val(), self.out_b.val(), labels)
    }

    /// [`forward`](Self::forward) up to the output layer's input: `[batch *
    /// (tgt_len + 1), d_hidden]`; attention [`Scores::Windowed`] if `windowed`
    /// (where [`windowed`](Self::windowed) allows), else dense.
    fn teacher_forced(
        &self,
        src: &[Vec<u8>],
        tgt: &[Vec<u8>],
        train: bool,
        device: &Device,
        windowed: bool,
    ) -> Tensor<2> {
        let how = Encoding {
            flex_join: windowed,
            // the windowed operation makes its keys itself
            keys: !windowed,
        };
        let enc = self.encode_with(src, train, device, how);
        let batch = tgt.len();
        let steps = tgt[0].len() + 1;
        let ids: Vec<i64> = (0..steps)
            .flat_map(|t| {
                tgt.iter().map(move |y| {
                    if t == 0 {
                        self.start_id as i64
                    } else {
                        y[t - 1] as i64
                    }
                })
            })
            .collect();
        let dropout = Dropout::new(self.keep_prob);
        let x = LstmInput::embedded(
            self.tgt_embedding.val(),
            ids_tensor(ids, device),
            dropout,
            train,
        );
        let (dec, _) = self.run_stack(
            &self.decoder,
            x,
            batch,
            dropout,
            train,
            Some(enc.state.clone()),
        );
        let view = self.attn_score.as_ref().map(|_| AttentionView {
            keys: enc.keys.clone(),
            values: enc.outputs.clone(),
            scores: self.teacher_forced_scores(&enc, tgt, device, windowed),
        });
        self.attended(view, batch_major(dec, steps, batch), train)
    }

    /// The scores of teacher-forced decoding: the decoder's place at each
    /// step is that of the target prefix ([`attention::teacher_windows`]).
    fn teacher_forced_scores(
        &self,
        enc: &Encoded,
        tgt: &[Vec<u8>],
        device: &Device,
        windowed: bool,
    ) -> Scores {
        let locating = self.locating();
        if !windowed && !locating.is_used() {
            return Scores::All;
        }
        let [batch, len, _] = enc.outputs.dims();
        let windows = attention::teacher_windows(locating, &enc.words, tgt, len, SPACE);
        if windowed {
            return Scores::Windowed(Arc::new(windows));
        }
        let bias = attention::dense_bias(&windows);
        Scores::Biased(Box::new(self.bias_tensor(
            bias,
            [batch, windows.steps, len],
            device,
        )))
    }

    /// Labels matching [`forward`](Self::forward)'s rows: each target followed by the end symbol.
    pub fn labels(&self, tgt: &[Vec<u8>]) -> Vec<i64> {
        tgt.iter()
            .flat_map(|y| {
                y.iter()
                    .map(|&c| c as i64)
                    .chain(std::iter::once(self.end_id as i64))
            })
            .collect()
    }
}

/// `tanh`: one vectorised pass on flex (Burn's calls the C library per element).
fn fast_tanh(x: Tensor<2>) -> Tensor<2> {
    #[cfg(feature = "flex")]
    return crate::flex_ops::tanh(x);
    #[cfg(not(feature = "flex"))]
    x.tanh()
}

/// Two time-major `[len * batch, h]` sequences (each in reversed source
/// order where `reversed` says) as batch-major rows `[batch, len, 2h]`, by
/// the flex operation (made only where [`Mirror::windowed`] allows).
fn join_directions(
    first: Tensor<2>,
    second: Tensor<2>,
    batch: usize,
    reversed: [bool; 2],
) -> Tensor<3> {
    #[cfg(feature = "flex")]
    return crate::flex_join::join_directions(first, second, batch, reversed);
    #[cfg(not(feature = "flex"))]
    {
        let _ = (first, second, batch, reversed);
        unreachable!("the fused join is asked for only where the operation exists")
    }
}

/// Reverses the time order of time-major rows `[steps * batch, d]`.
fn reverse_time(x: Tensor<2>, steps: usize, batch: usize, device: &Device) -> Tensor<2> {
    let idx: Vec<i64> = (0..steps)
        .rev()
        .flat_map(|t| (0..batch).map(move |b| (t * batch + b) as i64))
        .collect();
    x.select(0, ids_tensor(idx, device))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::for_each_param_grad;

    /// A loss's value and every parameter's gradient by name (`None` for a
    /// parameter the loss does not reach).
    type LossGrads = (Vec<f32>, Vec<(String, Option<Vec<f32>>)>);

    fn loss_and_grads(m: &Mirror, loss: Tensor<1>) -> LossGrads {
        let grads = loss.backward();
        let mut g = Vec::new();
        for_each_param_grad(m, &grads, |name, _, grad| {
            g.push((name.to_string(), grad.map(crate::buffer::values)));
        });
        (crate::buffer::values(loss), g)
    }

    /// The same loss (within 1e-5) and the same parameters with gradients,
    /// each value within 1e-5 relative.
    fn assert_same_loss_and_grads(a: &LossGrads, b: &LossGrads, case: &str) {
        let ((loss_a, grads_a), (loss_b, grads_b)) = (a, b);
        assert!(
            (loss_a[0] - loss_b[0]).abs() < 1e-5,
            "{case}: {loss_a:?} vs {loss_b:?}"
        );
        assert_eq!(grads_a.len(), grads_b.len(), "{case}: gradients");
        for ((name, a), (name_b, b)) in grads_a.iter().zip(grads_b) {
            assert_eq!(name, name_b, "{case}");
            let (Some(a), Some(b)) = (a, b) else {
                assert!(
                    a.is_none() && b.is_none(),
                    "{case} {name}: a gradient on one side only"
                );
                continue;
            };
            assert_eq!(a.len(), b.len(), "{case} {name}");
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() < 1e-5 * (1.0 + x.abs()),
                    "{case} {name}: {x} vs {y}"
                );
            }
        }
    }

    /// The loss (fused output layer and cross-entropy on flex) equals the
    /// cross-entropy of the logits, in value and in every parameter's
    /// gradient; with dropout too (the same masks: the generator is seeded
    /// alike before each).
    #[test]
    fn loss_equals_cross_entropy_of_the_logits() {
        let device = Device::flex().autodiff();
        let src = vec![vec![1u8, 2, 0, 3, 4, 5], vec![1, 2, 3, 4, 0, 5]];
        let tgt = vec![vec![2u8, 1, 0, 5, 4, 3], vec![4, 3, 2, 1, 0, 5]];
        for keep_prob in [1.0, 0.8] {
            let m = MirrorConfig::new(30, 28, 29)
                .with_d_embedding(5)
                .with_d_hidden(6)
                .with_word_window(true)
                .with_relative_span(2)
                .with_keep_prob(keep_prob)
                .init(7, &device);
            let run = |fused: bool| {
                device.seed(11);
                let loss = if fused {
                    m.loss(&src, &tgt, true, &device)
                } else {
                    let labels = ids_tensor(m.labels(&tgt), &device);
                    crate::charlm::cross_entropy(m.forward(&src, &tgt, true, &device), labels)
                };
                loss_and_grads(&m, loss)
            };
            let case = format!("keep {keep_prob}");
            assert_same_loss_and_grads(&run(true), &run(false), &case);
        }
    }

    /// Attention computed on each row's window (the flex operations: the
    /// encoder's join, the windowed attentional layer) equals dense masked
    /// attention in Burn's operations, in the loss and in every parameter's
    /// gradient: with and without a word window and a relative bias (its
    /// table made non-zero), with the source read forwards and reversed, at
    /// widths with a 16-lane body and a rest.
    #[test]
    fn windowed_attention_equals_dense_masked_attention() {
        let device = Device::flex().autodiff();
        let src = vec![
            vec![1u8, 2, 0, 3, 4, 5, 0, 6],
            vec![1, 2, 3, 4, 0, 5, 6, 7],
            vec![9, 0, 8, 0, 7, 6, 5, 4],
        ];
        let tgt = vec![
            vec![2u8, 1, 0, 5, 4, 3, 0, 6],
            vec![4, 3, 2, 1, 0, 7, 6, 5],
            vec![9, 0, 8, 0, 4, 5, 6, 7],
        ];
        for (word_window, span, reverse_source) in [
            (true, 2, false),
            (false, 2, false),
            (true, 0, false),
            (false, 0, false),
            (true, 2, true),
        ] {
            let mut m = MirrorConfig::new(30, 28, 29)
                .with_d_embedding(5)
                .with_d_hidden(20)
                .with_word_window(word_window)
                .with_relative_span(span)
                .with_reverse_source(reverse_source)
                .init(7, &device);
            if span > 0 {
                let table =
                    Tensor::<2>::from_floats([[0.3], [-0.2], [0.5], [0.1], [-0.4]], &device);
                m.attn_relative = Some(Param::from_tensor(table));
            }
            let case = format!("word_window {word_window}, span {span}, reverse {reverse_source}");
            let run = |windowed: bool| {
                let logits = m.output_layer(m.teacher_forced(&src, &tgt, true, &device, windowed));
                let labels = ids_tensor(m.labels(&tgt), &device);
                let loss = crate::charlm::cross_entropy(logits, labels);
                loss_and_grads(&m, loss)
            };
            let (windowed, dense) = (run(true), run(false));
            assert_same_loss_and_grads(&windowed, &dense, &case);
            if span > 0 {
                let table = &windowed
                    .1
                    .iter()
                    .find(|(n, _)| n.contains("relative"))
                    .expect("table")
                    .1;
                assert!(
                    table.as_ref().is_some_and(|t| t.iter().any(|&x| x != 0.0)),
                    "{case}: table learns"
                );
            }
        }
    }
}
