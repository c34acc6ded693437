//! The paper's experiments as one command (docs/EXPERIMENTS.md, version 2): the runs of
//! the learning-rate sweep and E1–E5 are planned from the protocol, trained in stages (the
//! sweep, then E1 and E2 at the chosen rates, then E3–E5 with E1's best β), skipping those
//! already done and resuming interrupted ones, analysed (test metrics, the stationarity
//! audit as trained and after a refit of the last layer, E0b), and summarised per
//! experiment and in `REPORT.md`.
//!
//! - [`plan`]: the runs an experiment consists of, with their configurations;
//! - [`train_planned`]: trains them, `jobs` at a time, each recording its provenance;
//! - [`analysis`]: one run's `result.json` (metrics, audits, the E0b refit);
//! - [`convex`]: E0, the convex case on pixels;
//! - [`report`]: tables, plots and `REPORT.md`.

pub mod analysis;
mod choices;
pub mod claims;
pub mod convex;
pub mod e0;
pub mod e2;
pub mod evidence;
pub mod markdown;
pub mod protocol;
mod queue;
mod records;
pub mod refit;
pub mod report;
pub mod sections;
pub mod stats;
mod variants;
pub mod verdicts;

pub use protocol::{plan, Experiment, PlannedRun, ReproduceConfig, VariantKey};

use crate::data::{load_cifar10, load_idx_dir, Split};
use crate::train::{
    prepare_split, run_dir::git_revision, train_until, DatasetKind, Event, TrainError,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub use records::{
    cpu_model, read_outcome, FailedRun, Provenance, RunOutcome, TrainedRun, FAILED_FILE,
    TRAINED_FILE,
};

/// Reads a JSON file.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::RunConfig {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Writes a JSON file atomically (temporary file, then rename).
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).expect("results serialise");
    write_text(path, &text)
}

/// Writes a text file atomically (the checkpoints' synced temporary file and rename),
/// creating its folder.
pub fn write_text(path: &Path, text: &str) -> Result<(), TrainError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
    }
    crate::train::checkpoint::write_atomically(path, text.as_bytes())
}

