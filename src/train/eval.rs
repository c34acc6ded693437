//! Evaluation: metrics of a model on a data set, and the evaluation and stationarity audit
//! of a saved run.

use super::collective::{shard, Collective, Local};
use super::{assemble_with, load_data, RunDir, TrainConfig, TrainError};
use super::{evaluation, predictions, Evaluation};
use crate::autograd::no_grad;
use crate::data::{Augment, Batches, Dataset, Normalization, Split};
use crate::loss::{audit, Audit, Loss};
use crate::nn::{Architecture, Module};
use std::path::{Path, PathBuf};

/// Evaluates `model` in eval mode, without gradients, on `data`: metrics, and the
/// probabilities `[N, outputs]` the loss models. The model's mode is restored afterwards.
pub fn evaluate(
    model: &mut dyn Module<f32>,
    loss: &dyn Loss<f32>,
    data: &Dataset,
    norm: &Normalization,
    batch_size: usize,
) -> Result<(Evaluation, Vec<f64>), TrainError> {
    evaluate_sharded(&Local, model, loss, data, norm, batch_size)
}

/// [`evaluate`] with the data split across the ranks of `comm`: each rank predicts its
/// contiguous shard, the predictions are gathered in order, and every rank computes the
/// same metrics (the loss is the mean of the ranks' batch means, weighted by batches).
pub fn evaluate_sharded(
    comm: &dyn Collective,
    model: &mut dyn Module<f32>,
    loss: &dyn Loss<f32>,
    data: &Dataset,
    norm: &Normalization,
    batch_size: usize,
) -> Result<(Evaluation, Vec<f64>), TrainError> {
    let was_training = model.is_training();
    model.set_training(false);
    let local = if comm.size() == 1 {
        predict(model, loss, data, norm, batch_size)
    } else {
        let (lo, len) = shard(data.len(), comm.rank(), comm.size());
        predict(
            model,
            loss,
            &data.subset(&(lo..lo + len).collect::<Vec<_>>()),
            norm,
            batch_size,
        )
    };
    model.set_training(was_training);
    // Every rank takes part in the gathers, even after a local error.
    let failed = comm.any(local.is_err());
    let (logits, probs, mut sums) = local?;
    if failed {
        return Err(TrainError::Invalid(
            "evaluation failed on another rank".into(),
        ));
    }
    let (logits, probs) = (comm.all_gather(&logits), comm.all_gather(&probs));
    comm.all_reduce_sum(&mut sums);
    let outputs = logits.len() / data.len().max(1);
    // The logits were f32: the round trip through f64 is exact.
    let logits: Vec<f32> = logits.iter().map(|&v| v as f32).collect();
    let preds = predictions(&logits, outputs.max(1));
    let e = evaluation(
        &preds,
        &probs,
        outputs.max(1),
        &data.labels,
        data.classes,
        sums[0] / sums[1].max(1.0),
    );
    Ok((e, probs))
}

/// Logits and modelled probabilities of every image (row-major), and `[Σ batch losses,
/// batches]`.
type Predictions = (Vec<f64>, Vec<f64>, [f64; 2]);

fn predict(
    model: &mut dyn Module<f32>,
    loss: &dyn Loss<f32>,
    data: &Dataset,
    norm: &Normalization,
    batch_size: usize,
) -> Result<Predictions, TrainError> {
    no_grad(|| {
        let (mut logits, mut probs, mut loss_sum, mut batches) = (Vec::new(), Vec::new(), 0.0, 0);
        for (x, y) in Batches::new(data, batch_size, None, 0, norm, Augment::default()) {
            let z = model.forward(&x)?;
            loss_sum += loss.forward(&z, &y)?.item() as f64;
            batches += 1;
            probs.extend(loss.probabilities(&z)?.values().iter().map(|&p| p as f64));
            logits.extend(z.values().iter().map(|&v| v as f64));
        }
        Ok((logits, probs, [loss_sum, batches as f64]))
    })
}

/// A saved run, rebuilt: its configuration, data, loss and model with the saved weights.
pub struct SavedRun {
    /// The run's configuration.
    pub config: TrainConfig,
    /// Its data, with the imbalance profile and limits applied.
    pub split: Split,
    /// Its loss.
    pub loss: Box<dyn Loss<f32>>,
    /// The model with the weights of the last completed epoch.
    pub model: Box<dyn Module<f32>>,
    /// Normalisation by the training set's statistics.
    pub norm: Normalization,
    /// The run directory.
    pub dir: PathBuf,
}

