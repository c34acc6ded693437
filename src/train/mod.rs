//! Training you can trust: the run configuration, the epoch loop with progress and
//! metrics, atomic checkpoints, evaluation, the stationarity audit of a saved run, and
//! the plots. The CLI (`src/main.rs`) is a thin layer over [`train`], [`evaluate_run`] and
//! [`audit_run`].

pub mod checkpoint;
pub mod denormals;
pub mod metrics;
pub mod plots;

pub use checkpoint::{load_checkpoint, save_checkpoint, Checkpoint, OPTIMIZER_PREFIX};
pub use metrics::{evaluation, predictions, Evaluation};

use crate::autograd::no_grad;
use crate::data::imbalance::Imbalance;
use crate::data::{
    load_cifar10, load_cifar100, load_idx_dir, load_image_folder, Augment, Batches, DataError,
    Dataset, Normalization, Split,
};
use crate::error::{OptionError, TensorError};
use crate::loss::{audit, build_loss, Audit, Family, Loss, LossOptions};
use crate::nn::{models, Module, Sequential, TensorKind};
use crate::optim::{Adam, AdamConfig, LrSchedule, Optimizer, Schedule, Sgd, SgdConfig};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;
use thiserror::Error;

/// `println!` that ignores a closed stdout (`tensorgrad train | head` must not panic).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Why a run failed. Work already saved (the last epoch's checkpoint and metrics) is kept.
#[derive(Debug, Error)]
pub enum TrainError {
    /// The data could not be loaded.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A bad option.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// A tensor operation failed (shapes, labels).
    #[error(transparent)]
    Tensor(#[from] TensorError),
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
    Config {
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
    /// The loss became NaN or infinite; the previous epoch's checkpoint is intact.
    #[error("the training loss became {loss} at epoch {epoch}, step {step}; the checkpoint of the last completed epoch is kept")]
    NonFinite {
        /// Epoch (1-based).
        epoch: usize,
        /// Step within the epoch.
        step: usize,
        /// The value.
        loss: f64,
    },
}

impl TrainError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Everything that defines a training run (the options of `tensorgrad train`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, clap::Args)]
pub struct TrainConfig {
    /// Data set: mnist, cifar10, cifar100 or folder.
    #[arg(long, default_value = "mnist")]
    pub dataset: String,
    /// Directory of the data (default: datasets/mnist for mnist; required otherwise).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Image size HxW for --dataset folder.
    #[arg(long, default_value = "32x32")]
    pub image_size: String,
    /// Channels (1 or 3) for --dataset folder.
    #[arg(long, default_value_t = 3)]
    pub channels: usize,
    /// Model: lenet, cifar-cnn or linear.
    #[arg(long, default_value = "lenet")]
    pub model: String,
    /// Loss options.
    #[command(flatten)]
    pub loss: LossOptions,
    /// Imbalance: none, pair:POS,NEG,RATIO or longtail:RATIO.
    #[arg(long, default_value = "none")]
    pub imbalance: String,
    /// Epochs to train (the total, when resuming).
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Optimizer: sgd, adam or adamw.
    #[arg(long, default_value = "sgd")]
    pub optimizer: String,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// Schedule: constant, cosine or step:EVERY,GAMMA (EVERY in epochs).
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
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
    pub augment: String,
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
    /// Stop after this many epochs in this invocation (resume later with --resume).
    #[arg(long)]
    #[serde(skip)]
    pub stop_after: Option<usize>,
    /// Output directory (default: runs/<model>-<loss>-seed<seed>-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run saved in this directory, with its configuration, up to --epochs.
    #[arg(long)]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Print only the final summary.
    #[arg(long)]
    #[serde(skip)]
    pub quiet: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: TrainConfig,
        }
        Wrapper::parse_from(["tensorgrad"]).config
    }
}

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

