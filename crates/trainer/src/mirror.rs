//! Training and evaluating the word mirror (problem 3).
//!
//! Data: windows of consecutive words from the standard split of a corpus
//! (train 90%, validation 5%, test 5%: test sentences come from text never
//! trained on). Every training batch holds windows of one character length,
//! so sources and targets need no padding; optionally some words are replaced
//! by random letters so the model learns to mirror words it has never seen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::Device;
use model::mirror::{Mirror, MirrorConfig};
use serde::{Deserialize, Serialize};
use text8::{MirrorPair, MirrorSampler, SplitKind};
use tokenizer::rng::Rng;
use tokenizer::{MirrorVocab, Tokenizer};

use crate::checkpoint::load_weights;
use crate::error::{Result, TrainError};
use crate::fsutil::atomic_write_str;
use crate::metrics::{MetricsRow, step_plot};
use crate::optim::Optimizer;
use crate::plot::Plot;
use crate::recipe::{LoadedRecipe, MirrorDataSpec, MirrorRecipe, Recipe};
use crate::run::RunDir;
use crate::safetensors::SafeTensors;
use crate::session::{
    self, Event, FinalReport, ModelSlot, RunTarget, StepOutput, SummaryInput, SummaryOutput, Task,
    TrainOptions,
};

/// The model configuration of a mirror recipe.
pub fn model_config(r: &MirrorRecipe) -> MirrorConfig {
    let m = &r.model;
    MirrorConfig::new(
        MirrorVocab.size(),
        MirrorVocab::START as usize,
        MirrorVocab::END as usize,
    )
    .with_d_embedding(m.d_embedding)
    .with_d_hidden(m.d_hidden)
    .with_n_layers(m.n_layers)
    .with_attention(m.attention)
    .with_bidirectional(m.bidirectional)
    .with_reverse_source(m.reverse_source)
    .with_keep_prob(m.keep_prob)
    .with_word_window(m.word_window)
    .with_relative_span(m.relative_span)
}

/// Draws training batches whose windows all have one character length.
#[derive(Debug, Clone)]
pub struct LengthBatcher {
    sampler: MirrorSampler,
    batch_size: usize,
    made_up: MadeUpWords,
    max_chars: usize,
}

impl LengthBatcher {
    /// A batcher over one part of the corpus: windows with made-up words
    /// are at most `max_chars` long too.
    pub fn new(
        sampler: MirrorSampler,
        batch_size: usize,
        made_up: MadeUpWords,
        max_chars: usize,
    ) -> Self {
        LengthBatcher {
            sampler,
            batch_size,
            made_up,
            max_chars,
        }
    }

    /// The source of one window, its words made up at random, if it fits
    /// `max_chars` and (when given) has length `want`. Most draws are thrown
    /// away by their length, so the ids are made only for a draw that is
    /// kept: its length is found first without writing anything, then the
    /// same draws are repeated from the saved generator to write it.
    fn draw(&self, rng: &mut Rng, want: Option<usize>) -> Option<Vec<u8>> {
        let (first, n_words) = self.sampler.sample_span(rng);
        let words = || self.sampler.words_of(first, n_words);
        let before = rng.clone();
        let len = self.made_up.len_after(words(), rng);
        if len > self.max_chars || want.is_some_and(|w| w != len) {
            return None;
        }
        let (mut again, mut source) = (before, Vec::with_capacity(len));
        self.made_up.rewrite(words(), &mut again, Some(&mut source));
        debug_assert!(again == *rng && source.len() == len, "the same draws");
        Some(source)
    }

    /// The next batch: `batch_size` windows of the length of a first random
    /// window. A batch size that the text cannot fill with windows of one
    /// length is an error after [`BATCH_ROUNDS`] first windows, not a loop
    /// that never ends.
    pub fn next_batch(&self, rng: &mut Rng) -> Result<Vec<MirrorPair>> {
        for _ in 0..BATCH_ROUNDS {
            let Some(first) = self.draw(rng, None) else {
                continue;
            };
            let len = first.len();
            let mut out = vec![MirrorPair::new(first)];
            let mut tries = 0;
            while out.len() < self.batch_size && tries < 200_000 {
                if let Some(source) = self.draw(rng, Some(len)) {
                    out.push(MirrorPair::new(source));
                }
                tries += 1;
            }
            if out.len() == self.batch_size {
                return Ok(out);
            }
            // a rare length: start again from another first window
        }
        Err(TrainError::Recipe(format!(
            "data.batch_size {}: no {BATCH_ROUNDS} tries found that many windows of one \
             character length in this text; lower data.batch_size",
            self.batch_size
        )))
    }
}

/// First windows [`LengthBatcher::next_batch`] tries before it gives up.
pub const BATCH_ROUNDS: usize = 20;

/// How training words are replaced by made-up ones, so that the model learns
/// to mirror letters, not to recall words: random letter strings, of the
/// replaced word's length or of any length up to `max_len`, some of them runs
/// of one letter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MadeUpWords {
    /// Probability that a word is replaced.
    pub prob: f64,
    /// Longest made-up word (0: the length of the word it replaces).
    pub max_len: usize,
    /// Share of made-up words that are one letter repeated, with at most one
    /// other letter at a random place (`zzzzzq`).
    pub run_prob: f64,
}

impl MadeUpWords {
    /// The recipe's settings.
    pub fn from_recipe(d: &MirrorDataSpec) -> Self {
        MadeUpWords {
            prob: d.random_word_prob,
            max_len: d.made_up_len,
            run_prob: d.letter_run_prob,
        }
    }

    /// `ids` (text8 ids, words between spaces) with words replaced at random.
    pub fn apply(&self, ids: &[u8], rng: &mut Rng) -> Vec<u8> {
        let mut out = Vec::with_capacity(ids.len());
        self.rewrite(ids.split(|&c| c == 0), rng, Some(&mut out));
        out
    }

