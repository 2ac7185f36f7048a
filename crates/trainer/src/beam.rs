//! The most likely continuation of a prime under a character language model,
//! found by beam search: `beam` hypotheses kept at every step, each extended
//! by every character, the `beam` most probable kept (width 1 is greedy).

use burn::tensor::Device;
use burn::tensor::activation::log_softmax;
use model::CharLm;

use crate::error::{Result, TrainError};
use crate::recipe::TokenizerKind;
use crate::sample::{
    MAX_SAMPLE_CHARS, context_chars, ids_tensor, input_id, padded_prime, primed_state, text_of,
};

/// What [`most_likely`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Continuation {
    /// The prime as typed and the continuation.
    pub text: String,
    /// Natural log-probability of the continuation given the prime.
    pub log_prob: f64,
}

/// The most probable `length` characters after `prime` (after a space
/// when there is none), the prime first, that a beam of `beam` hypotheses
/// finds, telling `searched(n)` of each character position `n` of `length`
/// done (the text comes at the end: a long search's progress). `model` must not be on an autodiff device.
pub fn most_likely(
    model: &CharLm,
    kind: TokenizerKind,
    prime: Option<&str>,
    (length, beam): (usize, usize),
    device: &Device,
    searched: &mut dyn FnMut(usize),
) -> Result<Continuation> {
    if beam == 0 || beam > 64 {
        return Err(TrainError::Input(format!(
            "--beam must be from 1 to 64, got {beam}"
        )));
    }
    let ctx = context_chars(kind);
    // no prime: the model starts after spaces (a word's start), which the
    // text does not show, as it does not show a prime's padding
    let (start, padding) = match padded_prime(prime, ctx)? {
        Some(p) => (p.ids, p.padding),
        None => (vec![0; ctx], ctx),
    };
    if (start.len() + length) as f64 * beam as f64 > MAX_SAMPLE_CHARS as f64 {
        return Err(TrainError::Input(format!(
            "--beam {beam} x --length {length}: more than the {MAX_SAMPLE_CHARS} characters \
             held at once; lower --length or --beam"
        )));
    }
    let mut state = primed_state(model, kind, &start, 1, device);
    // hypotheses: log-probability and the last characters (the next input);
    // each step's choices as (parent, character), the texts rebuilt at the end
    // (copying whole histories at every step would be quadratic in the length)
    let tail = |h: &[u8]| -> Vec<u8> { h[h.len() - ctx..].to_vec() };
    let mut hyps: Vec<(f64, Vec<u8>)> = vec![(0.0, tail(&start))];
    let mut trail: Vec<Vec<(u32, u8)>> = Vec::with_capacity(length);
    let v = model.output_size();
    for done in 1..=length {
        let ids: Vec<i64> = hyps
            .iter()
            .map(|(_, h)| input_id(kind, h, h.len() - 1))
            .collect();
        let (logits, st) = model.forward(ids_tensor(ids, device), hyps.len(), state, false);
        let logp = model::buffer::values(log_softmax(logits, 1));
        let mut cands: Vec<(f64, usize, u8)> = Vec::with_capacity(hyps.len() * v);
        for (k, (score, _)) in hyps.iter().enumerate() {
            for (c, &lp) in logp[k * v..(k + 1) * v].iter().enumerate() {
                cands.push((score + lp as f64, k, c as u8));
            }
        }
        // the most probable first; ties in a fixed order (parent, then character)
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        cands.truncate(beam);
        let parents: Vec<i64> = cands.iter().map(|&(_, k, _)| k as i64).collect();
        let idx = ids_tensor(parents, device);
        state = st.into_iter().map(|s| s.select_rows(&idx)).collect();
        trail.push(cands.iter().map(|&(_, k, c)| (k as u32, c)).collect());
        hyps = cands
            .into_iter()
            .map(|(score, k, c)| {
                let mut h = hyps[k].1.clone();
                h.push(c);
                (score, tail(&h))
            })
            .collect();
        searched(done);
    }
    // the best hypothesis is first; walk its choices back to the start
    let log_prob = hyps[0].0;
    let mut continuation = Vec::with_capacity(length);
    let mut k = 0usize;
    for step in trail.iter().rev() {
        let (parent, c) = step[k];
        continuation.push(c);
        k = parent as usize;
    }
    continuation.reverse();
    let mut best = start;
    best.extend(continuation);
    best.drain(..padding);
    Ok(Continuation {
        text: text_of(best),
        log_prob,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{SampleOptions, generate, prime_ids};
    use model::CharLmConfig;
    use tokenizer::rng::Rng;

    fn model() -> CharLm {
        CharLmConfig::new(27, 27)
            .with_d_hidden(12)
            .init(5, &Device::flex())
    }

    #[test]
    fn width_one_is_greedy_generation() {
        let m = model();
        let d = Device::flex();
        let mut searched = vec![];
        let found = most_likely(
            &m,
            TokenizerKind::Char,
            Some("the "),
            (30, 1),
            &d,
            &mut |n| searched.push(n),
        )
        .unwrap();
        assert_eq!(
            searched,
            (1..=30).collect::<Vec<_>>(),
            "each position told once"
        );
        let opts = SampleOptions {
            length: 30,
            temperature: 0.0,
            prime: Some("the ".into()),
            count: 2,
            truncation: Default::default(),
        };
        let greedy = generate(&m, TokenizerKind::Char, &opts, &mut Rng::new(1), &d).unwrap();
        assert_eq!(found.text, greedy[0]);
    }

    #[test]
    fn a_full_beam_finds_the_most_likely_pair_exactly() {
        // beam 27 over 2 characters keeps every prefix: the exact maximum
        let m = model();
        let d = Device::flex();
        let found = most_likely(
            &m,
            TokenizerKind::Char,
            Some("ab"),
            (2, 27),
            &d,
            &mut |_| {},
        )
        .unwrap();
        let logp = |text: &str| {
            let ids = prime_ids(text).unwrap();
            let inputs: Vec<i64> = ids[..ids.len() - 1].iter().map(|&c| c as i64).collect();
            let (logits, _) = m.forward(ids_tensor(inputs, &d), 1, m.zero_state(1, &d), false);
            let lp = log_softmax(logits, 1)
                .into_data()
                .try_into_vec_as::<f32>()
                .unwrap();
            // the two characters after "ab"
            (2..4)
                .map(|t| lp[(t - 1) * 27 + ids[t] as usize] as f64)
                .sum::<f64>()
        };
        let mut best = (f64::NEG_INFINITY, String::new());
        for a in 0..27u8 {
            for b in 0..27u8 {
                let text = text_of(vec![1, 2, a, b]);
                let l = logp(&text);
                if l > best.0 {
                    best = (l, text);
                }
            }
        }
        assert_eq!(found.text, best.1);
        assert!(
            (found.log_prob - best.0).abs() < 1e-4,
            "{} vs {}",
            found.log_prob,
            best.0
        );
        assert!(most_likely(&m, TokenizerKind::Char, None, (2, 65), &d, &mut |_| {}).is_err());
    }
}
