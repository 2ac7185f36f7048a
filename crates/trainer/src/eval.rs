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
    fn from_sum(sum: f64, n: usize) -> Self {
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
    let values = logits
        .into_data()
        .try_into_vec_as::<f32>()
        .expect("f32 logits");
    let mut total = 0.0f64;
    for (row, &label) in values.chunks_exact(v).zip(labels) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
        let p = ((row[label as usize] as f64 - max).exp() / z).max(1e-10);
        total -= p.ln();
    }
    total
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
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport> {
    let (inputs, labels) = sequence_inputs(kind, ids, false);
    if inputs.is_empty() {
        return Err(TrainError::Input(format!(
            "text of {} characters: nothing to predict (needs at least {})",
            ids.len(),
            context_chars(kind) + 1
        )));
    }
    let total = inputs.len();
    let (sum, n) = evaluate_sequence(model, &inputs, &labels, device, 4096, &mut |d| {
        progress(d, total)
    });
    Ok(EvalReport::from_sum(sum, n))
}

/// Perplexity from a summed `-ln p` over `n` predictions.
pub fn perplexity(sum: f64, n: usize) -> f64 {
    EvalReport::from_sum(sum, n).perplexity
}

#[cfg(test)]
mod tests {
    use super::*;

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
