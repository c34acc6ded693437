//! The command line's schema: clap parses every option once, here, into the library's
//! typed configuration; a bad value is reported against the flag that carried it.

pub mod bench;
pub mod console;
pub mod graph;
pub mod reproduce;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use tensorgrad::data::imbalance::Imbalance;
use tensorgrad::loss::weights::ClassWeighting;
use tensorgrad::loss::{LossKind, LossOptionError, LossOptions, Reduction, WeightForm};
use tensorgrad::nn::models::ModelKind;
use tensorgrad::optim::{OptimizerKind, Schedule};
use tensorgrad::train::resume::resumed_config;
use tensorgrad::train::{Augmentation, DatasetKind, ImageSize, RunDir, TrainConfig, TrainError};

/// tensorgrad: train CNNs on the CPU with the losses of Li et al. (AAAI 2020).
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Train a model (defaults: MNIST, lenet, lgl-inr, SGD momentum 0.9, lr 0.01 cosine, 5 epochs).
    // Negative numbers are values (`--lr -1` reaches the range check that names the flag).
    #[command(allow_negative_numbers = true)]
    Train(Box<TrainArgs>),
    /// Test-set metrics of a saved run.
    Eval(SavedRunArgs),
    /// The stationarity audit of a saved run on its training set; writes audit.json.
    Audit(SavedRunArgs),
    /// Print the autodiff graph of one training step: every node with its op, its shape
    /// and the buffers it keeps for backward.
    Graph(graph::GraphArgs),
    /// Throughput of a training step or of inference on random data: one JSON line
    /// (`--profile` adds the time per op of one step, also printed as a table on stderr).
    Bench(bench::BenchArgs),
    /// Reproduce the paper's experiments (docs/EXPERIMENTS.md): train, audit, refit, and
    /// write the tables, plots and REPORT.md; runs already done are skipped.
    Reproduce(reproduce::ReproduceArgs),
}

/// Options naming a saved run.
#[derive(Args)]
pub struct SavedRunArgs {
    /// The run directory (holding config.json and model.safetensors).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Data directory, replacing the one the run recorded.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl SavedRunArgs {
    /// The data directory to use: the one given, else the bundled MNIST for a run that
    /// recorded none (runs made before the directory was always recorded).
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.data_dir.clone().or_else(|| {
            let config = RunDir::new(&self.checkpoint).read_config().ok()?;
            (config.data_dir.is_none() && config.dataset == DatasetKind::Mnist).then(bundled_mnist)
        })
    }
}

/// The MNIST bundled with the source tree.
pub fn bundled_mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/mnist")
}

/// Options of the loss (`--loss` and the options that apply to it).
#[derive(Args, Clone, Debug)]
pub struct LossArgs {
    /// Loss (the loss registry's names; `--help` gives each one's summary).
    #[arg(long = "loss", default_value = "lgl-inr", help = loss_help(), long_help = loss_long_help())]
    pub loss: LossKind,
    /// Class weights: none, inverse or effective:BETA (not for lgl-inr).
    #[arg(long)]
    pub class_weights: Option<ClassWeighting>,
    /// LGL's weighted form: sample (per-sample w[y_i]) or pos-neg (per-problem w⁺/w⁻).
    #[arg(long)]
    pub weight_form: Option<WeightForm>,
    /// LGL-INR's inverse temperature β ≥ 0 [default: 1].
    #[arg(long)]
    pub beta: Option<f64>,
    /// LGL-INR: treat the weights ω as constants in backward.
    #[arg(long)]
    pub detach_weight: bool,
    /// Focal losses' focusing parameter γ ≥ 0 [default: 2].
    #[arg(long)]
    pub gamma: Option<f64>,
    /// focal: scale α > 0; focal-sigmoid: balance α ∈ [0, 1]; alpha-loss: α ∈ (0, inf].
    #[arg(long)]
    pub alpha: Option<f64>,
    /// SML label smoothing ε ∈ [0, 1).
    #[arg(long)]
    pub label_smoothing: Option<f64>,
    /// SML logit adjustment τ: adds τ·log(class prior) to the logits.
    #[arg(long)]
    pub logit_adjust: Option<f64>,
    /// Reduction: mean (over the total sample weight) or sum [default: mean].
    #[arg(long)]
    pub reduction: Option<Reduction>,
}

