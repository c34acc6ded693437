//! What defines a training run: [`TrainConfig`], plain typed values that the command line
//! (or any caller) fills in and `config.json` records.

use crate::data::imbalance::Imbalance;
use crate::data::{Augment, Batches, Dataset, Normalization};
use crate::loss::{LossKind, LossOptions};
use crate::nn::models::ModelKind;
use crate::optim::{LrSchedule, OptimizerKind, OptimizerSettings, Schedule};
use crate::text::{keyword_enum, serde_as_text, ParseError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

keyword_enum! {
    /// The kinds of data set a run can train on.
    pub enum DatasetKind {
        /// A directory of IDX files: MNIST, Fashion-MNIST, KMNIST.
        Mnist = "mnist",
        /// CIFAR-10's binary version.
        Cifar10 = "cifar10",
        /// CIFAR-100's binary version (fine labels).
        Cifar100 = "cifar100",
        /// An image folder: `train/<class>/*` and `test/<class>/*`.
        Folder = "folder",
    }
}

keyword_enum! {
    /// Training-time augmentation.
    pub enum Augmentation {
        /// Crop and flip for CIFAR, none otherwise.
        Auto = "auto",
        /// None.
        None = "none",
        /// Random crop after 4-pixel zero padding, and random horizontal flip.
        CropFlip = "crop-flip",
    }
}

impl Augmentation {
    /// The augmentation this choice means for `dataset`.
    pub fn resolve(self, dataset: DatasetKind) -> Augment {
        let crop_flip = Augment {
            crop_padding: 4,
            hflip: true,
        };
        match (self, dataset) {
            (Augmentation::Auto, DatasetKind::Cifar10 | DatasetKind::Cifar100)
            | (Augmentation::CropFlip, _) => crop_flip,
            (Augmentation::Auto | Augmentation::None, _) => Augment::default(),
        }
    }
}

/// Height and width of images, spelled `HxW`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageSize {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl FromStr for ImageSize {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::new(s, "expected HxW with positive integers, e.g. 32x32");
        let (h, w) = s.split_once('x').ok_or_else(bad)?;
        let (height, width) = (h.parse().map_err(|_| bad())?, w.parse().map_err(|_| bad())?);
        if height == 0 || width == 0 {
            return Err(bad());
        }
        Ok(ImageSize { height, width })
    }
}

impl fmt::Display for ImageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.height, self.width)
    }
}

serde_as_text!(ImageSize);

/// Everything that defines a training run. `config.json` records it (as the command line
/// spells each value); [`Default`] is the default run of `tensorgrad train`, except for
/// `data_dir`, which the caller supplies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Data set.
    pub dataset: DatasetKind,
    /// Directory of the data; required (the binary fills in the bundled MNIST).
    pub data_dir: Option<PathBuf>,
    /// Image size for [`DatasetKind::Folder`] (recorded for that data set only).
    #[serde(default = "default_image_size")]
    pub image_size: ImageSize,
    /// Channels (1 or 3) for [`DatasetKind::Folder`] (recorded for that data set only).
    #[serde(default = "default_channels")]
    pub channels: usize,
    /// Model.
    pub model: ModelKind,
    /// Start each residual block's last batch norm at `γ = 0` (the ResNets only; see
    /// [`crate::nn::resnet::ResnetOptions`]). Recorded only when set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub zero_init_residual: bool,
    /// Loss and its options.
    pub loss: LossOptions,
    /// Train on when the run breaks the divergence rule ([`super::divergence`]): for
    /// studying divergence. The run still records that it diverged. Recorded only when set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_divergence: bool,
    /// Imbalance profile applied to the training set.
    pub imbalance: Imbalance,
    /// Epochs to train (the total, when resuming).
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Base learning rate.
    pub lr: f64,
    /// Learning-rate schedule after warm-up.
    pub schedule: Schedule,
    /// Epochs of linear learning-rate warm-up.
    pub warmup_epochs: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Nesterov momentum (SGD).
    pub nesterov: bool,
    /// Weight decay of weights (never of biases or normalisation parameters).
    pub weight_decay: f64,
    /// Augmentation.
    pub augment: Augmentation,
    /// Seed of initialisation, shuffling, augmentation and imbalance subsampling.
    pub seed: u64,
    /// Worker threads (`None`: one per core).
    pub threads: Option<usize>,
    /// Use only the first N training images (quick runs, tests).
    pub train_limit: Option<usize>,
    /// Use only the first N test images.
    pub test_limit: Option<usize>,
    /// Hold out the last N training images (after the imbalance profile and the training
    /// limit) and evaluate on them instead of the test set: a validation split, for
    /// choosing hyper-parameters without looking at the test set. Recorded only when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<usize>,
    /// Stop after this many epochs in this invocation (resume later).
    #[serde(skip)]
    pub stop_after: Option<usize>,
    /// Output directory (`None`: `runs/<model>-<loss>-seed<seed>-<time>`).
    pub out: Option<PathBuf>,
    /// Continue the run saved in this directory, with its configuration, up to `epochs`.
    #[serde(skip)]
    pub resume: Option<PathBuf>,
    /// Replace the files of an earlier run in `out` (otherwise a non-empty `out` is refused).
    #[serde(skip)]
    pub overwrite: bool,
    /// Resume on another number of ranks although the loss depends on how a batch is split
    /// (see [`crate::loss::Loss::splits_exactly`]); the change is recorded in the run's
    /// history.
    #[serde(skip)]
    pub allow_rank_change: bool,
}

