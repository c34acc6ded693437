//! The protocol of docs/EXPERIMENTS.md (version 2) as data: the experiments, their data
//! conditions, the loss variants (each with a typed [`VariantKey`] that the verdict rules
//! select by, never by a display label), and [`plan`], which turns them into runs with
//! their configurations.
//!
//! Two choices are made from earlier results, so the plan of a later experiment reads the
//! runs of an earlier one: each loss's learning rate from the sweep ([`chosen_lrs`]), and
//! LGL-INR's β for E3–E5 from E1 ([`best_beta`]).

use crate::data::imbalance::Imbalance;
use crate::nn::models::ModelKind;
use crate::optim::Schedule;
use crate::train::{Augmentation, DatasetKind, TrainConfig, TrainError};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A loss variant's key: its folder name (`lgl-inr-b1`) and the identity the report's
/// rules select runs by. The variants the rules name are constants here, next to their
/// definitions in the plan, so a rule cannot drift from the runs it reads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VariantKey(Cow<'static, str>);

impl VariantKey {
    /// Softmax cross-entropy.
    pub const SML: VariantKey = VariantKey::new("sml");
    /// Softmax with inverse-frequency weights.
    pub const SML_INV: VariantKey = VariantKey::new("sml-inv");
    /// One-vs-all logistic loss.
    pub const LGL: VariantKey = VariantKey::new("lgl");
    /// LGL-INR with β = 1.
    pub const LGL_INR_B1: VariantKey = VariantKey::new("lgl-inr-b1");
    /// E2's LGL with inverse-frequency per-sample weights.
    pub const LGL_INV_SAMPLE: VariantKey = VariantKey::new("lgl-inv-sample");
    /// E2's LGL with inverse-frequency positive/negative weights.
    pub const LGL_INV_POSNEG: VariantKey = VariantKey::new("lgl-inv-posneg");
    /// LGL with inverse-frequency (per-sample) weights, E3–E5.
    pub const LGL_INV: VariantKey = VariantKey::new("lgl-inv");
    /// Logit-adjusted softmax (τ = 1).
    pub const SML_LA: VariantKey = VariantKey::new("sml-la");
    /// Softmax focal loss (γ = 2).
    pub const FOCAL: VariantKey = VariantKey::new("focal");
    /// LGL-INR with β = 1 trained at the common learning rate 0.01 (E3), beside its own.
    pub const LGL_INR_B1_COMMON_LR: VariantKey = VariantKey::new("lgl-inr-b1-lr0.01");

    /// A key from a folder-safe name.
    pub const fn new(key: &'static str) -> Self {
        VariantKey(Cow::Borrowed(key))
    }

    /// The key as text (the run folder's suffix).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the variant weights the classes by inverse frequency (E2's weighted runs).
    pub fn is_inverse_weighted(&self) -> bool {
        *self == Self::LGL_INV_SAMPLE || *self == Self::LGL_INV_POSNEG || *self == Self::SML_INV
    }

    /// LGL-INR with β = `beta` (E1's variants, and the learning-rate sweep's).
    pub fn lgl_inr(beta: f64) -> VariantKey {
        VariantKey(Cow::Owned(format!("lgl-inr-b{beta}")))
    }

    /// Whether the variant is an LGL-INR one.
    pub fn is_lgl_inr(&self) -> bool {
        self.0.starts_with("lgl-inr")
    }
}

impl fmt::Display for VariantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One experiment of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Experiment {
    /// The conditions in the convex case (linear model on pixels, f64).
    E0,
    /// The conditions on learned features (last-layer refits of E1–E3 and E5).
    E0b,
    /// Each loss's learning rate, chosen on a validation split of balanced MNIST.
    LrSweep,
    /// Balanced MNIST: SML vs LGL vs LGL-INR, and LGL-INR's focusing per β.
    E1,
    /// Binary imbalanced MNIST (4 vs 9): reweighting is deterministic.
    E2,
    /// Long-tailed MNIST.
    E3,
    /// CIFAR-10, balanced and long-tailed (needs the data).
    E4,
    /// A deeper network (resnet20) on long-tailed MNIST.
    E5,
}

impl Experiment {
    /// Every experiment, in order.
    pub const ALL: [Experiment; 8] = [
        Experiment::E0,
        Experiment::E0b,
        Experiment::LrSweep,
        Experiment::E1,
        Experiment::E2,
        Experiment::E3,
        Experiment::E4,
        Experiment::E5,
    ];