impl From<LossArgs> for LossOptions {
    fn from(a: LossArgs) -> Self {
        LossOptions {
            loss: a.loss,
            class_weights: a.class_weights,
            weight_form: a.weight_form,
            beta: a.beta,
            detach_weight: a.detach_weight,
            gamma: a.gamma,
            alpha: a.alpha,
            label_smoothing: a.label_smoothing,
            logit_adjust: a.logit_adjust,
            reduction: a.reduction,
        }
    }
}

/// `--loss`'s short help: the registered names.
fn loss_help() -> String {
    format!(
        "Loss: {}",
        tensorgrad::text::one_of(LossKind::all().map(LossKind::name))
    )
}

/// `--loss`'s long help: every registered loss with its summary.
fn loss_long_help() -> String {
    let mut text = String::from("Loss, one of:");
    for kind in LossKind::all() {
        text.push_str(&format!("\n  {}: {}", kind.name(), kind.entry().summary));
    }
    text
}

/// The options of `tensorgrad train`.
#[derive(Args, Clone, Debug)]
pub struct TrainArgs {
    /// Data set (the names of `DatasetKind`).
    #[arg(long, default_value = "mnist", help = format!("Data set: {}", DatasetKind::keywords()))]
    pub dataset: DatasetKind,
    /// Directory of the data (default: the bundled datasets/mnist for mnist; required otherwise).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Image size HxW for --dataset folder.
    #[arg(long, default_value = "32x32")]
    pub image_size: ImageSize,
    /// Channels (1 or 3) for --dataset folder.
    #[arg(long, default_value_t = 3)]
    pub channels: usize,
    /// Model (the names of `ModelKind`).
    #[arg(long, default_value = "lenet", help = format!("Model: {}", ModelKind::keywords()))]
    pub model: ModelKind,
    /// Start each residual block's last batch norm at γ = 0, so every block begins as the
    /// identity (torchvision's zero_init_residual; the ResNets only).
    #[arg(long)]
    pub zero_init_residual: bool,
    /// Loss options.
    #[command(flatten)]
    pub loss: LossArgs,
    /// Imbalance: none, pair:POS,NEG,RATIO or longtail:RATIO.
    #[arg(long, default_value = "none")]
    pub imbalance: Imbalance,
    /// Epochs to train (the total, when resuming).
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536).map(|n| n as usize))]
    pub batch_size: usize,
    /// Optimizer: sgd, adam or adamw.
    #[arg(long, default_value = "sgd")]
    pub optimizer: OptimizerKind,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// Schedule: constant, cosine or step:EVERY,GAMMA (EVERY in epochs).
    #[arg(long, default_value = "cosine")]
    pub schedule: Schedule,
    /// Epochs of linear learning-rate warm-up.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_epochs: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Nesterov momentum (SGD).
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay of weights (never of biases or normalisation parameters).
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Augmentation: auto (crop+flip for CIFAR, none otherwise), none or crop-flip.
    #[arg(long, default_value = "auto")]
    pub augment: Augmentation,
    /// Seed of initialisation, shuffling, augmentation and imbalance subsampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Use only the first N training images (quick runs, tests).
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first N test images.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Hold out the last N training images and evaluate on them instead of the test set
    /// (a validation split for choosing hyper-parameters).
    #[arg(long)]
    pub validation: Option<usize>,
    /// Stop after this many epochs in this invocation (resume later with --resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Output directory (default: runs/<model>-<loss>-seed<seed>-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run saved in this directory, with its configuration, up to --epochs.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Print only the final summary.
    #[arg(long)]
    pub quiet: bool,
    /// Replace an earlier run's files in --out (otherwise a non-empty --out is refused).
    #[arg(long)]
    pub force: bool,
    /// Train on when the run diverges (its loss after epoch 1 above 1.5 × epoch 1's), and
    /// exit 0 when it ends at chance (balanced test accuracy ≤ 1.5/K): for studying
    /// divergence. metrics.json records the divergence either way.
    #[arg(long)]
    pub allow_divergence: bool,
    /// With --resume: continue on another number of ranks although the loss depends on
    /// how a batch is split among them (lgl-inr, weighted means); recorded in config.json.
    #[arg(long)]
    pub allow_rank_change: bool,
    /// Data-parallel training as one rank of an MPI job (`mpirun -np N tensorgrad train
    /// --distributed …`; needs a build with `--features mpi`).
    #[arg(long)]
    pub distributed: bool,
}