/// Largest batch size a run accepts.
pub const MAX_BATCH_SIZE: usize = 1 << 16;
/// Most worker threads a run accepts.
pub const MAX_THREADS: usize = 1024;
/// Most epochs a run accepts.
pub const MAX_EPOCHS: usize = 1_000_000;

/// A configuration value out of range, named by its field.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The field of [`TrainConfig`] (the command line's flag with `_` for `-`).
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn default_image_size() -> ImageSize {
    ImageSize {
        height: 32,
        width: 32,
    }
}

fn default_channels() -> usize {
    3
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            dataset: DatasetKind::Mnist,
            data_dir: None,
            image_size: default_image_size(),
            channels: default_channels(),
            model: ModelKind::Lenet,
            zero_init_residual: false,
            loss: LossOptions::new(LossKind::default()),
            imbalance: Imbalance::None,
            epochs: 5,
            batch_size: 64,
            optimizer: OptimizerKind::Sgd,
            lr: 0.01,
            schedule: Schedule::Cosine,
            warmup_epochs: 0.0,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
            augment: Augmentation::Auto,
            seed: 0,
            threads: None,
            train_limit: None,
            test_limit: None,
            validation: None,
            stop_after: None,
            out: None,
            resume: None,
            overwrite: false,
            allow_divergence: false,
            allow_rank_change: false,
        }
    }
}