    /// The length [`apply`](Self::apply) gives `words` (joined by single
    /// spaces), drawing from `rng` exactly as it does, but writing nothing:
    /// the batcher throws most windows away by their length.
    pub fn len_after<'a>(&self, words: impl Iterator<Item = &'a [u8]>, rng: &mut Rng) -> usize {
        self.rewrite(words, rng, None)
    }

    /// Rewrites `words` (the spaces between them kept) into `out` when
    /// given; returns the length written. One copy of the draws for
    /// [`apply`](Self::apply) and [`len_after`](Self::len_after).
    fn rewrite<'a>(
        &self,
        words: impl Iterator<Item = &'a [u8]>,
        rng: &mut Rng,
        mut out: Option<&mut Vec<u8>>,
    ) -> usize {
        let letter = |rng: &mut Rng| 1 + rng.below(26) as u8;
        let mut written = 0;
        for (i, word) in words.enumerate() {
            if i > 0 {
                written += 1;
                out.iter_mut().for_each(|o| o.push(0));
            }
            if self.prob <= 0.0 || word.is_empty() || rng.next_f64() >= self.prob {
                written += word.len();
                out.iter_mut().for_each(|o| o.extend_from_slice(word));
                continue;
            }
            let len = if self.max_len == 0 {
                word.len()
            } else {
                rng.range_inclusive(1, self.max_len)
            };
            written += len;
            if rng.next_f64() < self.run_prob {
                let c = letter(rng);
                // one other letter somewhere, half of the time (the letter
                // drawn before its place: the order of every earlier run)
                let other = (len > 1 && rng.next_f64() < 0.5).then(|| {
                    let x = letter(rng);
                    (rng.below(len as u64) as usize, x)
                });
                if let Some(o) = out.as_mut() {
                    let start = o.len();
                    o.extend(std::iter::repeat_n(c, len));
                    if let Some((at, x)) = other {
                        o[start + at] = x;
                    }
                }
            } else {
                for _ in 0..len {
                    let c = letter(rng);
                    out.iter_mut().for_each(|o| o.push(c));
                }
            }
        }
        written
    }
}

/// Accuracy of decoded outputs against targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Sentences scored.
    pub sentences: usize,
    /// Characters in the right place, over the longer of output and target.
    pub char_acc: f64,
    /// Words equal to the target's word at the same index, over the target's words.
    pub word_acc: f64,
    /// Outputs equal to their target.
    pub sentence_acc: f64,
}

/// Scores outputs against targets (char ids).
pub fn score(outputs: &[Vec<u8>], targets: &[Vec<u8>]) -> Scores {
    let (mut chars, mut chars_ok, mut words, mut words_ok, mut exact) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    for (o, t) in outputs.iter().zip(targets) {
        chars += o.len().max(t.len());
        chars_ok += o.iter().zip(t).filter(|(a, b)| a == b).count();
        let ow: Vec<&[u8]> = o.split(|&c| c == 0).collect();
        let tw: Vec<&[u8]> = t.split(|&c| c == 0).collect();
        words += tw.len();
        words_ok += tw.iter().zip(&ow).filter(|(a, b)| a == b).count();
        exact += usize::from(o == t);
    }
    let n = outputs.len().max(1) as f64;
    Scores {
        sentences: outputs.len(),
        char_acc: chars_ok as f64 / chars.max(1) as f64,
        word_acc: words_ok as f64 / words.max(1) as f64,
        sentence_acc: exact as f64 / n,
    }
}

/// Longest output decoded for a source of `len` characters.
pub fn max_output_len(len: usize) -> usize {
    len + 10
}

/// Source positions (times beam hypotheses) decoded together: their encoder
/// outputs, keys and states take about a kilobyte each for the recipe's
/// model, so about 128 MiB at most (`charlstm mirror` of a 200 KB line:
/// 64 MB resident, 135 MB at `1 << 20`).
const DECODE_POSITIONS: usize = 1 << 17;

/// How well `model` mirrors `pairs`, each decoded with `beam`
/// ([`decode_until`]); `None` where `stop` said to stop first.
fn decoded_scores(
    model: &Mirror,
    pairs: &[MirrorPair],
    beam: usize,
    device: &Device,
    stop: &dyn Fn() -> bool,
) -> Result<Option<Scores>> {
    let sources: Vec<Vec<u8>> = pairs.iter().map(|p| p.source.clone()).collect();
    let targets: Vec<Vec<u8>> = pairs.iter().map(|p| p.target.clone()).collect();
    let decoded = decode_until(model, &sources, beam, device, stop, &mut |_, _| {})?;
    Ok(decoded.map(|d| score(&d, &targets)))
}

/// Decodes every source (greedy for `beam` 1), batching sources of equal
/// length, and tells `decoded` after each batch how many source characters
/// are decoded of how many (a long decoding's progress); a source too long
/// to decode in this machine's memory is an error naming its length.
pub fn decode_all(
    model: &Mirror,
    sources: &[Vec<u8>],
    beam: usize,
    device: &Device,
    decoded: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Vec<u8>>> {
    let outputs = decode_until(model, sources, beam, device, &|| false, decoded)?;
    Ok(outputs.expect("never asked to stop"))
}

/// [`decode_all`], asking `stop` before each batch: `None` where it said
/// to stop (a run's test, which a Ctrl-C leaves to the resume).
fn decode_until(
    model: &Mirror,
    sources: &[Vec<u8>],
    beam: usize,
    device: &Device,
    stop: &dyn Fn() -> bool,
    decoded: &mut dyn FnMut(usize, usize),
) -> Result<Option<Vec<Vec<u8>>>> {
    let mut by_len: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, s) in sources.iter().enumerate() {
        by_len.entry(s.len()).or_default().push(i);
    }
    if let Some(&longest) = by_len.keys().next_back() {
        crate::memory::check_fits(
            &format!("decoding a sentence of {longest} characters with beam {beam}"),
            crate::memory::decode_bytes(longest, beam, model.d_hidden()),
            "lower --beam or give shorter sentences",
        )?;
    }
    let mut out = vec![vec![]; sources.len()];
    let most = if beam > 1 { 64 } else { 256 };
    let total = sources.iter().map(Vec::len).sum();
    let mut done = 0;
    for (len, idx) in by_len {
        let chunk = (DECODE_POSITIONS / ((len + 2) * beam)).clamp(1, most);
        for part in idx.chunks(chunk) {
            if stop() {
                return Ok(None);
            }
            let batch: Vec<Vec<u8>> = part.iter().map(|&i| sources[i].clone()).collect();
            let outputs = model.beam_search(&batch, beam, max_output_len(len), device);
            for (&i, d) in part.iter().zip(outputs) {
                out[i] = d;
            }
            done += len * part.len();
            decoded(done, total);
        }
    }
    Ok(Some(out))
}

