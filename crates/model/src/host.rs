//! A character language model's weights as host arrays, stepped one
//! character at a time without any tensor operation: for generation on the
//! CPU, where a step is a few small matrix products and per-operation
//! overhead would dominate.
//!
//! The first layer's input projection (one-hot row or embedding, times the
//! input weights, plus the bias) is precomputed once per input symbol, so a
//! step of the notebook's model is one table lookup, one `[streams, 64] x
//! [64, 256]` product, the gate arithmetic and the classifier.

use crate::buffer::values;
use crate::charlm::CharLm;
use crate::kernel::{self, PackedB, matmul, matmul_maybe_packed};
use crate::lstm::{Lstm, LstmInput};

/// One layer on the host.
#[derive(Debug, Clone)]
struct HostLayer {
    /// First layer: the projection of every input symbol, bias included, `[vocab, 4H]`.
    table: Option<Vec<f32>>,
    /// Later layers: input weights `[H, 4H]` and bias `[4H]`.
    wx: Vec<f32>,
    b: Vec<f32>,
    /// Recurrent weights `[H, 4H]`.
    wh: Vec<f32>,
    /// The same weights packed for the blocked kernel (where it applies).
    wx_packed: Option<PackedB>,
    wh_packed: Option<PackedB>,
}

/// A [`CharLm`] on the host, for stepping.
#[derive(Debug, Clone)]
pub struct HostLm {
    layers: Vec<HostLayer>,
    w: Vec<f32>,
    b: Vec<f32>,
    /// The classifier padded to a multiple of 16 columns and packed, with its
    /// bias padded alike (where the blocked kernel applies).
    w_packed: Option<(PackedB, Vec<f32>)>,
    hidden: usize,
    vocab_in: usize,
    vocab_out: usize,
}

/// The state of `streams` sequences: per layer, outputs and cells `[streams, H]`.
#[derive(Debug, Clone)]
pub struct HostState {
    h: Vec<Vec<f32>>,
    c: Vec<Vec<f32>>,
    streams: usize,
    /// Work buffers of a step, kept so that stepping allocates nothing.
    scratch: Scratch,
}

#[derive(Debug, Clone, Default)]
struct Scratch {
    g: Vec<f32>,
    c_new: Vec<f32>,
    tc: Vec<f32>,
    h_new: Vec<f32>,
    padded: Vec<f32>,
}

fn dense(layer: &Lstm) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    (
        values(layer.input_weights()),
        values(layer.biases()),
        values(layer.recurrent_weights()),
    )
}

impl HostLm {
    /// Copies a model's weights to the host (any device).
    pub fn new(model: &CharLm) -> Self {
        let first = &model.layers[0];
        let vocab_in = match &model.embedding {
            Some(e) => e.val().dims()[0],
            None => first.d_input(),
        };
        let layers = model
            .layers
            .iter()
            .enumerate()
            .map(|(k, layer)| {
                let (wx, b, wh) = dense(layer);
                let (hd, g4) = (model.d_hidden(), 4 * model.d_hidden());
                let wh_packed = PackedB::new(&wh, hd, g4, false);
                if k > 0 {
                    return HostLayer {
                        table: None,
                        wx_packed: PackedB::new(&wx, hd, g4, false),
                        wx,
                        b,
                        wh,
                        wh_packed,
                    };
                }
                // the projection of every symbol: embedding (or identity) x Wx + b
                let ids = burn::tensor::Tensor::<1, burn::tensor::Int>::arange(
                    0..vocab_in as i64,
                    &layer.blocks[0].wx.val().device(),
                );
                let input = match &model.embedding {
                    Some(e) => LstmInput::Embedded {
                        table: e.val(),
                        ids,
                    },
                    None => LstmInput::OneHot(ids),
                };
                let table = values(layer.project_input(&input));
                HostLayer {
                    table: Some(table),
                    wx: vec![],
                    b: vec![],
                    wh,
                    wx_packed: None,
                    wh_packed,
                }
            })
            .collect();
        let (w, b) = (values(model.w.val()), values(model.b.val()));
        let (hd, v) = (model.d_hidden(), model.output_size());
        let vp = v.div_ceil(16) * 16;
        let mut w_pad = vec![0.0f32; hd * vp];
        for (dst, src) in w_pad.chunks_exact_mut(vp).zip(w.chunks_exact(v)) {
            dst[..v].copy_from_slice(src);
        }
        let mut b_pad = b.clone();
        b_pad.resize(vp, 0.0);
        let w_packed = PackedB::new(&w_pad, hd, vp, false).map(|p| (p, b_pad));
        HostLm {
            layers,
            w,
            b,
            w_packed,
            hidden: model.d_hidden(),
            vocab_in,
            vocab_out: model.output_size(),
        }
    }

