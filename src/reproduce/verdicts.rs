//! The verdict rules of the paper's three claims (docs/EXPERIMENTS.md, version 2, section
//! "Verdicts"), each a function of small typed inputs that the report computes from the
//! runs, and each stating its rule with the numbers it used.

use super::stats::{paired, sci, stats, Paired};
use serde::Serialize;
use std::fmt::Write as _;

/// A claim's verdict and the reason, in words.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// The claim.
    pub claim: String,
    /// `confirmed`, `not confirmed`, `mixed` or `not run`.
    pub verdict: String,
    /// Why, with the numbers.
    pub reason: String,
}

fn verdict(claim: &str, verdict: &str, reason: String) -> Verdict {
    Verdict {
        claim: claim.to_string(),
        verdict: verdict.to_string(),
        reason,
    }
}

/// Claim (1)'s text.
pub const CLAIM_ONE: &str = "(1) binary logistic loss: reweighting has a deterministic effect fixed by weights and sample sizes; multi-class softmax: indeterministic";
/// Claim (2)'s text.
pub const CLAIM_TWO: &str =
    "(2) one-vs-all logistic loss (LGL) suffers from an averaging effect on the non-target classes";
/// Claim (3)'s text.
pub const CLAIM_THREE: &str =
    "(3) LGL-INR, focusing on hard non-target classes, is competitive with softmax (SML)";

/// One E2 condition's as-trained ratio `(1 − p̄₁)/p̄₀` against its two predictions.
#[derive(Clone, Debug, Serialize)]
pub struct RatioCheck {
    /// Data condition (`rho=100`).
    pub group: String,
    /// Loss variant (`LGL inv. (sample)`).
    pub label: String,
    /// The ratio per seed on the training set as trained, over the non-degenerate runs
    /// whose training did not fail (see `RunRecord::binary_evidence`).
    pub observed: Vec<f64>,
    /// `w₀n₀ / (w₁n₁)`.
    pub full_batch: f64,
    /// The minibatch prediction for a batch mean over the batch's own sum of weights.
    pub minibatch: f64,
    /// Whether the loss divides each batch by its own sum of weights (then the minibatch
    /// prediction applies; otherwise both predictions are the full-batch one).
    pub divides_by_weights: bool,
}

impl RatioCheck {
    /// The prediction for the reduction the loss uses.
    pub fn predicted(&self) -> f64 {
        if self.divides_by_weights {
            self.minibatch
        } else {
            self.full_batch
        }
    }

    /// Whether `prediction` is within the seeds' spread: `|mean − prediction| ≤ 2 std`.
    pub fn agrees(&self, prediction: f64) -> bool {
        let s = stats(&self.observed);
        s.n > 0 && (s.mean - prediction).abs() <= 2.0 * s.std
    }
}

/// Minority recall per seed at ρ = 100, unweighted against one weighted form.
#[derive(Clone, Debug, Serialize)]
pub struct RecallCheck {
    /// The weighted form.
    pub label: String,
    /// `(seed, weighted recall, unweighted recall)`.
    pub seeds: Vec<(u64, f64, f64)>,
}

/// What claim (1)'s rule reads.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClaimOneInput {
    /// `(network, residual)` after the refit, for every non-degenerate E2 LGL network.
    pub refit_residuals: Vec<(String, f64)>,
    /// The as-trained ratios of every E2 condition and LGL variant.
    pub ratios: Vec<RatioCheck>,
    /// Minority recall at ρ = 100, per weighted form.
    pub recall: Vec<RecallCheck>,
}