/// Teacher-forced mean cross-entropy over pairs (grouped by length).
pub fn teacher_forced_loss(model: &Mirror, pairs: &[MirrorPair], device: &Device) -> f64 {
    let mut by_len: BTreeMap<usize, Vec<&MirrorPair>> = BTreeMap::new();
    for p in pairs {
        by_len.entry(p.source.len()).or_default().push(p);
    }
    let (mut sum, mut n) = (0.0f64, 0usize);
    for group in by_len.values() {
        for part in group.chunks(256) {
            let src: Vec<Vec<u8>> = part.iter().map(|p| p.source.clone()).collect();
            let tgt: Vec<Vec<u8>> = part.iter().map(|p| p.target.clone()).collect();
            let count = model.labels(&tgt).len();
            let loss = model.loss(&src, &tgt, false, device);
            sum += loss.into_data().try_into_vec_as::<f64>().expect("f64")[0] * count as f64;
            n += count;
        }
    }
    sum / n.max(1) as f64
}

/// One summary of a mirror run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorSummary {
    /// Step.
    pub step: u64,
    /// Mean training loss since the last summary (per target symbol).
    pub loss: f64,
    /// Learning rate.
    pub lr: f64,
    /// Teacher-forced validation loss.
    pub valid_loss: f64,
    /// Greedy-decoding accuracy on the validation windows.
    pub valid: Scores,
    /// Target symbols per second of training since the last summary.
    pub chars_per_sec: f64,
    /// Training seconds so far.
    pub wall_seconds: f64,
}

impl MetricsRow for MirrorSummary {
    const CSV_HEADER: &'static str =
        "step,loss,lr,valid_loss,char_acc,word_acc,sentence_acc,chars_per_sec,wall_seconds";

    fn step(&self) -> u64 {
        self.step
    }

    fn loss(&self) -> f64 {
        self.loss
    }

    fn to_csv(&self) -> String {
        format!(
            "{},{:.6},{:e},{:.6},{:.6},{:.6},{:.6},{:.0},{:.2}",
            self.step,
            self.loss,
            self.lr,
            self.valid_loss,
            self.valid.char_acc,
            self.valid.word_acc,
            self.valid.sentence_acc,
            self.chars_per_sec,
            self.wall_seconds
        )
    }

    fn from_csv(f: &[&str]) -> Option<Self> {
        if f.len() != 9 {
            return None;
        }
        let num = |k: usize| f[k].parse::<f64>().ok();
        Some(MirrorSummary {
            step: f[0].parse().ok()?,
            loss: num(1)?,
            lr: num(2)?,
            valid_loss: num(3)?,
            valid: Scores {
                sentences: 0,
                char_acc: num(4)?,
                word_acc: num(5)?,
                sentence_acc: num(6)?,
            },
            chars_per_sec: num(7)?,
            wall_seconds: num(8)?,
        })
    }

    fn log_lines(&self, _samples: Option<&[String]>) -> Vec<String> {
        vec![format!(
            "step {}: loss {:.4}, lr {:.2e}, validation loss {:.4}, accuracy: characters {:.2}%, words {:.2}%, sentences {:.2}%",
            self.step,
            self.loss,
            self.lr,
            self.valid_loss,
            100.0 * self.valid.char_acc,
            100.0 * self.valid.word_acc,
            100.0 * self.valid.sentence_acc
        )]
    }

    fn plots(title: &str, rows: &[Self]) -> Vec<(&'static str, Plot)> {
        vec![
            (
                "loss.png",
                step_plot(
                    &format!("{title}: loss per target symbol"),
                    "cross-entropy (nats)",
                    rows,
                    &[
                        ("training", &|r: &Self| r.loss),
                        ("validation", &|r: &Self| r.valid_loss),
                    ],
                ),
            ),
            (
                "accuracy.png",
                step_plot(
                    &format!("{title}: validation accuracy (greedy)"),
                    "accuracy (%)",
                    rows,
                    &[
                        ("characters", &|r: &Self| 100.0 * r.valid.char_acc),
                        ("words", &|r: &Self| 100.0 * r.valid.word_acc),
                        ("sentences", &|r: &Self| 100.0 * r.valid.sentence_acc),
                    ],
                ),
            ),
        ]
    }
}

/// The corpus parts of a mirror run.
pub struct MirrorData {
    /// Training batches.
    pub batcher: LengthBatcher,
    /// Fixed validation windows.
    pub valid: Vec<MirrorPair>,
    /// Fixed test windows.
    pub test: Vec<MirrorPair>,
    /// The test part, for other evaluations (other sentence lengths).
    pub test_ids: Arc<[u8]>,
    /// Where the corpus came from.
    pub source: String,
    /// Characters of the training part (the windows are drawn from it).
    pub chars: usize,
}

impl MirrorData {
    /// Splits a corpus (standard 90/5/5) and draws the fixed evaluation sets.
    pub fn new(corpus: &text8::Corpus, r: &MirrorRecipe) -> Result<Self> {
        let split = corpus.split(SplitKind::Standard)?;
        let d = &r.data;
        let sampler = |ids: &[u8], part: &str| {
            MirrorSampler::new(ids.into(), d.min_words, d.max_words, d.max_chars).map_err(|e| {
                match e {
                    e @ text8::Text8Error::NoWindow { .. } => text8::Text8Error::Invalid(format!(
                        "{}, its {part} part: {e}; lower the recipe's data.min_words or raise \
                         its data.max_chars",
                        corpus.source.display()
                    )),
                    e => corpus.named(e),
                }
            })
        };
        let train = sampler(split.train, "training")?;
        let valid =
            sampler(split.valid, "validation")?.fixed_set(d.valid_windows, r.train.seed ^ 0x7A11D);
        let test_ids: Arc<[u8]> = split.test.into();
        let test = sampler(&test_ids, "test")?.fixed_set(d.test_windows, r.train.seed ^ 0x7E57);
        Ok(MirrorData {
            batcher: LengthBatcher::new(
                train,
                d.batch_size,
                MadeUpWords::from_recipe(d),
                d.max_chars,
            ),
            valid,
            test,
            test_ids,
            source: corpus.source.display().to_string(),
            chars: split.train.len(),
        })
    }
}

/// What a mirror run reports at the end.
#[derive(Debug, Clone, Serialize)]
pub struct MirrorReport {
    /// The run's report.
    #[serde(flatten)]
    pub run: FinalReport<MirrorSummary>,
    /// Test accuracy with greedy decoding (none when stopped early).
    pub test_greedy: Option<Scores>,
    /// Test accuracy with the recipe's beam (equal to greedy for beam 1).
    pub test_beam: Option<Scores>,
    /// The beam width.
    pub beam: usize,
}