    /// Its name (`e0`, `lr-sweep`, …), also its folder under the results.
    pub fn name(self) -> &'static str {
        match self {
            Experiment::E0 => "e0",
            Experiment::E0b => "e0b",
            Experiment::LrSweep => "lr-sweep",
            Experiment::E1 => "e1",
            Experiment::E2 => "e2",
            Experiment::E3 => "e3",
            Experiment::E4 => "e4",
            Experiment::E5 => "e5",
        }
    }

    /// The experiments whose trained networks it needs, its own included: every trained
    /// experiment needs the learning-rate sweep, and those with LGL-INR's chosen β need E1.
    pub fn trains(self) -> Vec<Experiment> {
        use Experiment::*;
        match self {
            E0 => vec![],
            E0b => vec![LrSweep, E1, E2, E3, E5],
            LrSweep => vec![LrSweep],
            E1 | E2 => vec![LrSweep, self],
            E3 | E4 | E5 => vec![LrSweep, E1, self],
        }
    }

    /// When its runs can be planned: after the sweep (stage 1) and after E1 (stage 2).
    pub fn stage(self) -> usize {
        match self {
            Experiment::E0 | Experiment::E0b | Experiment::LrSweep => 0,
            Experiment::E1 | Experiment::E2 => 1,
            Experiment::E3 | Experiment::E4 | Experiment::E5 => 2,
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
                crate::text::ParseError::new(
                    s,
                    "expected e0, e0b, lr-sweep, e1, e2, e3, e4, e5 or all",
                )
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
    /// Seeds of every configuration (E5 uses the first three; the sweep the first).
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
    /// The command line that asked for this, as every run records it.
    pub command: Vec<String>,
    /// Train and report although runs of other binary revisions are in the results (the
    /// report then says so); otherwise that is an error.
    pub allow_mixed_revisions: bool,
    /// Train (and fit E0) only: no analysis and no report, e.g. to analyse elsewhere.
    pub train_only: bool,
}

impl ReproduceConfig {
    /// Epochs of a run of `experiment`.
    fn epochs(&self, experiment: Experiment) -> usize {
        match (self.quick, experiment) {
            (true, _) => 2,
            (false, Experiment::LrSweep) => 5,
            (false, Experiment::E4) => 30,
            (false, _) => 10,
        }
    }
}

/// The learning rates of the sweep (docs/EXPERIMENTS.md, E1).
pub const SWEEP_LRS: [f64; 5] = [0.0025, 0.005, 0.01, 0.02, 0.04];

/// The sweep's rates in quick mode (a smoke test of the choice, not a choice).
const QUICK_SWEEP_LRS: [f64; 2] = [0.01, 0.02];

/// The rate every loss had before the sweep; LGL-INR β = 1 also runs at it in E3.
pub const COMMON_LR: f64 = 0.01;

/// Images of balanced MNIST's training set the sweep validates on (the last ones).
pub const SWEEP_VALIDATION: usize = 5_000;

/// LGL-INR's inverse temperatures of E1.
pub const E1_BETAS: [f64; 5] = [0.0, 1.0, 5.0, 20.0, 100.0];

/// One run of the protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlannedRun {
    /// The experiment it belongs to.
    pub experiment: Experiment,
    /// The data condition within the experiment (`balanced`, `rho=10`, …).
    pub group: String,
    /// The loss variant, as a folder-safe key (`lgl-inr-b1`).
    pub variant: VariantKey,
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

pub(crate) use super::variants::sweep_variants;
use super::variants::{e1_variants, e2_variants, e3_variants, e5_variants, LrSource, Variant};

/// Data conditions of an experiment: group name and imbalance profile.
fn groups(experiment: Experiment) -> Vec<(String, Imbalance)> {
    let pair = |ratio: f64| Imbalance::Pair {
        positive: 4,
        negative: 9,
        ratio,
    };
    match experiment {
        Experiment::LrSweep | Experiment::E1 => vec![("balanced".into(), Imbalance::None)],
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
        Experiment::E5 => vec![("rho=100".into(), Imbalance::LongTail { ratio: 100.0 })],
        Experiment::E0 | Experiment::E0b => vec![],
    }
}

pub use super::choices::{best_beta, chosen_lrs, ChosenLrs, SweptFamily};

/// The sweep's runs: every family at every rate, on the first seed, validated on the last
/// [`SWEEP_VALIDATION`] training images.
pub(crate) fn plan_sweep(config: &ReproduceConfig) -> Vec<PlannedRun> {
    let seed = config.seeds.first().copied().unwrap_or(0);
    let lrs: &[f64] = if config.quick {
        &QUICK_SWEEP_LRS
    } else {
        &SWEEP_LRS
    };
    let mut runs = Vec::new();
    for v in sweep_variants() {
        for &lr in lrs {
            let name = format!("{}-lr{lr}-s{seed}", v.key);
            let mut run = planned_run(
                config,
                Experiment::LrSweep,
                "balanced",
                Imbalance::None,
                &v,
                lr,
                seed,
                &name,
            );
            run.config.validation = Some(if config.quick { 200 } else { SWEEP_VALIDATION });
            runs.push(run);
        }
    }
    runs
}

/// A run of `experiment` with its configuration: the protocol's defaults (SGD, momentum
/// 0.9, one epoch of warm-up then cosine, batch 64, weight decay 5e-4 on weights only),
/// divergence recorded rather than stopping the run.
#[allow(clippy::too_many_arguments)]
fn planned_run(
    config: &ReproduceConfig,
    experiment: Experiment,
    group: &str,
    imbalance: Imbalance,
    v: &Variant,
    lr: f64,
    seed: u64,
    folder: &str,
) -> PlannedRun {
    let cifar = experiment == Experiment::E4;
    let model = match experiment {
        Experiment::E4 => ModelKind::Resnet32,
        Experiment::E5 => ModelKind::Resnet20,
        _ => ModelKind::Lenet,
    };
    let quick_images = if model == ModelKind::Lenet { 1000 } else { 300 };
    let dir = config.out.join(experiment.name()).join("runs").join(folder);
    let train_config = TrainConfig {
        dataset: if cifar {
            DatasetKind::Cifar10
        } else {
            DatasetKind::Mnist
        },
        data_dir: if cifar {
            config.cifar_dir.clone()
        } else {
            Some(config.mnist_dir.clone())
        },
        model,
        loss: v.options.clone(),
        imbalance,
        epochs: config.epochs(experiment),
        batch_size: 64,
        lr,
        schedule: Schedule::Cosine,
        warmup_epochs: 1.0,
        momentum: 0.9,
        weight_decay: 5e-4,
        augment: if cifar {
            Augmentation::CropFlip
        } else {
            Augmentation::None
        },
        seed,
        threads: config.threads,
        train_limit: config.quick.then_some(quick_images),
        test_limit: config.quick.then_some(500),
        out: Some(dir),
        overwrite: true,
        allow_divergence: true,
        ..TrainConfig::default()
    };
    PlannedRun {
        experiment,
        group: group.to_string(),
        variant: v.key.clone(),
        label: v.label.clone(),
        seed,
        config: train_config,
    }
}

/// The runs of `experiment` (none for E0 and E0b, which train nothing of their own), or
/// `None` while the results it is planned from (the sweep; E1 for E3–E5) are not all
/// trained.
pub fn plan_if_ready(
    config: &ReproduceConfig,
    experiment: Experiment,
) -> Result<Option<Vec<PlannedRun>>, TrainError> {
    if experiment == Experiment::E4 && config.cifar_dir.is_none() {
        return Err(TrainError::Invalid(
            "e4 trains on CIFAR-10, which is not shipped: give its folder with --data-dir".into(),
        ));
    }
    let (variants, seeds) = match experiment {
        Experiment::E0 | Experiment::E0b => return Ok(Some(vec![])),
        Experiment::LrSweep => return Ok(Some(plan_sweep(config))),
        _ => {
            let Some(lrs) = chosen_lrs(config)? else {
                return Ok(None);
            };
            let variants = match experiment {
                Experiment::E1 => e1_variants(),
                Experiment::E2 => e2_variants(),
                _ => {
                    let Some(beta) = best_beta(config)? else {
                        return Ok(None);
                    };
                    if experiment == Experiment::E5 {
                        e5_variants(beta)
                    } else {
                        e3_variants(beta, &lrs)
                    }
                }
            };
            let seeds: Vec<u64> = if experiment == Experiment::E5 {
                config.seeds.iter().take(3).copied().collect()
            } else {
                config.seeds.clone()
            };
            let variants: Vec<(Variant, f64)> = variants
                .into_iter()
                .map(|v| {
                    let lr = match &v.lr {
                        LrSource::Fixed(lr) => *lr,
                        LrSource::Swept(family) => lrs.get(family).expect("every family swept"),
                    };
                    (v, lr)
                })
                .collect();
            (variants, seeds)
        }
    };
    let mut runs = Vec::new();
    for (group, imbalance) in groups(experiment) {
        for (v, lr) in &variants {
            for &seed in &seeds {
                let folder = format!("{}-{}-s{seed}", group.replace('=', ""), v.key);
                runs.push(planned_run(
                    config,
                    experiment,
                    &group,
                    imbalance.clone(),
                    v,
                    *lr,
                    seed,
                    &folder,
                ));
            }
        }
    }
    Ok(Some(runs))
}

/// The runs of `experiment`; an error naming what must be trained first when they are
/// planned from results that are not there yet.
pub fn plan(
    config: &ReproduceConfig,
    experiment: Experiment,
) -> Result<Vec<PlannedRun>, TrainError> {
    plan_if_ready(config, experiment)?.ok_or_else(|| {
        TrainError::Invalid(format!(
            "{experiment} is planned from the learning-rate sweep{}: train those first (`tensorgrad reproduce {experiment}` does)",
            if experiment.stage() == 2 { " and E1" } else { "" }
        ))
    })
}
