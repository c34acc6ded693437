//! Assembling a run from its configuration: the data, then model + loss + optimizer. The
//! same functions set up a new run, resume one, and reopen a saved one for evaluation.

use super::{denormals, DatasetKind, TrainConfig, TrainError};
use crate::data::{
    load_cifar10, load_cifar100, load_idx_dir, load_image_folder, DataError, Dataset, Split,
};
use crate::loss::{build_loss, Loss};
use crate::nn::{Architecture, Module};
use crate::optim::Optimizer;

/// Loads the data set of `config` and applies its imbalance profile and limits.
pub fn load_data(config: &TrainConfig) -> Result<Split, TrainError> {
    let dir = config
        .data_dir
        .as_deref()
        .ok_or_else(|| DataError::NoDirectory(config.dataset.to_string()))?;
    let split = match config.dataset {
        DatasetKind::Mnist => load_idx_dir(dir)?,
        DatasetKind::Cifar10 => load_cifar10(dir)?,
        DatasetKind::Cifar100 => load_cifar100(dir)?,
        DatasetKind::Folder => load_image_folder(
            dir,
            [
                config.channels,
                config.image_size.height,
                config.image_size.width,
            ],
        )?,
    };
    if split.train.is_empty() || split.test.is_empty() {
        let which = if split.train.is_empty() {
            "training"
        } else {
            "test"
        };
        return Err(
            DataError::Empty(format!("{}: the {which} set holds no image", dir.display())).into(),
        );
    }
    prepare_split(config, &split)
}

/// Applies the imbalance profile and the limits of `config` to an already loaded data set.
pub fn prepare_split(config: &TrainConfig, split: &Split) -> Result<Split, TrainError> {
    let mut split = config.imbalance.apply(split, config.seed)?;
    let first = |d: &Dataset, n: usize| d.subset(&(0..n.min(d.len())).collect::<Vec<_>>());
    if let Some(n) = config.train_limit {
        split.train = first(&split.train, n);
    }
    if let Some(n) = config.test_limit {
        split.test = first(&split.test, n);
    }
    if let Some(n) = config.validation {
        let len = split.train.len();
        if n >= len {
            return Err(DataError::Empty(format!(
                "a validation split of {n} images leaves none of the {len} training images to train on"
            ))
            .into());
        }
        split.test = split.train.subset(&(len - n..len).collect::<Vec<_>>());
        split.train = first(&split.train, len - n);
    }
    // A class without a training image has no gradient pulling it up, and its class
    // weight (inverse frequency) would be infinite: never a silent part of a run.
    let counts = split.train.class_counts();
    if let Some(empty) = counts.iter().position(|&n| n == 0) {
        let by = match config.train_limit {
            Some(n) => format!("the first {n} training images (--train-limit)"),
            None => "the training set".into(),
        };
        let after = if config.imbalance == crate::data::imbalance::Imbalance::None {
            String::new()
        } else {
            format!(" after imbalance profile {}", config.imbalance)
        };
        return Err(DataError::Empty(format!(
            "{by}{after} hold no image of class {empty} ({}); every class needs one",
            split.train.class_names[empty]
        ))
        .into());
    }
    if split.train.is_empty() {
        return Err(DataError::Empty("the training set holds no image".into()).into());
    }
    Ok(split)
}

/// Outputs of the model: one logit for a two-class problem under a loss that models it
/// with a single sigmoid, one per class otherwise.
pub fn model_outputs(classes: usize, loss: &dyn Loss<f32>) -> usize {
    if classes == 2 && loss.one_logit_for_two_classes() {
        1
    } else {
        classes
    }
}

/// What a run trains: the model, its loss and the optimizer (with empty state).
pub struct Assembly {
    /// The network, initialised from the run's seed.
    pub model: Box<dyn Module<f32>>,
    /// The loss, with class weights from the training set's counts.
    pub loss: Box<dyn Loss<f32>>,
    /// The optimizer.
    pub optimizer: Box<dyn Optimizer<f32>>,
}

/// Builds model, loss and optimizer of `config` for the training set `train`.
pub fn assemble(config: &TrainConfig, train: &Dataset) -> Result<Assembly, TrainError> {
    assemble_with(config, &config.model_spec(), train)
}

/// [`assemble`] with the model built by `architecture` instead of `config.model`.
pub fn assemble_with(
    config: &TrainConfig,
    architecture: &dyn Architecture,
    train: &Dataset,
) -> Result<Assembly, TrainError> {
    if config.batch_size == 0 {
        return Err(TrainError::Invalid(
            "the batch size must be at least 1".into(),
        ));
    }
    let loss: Box<dyn Loss<f32>> = build_loss(&config.loss, &train.class_counts())?;
    let outputs = model_outputs(train.classes, loss.as_ref());
    let model = architecture.build(train.shape, outputs, config.seed)?;
    Ok(Assembly {
        model,
        loss,
        optimizer: config.optimizer_settings().build(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, first_pixel: u8) -> Dataset {
        Dataset {
            pixels: (0..n).map(|i| first_pixel.wrapping_add(i as u8)).collect(),
            labels: (0..n).map(|i| i % 2).collect(),
            shape: [1, 1, 1],
            classes: 2,
            class_names: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn validation_holds_out_the_last_training_images_in_place_of_the_test_set() {
        let split = Split {
            train: data(10, 0),
            test: data(4, 100),
        };
        let config = TrainConfig {
            train_limit: Some(8),
            validation: Some(3),
            ..TrainConfig::default()
        };
        let s = prepare_split(&config, &split).unwrap();
        // The limit first (images 0..8), then the last 3 of those are held out.
        assert_eq!(s.train.pixels, vec![0, 1, 2, 3, 4]);
        assert_eq!(s.test.pixels, vec![5, 6, 7]);
        assert_eq!(s.test.labels, vec![1, 0, 1]);
        // Nothing left to train on is an error, not an empty run.
        let all = TrainConfig {
            validation: Some(10),
            ..TrainConfig::default()
        };
        let err = prepare_split(&all, &split).unwrap_err().to_string();
        assert!(err.contains("validation split of 10"), "{err}");
    }
}