/// Loads the data set of `config` and applies its imbalance profile and limits.
pub fn load_data(config: &TrainConfig) -> Result<Split, TrainError> {
    let dir = |default: Option<&str>| -> Result<PathBuf, TrainError> {
        match (&config.data_dir, default) {
            (Some(d), _) => Ok(d.clone()),
            (None, Some(d)) => Ok(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(d)),
            (None, None) => Err(OptionError::new(
                "data-dir",
                format!("required for --dataset {}", config.dataset),
            )
            .into()),
        }
    };
    let split = match config.dataset.as_str() {
        "mnist" => load_idx_dir(&dir(Some("datasets/mnist"))?)?,
        "cifar10" => load_cifar10(&dir(None)?)?,
        "cifar100" => load_cifar100(&dir(None)?)?,
        "folder" => {
            let bad = || {
                OptionError::new(
                    "image-size",
                    format!("{:?}: expected HxW", config.image_size),
                )
            };
            let (h, w) = config.image_size.split_once('x').ok_or_else(bad)?;
            let (h, w) = (h.parse().map_err(|_| bad())?, w.parse().map_err(|_| bad())?);
            load_image_folder(&dir(None)?, [config.channels, h, w])?
        }
        other => {
            return Err(OptionError::new(
                "dataset",
                format!("unknown data set {other:?}; expected mnist, cifar10, cifar100 or folder"),
            )
            .into())
        }
    };
    let mut split = Imbalance::parse(&config.imbalance)?.apply(&split, config.seed)?;
    if let Some(n) = config.train_limit {
        split.train = split
            .train
            .subset(&(0..n.min(split.train.len())).collect::<Vec<_>>());
    }
    if let Some(n) = config.test_limit {
        split.test = split
            .test
            .subset(&(0..n.min(split.test.len())).collect::<Vec<_>>());
    }
    Ok(split)
}

/// Outputs of the model: one logit for a binary problem under a sigmoid loss that
/// supports it, one per class otherwise.
pub fn model_outputs(classes: usize, loss: &dyn Loss<f32>) -> usize {
    if classes == 2 && loss.family() == Family::Sigmoid && loss.name() != "lgl-inr" {
        1
    } else {
        classes
    }
}

/// Builds the optimizer of `config`.
pub fn build_optimizer(config: &TrainConfig) -> Result<Box<dyn Optimizer<f32>>, OptionError> {
    Ok(match config.optimizer.as_str() {
        "sgd" => Box::new(Sgd::new(SgdConfig {
            momentum: config.momentum,
            nesterov: config.nesterov,
            weight_decay: config.weight_decay,
        })),
        "adam" | "adamw" => Box::new(Adam::new(AdamConfig {
            weight_decay: config.weight_decay,
            decoupled: config.optimizer == "adamw",
            ..Default::default()
        })),
        other => {
            return Err(OptionError::new(
                "optimizer",
                format!("unknown optimizer {other:?}; expected sgd, adam or adamw"),
            ))
        }
    })
}

/// Evaluates `model` (in eval mode, without gradients) on `data`: metrics, and the
/// probabilities `[N, outputs]` the loss models.
pub fn evaluate(
    model: &mut Sequential<f32>,
    loss: &dyn Loss<f32>,
    data: &Dataset,
    norm: &Normalization,
    batch_size: usize,
) -> Result<(Evaluation, Vec<f64>), TrainError> {
    model.set_training(false);
    let result = no_grad(|| -> Result<_, TrainError> {
        let (mut logits, mut probs, mut loss_sum, mut batches) = (Vec::new(), Vec::new(), 0.0, 0);
        let mut outputs = 1;
        for (x, y) in Batches::new(data, batch_size, None, 0, norm, Augment::default()) {
            let z = model.forward(&x)?;
            outputs = z.shape()[1];
            loss_sum += loss.forward(&z, &y)?.item() as f64;
            batches += 1;
            probs.extend(loss.probabilities(&z)?.values().iter().map(|&p| p as f64));
            logits.extend(z.values().iter().copied());
        }
        let preds = predictions(&logits, outputs);
        let e = evaluation(
            &preds,
            &probs,
            outputs,
            &data.labels,
            data.classes,
            loss_sum / batches.max(1) as f64,
        );
        Ok((e, probs))
    });
    model.set_training(true);
    result
}

