//! The paper's experiments as one command (docs/EXPERIMENTS.md): the runs of E1–E4 are
//! planned from the protocol, trained (skipping those already done, resuming interrupted
//! ones), analysed (test metrics, the stationarity audit as trained and after a refit of
//! the last layer, E0b), and summarised per experiment and in `REPORT.md`.
//!
//! - [`plan`]: the runs an experiment consists of, with their configurations;
//! - [`train_planned`]: trains them, `jobs` at a time;
//! - [`analysis`]: one run's `result.json` (metrics, audits, the E0b refit);
//! - [`convex`]: E0, the convex case on pixels;
//! - [`report`]: tables, plots and `REPORT.md`.

pub mod analysis;
pub mod convex;
pub mod report;

use crate::data::imbalance::Imbalance;
use crate::data::{load_cifar10, load_idx_dir, Split};
use crate::loss::weights::ClassWeighting;
use crate::loss::{LossKind, LossOptions, WeightForm};
use crate::nn::models::ModelKind;
use crate::train::{
    prepare_split, run_dir::git_revision, train_until, Augmentation, DatasetKind, Event,
    RunSummary, TrainConfig, TrainError,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// One experiment of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Experiment {
    /// The conditions in the convex case (linear model on pixels, f64).
    E0,
    /// The conditions on learned features (last-layer refits of E1–E3).
    E0b,
    /// Balanced MNIST: SML vs LGL vs LGL-INR.
    E1,
    /// Binary imbalanced MNIST (4 vs 9): reweighting is deterministic.
    E2,
    /// Long-tailed MNIST.
    E3,
    /// CIFAR-10, balanced and long-tailed (needs the data).
    E4,
}

impl Experiment {
    /// Every experiment, in order.
    pub const ALL: [Experiment; 6] = [
        Experiment::E0,
        Experiment::E0b,
        Experiment::E1,
        Experiment::E2,
        Experiment::E3,
        Experiment::E4,
    ];

    /// Its name (`e0`, `e0b`, …), also its folder under the results.
    pub fn name(self) -> &'static str {
        match self {
            Experiment::E0 => "e0",
            Experiment::E0b => "e0b",
            Experiment::E1 => "e1",
            Experiment::E2 => "e2",
            Experiment::E3 => "e3",
            Experiment::E4 => "e4",
        }
    }

    /// The experiments whose trained networks it needs.
    pub fn trains(self) -> Vec<Experiment> {
        match self {
            Experiment::E0 => vec![],
            Experiment::E0b => vec![Experiment::E1, Experiment::E2, Experiment::E3],
            e => vec![e],
        }
    }
}

impl fmt::Display for Experiment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Experiment {
    type Err = crate::text::ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Experiment::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| {
                crate::text::ParseError::new(s, "expected e0, e0b, e1, e2, e3, e4 or all")
            })
    }
}

/// What to reproduce, and how.
#[derive(Clone, Debug)]
pub struct ReproduceConfig {
    /// The experiments asked for.
    pub experiments: Vec<Experiment>,
    /// Whether they were asked for as `all`: E4 is then left out, with a note, when no
    /// CIFAR-10 folder is given (asked for by name, it is an error).
    pub all: bool,
    /// Seeds of every configuration.
    pub seeds: Vec<u64>,
    /// Small data and few epochs: the whole protocol in minutes (a smoke test, not a result).
    pub quick: bool,
    /// Results folder (one subfolder per experiment).
    pub out: PathBuf,
    /// Worker threads of each run.
    pub threads: Option<usize>,
    /// Runs trained at the same time.
    pub jobs: usize,
    /// MNIST (IDX files).
    pub mnist_dir: PathBuf,
    /// CIFAR-10 (binary batches), for E4.
    pub cifar_dir: Option<PathBuf>,
}

impl ReproduceConfig {
    /// Epochs of a run of `experiment`.
    fn epochs(&self, experiment: Experiment) -> usize {
        match (self.quick, experiment) {
            (true, _) => 2,
            (false, Experiment::E4) => 30,
            (false, _) => 10,
        }
    }
}