/// Progress of a reproduction, for a console or a log.
#[derive(Debug)]
pub enum ReproduceEvent<'a> {
    /// A run starts training (or resumes).
    RunStarted {
        /// The run.
        run: &'a PlannedRun,
        /// Runs of this stage (the sweep; E1 and E2; E3–E5) still to train, this one
        /// included.
        left: usize,
        /// Estimated seconds until every run of this stage is trained and analysed (after
        /// the first run finishes).
        eta_seconds: Option<f64>,
        /// Whether it continues an interrupted run.
        resumed: bool,
    },
    /// A run finished an epoch.
    Epoch {
        /// The run.
        run: &'a PlannedRun,
        /// The epoch just finished.
        epoch: usize,
        /// Its mean training loss.
        train_loss: f64,
        /// Test accuracy after it.
        test_accuracy: f64,
    },
    /// A run finished training.
    RunTrained {
        /// The run.
        run: &'a PlannedRun,
        /// Its wall time.
        seconds: f64,
    },
    /// Runs that were already trained and are not trained again.
    Skipped {
        /// How many.
        runs: usize,
    },
    /// A step of the analysis (a run's audits and refit, E0, a report).
    Analysing(&'a str),
    /// Something the user should know (an experiment left out, and why).
    Note(&'a str),
}

/// Whether the run has finished training (its `trained.json` or `failed.json` exists).
pub fn is_trained(run: &PlannedRun) -> bool {
    run.dir().join(TRAINED_FILE).is_file() || run.dir().join(FAILED_FILE).is_file()
}

/// The configuration as a run records it, without what may differ between invocations of
/// the same run.
fn identity(config: &crate::train::TrainConfig) -> serde_json::Value {
    let mut v = config.record();
    if let Some(fields) = v.as_object_mut() {
        // Where the checkout and the data are, and the threads, may change between
        // invocations of the same run.
        for field in ["threads", "out", "data_dir"] {
            fields.remove(field);
        }
    }
    v
}

/// An error unless every finished run of `runs` was trained as planned now (a plan that
/// changed since would otherwise mix its old runs into the new report) and, unless
/// `allow_mixed` is set, by a binary of one revision.
pub fn check_finished(runs: &[PlannedRun], allow_mixed: bool) -> Result<(), TrainError> {
    let mut revisions: Vec<(String, PathBuf)> = Vec::new();
    for run in runs {
        let Some(outcome) = read_outcome(run.dir())? else {
            continue;
        };
        if identity(&outcome.run().config) != identity(&run.config) {
            return Err(TrainError::Invalid(format!(
                "{} holds a run trained with another configuration than the protocol plans now; move it away (or use another --out) to train it as planned",
                run.dir().display()
            )));
        }
        let revision = outcome.revision().unwrap_or("unknown").to_string();
        if !revisions.iter().any(|(r, _)| *r == revision) {
            revisions.push((revision, run.dir().to_path_buf()));
        }
    }
    // Runs still to train will record this binary's revision.
    if let Some(todo) = runs.iter().find(|r| !is_trained(r)) {
        let revision = git_revision().unwrap_or_else(|| "unknown".into());
        if !revisions.iter().any(|(r, _)| *r == revision) {
            revisions.push((revision, todo.dir().to_path_buf()));
        }
    }
    if revisions.len() > 1 && !allow_mixed {
        let list: Vec<String> = revisions
            .iter()
            .map(|(r, d)| format!("{r} (e.g. {})", d.display()))
            .collect();
        return Err(TrainError::Invalid(format!(
            "the results mix runs of {} binary revisions: {}; give --allow-mixed-revisions to report them together anyway",
            revisions.len(),
            list.join(", ")
        )));
    }
    Ok(())
}

/// Train-set images × epochs of `run`: the unit of the ETA.
fn work_units(run: &PlannedRun, base: Option<&Split>) -> f64 {
    let images = base
        .and_then(|b| prepare_split(&run.config, b).ok())
        .map_or(60_000, |s| s.train.len());
    (images * run.config.epochs) as f64
}

/// Trains every run of `runs` not trained yet, `jobs` at a time; each finished run gets its
/// `trained.json`. An interrupted run (a checkpoint without `trained.json`) is resumed.
pub fn train_planned(
    runs: &[PlannedRun],
    config: &ReproduceConfig,
    stop: &AtomicBool,
    on_event: &(dyn Fn(&ReproduceEvent) + Sync),
) -> Result<(), TrainError> {
    let jobs = config.jobs;
    let todo: Vec<&PlannedRun> = runs.iter().filter(|r| !is_trained(r)).collect();
    if todo.len() < runs.len() {
        on_event(&ReproduceEvent::Skipped {
            runs: runs.len() - todo.len(),
        });
    }
    if todo.is_empty() {
        return Ok(());
    }
    // The ETA weighs runs by their images × epochs, counted on the loaded data.
    let base = todo
        .iter()
        .find(|r| r.config.dataset == DatasetKind::Mnist)
        .and_then(|r| load_idx_dir(r.config.data_dir.as_deref()?).ok());
    let cifar_base = todo
        .iter()
        .find(|r| r.config.dataset == DatasetKind::Cifar10)
        .and_then(|r| load_cifar10(r.config.data_dir.as_deref()?).ok());
    let units: Vec<f64> = todo
        .iter()
        .map(|r| {
            let b = match r.config.dataset {
                DatasetKind::Cifar10 => cifar_base.as_ref(),
                _ => base.as_ref(),
            };
            work_units(r, b)
        })
        .collect();
    let total_units: f64 = units.iter().sum();
    struct Progress {
        done_units: f64,
        started_units: f64,
        busy_seconds: f64,
        left: usize,
    }
    let progress = Mutex::new(Progress {
        done_units: 0.0,
        started_units: 0.0,
        busy_seconds: 0.0,
        left: todo.len(),
    });
    let jobs = jobs.clamp(1, todo.len());
    queue::for_each_job(todo.len(), jobs, stop, |i| {
        let run = todo[i];
        {
            let mut p = progress.lock().expect("progress lock");
            // Seconds per unit so far, spread over the jobs running side by side.
            let eta = (p.done_units > 0.0).then(|| {
                p.busy_seconds / p.done_units * (total_units - p.started_units) / jobs as f64
            });
            p.started_units += units[i];
            on_event(&ReproduceEvent::RunStarted {
                run,
                left: p.left,
                eta_seconds: eta,
                resumed: run.dir().join("model.safetensors").is_file(),
            });
        }
        let started = Instant::now();
        train_one(run, config, stop, on_event)?;
        // Each run is analysed as soon as it is trained, in the same job, so the ETA (the
        // seconds per unit so far) covers the analysis too.
        if !config.train_only
            && run.experiment != Experiment::LrSweep
            && run.dir().join(TRAINED_FILE).is_file()
            && !stop.load(Ordering::SeqCst)
        {
            let b = match run.config.dataset {
                DatasetKind::Cifar10 => cifar_base.as_ref(),
                _ => base.as_ref(),
            };
            if let Some(b) = b {
                let label = format!("audit and last-layer refit of {}", run.dir().display());
                on_event(&ReproduceEvent::Analysing(&label));
                crate::train::with_threads(config.threads, || {
                    analysis::analyse(run.dir(), b).map(|_| ())
                })??;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut p = progress.lock().expect("progress lock");
        p.done_units += units[i];
        p.busy_seconds += seconds;
        p.left -= 1;
        on_event(&ReproduceEvent::RunTrained { run, seconds });
        Ok(())
    })?;
    if stop.load(Ordering::SeqCst) {
        return Err(TrainError::Invalid(
            "stopped by a signal; run the same command again to continue".into(),
        ));
    }
    Ok(())
}

/// Trains (or resumes) one run and writes its `trained.json`, or its `failed.json` when
/// the loss became non-finite.
fn train_one(
    run: &PlannedRun,
    reproduce: &ReproduceConfig,
    stop: &AtomicBool,
    on_event: &(dyn Fn(&ReproduceEvent) + Sync),
) -> Result<(), TrainError> {
    let dir = run.dir().to_path_buf();
    let mut config = run.config.clone();
    let resumed = dir.join("model.safetensors").is_file();
    if resumed {
        config.resume = Some(dir.clone());
        config.overwrite = false;
    }
    let started = Instant::now();
    let mut forward = |event: &Event| {
        if let Event::Epoch { record, .. } = event {
            on_event(&ReproduceEvent::Epoch {
                run,
                epoch: record.epoch,
                train_loss: record.train_loss,
                test_accuracy: record.test_accuracy,
            });
        }
    };
    let result = train_until(&config, stop, &mut forward);
    let threads = config.threads.unwrap_or_else(rayon::current_num_threads);
    let provenance = Provenance {
        command: reproduce.command.clone(),
        jobs: reproduce.jobs,
        cpu_model: cpu_model(),
        wall_seconds: started.elapsed().as_secs_f64(),
        resumed,
    };
    match result {
        Ok(summary) => write_json(
            &dir.join(TRAINED_FILE),
            &TrainedRun {
                run: run.clone(),
                summary,
                threads,
                git_revision: git_revision(),
                provenance,
            },
        ),
        // A non-finite loss ends the run: the protocol counts it as diverged.
        Err(e @ TrainError::NonFinite { .. }) => {
            #[derive(Deserialize)]
            struct Metrics {
                epochs: Vec<crate::train::EpochRecord>,
            }
            let epochs = read_json::<Metrics>(&dir.join("metrics.json"))
                .map(|m| m.epochs)
                .unwrap_or_default();
            write_json(
                &dir.join(FAILED_FILE),
                &FailedRun {
                    run: run.clone(),
                    error: e.to_string(),
                    epochs,
                    threads,
                    git_revision: git_revision(),
                    provenance,
                },
            )
        }
        Err(e) => Err(e),
    }
}

/// Analyses every trained run of `runs` that has no `result.json` yet, `jobs` at a time.
fn analyse_planned(
    runs: &[PlannedRun],
    config: &ReproduceConfig,
    on_event: &(dyn Fn(&ReproduceEvent) + Sync),
) -> Result<(), TrainError> {
    let todo: Vec<&PlannedRun> = runs
        .iter()
        .filter(|r| {
            r.dir().join(TRAINED_FILE).is_file() && !r.dir().join(analysis::RESULT_FILE).is_file()
        })
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let mnist = todo
        .iter()
        .any(|r| r.config.dataset == DatasetKind::Mnist)
        .then(|| load_idx_dir(&config.mnist_dir))
        .transpose()?;
    let cifar = match (
        &config.cifar_dir,
        todo.iter()
            .any(|r| r.config.dataset == DatasetKind::Cifar10),
    ) {
        (Some(dir), true) => Some(load_cifar10(dir)?),
        _ => None,
    };
    // ETA: the mean seconds of the analyses finished so far, spread over the jobs.
    let done = Mutex::new((0usize, 0.0f64));
    let jobs = config.jobs.clamp(1, todo.len());
    queue::for_each_job(todo.len(), jobs, &AtomicBool::new(false), |i| {
        let run = todo[i];
        let base = match run.config.dataset {
            DatasetKind::Cifar10 => cifar.as_ref(),
            _ => mnist.as_ref(),
        };
        let eta = {
            let (n, seconds) = *done.lock().expect("analysis progress");
            (n > 0).then(|| seconds / n as f64 * (todo.len() - i) as f64 / jobs as f64)
        };
        let label = format!(
            "audit and last-layer refit of {} ({} of {}{})",
            run.dir().display(),
            i + 1,
            todo.len(),
            eta.map_or(String::new(), |s| format!(", ETA {s:.0} s"))
        );
        on_event(&ReproduceEvent::Analysing(&label));
        let started = Instant::now();
        let result = match base {
            Some(b) => crate::train::with_threads(config.threads, || {
                analysis::analyse(run.dir(), b).map(|_| ())
            })?,
            None => Err(TrainError::Invalid("no data to analyse on".into())),
        };
        let mut d = done.lock().expect("analysis progress");
        d.0 += 1;
        d.1 += started.elapsed().as_secs_f64();
        result
    })
}

/// What a reproduction did.
#[derive(Debug)]
pub struct ReproduceOutcome {
    /// Runs planned (trained now or earlier).
    pub runs: usize,
    /// The claims' verdicts in `REPORT.md`.
    pub verdicts: Vec<report::Verdict>,
    /// Wall time of this invocation (seconds).
    pub seconds: f64,
    /// `REPORT.md`.
    pub report: PathBuf,
}

/// Runs the experiments of `config`: trains what is not trained (resuming interrupted
/// runs), analyses what is not analysed, runs E0 unless done, and writes every
/// experiment's tables and plots and `REPORT.md`. `stop` (set by a signal handler) ends
/// training after the current step of every running run, each with its checkpoint.
pub fn reproduce(
    config: &ReproduceConfig,
    stop: &AtomicBool,
    on_event: &(dyn Fn(&ReproduceEvent) + Sync),
) -> Result<ReproduceOutcome, TrainError> {
    let started = Instant::now();
    let mut training: Vec<Experiment> =
        config.experiments.iter().flat_map(|e| e.trains()).collect();
    training.sort();
    training.dedup();
    if training.contains(&Experiment::E4) && config.cifar_dir.is_none() {
        if !config.all {
            // Before anything trains: the stages before E4's would otherwise run first.
            return Err(TrainError::Invalid(
                "e4 trains on CIFAR-10, which is not shipped: give its folder with --data-dir"
                    .into(),
            ));
        }
        training.retain(|&e| e != Experiment::E4);
        on_event(&ReproduceEvent::Note(
            "E4 left out: it trains on CIFAR-10, which is not shipped (give its folder with --data-dir)",
        ));
    }
    // Stage by stage: each stage's plan reads the results of the one before.
    let mut runs = Vec::new();
    for stage in 0..=2 {
        let mut this = Vec::new();
        for &e in training.iter().filter(|e| e.stage() == stage) {
            this.extend(plan(config, e)?);
        }
        check_finished(&this, config.allow_mixed_revisions)?;
        train_planned(&this, config, stop, on_event)?;
        runs.extend(this);
    }
    check_finished(&runs, config.allow_mixed_revisions)?;
    // E0 fits its linear models here, with the training, so that its result records the
    // same binary as the runs.
    let convex = if config.experiments.contains(&Experiment::E0) {
        let path = config.out.join("e0").join("result.json");
        if path.is_file() {
            Some(read_json(&path)?)
        } else {
            on_event(&ReproduceEvent::Analysing(
                "E0: linear model on MNIST pixels, f64",
            ));
            let split = load_idx_dir(&config.mnist_dir)?;
            let result =
                crate::train::with_threads(config.threads, || convex::run_convex(config, &split))??;
            write_json(&path, &result)?;
            Some(result)
        }
    } else {
        let path = config.out.join("e0").join("result.json");
        path.is_file().then(|| read_json(&path)).transpose()?
    };
    if config.train_only {
        return Ok(ReproduceOutcome {
            runs: runs.len(),
            verdicts: Vec::new(),
            seconds: started.elapsed().as_secs_f64(),
            report: config.out.join("REPORT.md"),
        });
    }
    // The sweep's networks only choose rates: they are not audited.
    let analysed: Vec<PlannedRun> = runs
        .iter()
        .filter(|r| r.experiment != Experiment::LrSweep)
        .cloned()
        .collect();
    analyse_planned(&analysed, config, on_event)?;
    on_event(&ReproduceEvent::Analysing("tables, plots and REPORT.md"));
    let seconds = started.elapsed().as_secs_f64();
    let verdicts = report::write_report(config, convex.as_ref(), seconds)?;
    Ok(ReproduceOutcome {
        runs: runs.len(),
        verdicts,
        seconds,
        report: config.out.join("REPORT.md"),
    })
}