impl SavedRun {
    /// Reopens the run in `dir`. `data_dir` replaces the recorded data directory (for a
    /// run whose data has moved, or that recorded none).
    pub fn open(dir: &Path, data_dir: Option<&Path>) -> Result<SavedRun, TrainError> {
        let run = RunDir::new(dir);
        let config = run.read_config()?;
        Self::open_with(dir, data_dir, &config.model)
    }

    /// [`SavedRun::open`] for a run trained with [`crate::train::train_model_until`]: the
    /// model is built by `architecture`, which must be the one the run recorded.
    pub fn open_with(
        dir: &Path,
        data_dir: Option<&Path>,
        architecture: &dyn Architecture,
    ) -> Result<SavedRun, TrainError> {
        let run = RunDir::new(dir);
        let mut config = run.read_config()?;
        run.check_architecture(architecture)?;
        if let Some(d) = data_dir {
            config.data_dir = Some(d.to_path_buf());
        }
        let split = load_data(&config)?;
        let mut assembly = assemble_with(&config, architecture, &split.train)?;
        run.load_model(assembly.model.as_mut())?;
        let norm = Normalization::of(&split.train);
        Ok(SavedRun {
            config,
            split,
            loss: assembly.loss,
            model: assembly.model,
            norm,
            dir: dir.to_path_buf(),
        })
    }

    /// Test-set metrics of the saved model.
    pub fn evaluate(&mut self) -> Result<Evaluation, TrainError> {
        let r = self;
        Ok(evaluate(
            r.model.as_mut(),
            r.loss.as_ref(),
            &r.split.test,
            &r.norm,
            500,
        )?
        .0)
    }

    /// The stationarity audit of the saved model on its training set (eval mode, no
    /// augmentation); also writes `audit.json` to the run directory.
    pub fn audit(&mut self) -> Result<Audit, TrainError> {
        let dir = self.dir.clone();
        let r = self;
        let Some(spec) = r.loss.audit_spec() else {
            return Err(TrainError::RunConfig {
                path: dir.join("config.json"),
                reason: format!(
                    "the paper gives no stationarity condition for the loss {}",
                    r.loss.name()
                ),
            });
        };
        let (_, probs) = evaluate(
            r.model.as_mut(),
            r.loss.as_ref(),
            &r.split.train,
            &r.norm,
            500,
        )?;
        let outputs = probs.len() / r.split.train.len().max(1);
        let a = audit(&spec, &probs, outputs, &r.split.train.labels)?;
        RunDir::new(&dir).write_json("audit.json", &a)?;
        Ok(a)
    }
}

/// Test-set metrics of the run saved in `dir` (see [`SavedRun::open`] for `data_dir`).
pub fn evaluate_run(dir: &Path, data_dir: Option<&Path>) -> Result<Evaluation, TrainError> {
    SavedRun::open(dir, data_dir)?.evaluate()
}

/// The stationarity audit of the run saved in `dir` on its training set (eval mode, no
/// augmentation); also writes `audit.json` there.
pub fn audit_run(dir: &Path, data_dir: Option<&Path>) -> Result<Audit, TrainError> {
    SavedRun::open(dir, data_dir)?.audit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::Sml;
    use crate::nn::models::ModelKind;

    #[test]
    fn evaluate_restores_the_mode_the_model_was_in() {
        let data = Dataset {
            pixels: (0..24).map(|i| (i * 10) as u8).collect(),
            labels: vec![0, 1, 0, 1, 0, 1],
            shape: [1, 2, 2],
            classes: 2,
            class_names: vec!["a".into(), "b".into()],
        };
        let norm = Normalization::of(&data);
        let mut model = ModelKind::Linear.build::<f32>([1, 2, 2], 2, 0).unwrap();
        for mode in [false, true] {
            model.set_training(mode);
            let (e, probs) = evaluate(&mut model, &Sml::default(), &data, &norm, 4).unwrap();
            assert_eq!(model.is_training(), mode);
            assert_eq!(probs.len(), 12);
            assert_eq!(e.counts, vec![3, 3]);
        }
    }
}