/// One run of the protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlannedRun {
    /// The experiment it belongs to.
    pub experiment: Experiment,
    /// The data condition within the experiment (`balanced`, `rho=10`, …).
    pub group: String,
    /// The loss variant, as a folder-safe key (`lgl-inr-b1`).
    pub variant: String,
    /// The loss variant as the tables print it (`LGL-INR β=1`).
    pub label: String,
    /// Seed of data subsampling, initialisation and shuffling.
    pub seed: u64,
    /// The run's configuration (its `out` is the run folder).
    pub config: TrainConfig,
}

impl PlannedRun {
    /// The run folder.
    pub fn dir(&self) -> &Path {
        self.config
            .out
            .as_deref()
            .expect("planned runs have a folder")
    }
}

/// A loss variant of the protocol: folder key, table label, options.
struct Variant {
    key: &'static str,
    label: &'static str,
    options: LossOptions,
}

fn loss(name: &str) -> LossOptions {
    LossOptions::new(LossKind::from_str(name).expect("registered loss"))
}

fn variant(
    key: &'static str,
    label: &'static str,
    name: &str,
    edit: impl FnOnce(&mut LossOptions),
) -> Variant {
    let mut options = loss(name);
    edit(&mut options);
    Variant {
        key,
        label,
        options,
    }
}

/// E1: SML, LGL, LGL-INR with β ∈ {0, 1, 5}.
fn e1_variants() -> Vec<Variant> {
    vec![
        variant("sml", "SML", "sml", |_| {}),
        variant("lgl", "LGL", "lgl", |_| {}),
        variant("lgl-inr-b0", "LGL-INR β=0", "lgl-inr", |o| {
            o.beta = Some(0.0)
        }),
        variant("lgl-inr-b1", "LGL-INR β=1", "lgl-inr", |o| {
            o.beta = Some(1.0)
        }),
        variant("lgl-inr-b5", "LGL-INR β=5", "lgl-inr", |o| {
            o.beta = Some(5.0)
        }),
    ]
}

/// E2: unweighted LGL and inverse-frequency LGL in both weighted forms (one output).
fn e2_variants() -> Vec<Variant> {
    vec![
        variant("lgl", "LGL", "lgl", |_| {}),
        variant("lgl-inv-sample", "LGL inv. (sample)", "lgl", |o| {
            o.class_weights = Some(ClassWeighting::Inverse);
            o.weight_form = Some(WeightForm::Sample);
        }),
        variant("lgl-inv-posneg", "LGL inv. (pos-neg)", "lgl", |o| {
            o.class_weights = Some(ClassWeighting::Inverse);
            o.weight_form = Some(WeightForm::PosNeg);
        }),
    ]
}

/// E3/E4: the long-tail baselines and the paper's losses.
fn e3_variants() -> Vec<Variant> {
    vec![
        variant("sml", "SML", "sml", |_| {}),
        variant("sml-inv", "SML inv.", "sml", |o| {
            o.class_weights = Some(ClassWeighting::Inverse)
        }),
        variant("sml-cb", "SML CB β=0.9999", "sml", |o| {
            o.class_weights = Some(ClassWeighting::Effective(0.9999))
        }),
        variant("sml-la", "SML LA τ=1", "sml", |o| {
            o.logit_adjust = Some(1.0)
        }),
        variant("focal", "focal γ=2", "focal", |o| o.gamma = Some(2.0)),
        variant("lgl", "LGL", "lgl", |_| {}),
        variant("lgl-inv", "LGL inv.", "lgl", |o| {
            o.class_weights = Some(ClassWeighting::Inverse)
        }),
        variant("lgl-inr-b1", "LGL-INR β=1", "lgl-inr", |o| {
            o.beta = Some(1.0)
        }),
    ]
}