/// The model's tensors and the optimizer's state as a checkpoint.
fn checkpoint_of(
    model: &Sequential<f32>,
    opt: &dyn Optimizer<f32>,
    epoch: usize,
    step: usize,
) -> Checkpoint {
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = model
        .named_tensors()
        .into_iter()
        .map(|(n, _, t)| (n, t.shape().to_vec(), t.to_vec()))
        .collect();
    for (name, values) in opt.state() {
        tensors.push((
            format!("{OPTIMIZER_PREFIX}{name}"),
            vec![values.len()],
            values,
        ));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata = [
        ("format".to_string(), "tensorgrad-checkpoint-1".to_string()),
        ("epoch".to_string(), epoch.to_string()),
        ("step".to_string(), step.to_string()),
    ]
    .into_iter()
    .collect();
    Checkpoint { tensors, metadata }
}

/// Copies the checkpoint's model tensors into `model`, checking names and shapes.
pub fn load_model_tensors(
    model: &mut Sequential<f32>,
    ck: &Checkpoint,
    path: &Path,
) -> Result<(), TrainError> {
    for (name, kind, t) in model.named_tensors_mut() {
        let Some((_, shape, values)) = ck.get(&name) else {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                reason: format!("missing tensor {name}"),
            });
        };
        if shape.as_slice() != t.shape() {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                reason: format!(
                    "{name}: shape {shape:?} in the file, {:?} in the model",
                    t.shape()
                ),
            });
        }
        let fresh = Tensor::from_vec(values.clone(), shape)?;
        *t = if kind == TensorKind::Parameter {
            fresh.with_grad()
        } else {
            fresh
        };
    }
    Ok(())
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).expect("run records serialise");
    checkpoint::write_atomically(path, text.as_bytes())
}

fn read_config(dir: &Path) -> Result<TrainConfig, TrainError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| TrainError::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    serde_json::from_value(v["train"].clone()).map_err(|e| TrainError::Config {
        path,
        reason: e.to_string(),
    })
}

fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn augmentation(config: &TrainConfig) -> Result<Augment, OptionError> {
    match (config.augment.as_str(), config.dataset.as_str()) {
        ("auto", "cifar10" | "cifar100") | ("crop-flip", _) => Ok(Augment {
            crop_padding: 4,
            hflip: true,
        }),
        ("auto", _) | ("none", _) => Ok(Augment::default()),
        (other, _) => Err(OptionError::new(
            "augment",
            format!("{other:?}: expected auto, none or crop-flip"),
        )),
    }
}

/// Runs `f` on a pool of `threads` workers (default: one per core) whose threads, like the
/// calling thread, flush subnormal floats to zero.
fn with_threads<R: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> R + Send,
) -> Result<R, OptionError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .start_handler(|_| denormals::flush_denormals_on_this_thread())
        .build()
        .map_err(|e| OptionError::new("threads", e.to_string()))?;
    Ok(pool.install(|| {
        denormals::flush_denormals_on_this_thread();
        f()
    }))
}

/// Trains the run described by `config` (or resumes `config.resume`), writing
/// `config.json`, `metrics.json`, `model.safetensors` and the plots to the run directory.
pub fn train(config: &TrainConfig) -> Result<RunSummary, TrainError> {
    let (config, out_dir) = match &config.resume {
        Some(dir) => {
            let mut saved = read_config(dir)?;
            saved.epochs = config.epochs;
            saved.quiet = config.quiet;
            saved.threads = config.threads.or(saved.threads);
            saved.resume = Some(dir.clone());
            saved.stop_after = config.stop_after;
            (saved, dir.clone())
        }
        None => {
            let dir = config.out.clone().unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                PathBuf::from("runs").join(format!(
                    "{}-{}-seed{}-{t}",
                    config.model, config.loss.loss, config.seed
                ))
            });
            (config.clone(), dir)
        }
    };
    let threads = config.threads;
    with_threads(threads, || run(&config, &out_dir))?
}

