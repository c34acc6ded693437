//! What a run leaves in its folder for the analysis and the report: `trained.json` (a
//! finished run) or `failed.json` (a non-finite loss), each with the protocol's provenance.

use super::{read_json, PlannedRun};
use crate::train::{RunSummary, TrainError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where, how and by what a run was trained: the protocol's provenance fields.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Provenance {
    /// The full command line of the invocation that finished the run.
    #[serde(default)]
    pub command: Vec<String>,
    /// Runs trained side by side (`--jobs`).
    #[serde(default)]
    pub jobs: usize,
    /// The machine's CPU model.
    #[serde(default)]
    pub cpu_model: Option<String>,
    /// Wall time of the training in that invocation (seconds; a resumed run's earlier
    /// part is in its per-epoch records).
    #[serde(default)]
    pub wall_seconds: f64,
    /// Whether that invocation continued an interrupted run.
    #[serde(default)]
    pub resumed: bool,
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
    /// The revision the binary was built from (compiled in; `-dirty` for a changed tree).
    pub git_revision: Option<String>,
    /// Command, jobs, CPU and wall time.
    #[serde(default)]
    pub provenance: Provenance,
}

/// A run that stopped on a non-finite loss: `failed.json` in its folder. It counts as
/// diverged (docs/EXPERIMENTS.md), with the epochs it finished.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailedRun {
    /// The planned run.
    pub run: PlannedRun,
    /// The error, as the run reported it.
    pub error: String,
    /// The epochs it finished before that.
    pub epochs: Vec<crate::train::EpochRecord>,
    /// Worker threads it trained with.
    pub threads: usize,
    /// The revision the binary was built from.
    pub git_revision: Option<String>,
    /// Command, jobs, CPU and wall time.
    pub provenance: Provenance,
}

/// How a planned run ended.
#[derive(Clone, Debug)]
pub enum RunOutcome {
    /// It trained to the end (it may still have broken the divergence rule: see its
    /// summary's `divergence`).
    Trained(Box<TrainedRun>),
    /// It stopped on a non-finite loss.
    Failed(Box<FailedRun>),
}

impl RunOutcome {
    /// The planned run.
    pub fn run(&self) -> &PlannedRun {
        match self {
            RunOutcome::Trained(t) => &t.run,
            RunOutcome::Failed(f) => &f.run,
        }
    }

    /// The revision its binary was built from.
    pub fn revision(&self) -> Option<&str> {
        match self {
            RunOutcome::Trained(t) => t.git_revision.as_deref(),
            RunOutcome::Failed(f) => f.git_revision.as_deref(),
        }
    }
}

/// Name of a trained run's record in its folder.
pub const TRAINED_FILE: &str = "trained.json";

/// Name of a failed run's record in its folder.
pub const FAILED_FILE: &str = "failed.json";

/// How the run in `dir` ended, or `None` while it has not.
pub fn read_outcome(dir: &Path) -> Result<Option<RunOutcome>, TrainError> {
    let trained = dir.join(TRAINED_FILE);
    if trained.is_file() {
        return Ok(Some(RunOutcome::Trained(Box::new(read_json(&trained)?))));
    }
    let failed = dir.join(FAILED_FILE);
    if failed.is_file() {
        return Ok(Some(RunOutcome::Failed(Box::new(read_json(&failed)?))));
    }
    Ok(None)
}

/// The machine's CPU model (`model name` of /proc/cpuinfo), where the system says.
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}
