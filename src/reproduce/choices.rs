//! The protocol's two choices made from earlier results: each loss family's learning rate
//! from the sweep ([`chosen_lrs`]) and LGL-INR's β for E3–E5 from E1 ([`best_beta`]).

use super::protocol::{plan_if_ready, plan_sweep, sweep_variants, PlannedRun, COMMON_LR, E1_BETAS};
use super::{Experiment, ReproduceConfig, VariantKey};
use crate::train::TrainError;
use serde::Serialize;

/// One sweep family's rates and the one chosen.
#[derive(Clone, Debug, Serialize)]
pub struct SweptFamily {
    /// The family (a variant key: `sml`, `lgl-inr-b5`, …).
    pub family: VariantKey,
    /// The chosen rate.
    pub lr: f64,
    /// Validation balanced accuracy per rate tried (`None`: the run diverged or failed).
    pub tried: Vec<(f64, Option<f64>)>,
}

/// The sweep's choice: the learning rate of each sweep family.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChosenLrs {
    /// Every family, in the sweep's order.
    pub families: Vec<SweptFamily>,
}

impl ChosenLrs {
    /// The rate chosen for `family`.
    pub fn get(&self, family: &VariantKey) -> Option<f64> {
        self.families
            .iter()
            .find(|f| f.family == *family)
            .map(|f| f.lr)
    }
}

/// How a planned run ended, read from its folder: `None` while it is not trained.
pub(crate) fn outcome(run: &PlannedRun) -> Result<Option<super::RunOutcome>, TrainError> {
    super::read_outcome(run.dir())
}

/// The rate the sweep chose for each family: the highest validation balanced accuracy
/// among the rates whose run neither diverged nor failed (the smaller rate on a tie).
/// `None` while a sweep run is untrained.
pub fn chosen_lrs(config: &ReproduceConfig) -> Result<Option<ChosenLrs>, TrainError> {
    let runs = plan_sweep(config);
    let mut families = Vec::new();
    for v in sweep_variants() {
        let mut tried = Vec::new();
        for run in runs.iter().filter(|r| r.variant == v.key) {
            let Some(o) = outcome(run)? else {
                return Ok(None);
            };
            let accuracy = match o {
                super::RunOutcome::Trained(t) if t.summary.divergence.is_none() => {
                    Some(t.summary.test.balanced_accuracy)
                }
                _ => None,
            };
            tried.push((run.config.lr, accuracy));
        }
        let best = tried.iter().filter_map(|&(lr, a)| a.map(|a| (lr, a))).fold(
            None,
            |b: Option<(f64, f64)>, (lr, a)| match b {
                Some((_, ba)) if ba >= a => b,
                _ => Some((lr, a)),
            },
        );
        let lr = match best {
            Some((lr, _)) => lr,
            // Quick mode's networks are too small to be judged: the pipeline goes on.
            None if config.quick => COMMON_LR,
            None => {
                return Err(TrainError::Invalid(format!(
                    "every learning rate of the sweep diverged for {}: no rate to train it at",
                    v.key
                )))
            }
        };
        families.push(SweptFamily {
            family: v.key,
            lr,
            tried,
        });
    }
    Ok(Some(ChosenLrs { families }))
}

/// E1's best LGL-INR β: the lowest mean test error over seeds among the β none of whose
/// runs diverged or failed (the smaller β on a tie). `None` while an E1 LGL-INR run is
/// untrained or the sweep is not done.
pub fn best_beta(config: &ReproduceConfig) -> Result<Option<f64>, TrainError> {
    let Some(runs) = plan_if_ready(config, Experiment::E1)? else {
        return Ok(None);
    };
    let mut best: Option<(f64, f64)> = None;
    for &beta in &E1_BETAS {
        let key = VariantKey::lgl_inr(beta);
        let mut errors = Vec::new();
        let mut failed = false;
        for run in runs.iter().filter(|r| r.variant == key) {
            match outcome(run)? {
                None => return Ok(None),
                Some(super::RunOutcome::Trained(t)) if t.summary.divergence.is_none() => {
                    errors.push(1.0 - t.summary.test.accuracy)
                }
                Some(_) => failed = true,
            }
        }
        if failed || errors.is_empty() {
            continue;
        }
        let mean = errors.iter().sum::<f64>() / errors.len() as f64;
        if best.is_none_or(|(_, e)| mean < e) {
            best = Some((beta, mean));
        }
    }
    match best {
        Some((beta, _)) => Ok(Some(beta)),
        None if config.quick => Ok(Some(1.0)),
        None => Err(TrainError::Invalid(
            "every LGL-INR β of E1 diverged in some seed: none to choose".into(),
        )),
    }
}