/// The flag of a clap argument id (`batch_size` → `--batch-size`).
fn flag(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// Parses `argv`, also returning the ids of the subcommand's options that were given on
/// the command line (not defaulted).
pub fn parse_with_given<I, T>(argv: I) -> Result<(Cli, Vec<String>), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().try_get_matches_from(argv)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let given = matches
        .subcommand()
        .map(|(_, sub)| {
            sub.ids()
                .filter(|id| {
                    sub.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
                })
                .map(|id| id.as_str().to_string())
                .collect()
        })
        .unwrap_or_default();
    Ok((cli, given))
}

/// A combination of options that clap cannot see is wrong, named by its flag.
#[derive(Debug)]
pub struct FlagError {
    /// The flag, with its dashes.
    pub flag: String,
    /// What is wrong.
    pub reason: String,
}

impl std::fmt::Display for FlagError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.flag, self.reason)
    }
}

impl From<LossOptionError> for FlagError {
    fn from(e: LossOptionError) -> Self {
        FlagError {
            flag: format!("--{}", e.param),
            reason: e.reason,
        }
    }
}

impl TrainArgs {
    /// The library's configuration, after the checks that span several flags; `given`
    /// lists the options given explicitly (clap's argument ids).
    pub fn to_config(&self, given: &[String]) -> Result<TrainConfig, FlagError> {
        let is_given = |id: &str| given.iter().any(|g| g == id);
        let loss: LossOptions = self.loss.clone().into();
        loss.check_applicable()?;
        if is_given("momentum") && self.optimizer != OptimizerKind::Sgd {
            return Err(FlagError {
                flag: "--momentum".into(),
                reason: format!("applies to sgd only, not to {}", self.optimizer),
            });
        }
        if self.dataset != DatasetKind::Folder && self.resume.is_none() {
            for id in ["channels", "image_size"] {
                if is_given(id) {
                    return Err(FlagError {
                        flag: flag(id),
                        reason: format!(
                            "applies to --dataset folder only, not to {}",
                            self.dataset
                        ),
                    });
                }
            }
        }
        let data_dir = match (&self.data_dir, self.dataset) {
            (Some(d), _) => Some(d.clone()),
            (None, DatasetKind::Mnist) => Some(bundled_mnist()),
            // A resumed run brings its own directory.
            (None, _) if self.resume.is_some() => None,
            (None, other) => {
                return Err(FlagError {
                    flag: "--data-dir".into(),
                    reason: format!("required for --dataset {other}"),
                })
            }
        };
        if self.zero_init_residual && !self.model.is_resnet() {
            return Err(FlagError {
                flag: "--zero-init-residual".into(),
                reason: format!("applies to the ResNets only, not to {}", self.model),
            });
        }
        Ok(TrainConfig {
            dataset: self.dataset,
            data_dir,
            image_size: self.image_size,
            channels: self.channels,
            model: self.model,
            zero_init_residual: self.zero_init_residual,
            loss,
            imbalance: self.imbalance.clone(),
            epochs: self.epochs,
            batch_size: self.batch_size,
            optimizer: self.optimizer,
            lr: self.lr,
            schedule: self.schedule.clone(),
            warmup_epochs: self.warmup_epochs,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            augment: self.augment,
            seed: self.seed,
            threads: self.threads,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            validation: self.validation,
            stop_after: self.stop_after,
            out: self.out.clone(),
            resume: self.resume.clone(),
            overwrite: self.force,
            allow_divergence: self.allow_divergence,
            allow_rank_change: self.allow_rank_change,
        })
        .and_then(|config| {
            config.validate().map_err(|e| FlagError {
                flag: flag(e.field),
                reason: e.reason,
            })?;
            match &self.resume {
                Some(dir) => resume_request(config, dir, given),
                None => Ok(config),
            }
        })
    }
}