    /// Number of input symbols.
    pub fn vocab_in(&self) -> usize {
        self.vocab_in
    }

    /// Number of output classes.
    pub fn vocab_out(&self) -> usize {
        self.vocab_out
    }

    /// Zero state for `streams` sequences.
    pub fn zero_state(&self, streams: usize) -> HostState {
        let n = streams * self.hidden;
        HostState {
            h: vec![vec![0.0; n]; self.layers.len()],
            c: vec![vec![0.0; n]; self.layers.len()],
            streams,
            scratch: Scratch::default(),
        }
    }

    /// One step of every stream: input symbols `ids` (one per stream) in,
    /// logits `[streams, vocab_out]` written to `logits`.
    pub fn step(&self, ids: &[usize], state: &mut HostState, logits: &mut Vec<f32>) {
        let (s, hd) = (state.streams, self.hidden);
        assert_eq!(ids.len(), s, "one input per stream");
        let g4 = 4 * hd;
        let mut sc = std::mem::take(&mut state.scratch);
        sc.g.resize(s * g4, 0.0);
        sc.c_new.resize(s * hd, 0.0);
        sc.tc.resize(s * hd, 0.0);
        sc.h_new.resize(s * hd, 0.0);
        let Scratch {
            g,
            c_new,
            tc,
            h_new,
            padded,
        } = &mut sc;
        for (k, layer) in self.layers.iter().enumerate() {
            match &layer.table {
                Some(table) => {
                    for (row, &id) in g.chunks_exact_mut(g4).zip(ids) {
                        assert!(
                            id < self.vocab_in,
                            "input symbol {id} outside the vocabulary"
                        );
                        row.copy_from_slice(&table[id * g4..(id + 1) * g4]);
                    }
                }
                None => {
                    for row in g.chunks_exact_mut(g4) {
                        row.copy_from_slice(&layer.b);
                    }
                    matmul_maybe_packed(
                        g,
                        &state.h[k - 1],
                        (&layer.wx, false),
                        layer.wx_packed.as_ref(),
                        s,
                        g4,
                        hd,
                        true,
                    );
                }
            }
            matmul_maybe_packed(
                g,
                &state.h[k],
                (&layer.wh, false),
                layer.wh_packed.as_ref(),
                s,
                g4,
                hd,
                true,
            );
            kernel::cell_step(
                g,
                &[],
                &state.c[k],
                kernel::CellOut::over(c_new, tc, h_new),
                hd,
            );
            std::mem::swap(&mut state.c[k], c_new);
            std::mem::swap(&mut state.h[k], h_new);
        }
        let v = self.vocab_out;
        let top = &state.h[self.layers.len() - 1];
        logits.clear();
        match &self.w_packed {
            Some((w, b)) if kernel::blocked_rows(s) => {
                let vp = b.len();
                padded.clear();
                for _ in 0..s {
                    padded.extend_from_slice(b);
                }
                w.matmul(padded, top, s, true);
                for row in padded.chunks_exact(vp) {
                    logits.extend_from_slice(&row[..v]);
                }
            }
            _ => {
                for _ in 0..s {
                    logits.extend_from_slice(&self.b);
                }
                matmul(logits, top, &self.w, s, v, hd, false, false, true);
            }
        }
        state.scratch = sc;
    }
}