impl TrainConfig {
    /// Checks every value: finite, in range, and applicable to the chosen data set and
    /// optimizer. `train` calls it; the command line calls it to report flags early.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field: &'static str, reason: String| Err(ConfigError { field, reason });
        let in_range = |v: usize, lo: usize, hi: usize| (lo..=hi).contains(&v);
        if !in_range(self.epochs, 1, MAX_EPOCHS) {
            return err(
                "epochs",
                format!("{} is not in 1..={MAX_EPOCHS}", self.epochs),
            );
        }
        if !in_range(self.batch_size, 1, MAX_BATCH_SIZE) {
            return err(
                "batch_size",
                format!("{} is not in 1..={MAX_BATCH_SIZE}", self.batch_size),
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return err("lr", format!("{} is not a finite number > 0", self.lr));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return err("momentum", format!("{} is not in [0, 1)", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return err(
                "weight_decay",
                format!("{} is not a finite number ≥ 0", self.weight_decay),
            );
        }
        if !(self.warmup_epochs.is_finite()
            && self.warmup_epochs >= 0.0
            && self.warmup_epochs <= self.epochs as f64)
        {
            return err(
                "warmup_epochs",
                format!(
                    "{} is not in [0, epochs = {}]",
                    self.warmup_epochs, self.epochs
                ),
            );
        }
        if let Some(t) = self.threads {
            if !in_range(t, 1, MAX_THREADS) {
                return err("threads", format!("{t} is not in 1..={MAX_THREADS}"));
            }
        }
        for (field, limit) in [
            ("train_limit", self.train_limit),
            ("test_limit", self.test_limit),
            ("validation", self.validation),
        ] {
            if limit == Some(0) {
                return err(field, "0 would leave no images".into());
            }
        }
        if self.stop_after == Some(0) {
            return err("stop_after", "0 epochs would train nothing".into());
        }
        // Before anything is recorded: a JSON round trip would turn NaN into "not given".
        if let Err(e) = self.loss.validate() {
            return err(e.param.as_str(), e.reason);
        }
        if self.nesterov && self.optimizer != OptimizerKind::Sgd {
            return err(
                "nesterov",
                format!("applies to sgd only, not to {}", self.optimizer),
            );
        }
        if self.dataset == DatasetKind::Folder {
            if !matches!(self.channels, 1 | 3) {
                return err("channels", format!("{} is not 1 or 3", self.channels));
            }
            let ImageSize { height, width } = self.image_size;
            if height.max(width) > crate::data::MAX_IMAGE_SIDE {
                return err(
                    "image_size",
                    format!(
                        "{} exceeds {} pixels a side",
                        self.image_size,
                        crate::data::MAX_IMAGE_SIDE
                    ),
                );
            }
        }
        Ok(())
    }

    /// The configuration as `config.json` records it: every field as the command line
    /// spells it, without the folder-only `image_size` and `channels` for other data sets
    /// (they read back as their defaults).
    pub fn record(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("configs serialise");
        if self.dataset != DatasetKind::Folder {
            if let Some(fields) = v.as_object_mut() {
                fields.remove("image_size");
                fields.remove("channels");
            }
        }
        v
    }

    /// The optimizer's settings.
    pub fn optimizer_settings(&self) -> OptimizerSettings {
        OptimizerSettings {
            kind: self.optimizer,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
        }
    }

    /// The augmentation of the training batches.
    pub fn augmentation(&self) -> Augment {
        self.augment.resolve(self.dataset)
    }

    /// The learning rate of every step, for a training set of `train_images` images.
    pub fn lr_schedule(&self, train_images: usize) -> LrSchedule {
        let steps_per_epoch = train_images.div_ceil(self.batch_size.max(1));
        LrSchedule {
            base: self.lr,
            schedule: self.schedule.clone(),
            warmup_steps: (self.warmup_epochs * steps_per_epoch as f64).round() as usize,
            steps_per_epoch,
            total_steps: steps_per_epoch * self.epochs,
        }
    }

    /// The training batches of epoch `epoch` (from 0): the run's seeded shuffle and its
    /// augmentation.
    pub fn epoch_batches<'a>(
        &self,
        train: &'a Dataset,
        norm: &'a Normalization,
        epoch: usize,
    ) -> Batches<'a> {
        Batches::new(
            train,
            self.batch_size,
            Some(self.seed),
            epoch,
            norm,
            self.augmentation(),
        )
    }

    /// The model with its construction options, as [`crate::train::assemble`] builds it.
    pub fn model_spec(&self) -> crate::nn::models::ModelSpec {
        crate::nn::models::ModelSpec {
            kind: self.model,
            options: crate::nn::resnet::ResnetOptions {
                zero_init_residual: self.zero_init_residual,
            },
        }
    }

