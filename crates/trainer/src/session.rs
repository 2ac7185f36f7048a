//! The run lifecycle every task shares: create or resume a run directory
//! (locked while in use), run the steps, summarise, checkpoint, write the
//! metrics and the plots, stop cleanly on request, and load a trained run
//! back. A task ([`Task`]: the language model, the mirror) supplies only its
//! step, its summary and its extra state; every check, every file of the run
//! directory and the behaviour on Ctrl-C are this module's, the same for all.
//!
//! What a checkpoint holds, besides the task's tensors and the optimiser's
//! state (Adam's moments, the weights' running average): the step, the random
//! generator, the running loss window (so a resumed run averages exactly as
//! one that never stopped), the training seconds, the model config, the
//! tokenizer, the recipe it was trained with and the corpus fingerprint.
//! A checkpoint is written only when every weight is finite: "the last good
//! checkpoint" always loads and means something. With `train.average` the
//! checkpoint keeps the trained weights (training continues from them) and
//! `model.safetensors` the running average, which is also what summaries
//! validate and sample.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::tensor::{Device, Tensor};
use serde::Serialize;
use tokenizer::Tokenizer;
use tokenizer::rng::Rng;

use crate::error::{Result, TrainError};
use crate::metrics::{self, MetricsRow};
use crate::optim::{GradNorm, Optimizer};
use crate::recipe::{LoadedRecipe, Schedule};
use crate::run::{RunConfig, RunDir, RunLock};
use crate::safetensors::SafeTensors;

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
    /// Start from these weights (named as in `model.safetensors`) instead of
    /// the recipe's init (language models only).
    pub init: Option<SafeTensors>,
    /// Read every step's loss back (one device-to-host read per step) and report it.
    pub loss_trace: bool,
    /// Generate the periodic samples (language models only).
    pub samples: bool,
}

impl TrainOptions<'_> {
    /// Options for training on `device` (recorded as `device_name`): no
    /// Ctrl-C flag, the recipe's init, no loss trace, no periodic samples.
    pub fn new(device: Device, device_name: &str) -> Self {
        TrainOptions {
            device,
            device_name: device_name.to_string(),
            stop: None,
            init: None,
            loss_trace: false,
            samples: false,
        }
    }
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
        /// Its loss, when it was read back (`loss_trace`, or a task that always reads it).
        loss: Option<f64>,
        /// Training characters per second since the last summary.
        chars_per_sec: f64,
        /// Training characters of this step (sequence positions predicted).
        chars: usize,
    },
    /// A summary: validation, the log lines, the samples when some were drawn.
    Summary {
        /// The step it was taken at.
        step: u64,
        /// Mean training loss since the previous summary.
        loss: f64,
        /// The log lines (as written to `train.log`, samples included).
        lines: &'a [String],
        /// The summary's row as JSON (as in `metrics.csv`, with every field).
        row: serde_json::Value,
        /// Samples drawn at this step.
        samples: Option<&'a [String]>,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// Next step to run from it.
        step: u64,
        /// The file.
        path: &'a Path,
    },
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, Serialize)]
pub struct FinalReport<R> {
    /// The run directory.
    #[serde(serialize_with = "lossy_path")]
    pub run_dir: PathBuf,
    /// Steps done (all sessions).
    pub steps: u64,
    /// Steps done in this session.
    pub session_steps: u64,
    /// Whether it stopped early on request.
    pub interrupted: bool,
    /// Stopped with every step trained and saved, before the end of the
    /// work after the last ([`Task::finish`], the mirror's test): resuming does it.
    pub finish_left: bool,
    /// The last summary, taken at the last step done (also when stopped early).
    pub last: Option<R>,
    /// Training-loop seconds of this session (validation, samples and checkpoints excluded).
    pub train_seconds: f64,
    /// Training characters per second of this session.
    pub chars_per_sec: f64,
    /// Seconds spent in summaries (validation) in this session.
    pub valid_seconds: f64,
    /// Seconds spent sampling in this session.
    pub sample_seconds: f64,
}