/// The mirror as a [`Task`] of the run lifecycle.
struct MirrorTask {
    recipe: MirrorRecipe,
    config: serde_json::Value,
    /// The training device (with autodiff) and the one evaluation runs on.
    device: Device,
    eval_device: Device,
    model: ModelSlot<Mirror>,
    data: MirrorData,
    /// The next batch, made while the last step trained.
    next: Option<Prefetched>,
    /// The test scores, greedy and with the recipe's beam, once finished.
    test: Option<(Scores, Scores)>,
}

/// A batch made ahead of its step, with the generator's state it was drawn
/// from and the state after it: a step uses it only if the generator is in
/// that very state (no summary, resume or other draw came between), so
/// that the batches and the checkpointed generator are those of drawing
/// each batch when its step starts.
#[derive(Debug)]
struct Prefetched {
    from: Rng,
    after: Rng,
    batch: Vec<MirrorPair>,
}

impl Task for MirrorTask {
    type Row = MirrorSummary;
    const FORMAT: &'static str = "charlstm-mirror";
    const LOSS_EVERY_STEP: bool = true;

    fn tokenizer(&self) -> Tokenizer {
        Tokenizer::Mirror
    }

    fn model_config(&self) -> serde_json::Value {
        self.config.clone()
    }

    fn params(&self) -> usize {
        model::params::num_scalars(self.model.get())
    }

    fn train_chars(&self) -> usize {
        self.data.chars
    }

    fn step(
        &mut self,
        step: u64,
        lr: f64,
        optim: &mut Optimizer,
        rng: &mut Rng,
    ) -> Result<StepOutput> {
        let batch = match self.next.take() {
            Some(p) if p.from == *rng => {
                *rng = p.after;
                p.batch
            }
            _ => self.data.batcher.next_batch(rng)?,
        };
        if self.recipe.model.keep_prob < 1.0 {
            self.device
                .seed(Rng::derive(self.recipe.train.seed ^ 0xD809, step).next_u64());
        }
        let src: Vec<Vec<u8>> = batch.iter().map(|p| p.source.clone()).collect();
        let tgt: Vec<Vec<u8>> = batch.iter().map(|p| p.target.clone()).collect();
        let (model, device, batcher) = (&mut self.model, &self.device, &self.data.batcher);
        let from = rng.clone();
        // the next batch is made on the other kernel thread while this one
        // trains (7% of a one-thread step); a draw that fails is left to the
        // next step, which draws again and reports it
        let (out, next) = model::kernel::pool::with_side_job(
            || {
                let m = model.take();
                let chars = m.labels(&tgt).len();
                let loss = m.loss(&src, &tgt, true, device);
                let grads = loss.backward();
                let (m, stats) = optim.step(m, &grads, lr);
                model.put(m);
                StepOutput {
                    loss: loss.inner(),
                    chars,
                    grad_norm: stats.grad_norm,
                }
            },
            move || {
                let mut after = from.clone();
                let batch = batcher.next_batch(&mut after).ok()?;
                Some(Prefetched { from, after, batch })
            },
        );
        self.next = next;
        Ok(out)
    }

    fn summary(
        &mut self,
        s: &SummaryInput,
        _rng: &mut Rng,
    ) -> Result<SummaryOutput<MirrorSummary>> {
        let eval_model = self.model.get().valid();
        let valid = &self.data.valid;
        let valid_loss = teacher_forced_loss(&eval_model, valid, &self.eval_device);
        let valid_scores = decoded_scores(&eval_model, valid, 1, &self.eval_device, &|| false)?
            .expect("never asked to stop");
        Ok(SummaryOutput {
            row: MirrorSummary {
                step: s.step,
                loss: s.mean_loss,
                lr: s.lr,
                valid_loss,
                valid: valid_scores,
                chars_per_sec: s.chars_per_sec,
                wall_seconds: s.wall_seconds,
            },
            samples: None,
            sample_seconds: 0.0,
        })
    }

    fn save_model(&self, prefix: &str, out: &mut SafeTensors) {
        self.model.save(prefix, out);
    }

    fn load_model(&mut self, from: &SafeTensors, prefix: &str, path: &Path) -> Result<()> {
        self.model.load(from, prefix, path, &self.device)
    }

    /// Nothing beyond the lifecycle's own: batches come from its random generator.
    fn save_state(&self, _ck: &mut SafeTensors) {}

    fn load_state(&mut self, _ck: &SafeTensors, _step: u64, _path: &Path) -> Result<()> {
        Ok(())
    }

    fn weights_metadata(&self) -> Vec<(&'static str, String)> {
        vec![("max_chars", self.recipe.data.max_chars.to_string())]
    }

    /// Scores the test windows, greedy and with the recipe's beam, and
    /// writes them with the run's report to `test.json`.
    fn finish(
        &mut self,
        run: &RunDir,
        report: &FinalReport<MirrorSummary>,
        stop: &dyn Fn() -> bool,
    ) -> Result<bool> {
        let eval_model = self.model.get().valid();
        let (test, device) = (&self.data.test, &self.eval_device);
        let beam = self.recipe.train.beam;
        let Some(greedy) = decoded_scores(&eval_model, test, 1, device, stop)? else {
            return Ok(false);
        };
        let beamed = if beam > 1 {
            decoded_scores(&eval_model, test, beam, device, stop)?
        } else {
            Some(greedy)
        };
        let Some(beamed) = beamed else {
            return Ok(false);
        };
        let mut run_report = report.clone();
        if let Some(last) = &mut run_report.last {
            // every summary scores all of them; metrics.csv, which a run
            // that only finishes read its last row from, has no column of it
            last.valid.sentences = self.data.valid.len();
        }
        let full = MirrorReport {
            run: run_report,
            test_greedy: Some(greedy),
            test_beam: Some(beamed),
            beam,
        };
        atomic_write_str(
            &test_path(run),
            &(serde_json::to_string_pretty(&full).expect("json") + "\n"),
        )?;
        self.test = Some((greedy, beamed));
        Ok(true)
    }

