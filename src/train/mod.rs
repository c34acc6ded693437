//! Training you can trust: typed run configuration, the epoch loop with per-step and
//! per-epoch events, atomic checkpoints and resume, evaluation, the stationarity audit of
//! a saved run, and the plots.
//!
//! - [`config`]: [`TrainConfig`], the typed description of a run;
//! - [`setup`]: data loading and [`assemble`] (model + loss + optimizer), shared by new,
//!   resumed and reopened runs;
//! - [`fit`]: [`Trainer`] and [`Trainer::fit_epoch`], the loop the CLI, the examples and
//!   the benchmarks share;
//! - [`eval`]: [`evaluate`], and [`evaluate_run`]/[`audit_run`] of a saved run;
//! - [`run_dir`]: the files of a run; [`checkpoint`]: safetensors with atomic writes;
//! - [`divergence`]: the rule that stops (or marks) a run that diverged;
//! - [`train`] (here): a whole run, reporting [`Event`]s to the caller.

pub mod bench;
pub mod checkpoint;
pub mod collective;
pub mod config;
#[allow(unsafe_code)] // FFI: the MXCSR flush-to-zero bits
pub mod denormals;
pub mod divergence;
mod error;
pub mod eval;
pub mod fit;
pub mod metrics;
#[cfg(feature = "mpi")]
#[allow(unsafe_code)] // FFI: the MPI communicator handle is sent between threads
pub mod mpi;
pub mod plots;
pub mod resume;
mod run;
pub mod run_dir;
pub mod setup;

pub use checkpoint::{load_checkpoint, save_checkpoint, Checkpoint, OPTIMIZER_PREFIX};
pub use config::{Augmentation, ConfigError, DatasetKind, ImageSize, TrainConfig};
pub use error::TrainError;
pub use eval::{audit_run, evaluate, evaluate_run, evaluate_sharded, SavedRun};
pub use fit::{EpochEnd, EpochStats, StepEvent, Trainer};
pub use metrics::{evaluation, predictions, Evaluation};
pub use run::{train_model_with, train_with};
pub use run_dir::{PartialEpoch, Progress, RunDir};
pub use setup::{
    assemble, assemble_with, load_data, model_outputs, prepare_split, with_threads, Assembly,
};

use collective::Local;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// One epoch's record in `metrics.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Test accuracy after the epoch.
    pub test_accuracy: f64,
    /// Wall time of the epoch's training (seconds); `None` when it was lost (a resumed run
    /// whose `metrics.json` was missing: the checkpoint keeps only deterministic values).
    pub seconds: Option<f64>,
    /// Training throughput (images/s); `None` as `seconds`.
    pub images_per_second: Option<f64>,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// Mean over the epoch's batches of the loss's focus on one negative class
    /// ([`crate::loss::Loss::focus`]; LGL-INR only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub focus: Option<f64>,
}

/// What `train` leaves behind, also written to `metrics.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run directory.
    pub out_dir: PathBuf,
    /// Per-epoch records.
    pub epochs: Vec<EpochRecord>,
    /// Final test-set metrics.
    pub test: Evaluation,
    /// Final training-set metrics (eval mode, no augmentation).
    pub train: Evaluation,
    /// Training-set class counts.
    pub train_class_counts: Vec<usize>,
    /// Total wall time (seconds) of the invocation that finished the run.
    pub seconds: f64,
    /// Set when the run broke the divergence rule: a finished run whose final balanced
    /// test accuracy is at chance, or (with `allow_divergence`) one whose loss grew. The
    /// command line exits with an error for it unless divergence is allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<divergence::Divergence>,
}

/// What a run reports while it goes, for a console, a log or a test.
#[derive(Debug)]
pub enum Event<'a> {
    /// The run is set up and about to train.
    Started {
        /// Its configuration (as resumed, for a resumed run).
        config: &'a TrainConfig,
        /// Trainable scalars of the model.
        parameters: usize,
        /// Training images.
        train_images: usize,
        /// Test images.
        test_images: usize,
        /// Training-set class counts.
        class_counts: &'a [usize],
        /// Worker threads.
        threads: usize,
        /// The run directory.
        out_dir: &'a Path,
        /// What the run does that the user should know and did not ask for (a constant
        /// input channel that is centred but not scaled); also in `config.json`.
        warnings: &'a [String],
    },
    /// One optimisation step was taken.
    Step(&'a StepEvent),
    /// An epoch finished, was evaluated and checkpointed.
    Epoch {
        /// Its record.
        record: &'a EpochRecord,
        /// Test-set metrics after it.
        test: &'a Evaluation,
        /// Epochs the run trains in all.
        epochs: usize,
    },
    /// The run finished (or stopped after `stop_after` epochs); outputs are written.
    Finished(&'a RunSummary),
}

/// Trains the run described by `config` (or resumes `config.resume`), writing
/// `config.json`, `metrics.json`, `model.safetensors` and the plots to the run directory,
/// and reporting progress to `on_event`.
pub fn train(
    config: &TrainConfig,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> Result<RunSummary, TrainError> {
    train_until(config, &AtomicBool::new(false), on_event)
}

/// [`train`], stopping cleanly after the step during which `stop` becomes true (a signal
/// handler sets it): the checkpoint then holds every step so far, and resuming continues
/// the epoch exactly where it stopped.
pub fn train_until(
    config: &TrainConfig,
    stop: &AtomicBool,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> Result<RunSummary, TrainError> {
    train_with(config, Arc::new(Local), stop, on_event)
}

/// [`train_until`] for the model `architecture` builds (any [`crate::nn::Module`]) instead
/// of `config.model`; resume it with the same architecture, reopen it with
/// [`SavedRun::open_with`].
pub fn train_model_until(
    config: &TrainConfig,
    architecture: &dyn crate::nn::Architecture,
    stop: &AtomicBool,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> Result<RunSummary, TrainError> {
    train_model_with(config, architecture, Arc::new(Local), stop, on_event)
}
