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
pub use config::{Augmentation, ConfigError, DatasetKind, ImageSize, TrainConfig};
pub use error::TrainError;
pub use eval::{audit_run, evaluate, evaluate_run, SavedRun};
pub use fit::{EpochEnd, EpochStats, StepEvent, Trainer};
pub use metrics::{evaluation, predictions, Evaluation};
pub use run_dir::{PartialEpoch, Progress, RunDir};
pub use setup::{assemble, load_data, model_outputs, with_threads, Assembly};

use crate::data::{Batches, Normalization};
use crate::nn::Module;
use crate::optim::LrSchedule;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
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
    /// Wall time of the epoch's training (seconds); `None` when it was lost (a resumed run
    /// whose `metrics.json` was missing: the checkpoint keeps only deterministic values).
    pub seconds: Option<f64>,
    /// Training throughput (images/s); `None` as `seconds`.
    pub images_per_second: Option<f64>,
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
            let run = RunDir::new(dir);
            if run.is_non_empty() {
                if !config.overwrite {
                    return Err(TrainError::OutNotEmpty(run.path.clone()));
                }
                run.clear()?;
            }
            (config.clone(), run)
        }
    };
    config.validate()?;
    with_threads(config.threads, || run_epochs(&config, &run, stop, on_event))?
}

fn run_epochs(
    config: &TrainConfig,
    run: &RunDir,
    stop: &AtomicBool,
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
    let mut progress = Progress::default();
    if config.resume.is_some() {
        progress = run.load_training_state(&mut assembly.model, assembly.optimizer.as_mut())?;
        if progress.epoch > config.epochs {
            return Err(TrainError::Invalid(format!(
                "the run has already trained {} epochs, more than the {} asked for",
                progress.epoch, config.epochs
            )));
        }
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
    // metrics.json mirrors the checkpoint's records (it may lag after a kill).
    run.write_json(
        "metrics.json",
        &serde_json::json!({ "epochs": progress.records }),
    )?;
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
    trainer.step = progress.step;
    let augment = config.augmentation();
    let last_epoch = config
        .stop_after
        .map_or(config.epochs, |n| (progress.epoch + n).min(config.epochs));
    for epoch in progress.epoch..last_epoch {
        let batches = Batches::new(
            &split.train,
            config.batch_size,
            Some(config.seed),
            epoch,
            &norm,
            augment,
        );
        let partial = progress.partial.take();
        let end = trainer.fit_epoch_from(batches, epoch, partial.as_ref(), stop, |s| {
            on_event(&Event::Step(s))
        })?;
        let stats = match end {
            EpochEnd::Complete(stats) => stats,
            EpochEnd::Stopped(partial) => {
                let batch = partial.batches;
                progress.step = trainer.step;
                progress.partial = Some(partial);
                run.save_checkpoint(
                    &trainer.model,
                    trainer.optimizer.as_ref(),
                    &progress,
                    config,
                )?;
                return Err(TrainError::Interrupted {
                    epoch: epoch + 1,
                    batch,
                    dir: run.path.clone(),
                });
            }
        };
        let (test, _) = evaluate(
            &mut trainer.model,
            trainer.loss.as_ref(),
            &split.test,
            &norm,
            500,
        )?;
        progress.records.push(EpochRecord {
            epoch: epoch + 1,
            train_loss: stats.mean_loss,
            test_accuracy: test.accuracy,
            seconds: Some(stats.seconds),
            images_per_second: Some(stats.images as f64 / stats.seconds),
            lr: if stats.batches == 0 {
                config.lr
            } else {
                stats.lr
            },
        });
        progress.epoch = epoch + 1;
        progress.step = trainer.step;
        // The checkpoint carries the records: checkpoint and history change together, and
        // an interrupted run loses at most the epoch in progress.
        run.save_checkpoint(
            &trainer.model,
            trainer.optimizer.as_ref(),
            &progress,
            config,
        )?;
        run.write_json(
            "metrics.json",
            &serde_json::json!({ "epochs": progress.records }),
        )?;
        on_event(&Event::Epoch {
            record: progress.records.last().expect("just pushed"),
            test: &test,
            epochs: config.epochs,
        });
    }
    let loss = trainer.loss.as_ref();
    let (test, _) = evaluate(&mut trainer.model, loss, &split.test, &norm, 500)?;
    let (train_eval, _) = evaluate(&mut trainer.model, loss, &split.train, &norm, 500)?;
    let summary = RunSummary {
        out_dir: run.path.clone(),
        epochs: progress.records,
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
