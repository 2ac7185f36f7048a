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
use crate::lm;
use crate::recipe::{LoadedRecipe, Recipe};
use crate::sample::{self, SampleOptions};
use crate::session::{Event, RunTarget, TrainOptions};

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
}

/// Peak resident set size of this process (`VmHWM`), in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Trains `warmup + steps` steps of a language-model recipe in a scratch run
/// directory and times the last `steps`; then times a validation pass and sampling.
#[allow(clippy::too_many_arguments)]
pub fn bench_lm(
    loaded: &LoadedRecipe,
    corpus: &text8::Corpus,
    device: Device,
    device_name: &str,
    threads: usize,
    warmup: u64,
    steps: u64,
    scratch: &Path,
) -> Result<BenchResult> {
    let Recipe::Lm(recipe) = &loaded.recipe else {
        return Err(TrainError::Recipe(format!(
            "bench: {} is not a language-model recipe",
            loaded.name
        )));
    };
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
    ] {
        crate::recipe::apply_override(&mut loaded.tree, &o)?;
    }
    loaded.recipe = crate::recipe::parse_tree(&loaded.name, &loaded.tree)?;
    let mut timer: Option<Instant> = None;
    let mut elapsed = 0.0;
    let mut last_loss = f64::NAN;
    let run = scratch.join(format!("{}-{device_name}", loaded.name));
    lm::train_lm(
        &loaded,
        corpus,
        &RunTarget::New {
            path: Some(run.clone()),
            runs_root: scratch.to_path_buf(),
        },
        TrainOptions::new(device.clone(), device_name),
        &mut |e| {
            if let Event::Step { step, .. } = e {
                if *step + 1 == warmup {
                    timer = Some(Instant::now());
                }
                if *step + 1 == total
                    && let Some(t) = timer
                {
                    elapsed = t.elapsed().as_secs_f64();
                }
            }
            if let Event::Summary { loss, .. } = e {
                last_loss = *loss;
            }
        },
    )?;
    let chars_per_step = {
        let kind = recipe.model.tokenizer;
        let cols = recipe.data.num_unrollings + 1;
        let steps_per_batch = match kind {
            crate::recipe::TokenizerKind::Char => cols - 1,
            crate::recipe::TokenizerKind::Bigram => cols - 2,
        };
        (steps_per_batch * recipe.data.batch_size) as f64
    };
    let (model, kind, _) = lm::load_lm(&run, &device)?;
    let model = model.valid();
    // validation: the recipe's validation text, batch 1, state carried
    let data = lm::LmData::new(corpus, recipe)?;
    let t = Instant::now();
    let mut n = 0usize;
    while t.elapsed().as_secs_f64() < 1.0 || n == 0 {
        lm::validate(
            &model,
            kind,
            &data.valid,
            recipe.data.valid_streams,
            &device,
        );
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
        let texts = sample::generate(&model, kind, &opts, &mut rng, &device)?;
        generated += texts.iter().map(|s| s.len()).sum::<usize>();
    }
    let sample_cps = generated as f64 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&run);
    Ok(BenchResult {
        cpu: model::kernel::cpu_info(),
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
