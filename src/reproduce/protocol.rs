//! The protocol of docs/EXPERIMENTS.md as data: the experiments, their data conditions,
//! the loss variants (each with a typed [`VariantKey`] that the verdict rules select by,
//! never by a display label), and [`plan`], which turns them into runs with their
//! configurations.

use crate::data::imbalance::Imbalance;
use crate::loss::weights::ClassWeighting;
use crate::loss::{LossKind, LossOptions, WeightForm};
use crate::nn::models::ModelKind;
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
        *self == Self::LGL_INV_SAMPLE || *self == Self::LGL_INV_POSNEG
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

/// A loss variant of the protocol: folder key, table label, options.
struct Variant {
    key: VariantKey,
    label: &'static str,
    options: LossOptions,
}

fn loss(name: &str) -> LossOptions {
    LossOptions::new(LossKind::from_str(name).expect("registered loss"))
}

fn variant(
    key: VariantKey,
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
        variant(VariantKey::SML, "SML", "sml", |_| {}),
        variant(VariantKey::LGL, "LGL", "lgl", |_| {}),
        variant(
            VariantKey::new("lgl-inr-b0"),
            "LGL-INR β=0",
            "lgl-inr",
            |o| o.beta = Some(0.0),
        ),
        variant(VariantKey::LGL_INR_B1, "LGL-INR β=1", "lgl-inr", |o| {
            o.beta = Some(1.0)
        }),
        variant(
            VariantKey::new("lgl-inr-b5"),
            "LGL-INR β=5",
            "lgl-inr",
            |o| o.beta = Some(5.0),
        ),
    ]
}

/// E2: unweighted LGL and inverse-frequency LGL in both weighted forms (one output).
fn e2_variants() -> Vec<Variant> {
    vec![
        variant(VariantKey::LGL, "LGL", "lgl", |_| {}),
        variant(
            VariantKey::LGL_INV_SAMPLE,
            "LGL inv. (sample)",
            "lgl",
            |o| {
                o.class_weights = Some(ClassWeighting::Inverse);
                o.weight_form = Some(WeightForm::Sample);
            },
        ),
        variant(
            VariantKey::LGL_INV_POSNEG,
            "LGL inv. (pos-neg)",
            "lgl",
            |o| {
                o.class_weights = Some(ClassWeighting::Inverse);
                o.weight_form = Some(WeightForm::PosNeg);
            },
        ),
    ]
}

/// E3/E4: the long-tail baselines and the paper's losses.
fn e3_variants() -> Vec<Variant> {
    vec![
        variant(VariantKey::SML, "SML", "sml", |_| {}),
        variant(VariantKey::SML_INV, "SML inv.", "sml", |o| {
            o.class_weights = Some(ClassWeighting::Inverse)
        }),
        variant(VariantKey::new("sml-cb"), "SML CB β=0.9999", "sml", |o| {
            o.class_weights = Some(ClassWeighting::Effective(0.9999))
        }),
        variant(VariantKey::new("sml-la"), "SML LA τ=1", "sml", |o| {
            o.logit_adjust = Some(1.0)
        }),
        variant(VariantKey::new("focal"), "focal γ=2", "focal", |o| {
            o.gamma = Some(2.0)
        }),
        variant(VariantKey::LGL, "LGL", "lgl", |_| {}),
        variant(VariantKey::new("lgl-inv"), "LGL inv.", "lgl", |o| {
            o.class_weights = Some(ClassWeighting::Inverse)
        }),
        variant(VariantKey::LGL_INR_B1, "LGL-INR β=1", "lgl-inr", |o| {
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
                    variant: v.key.clone(),
                    label: v.label.to_string(),
                    seed,
                    config: train_config,
                });
            }
        }
    }
    Ok(runs)
}
