//! Errors of training, sampling, evaluating and of run directories.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Result type of this crate.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// What can go wrong; messages name the file, key or flag involved.
#[derive(Debug, Error)]
pub enum TrainError {
    /// Corpus problems (missing, malformed, too short).
    #[error(transparent)]
    Data(#[from] text8::Text8Error),
    /// An I/O error on a file. (The OS error is part of the message, not a
    /// `source`: chained, it would be printed twice.)
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A bad recipe or override.
    #[error("{0}")]
    Recipe(String),
    /// A run directory that cannot be used as asked.
    #[error("{0}")]
    Run(String),
    /// A run directory whose lock another process holds (`holder`: " (pid
    /// N)" where it wrote its id, else empty).
    #[error("{} is in use by another charlstm process{holder}; wait for it to finish", dir.display())]
    Busy {
        /// The run directory.
        dir: PathBuf,
        /// Who holds it.
        holder: String,
    },
    /// A checkpoint that cannot be read or does not fit the model.
    #[error("{}: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The loss became NaN or infinite.
    #[error(
        "the training loss is {value} at step {step}: stopping. {}; try a lower learning rate or clip_norm",
        kept(*last_good)
    )]
    Diverged {
        /// Step where it was seen.
        step: u64,
        /// The loss.
        value: f64,
        /// Step of the last checkpoint written, if any.
        last_good: Option<u64>,
    },
    /// The weights stopped being finite (the loss may still look finite).
    #[error(
        "the weights are not finite after step {step} ({tensor}): stopping. {}; try a lower \
         learning rate or clip_norm",
        kept(*last_good)
    )]
    NonFiniteWeights {
        /// Step after which it was seen.
        step: u64,
        /// The first tensor holding a NaN or an infinity.
        tensor: String,
        /// Step of the last checkpoint written, if any.
        last_good: Option<u64>,
    },
    /// Invalid input to sampling or evaluation.
    #[error("{0}")]
    Input(String),
}

fn kept(last_good: Option<u64>) -> String {
    match last_good {
        Some(step) => format!("The last good checkpoint (step {step}) is kept"),
        None => "No checkpoint was written (the run directory keeps these settings: to \
                 start again with others, delete it or choose another --run)"
            .to_string(),
    }
}

impl TrainError {
    /// Whether a file could not be read or written (a full disk, a
    /// file-size limit, a permission): the run's own files, or the corpus.
    pub fn is_io(&self) -> bool {
        matches!(
            self,
            TrainError::Io { .. } | TrainError::Data(text8::Text8Error::Io { .. })
        )
    }

    pub(crate) fn io(path: impl AsRef<Path>, error: std::io::Error) -> Self {
        TrainError::Io {
            path: path.as_ref().to_path_buf(),
            error,
        }
    }

    pub(crate) fn checkpoint(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        TrainError::Checkpoint {
            path: path.as_ref().to_path_buf(),
            reason: reason.into(),
        }
    }
}