fn run(config: &TrainConfig, out_dir: &Path) -> Result<RunSummary, TrainError> {
    let started = Instant::now();
    let resuming = config.resume.is_some();
    std::fs::create_dir_all(out_dir).map_err(|e| TrainError::io(out_dir, e))?;
    let split = load_data(config)?;
    let counts = split.train.class_counts();
    let loss = build_loss::<f32>(&config.loss, &counts)?;
    let outputs = model_outputs(split.train.classes, loss.as_ref());
    let mut model = models::build::<f32>(&config.model, split.train.shape, outputs, config.seed)?;
    let mut opt = build_optimizer(config)?;
    let augment = augmentation(config)?;
    let norm = Normalization::of(&split.train);
    let steps_per_epoch = split.train.len().div_ceil(config.batch_size.max(1));
    let schedule = LrSchedule {
        base: config.lr,
        schedule: Schedule::parse(&config.schedule)?,
        warmup_steps: (config.warmup_epochs * steps_per_epoch as f64).round() as usize,
        steps_per_epoch,
        total_steps: steps_per_epoch * config.epochs,
    };
    let metrics_path = out_dir.join("metrics.json");
    let ck_path = out_dir.join("model.safetensors");
    let (mut first_epoch, mut step, mut records) = (0, 0, Vec::new());
    if resuming {
        let ck = load_checkpoint(&ck_path)?;
        load_model_tensors(&mut model, &ck, &ck_path)?;
        let state = ck
            .tensors
            .iter()
            .filter_map(|(n, _, v)| {
                n.strip_prefix(OPTIMIZER_PREFIX)
                    .map(|n| (n.to_string(), v.clone()))
            })
            .collect();
        opt.load_state(state)?;
        let meta = |k: &str| ck.metadata.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        (first_epoch, step) = (meta("epoch"), meta("step"));
        if let Ok(text) = std::fs::read_to_string(&metrics_path) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            records = serde_json::from_value(v["epochs"].clone()).unwrap_or_default();
            records.truncate(first_epoch);
        }
    } else {
        let record = serde_json::json!({
            "train": config,
            "git_revision": git_revision(),
            "threads": rayon::current_num_threads(),
            "tensorgrad_version": env!("CARGO_PKG_VERSION"),
            "command": std::env::args().collect::<Vec<_>>(),
            "train_class_counts": counts,
            "test_class_counts": split.test.class_counts(),
            "normalization": norm,
            "model_outputs": outputs,
            "parameters": model.num_parameters(),
        });
        write_json(&out_dir.join("config.json"), &record)?;
    }
    if !config.quiet {
        say!(
            "training {} ({} parameters) on {} [{} train / {} test images, class counts {:?}] with {}, {} threads → {}",
            config.model,
            model.num_parameters(),
            config.dataset,
            split.train.len(),
            split.test.len(),
            counts,
            config.loss.loss,
            rayon::current_num_threads(),
            out_dir.display()
        );
    }
    let interactive = std::io::stdout().is_terminal() && !config.quiet;
    let last_epoch = config
        .stop_after
        .map_or(config.epochs, |n| (first_epoch + n).min(config.epochs));
    for epoch in first_epoch..last_epoch {
        let t0 = Instant::now();
        let batches = Batches::new(
            &split.train,
            config.batch_size,
            Some(config.seed),
            epoch,
            &norm,
            augment,
        );
        let bar = interactive.then(|| progress_bar(split.train.len() as u64));
        let (mut loss_sum, mut seen) = (0.0, 0);
        let mut lr = config.lr;
        for (i, (x, y)) in batches.enumerate() {
            lr = schedule.lr(step);
            let l = loss.forward(&model.forward(&x)?, &y)?;
            let value = l.item() as f64;
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    epoch: epoch + 1,
                    step: i,
                    loss: value,
                });
            }
            let grads = l.backward()?;
            opt.step(model.parameters_mut(), &grads, lr)?;
            loss_sum += value;
            seen += y.len();
            step += 1;
            if let Some(bar) = &bar {
                bar.set_position(seen as u64);
                if i % 10 == 0 {
                    bar.set_message(format!(
                        "epoch {}/{} loss {:.4}",
                        epoch + 1,
                        config.epochs,
                        loss_sum / (i + 1) as f64
                    ));
                }
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let seconds = t0.elapsed().as_secs_f64();
        let (test, _) = evaluate(&mut model, loss.as_ref(), &split.test, &norm, 500)?;
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / steps_per_epoch.max(1) as f64,
            test_accuracy: test.accuracy,
            seconds,
            images_per_second: seen as f64 / seconds,
            lr,
        };
        if !config.quiet {
            say!(
                "epoch {:>3}/{}  loss {:.4}  test acc {:.2}%  balanced {:.2}%  {:.1}s  {:.0} img/s",
                record.epoch,
                config.epochs,
                record.train_loss,
                100.0 * test.accuracy,
                100.0 * test.balanced_accuracy,
                seconds,
                record.images_per_second
            );
        }
        records.push(record);
        // Checkpoint and metrics after every epoch: an interrupted run loses at most one.
        save_checkpoint(
            &ck_path,
            &checkpoint_of(&model, opt.as_ref(), epoch + 1, step),
        )?;
        write_json(&metrics_path, &serde_json::json!({ "epochs": records }))?;
    }
    let (test, _) = evaluate(&mut model, loss.as_ref(), &split.test, &norm, 500)?;
    let (train_eval, _) = evaluate(&mut model, loss.as_ref(), &split.train, &norm, 500)?;
    let summary = RunSummary {
        out_dir: out_dir.to_path_buf(),
        epochs: records,
        test,
        train: train_eval,
        train_class_counts: counts,
        seconds: started.elapsed().as_secs_f64(),
    };
    write_json(&metrics_path, &summary)?;
    draw_plots(out_dir, &summary, &split.test.class_names)?;
    {
        say!(
            "test accuracy {:.2}% (balanced {:.2}%) after {} epochs in {:.1}s; outputs in {}",
            100.0 * summary.test.accuracy,
            100.0 * summary.test.balanced_accuracy,
            summary.epochs.len(),
            summary.seconds,
            out_dir.display()
        );
    }
    Ok(summary)
}

