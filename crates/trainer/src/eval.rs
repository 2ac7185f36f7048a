//! Evaluating a character language model on a text: cross-entropy,
//! perplexity and bits per character, batch 1, state carried (the
//! notebook's validation, and `charlstm eval`).

use burn::tensor::{Device, Tensor};
use model::{CharLm, LstmState};
use tokenizer::bigram_id;

use crate::error::{Result, TrainError};
use crate::recipe::TokenizerKind;
use crate::sample::{context_chars, ids_tensor};

/// Cross-entropy of a model on a text.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EvalReport {
    /// Characters predicted.
    pub predicted: usize,
    /// Mean cross-entropy in nats.
    pub cross_entropy: f64,
    /// `exp(cross_entropy)`.
    pub perplexity: f64,
    /// Bits per character, `cross_entropy / ln 2`.
    pub bits_per_char: f64,
}

impl EvalReport {
    pub(crate) fn from_sum(sum: f64, n: usize) -> Self {
        let ce = sum / n as f64;
        EvalReport {
            predicted: n,
            cross_entropy: ce,
            perplexity: ce.exp(),
            bits_per_char: ce / std::f64::consts::LN_2,
        }
    }
}

/// Sum of `-ln max(p[label], 1e-10)` over rows of logits `[n, v]` (the
/// notebook's `logprob`, in f64).
pub fn logprob_sum(logits: Tensor<2>, labels: &[u8]) -> f64 {
    let [n, v] = logits.dims();
    assert_eq!(n, labels.len());
    model::buffer::values(logits)
        .chunks_exact(v)
        .zip(labels)
        .map(|(row, &label)| row_logprob(row, label))
        .sum()
}

/// `-ln max(p[label], 1e-10)` of one row of logits (the notebook's `logprob`).
fn row_logprob(row: &[f32], label: u8) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
    let p = ((row[label as usize] as f64 - max).exp() / z).max(1e-10);
    -p.ln()
}

/// How [`evaluate_text`] reads a text: as one stream, or as `streams`
/// contiguous segments evaluated side by side (one batch), each segment's
/// state warmed on the `burn_in` characters before it (read, not scored).
/// With enough burn-in the state carried across a segment boundary is
/// forgotten anyway, so the result equals one stream's; the batched kernels
/// make it many times faster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streams {
    /// Segments evaluated together (1: the text read as one stream).
    pub streams: usize,
    /// Characters read before each segment but the first, not scored.
    pub burn_in: usize,
}

impl Default for Streams {
    /// 64 segments, 1000 characters of burn-in.
    fn default() -> Self {
        Streams {
            streams: 64,
            burn_in: 1000,
        }
    }
}

impl Streams {
    /// Segments a text of `n` predictions is read in: at most `streams`, each
    /// at least four burn-ins long (or the burn-in would dominate); 1 for a
    /// short text.
    pub fn segments(&self, n: usize) -> usize {
        self.streams.min(n / (4 * self.burn_in).max(1)).max(1)
    }
}

/// [`evaluate_sequence`] over `plan.streams` segments at once (see [`Streams`]).
pub fn evaluate_streams(
    model: &CharLm,
    inputs: &[i64],
    labels: &[u8],
    plan: Streams,
    device: &Device,
    progress: &mut dyn FnMut(usize),
) -> (f64, usize) {
    let n = inputs.len();
    let s = plan.segments(n);
    if s == 1 {
        return evaluate_sequence(model, inputs, labels, device, 4096, progress);
    }
    let len = n.div_ceil(s);
    // stream k reads [from, end) and scores [begin, end)
    let spans: Vec<(usize, usize, usize)> = (0..s)
        .map(|k| {
            let begin = (k * len).min(n);
            let end = ((k + 1) * len).min(n);
            (begin.saturating_sub(plan.burn_in), begin, end)
        })
        .collect();
    let steps = spans
        .iter()
        .map(|&(from, _, end)| end - from)
        .max()
        .unwrap_or(0);
    let mut state: Vec<LstmState> = model.zero_state(s, device);
    let (mut sum, mut scored) = (0.0f64, 0usize);
    const CHUNK: usize = 256;
    for t0 in (0..steps).step_by(CHUNK) {
        let t1 = (t0 + CHUNK).min(steps);
        // time-major: row (t - t0) * s + k; past a stream's end, a pad
        let mut ids = Vec::with_capacity((t1 - t0) * s);
        for t in t0..t1 {
            for &(from, _, end) in &spans {
                ids.push(if from + t < end { inputs[from + t] } else { 0 });
            }
        }
        let (logits, st) = model.forward(ids_tensor(ids, device), s, state, false);
        state = st;
        let v = logits.dims()[1];
        let values = model::buffer::values(logits);
        for t in t0..t1 {
            for (k, &(from, begin, end)) in spans.iter().enumerate() {
                let at = from + t;
                if at >= begin && at < end {
                    let row = &values[((t - t0) * s + k) * v..((t - t0) * s + k + 1) * v];
                    sum += row_logprob(row, labels[at]);
                    scored += 1;
                }
            }
        }
        progress(scored);
    }
    (sum, scored)
}

/// Inputs and labels of a text read in order, batch 1: every character after
/// the first (`context`) ones is predicted. With `wrap`, the text is read as a
/// circle (the notebook's validation): every character is predicted once.
pub fn sequence_inputs(kind: TokenizerKind, ids: &[u8], wrap: bool) -> (Vec<i64>, Vec<u8>) {
    let n = ids.len();
    let ctx = context_chars(kind);
    let at = |k: usize| ids[k % n];
    let count = if wrap { n } else { n.saturating_sub(ctx) };
    let mut inputs = Vec::with_capacity(count);
    let mut labels = Vec::with_capacity(count);
    for k in 0..count {
        inputs.push(match kind {
            TokenizerKind::Char => at(k) as i64,
            TokenizerKind::Bigram => bigram_id(at(k), at(k + 1)) as i64,
        });
        labels.push(at(k + ctx));
    }
    (inputs, labels)
}

