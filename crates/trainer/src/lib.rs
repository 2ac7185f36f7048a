//! Training, evaluation and sampling: the loops around the models.
//!
//! Owns: recipes, optimisers and their schedules, global-norm gradient
//! clipping, the training loops (character LM and word mirror), validation,
//! sampling, run directories, checkpoints (safetensors, written atomically),
//! metrics and plots.
//!
//! May import: `model`, `text8`, `tokenizer`, Burn. Never prints: progress
//! goes to the caller through [`lm::Event`] callbacks and results come back
//! as values; the CLI decides what a person sees.

pub mod bench;
pub mod checkpoint;
pub mod error;
pub mod fsutil;
pub mod lm;
pub mod metrics;
pub mod mirror;
pub mod optim;
pub mod plot;
pub mod recipe;
pub mod run;
pub mod safetensors;
pub mod sample;

pub use error::{Result, TrainError};
pub use lm::{Event, FinalReport, RunTarget, TrainOptions, train_lm};
pub use recipe::{LoadedRecipe, Recipe, load_recipe};
pub use run::{RunConfig, RunDir};

/// Sets how many threads the CPU kernels use (the sequence operations split
/// their batch over them).
pub fn set_threads(n: usize) {
    model::kernel::set_threads(n);
}