/// The configuration of `--resume DIR`: the library's resume rules
/// ([`tensorgrad::train::resume::resumed_config`]) applied to the flags that were given,
/// so a conflicting flag is reported by its name before anything runs. An unreadable run
/// directory is left to the library, which reports it naming the file.
fn resume_request(
    config: TrainConfig,
    dir: &Path,
    given: &[String],
) -> Result<TrainConfig, FlagError> {
    let Ok(saved) = RunDir::new(dir).read_config() else {
        return Ok(config);
    };
    // Config fields by the flag that sets them: `loss.beta` by --beta, `loss.loss` by --loss.
    let flag_of = |field: &str| -> String {
        match field {
            "loss.loss" => "loss".into(),
            "overwrite" => "force".into(),
            _ => field.trim_start_matches("loss.").into(),
        }
    };
    let is_given = |field: &str| given.iter().any(|g| *g == flag_of(field));
    resumed_config(&saved, &config, dir, &is_given).map_err(|e| match e {
        TrainError::ResumeConflict { field, reason } => FlagError {
            flag: flag(&flag_of(&field)),
            reason,
        },
        other => FlagError {
            flag: "--resume".into(),
            reason: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The help of `--loss`, `--model` and `--dataset` is built from the registries: every
    /// registered loss with its summary, every model and data set by name.
    #[test]
    fn choice_help_comes_from_the_registries() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let train = cmd.find_subcommand_mut("train").expect("train subcommand");
        let help = train.render_long_help().to_string();
        for kind in LossKind::all() {
            let line = format!("{}: {}", kind.name(), kind.entry().summary);
            assert!(help.contains(&line), "--loss help lacks {line:?}");
        }
        for model in ModelKind::ALL {
            assert!(help.contains(model.as_str()), "--model help lacks {model}");
        }
        for dataset in DatasetKind::ALL {
            assert!(
                help.contains(dataset.as_str()),
                "--dataset help lacks {dataset}"
            );
        }
        assert!(help.contains(&format!("Model: {}", ModelKind::keywords())));
    }

    fn parse(args: &[&str]) -> Result<TrainConfig, String> {
        let mut argv = vec!["tensorgrad", "train"];
        argv.extend_from_slice(args);
        let (cli, given) = parse_with_given(argv).map_err(|e| e.to_string())?;
        let Command::Train(t) = cli.command else {
            unreachable!("parsed a train command")
        };
        t.to_config(&given).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_library_defaults_with_the_bundled_data() {
        let c = parse(&[]).unwrap();
        let want = TrainConfig {
            data_dir: Some(bundled_mnist()),
            ..TrainConfig::default()
        };
        assert_eq!(c, want);
    }

    #[test]
    fn a_resumed_run_refuses_options_that_contradict_it() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let config = TrainConfig {
            epochs: 1,
            train_limit: Some(64),
            test_limit: Some(64),
            out: Some(run.clone()),
            ..parse(&[]).unwrap()
        };
        tensorgrad::train::train(&config, &mut |_| {}).unwrap();
        let r = run.to_str().unwrap();
        // What a resume may change, or repeat unchanged; without --epochs it keeps its length.
        assert!(parse(&["--resume", r, "--epochs", "3", "--threads", "1"]).is_ok());
        assert_eq!(parse(&["--resume", r]).unwrap().epochs, 1);
        assert!(parse(&["--resume", r, "--lr", "0.01", "--loss", "lgl-inr"]).is_ok());
        // A new learning rate (to continue after a divergence) is a change the run records.
        assert_eq!(parse(&["--resume", r, "--lr", "0.5"]).unwrap().lr, 0.5);
        // What it may not.
        for (args, flag) in [
            (&["--loss", "sml"][..], "--loss"),
            (&["--beta", "2"], "--beta"),
            (&["--seed", "3"], "--seed"),
            (&["--out", "/tmp/elsewhere"], "--out"),
        ] {
            let mut argv = vec!["--resume", r];
            argv.extend_from_slice(args);
            let e = parse(&argv).unwrap_err();
            assert!(e.starts_with(flag), "{args:?}: {e}");
        }
    }

    #[test]
    fn options_parse_into_typed_values() {
        let c = parse(&[
            "--loss",
            "lgl",
            "--class-weights",
            "effective:0.99",
            "--weight-form",
            "pos-neg",
            "--imbalance",
            "pair:4,9,100",
            "--schedule",
            "step:3,0.5",
            "--optimizer",
            "adamw",
            "--model",
            "cifar-cnn",
            "--dataset",
            "folder",
            "--data-dir",
            "/x",
            "--image-size",
            "64x48",
        ])
        .unwrap();
        assert_eq!(c.loss.loss.name(), "lgl");
        assert_eq!(c.loss.class_weights, Some(ClassWeighting::Effective(0.99)));
        assert_eq!(c.loss.weight_form, Some(WeightForm::PosNeg));
        assert_eq!(
            c.schedule,
            Schedule::Step {
                every: 3,
                gamma: 0.5
            }
        );
        assert_eq!(c.optimizer, OptimizerKind::AdamW);
        assert_eq!(c.model, ModelKind::CifarCnn);
        assert_eq!(c.image_size.to_string(), "64x48");
        assert_eq!(c.data_dir, Some(PathBuf::from("/x")));
        let r = parse(&["--model", "resnet20", "--zero-init-residual"]).unwrap();
        assert!(r.zero_init_residual && r.model_spec().options.zero_init_residual);
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, flag) in [
            (&["--loss", "softmax"][..], "--loss"),
            (&["--schedule", "linear"], "--schedule"),
            (&["--imbalance", "pair:4,4,10"], "--imbalance"),
            (&["--class-weights", "effective:2"], "--class-weights"),
            (&["--optimizer", "rmsprop"], "--optimizer"),
            (&["--batch-size", "0"], "--batch-size"),
            (&["--loss", "sml", "--beta", "2"], "--beta"),
            (&["--dataset", "cifar10"], "--data-dir"),
            (&["--lr=-1"], "--lr"),
            (&["--lr", "inf"], "--lr"),
            (&["--momentum", "1.5"], "--momentum"),
            (&["--weight-decay=-1"], "--weight-decay"),
            (&["--warmup-epochs", "nan"], "--warmup-epochs"),
            (&["--warmup-epochs", "inf"], "--warmup-epochs"),
            (&["--warmup-epochs=-1"], "--warmup-epochs"),
            (&["--threads", "100000"], "--threads"),
            (&["--batch-size", "100000000"], "--batch-size"),
            (&["--epochs", "0"], "--epochs"),
            (&["--train-limit", "0"], "--train-limit"),
            (&["--stop-after", "0"], "--stop-after"),
            (&["--channels", "1"], "--channels"),
            (&["--image-size", "64x64"], "--image-size"),
            (&["--optimizer", "adam", "--nesterov"], "--nesterov"),
            (&["--zero-init-residual"], "--zero-init-residual"),
            (
                &["--model", "mobilenet-v2", "--zero-init-residual"],
                "--zero-init-residual",
            ),
            (&["--optimizer", "adamw", "--momentum", "0.5"], "--momentum"),
            (
                &[
                    "--dataset",
                    "folder",
                    "--data-dir",
                    "/x",
                    "--image-size",
                    "100000x100000",
                ],
                "--image-size",
            ),
            (
                &["--dataset", "folder", "--data-dir", "/x", "--channels", "2"],
                "--channels",
            ),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }
}