/// A path as a string for JSON, lossily where it is not UTF-8 (serde
/// refuses such a path, and a report must still be written).
pub fn lossy_path<S: serde::Serializer>(path: &Path, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// What one training step gives back.
pub struct StepOutput {
    /// Mean loss of the step, `[1]`, on the device (without autodiff).
    pub loss: Tensor<1>,
    /// Characters (or target symbols) trained on.
    pub chars: usize,
    /// Global gradient norm before clipping.
    pub grad_norm: GradNorm,
}

/// What the lifecycle knows at a summary; the task adds its validation.
#[derive(Debug, Clone)]
pub struct SummaryInput {
    /// The step just done.
    pub step: u64,
    /// Mean training loss since the previous periodic summary.
    pub mean_loss: f64,
    /// Loss of the step just done.
    pub last_loss: f64,
    /// Its learning rate.
    pub lr: f64,
    /// Its gradient norm before clipping.
    pub grad_norm: f64,
    /// Training characters per second since the previous summary.
    pub chars_per_sec: f64,
    /// Training seconds so far, all sessions.
    pub wall_seconds: f64,
    /// Whether to draw samples now.
    pub samples: bool,
}

/// A task's summary.
pub struct SummaryOutput<R> {
    /// The metrics row.
    pub row: R,
    /// Samples drawn, when asked.
    pub samples: Option<Vec<String>>,
    /// Seconds the samples took (the rest of the summary counts as validation).
    pub sample_seconds: f64,
}

/// A trainable task: what differs between the language model and the mirror.
pub trait Task {
    /// Its rows of `metrics.csv`.
    type Row: MetricsRow;
    /// The weights file's `format` metadata; the checkpoint's is `<FORMAT>-checkpoint`.
    const FORMAT: &'static str;
    /// Whether every step's loss is read back to the host (it costs a device
    /// synchronisation per step; the language model reads it only at summaries).
    const LOSS_EVERY_STEP: bool;

    /// The tokenizer, as saved in the run.
    fn tokenizer(&self) -> Tokenizer;
    /// The model configuration, as saved in the run.
    fn model_config(&self) -> serde_json::Value;
    /// A model configuration saved by an earlier version, as this one
    /// writes it (fields added since get the value they implied then).
    fn upgrade_model_config(&self, _saved: &mut serde_json::Value) {}
    /// Scalar parameters of the model.
    fn params(&self) -> usize;
    /// Characters of training text.
    fn train_chars(&self) -> usize;
    /// One training step: forward, backward, `optim` update at `lr`.
    fn step(
        &mut self,
        step: u64,
        lr: f64,
        optim: &mut Optimizer,
        rng: &mut Rng,
    ) -> Result<StepOutput>;
    /// Validation (and samples when asked) at a summary.
    fn summary(&mut self, input: &SummaryInput, rng: &mut Rng) -> Result<SummaryOutput<Self::Row>>;
    /// Adds the model's weights to `out`, named `<prefix><parameter>`.
    fn save_model(&self, prefix: &str, out: &mut SafeTensors);
    /// Replaces the model's weights by those of `from` (read from `path`).
    fn load_model(&mut self, from: &SafeTensors, prefix: &str, path: &Path) -> Result<()>;
    /// Adds the task's own state (carried LSTM state, data position) to a checkpoint.
    fn save_state(&self, ck: &mut SafeTensors);
    /// Restores what [`Task::save_state`] wrote; `step` is the checkpoint's step.
    fn load_state(&mut self, ck: &SafeTensors, step: u64, path: &Path) -> Result<()>;
    /// Metadata written into both weight files (e.g. the longest input).
    fn weights_metadata(&self) -> Vec<(&'static str, String)> {
        vec![]
    }
    /// Work after the last step (the mirror's test), done unless
    /// [`Task::finished`], while the run is still locked and with the
    /// weights it published loaded (the running average when it keeps
    /// one); `report` is the run's. `false` where `stop` (asked between
    /// pieces of the work) said to stop first: nothing of it is written, and
    /// resuming the run does it.
    fn finish(
        &mut self,
        _run: &RunDir,
        _report: &FinalReport<Self::Row>,
        _stop: &dyn Fn() -> bool,
    ) -> Result<bool> {
        Ok(true)
    }
    /// Whether [`Task::finish`]'s work of the run's `step` steps is on disk
    /// (not an earlier, shorter session's). A resumed run that has trained
    /// every step does it when not (a run stopped during its test), instead
    /// of saying there is nothing to do.
    fn finished(&self, _run: &RunDir, _step: u64) -> bool {
        true
    }
}

/// A task's model between steps. A step moves it out, through the
/// optimiser (which updates it in place while it holds the only reference:
/// a clone kept here would make every update a copy), and back in.
pub struct ModelSlot<M>(Option<M>);

impl<M: burn::module::Module> ModelSlot<M> {
    /// A slot holding `model`.
    pub fn new(model: M) -> Self {
        ModelSlot(Some(model))
    }

    /// The model.
    pub fn get(&self) -> &M {
        self.0.as_ref().expect("the model is present between steps")
    }

    /// Moves the model out for a step; [`ModelSlot::put`] puts it back.
    pub fn take(&mut self) -> M {
        self.0.take().expect("the model is present between steps")
    }

    /// Puts the model back after a step.
    pub fn put(&mut self, model: M) {
        self.0 = Some(model);
    }

    /// Adds its weights to `out` as `<prefix><parameter>`.
    pub fn save(&self, prefix: &str, out: &mut SafeTensors) {
        crate::checkpoint::save_weights(self.get(), prefix, out);
    }

    /// Replaces its weights by those of `from` (read from `path`), on `device`.
    pub fn load(
        &mut self,
        from: &SafeTensors,
        prefix: &str,
        path: &Path,
        device: &Device,
    ) -> Result<()> {
        let model = self.take();
        self.put(crate::checkpoint::load_weights(
            model, prefix, from, path, device,
        )?);
        Ok(())
    }
}

/// Set while a run does the work after its last step ([`Task::finish`]).
static FINISHING: AtomicBool = AtomicBool::new(false);

/// Whether a run is doing the work after its last step (the mirror's
/// test): every step is trained and saved, and a stop asked for now ends
/// that work, which resuming does ([`FinalReport::finish_left`]).
pub fn finishing() -> bool {
    FINISHING.load(Ordering::SeqCst)
}

/// Held while a checkpoint's files are being replaced: see [`exit_between_checkpoints`].
static WRITING_CHECKPOINT: Mutex<()> = Mutex::new(());

/// Ends the process with `code`, but not while a checkpoint is being
/// written: it waits (at most `limit`) for the write in progress to finish,
/// then exits holding the lock, so that no write can start either. A second
/// Ctrl-C therefore never leaves `model.safetensors` and
/// `checkpoint.safetensors` of different steps.
pub fn exit_between_checkpoints(code: i32, limit: Duration) -> ! {
    let t = Instant::now();
    loop {
        match WRITING_CHECKPOINT.try_lock() {
            Ok(_held) => std::process::exit(code),
            Err(std::sync::TryLockError::Poisoned(_held)) => std::process::exit(code),
            Err(std::sync::TryLockError::WouldBlock) if t.elapsed() >= limit => {
                std::process::exit(code)
            }
            Err(std::sync::TryLockError::WouldBlock) => {
                std::thread::sleep(Duration::from_millis(5))
            }
        }
    }
}

/// The training loss of the current summary window: finished parts on the
/// host, the rest accumulated on the device (read only at summaries).
///
/// The device part is a sum in `f32`, so its rounding depends on the order
/// of additions: a checkpoint saves it apart from the host part, exactly,
/// and a resumed run goes on adding to it, so that an interrupted run's
/// summaries equal an uninterrupted one's to the last digit.
#[derive(Default)]
struct LossWindow {
    host: f64,
    device: Option<Tensor<1>>,
    /// A device part restored from a checkpoint, not yet on the device.
    restored: Option<f32>,
    count: u64,
}

impl LossWindow {
    fn add(&mut self, loss: &Tensor<1>, host: Option<f64>) {
        match host {
            Some(v) => self.host += v,
            None => {
                let acc = self.device.take().or_else(|| {
                    self.restored
                        .take()
                        .map(|v| Tensor::<1>::from_floats([v], &loss.device()))
                });
                self.device = Some(match acc {
                    Some(acc) => acc + loss.clone(),
                    None => loss.clone(),
                })
            }
        }
        self.count += 1;
    }

    /// The device part's value, left where it is.
    fn device_part(&self) -> f32 {
        match (&self.device, self.restored) {
            (Some(t), _) => scalar(t.clone()) as f32,
            (None, Some(v)) => v,
            (None, None) => 0.0,
        }
    }

    /// The window's sum. The device part stays where it is: an end-of-session
    /// summary followed by a checkpoint must leave the sum a resumed run
    /// goes on adding to as it was.
    fn sum(&self) -> f64 {
        self.host + self.device_part() as f64
    }
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_data().try_into_vec_as::<f64>().expect("f64")[0]
}

/// The part of the lifecycle's state that a checkpoint carries.
struct Progress {
    /// Next step to run.
    step: u64,
    rng: Rng,
    window: LossWindow,
    /// Training seconds so far, all sessions.
    wall: f64,
}

/// A run directory opened for training, locked while this value lives.
struct OpenRun<R> {
    run: RunDir,
    _lock: RunLock,
    config: RunConfig,
    /// The checkpoint to continue from, with the recipe it was trained with
    /// (none for a new run, or a run stopped before its first checkpoint,
    /// which starts again from step 0).
    checkpoint: Option<(SafeTensors, toml::Table)>,
    rows: Vec<R>,
    resumed: bool,
}

/// Trains `task` as `loaded` says, into the run `target`; returns the report
/// and the trained task, which holds the weights the run published unless
/// it was stopped early.
pub fn train<T: Task>(
    loaded: &LoadedRecipe,
    corpus: &text8::Corpus,
    target: &RunTarget,
    opts: &TrainOptions<'_>,
    mut task: T,
    observer: &mut dyn FnMut(&Event<'_>),
) -> Result<(FinalReport<T::Row>, T)> {
    let schedule = loaded.recipe.schedule();
    let fingerprint = corpus.fingerprint();
    let open = match target {
        RunTarget::New { path, runs_root } => {
            let run = RunDir::create(path.as_deref(), runs_root, &loaded.name)?;
            let lock = run.lock_new()?;
            let config = RunConfig {
                charlstm_version: env!("CARGO_PKG_VERSION").into(),
                recipe_name: loaded.name.clone(),
                recipe: serde_json::to_value(&loaded.tree).expect("toml as json"),
                tokenizer: task.tokenizer(),
                model: task.model_config(),
                data_source: source_of(corpus),
                data_chars: corpus.len(),
                data_fingerprint: Some(fingerprint.clone()),
                device: opts.device_name.clone(),
            };
            run.write_config(&config)?;
            OpenRun {
                run,
                _lock: lock,
                config,
                checkpoint: None,
                rows: vec![],
                resumed: false,
            }
        }
        RunTarget::Resume(dir) => open_resume::<T>(dir, loaded, &task, corpus, &fingerprint)?,
    };
    let OpenRun {
        run,
        config,
        checkpoint,
        mut rows,
        resumed,
        ..
    } = open;
    let device = opts.device.clone().autodiff();
    let mut optim = Optimizer::new(schedule.optimizer, schedule.clip_norm, &device)
        .with_average(schedule.average);
    let mut progress = Progress {
        step: 0,
        rng: Rng::derive(schedule.seed, 1),
        window: LossWindow::default(),
        wall: 0.0,
    };
    if let Some((ck, trained)) = &checkpoint {
        let path = run.checkpoint_path();
        // the weights first: a checkpoint of another shape says which tensors differ
        task.load_model(ck, "model.", &path)?;
        if let Some(key) = changed_key(trained, &loaded.tree) {
            let resumable: Vec<&str> = RESUMABLE_KEYS
                .iter()
                .copied()
                .filter(|k| loaded.recipe.has_key(k))
                .collect();
            return Err(TrainError::Run(format!(
                "cannot resume {}: {key} differs from the recipe it was trained with \
                 (config.json edited, or --set); only {} may change when resuming",
                run.path().display(),
                resumable.join(", ")
            )));
        }
        let mut trained_weights = SafeTensors::default();
        task.save_model("", &mut trained_weights);
        optim
            .load(ck, &device)
            .and_then(|()| optim.check_averages(&trained_weights))
            .map_err(|e| TrainError::checkpoint(&path, e))?;
        progress = restore_progress(ck, &path)?;
        // one update a step at most: more is a damaged checkpoint
        if optim.updates() > progress.step {
            return Err(TrainError::checkpoint(
                &path,
                format!(
                    "bad metadata optim.updates: {} updates in {} steps",
                    optim.updates(),
                    progress.step
                ),
            ));
        }
        task.load_state(ck, progress.step, &path)?;
        // end-of-session rows (off the grid the run was trained with) are not
        // part of the continued run; a new --summary keeps the old rows
        let grid = trained
            .get("train")
            .and_then(|t| t.get("summary"))
            .and_then(|v| v.as_integer())
            .and_then(|v| u64::try_from(v).ok())
            .filter(|&v| v > 0)
            .unwrap_or(schedule.summary);
        // (a run with every step trained keeps them all: it only finishes)
        if progress.step < schedule.steps {
            rows.retain(|r| r.step() < progress.step && r.step().is_multiple_of(grid));
        }
    } else {
        rows.clear();
    }
    let total = schedule.steps;
    let trained_out = resumed && progress.step >= total;
    if trained_out && task.finished(&run, progress.step) {
        return Err(TrainError::Run(format!(
            "{} has trained {} already, and train.steps is {total}: nothing to do; \
             give --steps N with N above {} to train further",
            run.path().display(),
            n_steps(progress.step),
            progress.step
        )));
    }
    let first_line = match (resumed, checkpoint.is_some()) {
        (false, _) => format!(
            "charlstm {} recipe {} on {} ({} characters), device {}",
            env!("CARGO_PKG_VERSION"),
            loaded.name,
            config.data_source,
            config.data_chars,
            opts.device_name
        ),
        (true, true) if trained_out => format!(
            "resumed at step {}: every step trained, finishing",
            progress.step
        ),
        (true, true) => format!("resumed at step {}", progress.step),
        (true, false) => "no checkpoint yet: starting again from step 0".to_string(),
    };
    // the log first: a resume that cannot write it changes nothing else
    run.append(&run.log_path(), &(first_line + "\n"))?;
    // the session after its log's first line: an error that ends it ends
    // the log too (where it still can be written: the disk may be full)
    let session = || -> Result<FinalReport<T::Row>> {
        if resumed && !trained_out {
            // every check passed: config.json now says what the run is (the
            // schedule asked for), metrics.csv what its checkpoint holds (a run
            // that only finishes keeps both: a shorter --steps is not what it is)
            run.write_config(&config)?;
            metrics::write_csv(&run.metrics_path(), &rows)?;
        }
        observer(&Event::Started {
            run_dir: run.path(),
            start_step: progress.step,
            total_steps: total,
            params: task.params(),
            train_chars: task.train_chars(),
            resumed,
        });
        let recipe_json = serde_json::to_string(&loaded.tree).expect("toml as json");
        let saver = Saver {
            run: &run,
            config: &config,
            recipe_json: &recipe_json,
            fingerprint: &fingerprint,
            title: &loaded.name,
        };
        let mut books = Books {
            saver,
            rows,
            clock: SessionClock::default(),
            last_good: checkpoint.as_ref().map(|_| progress.step),
        };
        let first_step = progress.step;
        let mut last_step: Option<(StepOutput, f64)> = None;
        let mut summarised_at = None;
        let mut interrupted = false;
        // asked between steps, and between pieces of the work after the last
        let stop_asked = || opts.stop.is_some_and(|s| s.load(Ordering::SeqCst));
        while progress.step < total {
            if stop_asked() {
                interrupted = true;
                break;
            }
            let step = progress.step;
            let t0 = Instant::now();
            let lr = schedule.learning_rate_at(step);
            let out = task.step(step, lr, &mut optim, &mut progress.rng)?;
            let host_loss =
                (T::LOSS_EVERY_STEP || opts.loss_trace).then(|| scalar(out.loss.clone()));
            progress.window.add(&out.loss, host_loss);
            progress.step += 1;
            let dt = t0.elapsed().as_secs_f64();
            progress.wall += dt;
            books.clock.trained(dt, out.chars);
            observer(&Event::Step {
                step,
                total_steps: total,
                loss: host_loss,
                chars_per_sec: books.clock.window_rate(),
                chars: out.chars,
            });
            if let Some(l) = host_loss
                && !l.is_finite()
            {
                return Err(TrainError::Diverged {
                    step,
                    value: l,
                    last_good: books.last_good,
                });
            }
            last_step = Some((out, lr));
            // a summary every `summary` steps, and one at the last step of the session
            let periodic = step.is_multiple_of(schedule.summary);
            if periodic || progress.step == total {
                let (out, lr) = last_step.take().expect("just set");
                let samples =
                    periodic && opts.samples && step.is_multiple_of(schedule.samples_every);
                let at = SummaryAt {
                    out,
                    lr,
                    periodic,
                    samples,
                };
                summarise(&mut task, &optim, &mut progress, &mut books, at, observer)?;
                summarised_at = Some(progress.step);
            }
        }
        if interrupted {
            // a summary at the step reached, so that the report is of these
            // weights (unless one was just taken), and the checkpoint
            if summarised_at != Some(progress.step)
                && let Some((out, lr)) = last_step.take()
            {
                // the checkpoint first (validation may take a while, and a second
                // Ctrl-C exits at once), then the summary, which saves again
                let weights = finite_weights(&task, progress.step - 1, books.last_good)?;
                let average = finite_average(&optim, &weights, progress.step - 1, books.last_good)?;
                save(
                    &task,
                    average.unwrap_or(weights),
                    &books.saver,
                    &optim,
                    &mut progress,
                    (&books.rows, books.last_good),
                )?;
                books.last_good = Some(progress.step);
                let at = SummaryAt {
                    out,
                    lr,
                    periodic: false,
                    samples: false,
                };
                summarise(&mut task, &optim, &mut progress, &mut books, at, observer)?;
            }
            run.append(
                &run.log_path(),
                &format!("stopped at step {}\n", progress.step),
            )?;
        }
        let mut report = FinalReport {
            run_dir: run.path().to_path_buf(),
            steps: progress.step,
            session_steps: progress.step - first_step,
            interrupted,
            finish_left: false,
            last: books.rows.last().cloned(),
            train_seconds: books.clock.train_seconds,
            chars_per_sec: books.clock.session_chars as f64 / books.clock.train_seconds.max(1e-9),
            valid_seconds: books.clock.valid_seconds,
            sample_seconds: books.clock.sample_seconds,
        };
        if !interrupted && !task.finished(&run, progress.step) {
            let last = progress.step.saturating_sub(1);
            let weights = finite_weights(&task, last, books.last_good)?;
            if let Some(average) = finite_average(&optim, &weights, last, books.last_good)? {
                task.load_model(&average, "", &run.model_path())?;
            }
            FINISHING.store(true, Ordering::SeqCst);
            let done = task.finish(&run, &report, &stop_asked);
            FINISHING.store(false, Ordering::SeqCst);
            let done = done.map_err(|e| {
                TrainError::Run(format!(
                    "{e}; every step is trained and saved: resuming the run finishes it"
                ))
            })?;
            if !done {
                report.interrupted = true;
                report.finish_left = true;
                run.append(
                    &run.log_path(),
                    &format!(
                        "stopped at step {}: every step trained, finishing left to the resume\n",
                        progress.step
                    ),
                )?;
            }
        }
        Ok(report)
    };
    match session() {
        Ok(report) => Ok((report, task)),
        Err(e) => {
            let _ = run.append(
                &run.log_path(),
                &format!("ended by an error after {}: {e}\n", n_steps(progress.step)),
            );
            Err(e)
        }
    }
}

/// Seconds and characters of this session.
#[derive(Default)]
struct SessionClock {
    train_seconds: f64,
    valid_seconds: f64,
    sample_seconds: f64,
    session_chars: usize,
    window_seconds: f64,
    window_chars: usize,
}

impl SessionClock {
    fn trained(&mut self, seconds: f64, chars: usize) {
        self.train_seconds += seconds;
        self.window_seconds += seconds;
        self.session_chars += chars;
        self.window_chars += chars;
    }

    fn window_rate(&self) -> f64 {
        self.window_chars as f64 / self.window_seconds.max(1e-9)
    }
}

/// The step a summary is taken at.
struct SummaryAt {
    out: StepOutput,
    lr: f64,
    /// On the summary grid (the window restarts), or at the end of a session
    /// (the window runs on, so a resumed run averages as an unbroken one).
    periodic: bool,
    samples: bool,
}

/// What a save needs besides the task and the progress.
struct Saver<'a> {
    run: &'a RunDir,
    config: &'a RunConfig,
    recipe_json: &'a str,
    fingerprint: &'a str,
    title: &'a str,
}

/// What a session keeps besides the task and its progress: where it saves,
/// the metrics rows, its clock, the step of its last good checkpoint.
struct Books<'a, R> {
    saver: Saver<'a>,
    rows: Vec<R>,
    clock: SessionClock,
    last_good: Option<u64>,
}

