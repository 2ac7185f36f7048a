//! Decoding a trained mirror: greedy and beam search, one decoder step at a
//! time, with the attention of each step restricted to the window its
//! place allows (the same numbers as teacher forcing's masked attention:
//! masked positions weigh exactly 0).

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor};

use super::attention::{Bias, Place};
use super::{AttentionView, Encoded, Mirror, SPACE, Scores};
use crate::dropout::Dropout;
use crate::ids_tensor;
use crate::lstm::{LstmInput, LstmState};

impl Mirror {
    /// What one decoder step attends to, for hypotheses at `places` in
    /// their outputs (one per row of `enc`).
    fn step_view(&self, enc: &Encoded, places: &[Place], device: &Device) -> Option<AttentionView> {
        let keys = enc.keys.clone()?;
        let locating = self.locating();
        let [rows, len, _] = keys.dims();
        let mut bias = Bias::default();
        if !locating.word_window {
            // every position, with the relative bias if there is one
            let scores = if locating.is_used() {
                for (words, &at) in enc.words.iter().zip(places) {
                    bias.push(locating, words, at, (0..len).map(Some));
                }
                Scores::Biased(Box::new(self.bias_tensor(bias, [rows, 1, len], device)))
            } else {
                Scores::All
            };
            return Some(AttentionView {
                keys: Some(keys),
                values: enc.outputs.clone(),
                scores,
            });
        }
        // only the current word and its delimiter: a window as wide as the widest
        let spans: Vec<(usize, usize)> = enc
            .words
            .iter()
            .zip(places)
            .map(|(words, &at)| locating.window(words, at))
            .collect();
        let width = spans.iter().map(|(lo, hi)| hi - lo).max().unwrap_or(1);
        let mut gather = Vec::with_capacity(rows * width);
        for (r, ((words, &at), &(lo, hi))) in enc.words.iter().zip(places).zip(&spans).enumerate() {
            // slots past the window are padding: masked, gathering its last position
            let slots = (0..width).map(move |j| (lo + j < hi).then_some(lo + j));
            gather.extend(
                slots
                    .clone()
                    .map(|s| (r * len + s.unwrap_or(hi - 1)) as i64),
            );
            bias.push(locating, words, at, slots);
        }
        let idx = ids_tensor(gather, device);
        let pick = |x: Tensor<3>| {
            let d = x.dims()[2];
            x.reshape([rows * len, d])
                .select(0, idx.clone())
                .reshape([rows, width, d])
        };
        Some(AttentionView {
            keys: Some(pick(keys)),
            values: pick(enc.outputs.clone()),
            scores: Scores::Biased(Box::new(self.bias_tensor(bias, [rows, 1, width], device))),
        })
    }