/// The notebook's bigram validation: its batch generator of batch 1 and 2
/// unrollings advances two characters per call, so the bigrams `(v[2k], v[2k+1])`
/// predict `v[2k+2]`: every other character, the text read twice around.
pub fn notebook_bigram_inputs(ids: &[u8]) -> (Vec<i64>, Vec<u8>) {
    let n = ids.len();
    let at = |k: usize| ids[k % n];
    (0..n)
        .map(|k| (bigram_id(at(2 * k), at(2 * k + 1)) as i64, at(2 * k + 2)))
        .unzip()
}

/// Evaluates inputs/labels in order with carried state, in chunks of `chunk`
/// steps, calling `progress(done)` after each chunk. Returns the summed
/// `-ln p` and the count.
pub fn evaluate_sequence(
    model: &CharLm,
    inputs: &[i64],
    labels: &[u8],
    device: &Device,
    chunk: usize,
    progress: &mut dyn FnMut(usize),
) -> (f64, usize) {
    let mut state: Vec<LstmState> = model.zero_state(1, device);
    let mut sum = 0.0;
    let mut done = 0;
    for (inp, lab) in inputs.chunks(chunk.max(1)).zip(labels.chunks(chunk.max(1))) {
        let (logits, st) = model.forward(ids_tensor(inp.to_vec(), device), 1, state, false);
        state = st;
        sum += logprob_sum(logits, lab);
        done += inp.len();
        progress(done);
    }
    (sum, done)
}

/// Cross-entropy, perplexity and bits per character of `model` on a text,
/// read in order from its start, state carried, batch 1.
pub fn evaluate_text(
    model: &CharLm,
    kind: TokenizerKind,
    ids: &[u8],
    plan: Streams,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport> {
    if plan.streams == 0 {
        return Err(TrainError::Input("--streams must be at least 1".into()));
    }
    let (inputs, labels) = text_inputs(kind, ids)?;
    let total = inputs.len();
    let (sum, n) = evaluate_streams(model, &inputs, &labels, plan, device, &mut |d| {
        progress(d, total)
    });
    Ok(EvalReport::from_sum(sum, n))
}

/// [`sequence_inputs`] of a text read once from its start; an error when
/// it is too short to predict anything.
pub fn text_inputs(kind: TokenizerKind, ids: &[u8]) -> Result<(Vec<i64>, Vec<u8>)> {
    let (inputs, labels) = sequence_inputs(kind, ids, false);
    if inputs.is_empty() {
        return Err(TrainError::Input(format!(
            "text of {} characters: nothing to predict (needs at least {})",
            ids.len(),
            context_chars(kind) + 1
        )));
    }
    Ok((inputs, labels))
}

/// Perplexity from a summed `-ln p` over `n` predictions.
pub fn perplexity(sum: f64, n: usize) -> f64 {
    EvalReport::from_sum(sum, n).perplexity
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many streams with burn-in give one stream's figure, within 0.001
    /// bits per character, on a trained model and real text.
    #[test]
    fn streams_with_burn_in_equal_one_stream() {
        let shared = std::env::var_os("CHARLSTM_SHARED")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
            });
        let corpus =
            text8::read_corpus(&shared.join("datasets/wikitext2-valid/text8.zip")).unwrap();
        let loaded = crate::load_recipe(
            "notebook-char",
            &["train.steps=400".into(), "train.summary=1000".into()],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let report = crate::train_lm(
            &loaded,
            &corpus,
            &crate::RunTarget::New {
                path: Some(dir.path().join("run")),
                runs_root: dir.path().into(),
            },
            crate::TrainOptions::new(Device::flex(), "flex"),
            &mut |_| {},
        )
        .unwrap();
        let (model, kind, _) = crate::lm::load_lm(&report.run_dir, &Device::flex()).unwrap();
        let text = &corpus.ids[500_000..700_000];
        let device = Device::flex();
        let one = Streams {
            streams: 1,
            burn_in: 0,
        };
        let single = evaluate_text(&model, kind, text, one, &device, &mut |_, _| {}).unwrap();
        let many = evaluate_text(
            &model,
            kind,
            text,
            Streams::default(),
            &device,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(single.predicted, many.predicted);
        let gap = (single.bits_per_char - many.bits_per_char).abs();
        assert!(
            gap < 0.001,
            "{} vs {}: {gap}",
            single.bits_per_char,
            many.bits_per_char
        );
    }

    #[test]
    fn sequence_inputs_follow_the_notebook() {
        // char, wrap: input v[k] predicts v[k+1 mod n]
        let v = [1u8, 2, 3];
        let (i, l) = sequence_inputs(TokenizerKind::Char, &v, true);
        assert_eq!((i, l), (vec![1, 2, 3], vec![2, 3, 1]));
        let (i, l) = sequence_inputs(TokenizerKind::Bigram, &v, true);
        assert_eq!(i, vec![1 + 27 * 2, 2 + 27 * 3, 3 + 27]);
        assert_eq!(l, vec![3, 1, 2]);
        let (i, l) = sequence_inputs(TokenizerKind::Bigram, &v, false);
        assert_eq!((i, l), (vec![1 + 27 * 2], vec![3]));
        let (i, l) = notebook_bigram_inputs(&[1, 2, 3, 4]);
        assert_eq!(i, vec![1 + 27 * 2, 3 + 27 * 4, 1 + 27 * 2, 3 + 27 * 4]);
        assert_eq!(l, vec![3, 1, 3, 1]);
    }
}
