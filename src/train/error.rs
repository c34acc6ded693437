//! Why a run failed. Work already saved (the last epoch's checkpoint and metrics) is kept.

use crate::data::DataError;
use crate::error::TensorError;
use crate::loss::LossOptionError;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a run failed. Work already saved (the last epoch's checkpoint and metrics) is kept.
#[derive(Debug, Error)]
pub enum TrainError {
    /// The data could not be loaded.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Loss options that do not fit together or are out of range.
    #[error(transparent)]
    Loss(#[from] LossOptionError),
    /// A tensor operation failed (shapes, labels).
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// A configuration value out of range or not applicable.
    #[error("configuration: {0}")]
    Config(#[from] super::ConfigError),
    /// Something else the run cannot use (a thread pool that cannot be built, an output
    /// directory holding another run).
    #[error("{0}")]
    Invalid(String),
    /// A new run's output directory already holds files (an earlier run?).
    #[error("{0} is not empty (an earlier run?): resume it, choose another directory, or allow overwriting")]
    OutNotEmpty(PathBuf),
    /// Stopped by a signal after a step; the checkpoint holds everything up to it.
    #[error("interrupted at epoch {epoch}, batch {batch}; the checkpoint in {dir} holds every step so far")]
    Interrupted {
        /// Epoch (1-based) in progress.
        epoch: usize,
        /// Batches of it done.
        batch: usize,
        /// The run directory.
        dir: PathBuf,
    },
    /// A file of the run could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint that cannot be written, read or applied.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A run directory whose configuration cannot be used.
    #[error("{path}: {reason}")]
    RunConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A plot that could not be drawn.
    #[error("plot {path}: {reason}")]
    Plot {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A resume request that changes what a resumed run keeps (see
    /// [`super::resume::resumed_config`]).
    #[error("{field}: {reason}")]
    ResumeConflict {
        /// The configuration field (`lr`, `loss.beta`, `out`).
        field: String,
        /// Why, with the saved value.
        reason: String,
    },
    /// The loss became NaN or infinite; the checkpoint on disk (if any) is intact.
    #[error("the training loss became {loss} at epoch {epoch}, step {step}{}", kept_text(.kept))]
    NonFinite {
        /// Epoch (1-based).
        epoch: usize,
        /// Step within the epoch.
        step: usize,
        /// The value.
        loss: f64,
        /// What the run directory keeps, when the error comes from a run (set by `train`;
        /// `None` from a bare [`super::Trainer`]).
        kept: Option<String>,
    },
    /// The run broke the divergence rule ([`super::divergence`]) and was stopped; the
    /// checkpoint of the last good epoch (if any) is kept.
    #[error("the run diverged at epoch {}: {} (the divergence rule; allow_divergence turns it off){}", .divergence.epoch, .divergence.rule, kept_text(.kept))]
    Diverged {
        /// The epoch and the rule.
        divergence: super::divergence::Divergence,
        /// What the run directory keeps.
        kept: Option<String>,
    },
}

/// `; <what is kept>`, or nothing.
fn kept_text(kept: &Option<String>) -> String {
    kept.as_ref().map_or(String::new(), |k| format!("; {k}"))
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
