//! Training, evaluation and sampling: the loops around the models.
//!
//! Owns: recipes, optimisers and their schedules, global-norm gradient
//! clipping, the training loops (character LM and word mirror), validation,
//! sampling, run directories, checkpoints (safetensors, written atomically),
//! metrics and plots.
//!
//! May import: `model`, `text8`, `tokenizer`, Burn. Never prints: progress
//! goes to the caller through [`session::Event`] callbacks and results come back
//! as values; the CLI decides what a person sees.

pub mod beam;
pub mod bench;
pub mod checkpoint;
pub mod dynamic;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod lm;
pub mod memory;
pub mod metrics;
pub mod mirror;
pub mod optim;
pub mod plot;
pub mod recipe;
pub mod run;
pub mod safetensors;
pub mod sample;
pub mod session;

pub use error::{Result, TrainError};
pub use lm::train_lm;
pub use mirror::{MirrorReport, train_mirror};
pub use recipe::{LoadedRecipe, Recipe, load_recipe};
pub use run::{RunConfig, RunDir};
pub use session::{Event, FinalReport, RunTarget, TrainOptions, run_recipe};

/// What [`train`] reports, by task.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum TrainReport {
    /// A language model's run.
    Lm(FinalReport<metrics::Summary>),
    /// A mirror run, with its test scores.
    Mirror(MirrorReport),
}

impl TrainReport {
    /// The run's part of the report, whichever the task.
    pub fn run_dir(&self) -> &std::path::Path {
        match self {
            TrainReport::Lm(r) => &r.run_dir,
            TrainReport::Mirror(r) => &r.run.run_dir,
        }
    }

    /// Whether the run stopped early on request.
    pub fn interrupted(&self) -> bool {
        match self {
            TrainReport::Lm(r) => r.interrupted,
            TrainReport::Mirror(r) => r.run.interrupted,
        }
    }
}

/// Trains (or resumes) a run of whichever task the recipe is for, on a
/// thread of the kernels' pool ([`run_inside`]).
pub fn train(
    loaded: &LoadedRecipe,
    corpus: &text8::Corpus,
    target: &RunTarget,
    opts: TrainOptions<'_>,
    observer: &mut (dyn FnMut(&Event<'_>) + Send),
) -> Result<TrainReport> {
    run_inside(|| {
        Ok(match loaded.recipe {
            Recipe::Lm(_) => TrainReport::Lm(train_lm(loaded, corpus, target, opts, observer)?),
            Recipe::Mirror(_) => {
                TrainReport::Mirror(train_mirror(loaded, corpus, target, opts, observer)?)
            }
        })
    })
}

/// How many threads the CPU kernels use.
pub fn threads() -> usize {
    model::kernel::pool::threads()
}

/// Sets how many threads the CPU kernels use (the sequence operations split
/// their batch over them).
pub fn set_threads(n: usize) {
    model::kernel::pool::set_threads(n);
}

/// Whether the kernels' other threads poll for work during a run (they
/// do unless this is turned off: the CLI does for a GPU device).
pub fn set_keep_awake(on: bool) {
    model::kernel::pool::set_keep_awake(on);
}

/// Checks the `CHARLSTM_KERNELS` environment variable (the kernels' widest
/// instruction set, for measurements): an error names it and what it accepts.
pub fn check_kernels_setting() -> std::result::Result<(), String> {
    model::kernel::cpu::asked_isa().map(|_| ())
}

/// Runs `f` (a training, an evaluation) on a thread of the kernels' pool,
/// where their parallel regions cost least ([`model::kernel::pool::run_inside`]).
pub fn run_inside<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    model::kernel::pool::run_inside(f)
}