fn progress_bar(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {pos}/{len} images, {per_sec}, eta {eta}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    bar.set_style(style);
    bar
}

fn draw_plots(dir: &Path, s: &RunSummary, class_names: &[String]) -> Result<(), TrainError> {
    let losses: Vec<f64> = s.epochs.iter().map(|e| e.train_loss).collect();
    let accs: Vec<f64> = s.epochs.iter().map(|e| 100.0 * e.test_accuracy).collect();
    plots::line_chart(&dir.join("loss.png"), "training loss", "loss", &losses)?;
    plots::line_chart(
        &dir.join("accuracy.png"),
        "test accuracy",
        "accuracy (%)",
        &accs,
    )?;
    plots::bar_chart(
        &dir.join("per_class_accuracy.png"),
        "per-class test accuracy",
        class_names,
        &s.test.per_class_accuracy,
    )?;
    plots::heatmap(
        &dir.join("p_bar_train.png"),
        "class-averaged probabilities, training set",
        &s.train.p_bar,
    )?;
    plots::heatmap(
        &dir.join("p_bar_test.png"),
        "class-averaged probabilities, test set",
        &s.test.p_bar,
    )
}

/// A saved run, rebuilt: its configuration, data, loss and model with the saved weights.
struct SavedRun {
    split: Split,
    loss: Box<dyn Loss<f32>>,
    model: Sequential<f32>,
    norm: Normalization,
}

fn open_run(dir: &Path) -> Result<SavedRun, TrainError> {
    let config = read_config(dir)?;
    let split = load_data(&config)?;
    let counts = split.train.class_counts();
    let loss = build_loss::<f32>(&config.loss, &counts)?;
    let outputs = model_outputs(split.train.classes, loss.as_ref());
    let mut model = models::build::<f32>(&config.model, split.train.shape, outputs, config.seed)?;
    let ck_path = dir.join("model.safetensors");
    load_model_tensors(&mut model, &load_checkpoint(&ck_path)?, &ck_path)?;
    let norm = Normalization::of(&split.train);
    Ok(SavedRun {
        split,
        loss,
        model,
        norm,
    })
}

/// Test-set metrics of the run saved in `dir`.
pub fn evaluate_run(dir: &Path) -> Result<Evaluation, TrainError> {
    let mut r = open_run(dir)?;
    Ok(evaluate(&mut r.model, r.loss.as_ref(), &r.split.test, &r.norm, 500)?.0)
}

/// The stationarity audit of the run saved in `dir` on its training set (eval mode, no
/// augmentation); also writes `audit.json` there.
pub fn audit_run(dir: &Path) -> Result<Audit, TrainError> {
    let mut r = open_run(dir)?;
    let Some(spec) = r.loss.audit_spec() else {
        return Err(TrainError::Config {
            path: dir.join("config.json"),
            reason: format!(
                "the paper gives no stationarity condition for --loss {}",
                r.loss.name()
            ),
        });
    };
    let (_, probs) = evaluate(&mut r.model, r.loss.as_ref(), &r.split.train, &r.norm, 500)?;
    let outputs = probs.len() / r.split.train.len().max(1);
    let a = audit(&spec, &probs, outputs, &r.split.train.labels)?;
    write_json(&dir.join("audit.json"), &a)?;
    Ok(a)
}