/// Data conditions of an experiment: group name and imbalance profile.
fn groups(experiment: Experiment) -> Vec<(String, Imbalance)> {
    let pair = |ratio: f64| Imbalance::Pair {
        positive: 4,
        negative: 9,
        ratio,
    };
    match experiment {
        Experiment::E1 => vec![("balanced".into(), Imbalance::None)],
        Experiment::E2 => [1.0, 10.0, 100.0]
            .into_iter()
            .map(|r| (format!("rho={r}"), pair(r)))
            .collect(),
        Experiment::E3 => [10.0, 100.0]
            .into_iter()
            .map(|r| (format!("rho={r}"), Imbalance::LongTail { ratio: r }))
            .collect(),
        Experiment::E4 => vec![
            ("balanced".into(), Imbalance::None),
            ("rho=100".into(), Imbalance::LongTail { ratio: 100.0 }),
        ],
        Experiment::E0 | Experiment::E0b => vec![],
    }
}

/// The runs of `experiment` (none for E0 and E0b, which train nothing of their own).
pub fn plan(
    config: &ReproduceConfig,
    experiment: Experiment,
) -> Result<Vec<PlannedRun>, TrainError> {
    let variants = match experiment {
        Experiment::E1 => e1_variants(),
        Experiment::E2 => e2_variants(),
        Experiment::E3 | Experiment::E4 => e3_variants(),
        Experiment::E0 | Experiment::E0b => return Ok(vec![]),
    };
    let cifar = experiment == Experiment::E4;
    let data_dir = if cifar {
        Some(config.cifar_dir.clone().ok_or_else(|| {
            TrainError::Invalid(
                "e4 trains on CIFAR-10, which is not shipped: give its folder with --data-dir"
                    .into(),
            )
        })?)
    } else {
        Some(config.mnist_dir.clone())
    };
    let mut runs = Vec::new();
    for (group, imbalance) in groups(experiment) {
        for v in &variants {
            for &seed in &config.seeds {
                let dir = config
                    .out
                    .join(experiment.name())
                    .join("runs")
                    .join(format!("{}-{}-s{seed}", group.replace('=', ""), v.key));
                let base = TrainConfig::default();
                let train_config = TrainConfig {
                    dataset: if cifar {
                        DatasetKind::Cifar10
                    } else {
                        DatasetKind::Mnist
                    },
                    data_dir: data_dir.clone(),
                    model: if cifar {
                        ModelKind::CifarCnn
                    } else {
                        ModelKind::Lenet
                    },
                    loss: v.options.clone(),
                    imbalance: imbalance.clone(),
                    epochs: config.epochs(experiment),
                    augment: if cifar {
                        Augmentation::CropFlip
                    } else {
                        Augmentation::None
                    },
                    seed,
                    threads: config.threads,
                    train_limit: config.quick.then_some(2000),
                    test_limit: config.quick.then_some(1000),
                    out: Some(dir),
                    overwrite: true,
                    ..base
                };
                runs.push(PlannedRun {
                    experiment,
                    group: group.clone(),
                    variant: v.key.to_string(),
                    label: v.label.to_string(),
                    seed,
                    config: train_config,
                });
            }
        }
    }
    Ok(runs)
}

/// What a trained run leaves for the analysis: `trained.json` in its folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainedRun {
    /// The planned run.
    pub run: PlannedRun,
    /// What training measured.
    pub summary: RunSummary,
    /// Worker threads it trained with.
    pub threads: usize,
    /// Commit of the source tree it was trained from.
    pub git_revision: Option<String>,
}

/// Name of a trained run's record in its folder.
pub const TRAINED_FILE: &str = "trained.json";

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
        /// Runs of this invocation still to train, this one included.
        left: usize,
        /// Estimated seconds until every run is trained (after the first run finishes).
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