    /// `test.json` of this very step: one left by a shorter session before
    /// the run was extended is not this run's test.
    fn finished(&self, run: &RunDir, step: u64) -> bool {
        crate::fsutil::read_text(&test_path(run), 1 << 20)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|json| json.get("steps")?.as_u64())
            == Some(step)
    }
}

/// Where a finished mirror run keeps its test scores.
fn test_path(run: &RunDir) -> PathBuf {
    run.path().join("test.json")
}

/// Trains (or resumes) a mirror run, then scores the test windows.
pub fn train_mirror(
    loaded: &LoadedRecipe,
    corpus: &text8::Corpus,
    target: &RunTarget,
    opts: TrainOptions<'_>,
    observer: &mut dyn FnMut(&Event<'_>),
) -> Result<MirrorReport> {
    let Recipe::Mirror(recipe) = &loaded.recipe else {
        return Err(TrainError::Recipe(format!(
            "recipe {} trains a language model: use `charlstm train --recipe {0}`",
            loaded.name
        )));
    };
    let cfg = model_config(recipe);
    cfg.validate().map_err(TrainError::Recipe)?;
    crate::memory::check_mirror(recipe, &cfg)?;
    let data = MirrorData::new(corpus, recipe)?;
    let device = opts.device.clone().autodiff();
    let task = MirrorTask {
        recipe: recipe.clone(),
        config: serde_json::to_value(&cfg).expect("config json"),
        model: ModelSlot::new(cfg.init(Rng::derive(recipe.train.seed, 0).next_u64(), &device)),
        device,
        eval_device: opts.device.clone(),
        data,
        next: None,
        test: None,
    };
    let (run, task) = session::train(loaded, corpus, target, &opts, task, observer)?;
    let (test_greedy, test_beam) = task.test.unzip();
    Ok(MirrorReport {
        run,
        test_greedy,
        test_beam,
        beam: recipe.train.beam,
    })
}

/// Longest input a model with word-window attention is given whole: 400
/// words of English text in text8 form have about 2,300 to 2,700
/// characters, and 400 words is the longest the model was measured on
/// (docs/RESULTS.md). Longer lines go in pieces of whole words.
pub const MEASURED_CHARS: usize = 3000;

/// A trained mirror model rebuilt from its run directory, and the longest
/// input it takes whole: [`MEASURED_CHARS`] with word-window attention, else
/// the longest window it was trained on. Everything read is checked against
/// the weights before use (the vocabulary and its start and end ids).
pub fn load_mirror(run_dir: &Path, device: &Device) -> Result<(Mirror, usize)> {
    let run = RunDir::open(run_dir)?;
    let config = run.read_config()?;
    if config.tokenizer != Tokenizer::Mirror {
        return Err(TrainError::Run(format!(
            "{} is a language-model run: use `charlstm sample --run {0}`",
            run_dir.display()
        )));
    }
    let weights = session::load_weights_file(&run, &config, "charlstm-mirror")?;
    let bad_config = |e: String| {
        TrainError::Run(format!(
            "{}: bad model config: {e}",
            run.config_path().display()
        ))
    };
    let cfg: MirrorConfig =
        serde_json::from_value(config.model.clone()).map_err(|e| bad_config(e.to_string()))?;
    cfg.validate().map_err(bad_config)?;
    let vocab = MirrorVocab;
    if (cfg.vocab_size, cfg.start_id, cfg.end_id)
        != (
            vocab.size(),
            MirrorVocab::START as usize,
            MirrorVocab::END as usize,
        )
    {
        return Err(bad_config(format!(
            "vocab_size {}, start_id {}, end_id {}: the mirror vocabulary has {}, {}, {}",
            cfg.vocab_size,
            cfg.start_id,
            cfg.end_id,
            vocab.size(),
            MirrorVocab::START,
            MirrorVocab::END
        )));
    }
    let path = run.model_path();
    let max_chars = weights
        .metadata
        .get("max_chars")
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .ok_or_else(|| TrainError::checkpoint(&path, "missing or bad max_chars"))?;
    crate::memory::check_config_fits_weights(
        crate::memory::mirror_params(&cfg),
        weights.scalars(),
        &run.config_path().display().to_string(),
    )?;
    let model = load_weights(cfg.init(0, device), "", &weights, &path, device)?;
    let whole = if cfg.word_window {
        MEASURED_CHARS.max(max_chars)
    } else {
        max_chars
    };
    Ok((model, whole))
}

/// Longest word given to the model whole: a longer one is mirrored in
/// parts of this many letters. The recipe's made-up words have up to 30;
/// beyond its training a model drifts on long words, and first on those of
/// few distinct letters (the `mirror` recipe's model, 60 words of each
/// length: every one exact up to 40 letters, 59 of 60 binary numbers at
/// 64 digits, 0 at 128).
pub const WORD_PART_CHARS: usize = 32;

/// A piece of a sentence given to the model on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Whole words, or one part of a word longer than the model takes whole.
    pub text: String,
    /// Whether it continues the previous piece's word (no space between them).
    pub joins_previous: bool,
}

/// Splits text8-form `text` into pieces of at most `max` characters: whole
/// words where they fit, and a word longer than `word_max` (or `max`) cut
/// into parts of that many letters that each stand alone, marked as
/// continuing the same word.
pub fn pieces(text: &str, max: usize, word_max: usize) -> Vec<Piece> {
    let max = max.max(1);
    let word_max = word_max.clamp(1, max);
    let mut out = vec![];
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<Piece>| {
        if !cur.is_empty() {
            out.push(Piece {
                text: std::mem::take(cur),
                joins_previous: false,
            });
        }
    };
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if word.len() > word_max {
            flush(&mut cur, &mut out);
            for (k, part) in word.as_bytes().chunks(word_max).enumerate() {
                out.push(Piece {
                    text: String::from_utf8_lossy(part).into_owned(),
                    joins_previous: k > 0,
                });
            }
            continue;
        }
        if !cur.is_empty() && cur.len() + 1 + word.len() > max {
            flush(&mut cur, &mut out);
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    flush(&mut cur, &mut out);
    out
}

/// A text's mirror, from [`mirror_texts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrored {
    /// The mirror, text8 form.
    pub text: String,
    /// Whether the text was longer than the model takes whole, and went to
    /// it in pieces of whole words.
    pub cut: bool,
}

