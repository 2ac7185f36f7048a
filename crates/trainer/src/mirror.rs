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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use model::mirror::{Mirror, MirrorConfig};
use serde::{Deserialize, Serialize};
use text8::{MirrorPair, MirrorSampler, Split, SplitKind, mirror_words};
use tokenizer::rng::Rng;
use tokenizer::{MirrorVocab, Tokenizer};

use crate::checkpoint::{load_weights, save_weights};
use crate::error::{Result, TrainError};
use crate::fsutil::atomic_write_str;
use crate::lm::{Event, FinalReport, RunTarget, cross_entropy};
use crate::optim::Optimizer;
use crate::plot::{Plot, Series};
use crate::recipe::{LoadedRecipe, MirrorRecipe, OptimizerKind, Recipe};
use crate::run::{RunConfig, RunDir};
use crate::safetensors::SafeTensors;

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
}

/// Draws training batches whose windows all have one character length.
#[derive(Debug, Clone)]
pub struct LengthBatcher {
    sampler: MirrorSampler,
    batch_size: usize,
    random_word_prob: f64,
}

impl LengthBatcher {
    /// A batcher over one part of the corpus.
    pub fn new(sampler: MirrorSampler, batch_size: usize, random_word_prob: f64) -> Self {
        LengthBatcher {
            sampler,
            batch_size,
            random_word_prob,
        }
    }

    /// The next batch: `batch_size` windows of the length of a first random window.
    pub fn next_batch(&self, rng: &mut Rng) -> Vec<MirrorPair> {
        loop {
            let first = self.sampler.sample(rng);
            let len = first.source.len();
            let mut out = vec![first];
            let mut tries = 0;
            while out.len() < self.batch_size && tries < 200_000 {
                let p = self.sampler.sample(rng);
                if p.source.len() == len {
                    out.push(p);
                }
                tries += 1;
            }
            if out.len() == self.batch_size {
                if self.random_word_prob > 0.0 {
                    for p in &mut out {
                        randomise_words(&mut p.source, self.random_word_prob, rng);
                        p.target = mirror_words(&p.source);
                    }
                }
                return out;
            }
            // a rare length: start again from another first window
        }
    }
}