/// Claim (1): confirmed if after the refit every E2 network meets the full-batch relation
/// to ≤ 1e-6 *and* the as-trained ratios agree (within their seed spread) with the
/// prediction for the reduction actually used *and* inverse weighting raises minority
/// recall at ρ = 100 in every seed; not confirmed if the as-trained ratios follow neither
/// prediction; mixed otherwise.
pub fn claim_one(input: &ClaimOneInput) -> Verdict {
    if input.refit_residuals.is_empty() && input.ratios.is_empty() {
        return verdict(CLAIM_ONE, "not run", "E2 has no results".into());
    }
    let worst = input
        .refit_residuals
        .iter()
        .map(|(_, r)| *r)
        .fold(0.0, f64::max);
    let algebra = !input.refit_residuals.is_empty() && worst <= 1e-6;
    let mut reason = format!(
        "After the last-layer refit the {} E2 LGL networks (non-degenerate, training not failed) meet w₁n₁(1 − p̄₁) = w₀n₀p̄₀ with relative residual ≤ {}. As trained, (1 − p̄₁)/p̄₀ per condition (mean ± std over seeds) against the full-batch prediction w₀n₀/(w₁n₁) and the minibatch one (each class weight w_c replaced by w_c·E[1/W_B | c ∈ B], batch 64): ",
        input.refit_residuals.len(),
        sci(worst)
    );
    let mut agree_used = !input.ratios.is_empty();
    let mut follow_neither = !input.ratios.is_empty();
    for r in &input.ratios {
        let s = stats(&r.observed);
        let (full, mini) = (r.agrees(r.full_batch), r.agrees(r.minibatch));
        agree_used &= r.agrees(r.predicted());
        follow_neither &= !full && !mini;
        let _ = write!(
            reason,
            "{} {}: {:.3} ± {:.3} (n = {}) vs {:.3} full-batch{} and {:.3} minibatch{} — the loss {} → {}. ",
            r.group,
            r.label,
            s.mean,
            s.std,
            s.n,
            r.full_batch,
            if full { " (agrees)" } else { "" },
            r.minibatch,
            if mini { " (agrees)" } else { "" },
            if r.divides_by_weights {
                "divides each batch by its sum of weights"
            } else {
                "divides each batch by its size"
            },
            if r.agrees(r.predicted()) {
                "follows its prediction"
            } else {
                "does not follow its prediction"
            }
        );
    }
    let mut recall_up = !input.recall.is_empty();
    for c in &input.recall {
        let raised = c.seeds.iter().filter(|(_, w, u)| w > u).count();
        recall_up &= !c.seeds.is_empty() && raised == c.seeds.len();
        let _ = write!(
            reason,
            "At ρ = 100 {} raises minority recall over unweighted LGL in {} of {} seeds ({}). ",
            c.label,
            raised,
            c.seeds.len(),
            c.seeds
                .iter()
                .map(|(s, w, u)| format!("seed {s}: {:.1}% vs {:.1}%", 100.0 * w, 100.0 * u))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let v = if algebra && agree_used && recall_up {
        "confirmed"
    } else if follow_neither {
        "not confirmed"
    } else {
        "mixed"
    };
    reason.push_str("Rule: confirmed if every refit residual is ≤ 1e-6, every as-trained ratio agrees (|mean − prediction| ≤ 2 std over seeds) with the prediction for the reduction its loss uses, and inverse weighting raises minority recall at ρ = 100 in every seed; not confirmed if the as-trained ratios follow neither prediction; mixed otherwise.");
    verdict(CLAIM_ONE, v, reason)
}

/// One data condition's paired comparison of two losses over seeds.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// The condition (`E3 ρ=100`).
    pub condition: String,
    /// `a − b` over the seeds both have (None without a common seed).
    pub paired: Option<Paired>,
}

impl Comparison {
    /// A comparison of `(seed, value)` lists.
    pub fn of(condition: &str, a: &[(u64, f64)], b: &[(u64, f64)]) -> Self {
        Comparison {
            condition: condition.to_string(),
            paired: paired(a, b),
        }
    }
}

fn describe(p: &Option<Paired>, scale: f64) -> String {
    match p {
        Some(p) => format!(
            "{:+.3} ± {:.3} (n = {}, p = {})",
            scale * p.mean,
            scale * p.se,
            p.n,
            if p.p.is_nan() {
                "—".to_string()
            } else {
                format!("{:.3}", p.p)
            }
        ),
        None => "no common seeds".into(),
    }
}

/// Claim (2): LGL's concentration minus SML's (training set, after the refit) in E1, E3
/// ρ=10 and E3 ρ=100. Confirmed if LGL is more concentrated than SML with p < 0.05 in at
/// least two and not less concentrated (beyond noise) in any; not confirmed if it is
/// within noise or less concentrated in all; mixed otherwise.
pub fn claim_two(conditions: &[Comparison]) -> Verdict {
    let cases: Vec<(&Comparison, Paired)> = conditions
        .iter()
        .filter_map(|c| c.paired.filter(|p| p.n >= 2).map(|p| (c, p)))
        .collect();
    if cases.is_empty() {
        return verdict(
            CLAIM_TWO,
            "not run",
            "no condition has paired LGL and SML networks".into(),
        );
    }
    let mut reason = String::from("Concentration max_j p̄_jk / mean_j p̄_jk of the non-target probability (mean over outputs k), training set after the refit, LGL minus SML paired by seed: ");
    for c in conditions {
        let _ = write!(reason, "{}: {}. ", c.condition, describe(&c.paired, 1.0));
    }
    let more = cases
        .iter()
        .filter(|(_, p)| p.mean > 0.0 && p.p < 0.05)
        .count();
    let less = cases.iter().any(|(_, p)| p.below());
    let v = if more >= 2 && !less {
        "confirmed"
    } else if cases.iter().all(|(_, p)| p.within_noise() || p.below()) {
        "not confirmed"
    } else {
        "mixed"
    };
    reason.push_str("Rule: confirmed if LGL is more concentrated than SML with p < 0.05 (two-sided paired t-test) in at least two of E1, E3 ρ=10, E3 ρ=100 and not less concentrated beyond noise (2 standard errors of the paired difference) in any; not confirmed if within noise or less concentrated in all; mixed otherwise.");
    verdict(CLAIM_TWO, v, reason)
}

/// One condition of claim (3): LGL-INR (E1's best β at its own rate) against SML.
#[derive(Clone, Debug, Serialize)]
pub struct Competition {
    /// Balanced error, LGL-INR minus SML, paired by seed (diverged runs left out).
    pub error: Comparison,
    /// LGL-INR's runs that diverged, and its runs.
    pub diverged: (usize, usize),
}

/// Claim (3): confirmed if the best-lr LGL-INR never diverges and is within noise of SML
/// or better in balanced error in every condition; not confirmed if it is worse than SML
/// beyond noise in at least two conditions or diverges in any; mixed otherwise.
pub fn claim_three(conditions: &[Competition]) -> Verdict {
    if conditions.iter().all(|c| c.diverged.1 == 0) {
        return verdict(CLAIM_THREE, "not run", "no LGL-INR runs".into());
    }
    let mut reason = String::from("Balanced test error (percentage points), LGL-INR (E1's best β, its own learning rate) minus SML, paired by seed: ");
    for c in conditions {
        let _ = write!(
            reason,
            "{}: {}, LGL-INR diverged in {} of {} runs. ",
            c.error.condition,
            describe(&c.error.paired, 100.0),
            c.diverged.0,
            c.diverged.1
        );
    }
    let diverged = conditions.iter().any(|c| c.diverged.0 > 0);
    let worse = conditions
        .iter()
        .filter(|c| c.error.paired.is_some_and(|p| p.above()))
        .count();
    let fine = conditions.iter().all(|c| {
        c.error
            .paired
            .is_some_and(|p| p.mean <= 0.0 || p.within_noise())
    });
    let v = if diverged || worse >= 2 {
        "not confirmed"
    } else if fine {
        "confirmed"
    } else {
        "mixed"
    };
    reason.push_str("Rule: confirmed if LGL-INR never diverges and its balanced error is below SML's or within noise (2 standard errors of the paired difference) in every condition; not confirmed if it is worse beyond noise in at least two conditions or diverges in any; mixed otherwise.");
    verdict(CLAIM_THREE, v, reason)
}

#[cfg(test)]
mod tests {
    //! Each rule on hand-made inputs: one that confirms, one mixed, one that refutes, and
    //! one with nothing to judge.
    use super::*;

    fn seeds(values: &[f64]) -> Vec<(u64, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(s, &v)| (s as u64, v))
            .collect()
    }

    fn ratio(observed: &[f64], minibatch: f64, divides: bool) -> RatioCheck {
        RatioCheck {
            group: "rho=100".into(),
            label: "LGL inv.".into(),
            observed: observed.to_vec(),
            full_batch: 1.0,
            minibatch,
            divides_by_weights: divides,
        }
    }

    fn recall(up: bool) -> RecallCheck {
        RecallCheck {
            label: "LGL inv. (sample)".into(),
            seeds: (0..5)
                .map(|s| (s, if up { 0.9 } else { 0.5 }, 0.6))
                .collect(),
        }
    }

    #[test]
    fn claim_one_confirms_mixes_and_refutes() {
        let residuals = vec![("a".to_string(), 1e-9), ("b".to_string(), 3e-8)];
        // Sample weights: the observed ratios scatter around the minibatch prediction 2.23.
        let good = ClaimOneInput {
            refit_residuals: residuals.clone(),
            ratios: vec![
                ratio(&[2.1, 2.3, 2.2, 2.4, 2.2], 2.23, true),
                ratio(&[0.98, 1.01, 1.0, 1.02, 0.99], 2.23, false),
            ],
            recall: vec![recall(true)],
        };
        let v = claim_one(&good);
        assert_eq!(v.verdict, "confirmed", "{}", v.reason);
        assert!(v.reason.contains("2.240 ± 0.114"), "{}", v.reason);
        // The same, but weighting lowers recall in every seed: mixed.
        let mixed = ClaimOneInput {
            recall: vec![recall(false)],
            ..good.clone()
        };
        assert_eq!(claim_one(&mixed).verdict, "mixed");
        // A residual above 1e-6: not confirmed by the algebra, mixed by the rule.
        let loose = ClaimOneInput {
            refit_residuals: vec![("a".to_string(), 1e-3)],
            ..good.clone()
        };
        assert_eq!(claim_one(&loose).verdict, "mixed");
        // Ratios near neither 1 nor 2.23: not confirmed.
        let neither = ClaimOneInput {
            ratios: vec![ratio(&[5.0, 5.1, 4.9], 2.23, true)],
            ..good
        };
        assert_eq!(claim_one(&neither).verdict, "not confirmed");
        assert_eq!(claim_one(&ClaimOneInput::default()).verdict, "not run");
    }

    #[test]
    fn claim_two_counts_significant_conditions() {
        let sml = seeds(&[1.5, 1.6, 1.55, 1.52, 1.58]);
        let higher = seeds(&[1.9, 2.05, 1.95, 1.97, 2.0]);
        let same = seeds(&[1.52, 1.58, 1.53, 1.5, 1.6]);
        let lower = seeds(&[1.2, 1.25, 1.22, 1.19, 1.24]);
        let c = |name: &str, a: &[(u64, f64)]| Comparison::of(name, a, &sml);
        let v = claim_two(&[
            c("E1", &higher),
            c("E3 ρ=10", &higher),
            c("E3 ρ=100", &same),
        ]);
        assert_eq!(v.verdict, "confirmed", "{}", v.reason);
        assert!(v.reason.contains("p = 0.000"), "{}", v.reason);
        // Higher in two but lower in the third: mixed.
        let v = claim_two(&[
            c("E1", &higher),
            c("E3 ρ=10", &higher),
            c("E3 ρ=100", &lower),
        ]);
        assert_eq!(v.verdict, "mixed");
        // Higher in one only: mixed.
        let v = claim_two(&[c("E1", &higher), c("E3 ρ=10", &same), c("E3 ρ=100", &same)]);
        assert_eq!(v.verdict, "mixed");
        // Within noise or lower everywhere: not confirmed.
        let v = claim_two(&[c("E1", &same), c("E3 ρ=10", &lower), c("E3 ρ=100", &same)]);
        assert_eq!(v.verdict, "not confirmed");
        assert_eq!(claim_two(&[]).verdict, "not run");
    }

    #[test]
    fn claim_three_needs_no_divergence_and_no_loss_beyond_noise() {
        let sml = seeds(&[0.010, 0.012, 0.011, 0.013, 0.010]);
        let equal = seeds(&[0.011, 0.011, 0.012, 0.012, 0.011]);
        let worse = seeds(&[0.030, 0.031, 0.029, 0.033, 0.030]);
        let c = |name: &str, a: &[(u64, f64)], diverged: usize| Competition {
            error: Comparison::of(name, a, &sml),
            diverged: (diverged, 5),
        };
        let v = claim_three(&[
            c("E1", &equal, 0),
            c("E3 ρ=10", &equal, 0),
            c("E3 ρ=100", &equal, 0),
        ]);
        assert_eq!(v.verdict, "confirmed", "{}", v.reason);
        // Worse beyond noise in one condition: mixed.
        let v = claim_three(&[
            c("E1", &equal, 0),
            c("E3 ρ=10", &equal, 0),
            c("E3 ρ=100", &worse, 0),
        ]);
        assert_eq!(v.verdict, "mixed");
        // Worse in two: not confirmed.
        let v = claim_three(&[
            c("E1", &worse, 0),
            c("E3 ρ=10", &equal, 0),
            c("E3 ρ=100", &worse, 0),
        ]);
        assert_eq!(v.verdict, "not confirmed");
        // One diverged run, otherwise level: not confirmed.
        let v = claim_three(&[
            c("E1", &equal, 0),
            c("E3 ρ=10", &equal, 1),
            c("E3 ρ=100", &equal, 0),
        ]);
        assert_eq!(v.verdict, "not confirmed");
        assert!(v.reason.contains("diverged in 1 of 5"), "{}", v.reason);
        assert_eq!(claim_three(&[]).verdict, "not run");
    }
}
