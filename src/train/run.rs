//! A whole run, on one process or as one rank of a data-parallel job: set up (resume or
//! new directory), train epoch by epoch with checkpoints, evaluate, write the outputs.

use super::checkpoint::decode_checkpoint;
use super::collective::{agree_on as agree, Collective};
use super::eval::evaluate_sharded;
use super::fit::{EpochEnd, Trainer};
use super::setup::{assemble_with, load_data, model_outputs, with_threads};
use super::{
    divergence, plots, run_dir, EpochRecord, Event, Progress, RunDir, RunSummary, TrainConfig,
    TrainError,
};
use crate::data::{Normalization, Split};
use crate::nn::{Architecture, Module};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// [`train_until`](super::train_until) as one rank of a data-parallel job (`comm`): every rank trains on its
/// shard of each global batch; rank 0 alone writes the run directory and reports events.
/// The ranks first check that they were given the same configuration and data; every
/// failure is agreed on by all ranks, so none waits forever for the others.
pub fn train_with(
    config: &TrainConfig,
    comm: Arc<dyn Collective>,
    stop: &AtomicBool,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> Result<RunSummary, TrainError> {
    train_model_with(config, &config.model, comm, stop, on_event)
}

/// [`train_with`] for the model `architecture` builds instead of `config.model`: any
/// [`Module`] gets the run directory, checkpoints, resume, evaluation and plots of the
/// built-in models. Its name is recorded in `config.json` and checked on resume.
pub fn train_model_with(
    config: &TrainConfig,
    architecture: &dyn Architecture,
    comm: Arc<dyn Collective>,
    stop: &AtomicBool,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> Result<RunSummary, TrainError> {
    // Checked before anything is serialised: a JSON round trip would turn a NaN option
    // into "not given" and train with the default.
    config.loss.validate()?;
    config.validate()?;
    // A new run's options must agree across ranks; a resumed run takes rank 0's saved one.
    if comm.size() > 1 && config.resume.is_none() {
        let identity = |c: &TrainConfig| {
            serde_json::to_vec(&TrainConfig {
                threads: None,
                ..c.clone()
            })
            .expect("configs serialise")
        };
        let mut root = identity(config);
        comm.broadcast(&mut root);
        if comm.any(root != identity(config)) {
            return Err(TrainError::Invalid(
                "the ranks were started with different configurations".into(),
            ));
        }
    }
    // Rank 0 resolves the run (a resumed configuration, the output directory); the others
    // receive its result.
    let resolved = if comm.is_root() {
        resolve_run(config)
    } else {
        Err(TrainError::Invalid(String::new()))
    };
    let root_failed = comm.any(comm.is_root() && resolved.is_err());
    if root_failed {
        return match resolved {
            Err(e) if comm.is_root() => Err(e),
            _ => Err(TrainError::Invalid(
                "rank 0 could not set up the run".into(),
            )),
        };
    }
    let mut message = match &resolved {
        Ok((c, run)) => {
            serde_json::to_vec(&(c, &run.path, c.stop_after)).expect("configs serialise")
        }
        Err(_) => Vec::new(),
    };
    comm.broadcast(&mut message);
    let (mut resolved_config, path, stop_after): (TrainConfig, PathBuf, Option<usize>) =
        serde_json::from_slice(&message).map_err(|e| TrainError::Invalid(e.to_string()))?;
    // Fields that are not recorded: rank 0's stop, this rank's own request flags.
    resolved_config.resume = config.resume.clone();
    resolved_config.allow_rank_change = config.allow_rank_change;
    resolved_config.stop_after = stop_after;
    resolved_config.threads = config.threads.or(resolved_config.threads);
    let run = RunDir::new(path);
    let valid = resolved_config.validate();
    if comm.any(valid.is_err()) {
        valid?;
        return Err(TrainError::Invalid(
            "the configuration is invalid on another rank".into(),
        ));
    }
    let threads = resolved_config.threads;
    with_threads(threads, || {
        run_epochs(&resolved_config, architecture, &run, &comm, stop, on_event)
    })?
}

/// The configuration a run trains with (the saved one, when resuming) and its directory;
/// refuses a non-empty directory for a new run unless overwriting.
fn resolve_run(config: &TrainConfig) -> Result<(TrainConfig, RunDir), TrainError> {
    match &config.resume {
        Some(dir) => {
            let run = RunDir::new(dir);
            let saved = run.read_config()?;
            let resumed = super::resume::resumed_config(&saved, config, dir, &|_| true)?;
            Ok((resumed, run))
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
            Ok((config.clone(), run))
        }
    }
}

/// Rank 0 alone writes; every rank agrees on every outcome before going on.
fn on_root(
    comm: &dyn Collective,
    f: &mut dyn FnMut() -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    agree(comm, if comm.is_root() { f() } else { Ok(()) })
}

/// A run, step by step: its data, its model (restored when resuming), the epochs, and
/// the final evaluation and outputs.
fn run_epochs(
    config: &TrainConfig,
    architecture: &dyn Architecture,
    run: &RunDir,
    comm_arc: &Arc<dyn Collective>,
    stop: &AtomicBool,
    on_event: &mut (dyn FnMut(&Event) + Send),
) -> Result<RunSummary, TrainError> {
    let comm: &dyn Collective = comm_arc.as_ref();
    let started = Instant::now();
    on_root(comm, &mut || run.create())?;
    let split = agree(comm, load_data(config))?;
    check_same_data(comm, &split)?;
    let counts = split.train.class_counts();
    let mut assembly = agree(comm, assemble_with(config, architecture, &split.train))?;
    let norm = Normalization::of(&split.train);
    let schedule = config.lr_schedule(split.train.len());
    let mut progress = Progress::default();
    if config.resume.is_some() {
        on_root(comm, &mut || run.check_architecture(architecture))?;
        progress = restore_progress(config, run, comm, &mut assembly)?;
        // A finished run resumed to its own length: nothing to train, nothing rewritten.
        // (A data-parallel job evaluates again: its ranks would have to agree first.)
        if comm.size() == 1 && progress.epoch == config.epochs && progress.partial.is_none() {
            if let Some(summary) = run.finished_summary(&progress) {
                on_event(&Event::Finished(&summary));
                return Ok(summary);
            }
        }
        let splits_exactly = assembly.loss.splits_exactly();
        on_root(comm, &mut || {
            run.record_resume(config, &progress, comm.size(), splits_exactly)
        })?;
    } else {
        let record = run_record(config, architecture, &split, &norm, &assembly, comm.size());
        on_root(comm, &mut || run.write_json("config.json", &record))?;
    }
    // What the run directory holds, for the messages of a run that stops on an error.
    let mut on_disk = (config.resume.is_some()
        && (progress.epoch > 0 || progress.partial.is_some()))
    .then(|| (progress.epoch, progress.partial.as_ref().map(|p| p.batches)));
    // metrics.json mirrors the checkpoint's records (it may lag after a kill).
    let records = serde_json::json!({ "epochs": progress.records });
    on_root(comm, &mut || run.write_json("metrics.json", &records))?;
    let mut report = |e: &Event| {
        if comm.is_root() {
            on_event(e)
        }
    };
    report(&Event::Started {
        config,
        parameters: assembly.model.num_parameters(),
        train_images: split.train.len(),
        test_images: split.test.len(),
        class_counts: &counts,
        threads: rayon::current_num_threads(),
        out_dir: &run.path,
        warnings: &norm.warnings(),
    });
    let mut trainer = Trainer::new(assembly, schedule);
    trainer.step = progress.step;
    trainer.comm = Arc::clone(comm_arc);
    let mut diverged = None;
    let last_epoch = config
        .stop_after
        .map_or(config.epochs, |n| (progress.epoch + n).min(config.epochs));
    for epoch in progress.epoch..last_epoch {
        let batches = config.epoch_batches(&split.train, &norm, epoch);
        let partial = progress.partial.take();
        let end = trainer
            .fit_epoch_from(batches, epoch, partial.as_ref(), stop, |s| {
                report(&Event::Step(s))
            })
            .map_err(|mut e| {
                if let TrainError::NonFinite { kept, .. } = &mut e {
                    *kept = Some(kept_checkpoint(on_disk));
                }
                e
            })?;
        let stats = match end {
            EpochEnd::Complete(stats) => stats,
            EpochEnd::Stopped(partial) => {
                return Err(checkpoint_interrupted(
                    config,
                    run,
                    &trainer,
                    &mut progress,
                    epoch,
                    partial,
                ))
            }
        };
        // The divergence rule, before this epoch's checkpoint replaces the last good one.
        let grew = progress
            .records
            .first()
            .and_then(|first| divergence::loss_rule(first.train_loss, epoch + 1, stats.mean_loss));
        if let Some(d) = grew {
            if !config.allow_divergence {
                return Err(TrainError::Diverged {
                    divergence: d,
                    kept: Some(format!(
                        "{}; resume it with a smaller learning rate (lr)",
                        kept_checkpoint(on_disk)
                    )),
                });
            }
            diverged.get_or_insert(d);
        }
        let (test, _) = evaluate_sharded(
            comm,
            trainer.model.as_mut(),
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
            focus: stats.focus,
        });
        progress.epoch = epoch + 1;
        progress.step = trainer.step;
        // The checkpoint carries the records: checkpoint and history change together, and
        // an interrupted run loses at most the epoch in progress.
        let records = serde_json::json!({ "epochs": progress.records });
        on_root(comm, &mut || {
            run.save_checkpoint(
                trainer.model.as_ref(),
                trainer.optimizer.as_ref(),
                &progress,
                config,
            )?;
            run.write_json("metrics.json", &records)
        })?;
        on_disk = Some((progress.epoch, None));
        report(&Event::Epoch {
            record: progress.records.last().expect("just pushed"),
            test: &test,
            epochs: config.epochs,
        });
    }
    let summary = finish(
        run,
        comm,
        &mut trainer,
        &split,
        &norm,
        progress,
        counts,
        started,
        diverged,
    )?;
    report(&Event::Finished(&summary));
    Ok(summary)
}

/// With several ranks: an error on every rank unless all loaded the same data.
fn check_same_data(comm: &dyn Collective, split: &Split) -> Result<(), TrainError> {
    if comm.size() == 1 {
        return Ok(());
    }
    let mut fingerprint = data_fingerprint(split).to_le_bytes().to_vec();
    let mine = fingerprint.clone();
    comm.broadcast(&mut fingerprint);
    agree(
        comm,
        if fingerprint == mine {
            Ok(())
        } else {
            Err(TrainError::Invalid(
                "the ranks loaded different data (check --data-dir on every machine)".into(),
            ))
        },
    )
}

/// The resumed run's model and optimizer state and its progress, from its checkpoint.
/// With several ranks, rank 0 reads the checkpoint and sends it: the other ranks need no
/// access to the run directory (no shared file system).
fn restore_progress(
    config: &TrainConfig,
    run: &RunDir,
    comm: &dyn Collective,
    assembly: &mut super::Assembly,
) -> Result<Progress, TrainError> {
    let progress = if comm.size() == 1 {
        run.load_training_state(assembly.model.as_mut(), assembly.optimizer.as_mut())?
    } else {
        let path = run.checkpoint_path();
        let bytes = if comm.is_root() {
            std::fs::read(&path).map_err(|e| TrainError::io(&path, e))
        } else {
            Ok(Vec::new())
        };
        let mut bytes = agree(comm, bytes)?;
        comm.broadcast(&mut bytes);
        let restored = decode_checkpoint(&bytes)
            .map_err(|reason| TrainError::Checkpoint {
                path: path.clone(),
                reason,
            })
            .and_then(|ck| {
                run.restore_training_state(
                    &ck,
                    assembly.model.as_mut(),
                    assembly.optimizer.as_mut(),
                )
            });
        agree(comm, restored)?
    };
    if progress.epoch > config.epochs {
        return Err(TrainError::Invalid(format!(
            "the run has already trained {} epochs, more than the {} asked for",
            progress.epoch, config.epochs
        )));
    }
    Ok(progress)
}

/// What a new run's `config.json` records: the configuration and where it ran.
fn run_record(
    config: &TrainConfig,
    architecture: &dyn Architecture,
    split: &Split,
    norm: &Normalization,
    assembly: &super::Assembly,
    ranks: usize,
) -> serde_json::Value {
    let mut record = serde_json::json!({
        "train": config.record(),
        "ranks": ranks,
        "git_revision": run_dir::git_revision()
            .unwrap_or_else(|| "unknown".into()),
        "threads": rayon::current_num_threads(),
        "tensorgrad_version": env!("CARGO_PKG_VERSION"),
        "command": std::env::args().collect::<Vec<_>>(),
        "train_class_counts": split.train.class_counts(),
        "test_class_counts": split.test.class_counts(),
        "normalization": norm,
        "model_outputs": model_outputs(split.train.classes, assembly.loss.as_ref()),
        "parameters": assembly.model.num_parameters(),
    });
    if !norm.constant_channels.is_empty() {
        record["warnings"] = norm.warnings().into();
    }
    // A model other than `config.model` is named beside it (built-in runs' files are
    // unchanged).
    if architecture.name() != config.model.name() {
        record["architecture"] = architecture.name().into();
    }
    record
}

/// What a stopped run's directory holds: `on_disk` is the checkpoint's (completed epochs,
/// batches of the next epoch when it was written mid-epoch).
fn kept_checkpoint(on_disk: Option<(usize, Option<usize>)>) -> String {
    match on_disk {
        None => "no epoch was completed, so the run has no checkpoint".into(),
        Some((0, None)) => "the run has no checkpoint".into(),
        Some((epochs, None)) => format!("the checkpoint of epoch {epochs} is kept"),
        Some((epochs, Some(batches))) => format!(
            "the checkpoint after batch {batches} of epoch {} is kept",
            epochs + 1
        ),
    }
}

/// Saves the checkpoint of a run stopped inside `epoch` (every step so far) and returns
/// the error that reports the interruption.
fn checkpoint_interrupted(
    config: &TrainConfig,
    run: &RunDir,
    trainer: &Trainer,
    progress: &mut Progress,
    epoch: usize,
    partial: super::PartialEpoch,
) -> TrainError {
    let batch = partial.batches;
    progress.step = trainer.step;
    progress.partial = Some(partial);
    let saved = on_root(trainer.comm.as_ref(), &mut || {
        run.save_checkpoint(
            trainer.model.as_ref(),
            trainer.optimizer.as_ref(),
            progress,
            config,
        )
    });
    match saved {
        Err(e) => e,
        Ok(()) => TrainError::Interrupted {
            epoch: epoch + 1,
            batch,
            dir: run.path.clone(),
        },
    }
}

/// The final evaluation on the test and the training set, `metrics.json` and the plots.
#[allow(clippy::too_many_arguments)]
fn finish(
    run: &RunDir,
    comm: &dyn Collective,
    trainer: &mut Trainer,
    split: &Split,
    norm: &Normalization,
    progress: Progress,
    counts: Vec<usize>,
    started: Instant,
    diverged: Option<divergence::Divergence>,
) -> Result<RunSummary, TrainError> {
    let loss = trainer.loss.as_ref();
    let model = trainer.model.as_mut();
    let (test, _) = evaluate_sharded(comm, model, loss, &split.test, norm, 500)?;
    let (train_eval, _) = evaluate_sharded(comm, model, loss, &split.train, norm, 500)?;
    let divergence = diverged.or_else(|| {
        divergence::accuracy_rule(test.balanced_accuracy, split.test.classes, progress.epoch)
    });
    let summary = RunSummary {
        divergence,
        out_dir: run.path.clone(),
        epochs: progress.records,
        test,
        train: train_eval,
        train_class_counts: counts,
        seconds: started.elapsed().as_secs_f64(),
    };
    on_root(comm, &mut || {
        run.write_json("metrics.json", &summary)?;
        plots::draw_run_plots(&run.path, &summary, &split.test.class_names)
    })?;
    Ok(summary)
}

/// A hash of the data a rank loaded (labels, shapes, pixels), to check that all ranks
/// train on the same data.
fn data_fingerprint(split: &Split) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for d in [&split.train, &split.test] {
        (d.shape, d.classes, &d.labels, &d.pixels).hash(&mut h);
    }
    h.finish()
}