/// Whether the run in `dir` has finished training (its `trained.json` exists).
pub fn is_trained(run: &PlannedRun) -> bool {
    run.dir().join(TRAINED_FILE).is_file()
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
    jobs: usize,
    stop: &AtomicBool,
    on_event: &(dyn Fn(&ReproduceEvent) + Sync),
) -> Result<(), TrainError> {
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
    drop((base, cifar_base));
    let total_units: f64 = units.iter().sum();
    struct Progress {
        done_units: f64,
        started_units: f64,
        busy_seconds: f64,
        left: usize,
        failure: Option<TrainError>,
    }
    let progress = Mutex::new(Progress {
        done_units: 0.0,
        started_units: 0.0,
        busy_seconds: 0.0,
        left: todo.len(),
        failure: None,
    });
    let next = AtomicUsize::new(0);
    let jobs = jobs.clamp(1, todo.len());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= todo.len() || stop.load(Ordering::SeqCst) {
                    return;
                }
                let run = todo[i];
                {
                    let mut p = progress.lock().expect("progress lock");
                    if p.failure.is_some() {
                        return;
                    }
                    // Seconds per unit so far, spread over the jobs running side by side.
                    let eta = (p.done_units > 0.0).then(|| {
                        p.busy_seconds / p.done_units * (total_units - p.started_units)
                            / jobs as f64
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
                let result = train_one(run, stop, on_event);
                let mut p = progress.lock().expect("progress lock");
                match result {
                    Ok(()) => {
                        let seconds = started.elapsed().as_secs_f64();
                        p.done_units += units[i];
                        p.busy_seconds += seconds;
                        p.left -= 1;
                        on_event(&ReproduceEvent::RunTrained { run, seconds });
                    }
                    Err(e) => {
                        p.failure.get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    let failure = progress.into_inner().expect("progress lock").failure;
    match failure {
        Some(e) => Err(e),
        None if stop.load(Ordering::SeqCst) => Err(TrainError::Invalid(
            "stopped by a signal; run the same command again to continue".into(),
        )),
        None => Ok(()),
    }
}

/// Trains (or resumes) one run and writes its `trained.json`.
fn train_one(
    run: &PlannedRun,
    stop: &AtomicBool,
    on_event: &(dyn Fn(&ReproduceEvent) + Sync),
) -> Result<(), TrainError> {
    let dir = run.dir().to_path_buf();
    let mut config = run.config.clone();
    if dir.join("model.safetensors").is_file() {
        config.resume = Some(dir.clone());
        config.overwrite = false;
    }
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
    let summary = train_until(&config, stop, &mut forward)?;
    let threads = config.threads.unwrap_or_else(rayon::current_num_threads);
    let trained = TrainedRun {
        run: run.clone(),
        summary,
        threads,
        git_revision: git_revision(),
    };
    write_json(&dir.join(TRAINED_FILE), &trained)
}

/// Analyses every trained run of `runs` that has no `result.json` yet, `jobs` at a time.
fn analyse_planned(
    runs: &[PlannedRun],
    config: &ReproduceConfig,
    on_event: &(dyn Fn(&ReproduceEvent) + Sync),
) -> Result<(), TrainError> {
    let todo: Vec<&PlannedRun> = runs
        .iter()
        .filter(|r| !r.dir().join(analysis::RESULT_FILE).is_file())
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
    let next = AtomicUsize::new(0);
    let failure = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..config.jobs.clamp(1, todo.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= todo.len() || failure.lock().expect("failure lock").is_some() {
                    return;
                }
                let run = todo[i];
                let base = match run.config.dataset {
                    DatasetKind::Cifar10 => cifar.as_ref(),
                    _ => mnist.as_ref(),
                };
                let label = format!(
                    "audit and last-layer refit of {} ({} of {})",
                    run.dir().display(),
                    i + 1,
                    todo.len()
                );
                on_event(&ReproduceEvent::Analysing(&label));
                let result = match base {
                    Some(b) => crate::train::with_threads(config.threads, || {
                        analysis::analyse(run.dir(), b).map(|_| ())
                    })
                    .and_then(|r| r),
                    None => Err(TrainError::Invalid("no data to analyse on".into())),
                };
                if let Err(e) = result {
                    failure.lock().expect("failure lock").get_or_insert(e);
                    return;
                }
            });
        }
    });
    match failure.into_inner().expect("failure lock") {
        Some(e) => Err(e),
        None => Ok(()),
    }
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
    if training.contains(&Experiment::E4) && config.cifar_dir.is_none() && config.all {
        training.retain(|&e| e != Experiment::E4);
        on_event(&ReproduceEvent::Note(
            "E4 left out: it trains on CIFAR-10, which is not shipped (give its folder with --data-dir)",
        ));
    }
    let mut runs = Vec::new();
    for &e in &training {
        runs.extend(plan(config, e)?);
    }
    train_planned(&runs, config.jobs, stop, on_event)?;
    analyse_planned(&runs, config, on_event)?;
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