    /// `runs/<model>-<loss>-seed<seed>-<unix time>`, the output directory when none is given.
    pub fn default_out_dir(&self) -> PathBuf {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from("runs").join(format!(
            "{}-{}-seed{}-{t}",
            self.model, self.loss.loss, self.seed
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_spells_values_as_the_command_line() {
        let c = TrainConfig::default();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["dataset"], "mnist");
        assert_eq!(v["model"], "lenet");
        assert_eq!(v["loss"]["loss"], "lgl-inr");
        assert_eq!(v["imbalance"], "none");
        assert_eq!(v["optimizer"], "sgd");
        assert_eq!(v["schedule"], "cosine");
        assert_eq!(v["augment"], "auto");
        assert_eq!(v["image_size"], "32x32");
        assert!(v.get("resume").is_none() && v.get("stop_after").is_none());
        assert_eq!(serde_json::from_value::<TrainConfig>(v).unwrap(), c);
    }

    #[test]
    fn a_config_json_written_before_typed_options_still_reads() {
        // The "train" record of a run directory written by an earlier version.
        let old = r#"{"dataset":"mnist","data_dir":null,"image_size":"32x32","channels":3,
            "model":"lenet","loss":{"loss":"lgl","class_weights":"inverse","weight_form":null,
            "beta":null,"detach_weight":false,"gamma":null,"alpha":null,"label_smoothing":null,
            "logit_adjust":null,"reduction":null},"imbalance":"pair:4,9,100","epochs":5,
            "batch_size":64,"optimizer":"sgd","lr":0.01,"schedule":"step:3,0.5",
            "warmup_epochs":0.0,"momentum":0.9,"nesterov":false,"weight_decay":0.0005,
            "augment":"auto","seed":0,"threads":null,"train_limit":null,"test_limit":null,
            "out":"runs/x"}"#;
        let c: TrainConfig = serde_json::from_str(old).unwrap();
        assert_eq!(c.loss.loss.name(), "lgl");
        assert_eq!(
            c.imbalance,
            Imbalance::Pair {
                positive: 4,
                negative: 9,
                ratio: 100.0
            }
        );
        assert_eq!(
            c.schedule,
            Schedule::Step {
                every: 3,
                gamma: 0.5
            }
        );
        let bad = old.replace("\"sgd\"", "\"rmsprop\"");
        let e = serde_json::from_str::<TrainConfig>(&bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"rmsprop\": expected one of sgd, adam, adamw"),
            "{e}"
        );
    }

    #[test]
    fn non_finite_loss_options_are_refused_or_kept_never_dropped() {
        let with = |loss: &str, f: &dyn Fn(&mut LossOptions)| {
            let mut options = LossOptions::new(loss.parse::<LossKind>().unwrap());
            f(&mut options);
            TrainConfig {
                loss: options,
                ..TrainConfig::default()
            }
        };
        let refused = [
            (with("lgl-inr", &|o| o.beta = Some(f64::NAN)), "beta"),
            (with("lgl-inr", &|o| o.beta = Some(f64::INFINITY)), "beta"),
            (with("focal", &|o| o.gamma = Some(f64::INFINITY)), "gamma"),
            (with("focal", &|o| o.alpha = Some(f64::NAN)), "alpha"),
            (
                with("focal-sigmoid", &|o| o.alpha = Some(f64::NAN)),
                "alpha",
            ),
            (
                with("sml", &|o| o.label_smoothing = Some(f64::NAN)),
                "label-smoothing",
            ),
            (
                with("sml", &|o| o.logit_adjust = Some(f64::INFINITY)),
                "logit-adjust",
            ),
        ];
        for (config, field) in refused {
            let e = config.validate().unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.reason.contains("is not"), "{e}");
        }
        // α = ∞ is allowed for the alpha-loss, and the record reads back equal.
        let infinite = with("alpha-loss", &|o| o.alpha = Some(f64::INFINITY));
        infinite.validate().unwrap();
        let json = serde_json::to_string(&infinite).unwrap();
        assert!(json.contains(r#""alpha":"inf""#), "{json}");
        let back: TrainConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, infinite);
        back.validate().unwrap();
    }

    #[test]
    fn augmentation_resolves_per_data_set() {
        assert_eq!(
            Augmentation::Auto.resolve(DatasetKind::Cifar10),
            Augment {
                crop_padding: 4,
                hflip: true
            }
        );
        assert_eq!(
            Augmentation::Auto.resolve(DatasetKind::Mnist),
            Augment::default()
        );
        assert!(Augmentation::CropFlip.resolve(DatasetKind::Mnist).hflip);
        assert_eq!("64x48".parse::<ImageSize>().unwrap().to_string(), "64x48");
        assert!("64".parse::<ImageSize>().is_err() && "0x4".parse::<ImageSize>().is_err());
    }
}