/// Mirrors text8-form `texts` with `model`, decoded together: each whole
/// when it has at most `max_chars` characters and no word longer than
/// [`WORD_PART_CHARS`], else in [`pieces`], put back together so that a
/// perfect model gives the exact mirror (the parts of a cut word are
/// mirrored and joined in reverse order). `decoded` is told the progress,
/// as [`decode_all`] tells it.
pub fn mirror_texts(
    model: &Mirror,
    texts: &[&str],
    max_chars: usize,
    beam: usize,
    device: &Device,
    decoded: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Mirrored>> {
    let parts: Vec<Vec<Piece>> = texts
        .iter()
        .map(|t| pieces(t, max_chars, WORD_PART_CHARS))
        .collect();
    let sources: Vec<Vec<u8>> = parts
        .iter()
        .flatten()
        .map(|p| MirrorVocab.encode(&p.text))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| TrainError::Input(e.to_string()))?;
    let mut outputs = decode_all(model, &sources, beam, device, decoded)?.into_iter();
    let mut out = Vec::with_capacity(texts.len());
    for (text, parts) in texts.iter().zip(&parts) {
        let mirrors = outputs
            .by_ref()
            .take(parts.len())
            .map(|o| MirrorVocab.decode(&o))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| TrainError::Input(e.to_string()))?;
        out.push(Mirrored {
            text: put_back(parts, mirrors),
            cut: text.len() > max_chars,
        });
    }
    Ok(out)
}

/// [`mirror_texts`], and where the texts fail together, again one at a
/// time, so that those before the one at fault are mirrored: their
/// mirrors, and the index of the one at fault with its error. `decoded`
/// is told each decoding's progress (one at a time: each text's).
pub fn mirror_texts_up_to_error(
    model: &Mirror,
    texts: &[&str],
    max_chars: usize,
    beam: usize,
    device: &Device,
    decoded: &mut dyn FnMut(usize, usize),
) -> (Vec<Mirrored>, Option<(usize, TrainError)>) {
    if let Ok(m) = mirror_texts(model, texts, max_chars, beam, device, decoded) {
        return (m, None);
    }
    let mut done = vec![];
    for (k, text) in texts.iter().enumerate() {
        match mirror_texts(model, &[text], max_chars, beam, device, decoded) {
            Ok(m) => done.extend(m),
            Err(e) => return (done, Some((k, e))),
        }
    }
    (done, None)
}

/// The mirror of a text from the `mirrors` of its [`pieces`], one each:
/// the pieces' words between single spaces, a cut word's parts joined in
/// reverse order.
fn put_back(parts: &[Piece], mirrors: Vec<String>) -> String {
    let mut words: Vec<String> = vec![];
    for (part, mirrored) in parts.iter().zip(mirrors) {
        match words.pop() {
            Some(last) if part.joins_previous => words.push(mirrored + &last),
            Some(last) => {
                words.push(last);
                words.push(mirrored);
            }
            None => words.push(mirrored),
        }
    }
    words.join(" ")
}

/// A source word whose mirror came out wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WordError {
    /// Index of the word in its sentence (0 = first).
    pub position: usize,
    /// Words in the sentence.
    pub sentence_words: usize,
    /// The source word.
    pub word: String,
    /// What the model wrote in its place (empty: nothing).
    pub got: String,
}

/// Every target word of `targets` that the output at the same word index
/// does not equal, with its source word.
pub fn word_errors(sources: &[Vec<u8>], outputs: &[Vec<u8>]) -> Vec<WordError> {
    let text = |w: &[u8]| MirrorVocab.decode(w).unwrap_or_else(|_| format!("{w:?}"));
    let mut out = vec![];
    for (src, o) in sources.iter().zip(outputs) {
        let sw: Vec<&[u8]> = src.split(|&c| c == 0).collect();
        let ow: Vec<&[u8]> = o.split(|&c| c == 0).collect();
        for (position, w) in sw.iter().enumerate() {
            let got = ow.get(position).copied().unwrap_or(&[]);
            if !got.iter().eq(w.iter().rev()) {
                out.push(WordError {
                    position,
                    sentence_words: sw.len(),
                    word: text(w),
                    got: text(got),
                });
            }
        }
    }
    out
}

/// What [`evaluate_words`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Accuracy.
    pub scores: Scores,
    /// Every wrong word.
    pub errors: Vec<WordError>,
    /// Source characters decoded.
    pub chars: usize,
    /// Wall time of the decoding, seconds.
    pub seconds: f64,
}

