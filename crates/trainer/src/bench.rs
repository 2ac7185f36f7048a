//! Speed measurement of a recipe on a device: the training loop, validation
//! and sampling, and the process's peak memory. `cargo xtask bench` runs one
//! process per (recipe, device) and compares with the reference implementations.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use serde::Serialize;
use tokenizer::rng::Rng;

use crate::error::{Result, TrainError};
use crate::recipe::{LoadedRecipe, Recipe};
use crate::sample::{self, SampleOptions};
use crate::session::{Event, RunTarget, TrainOptions};
use crate::{lm, mirror};

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// Recipe name.
    pub recipe: String,
    /// Device name.
    pub device: String,
    /// CPU threads asked for (0: the backend's default).
    pub threads: usize,
    /// Training steps measured (after the warm-up).
    pub steps: u64,
    /// Seconds of those steps.
    pub train_seconds: f64,
    /// Training characters per second.
    pub chars_per_sec: f64,
    /// Validation characters per second (batch 1, character by character).
    pub valid_chars_per_sec: f64,
    /// Generated characters per second (`sample_streams` samples at once).
    pub sample_chars_per_sec: f64,
    /// Samples generated together.
    pub sample_streams: usize,
    /// Peak resident memory of the process in MiB (Linux), when known.
    pub peak_rss_mib: Option<f64>,
    /// Loss of the last step (a sanity check that training trains).
    pub last_loss: f64,
    /// Where it was measured: the CPU, its vector extensions, the kernels used.
    pub cpu: model::kernel::CpuInfo,
    /// Precision the LSTM's products trained in (`train.precision`, where
    /// this CPU and device run it): `f32`, `bf16` or `f16`.
    pub precision: &'static str,
}

/// Where and how long to measure: the corpus, the device, the threads
/// asked for (as reported), warm-up and timed steps, and the folder for the
/// scratch run directory, and whom to tell of each step.
#[derive(Clone)]
pub struct BenchSetup<'a> {
    /// The corpus trained on.
    pub corpus: &'a text8::Corpus,
    /// The device.
    pub device: Device,
    /// Its name, as reported.
    pub device_name: &'a str,
    /// CPU threads asked for, as reported.
    pub threads: usize,
    /// Steps run before the clock starts.
    pub warmup: u64,
    /// Steps timed.
    pub steps: u64,
    /// Folder of the scratch run directory.
    pub scratch: &'a Path,
    /// Told `(steps trained, warmup + steps)` after each training step, for
    /// a progress bar (a bench may train for hours).
    pub stepped: &'a (dyn Fn(u64, u64) + Sync),
}

impl std::fmt::Debug for BenchSetup<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchSetup")
            .field("device_name", &self.device_name)
            .field("threads", &self.threads)
            .field("warmup", &self.warmup)
            .field("steps", &self.steps)
            .field("scratch", &self.scratch)
            .finish_non_exhaustive()
    }
}

/// Peak resident set size of this process (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// What [`timed_training`] measured.
struct Timed {
    /// The scratch run directory (removed by the caller).
    run: std::path::PathBuf,
    /// Seconds of the timed steps.
    seconds: f64,
    /// Training characters of the timed steps.
    chars: usize,
    /// The loss of the last summary.
    last_loss: f64,
}

