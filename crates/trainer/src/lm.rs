//! Training a character language model: the notebook's loop, done properly.
//!
//! Each step takes the next batch of the notebook's generator, runs the
//! model over `num_unrollings` columns from the state the previous step left
//! (detached: truncated backpropagation), takes the mean softmax
//! cross-entropy, clips all gradients together to a global norm and updates.
//! Every `summary` steps: the mean loss since the previous summary, the
//! learning rate, the minibatch perplexity and the validation perplexity
//! (batch 1, character by character, state carried), a checkpoint, the
//! metrics file and the plots. Every `samples_every` steps: five samples.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use model::{CellLayout, CharLm, CharLmConfig, InitScheme, InputKind, LstmState};
use text8::{BatchGenerator, Corpus, Split, SplitKind};
use tokenizer::rng::Rng;
use tokenizer::{Tokenizer, bigram_id};

use crate::checkpoint::{load_weights, save_weights};
use crate::error::{Result, TrainError};
use crate::metrics::{self, Summary};
use crate::optim::{Optimizer, from_host, to_host};
use crate::recipe::{
    InitSpec, InputSpec, LayoutSpec, LmRecipe, LoadedRecipe, Recipe, SplitSpec, TokenizerKind,
};
use crate::run::{RunConfig, RunDir};
use crate::safetensors::{HostTensor, SafeTensors};
use crate::sample::{self, SampleOptions};

/// Where a training run writes.
#[derive(Debug, Clone)]
pub enum RunTarget {
    /// A new run directory: `path`, or the next free `<runs_root>/<recipe>-<n>`.
    New {
        /// Explicit directory.
        path: Option<PathBuf>,
        /// Parent of automatically named runs.
        runs_root: PathBuf,
    },
    /// Continue the run in this directory from its checkpoint.
    Resume(PathBuf),
}

/// Options of a training run that are not part of the recipe.
pub struct TrainOptions<'a> {
    /// Device to train on (autodiff is added by the trainer).
    pub device: Device,
    /// Its name, recorded in the run.
    pub device_name: String,
    /// Set from another thread (Ctrl-C) to stop after the current step with a checkpoint.
    pub stop: Option<&'a AtomicBool>,
    /// Start from these weights (named as in `model.safetensors`) instead of the recipe's init.
    pub init: Option<SafeTensors>,
    /// Read every step's loss back (one device-to-host read per step) and report it.
    pub loss_trace: bool,
    /// Generate the periodic samples.
    pub samples: bool,
}