    /// One decoder step for `rows` hypotheses: log-probabilities `[rows, vocab]`
    /// and the new state. `enc` must have `rows` sequences; `places` are where
    /// each row is in its output, `prev` the symbol it wrote last (or the start).
    fn step(
        &self,
        enc: &Encoded,
        prev: &[i64],
        places: &[Place],
        state: Vec<LstmState>,
        device: &Device,
    ) -> (Tensor<2>, Vec<LstmState>) {
        let rows = prev.len();
        let x = LstmInput::Embedded {
            table: self.tgt_embedding.val(),
            ids: ids_tensor(prev.to_vec(), device),
        };
        let (dec, state) = self.run_stack(
            &self.decoder,
            x,
            rows,
            Dropout::new(1.0),
            false,
            Some(state),
        );
        let h = self.d_hidden();
        let view = self.step_view(enc, places, device);
        let logits = self.readout(view, dec.reshape([rows, 1, h]), false);
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
        let mut places = vec![Place::default(); src.len()];
        for _ in 0..=max_len {
            let (logp, st) = self.step(&enc, &prev, &places, state, device);
            state = st;
            let v = self.vocab_size();
            let values = crate::buffer::values(logp);
            for (b, row) in values.chunks_exact(v).enumerate() {
                let best = argmax(row);
                prev[b] = best as i64;
                if !done[b] {
                    if best == self.end_id || out[b].len() == max_len {
                        done[b] = true;
                    } else {
                        out[b].push(best as u8);
                        places[b] = places[b].after(best as u8, SPACE);
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
            state: enc.state.into_iter().map(|s| s.select_rows(&idx)).collect(),
            words: enc
                .words
                .iter()
                .flat_map(|w| std::iter::repeat_n(w.clone(), beam))
                .collect(),
        };
        let mut state = enc.state.clone();
        // hypotheses: (score, symbols, alive); only beam 0 is alive at first
        let mut hyps: Vec<Vec<(f64, Vec<u8>, Place)>> = (0..n)
            .map(|_| vec![(0.0, vec![], Place::default()); beam])
            .collect();
        let mut alive: Vec<Vec<bool>> = (0..n)
            .map(|_| (0..beam).map(|k| k == 0).collect())
            .collect();
        let mut finished: Vec<Vec<(f64, Vec<u8>)>> = vec![vec![]; n];
        let mut prev = vec![self.start_id as i64; n * beam];
        let v = self.vocab_size();
        for t in 0..=max_len {
            if t == max_len {
                // cut: every live hypothesis ends as it is (greedy stops at max_len symbols too)
                for (b, done) in finished.iter_mut().enumerate() {
                    for (k, h) in hyps[b].iter().enumerate() {
                        if alive[b][k] {
                            done.push((h.0, h.1.clone()));
                        }
                    }
                }
                break;
            }
            let places: Vec<Place> = hyps.iter().flatten().map(|h| h.2).collect();
            let (logp, st) = self.step(&enc, &prev, &places, state, device);
            let values = crate::buffer::values(logp);
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
                    if sym == self.end_id {
                        finished[b].push((score, seq));
                        continue;
                    }
                    seq.push(sym as u8);
                    parents.push((b * beam + k) as i64);
                    prev[b * beam + new_hyps.len()] = sym as i64;
                    new_hyps.push((score, seq, hyps[b][k].2.after(sym as u8, SPACE)));
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
                    new_hyps.push((f64::NEG_INFINITY, vec![], Place::default()));
                    new_alive.push(false);
                }
                hyps[b] = new_hyps;
                alive[b] = new_alive;
            }
            if alive.iter().all(|a| a.iter().all(|x| !x)) {
                break;
            }
            let idx = ids_tensor(parents, device);
            state = st.into_iter().map(|s| s.select_rows(&idx)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::MirrorConfig;

    /// Step-by-step decoding (windowed attention) gives teacher forcing's
    /// (masked attention) log-probabilities at every step, for every way of
    /// locating.
    #[test]
    fn stepping_equals_teacher_forcing() {
        let device = Device::flex();
        // "ab cde" and "abcd e": one length, different words
        let src = vec![vec![1u8, 2, 0, 3, 4, 5], vec![1, 2, 3, 4, 0, 5]];
        let tgt: Vec<Vec<u8>> = src.iter().map(|s| mirror(s)).collect();
        for (word_window, relative_span) in [(false, 0), (true, 0), (false, 3), (true, 2)] {
            let mut m = MirrorConfig::new(30, 28, 29)
                .with_d_embedding(5)
                .with_d_hidden(6)
                .with_word_window(word_window)
                .with_relative_span(relative_span)
                .init(7, &device);
            if relative_span > 0 {
                // a bias that matters (it starts at zero)
                let v: Vec<f32> = (0..2 * relative_span + 1).map(|i| i as f32 - 1.5).collect();
                let table = Tensor::<1>::from_floats(v.as_slice(), &device).reshape([v.len(), 1]);
                m.attn_relative = Some(burn::module::Param::from_tensor(table));
            }
            let forced = log_softmax(m.forward(&src, &tgt, false, &device), 1);
            let forced = forced.into_data().try_into_vec_as::<f32>().unwrap();
            let enc = m.encode(&src, false, &device);
            let mut state = enc.state.clone();
            let steps = tgt[0].len() + 1;
            for t in 0..steps {
                let places: Vec<Place> = tgt.iter().map(|y| Place::of(&y[..t], 0)).collect();
                let prev: Vec<i64> = tgt
                    .iter()
                    .map(|y| if t == 0 { 28 } else { y[t - 1] as i64 })
                    .collect();
                let (logp, st) = m.step(&enc, &prev, &places, state, &device);
                state = st;
                let logp = logp.into_data().try_into_vec_as::<f32>().unwrap();
                for b in 0..2 {
                    let want = &forced[(b * steps + t) * 30..(b * steps + t + 1) * 30];
                    let got = &logp[b * 30..(b + 1) * 30];
                    for (x, y) in want.iter().zip(got) {
                        assert!(
                            (x - y).abs() < 1e-5,
                            "window {word_window} span {relative_span} step {t} row {b}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }

    fn mirror(s: &[u8]) -> Vec<u8> {
        let mut out = s.to_vec();
        for w in out.split_mut(|&c| c == 0) {
            w.reverse();
        }
        out
    }
}

#[cfg(test)]
mod cut_tests {
    use super::*;
    use crate::mirror::MirrorConfig;

    #[test]
    fn outputs_are_cut_at_max_len_by_greedy_and_beam_alike() {
        // an untrained model rarely ends early: both must stop at max_len symbols
        let device = Device::flex();
        let m = MirrorConfig::new(30, 28, 29)
            .with_d_embedding(4)
            .with_d_hidden(5)
            .with_word_window(true)
            .with_relative_span(2)
            .init(1, &device);
        let src = vec![vec![1u8, 2, 0, 3, 4, 5, 6, 7]];
        for beam in [1, 3] {
            for out in m.beam_search(&src, beam, 4, &device) {
                assert!(out.len() <= 4, "beam {beam}: {out:?}");
            }
        }
    }
}
