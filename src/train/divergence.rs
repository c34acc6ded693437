//! The divergence rule of the protocol (`docs/EXPERIMENTS.md`, "Statistics and
//! divergence"), applied to every run: a run whose training loss in an epoch after the
//! first exceeds [`LOSS_GROWTH_LIMIT`] × its first epoch's has diverged (training stops
//! there and keeps the last good checkpoint), and so has a run whose final balanced test
//! accuracy is at most [`CHANCE_MULTIPLE`] / K (it finished, and is recorded as diverged).
//! A NaN or infinite loss stops a run at the step where it appears
//! ([`super::TrainError::NonFinite`]). `TrainConfig::allow_divergence` turns the stopping
//! off, for studying divergence; the record is kept either way.

use serde::{Deserialize, Serialize};

/// An epoch's mean training loss above this multiple of the first epoch's is divergence.
pub const LOSS_GROWTH_LIMIT: f64 = 1.5;

/// A final balanced test accuracy at most this multiple of chance (1/K) is divergence.
pub const CHANCE_MULTIPLE: f64 = 1.5;

/// Why a run counts as diverged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Divergence {
    /// The epoch (from 1) whose loss, or the final evaluation after which, broke the rule.
    pub epoch: usize,
    /// The rule with the numbers it used.
    pub rule: String,
}

/// The loss clause: epoch `epoch`'s mean training loss `loss` against the first epoch's.
///
/// ```
/// use tensorgrad::train::divergence::loss_rule;
/// assert!(loss_rule(2.0, 3, 2.9).is_none());
/// let d = loss_rule(2.0, 3, 3.5).unwrap();
/// assert_eq!(d.rule, "training loss 3.5 exceeds 1.5 × the first epoch's 2");
/// ```
pub fn loss_rule(first_epoch_loss: f64, epoch: usize, loss: f64) -> Option<Divergence> {
    (epoch > 1 && loss > LOSS_GROWTH_LIMIT * first_epoch_loss).then(|| Divergence {
        epoch,
        rule: format!(
            "training loss {} exceeds {LOSS_GROWTH_LIMIT} × the first epoch's {}",
            short(loss),
            short(first_epoch_loss)
        ),
    })
}

/// The accuracy clause: the final balanced test accuracy of a `classes`-class problem,
/// after `epochs` epochs.
///
/// ```
/// use tensorgrad::train::divergence::accuracy_rule;
/// assert!(accuracy_rule(0.16, 10, 5).is_none());
/// let d = accuracy_rule(0.10, 10, 5).unwrap();
/// assert_eq!(d.rule, "final balanced test accuracy 10.00% is at most 1.5/K = 15.00% (K = 10)");
/// ```
pub fn accuracy_rule(balanced_accuracy: f64, classes: usize, epochs: usize) -> Option<Divergence> {
    let limit = CHANCE_MULTIPLE / classes.max(1) as f64;
    (balanced_accuracy <= limit).then(|| Divergence {
        epoch: epochs,
        rule: format!(
            "final balanced test accuracy {:.2}% is at most {CHANCE_MULTIPLE}/K = {:.2}% (K = {classes})",
            100.0 * balanced_accuracy,
            100.0 * limit
        ),
    })
}

/// Four decimals without trailing zeros; scientific notation from 10⁶.
fn short(x: f64) -> String {
    if x.abs() >= 1e6 {
        return format!("{x:.4e}");
    }
    let text = format!("{x:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() || text == "-" {
        "0".into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_clause_fires_only_after_the_first_epoch_and_above_the_limit() {
        assert!(
            loss_rule(1.0, 1, 100.0).is_none(),
            "epoch 1 is the reference"
        );
        assert!(
            loss_rule(1.0, 2, 1.5).is_none(),
            "at the limit is not above it"
        );
        assert_eq!(loss_rule(1.0, 2, 1.5000001).map(|d| d.epoch), Some(2));
        assert_eq!(loss_rule(162.8, 4, 161.0), None);
        assert!(loss_rule(2.27, 2, 4.3e34)
            .unwrap()
            .rule
            .starts_with("training loss 4.3000e34 "));
        let d = loss_rule(0.25, 7, 12.0).unwrap();
        assert_eq!(
            d,
            Divergence {
                epoch: 7,
                rule: "training loss 12 exceeds 1.5 × the first epoch's 0.25".into()
            }
        );
    }

    #[test]
    fn the_accuracy_clause_is_one_and_a_half_times_chance() {
        assert!(accuracy_rule(0.1, 10, 5).is_some(), "a constant predictor");
        assert!(accuracy_rule(0.15, 10, 5).is_some(), "at most, inclusive");
        assert!(accuracy_rule(0.1501, 10, 5).is_none());
        assert!(accuracy_rule(0.75, 2, 1).is_some());
        assert!(accuracy_rule(0.76, 2, 1).is_none());
        assert_eq!(accuracy_rule(0.0, 10, 3).unwrap().epoch, 3);
    }
}