/// Accuracy on `count` fixed windows of exactly `words` consecutive words of
/// `ids`, with their natural lengths (no character cap); with `made_up`, its
/// words replaced by made-up ones (sentences no corpus has). `decoded` is
/// told the progress, as [`decode_all`] tells it.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_words(
    model: &Mirror,
    ids: Arc<[u8]>,
    words: usize,
    count: usize,
    beam: usize,
    seed: u64,
    made_up: Option<MadeUpWords>,
    device: &Device,
    decoded: &mut dyn FnMut(usize, usize),
) -> Result<Evaluation> {
    let sampler = MirrorSampler::new(ids, words, words, usize::MAX)?;
    let mut pairs = sampler.fixed_set(count, seed);
    if let Some(made_up) = made_up {
        let mut rng = Rng::new(seed ^ 0x3ADE);
        for p in &mut pairs {
            *p = MirrorPair::new(made_up.apply(&p.source, &mut rng));
        }
    }
    let sources: Vec<Vec<u8>> = pairs.iter().map(|p| p.source.clone()).collect();
    let targets: Vec<Vec<u8>> = pairs.iter().map(|p| p.target.clone()).collect();
    let start = std::time::Instant::now();
    let outputs = decode_all(model, &sources, beam, device, decoded)?;
    let seconds = start.elapsed().as_secs_f64();
    Ok(Evaluation {
        scores: score(&outputs, &targets),
        errors: word_errors(&sources, &outputs),
        chars: sources.iter().map(|s| s.len()).sum(),
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            // PROPTEST_CASES runs longer fuzzing (docs/RELIABILITY.md)
            std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(128),
        ))]

        /// Any line a person types, in text8 form, is mirrored whole or in
        /// pieces (never a panic, never an error), and a perfect mirror of
        /// each piece, put back, is the perfect mirror of the text.
        #[test]
        fn any_input_line_is_mirrored(
            line in "(\\PC|[a-z]{20,90}){0,40}",
            max in 1usize..40,
            word_max in 1usize..40,
            located in proptest::prelude::any::<bool>(),
        ) {
            let text = text8::Surface::parse(&line).text8();
            let parts = pieces(&text, max, word_max);
            let most = word_max.min(max);
            let fits = |p: &Piece| !p.text.is_empty() && p.text.len() <= max && p.text.split(' ').all(|w| w.len() <= most);
            proptest::prop_assert!(parts.iter().all(fits));
            let perfect = |t: &str| t.split(' ').map(|w| w.chars().rev().collect::<String>()).collect::<Vec<_>>().join(" ");
            let mirrors = parts.iter().map(|p| perfect(&p.text)).collect();
            proptest::prop_assert_eq!(put_back(&parts, mirrors), perfect(&text));
            let device = Device::flex();
            let model = MirrorConfig::new(MirrorVocab.size(), MirrorVocab::START as usize, MirrorVocab::END as usize)
                .with_d_embedding(4)
                .with_d_hidden(8)
                .with_word_window(located)
                .with_relative_span(if located { 2 } else { 0 })
                .init(1, &device);
            // each text's mirror in its own place (texts of no word between
            // others: batches of the same make-up, so the same bits)
            let together = mirror_texts(&model, &["", &text, " "], max, 1, &device, &mut |_, _| {}).unwrap();
            let alone = mirror_texts(&model, &[&text], max, 1, &device, &mut |_, _| {}).unwrap();
            proptest::prop_assert_eq!(together.len(), 3);
            proptest::prop_assert_eq!(&together[1], &alone[0]);
            proptest::prop_assert!(together[0].text.is_empty() && together[2].text.is_empty());
            proptest::prop_assert_eq!(alone[0].cut, text.len() > max);
        }
    }

    /// An untrained mirror model small enough to decode in a blink.
    fn tiny_model(device: &Device) -> Mirror {
        MirrorConfig::new(
            MirrorVocab.size(),
            MirrorVocab::START as usize,
            MirrorVocab::END as usize,
        )
        .with_d_embedding(4)
        .with_d_hidden(8)
        .init(1, device)
    }

    /// Texts that fail together go again one at a time: those before the one
    /// at fault are mirrored, as they are alone, and it is named.
    #[test]
    fn texts_before_one_at_fault_are_mirrored() {
        let device = Device::flex();
        let model = tiny_model(&device);
        let alone = mirror_texts(&model, &["ab cd"], 100, 1, &device, &mut |_, _| {}).unwrap();
        // `!` is no letter of text8 form: the second text cannot be read
        let (done, failed) = mirror_texts_up_to_error(
            &model,
            &["ab cd", "a!", "ef"],
            100,
            1,
            &device,
            &mut |_, _| {},
        );
        assert_eq!(done, alone);
        let (k, e) = failed.expect("the second text fails");
        assert_eq!(k, 1);
        assert!(e.to_string().contains("unknown character '!'"), "{e}");
        let (done, failed) =
            mirror_texts_up_to_error(&model, &["ab cd", "ef"], 100, 1, &device, &mut |_, _| {});
        assert!(done.len() == 2 && failed.is_none());
    }

    /// A text whose words are all too long for the recipe's windows is an
    /// error naming the text, its part and the recipe's keys to change.
    #[test]
    fn words_too_long_for_the_recipe_name_the_text_and_keys() {
        let loaded = crate::recipe::load_recipe("mirror", &[]).unwrap();
        let Recipe::Mirror(r) = &loaded.recipe else {
            panic!("the mirror recipe")
        };
        let word = "a".repeat(r.data.max_chars + 1);
        let corpus = text8::Corpus::from_text(&format!("{word} ").repeat(4000)).unwrap();
        let e = MirrorData::new(&corpus, r)
            .err()
            .expect("no window fits")
            .to_string();
        assert!(
            e.contains("<memory>, its training part")
                && e.contains("data.min_words")
                && e.contains("data.max_chars"),
            "{e}"
        );
    }

    /// A decoding tells its progress after each batch, in source
    /// characters, rising to all of them (a bar's length and position).
    #[test]
    fn decoding_tells_its_progress_per_batch() {
        let device = Device::flex();
        let model = tiny_model(&device);
        // lengths 3, 5 and 3: two batches (one a length), 11 characters
        let sources = [vec![1, 2, 3], vec![4, 0, 5, 6, 7], vec![8, 9, 10]];
        let mut told = vec![];
        decode_all(&model, &sources, 2, &device, &mut |done, total| {
            told.push((done, total))
        })
        .unwrap();
        assert_eq!(told, [(6, 11), (11, 11)]);
    }

    #[test]
    fn pieces_keep_whole_words_and_mark_cut_ones() {
        let texts = |p: Vec<Piece>| -> Vec<(String, bool)> {
            p.into_iter().map(|p| (p.text, p.joins_previous)).collect()
        };
        let t = |s: &str, j: bool| (s.to_string(), j);
        assert_eq!(
            texts(pieces("the quick brown fox", 10, 10)),
            vec![t("the quick", false), t("brown fox", false)]
        );
        let cut = vec![
            t("abcde", false),
            t("fghij", true),
            t("kl", true),
            t("xy", false),
        ];
        assert_eq!(texts(pieces("abcdefghijkl xy", 5, 40)), cut);
        // a long word is cut into parts of `word_max` however long the line may be
        assert_eq!(texts(pieces("abcdefghijkl xy", 100, 5)), cut);
        // joined back in reverse order, the mirrors of the parts are the mirror of the word
        let parts = pieces("abcdefghijkl xy", 5, 40);
        let mirrors = ["edcba", "jihgf", "lk", "yx"].map(String::from).to_vec();
        assert_eq!(put_back(&parts, mirrors), "lkjihgfedcba yx");
    }

    #[test]
    fn scores_count_characters_words_and_sentences() {
        let t = |s: &str| tokenizer::CharVocab.encode(s).unwrap();
        let s = score(&[t("eht kciuq"), t("xof")], &[t("eht kciuq"), t("xob")]);
        assert_eq!(s.sentence_acc, 0.5);
        assert_eq!(s.word_acc, 2.0 / 3.0);
        assert!((s.char_acc - 11.0 / 12.0).abs() < 1e-12);
        // a short output loses the missing characters
        let s = score(&[t("ab")], &[t("abcd")]);
        assert_eq!(s.char_acc, 0.5);
    }

    #[test]
    fn a_batch_the_text_cannot_fill_is_an_error_not_a_hang() {
        // four word lengths, equally frequent: a quarter of the draws has any one
        let text = tokenizer::CharVocab
            .encode(&" a bb ccc dddd".repeat(50))
            .unwrap();
        let sampler = MirrorSampler::new(text.into(), 1, 1, 4).unwrap();
        let none = MadeUpWords {
            prob: 0.0,
            max_len: 0,
            run_prob: 0.0,
        };
        let b = LengthBatcher::new(sampler, 100_000, none, 4);
        match b.next_batch(&mut Rng::new(1)) {
            Ok(batch) => panic!("a batch of {} windows", batch.len()),
            Err(e) => assert!(e.to_string().contains("lower data.batch_size"), "{e}"),
        }
    }

    /// Windows of 2 to 4 words (at most 40 characters) of a short repeated
    /// text, half of their words made up: the batchers' tests draw from it.
    fn small_text_draws() -> (MirrorSampler, MadeUpWords) {
        let text = tokenizer::CharVocab
            .encode(&" the cat sat on a mat and a dog ran to it in the sun".repeat(20))
            .unwrap();
        let made_up = MadeUpWords {
            prob: 0.5,
            max_len: 12,
            run_prob: 0.5,
        };
        (MirrorSampler::new(text.into(), 2, 4, 40).unwrap(), made_up)
    }

    #[test]
    fn batches_have_one_length_and_mirrored_targets() {
        let (sampler, made_up) = small_text_draws();
        let b = LengthBatcher::new(sampler, 8, made_up, 40);
        let mut rng = Rng::new(1);
        let mut lengths = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let batch = b.next_batch(&mut rng).unwrap();
            assert_eq!(batch.len(), 8);
            assert!(
                batch
                    .iter()
                    .all(|p| p.source.len() == batch[0].source.len())
            );
            assert!(
                batch
                    .iter()
                    .all(|p| p.target == text8::mirror_words(&p.source))
            );
            assert!(batch.iter().all(|p| p.source.len() <= 40));
            for p in &batch {
                lengths.extend(p.source.split(|&c| c == 0).map(|w| w.len()));
            }
        }
        // made-up words of lengths the text does not have ("the cat" has 1 to 3 letters)
        assert!(lengths.iter().any(|&l| l > 3), "{lengths:?}");
    }

    #[test]
    fn made_up_words_include_runs_of_one_letter() {
        let made_up = MadeUpWords {
            prob: 1.0,
            max_len: 25,
            run_prob: 1.0,
        };
        let mut rng = Rng::new(3);
        let mut longest = 0;
        for _ in 0..200 {
            let out = made_up.apply(&[1, 2, 0, 3], &mut rng);
            for w in out.split(|&c| c == 0) {
                assert!((1..=25).contains(&w.len()));
                let most = (1..=26u8)
                    .map(|c| w.iter().filter(|&&x| x == c).count())
                    .max()
                    .unwrap();
                assert!(most + 1 >= w.len(), "{w:?} is not a run");
                longest = longest.max(w.len());
            }
        }
        assert_eq!(longest, 25);
    }

    /// Made-up words are those this generator gave before the length-first
    /// batcher (the literal output of commit `4f3d000`): runs with and
    /// without another letter, random letters, kept words, and the
    /// generator's state after them.
    #[test]
    fn made_up_words_are_those_of_earlier_runs() {
        let made_up = MadeUpWords {
            prob: 0.6,
            max_len: 7,
            run_prob: 0.5,
        };
        let mut rng = Rng::new(9);
        let out: Vec<Vec<u8>> = (0..4)
            .map(|_| made_up.apply(&[1, 2, 3, 0, 4, 5, 0, 6, 7, 8, 9], &mut rng))
            .collect();
        let want: [&[u8]; 4] = [
            &[
                23, 4, 23, 23, 0, 25, 18, 10, 8, 12, 24, 0, 5, 5, 5, 5, 5, 5, 5,
            ],
            &[7, 7, 7, 12, 0, 3, 3, 3, 3, 3, 3, 0, 6, 7, 8, 9],
            &[1, 2, 3, 0, 4, 5, 0, 6, 7, 8, 9],
            &[1, 2, 3, 0, 14, 0, 6, 7, 8, 9],
        ];
        assert_eq!(out, want);
        assert_eq!(rng.next_u64(), 6659105758299237607);
    }

    /// The length alone ([`MadeUpWords::len_after`]) is that of the written
    /// words and leaves the generator where writing them does, for every
    /// kind of replacement (kept, same length, any length, runs with and
    /// without another letter) and for empty words (double spaces); and the
    /// batches made by lengths first are those of writing every draw.
    #[test]
    fn the_length_alone_draws_as_writing_does() {
        let ids = [1u8, 2, 3, 0, 4, 0, 0, 5, 6, 7, 8, 0, 9];
        for (prob, max_len, run_prob) in
            [(0.0, 0, 0.0), (0.5, 0, 0.5), (0.7, 12, 0.4), (1.0, 30, 1.0)]
        {
            let made_up = MadeUpWords {
                prob,
                max_len,
                run_prob,
            };
            let mut rng = Rng::new(5);
            for k in 0..300 {
                let mut alone = rng.clone();
                let len = made_up.len_after(ids.split(|&c| c == 0), &mut alone);
                let written = made_up.apply(&ids, &mut rng);
                assert_eq!(
                    (len, &alone),
                    (written.len(), &rng),
                    "draw {k}, prob {prob}"
                );
            }
        }
        let (sampler, made_up) = small_text_draws();
        let batcher = LengthBatcher::new(sampler.clone(), 8, made_up, 40);
        // every draw written, then kept or not by its length
        let write = |rng: &mut Rng| {
            let source = made_up.apply(&sampler.sample(rng).source, rng);
            (source.len() <= 40).then_some(source)
        };
        let (mut rng, mut rng_written) = (Rng::new(2), Rng::new(2));
        for _ in 0..10 {
            let batch: Vec<Vec<u8>> = batcher
                .next_batch(&mut rng)
                .unwrap()
                .into_iter()
                .map(|p| p.source)
                .collect();
            let first = std::iter::from_fn(|| Some(write(&mut rng_written)))
                .flatten()
                .next()
                .unwrap();
            let mut want = vec![first];
            while want.len() < 8 {
                want.extend(write(&mut rng_written).filter(|s| s.len() == want[0].len()));
            }
            assert_eq!(batch, want);
        }
        assert_eq!(rng, rng_written);
    }
}
