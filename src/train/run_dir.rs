//! A run directory: `config.json` (what the run is), `metrics.json` (what it measured),
//! `model.safetensors` (model and optimizer state after the last completed epoch). Every
//! file is written atomically, so an interrupted run loses at most the epoch in progress.

use super::checkpoint::{self, load_checkpoint, save_checkpoint, Checkpoint, OPTIMIZER_PREFIX};
use super::{EpochRecord, TrainConfig, TrainError};
use crate::nn::{Module, Sequential, TensorKind};
use crate::optim::Optimizer;
use crate::tensor::Tensor;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The files of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunDir {
    /// The directory.
    pub path: PathBuf,
}

impl RunDir {
    /// The run directory at `path` (not created until written to).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RunDir { path: path.into() }
    }

    /// `config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.json")
    }

    /// `metrics.json`.
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join("metrics.json")
    }

    /// `model.safetensors`.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.path.join("model.safetensors")
    }

    /// Creates the directory.
    pub fn create(&self) -> Result<(), TrainError> {
        std::fs::create_dir_all(&self.path).map_err(|e| TrainError::io(&self.path, e))
    }

    /// Writes `value` as pretty JSON to `name` in the directory, atomically.
    pub fn write_json(&self, name: &str, value: &impl Serialize) -> Result<(), TrainError> {
        let text = serde_json::to_string_pretty(value).expect("run records serialise");
        checkpoint::write_atomically(&self.path.join(name), text.as_bytes())
    }

    /// The configuration recorded in `config.json`.
    pub fn read_config(&self) -> Result<TrainConfig, TrainError> {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        let bad = |e: serde_json::Error| TrainError::Config {
            path: path.clone(),
            reason: e.to_string(),
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
        serde_json::from_value(v["train"].clone()).map_err(bad)
    }

    /// The epoch records of `metrics.json`, at most `epochs` of them (none if unreadable).
    pub fn read_epoch_records(&self, epochs: usize) -> Vec<EpochRecord> {
        let Ok(text) = std::fs::read_to_string(self.metrics_path()) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let mut records: Vec<EpochRecord> =
            serde_json::from_value(v["epochs"].clone()).unwrap_or_default();
        records.truncate(epochs);
        records
    }

    /// Saves model and optimizer state after `epoch` epochs and `step` steps.
    pub fn save_checkpoint(
        &self,
        model: &Sequential<f32>,
        optimizer: &dyn Optimizer<f32>,
        epoch: usize,
        step: usize,
    ) -> Result<(), TrainError> {
        save_checkpoint(
            &self.checkpoint_path(),
            &checkpoint_of(model, optimizer, epoch, step),
        )
    }

    /// Loads the saved model tensors into `model`.
    pub fn load_model(&self, model: &mut Sequential<f32>) -> Result<(), TrainError> {
        let path = self.checkpoint_path();
        load_model_tensors(model, &load_checkpoint(&path)?, &path)
    }

    /// Loads model and optimizer state; returns the epochs and steps completed.
    pub fn load_training_state(
        &self,
        model: &mut Sequential<f32>,
        optimizer: &mut dyn Optimizer<f32>,
    ) -> Result<(usize, usize), TrainError> {
        let path = self.checkpoint_path();
        let ck = load_checkpoint(&path)?;
        load_model_tensors(model, &ck, &path)?;
        let state = ck
            .tensors
            .iter()
            .filter_map(|(n, _, v)| {
                n.strip_prefix(OPTIMIZER_PREFIX)
                    .map(|n| (n.to_string(), v.clone()))
            })
            .collect();
        optimizer.load_state(state)?;
        let meta = |k: &str| -> Result<usize, TrainError> {
            ck.metadata
                .get(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| TrainError::Checkpoint {
                    path: path.clone(),
                    reason: format!("no {k} count in the metadata"),
                })
        };
        Ok((meta("epoch")?, meta("step")?))
    }
}

/// The model's tensors and the optimizer's state as a checkpoint.
pub fn checkpoint_of(
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

/// The commit of the working directory, or `None` outside a git checkout.
pub fn git_revision(dir: &Path) -> Option<String> {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
}