/// Takes a summary (validation, log lines, samples), then saves the
/// model, the metrics, the plots and the checkpoint.
fn summarise<T: Task>(
    task: &mut T,
    optim: &Optimizer,
    progress: &mut Progress,
    books: &mut Books<'_, T::Row>,
    at: SummaryAt,
    observer: &mut dyn FnMut(&Event<'_>),
) -> Result<()> {
    let Books {
        saver,
        rows,
        clock,
        last_good,
    } = books;
    let step = progress.step - 1;
    let window = progress.window.sum();
    let mean_loss = window / progress.window.count.max(1) as f64;
    let last_loss = scalar(at.out.loss);
    if !mean_loss.is_finite() || !last_loss.is_finite() {
        return Err(TrainError::Diverged {
            step,
            value: if last_loss.is_finite() {
                mean_loss
            } else {
                last_loss
            },
            last_good: *last_good,
        });
    }
    if at.periodic {
        progress.window = LossWindow::default();
    }
    // before validating: a summary of weights that overflowed means nothing
    let weights = finite_weights(task, step, *last_good)?;
    let t = Instant::now();
    let input = SummaryInput {
        step,
        mean_loss,
        last_loss,
        lr: at.lr,
        grad_norm: at.out.grad_norm.value(),
        chars_per_sec: clock.window_rate(),
        wall_seconds: progress.wall,
        samples: at.samples,
    };
    // validation and samples of the weights the run publishes (the running
    // average when it keeps one), then the trained weights back for training
    let average = finite_average(optim, &weights, step, *last_good)?;
    if let Some(a) = &average {
        task.load_model(a, "", &saver.run.model_path())?;
    }
    let out = task.summary(&input, &mut progress.rng);
    if average.is_some() {
        task.load_model(&weights, "", &saver.run.model_path())?;
    }
    let out = out?;
    clock.sample_seconds += out.sample_seconds;
    clock.valid_seconds += t.elapsed().as_secs_f64() - out.sample_seconds;
    clock.window_seconds = 0.0;
    clock.window_chars = 0;
    let run = saver.run;
    if let Some(texts) = &out.samples {
        run.append(
            &run.samples_path(),
            &format!("step {step}\n{}\n\n", texts.join("\n")),
        )?;
    }
    let lines = out.row.log_lines(out.samples.as_deref());
    observer(&Event::Summary {
        step,
        loss: out.row.loss(),
        lines: &lines,
        row: serde_json::to_value(&out.row).expect("row json"),
        samples: out.samples.as_deref(),
    });
    run.append(&run.log_path(), &(lines.join("\n") + "\n"))?;
    rows.push(out.row);
    save(
        task,
        average.unwrap_or(weights),
        saver,
        optim,
        progress,
        (rows, *last_good),
    )?;
    *last_good = Some(progress.step);
    observer(&Event::Checkpoint {
        step: progress.step,
        path: &run.checkpoint_path(),
    });
    Ok(())
}

/// The task's weights, refused (as a diverged run) unless all finite.
fn finite_weights<T: Task>(task: &T, step: u64, last_good: Option<u64>) -> Result<SafeTensors> {
    let mut weights = SafeTensors::default();
    task.save_model("", &mut weights);
    refuse_non_finite(&weights, "", step, last_good)?;
    Ok(weights)
}

/// A diverged-run error naming the first tensor of `weights` (with `what`
/// after its name) that holds a NaN or an infinity.
fn refuse_non_finite(
    weights: &SafeTensors,
    what: &str,
    step: u64,
    last_good: Option<u64>,
) -> Result<()> {
    match weights.first_non_finite() {
        Some(name) => Err(TrainError::NonFiniteWeights {
            step,
            tensor: format!("{name}{what}"),
            last_good,
        }),
        None => Ok(()),
    }
}

/// The running average of the trained `weights` when the optimiser keeps
/// one (then it is what the run validates and publishes), refused unless
/// all finite.
fn finite_average(
    optim: &Optimizer,
    weights: &SafeTensors,
    step: u64,
    last_good: Option<u64>,
) -> Result<Option<SafeTensors>> {
    let average = optim.averaged(weights);
    if let Some(a) = &average {
        refuse_non_finite(a, " (running average)", step, last_good)?;
    }
    Ok(average)
}

/// Writes `model.safetensors` (`weights`, checked finite), `metrics.csv`
/// and its plots, then `checkpoint.safetensors` (everything to resume): a
/// save stopped part way (a kill, a full disk) leaves the checkpoint of the
/// save before, from which a resume trains again and writes them all (in
/// the other order, the last save's stop left the model and metrics behind
/// a checkpoint that had nothing left to train). A checkpoint with any
/// value not finite (an optimiser moment or the carried state overflowed
/// while the weights did not) is not written: the run stops as a diverged
/// one, keeping the `last_good`.
fn save<T: Task>(
    task: &T,
    mut weights: SafeTensors,
    saver: &Saver<'_>,
    optim: &Optimizer,
    progress: &mut Progress,
    (rows, last_good): (&[T::Row], Option<u64>),
) -> Result<()> {
    let config = saver.config;
    let tokenizer = serde_json::to_string(&config.tokenizer).expect("json");
    let mut ck = SafeTensors::default();
    task.save_model("model.", &mut ck);
    optim.save(&mut ck);
    task.save_state(&mut ck);
    let step = progress.step.to_string();
    for st in [&mut weights, &mut ck] {
        st.metadata
            .insert("model_config".into(), config.model.to_string());
        st.metadata.insert("tokenizer".into(), tokenizer.clone());
        st.metadata.insert("step".into(), step.clone());
        for (k, v) in task.weights_metadata() {
            st.metadata.insert(k.into(), v);
        }
    }
    weights.metadata.insert("format".into(), T::FORMAT.into());
    let device_sum = progress.window.device_part();
    let loss_sum = progress.window.host + device_sum as f64;
    let meta = [
        ("format", format!("{}-checkpoint", T::FORMAT)),
        ("rng", serde_json::to_string(&progress.rng).expect("json")),
        ("loss_sum", format!("{loss_sum:e}")),
        // both parts exactly (f64 holds every f32): see LossWindow
        ("loss_sum_host", format!("{:e}", progress.window.host)),
        ("loss_sum_device", format!("{:e}", device_sum as f64)),
        ("loss_count", progress.window.count.to_string()),
        ("wall_seconds", format!("{:e}", progress.wall)),
        ("recipe", saver.recipe_json.to_string()),
        ("data_fingerprint", saver.fingerprint.to_string()),
        // the history as of this checkpoint: metrics.csv, written before
        // it, may be a summary ahead when a kill comes between the two
        (METRICS_KEY, metrics::csv_text(rows)),
    ];
    for (k, v) in meta {
        ck.metadata.insert(k.into(), v);
    }
    refuse_non_finite(&ck, "", progress.step.saturating_sub(1), last_good)?;
    let run = saver.run;
    let _writing = WRITING_CHECKPOINT.lock().unwrap_or_else(|e| e.into_inner());
    weights.write(&run.model_path())?;
    metrics::write_csv(&run.metrics_path(), rows)?;
    metrics::write_plots(run.path(), saver.title, rows)?;
    // the checkpoint last: it is the source of truth for --resume
    ck.write(&run.checkpoint_path())
}

/// The checkpoint's metadata that holds the run's `metrics.csv` rows.
const METRICS_KEY: &str = "metrics_csv";

fn restore_progress(ck: &SafeTensors, path: &Path) -> Result<Progress> {
    let meta = |k: &str| -> Result<&String> {
        ck.metadata
            .get(k)
            .ok_or_else(|| TrainError::checkpoint(path, format!("missing metadata {k}")))
    };
    let bad = |k: &str| TrainError::checkpoint(path, format!("bad metadata {k}"));
    let number = |k: &str| -> Result<f64> {
        let v: f64 = meta(k)?.parse().map_err(|_| bad(k))?;
        if v.is_finite() { Ok(v) } else { Err(bad(k)) }
    };
    // checkpoints of mirror runs before 0.1 kept no window: it starts empty;
    // those before the device part was saved apart hold it all on the host
    let sum = if ck.metadata.contains_key("loss_sum") {
        number("loss_sum")?
    } else {
        0.0
    };
    let (host_part, device_part) = match (
        ck.metadata.get("loss_sum_host"),
        ck.metadata.get("loss_sum_device"),
    ) {
        (Some(_), Some(_)) => (number("loss_sum_host")?, number("loss_sum_device")?),
        _ => (sum, 0.0),
    };
    if host_part < 0.0 || device_part < 0.0 || device_part as f32 as f64 != device_part {
        return Err(bad("loss_sum_host or loss_sum_device"));
    }
    let window = LossWindow {
        host: host_part,
        device: None,
        restored: (device_part > 0.0).then_some(device_part as f32),
        count: match ck.metadata.get("loss_count") {
            Some(v) => v.parse().map_err(|_| bad("loss_count"))?,
            None => 0,
        },
    };
    let step: u64 = meta("step")?.parse().map_err(|_| bad("step"))?;
    // at most one loss per step done, a sum that is not negative, and none
    // without a loss: anything else is a damaged checkpoint
    if window.count > step
        || window.host < 0.0
        || (window.count == 0 && (host_part > 0.0 || device_part > 0.0))
    {
        return Err(bad("loss_count or loss_sum"));
    }
    Ok(Progress {
        step,
        rng: serde_json::from_str(meta("rng")?)
            .map_err(|e| TrainError::checkpoint(path, format!("bad rng state: {e}")))?,
        window,
        wall: number("wall_seconds")?,
    })
}

/// Opens a run to resume: locks it, then checks that the task, the model,
/// the corpus and the recipe are the run's, and reads its checkpoint.
/// Where `corpus` was read, as `config.json` keeps it: absolute, so that
/// the run can find its text from any folder (a resume without --data, the
/// RMS rule of dynamic evaluation).
fn source_of(corpus: &text8::Corpus) -> String {
    std::fs::canonicalize(&corpus.source)
        .unwrap_or_else(|_| corpus.source.clone())
        .display()
        .to_string()
}

fn open_resume<T: Task>(
    dir: &Path,
    loaded: &LoadedRecipe,
    task: &T,
    corpus: &text8::Corpus,
    fingerprint: &str,
) -> Result<OpenRun<T::Row>> {
    let run = RunDir::open(dir)?;
    // a folder is locked (its .lock written, its leftovers removed) only once
    // its config.json reads as a run's; read again under the lock
    run.read_config()?;
    let lock = run.lock()?;
    let mut config = run.read_config()?;
    let cannot = |why: String| TrainError::Run(format!("cannot resume {}: {why}", dir.display()));
    if config.tokenizer != task.tokenizer() {
        return Err(cannot(format!(
            "it holds a model of the {:?} vocabulary, recipe {} trains one of {:?}",
            config.tokenizer,
            loaded.name,
            task.tokenizer()
        )));
    }
    task.upgrade_model_config(&mut config.model);
    if config.model != task.model_config() {
        // said in the recipe's words (`--set model.layout=fused`), where its
        // model section differs; else in the model config's
        let asked = serde_json::to_value(loaded.tree.get("model")).expect("toml as json");
        let trained = config.recipe.get("model").cloned().unwrap_or_default();
        let in_recipe_words = (trained.is_object() && asked.is_object())
            .then(|| model_differences(&trained, &asked))
            .filter(|d| !d.is_empty());
        let differences = in_recipe_words
            .unwrap_or_else(|| model_differences(&config.model, &task.model_config()));
        return Err(cannot(format!(
            "the model differs from the run's: {differences}"
        )));
    }
    if !config.trained_on(fingerprint, corpus.len()) {
        return Err(cannot(format!(
            "it was trained on {} ({} characters, fingerprint {}), and {} ({} characters, \
             fingerprint {fingerprint}) is another text: the batches would not be the same",
            config.data_source,
            config.data_chars,
            config.data_fingerprint.as_deref().unwrap_or("not recorded"),
            corpus.source.display(),
            corpus.len()
        )));
    }
    // the same text, perhaps moved (given with --data): where it is now is
    // where the next resume finds it (written with the config, below)
    config.data_source = source_of(corpus);
    let path = run.checkpoint_path();
    if !path.exists() && trained_past_first_save::<T>(&run) {
        return Err(cannot(
            "it has no checkpoint.safetensors but has trained files (model.safetensors or \
             metrics.csv): starting it again would replace them; start a new run, or put the \
             checkpoint back"
                .to_string(),
        ));
    }
    let checkpoint = if path.exists() {
        let ck = SafeTensors::read(&path)?;
        let format = format!("{}-checkpoint", T::FORMAT);
        if ck.metadata.get("format") != Some(&format) {
            return Err(TrainError::checkpoint(
                &path,
                format!("not a {format} file"),
            ));
        }
        // checkpoints are written only when every value is finite: one that
        // is not was damaged since, and would diverge at its first step
        if let Some(name) = ck.first_non_finite() {
            return Err(TrainError::checkpoint(
                &path,
                format!(
                    "{name} holds values that are not finite (the file was damaged after it \
                     was written; resume from a copy of the run, or start it again)"
                ),
            ));
        }
        let tok = ck.metadata.get("tokenizer").cloned().unwrap_or_default();
        let want_tok = serde_json::to_string(&config.tokenizer).expect("json");
        if tok != want_tok {
            return Err(TrainError::checkpoint(
                &path,
                format!("vocabulary {tok} does not match the run's {want_tok}"),
            ));
        }
        // the recipe the weights were trained with (older checkpoints: config.json's)
        let trained: toml::Table = match ck.metadata.get("recipe") {
            Some(json) => serde_json::from_str(json)
                .map_err(|e| TrainError::checkpoint(&path, format!("bad metadata recipe: {e}")))?,
            None => serde_json::from_value(config.recipe.clone()).map_err(|e| {
                TrainError::Run(format!("{}: bad recipe: {e}", run.config_path().display()))
            })?,
        };
        Some((ck, trained))
    } else {
        None
    };
    let rows = match &checkpoint {
        Some((ck, _)) => match ck.metadata.get(METRICS_KEY) {
            Some(text) => {
                let source = format!("{} (metadata {METRICS_KEY})", path.display());
                metrics::parse_csv(text, &source)?
            }
            // older checkpoints: the history is in metrics.csv alone
            None if run.metrics_path().exists() => metrics::read_csv(&run.metrics_path())?,
            None => vec![],
        },
        None => vec![],
    };
    // config.json will say what the run is now (written once every check passed)
    config.recipe = serde_json::to_value(&loaded.tree).expect("toml as json");
    config.data_fingerprint = Some(fingerprint.to_string());
    Ok(OpenRun {
        run,
        _lock: lock,
        config,
        checkpoint,
        rows,
        resumed: true,
    })
}

/// Whether a run without a checkpoint holds trained files that starting it
/// again would lose. A save writes the model and the metrics before its
/// checkpoint, so a stop in the first save (a kill, a full disk) leaves
/// those of the first step alone: one step, trained again. Anything later,
/// or a file that does not read, was left by a checkpoint removed since.
fn trained_past_first_save<T: Task>(run: &RunDir) -> bool {
    let model = run.model_path();
    let model_later = model.exists()
        && SafeTensors::read(&model)
            .ok()
            .and_then(|w| w.metadata.get("step")?.parse::<u64>().ok())
            .is_none_or(|step| step > 1);
    let metrics = run.metrics_path();
    let metrics_later = metrics.exists()
        && metrics::read_csv::<T::Row>(&metrics)
            .map_or(true, |rows| rows.iter().any(|r| r.step() > 0));
    model_later || metrics_later
}

/// `n` steps in words: "1 step", "2 steps".
pub fn n_steps(n: u64) -> String {
    match n {
        1 => "1 step".to_string(),
        n => format!("{n} steps"),
    }
}

/// The fields of two model sections (or configs) that differ, each as
/// `model.FIELD X in the run, Y asked` (an absent field is its default;
/// the whole values where they are not both objects), empty where none do.
fn model_differences(run: &serde_json::Value, asked: &serde_json::Value) -> String {
    let (Some(r), Some(a)) = (run.as_object(), asked.as_object()) else {
        return format!("run: {run}; asked: {asked}");
    };
    let show =
        |v: Option<&serde_json::Value>| v.map_or("the default".to_string(), |v| v.to_string());
    let fields: std::collections::BTreeSet<&String> = r.keys().chain(a.keys()).collect();
    fields
        .into_iter()
        .filter(|k| r.get(*k) != a.get(*k))
        .map(|k| {
            format!(
                "model.{k} {} in the run, {} asked",
                show(r.get(k)),
                show(a.get(k))
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The recipe keys a resumed run may change: how long it trains and how often it reports.
pub const RESUMABLE_KEYS: &[&str] = &[
    "train.steps",
    "train.summary",
    "train.samples_every",
    // the speed of the products, not the model: a bf16 run may go on in f32
    "train.precision",
    // evaluation settings, not training
    "dynamic.segment",
    "dynamic.learning_rate",
    "dynamic.decay",
    "dynamic.rule",
    "dynamic.stats",
];

/// The first `section.key` whose value differs between two recipe trees,
/// other than [`RESUMABLE_KEYS`] and the description.
pub fn changed_key(a: &toml::Table, b: &toml::Table) -> Option<String> {
    fn walk(prefix: &str, a: &toml::Table, b: &toml::Table) -> Option<String> {
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            let name = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if name == "description" || RESUMABLE_KEYS.contains(&name.as_str()) {
                continue;
            }
            match (a.get(k), b.get(k)) {
                (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                    if let Some(n) = walk(&name, x, y) {
                        return Some(n);
                    }
                }
                (x, y) if x != y => return Some(name),
                _ => {}
            }
        }
        None
    }
    walk("", a, b)
}

/// The weights of a trained run (`model.safetensors`, of the opened `run`
/// whose `config` the caller has read), checked: the run's format, the
/// tokenizer of its config, every value finite.
pub fn load_weights_file(run: &RunDir, config: &RunConfig, format: &str) -> Result<SafeTensors> {
    let run_dir = run.path();
    let path = run.model_path();
    if !path.exists() {
        let train = crate::recipe::train_command(config.tokenizer == Tokenizer::Mirror);
        let dir = run_dir.display();
        let why = if run.checkpoint_path().exists() {
            // a save writes the model before the checkpoint: it was removed
            // since (or lost in a save of a version that wrote it after)
            format!(
                "it was removed; training further writes it again: \
                 {train} --resume {dir} --steps N, N past the trained steps"
            )
        } else {
            format!(
                "the run stopped before its first checkpoint; continue it with \
                 {train} --resume {dir}"
            )
        };
        return Err(TrainError::Run(format!(
            "{dir}: no model.safetensors ({why})"
        )));
    }
    let weights = SafeTensors::read(&path)?;
    if weights.metadata.get("format").map(String::as_str) != Some(format) {
        return Err(TrainError::checkpoint(
            &path,
            format!("not a {format} weights file"),
        ));
    }
    if let Some(tok) = weights.metadata.get("tokenizer") {
        let want = serde_json::to_string(&config.tokenizer).expect("json");
        if *tok != want {
            return Err(TrainError::checkpoint(
                &path,
                format!(
                    "vocabulary {tok} does not match {}'s {want}",
                    run.config_path().display()
                ),
            ));
        }
    }
    if let Some(name) = weights.first_non_finite() {
        return Err(TrainError::checkpoint(
            &path,
            format!("{name} holds values that are not finite (a diverged run?)"),
        ));
    }
    Ok(weights)
}

/// The recipe of an existing run (its `config.json`), with overrides applied
/// (for resuming: more steps, another summary interval).
pub fn run_recipe(run_dir: &Path, overrides: &[String]) -> Result<(LoadedRecipe, RunConfig)> {
    let run = RunDir::open(run_dir)?;
    let config = run.read_config()?;
    Ok((recipe_of(&run, &config, overrides)?, config))
}

/// [`run_recipe`] of a `config` already read from `run`'s `config.json`.
pub fn recipe_of(run: &RunDir, config: &RunConfig, overrides: &[String]) -> Result<LoadedRecipe> {
    let mut tree: toml::Table = serde_json::from_value(config.recipe.clone()).map_err(|e| {
        TrainError::Run(format!("{}: bad recipe: {e}", run.config_path().display()))
    })?;
    for o in overrides {
        crate::recipe::apply_override(&mut tree, o)?;
    }
    // an edited config.json is named, not only the recipe it came from
    let source = match overrides {
        [] => run.config_path().display().to_string(),
        _ => format!(
            "{} with {}",
            run.config_path().display(),
            overrides.join(", ")
        ),
    };
    let recipe = crate::recipe::parse_tree(&config.recipe_name, &tree)
        .map_err(|e| TrainError::Run(format!("{source}: {e}")))?;
    Ok(LoadedRecipe {
        name: config.recipe_name.clone(),
        tree,
        recipe,
    })
}

impl Schedule {
    /// The staircase: the rate times `decay_factor` for every `decay_every`
    /// steps done (never decayed when `decay_every` is 0).
    pub fn learning_rate_at(&self, step: u64) -> f64 {
        match step.checked_div(self.decay_every) {
            Some(k) => self.learning_rate * self.decay_factor.powi(k.min(i32::MAX as u64) as i32),
            None => self.learning_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    #[test]
    fn only_the_schedule_length_may_change_on_resume() {
        let a = tree(
            "description = \"x\"\n[train]\nsteps = 5\nlearning_rate = 10.0\n[data]\nvalid_size = 1000\n",
        );
        let more = tree(
            "description = \"y\"\n[train]\nsteps = 9\nsummary = 3\nlearning_rate = 10.0\n[data]\nvalid_size = 1000\n",
        );
        assert_eq!(changed_key(&a, &more), None);
        let lr = tree("[train]\nsteps = 5\nlearning_rate = 1.0\n[data]\nvalid_size = 1000\n");
        assert_eq!(changed_key(&a, &lr).as_deref(), Some("train.learning_rate"));
        let valid = tree("[train]\nsteps = 5\nlearning_rate = 10.0\n[data]\nvalid_size = 10\n");
        assert_eq!(changed_key(&a, &valid).as_deref(), Some("data.valid_size"));
        let added =
            tree("[train]\nsteps = 5\nlearning_rate = 10.0\nseed = 2\n[data]\nvalid_size = 1000\n");
        assert_eq!(changed_key(&a, &added).as_deref(), Some("train.seed"));
    }

    /// The check every save runs first: a weight that is not finite, even
    /// where the loss still looks finite, stops the run with an error naming
    /// the step, the first such tensor and the checkpoint that is kept.
    #[test]
    fn non_finite_weights_name_the_tensor_and_the_kept_checkpoint() {
        use crate::safetensors::HostTensor;
        let mut weights = SafeTensors::default();
        weights.push("layers.0.wx", HostTensor::new(vec![2], vec![0.5, -1.0]));
        assert!(refuse_non_finite(&weights, "", 7, None).is_ok());
        weights.push(
            "layers.0.wh",
            HostTensor::new(vec![2], vec![0.5, f32::INFINITY]),
        );
        weights.push("out.w", HostTensor::new(vec![1], vec![f32::NAN]));
        let msg = refuse_non_finite(&weights, " (average)", 7, Some(5))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(
                "the weights are not finite after step 7 (layers.0.wh (average)): stopping. \
                 The last good checkpoint (step 5) is kept"
            ),
            "{msg}"
        );
        let msg = refuse_non_finite(&weights, "", 3, None)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("(layers.0.wh)") && msg.contains("No checkpoint was written"),
            "{msg}"
        );
    }

    #[test]
    fn staircase_schedule() {
        let s = Schedule {
            steps: 7001,
            summary: 100,
            samples_every: 1000,
            optimizer: crate::recipe::OptimizerKind::Sgd,
            learning_rate: 10.0,
            decay_every: 5000,
            decay_factor: 0.1,
            clip_norm: 1.25,
            average: 0.0,
            seed: 0,
        };
        assert_eq!(s.learning_rate_at(0), 10.0);
        assert_eq!(s.learning_rate_at(4999), 10.0);
        assert!((s.learning_rate_at(5000) - 1.0).abs() < 1e-12);
        let never = Schedule {
            decay_every: 0,
            ..s
        };
        assert_eq!(never.learning_rate_at(1 << 40), 10.0);
    }
}