/// Something the trainer reports while it runs.
#[derive(Debug)]
pub enum Event<'a> {
    /// Training starts (or resumes).
    Started {
        /// The run directory.
        run_dir: &'a Path,
        /// First step to run.
        start_step: u64,
        /// Total steps of the run.
        total_steps: u64,
        /// Number of scalar parameters.
        params: usize,
        /// Training characters.
        train_chars: usize,
        /// Whether this continues an earlier session.
        resumed: bool,
    },
    /// A step finished.
    Step {
        /// The step.
        step: u64,
        /// Total steps.
        total_steps: u64,
        /// Its loss, when `loss_trace` is on.
        loss: Option<f64>,
        /// Training characters per second since the last summary.
        chars_per_sec: f64,
    },
    /// A summary (log lines, validation), with the samples when some were generated.
    Summary {
        /// The metrics.
        summary: &'a Summary,
        /// Samples generated at this step.
        samples: Option<&'a [String]>,
    },
    /// A summary of a mirror run.
    MirrorSummary(&'a crate::mirror::MirrorSummary),
    /// A checkpoint was written.
    Checkpoint {
        /// Next step to run from it.
        step: u64,
        /// The file.
        path: &'a Path,
    },
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FinalReport {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Steps done (all sessions).
    pub steps: u64,
    /// Whether it stopped early on request.
    pub interrupted: bool,
    /// Last validation perplexity.
    pub final_valid_ppl: f64,
    /// Training-loop seconds of this session (validation, samples and checkpoints excluded).
    pub train_seconds: f64,
    /// Training characters per second of this session.
    pub chars_per_sec: f64,
    /// Seconds spent validating in this session.
    pub valid_seconds: f64,
    /// Seconds spent sampling in this session.
    pub sample_seconds: f64,
}

/// The model configuration of a recipe.
pub fn model_config(r: &LmRecipe) -> CharLmConfig {
    let m = &r.model;
    let tok = tokenizer_of(m.tokenizer);
    CharLmConfig::new(tok.vocab_size(), tok.output_size())
        .with_input(match m.input {
            InputSpec::OneHot => InputKind::OneHot,
            InputSpec::Embedding => InputKind::Embedding,
        })
        .with_d_embedding(m.d_embedding)
        .with_d_hidden(m.d_hidden)
        .with_n_layers(m.n_layers)
        .with_layout(match m.layout {
            LayoutSpec::Gates => CellLayout::Gates,
            LayoutSpec::Fused => CellLayout::Fused,
        })
        .with_init(match m.init {
            InitSpec::Notebook => InitScheme::Notebook,
            InitSpec::Default => InitScheme::Default,
        })
        .with_keep_prob(m.keep_prob)
}

/// The tokenizer of a recipe's input kind.
pub fn tokenizer_of(kind: TokenizerKind) -> Tokenizer {
    match kind {
        TokenizerKind::Char => Tokenizer::Char,
        TokenizerKind::Bigram => Tokenizer::Bigram,
    }
}

/// Training and validation ids of a corpus, split as the recipe says.
pub struct LmData {
    /// Training ids.
    pub train: Arc<[u8]>,
    /// Validation ids evaluated at each summary.
    pub valid: Vec<u8>,
    /// Where the corpus came from.
    pub source: String,
    /// Characters in the corpus.
    pub chars: usize,
}

impl LmData {
    /// Splits a corpus for a recipe, checking it is long enough.
    pub fn new(corpus: &Corpus, r: &LmRecipe) -> Result<Self> {
        let kind = match r.data.split {
            SplitSpec::Notebook => SplitKind::Notebook {
                valid_size: r.data.valid_size,
            },
            SplitSpec::Standard => SplitKind::Standard,
        };
        let split = Split::new(&corpus.ids, kind)?;
        let mut valid = split.valid.to_vec();
        valid.truncate(r.data.valid_size);
        let min_valid = if r.model.tokenizer == TokenizerKind::Bigram {
            3
        } else {
            2
        };
        if valid.len() < min_valid {
            return Err(TrainError::Data(text8::Text8Error::TooShort {
                what: format!("validation part of {}", corpus.source.display()),
                needed: min_valid,
                found: valid.len(),
            }));
        }
        Ok(LmData {
            train: split.train.into(),
            valid,
            source: corpus.source.display().to_string(),
            chars: corpus.len(),
        })
    }
}

fn ids_tensor(ids: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let n = ids.len();
    Tensor::from_data(TensorData::new(ids, [n]), device)
}

/// Inputs (`[steps * batch]`), labels and the number of steps of one
/// generator batch (`[num_unrollings + 1, batch]` ids, time-major).
pub fn step_inputs(
    kind: TokenizerKind,
    batch: &[u8],
    batch_size: usize,
) -> (Vec<i64>, Vec<i64>, usize) {
    let cols = batch.len() / batch_size;
    let col = |t: usize| &batch[t * batch_size..(t + 1) * batch_size];
    match kind {
        TokenizerKind::Char => {
            let steps = cols - 1;
            let inputs = (0..steps)
                .flat_map(|t| col(t).iter().map(|&c| c as i64))
                .collect();
            let labels = (1..=steps)
                .flat_map(|t| col(t).iter().map(|&c| c as i64))
                .collect();
            (inputs, labels, steps)
        }
        TokenizerKind::Bigram => {
            // inputs are the first num_unrollings columns, as pairs: 9 bigrams of 10 columns
            let steps = cols - 2;
            let inputs = (0..steps)
                .flat_map(|t| {
                    col(t)
                        .iter()
                        .zip(col(t + 1))
                        .map(|(&a, &b)| bigram_id(a, b) as i64)
                })
                .collect();
            let labels = (2..cols)
                .flat_map(|t| col(t).iter().map(|&c| c as i64))
                .collect();
            (inputs, labels, steps)
        }
    }
}

pub use model::cross_entropy;

/// Dropout seed of a step: the same for a step whatever session runs it.
fn step_seed(seed: u64, step: u64) -> u64 {
    Rng::derive(seed ^ 0x5EED_D809, step).next_u64()
}

/// Everything that changes while training; saved whole in the checkpoint.
struct Session {
    recipe: LmRecipe,
    device: Device,
    model: CharLm,
    optim: Optimizer,
    generator: BatchGenerator,
    state: Vec<LstmState>,
    /// Next step to run.
    step: u64,
    /// Sampling random generator.
    rng: Rng,
    /// Loss summed since the last summary, on the host (finished windows) and
    /// on the device (this window).
    loss_host: f64,
    loss_dev: Option<Tensor<1>>,
    loss_count: u64,
    rows: Vec<Summary>,
    /// Training seconds so far, all sessions.
    wall: f64,
}

impl Session {
    fn save(&self, run: &RunDir, config: &RunConfig) -> Result<()> {
        // weights alone, for sampling, evaluation and sharing
        let mut weights = SafeTensors::default();
        save_weights(&self.model, "", &mut weights);
        weights
            .metadata
            .insert("format".into(), "charlstm-lm".into());
        weights
            .metadata
            .insert("model_config".into(), config.model.to_string());
        weights.metadata.insert(
            "tokenizer".into(),
            serde_json::to_string(&config.tokenizer).expect("json"),
        );
        weights
            .metadata
            .insert("step".into(), self.step.to_string());
        // everything else for resuming
        let mut ck = SafeTensors::default();
        save_weights(&self.model, "model.", &mut ck);
        self.optim.save(&mut ck);
        for (k, s) in self.state.iter().enumerate() {
            ck.push(format!("state.{k}.h"), to_host(&s.h));
            ck.push(format!("state.{k}.c"), to_host(&s.c));
        }
        let loss_window = self.loss_host
            + self
                .loss_dev
                .as_ref()
                .map(|t| t.clone().into_scalar_f64())
                .unwrap_or(0.0);
        let meta = [
            ("format", "charlstm-lm-checkpoint".to_string()),
            ("step", self.step.to_string()),
            ("generator_calls", self.generator.calls().to_string()),
            ("rng", serde_json::to_string(&self.rng).expect("json")),
            ("loss_sum", format!("{loss_window:e}")),
            ("loss_count", self.loss_count.to_string()),
            ("wall_seconds", format!("{:e}", self.wall)),
            ("model_config", config.model.to_string()),
            (
                "tokenizer",
                serde_json::to_string(&config.tokenizer).expect("json"),
            ),
        ];
        for (k, v) in meta {
            ck.metadata.insert(k.into(), v);
        }
        // checkpoint first: it is the source of truth for --resume
        ck.write(&run.checkpoint_path())?;
        weights.write(&run.model_path())?;
        metrics::write_csv(&run.metrics_path(), &self.rows)
    }
}

trait IntoF64 {
    fn into_scalar_f64(self) -> f64;
}

impl IntoF64 for Tensor<1> {
    fn into_scalar_f64(self) -> f64 {
        self.into_data().try_into_vec_as::<f64>().expect("f64")[0]
    }
}

/// Trains (or resumes) a language-model run.
pub fn train_lm(
    loaded: &LoadedRecipe,
    corpus: &Corpus,
    target: &RunTarget,
    opts: TrainOptions<'_>,
    observer: &mut dyn FnMut(&Event<'_>),
) -> Result<FinalReport> {
    let Recipe::Lm(recipe) = &loaded.recipe else {
        return Err(TrainError::Recipe(format!(
            "recipe {} is a mirror recipe: use `charlstm mirror train`",
            loaded.name
        )));
    };
    let data = LmData::new(corpus, recipe)?;
    let kind = recipe.model.tokenizer;
    let device = opts.device.clone().autodiff();
    let cfg = model_config(recipe);
    cfg.validate().map_err(TrainError::Recipe)?;
    let (run, config, mut session, resumed) = match target {
        RunTarget::New { path, runs_root } => {
            let run = RunDir::create(path.as_deref(), runs_root, &loaded.name)?;
            let config = RunConfig {
                charlstm_version: env!("CARGO_PKG_VERSION").into(),
                recipe_name: loaded.name.clone(),
                recipe: serde_json::to_value(&loaded.tree).expect("toml as json"),
                tokenizer: tokenizer_of(kind),
                model: serde_json::to_value(&cfg).expect("config json"),
                data_source: data.source.clone(),
                data_chars: data.chars,
                device: opts.device_name.clone(),
            };
            let mut model = cfg.init(Rng::derive(recipe.train.seed, 0).next_u64(), &device);
            if let Some(init) = &opts.init {
                model = load_weights(model, "", init, Path::new("<initial weights>"), &device)?;
            }
            let generator = BatchGenerator::new(
                data.train.clone(),
                recipe.data.batch_size,
                recipe.data.num_unrollings,
            )?;
            let state = model.zero_state(recipe.data.batch_size, &device);
            run.write_config(&config)?;
            let session = Session {
                recipe: recipe.clone(),
                device: device.clone(),
                optim: Optimizer::new(recipe.train.optimizer, recipe.train.clip_norm, &device),
                model,
                generator,
                state,
                step: 0,
                rng: Rng::derive(recipe.train.seed, 1),
                loss_host: 0.0,
                loss_dev: None,
                loss_count: 0,
                rows: vec![],
                wall: 0.0,
            };
            (run, config, session, false)
        }
        RunTarget::Resume(path) => {
            let run = RunDir::open(path)?;
            let config = run.read_config()?;
            let (session, config) = resume_session(&run, config, recipe, &cfg, &data, &device)?;
            (run, config, session, true)
        }
    };
    let total = session.recipe.train.steps;
    observer(&Event::Started {
        run_dir: run.path(),
        start_step: session.step,
        total_steps: total,
        params: model::params::num_scalars(&session.model),
        train_chars: data.train.len(),
        resumed,
    });
    if !resumed {
        run.append(
            &run.log_path(),
            &format!(
                "charlstm {} recipe {} on {} ({} characters), device {}\n",
                env!("CARGO_PKG_VERSION"),
                loaded.name,
                data.source,
                data.chars,
                opts.device_name
            ),
        )?;
    } else {
        run.append(
            &run.log_path(),
            &format!("resumed at step {}\n", session.step),
        )?;
    }

    let eval_device = opts.device.clone();
    let batch_size = session.recipe.data.batch_size;
    let summary_every = session.recipe.train.summary;
    let samples_every = session.recipe.train.samples_every();
    let mut batch = Vec::new();
    let mut train_seconds = 0.0;
    let mut valid_seconds = 0.0;
    let mut sample_seconds = 0.0;
    let mut window_seconds = 0.0;
    let mut window_chars = 0usize;
    let mut session_chars = 0usize;
    let mut last_valid = session.rows.last().map(|r| r.valid_ppl).unwrap_or(f64::NAN);
    let mut interrupted = false;
    let mut last_good = session.step;
    while session.step < total {
        if opts.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            interrupted = true;
            break;
        }
        let step = session.step;
        let t0 = Instant::now();
        let lr = session.recipe.train.learning_rate_at(step);
        session.generator.next_into(&mut batch);
        let (inputs, labels, steps) = step_inputs(kind, &batch, batch_size);
        if session.recipe.model.keep_prob < 1.0 {
            session
                .device
                .seed(step_seed(session.recipe.train.seed, step));
        }
        let inputs = ids_tensor(inputs, &session.device);
        let labels_t = ids_tensor(labels, &session.device);
        let state = std::mem::take(&mut session.state);
        let (hidden, state) = session
            .model
            .forward_hidden(inputs, batch_size, state, true);
        debug_assert_eq!(hidden.dims()[0], steps * batch_size);
        let loss = session.model.loss(hidden, labels_t, true);
        let grads = loss.backward();
        let (model, stats) = session.optim.step(session.model, &grads, lr);
        session.model = model;
        session.state = state.into_iter().map(LstmState::detach).collect();
        let loss = loss.inner();
        let step_loss = opts.loss_trace.then(|| loss.clone().into_scalar_f64());
        session.loss_dev = Some(match session.loss_dev.take() {
            Some(acc) => acc + loss.clone(),
            None => loss.clone(),
        });
        session.loss_count += 1;
        session.step += 1;
        let dt = t0.elapsed().as_secs_f64();
        train_seconds += dt;
        window_seconds += dt;
        session.wall += dt;
        let chars = steps * batch_size;
        window_chars += chars;
        session_chars += chars;
        observer(&Event::Step {
            step,
            total_steps: total,
            loss: step_loss,
            chars_per_sec: window_chars as f64 / window_seconds.max(1e-9),
        });

        // a summary every `summary` steps, and one at the last step of the session
        let periodic = step % summary_every == 0;
        if periodic || session.step == total {
            let window = session.loss_host
                + session
                    .loss_dev
                    .take()
                    .map(|t| t.into_scalar_f64())
                    .unwrap_or(0.0);
            let mean_loss = window / session.loss_count.max(1) as f64;
            let this_loss = loss.into_scalar_f64();
            if !mean_loss.is_finite() || !this_loss.is_finite() {
                return Err(TrainError::Diverged {
                    step,
                    value: if this_loss.is_finite() {
                        mean_loss
                    } else {
                        this_loss
                    },
                    last_good,
                });
            }
            if periodic {
                session.loss_host = 0.0;
                session.loss_count = 0;
            } else {
                // an end-of-session summary leaves the window running, so that
                // a resumed run averages exactly as one that never stopped
                session.loss_host = window;
            }
            let mut lines = vec![];
            let mut samples = None;
            if step % samples_every == 0 && opts.samples {
                let t = Instant::now();
                let eval_model = session.model.valid();
                let texts = sample::generate(
                    &eval_model,
                    kind,
                    &SampleOptions {
                        length: 80 - kind_context(kind),
                        temperature: 1.0,
                        prime: None,
                        count: 5,
                    },
                    &mut session.rng,
                    &eval_device,
                )?;
                sample_seconds += t.elapsed().as_secs_f64();
                lines.push("=".repeat(80));
                lines.extend(texts.iter().cloned());
                lines.push("=".repeat(80));
                run.append(
                    &run.samples_path(),
                    &format!("step {step}\n{}\n\n", texts.join("\n")),
                )?;
                samples = Some(texts);
            }
            let t = Instant::now();
            let (valid_ppl, valid_nb) =
                validate(&session.model.valid(), kind, &data.valid, &eval_device);
            valid_seconds += t.elapsed().as_secs_f64();
            last_valid = valid_ppl;
            let summary = Summary {
                step,
                loss: mean_loss,
                lr,
                minibatch_ppl: this_loss.exp(),
                valid_ppl,
                valid_bpc: valid_ppl.log2(),
                valid_ppl_notebook: valid_nb,
                grad_norm: stats.grad_norm.value(),
                chars_per_sec: window_chars as f64 / window_seconds.max(1e-9),
                wall_seconds: session.wall,
            };
            window_chars = 0;
            window_seconds = 0.0;
            session.rows.push(summary.clone());
            observer(&Event::Summary {
                summary: &summary,
                samples: samples.as_deref(),
            });
            let mut log = summary.notebook_lines();
            log.splice(2..2, lines);
            run.append(&run.log_path(), &(log.join("\n") + "\n"))?;
            session.save(&run, &config)?;
            last_good = session.step;
            metrics::write_plots(run.path(), &loaded.name, &session.rows)?;
            observer(&Event::Checkpoint {
                step: session.step,
                path: &run.checkpoint_path(),
            });
        }
    }
    if interrupted {
        // the partial window's loss is saved with the rest
        session.save(&run, &config)?;
        run.append(
            &run.log_path(),
            &format!("stopped at step {}\n", session.step),
        )?;
        observer(&Event::Checkpoint {
            step: session.step,
            path: &run.checkpoint_path(),
        });
    }
    Ok(FinalReport {
        run_dir: run.path().to_path_buf(),
        steps: session.step,
        interrupted,
        final_valid_ppl: last_valid,
        train_seconds,
        chars_per_sec: session_chars as f64 / train_seconds.max(1e-9),
        valid_seconds,
        sample_seconds,
    })
}

fn kind_context(kind: TokenizerKind) -> usize {
    match kind {
        TokenizerKind::Char => 1,
        TokenizerKind::Bigram => 2,
    }
}

/// Validation perplexity as the notebook computes it (the text read as a
/// circle, batch 1, state carried from zero), and for bigram models also the
/// notebook's own every-other-character variant.
pub fn validate(
    model: &CharLm,
    kind: TokenizerKind,
    valid: &[u8],
    device: &Device,
) -> (f64, Option<f64>) {
    let (inputs, labels) = sample::sequence_inputs(kind, valid, true);
    let (sum, n) =
        sample::evaluate_sequence(model, &inputs, &labels, device, usize::MAX, &mut |_| {});
    let ppl = sample::perplexity(sum, n);
    let notebook = (kind == TokenizerKind::Bigram).then(|| {
        let (inputs, labels) = sample::notebook_bigram_inputs(valid);
        let (sum, n) =
            sample::evaluate_sequence(model, &inputs, &labels, device, usize::MAX, &mut |_| {});
        sample::perplexity(sum, n)
    });
    (ppl, notebook)
}

fn resume_session(
    run: &RunDir,
    mut config: RunConfig,
    asked: &LmRecipe,
    cfg: &CharLmConfig,
    data: &LmData,
    device: &Device,
) -> Result<(Session, RunConfig)> {
    // the run's own recipe, with the schedule the caller asked for (steps may grow)
    let saved_tree: toml::Table = serde_json::from_value(config.recipe.clone()).map_err(|e| {
        TrainError::Run(format!("{}: bad recipe: {e}", run.config_path().display()))
    })?;
    let Recipe::Lm(saved) = crate::recipe::parse_tree(&config.recipe_name, &saved_tree)? else {
        return Err(TrainError::Run(format!(
            "{}: not a language-model run",
            run.path().display()
        )));
    };
    if saved.model != asked.model {
        return Err(TrainError::Run(format!(
            "cannot resume {}: the model differs from the run's (run: {:?}; asked: {:?})",
            run.path().display(),
            saved.model,
            asked.model
        )));
    }
    if saved.data != asked.data {
        return Err(TrainError::Run(format!(
            "cannot resume {}: the data layout differs from the run's (run: {:?}; asked: {:?})",
            run.path().display(),
            saved.data,
            asked.data
        )));
    }
    let saved_cfg = model_config(&saved);
    debug_assert_eq!(
        serde_json::to_value(&saved_cfg).ok(),
        serde_json::to_value(cfg).ok()
    );
    if config.data_chars != data.chars {
        return Err(TrainError::Run(format!(
            "cannot resume {}: it was trained on {} ({} characters), this corpus has {} characters",
            run.path().display(),
            config.data_source,
            config.data_chars,
            data.chars
        )));
    }
    let path = run.checkpoint_path();
    if !path.exists() {
        return Err(TrainError::Run(format!(
            "cannot resume {}: no checkpoint.safetensors yet (the run stopped before its first summary); \
             start it again",
            run.path().display()
        )));
    }
    let ck = SafeTensors::read(&path)?;
    let tok = ck.metadata.get("tokenizer").cloned().unwrap_or_default();
    let want_tok = serde_json::to_string(&config.tokenizer).expect("json");
    if tok != want_tok {
        return Err(TrainError::checkpoint(
            &path,
            format!("vocabulary {tok} does not match the run's {want_tok}"),
        ));
    }
    let meta = |k: &str| -> Result<String> {
        ck.metadata
            .get(k)
            .cloned()
            .ok_or_else(|| TrainError::checkpoint(&path, format!("missing metadata {k}")))
    };
    let parse_u64 = |k: &str| -> Result<u64> {
        meta(k)?
            .parse()
            .map_err(|_| TrainError::checkpoint(&path, format!("bad metadata {k}")))
    };
    let parse_f64 = |k: &str| -> Result<f64> {
        meta(k)?
            .parse()
            .map_err(|_| TrainError::checkpoint(&path, format!("bad metadata {k}")))
    };
    let model = cfg.init(0, device);
    let model = load_weights(model, "model.", &ck, &path, device)?;
    let mut optim = Optimizer::new(asked.train.optimizer, asked.train.clip_norm, device);
    optim
        .load(&ck, device)
        .map_err(|e| TrainError::checkpoint(&path, e))?;
    let mut state = vec![];
    for (k, layer) in model.layers.iter().enumerate() {
        let get = |n: &str| -> Result<Tensor<2>> {
            let t: &HostTensor = ck
                .get(&format!("state.{k}.{n}"))
                .ok_or_else(|| TrainError::checkpoint(&path, format!("missing state.{k}.{n}")))?;
            if t.shape != [asked.data.batch_size, layer.d_hidden] {
                return Err(TrainError::checkpoint(
                    &path,
                    format!("state.{k}.{n} has shape {:?}", t.shape),
                ));
            }
            Ok(from_host(t, device))
        };
        state.push(LstmState {
            h: get("h")?,
            c: get("c")?,
        });
    }
    let step = parse_u64("step")?;
    let mut generator = BatchGenerator::new(
        data.train.clone(),
        asked.data.batch_size,
        asked.data.num_unrollings,
    )?;
    generator.seek(parse_u64("generator_calls")?);
    let rng: Rng = serde_json::from_str(&meta("rng")?)
        .map_err(|e| TrainError::checkpoint(&path, format!("bad rng state: {e}")))?;
    let mut rows = if run.metrics_path().exists() {
        metrics::read_csv(&run.metrics_path())?
    } else {
        vec![]
    };
    // end-of-session rows (off the summary grid) are not part of the continued run
    let every = asked.train.summary;
    rows.retain(|r| r.step < step && r.step % every == 0);
    // the schedule may change (more steps); the rest of the recipe is the run's
    let mut tree = saved_tree;
    if let Some(t) = serde_json::to_value(&asked.train)
        .ok()
        .and_then(|v| serde_json::from_value::<toml::Table>(v).ok())
    {
        tree.insert("train".into(), toml::Value::Table(t));
    }
    config.recipe = serde_json::to_value(&tree).expect("json");
    let session = Session {
        recipe: asked.clone(),
        device: device.clone(),
        model,
        optim,
        generator,
        state,
        step,
        rng,
        loss_host: parse_f64("loss_sum")?,
        loss_dev: None,
        loss_count: parse_u64("loss_count")?,
        wall: parse_f64("wall_seconds")?,
        rows,
    };
    Ok((session, config))
}

/// The recipe of an existing run (its `config.json`), with overrides applied
/// (for resuming: more steps, another summary interval).
pub fn run_recipe(run_dir: &Path, overrides: &[String]) -> Result<(LoadedRecipe, RunConfig)> {
    let run = RunDir::open(run_dir)?;
    let config = run.read_config()?;
    let mut tree: toml::Table = serde_json::from_value(config.recipe.clone()).map_err(|e| {
        TrainError::Run(format!("{}: bad recipe: {e}", run.config_path().display()))
    })?;
    for o in overrides {
        crate::recipe::apply_override(&mut tree, o)?;
    }
    let recipe = crate::recipe::parse_tree(&config.recipe_name, &tree)?;
    Ok((
        LoadedRecipe {
            name: config.recipe_name.clone(),
            tree,
            recipe,
        },
        config,
    ))
}

/// A trained language model rebuilt from its run directory alone, on `device`
/// (any compiled-in device, whatever device trained it).
pub fn load_lm(run_dir: &Path, device: &Device) -> Result<(CharLm, TokenizerKind, RunConfig)> {
    let run = RunDir::open(run_dir)?;
    let config = run.read_config()?;
    let kind = match config.tokenizer {
        Tokenizer::Char => TokenizerKind::Char,
        Tokenizer::Bigram => TokenizerKind::Bigram,
        Tokenizer::Mirror => {
            return Err(TrainError::Run(format!(
                "{} is a mirror run: use `charlstm mirror --run {0}`",
                run_dir.display()
            )));
        }
    };
    let cfg: CharLmConfig = serde_json::from_value(config.model.clone()).map_err(|e| {
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
    if weights.metadata.get("format").map(String::as_str) != Some("charlstm-lm") {
        return Err(TrainError::checkpoint(
            &path,
            "not a charlstm language-model weights file",
        ));
    }
    let model = load_weights(cfg.init(0, device), "", &weights, &path, device)?;
    Ok((model, kind, config))
}
