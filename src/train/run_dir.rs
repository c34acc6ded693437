//! A run directory: `config.json` (what the run is), `metrics.json` (what it measured),
//! `model.safetensors` (model and optimizer state after the last completed epoch). Every
//! file is written atomically, so an interrupted run loses at most the epoch in progress.

use super::checkpoint::{self, load_checkpoint, save_checkpoint, Checkpoint, OPTIMIZER_PREFIX};
use super::{EpochRecord, TrainConfig, TrainError};
use crate::nn::{Architecture, Module, TensorKind};
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

    /// The files a run writes (removed by [`RunDir::clear`]).
    pub const RUN_FILES: [&'static str; 9] = [
        "config.json",
        "metrics.json",
        "model.safetensors",
        "audit.json",
        "loss.png",
        "accuracy.png",
        "per_class_accuracy.png",
        "p_bar_train.png",
        "p_bar_test.png",
    ];

    /// Creates the directory, and removes temporary files left by writes that were
    /// interrupted (`.<name>.tmp`, see `checkpoint::write_atomically`).
    pub fn create(&self) -> Result<(), TrainError> {
        std::fs::create_dir_all(&self.path).map_err(|e| TrainError::io(&self.path, e))?;
        let entries = std::fs::read_dir(&self.path).map_err(|e| TrainError::io(&self.path, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// Whether the directory exists and holds anything.
    pub fn is_non_empty(&self) -> bool {
        std::fs::read_dir(&self.path).is_ok_and(|mut d| d.next().is_some())
    }

    /// Removes the files of an earlier run (only those; anything else stays).
    pub fn clear(&self) -> Result<(), TrainError> {
        for name in Self::RUN_FILES {
            let path = self.path.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(TrainError::io(&path, e)),
            }
        }
        Ok(())
    }

    /// Writes `value` as pretty JSON to `name` in the directory, atomically.
    pub fn write_json(&self, name: &str, value: &impl Serialize) -> Result<(), TrainError> {
        let text = serde_json::to_string_pretty(value).expect("run records serialise");
        checkpoint::write_atomically(&self.path.join(name), text.as_bytes())
    }

    /// The configuration recorded in `config.json`, checked against the one the checkpoint
    /// carries (when there is a checkpoint): a `config.json` of another run next to this
    /// model is an error, not a silent mismatch.
    pub fn read_config(&self) -> Result<TrainConfig, TrainError> {
        let config = self.read_config_json()?;
        let ck_path = self.checkpoint_path();
        if ck_path.exists() {
            let ck = load_checkpoint(&ck_path)?;
            if let Some(saved) = checkpoint_config(&ck, &ck_path)? {
                // Resumable fields (epochs, lr) may be newer in config.json: a resume
                // records its request before the next checkpoint is written.
                if !super::resume::same_run(&saved, &config) {
                    return Err(TrainError::RunConfig {
                        path: self.config_path(),
                        reason: format!(
                            "does not belong to {} (it was written by another run)",
                            ck_path.display()
                        ),
                    });
                }
            }
        }
        Ok(config)
    }

    /// The summary in `metrics.json` when it is the finished run's: written at the end of
    /// the run whose epoch records `progress` holds (same epochs, bitwise the same losses).
    pub fn finished_summary(&self, progress: &Progress) -> Option<super::RunSummary> {
        let text = std::fs::read_to_string(self.metrics_path()).ok()?;
        let summary: super::RunSummary = serde_json::from_str(&text).ok()?;
        let same = summary.epochs.len() == progress.records.len()
            && summary.epochs.iter().zip(&progress.records).all(|(a, b)| {
                a.epoch == b.epoch && a.train_loss.to_bits() == b.train_loss.to_bits()
            });
        same.then_some(summary)
    }

    /// Records in `config.json` what a resume changes: the configuration it continues
    /// with replaces `train`, the rank count replaces `ranks`, and an entry of `history`
    /// lists each changed field as `[before, after]` with the epoch and step it applies
    /// from. Nothing is written when nothing changed.
    ///
    /// A change of rank count is refused (a [`TrainError::ResumeConflict`] on `ranks`)
    /// when the loss depends on how a batch is split (`splits_exactly` false), unless
    /// `config.allow_rank_change`.
    pub fn record_resume(
        &self,
        config: &TrainConfig,
        progress: &Progress,
        ranks: usize,
        splits_exactly: bool,
    ) -> Result<(), TrainError> {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        let mut record: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| TrainError::RunConfig {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let mut changed = serde_json::Map::new();
        // Runs recorded before the rank count was kept trained on one process.
        let saved_ranks = record["ranks"].as_u64().unwrap_or(1) as usize;
        if saved_ranks != ranks {
            if !splits_exactly && !config.allow_rank_change {
                return Err(TrainError::ResumeConflict {
                    field: "ranks".into(),
                    reason: format!(
                        "the run was trained on {saved_ranks} process(es) and its loss ({}) \
                         depends on how each batch is split among them; resuming on {ranks} \
                         would change the objective (allow_rank_change accepts and records it)",
                        config.loss.loss
                    ),
                });
            }
            changed.insert("ranks".into(), serde_json::json!([saved_ranks, ranks]));
            record["ranks"] = ranks.into();
        }
        // Compared as read back, so that a field an older record omits counts as its default.
        let then: TrainConfig =
            serde_json::from_value(record["train"].clone()).map_err(|e| TrainError::RunConfig {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        changed.extend(super::resume::changed_fields(&then, config));
        if changed.is_empty() {
            return Ok(());
        }
        record["train"] = config.record();
        let entry = serde_json::json!({
            "resumed_at_epoch": progress.epoch,
            "resumed_at_step": progress.step,
            "changed": changed,
            "command": std::env::args().collect::<Vec<_>>(),
            "git_revision": git_revision().unwrap_or_else(|| "unknown".into()),
        });
        match record["history"].as_array_mut() {
            Some(history) => history.push(entry),
            None => record["history"] = serde_json::json!([entry]),
        }
        self.write_json("config.json", &record)
    }

    /// The name of the model the run trains: `config.json`'s `architecture` when it was
    /// not a built-in model, its `train.model` otherwise.
    pub fn architecture(&self) -> Result<String, TrainError> {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| TrainError::RunConfig {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        match v["architecture"].as_str().or(v["train"]["model"].as_str()) {
            Some(name) => Ok(name.to_string()),
            None => Err(TrainError::RunConfig {
                path,
                reason: "names no model".into(),
            }),
        }
    }

    /// An error unless the run was trained with a model named as `architecture`'s.
    pub fn check_architecture(&self, architecture: &dyn Architecture) -> Result<(), TrainError> {
        let saved = self.architecture()?;
        if saved == architecture.name() {
            Ok(())
        } else {
            Err(TrainError::RunConfig {
                path: self.config_path(),
                reason: format!("the run trained model {saved}, not {}", architecture.name()),
            })
        }
    }

    /// The configuration in `config.json`, unchecked.
    fn read_config_json(&self) -> Result<TrainConfig, TrainError> {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        let bad = |e: serde_json::Error| TrainError::RunConfig {
            path: path.clone(),
            reason: e.to_string(),
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
        serde_json::from_value(v["train"].clone()).map_err(bad)
    }

    /// Saves model and optimizer state after `epoch` epochs and `step` steps, with the
    /// run's configuration and epoch records: one atomic file holds everything a resume
    /// needs, so checkpoint and history can never come from different moments.
    pub fn save_checkpoint(
        &self,
        model: &dyn Module<f32>,
        optimizer: &dyn Optimizer<f32>,
        progress: &Progress,
        config: &TrainConfig,
    ) -> Result<(), TrainError> {
        let mut ck = checkpoint_of(model, optimizer, progress.epoch, progress.step);
        // Only what is deterministic, so that the same run writes the same bytes: the
        // configuration without the output directory, the records without wall times
        // (those live in metrics.json).
        let identity = TrainConfig {
            out: None,
            ..config.clone()
        };
        let history: Vec<EpochRecord> = progress
            .records
            .iter()
            .map(|r| EpochRecord {
                seconds: None,
                images_per_second: None,
                ..r.clone()
            })
            .collect();
        ck.metadata.insert("config".into(), to_json(&identity));
        ck.metadata.insert("records".into(), to_json(&history));
        if let Some(partial) = &progress.partial {
            ck.metadata.insert("partial_epoch".into(), to_json(partial));
        }
        save_checkpoint(&self.checkpoint_path(), &ck)
    }

    /// Loads the saved model tensors into `model`.
    pub fn load_model(&self, model: &mut dyn Module<f32>) -> Result<(), TrainError> {
        let path = self.checkpoint_path();
        load_model_tensors(model, &load_checkpoint(&path)?, &path)
    }

    /// Loads model and optimizer state, checking every tensor's name, dtype and shape;
    /// returns where the run stands.
    pub fn load_training_state(
        &self,
        model: &mut dyn Module<f32>,
        optimizer: &mut dyn Optimizer<f32>,
    ) -> Result<Progress, TrainError> {
        let ck = load_checkpoint(&self.checkpoint_path())?;
        self.restore_training_state(&ck, model, optimizer)
    }

    /// [`RunDir::load_training_state`] from a checkpoint already read (by this process or,
    /// in a data-parallel job, by rank 0 and broadcast).
    pub fn restore_training_state(
        &self,
        ck: &Checkpoint,
        model: &mut dyn Module<f32>,
        optimizer: &mut dyn Optimizer<f32>,
    ) -> Result<Progress, TrainError> {
        let path = self.checkpoint_path();
        load_model_tensors(model, ck, &path)?;
        let state = ck
            .tensors
            .iter()
            .filter_map(|(n, _, v)| {
                n.strip_prefix(OPTIMIZER_PREFIX)
                    .map(|n| (n.to_string(), v.clone()))
            })
            .collect();
        let params: Vec<(String, usize)> = model
            .parameters()
            .into_iter()
            .map(|(n, t)| (n, t.numel()))
            .collect();
        optimizer
            .load_state(state, &params)
            .map_err(|e| TrainError::Checkpoint {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let meta = |k: &str| -> Result<usize, TrainError> {
            ck.metadata
                .get(k)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| TrainError::Checkpoint {
                    path: path.clone(),
                    reason: format!("no {k} count in the metadata"),
                })
        };
        let (epoch, step) = (meta("epoch")?, meta("step")?);
        if step > 0 {
            // A run that has taken steps has momentum or moments: a checkpoint without them
            // would resume on a different trajectory with no word.
            for (name, _) in &params {
                for entry in optimizer.state_entries_for(name) {
                    if ck.get(&format!("{OPTIMIZER_PREFIX}{entry}")).is_none() {
                        return Err(TrainError::Checkpoint {
                            path: path.clone(),
                            reason: format!(
                                "no optimizer state {OPTIMIZER_PREFIX}{entry} after {step} steps; \
                                 resuming would silently restart the optimizer from zero"
                            ),
                        });
                    }
                }
            }
        }
        let parse = |key: &str| -> Result<Option<serde_json::Value>, TrainError> {
            ck.metadata
                .get(key)
                .map(|text| {
                    serde_json::from_str(text).map_err(|e| TrainError::Checkpoint {
                        path: path.clone(),
                        reason: format!("metadata {key}: {e}"),
                    })
                })
                .transpose()
        };
        let records: Vec<EpochRecord> = match parse("records")? {
            Some(v) => {
                let mut history: Vec<EpochRecord> =
                    serde_json::from_value(v).map_err(|e| TrainError::Checkpoint {
                        path: path.clone(),
                        reason: format!("metadata records: {e}"),
                    })?;
                // Wall times from metrics.json, where it agrees with the checkpoint.
                let timed = self.legacy_epoch_records().unwrap_or_default();
                for r in &mut history {
                    if let Some(t) = timed.iter().find(|t| {
                        t.epoch == r.epoch && t.train_loss.to_bits() == r.train_loss.to_bits()
                    }) {
                        (r.seconds, r.images_per_second) = (t.seconds, t.images_per_second);
                    }
                }
                history
            }
            // A checkpoint written before records were kept inside it: metrics.json.
            None => self.legacy_epoch_records()?,
        };
        let mut records = records;
        if records.len() > epoch {
            // A legacy metrics.json may hold epochs written after this checkpoint.
            records.truncate(epoch);
        }
        if records.len() != epoch {
            return Err(TrainError::Checkpoint {
                path: path.clone(),
                reason: format!("{} epoch records for {epoch} epochs", records.len()),
            });
        }
        let partial = match parse("partial_epoch")? {
            Some(v) => Some(
                serde_json::from_value(v).map_err(|e| TrainError::Checkpoint {
                    path: path.clone(),
                    reason: format!("metadata partial_epoch: {e}"),
                })?,
            ),
            None => None,
        };
        Ok(Progress {
            epoch,
            step,
            records,
            partial,
        })
    }
}

impl RunDir {
    /// The epoch records of `metrics.json` (for checkpoints that do not carry them).
    fn legacy_epoch_records(&self) -> Result<Vec<EpochRecord>, TrainError> {
        let path = self.metrics_path();
        let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
        let bad = |e: serde_json::Error| TrainError::RunConfig {
            path: path.clone(),
            reason: e.to_string(),
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
        serde_json::from_value(v["epochs"].clone()).map_err(bad)
    }
}

/// Where a run stands: what a checkpoint records besides the tensors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimisation steps taken.
    pub step: usize,
    /// The records of the completed epochs.
    pub records: Vec<EpochRecord>,
    /// The epoch in progress, when the run was stopped mid-epoch (by a signal).
    pub partial: Option<PartialEpoch>,
}

/// An epoch stopped between two steps: enough to continue it exactly.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartialEpoch {
    /// Batches of the epoch already trained on.
    pub batches: usize,
    /// Sum of their losses.
    pub loss_sum: f64,
    /// Images in them.
    pub images: usize,
    /// Seconds spent on them.
    pub seconds: f64,
    /// Sum of the loss's focus over them ([`crate::loss::Loss::focus`]; 0 when it has none).
    #[serde(default)]
    pub focus_sum: f64,
    /// Batches that had a focus.
    #[serde(default)]
    pub focus_batches: usize,
}

/// The configuration a checkpoint carries, if it carries one.
fn checkpoint_config(ck: &Checkpoint, path: &Path) -> Result<Option<TrainConfig>, TrainError> {
    ck.metadata
        .get("config")
        .map(|text| {
            serde_json::from_str(text).map_err(|e| TrainError::Checkpoint {
                path: path.to_path_buf(),
                reason: format!("metadata config: {e}"),
            })
        })
        .transpose()
}

/// A value as a JSON string, for checkpoint metadata.
fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("run records serialise")
}

/// The model's tensors and the optimizer's state as a checkpoint.
pub fn checkpoint_of(
    model: &dyn Module<f32>,
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

/// Copies the checkpoint's model tensors into `model`, checking names and shapes: every
/// model tensor must be in the file, and every tensor of the file (but the optimizer's)
/// must be the model's.
pub fn load_model_tensors(
    model: &mut dyn Module<f32>,
    ck: &Checkpoint,
    path: &Path,
) -> Result<(), TrainError> {
    let names: Vec<String> = model
        .named_tensors()
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    if let Some((stray, _, _)) = ck
        .tensors
        .iter()
        .find(|(n, _, _)| !n.starts_with(OPTIMIZER_PREFIX) && !names.contains(n))
    {
        return Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("tensor {stray} is not part of the model"),
        });
    }
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

/// The git commit this crate was built from (`-dirty` when tracked files had uncommitted
/// changes), compiled in by build.rs; `None` for a build outside a git checkout.
pub fn git_revision() -> Option<String> {
    option_env!("TENSORGRAD_BUILD_REVISION").map(str::to_string)
}