/// A task's training function, as [`lm::train_lm`] and [`mirror::train_mirror`].
type TrainFn<R> = fn(
    &LoadedRecipe,
    &text8::Corpus,
    &RunTarget,
    TrainOptions<'_>,
    &mut dyn FnMut(&Event<'_>),
) -> Result<R>;

/// Trains `warmup + steps` steps of a recipe in a scratch run directory
/// (with `extra` overrides) and times the last `steps`.
#[allow(clippy::too_many_arguments)]
fn timed_training<R>(
    loaded: &LoadedRecipe,
    extra: &[String],
    train: TrainFn<R>,
    setup: &BenchSetup<'_>,
) -> Result<Timed> {
    let BenchSetup {
        corpus,
        ref device,
        device_name,
        warmup,
        steps,
        scratch,
        stepped,
        ..
    } = *setup;
    let mut loaded = loaded.clone();
    let total = warmup
        .checked_add(steps)
        .filter(|&t| t < i64::MAX as u64)
        .ok_or_else(|| {
            TrainError::Recipe(format!(
                "bench: --warmup {warmup} + --steps {steps} is too many steps"
            ))
        })?;
    for o in [
        format!("train.steps={total}"),
        format!("train.summary={}", total + 1),
    ]
    .iter()
    .chain(extra)
    {
        crate::recipe::apply_override(&mut loaded.tree, o)?;
    }
    loaded.recipe = crate::recipe::parse_tree(&loaded.name, &loaded.tree)?;
    let mut timer: Option<Instant> = None;
    let (mut seconds, mut chars, mut last_loss) = (0.0, 0, f64::NAN);
    let run = scratch.join(format!("{}-{device_name}", loaded.name));
    train(
        &loaded,
        corpus,
        &RunTarget::New {
            path: Some(run.clone()),
            runs_root: scratch.to_path_buf(),
        },
        TrainOptions::new(device.clone(), device_name),
        &mut |e| {
            if let Event::Step { step, chars: c, .. } = e {
                stepped(step + 1, total);
                if timer.is_some() {
                    chars += c;
                }
                if *step + 1 == warmup {
                    timer = Some(Instant::now());
                }
                if *step + 1 == total
                    && let Some(t) = timer
                {
                    seconds = t.elapsed().as_secs_f64();
                }
            }
            if let Event::Summary { loss, .. } = e {
                last_loss = *loss;
            }
        },
    )?;
    Ok(Timed {
        run,
        seconds,
        chars,
        last_loss,
    })
}

/// Trains `warmup + steps` steps of a language-model recipe in a scratch run
/// directory and times the last `steps`; then times a validation pass and sampling.
pub fn bench_lm(loaded: &LoadedRecipe, setup: &BenchSetup<'_>) -> Result<BenchResult> {
    let BenchSetup {
        corpus,
        ref device,
        device_name,
        threads,
        steps,
        ..
    } = *setup;
    let Recipe::Lm(recipe) = &loaded.recipe else {
        return Err(TrainError::Recipe(format!(
            "bench: {} is not a language-model recipe",
            loaded.name
        )));
    };
    let Timed {
        run,
        seconds: elapsed,
        last_loss,
        ..
    } = timed_training(loaded, &[], lm::train_lm, setup)?;
    let chars_per_step = {
        let kind = recipe.model.tokenizer;
        let cols = recipe.data.num_unrollings + 1;
        let steps_per_batch = match kind {
            crate::recipe::TokenizerKind::Char => cols - 1,
            crate::recipe::TokenizerKind::Bigram => cols - 2,
        };
        (steps_per_batch * recipe.data.batch_size) as f64
    };
    let (model, kind, _) = lm::load_lm(&run, device)?;
    let model = model.valid();
    // validation: the recipe's validation text, batch 1, state carried
    let data = lm::LmData::new(corpus, recipe)?;
    let t = Instant::now();
    let mut n = 0usize;
    while t.elapsed().as_secs_f64() < 1.0 || n == 0 {
        lm::validate(&model, kind, &data.valid, recipe.data.valid_streams, device);
        n += data.valid.len();
    }
    let valid_cps = n as f64 / t.elapsed().as_secs_f64();
    // sampling: many streams at once, repeated for at least a second (one
    // call of the notebook model takes a tenth of that: too short to time alone)
    let streams = 256;
    let opts = SampleOptions {
        length: 400,
        temperature: 1.0,
        prime: None,
        count: streams,
        truncation: Default::default(),
    };
    let mut rng = Rng::new(1);
    let t = Instant::now();
    let mut generated = 0usize;
    while t.elapsed().as_secs_f64() < 1.0 || generated == 0 {
        let texts = sample::generate(&model, kind, &opts, &mut rng, device)?;
        generated += texts.iter().map(|s| s.len()).sum::<usize>();
    }
    let sample_cps = generated as f64 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&run);
    Ok(BenchResult {
        cpu: model::kernel::cpu_info(),
        precision: crate::lm::runs_in(recipe, device).name(),
        recipe: loaded.name.clone(),
        device: device_name.to_string(),
        threads,
        steps,
        train_seconds: elapsed,
        chars_per_sec: steps as f64 * chars_per_step / elapsed.max(1e-9),
        valid_chars_per_sec: valid_cps,
        sample_chars_per_sec: sample_cps,
        sample_streams: streams,
        peak_rss_mib: peak_rss_mib(),
        last_loss,
    })
}