/// Replaces each word, with probability `prob`, by random letters of the same length.
pub fn randomise_words(ids: &mut [u8], prob: f64, rng: &mut Rng) {
    for word in ids.split_mut(|&c| c == 0) {
        if !word.is_empty() && rng.next_f64() < prob {
            for c in word.iter_mut() {
                *c = 1 + rng.below(26) as u8;
            }
        }
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

/// Decodes every source (greedy for `beam` 1), batching sources of equal length.
pub fn decode_all(
    model: &Mirror,
    sources: &[Vec<u8>],
    beam: usize,
    device: &Device,
) -> Vec<Vec<u8>> {
    let mut by_len: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, s) in sources.iter().enumerate() {
        by_len.entry(s.len()).or_default().push(i);
    }
    let mut out = vec![vec![]; sources.len()];
    let chunk = if beam > 1 { 64 } else { 256 };
    for (len, idx) in by_len {
        for part in idx.chunks(chunk) {
            let batch: Vec<Vec<u8>> = part.iter().map(|&i| sources[i].clone()).collect();
            let decoded = model.beam_search(&batch, beam, max_output_len(len), device);
            for (&i, d) in part.iter().zip(decoded) {
                out[i] = d;
            }
        }
    }
    out
}

fn ids_tensor(ids: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let n = ids.len();
    Tensor::from_data(TensorData::new(ids, [n]), device)
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
            let labels = model.labels(&tgt);
            let count = labels.len();
            let logits = model.forward(&src, &tgt, false, device);
            let loss = cross_entropy(logits, ids_tensor(labels, device));
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

impl MirrorSummary {
    /// One log line.
    pub fn line(&self) -> String {
        format!(
            "step {}: loss {:.4}, lr {:.2e}, validation loss {:.4}, accuracy: characters {:.2}%, words {:.2}%, sentences {:.2}%",
            self.step,
            self.loss,
            self.lr,
            self.valid_loss,
            100.0 * self.valid.char_acc,
            100.0 * self.valid.word_acc,
            100.0 * self.valid.sentence_acc
        )
    }
}

const CSV_HEADER: &str =
    "step,loss,lr,valid_loss,char_acc,word_acc,sentence_acc,chars_per_sec,wall_seconds";

fn write_csv(path: &Path, rows: &[MirrorSummary]) -> Result<()> {
    let mut s = String::from(CSV_HEADER);
    s.push('\n');
    for r in rows {
        s.push_str(&format!(
            "{},{:.6},{:e},{:.6},{:.6},{:.6},{:.6},{:.0},{:.2}\n",
            r.step,
            r.loss,
            r.lr,
            r.valid_loss,
            r.valid.char_acc,
            r.valid.word_acc,
            r.valid.sentence_acc,
            r.chars_per_sec,
            r.wall_seconds
        ));
    }
    atomic_write_str(path, &s)
}

fn read_csv(path: &Path) -> Result<Vec<MirrorSummary>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    text.lines()
        .enumerate()
        .skip(1)
        .map(|(i, line)| {
            let f: Vec<&str> = line.split(',').collect();
            let bad =
                || TrainError::Run(format!("{}: line {}: malformed row", path.display(), i + 1));
            let num = |k: usize| f.get(k).and_then(|v| v.parse::<f64>().ok()).ok_or_else(bad);
            Ok(MirrorSummary {
                step: f[0].parse().map_err(|_| bad())?,
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
        })
        .collect()
}

fn write_plots(dir: &Path, title: &str, rows: &[MirrorSummary]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let steps: Vec<f64> = rows.iter().map(|r| r.step as f64).collect();
    let mut loss = Plot::new(
        &format!("{title}: loss per target symbol"),
        "step",
        "cross-entropy (nats)",
    );
    loss.add(Series::new(
        "training",
        &steps,
        rows.iter().map(|r| r.loss).collect(),
    ));
    loss.add(Series::new(
        "validation",
        &steps,
        rows.iter().map(|r| r.valid_loss).collect(),
    ));
    loss.write_png(&dir.join("loss.png"))?;
    let mut acc = Plot::new(
        &format!("{title}: validation accuracy (greedy)"),
        "step",
        "accuracy (%)",
    );
    acc.add(Series::new(
        "characters",
        &steps,
        rows.iter().map(|r| 100.0 * r.valid.char_acc).collect(),
    ));
    acc.add(Series::new(
        "words",
        &steps,
        rows.iter().map(|r| 100.0 * r.valid.word_acc).collect(),
    ));
    acc.add(Series::new(
        "sentences",
        &steps,
        rows.iter().map(|r| 100.0 * r.valid.sentence_acc).collect(),
    ));
    acc.write_png(&dir.join("accuracy.png"))
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
    /// Characters in the corpus.
    pub chars: usize,
}

impl MirrorData {
    /// Splits a corpus (standard 90/5/5) and draws the fixed evaluation sets.
    pub fn new(corpus: &text8::Corpus, r: &MirrorRecipe) -> Result<Self> {
        let split = Split::new(&corpus.ids, SplitKind::Standard)?;
        let d = &r.data;
        let sampler =
            |ids: &[u8]| MirrorSampler::new(ids.into(), d.min_words, d.max_words, d.max_chars);
        let train = sampler(split.train)?;
        let valid = sampler(split.valid)?.fixed_set(d.valid_windows, r.train.seed ^ 0x7A11D);
        let test_ids: Arc<[u8]> = split.test.into();
        let test = MirrorSampler::new(test_ids.clone(), d.min_words, d.max_words, d.max_chars)?
            .fixed_set(d.test_windows, r.train.seed ^ 0x7E57);
        Ok(MirrorData {
            batcher: LengthBatcher::new(train, d.batch_size, d.random_word_prob),
            valid,
            test,
            test_ids,
            source: corpus.source.display().to_string(),
            chars: corpus.len(),
        })
    }
}

/// What a mirror run reports at the end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MirrorReport {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Steps done.
    pub steps: u64,
    /// Stopped early on request.
    pub interrupted: bool,
    /// Training seconds (all sessions).
    pub train_seconds: f64,
    /// Test accuracy with greedy decoding.
    pub test_greedy: Scores,
    /// Test accuracy with the recipe's beam (equal to greedy for beam 1).
    pub test_beam: Scores,
    /// The beam width.
    pub beam: usize,
}

impl From<&MirrorReport> for FinalReport {
    fn from(r: &MirrorReport) -> Self {
        FinalReport {
            run_dir: r.run_dir.clone(),
            steps: r.steps,
            interrupted: r.interrupted,
            final_valid_ppl: f64::NAN,
            train_seconds: r.train_seconds,
            chars_per_sec: f64::NAN,
            valid_seconds: 0.0,
            sample_seconds: 0.0,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn save(
    run: &RunDir,
    config: &RunConfig,
    model: &Mirror,
    optim: &Optimizer,
    step: u64,
    rng: &Rng,
    wall: f64,
    max_chars: usize,
) -> Result<()> {
    let mut weights = SafeTensors::default();
    save_weights(model, "", &mut weights);
    let mut ck = SafeTensors::default();
    save_weights(model, "model.", &mut ck);
    optim.save(&mut ck);
    for st in [&mut weights, &mut ck] {
        st.metadata
            .insert("model_config".into(), config.model.to_string());
        st.metadata.insert(
            "tokenizer".into(),
            serde_json::to_string(&config.tokenizer).expect("json"),
        );
        st.metadata.insert("step".into(), step.to_string());
        st.metadata
            .insert("max_chars".into(), max_chars.to_string());
    }
    weights
        .metadata
        .insert("format".into(), "charlstm-mirror".into());
    ck.metadata
        .insert("format".into(), "charlstm-mirror-checkpoint".into());
    ck.metadata
        .insert("rng".into(), serde_json::to_string(rng).expect("json"));
    ck.metadata
        .insert("wall_seconds".into(), format!("{wall:e}"));
    ck.write(&run.checkpoint_path())?;
    weights.write(&run.model_path())
}

/// Trains (or resumes) a mirror run, then scores the test windows.
pub fn train_mirror(
    loaded: &LoadedRecipe,
    corpus: &text8::Corpus,
    target: &RunTarget,
    device_name: &str,
    device: &Device,
    stop: Option<&AtomicBool>,
    observer: &mut dyn FnMut(&Event<'_>),
) -> Result<MirrorReport> {
    let Recipe::Mirror(recipe) = &loaded.recipe else {
        return Err(TrainError::Recipe(format!(
            "recipe {} trains a language model: use `charlstm train --recipe {0}`",
            loaded.name
        )));
    };
    let data = MirrorData::new(corpus, recipe)?;
    let cfg = model_config(recipe);
    cfg.validate().map_err(TrainError::Recipe)?;
    let ad = device.clone().autodiff();
    let t = &recipe.train;
    let (run, config, mut model, mut optim, mut step, mut rng, mut wall, mut rows, resumed) =
        match target {
            RunTarget::New { path, runs_root } => {
                let run = RunDir::create(path.as_deref(), runs_root, &loaded.name)?;
                let config = RunConfig {
                    charlstm_version: env!("CARGO_PKG_VERSION").into(),
                    recipe_name: loaded.name.clone(),
                    recipe: serde_json::to_value(&loaded.tree).expect("json"),
                    tokenizer: Tokenizer::Mirror,
                    model: serde_json::to_value(&cfg).expect("json"),
                    data_source: data.source.clone(),
                    data_chars: data.chars,
                    device: device_name.to_string(),
                };
                run.write_config(&config)?;
                let model = cfg.init(Rng::derive(t.seed, 0).next_u64(), &ad);
                (
                    run,
                    config,
                    model,
                    Optimizer::new(OptimizerKind::Adam, t.clip_norm, &ad),
                    0,
                    Rng::derive(t.seed, 1),
                    0.0,
                    vec![],
                    false,
                )
            }
            RunTarget::Resume(dir) => {
                let run = RunDir::open(dir)?;
                let config = run.read_config()?;
                let saved: MirrorConfig =
                    serde_json::from_value(config.model.clone()).map_err(|e| {
                        TrainError::Run(format!(
                            "{}: bad model config: {e}",
                            run.config_path().display()
                        ))
                    })?;
                if serde_json::to_value(&saved).ok() != serde_json::to_value(&cfg).ok() {
                    return Err(TrainError::Run(format!(
                        "cannot resume {}: the model differs from the run's",
                        dir.display()
                    )));
                }
                let path = run.checkpoint_path();
                let ck = SafeTensors::read(&path)?;
                let model = load_weights(cfg.init(0, &ad), "model.", &ck, &path, &ad)?;
                let mut optim = Optimizer::new(OptimizerKind::Adam, t.clip_norm, &ad);
                optim
                    .load(&ck, &ad)
                    .map_err(|e| TrainError::checkpoint(&path, e))?;
                let meta = |k: &str| {
                    ck.metadata.get(k).cloned().ok_or_else(|| {
                        TrainError::checkpoint(&path, format!("missing metadata {k}"))
                    })
                };
                let step: u64 = meta("step")?
                    .parse()
                    .map_err(|_| TrainError::checkpoint(&path, "bad step"))?;
                let rng: Rng = serde_json::from_str(&meta("rng")?)
                    .map_err(|e| TrainError::checkpoint(&path, e.to_string()))?;
                let wall: f64 = meta("wall_seconds")?
                    .parse()
                    .map_err(|_| TrainError::checkpoint(&path, "bad wall_seconds"))?;
                let mut rows = if run.metrics_path().exists() {
                    read_csv(&run.metrics_path())?
                } else {
                    vec![]
                };
                rows.retain(|r| r.step < step && r.step % t.summary == 0);
                (run, config, model, optim, step, rng, wall, rows, true)
            }
        };
    observer(&Event::Started {
        run_dir: run.path(),
        start_step: step,
        total_steps: t.steps,
        params: model::params::num_scalars(&model),
        train_chars: data.chars,
        resumed,
    });
    let eval_device = device.clone();
    let (mut loss_sum, mut loss_n) = (0.0f64, 0u64);
    let (mut window_secs, mut window_chars) = (0.0f64, 0usize);
    let mut interrupted = false;
    while step < t.steps {
        if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            interrupted = true;
            break;
        }
        let t0 = Instant::now();
        let lr = match step.checked_div(t.decay_every) {
            Some(k) => t.learning_rate * t.decay_factor.powi(k as i32),
            None => t.learning_rate,
        };
        let batch = data.batcher.next_batch(&mut rng);
        if recipe.model.keep_prob < 1.0 {
            ad.seed(Rng::derive(t.seed ^ 0xD809, step).next_u64());
        }
        let src: Vec<Vec<u8>> = batch.iter().map(|p| p.source.clone()).collect();
        let tgt: Vec<Vec<u8>> = batch.iter().map(|p| p.target.clone()).collect();
        let labels = model.labels(&tgt);
        let n_labels = labels.len();
        let logits = model.forward(&src, &tgt, true, &ad);
        let loss = cross_entropy(logits, ids_tensor(labels, &ad));
        let grads = loss.backward();
        let (m, _) = optim.step(model, &grads, lr);
        model = m;
        let l = loss
            .inner()
            .into_data()
            .try_into_vec_as::<f64>()
            .expect("f64")[0];
        step += 1;
        let dt = t0.elapsed().as_secs_f64();
        wall += dt;
        window_secs += dt;
        window_chars += n_labels;
        loss_sum += l;
        loss_n += 1;
        observer(&Event::Step {
            step: step - 1,
            total_steps: t.steps,
            loss: Some(l),
            chars_per_sec: window_chars as f64 / window_secs.max(1e-9),
        });
        if !l.is_finite() {
            return Err(TrainError::Diverged {
                step: step - 1,
                value: l,
                last_good: rows.last().map(|r| r.step + 1).unwrap_or(0),
            });
        }
        if (step - 1) % t.summary == 0 || step == t.steps {
            let eval_model = model.valid();
            let valid_loss = teacher_forced_loss(&eval_model, &data.valid, &eval_device);
            let sources: Vec<Vec<u8>> = data.valid.iter().map(|p| p.source.clone()).collect();
            let targets: Vec<Vec<u8>> = data.valid.iter().map(|p| p.target.clone()).collect();
            let outputs = decode_all(&eval_model, &sources, 1, &eval_device);
            let summary = MirrorSummary {
                step: step - 1,
                loss: loss_sum / loss_n.max(1) as f64,
                lr,
                valid_loss,
                valid: score(&outputs, &targets),
                chars_per_sec: window_chars as f64 / window_secs.max(1e-9),
                wall_seconds: wall,
            };
            (loss_sum, loss_n, window_secs, window_chars) = (0.0, 0, 0.0, 0);
            run.append(&run.log_path(), &(summary.line() + "\n"))?;
            observer(&Event::MirrorSummary(&summary));
            rows.push(summary);
            save(
                &run,
                &config,
                &model,
                &optim,
                step,
                &rng,
                wall,
                recipe.data.max_chars,
            )?;
            write_csv(&run.metrics_path(), &rows)?;
            write_plots(run.path(), &loaded.name, &rows)?;
            observer(&Event::Checkpoint {
                step,
                path: &run.checkpoint_path(),
            });
        }
    }
    if interrupted {
        save(
            &run,
            &config,
            &model,
            &optim,
            step,
            &rng,
            wall,
            recipe.data.max_chars,
        )?;
        observer(&Event::Checkpoint {
            step,
            path: &run.checkpoint_path(),
        });
        return Ok(MirrorReport {
            run_dir: run.path().to_path_buf(),
            steps: step,
            interrupted,
            train_seconds: wall,
            test_greedy: Scores::default(),
            test_beam: Scores::default(),
            beam: t.beam,
        });
    }
    let eval_model = model.valid();
    let sources: Vec<Vec<u8>> = data.test.iter().map(|p| p.source.clone()).collect();
    let targets: Vec<Vec<u8>> = data.test.iter().map(|p| p.target.clone()).collect();
    let greedy = score(
        &decode_all(&eval_model, &sources, 1, &eval_device),
        &targets,
    );
    let beam = if t.beam > 1 {
        score(
            &decode_all(&eval_model, &sources, t.beam, &eval_device),
            &targets,
        )
    } else {
        greedy
    };
    let report = MirrorReport {
        run_dir: run.path().to_path_buf(),
        steps: step,
        interrupted,
        train_seconds: wall,
        test_greedy: greedy,
        test_beam: beam,
        beam: t.beam,
    };
    atomic_write_str(
        &run.path().join("test.json"),
        &(serde_json::to_string_pretty(&report).expect("json") + "\n"),
    )?;
    Ok(report)
}

/// A trained mirror model rebuilt from its run directory, and the longest input it accepts.
pub fn load_mirror(run_dir: &Path, device: &Device) -> Result<(Mirror, usize)> {
    let run = RunDir::open(run_dir)?;
    let config = run.read_config()?;
    if config.tokenizer != Tokenizer::Mirror {
        return Err(TrainError::Run(format!(
            "{} is a language-model run: use `charlstm sample --run {0}`",
            run_dir.display()
        )));
    }
    let cfg: MirrorConfig = serde_json::from_value(config.model.clone()).map_err(|e| {
        TrainError::Run(format!(
            "{}: bad model config: {e}",
            run.config_path().display()
        ))
    })?;
    let path = run.model_path();
    if !path.exists() {
        return Err(TrainError::Run(format!(
            "{}: no model.safetensors yet (the run stopped before its first summary)",
            run_dir.display()
        )));
    }
    let weights = SafeTensors::read(&path)?;
    if weights.metadata.get("format").map(String::as_str) != Some("charlstm-mirror") {
        return Err(TrainError::checkpoint(
            &path,
            "not a charlstm mirror weights file",
        ));
    }
    let max_chars = weights
        .metadata
        .get("max_chars")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| TrainError::checkpoint(&path, "missing max_chars"))?;
    let model = load_weights(cfg.init(0, device), "", &weights, &path, device)?;
    Ok((model, max_chars))
}

/// Accuracy on `count` fixed windows of exactly `words` words from `ids`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_words(
    model: &Mirror,
    ids: Arc<[u8]>,
    words: usize,
    count: usize,
    beam: usize,
    seed: u64,
    max_chars: usize,
    device: &Device,
) -> Result<Scores> {
    let sampler = MirrorSampler::new(ids, words, words, max_chars)?;
    let pairs = sampler.fixed_set(count, seed);
    let sources: Vec<Vec<u8>> = pairs.iter().map(|p| p.source.clone()).collect();
    let targets: Vec<Vec<u8>> = pairs.iter().map(|p| p.target.clone()).collect();
    Ok(score(&decode_all(model, &sources, beam, device), &targets))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn batches_have_one_length_and_mirrored_targets() {
        let text = tokenizer::CharVocab
            .encode(&" the cat sat on a mat and a dog ran to it in the sun".repeat(20))
            .unwrap();
        let b = LengthBatcher::new(MirrorSampler::new(text.into(), 2, 4, 40).unwrap(), 8, 0.5);
        let mut rng = Rng::new(1);
        for _ in 0..20 {
            let batch = b.next_batch(&mut rng);
            assert_eq!(batch.len(), 8);
            assert!(
                batch
                    .iter()
                    .all(|p| p.source.len() == batch[0].source.len())
            );
            assert!(batch.iter().all(|p| p.target == mirror_words(&p.source)));
        }
    }
}
