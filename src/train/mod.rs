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
//! - [`train`] (here): a whole run, reporting [`Event`]s to the caller.

pub mod checkpoint;
pub mod config;
pub mod denormals;
mod error;
pub mod eval;
pub mod fit;
pub mod metrics;
pub mod plots;
pub mod run_dir;
pub mod setup;

pub use checkpoint::{load_checkpoint, save_checkpoint, Checkpoint, OPTIMIZER_PREFIX};
pub use config::{Augmentation, DatasetKind, ImageSize, TrainConfig};
pub use error::TrainError;
pub use eval::{audit_run, evaluate, evaluate_run, SavedRun};
pub use fit::{EpochStats, StepEvent, Trainer};
pub use metrics::{evaluation, predictions, Evaluation};
pub use run_dir::RunDir;
pub use setup::{assemble, load_data, model_outputs, Assembly};

use crate::data::{Batches, Normalization};
use crate::nn::Module;
use crate::optim::LrSchedule;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One epoch's record in `metrics.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Test accuracy after the epoch.
    pub test_accuracy: f64,
    /// Wall time of the epoch's training (seconds).
    pub seconds: f64,
    /// Training throughput.
    pub images_per_second: f64,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
}

/// What `train` leaves behind, also written to `metrics.json`.
#[derive(Clone, Debug, Serialize)]
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
    /// Total wall time (seconds) of this invocation.
    pub seconds: f64,
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

/// Runs `f` on a pool of `threads` workers (default: one per core) whose threads, like the
/// calling thread, flush subnormal floats to zero.
pub fn with_threads<R: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> R + Send,
) -> Result<R, TrainError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .start_handler(|_| denormals::flush_denormals_on_this_thread())
        .build()
        .map_err(|e| TrainError::Invalid(format!("thread pool: {e}")))?;
    Ok(pool.install(|| {
        denormals::flush_denormals_on_this_thread();
        f()
    }))
}

/// Trains the run described by `config` (or resumes `config.resume`), writing
/// `config.json`, `metrics.json`, `model.safetensors` and the plots to the run directory,
/// and reporting progress to `on_event`.
pub fn train(
    config: &TrainConfig,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> Result<RunSummary, TrainError> {
    let (config, run) = match &config.resume {
        Some(dir) => {
            let run = RunDir::new(dir);
            let mut saved = run.read_config()?;
            saved.epochs = config.epochs;
            saved.threads = config.threads.or(saved.threads);
            saved.data_dir = saved.data_dir.or_else(|| config.data_dir.clone());
            saved.resume = Some(dir.clone());
            saved.stop_after = config.stop_after;
            (saved, run)
        }
        None => {
            let dir = config
                .out
                .clone()
                .unwrap_or_else(|| config.default_out_dir());
            (config.clone(), RunDir::new(dir))
        }
    };
    with_threads(config.threads, || run_epochs(&config, &run, on_event))?
}

fn run_epochs(
    config: &TrainConfig,
    run: &RunDir,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> Result<RunSummary, TrainError> {
    let started = Instant::now();
    run.create()?;
    let split = load_data(config)?;
    let counts = split.train.class_counts();
    let mut assembly = assemble(config, &split.train)?;
    let norm = Normalization::of(&split.train);
    let steps_per_epoch = split.train.len().div_ceil(config.batch_size);
    let schedule = LrSchedule {
        base: config.lr,
        schedule: config.schedule.clone(),
        warmup_steps: (config.warmup_epochs * steps_per_epoch as f64).round() as usize,
        steps_per_epoch,
        total_steps: steps_per_epoch * config.epochs,
    };
    let (mut first_epoch, mut step, mut records) = (0, 0, Vec::new());
    if config.resume.is_some() {
        (first_epoch, step) =
            run.load_training_state(&mut assembly.model, assembly.optimizer.as_mut())?;
        records = run.read_epoch_records(first_epoch);
    } else {
        let record = serde_json::json!({
            "train": config,
            "git_revision": run_dir::git_revision(Path::new(env!("CARGO_MANIFEST_DIR")))
                .unwrap_or_else(|| "unknown".into()),
            "threads": rayon::current_num_threads(),
            "tensorgrad_version": env!("CARGO_PKG_VERSION"),
            "command": std::env::args().collect::<Vec<_>>(),
            "train_class_counts": counts,
            "test_class_counts": split.test.class_counts(),
            "normalization": norm,
            "model_outputs": model_outputs(split.train.classes, assembly.loss.as_ref()),
            "parameters": assembly.model.num_parameters(),
        });
        run.write_json("config.json", &record)?;
    }
    on_event(&Event::Started {
        config,
        parameters: assembly.model.num_parameters(),
        train_images: split.train.len(),
        test_images: split.test.len(),
        class_counts: &counts,
        threads: rayon::current_num_threads(),
        out_dir: &run.path,
    });
    let mut trainer = Trainer::new(assembly, schedule);
    trainer.step = step;
    let augment = config.augmentation();
    let last_epoch = config
        .stop_after
        .map_or(config.epochs, |n| (first_epoch + n).min(config.epochs));
    for epoch in first_epoch..last_epoch {
        let batches = Batches::new(
            &split.train,
            config.batch_size,
            Some(config.seed),
            epoch,
            &norm,
            augment,
        );
        let stats = trainer.fit_epoch(batches, epoch, |s| on_event(&Event::Step(s)))?;
        step = trainer.step;
        let (test, _) = evaluate(
            &mut trainer.model,
            trainer.loss.as_ref(),
            &split.test,
            &norm,
            500,
        )?;
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: stats.mean_loss,
            test_accuracy: test.accuracy,
            seconds: stats.seconds,
            images_per_second: stats.images as f64 / stats.seconds,
            lr: if stats.batches == 0 {
                config.lr
            } else {
                stats.lr
            },
        };
        // Checkpoint and metrics after every epoch: an interrupted run loses at most one.
        run.save_checkpoint(&trainer.model, trainer.optimizer.as_ref(), epoch + 1, step)?;
        records.push(record);
        run.write_json("metrics.json", &serde_json::json!({ "epochs": records }))?;
        on_event(&Event::Epoch {
            record: records.last().expect("just pushed"),
            test: &test,
            epochs: config.epochs,
        });
    }
    let loss = trainer.loss.as_ref();
    let (test, _) = evaluate(&mut trainer.model, loss, &split.test, &norm, 500)?;
    let (train_eval, _) = evaluate(&mut trainer.model, loss, &split.train, &norm, 500)?;
    let summary = RunSummary {
        out_dir: run.path.clone(),
        epochs: records,
        test,
        train: train_eval,
        train_class_counts: counts,
        seconds: started.elapsed().as_secs_f64(),
    };
    run.write_json("metrics.json", &summary)?;
    plots::draw_run_plots(&run.path, &summary, &split.test.class_names)?;
    on_event(&Event::Finished(&summary));
    Ok(summary)
}
