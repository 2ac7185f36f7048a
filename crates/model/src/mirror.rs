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
//! All sequences of a call have the same source length (the trainer batches
//! by length), so there is no padding to mask.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Tensor};
use tokenizer::rng::Rng;

use crate::dropout::Dropout;
use crate::ids_tensor;
use crate::init::{self, InitScheme};
use crate::lstm::{CellLayout, Lstm, LstmConfig, LstmInput, LstmState};

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
}

/// The encoder's result for a batch.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// Outputs per source position, batch-major `[batch, src_len, d_enc]`.
    pub outputs: Tensor<3>,
    /// Attention keys `outputs W_a`, `[batch, src_len, d_hidden]` (attention only).
    pub keys: Option<Tensor<3>>,
    /// Final state of each forward encoder layer: the decoder's initial state.
    pub state: Vec<LstmState>,
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
        Mirror {
            src_embedding,
            tgt_embedding,
            encoder,
            encoder_back,
            decoder,
            attn_score,
            attn_out,
            attn_bias,
            out_w: init::weight(scheme, h, self.vocab_size, rng, device),
            out_b: Param::from_tensor(Tensor::zeros([1, self.vocab_size], device)),
            keep_prob: self.keep_prob,
            reverse_source: self.reverse_source,
            start_id: self.start_id,
            end_id: self.end_id,
        }
    }
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
        first: Tensor<2>,
        batch: usize,
        dropout: Dropout,
        train: bool,
        state: Option<Vec<LstmState>>,
    ) -> (Tensor<2>, Vec<LstmState>) {
        let device = first.device();
        let mut x = first;
        let mut finals = Vec::with_capacity(layers.len());
        let mut state = state.map(|s| s.into_iter());
        for (k, layer) in layers.iter().enumerate() {
            if k > 0 {
                x = dropout.forward(x, train);
            }
            let s0 = state
                .as_mut()
                .and_then(|s| s.next())
                .unwrap_or_else(|| LstmState::zeros(batch, layer.d_hidden, &device));
            let (out, s) = layer.forward(&LstmInput::Dense(x), batch, s0);
            x = out;
            finals.push(s);
        }
        (x, finals)
    }

    /// Encodes sources of one length.
    ///
    /// - `src`: symbol ids `[batch][src_len]`, every row the same length.
    pub fn encode(&self, src: &[Vec<u8>], train: bool, device: &Device) -> Encoded {
        let batch = src.len();
        let len = src[0].len();
        assert!(
            src.iter().all(|s| s.len() == len),
            "sources of one length per call"
        );
        let dropout = Dropout::new(self.keep_prob);
        let ordered = |reverse: bool| -> Tensor<2> {
            let ids: Vec<i64> = (0..len)
                .flat_map(|t| {
                    let t = if reverse { len - 1 - t } else { t };
                    src.iter().map(move |s| s[t] as i64)
                })
                .collect();
            dropout.forward(
                self.src_embedding.val().select(0, ids_tensor(ids, device)),
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
        // outputs in source order
        let fwd = if self.reverse_source {
            reverse_time(fwd, len, batch, device)
        } else {
            fwd
        };
        let outputs = if self.encoder_back.is_empty() {
            fwd
        } else {
            let (back, _) = self.run_stack(
                &self.encoder_back,
                ordered(!self.reverse_source),
                batch,
                dropout,
                train,
                None,
            );
            let back = if self.reverse_source {
                back
            } else {
                reverse_time(back, len, batch, device)
            };
            Tensor::cat(vec![fwd, back], 1)
        };
        let outputs = batch_major(outputs, len, batch);
        let keys = self.attn_score.as_ref().map(|w| {
            let [b, s, d] = outputs.dims();
            outputs
                .clone()
                .reshape([b * s, d])
                .matmul(w.val())
                .reshape([b, s, self.d_hidden()])
        });
        Encoded {
            outputs,
            keys,
            state,
        }
    }

    /// Output logits for decoder outputs, batch-major `[batch, steps, d_hidden]` -> `[batch * steps, vocab]`.
    fn readout(&self, enc: &Encoded, dec: Tensor<3>, train: bool) -> Tensor<2> {
        let [b, t, h] = dec.dims();
        let hidden = match (&enc.keys, &self.attn_out, &self.attn_bias) {
            (Some(keys), Some(w_c), Some(b_c)) => {
                let scores = dec.clone().matmul(keys.clone().swap_dims(1, 2)); // [b, t, s]
                let alpha = softmax(scores, 2);
                let context = alpha.matmul(enc.outputs.clone()); // [b, t, d_enc]
                let joined = Tensor::cat(vec![context, dec], 2);
                let d = joined.dims()[2];
                (joined.reshape([b * t, d]).matmul(w_c.val()) + b_c.val()).tanh()
            }
            _ => dec.reshape([b * t, h]),
        };
        let hidden = Dropout::new(self.keep_prob).forward(hidden, train);
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
        let enc = self.encode(src, train, device);
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
        let x = dropout.forward(
            self.tgt_embedding.val().select(0, ids_tensor(ids, device)),
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
        self.readout(&enc, batch_major(dec, steps, batch), train)
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

    /// One decoder step for `rows` hypotheses: log-probabilities `[rows, vocab]`
    /// and the new state. `enc` must have `rows` sequences.
    fn step(
        &self,
        enc: &Encoded,
        prev: &[i64],
        state: Vec<LstmState>,
        device: &Device,
    ) -> (Tensor<2>, Vec<LstmState>) {
        let rows = prev.len();
        let x = self
            .tgt_embedding
            .val()
            .select(0, ids_tensor(prev.to_vec(), device));
        let (dec, state) = self.run_stack(
            &self.decoder,
            x,
            rows,
            Dropout::new(1.0),
            false,
            Some(state),
        );
        let h = self.d_hidden();
        let logits = self.readout(enc, dec.reshape([rows, 1, h]), false);
        (log_softmax(logits, 1), state)
    }

    /// Greedy decoding: for every source, the symbols up to (not including)
    /// the end symbol, at most `max_len` of them.
    pub fn greedy(&self, src: &[Vec<u8>], max_len: usize, device: &Device) -> Vec<Vec<u8>> {
        let enc = self.encode(src, false, device);
        let mut state = enc.state.clone();
        let mut prev = vec![self.start_id as i64; src.len()];
        let mut out: Vec<Vec<u8>> = vec![vec![]; src.len()];
        let mut done = vec![false; src.len()];
        for _ in 0..=max_len {
            let (logp, st) = self.step(&enc, &prev, state, device);
            state = st;
            let v = self.vocab_size();
            let values = logp.into_data().try_into_vec_as::<f32>().expect("f32");
            for (b, row) in values.chunks_exact(v).enumerate() {
                let best = argmax(row);
                prev[b] = best as i64;
                if !done[b] {
                    if best == self.end_id || out[b].len() == max_len {
                        done[b] = true;
                    } else {
                        out[b].push(best as u8);
                    }
                }
            }
            if done.iter().all(|d| *d) {
                break;
            }
        }
        out
    }

    /// Beam search with `beam` hypotheses per source: the most probable
    /// complete output (ended by the end symbol, or cut at `max_len`).
    pub fn beam_search(
        &self,
        src: &[Vec<u8>],
        beam: usize,
        max_len: usize,
        device: &Device,
    ) -> Vec<Vec<u8>> {
        if beam <= 1 {
            return self.greedy(src, max_len, device);
        }
        let n = src.len();
        let enc = self.encode(src, false, device);
        // every source repeated `beam` times: row n * beam + k
        let expand: Vec<i64> = (0..n)
            .flat_map(|b| std::iter::repeat_n(b as i64, beam))
            .collect();
        let idx = ids_tensor(expand, device);
        let enc = Encoded {
            outputs: enc.outputs.select(0, idx.clone()),
            keys: enc.keys.map(|k| k.select(0, idx.clone())),
            state: enc
                .state
                .into_iter()
                .map(|s| LstmState {
                    h: s.h.select(0, idx.clone()),
                    c: s.c.select(0, idx.clone()),
                })
                .collect(),
        };
        let mut state = enc.state.clone();
        // hypotheses: (score, symbols, alive); only beam 0 is alive at first
        let mut hyps: Vec<Vec<(f64, Vec<u8>)>> =
            (0..n).map(|_| vec![(0.0, vec![]); beam]).collect();
        let mut alive: Vec<Vec<bool>> = (0..n)
            .map(|_| (0..beam).map(|k| k == 0).collect())
            .collect();
        let mut finished: Vec<Vec<(f64, Vec<u8>)>> = vec![vec![]; n];
        let mut prev = vec![self.start_id as i64; n * beam];
        let v = self.vocab_size();
        for t in 0..=max_len {
            let (logp, st) = self.step(&enc, &prev, state, device);
            let values = logp.into_data().try_into_vec_as::<f32>().expect("f32");
            let mut parents = Vec::with_capacity(n * beam);
            for b in 0..n {
                let mut cands: Vec<(f64, usize, usize)> = vec![];
                for k in 0..beam {
                    if !alive[b][k] {
                        continue;
                    }
                    let row = &values[(b * beam + k) * v..(b * beam + k + 1) * v];
                    for (sym, &lp) in row.iter().enumerate() {
                        if sym == self.start_id {
                            continue;
                        }
                        cands.push((hyps[b][k].0 + lp as f64, k, sym));
                    }
                }
                cands.sort_by(|x, y| y.0.total_cmp(&x.0));
                let mut new_hyps = Vec::with_capacity(beam);
                let mut new_alive = Vec::with_capacity(beam);
                for &(score, k, sym) in &cands {
                    if new_hyps.len() == beam {
                        break;
                    }
                    let mut seq = hyps[b][k].1.clone();
                    if sym == self.end_id || t == max_len {
                        if sym != self.end_id {
                            seq.push(sym as u8);
                        }
                        finished[b].push((score, seq));
                        continue;
                    }
                    seq.push(sym as u8);
                    parents.push((b * beam + k) as i64);
                    prev[b * beam + new_hyps.len()] = sym as i64;
                    new_hyps.push((score, seq));
                    new_alive.push(true);
                }
                // stop this source once its best finished beats every live hypothesis
                let best_done = finished[b]
                    .iter()
                    .map(|f| f.0)
                    .fold(f64::NEG_INFINITY, f64::max);
                if new_hyps.first().is_none_or(|h| h.0 <= best_done) {
                    new_alive.iter_mut().for_each(|a| *a = false);
                }
                while new_hyps.len() < beam {
                    parents.push((b * beam) as i64);
                    prev[b * beam + new_hyps.len()] = self.end_id as i64;
                    new_hyps.push((f64::NEG_INFINITY, vec![]));
                    new_alive.push(false);
                }
                hyps[b] = new_hyps;
                alive[b] = new_alive;
            }
            if alive.iter().all(|a| a.iter().all(|x| !x)) {
                break;
            }
            let idx = ids_tensor(parents, device);
            state = st
                .into_iter()
                .map(|s| LstmState {
                    h: s.h.select(0, idx.clone()),
                    c: s.c.select(0, idx.clone()),
                })
                .collect();
        }
        finished
            .into_iter()
            .map(|f| {
                f.into_iter()
                    .max_by(|x, y| x.0.total_cmp(&y.0))
                    .map(|x| x.1)
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// Index of the largest value.
fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 { (i, x) } else { best }
        })
        .0
}

/// Reverses the time order of time-major rows `[steps * batch, d]`.
fn reverse_time(x: Tensor<2>, steps: usize, batch: usize, device: &Device) -> Tensor<2> {
    let idx: Vec<i64> = (0..steps)
        .rev()
        .flat_map(|t| (0..batch).map(move |b| (t * batch + b) as i64))
        .collect();
    x.select(0, ids_tensor(idx, device))
}