/// One measurement of a mirror recipe's training.
#[derive(Debug, Clone, Serialize)]
pub struct MirrorBenchResult {
    /// Recipe name.
    pub recipe: String,
    /// Device name.
    pub device: String,
    /// CPU threads asked for.
    pub threads: usize,
    /// Training steps measured (after the warm-up).
    pub steps: u64,
    /// Seconds of those steps.
    pub train_seconds: f64,
    /// Target characters predicted per second (each sentence's letters and
    /// spaces, and its end symbol): the figure the PyTorch reference reports.
    pub chars_per_sec: f64,
    /// Sentences (batch rows) per second.
    pub sentences_per_sec: f64,
    /// Peak resident memory of the process in MiB (Linux), when known.
    pub peak_rss_mib: Option<f64>,
    /// Loss of the last step's summary (a sanity check that training trains).
    pub last_loss: f64,
    /// Where it was measured.
    pub cpu: model::kernel::CpuInfo,
}

/// Trains `warmup + steps` steps of a mirror recipe in a scratch run
/// directory and times the last `steps` (validation and the final test
/// shrunk to one batch: they are not what is measured).
pub fn bench_mirror(loaded: &LoadedRecipe, setup: &BenchSetup<'_>) -> Result<MirrorBenchResult> {
    let BenchSetup {
        device_name,
        threads,
        steps,
        ..
    } = *setup;
    let Recipe::Mirror(recipe) = &loaded.recipe else {
        return Err(TrainError::Recipe(format!(
            "bench: {} is not a mirror recipe",
            loaded.name
        )));
    };
    let batch = recipe.data.batch_size;
    let small = [
        format!("data.valid_windows={batch}"),
        format!("data.test_windows={batch}"),
    ];
    let timed = timed_training(loaded, &small, mirror::train_mirror, setup)?;
    let _ = std::fs::remove_dir_all(&timed.run);
    let seconds = timed.seconds.max(1e-9);
    Ok(MirrorBenchResult {
        recipe: loaded.name.clone(),
        device: device_name.to_string(),
        threads,
        steps,
        train_seconds: timed.seconds,
        chars_per_sec: timed.chars as f64 / seconds,
        sentences_per_sec: (steps as usize * batch) as f64 / seconds,
        peak_rss_mib: peak_rss_mib(),
        last_loss: timed.last_loss,
        cpu: model::kernel::cpu_info(),
    })
}

/// [`bench_lm`] or [`bench_mirror`], as the recipe's task says, on a thread
/// of the kernels' pool as [`train`](crate::train) runs: the result as JSON.
pub fn bench_recipe(loaded: &LoadedRecipe, setup: &BenchSetup<'_>) -> Result<serde_json::Value> {
    let measure = || -> Result<serde_json::Value> {
        let json = match loaded.recipe {
            Recipe::Lm(_) => serde_json::to_value(bench_lm(loaded, setup)?),
            Recipe::Mirror(_) => serde_json::to_value(bench_mirror(loaded, setup)?),
        };
        Ok(json.expect("a measurement is plain numbers and names"))
    };
    crate::run_inside(measure)
}
