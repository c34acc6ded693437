//! E2, the binary imbalanced experiment: the relation `w₁n₁(1 − p̄₁) = w₀n₀p̄₀` per run,
//! its table and plots.

use super::report::{
    groups_of, load_analysed, load_results, provenance, summaries_of, VariantSummary,
};
use super::stats::{pm, sci, stats};
use super::{write_json, write_text, Experiment, ReproduceConfig, VariantKey};
use crate::loss::Audit;
use crate::train::plots::{grouped_bar_chart, multi_line_chart};
use crate::train::TrainError;
use serde::Serialize;
use std::fmt::Write as _;

/// One E2 configuration's binary relation, from the refitted (or trained) audit.
#[derive(Clone, Debug, Serialize)]
pub struct BinaryRelation {
    /// Group (`rho=10`, …).
    pub group: String,
    /// The variant (what the verdict rules select by; not written, the label is).
    #[serde(skip)]
    pub variant: VariantKey,
    /// Variant label.
    pub label: String,
    /// Seed.
    pub seed: u64,
    /// Positives `n_1`, negatives `n_0`.
    pub counts: [usize; 2],
    /// `p̄_1`, `p̄_0` as trained.
    pub trained_p: [f64; 2],
    /// `w_1 n_1 (1 − p̄_1)` and `w_0 n_0 p̄_0` as trained.
    pub trained_sides: [f64; 2],
    /// `p̄_1`, `p̄_0` after the refit.
    pub refit_p: [f64; 2],
    /// Both sides after the refit.
    pub refit_sides: [f64; 2],
    /// `(1 − p̄_1)/p̄_0` after the refit.
    pub observed_ratio: f64,
    /// `w_0 n_0 / (w_1 n_1)`, what the relation predicts.
    pub predicted_ratio: f64,
    /// Relative residual after the refit.
    pub refit_residual: f64,
    /// Relative residual as trained.
    pub trained_residual: f64,
    /// Test recall of the positives (the minority).
    pub minority_recall: f64,
    /// Test balanced accuracy.
    pub balanced_accuracy: f64,
}

pub(crate) fn binary_sides(a: &Audit) -> ([f64; 2], [f64; 2], f64) {
    let p1 = a.p_bar[1][0];
    let p0 = a.p_bar[0][0];
    let row = &a.rows[0];
    ([p1, p0], [row.lhs, row.rhs], row.residual)
}

/// E2: the binary relation per run, the table and plots. Returns the relations and the
/// variant summaries.
pub fn write_e2(
    config: &ReproduceConfig,
) -> Result<(Vec<BinaryRelation>, Vec<VariantSummary>), TrainError> {
    let analysed = load_analysed(config, Experiment::E2, true)?;
    if analysed.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let results = load_results(config, Experiment::E2)?;
    let dir = config.out.join("e2");
    let mut relations = Vec::new();
    // Every analysed network, diverged by the accuracy clause or not: the relation is
    // about the audit's algebra (REPORT.md lists the diverged runs).
    for r in &analysed {
        let (Some(trained), Some(refit)) = (&r.audit_trained, &r.refit) else {
            continue;
        };
        // The relation is the one-output (sigmoid) model's; the softmax contrast runs
        // have two outputs.
        if trained.p_bar.first().map_or(0, |row| row.len()) != 1 {
            continue;
        }
        let (tp, ts, tres) = binary_sides(trained);
        let (rp, rs, rres) = binary_sides(&refit.audit);
        // w_1 n_1 = lhs / (1 − p̄_1), w_0 n_0 = rhs / p̄_0.
        let w1n1 = rs[0] / (1.0 - rp[0]);
        let w0n0 = rs[1] / rp[1];
        relations.push(BinaryRelation {
            group: r.run.group.clone(),
            variant: r.run.variant.clone(),
            label: r.run.label.clone(),
            seed: r.run.seed,
            counts: [r.train_counts[1], r.train_counts[0]],
            trained_p: tp,
            trained_sides: ts,
            refit_p: rp,
            refit_sides: rs,
            observed_ratio: (1.0 - rp[0]) / rp[1],
            predicted_ratio: w0n0 / w1n1,
            refit_residual: rres,
            trained_residual: tres,
            minority_recall: r.test.per_class_accuracy[1],
            balanced_accuracy: r.test.balanced_accuracy,
        });
    }
    let summaries = summaries_of(&results);
    let mut md =
        String::from("# E2 — binary, imbalanced (4 vs 9): reweighting is deterministic\n\n");
    let _ = writeln!(md, "{}.\n", provenance(&analysed));
    let _ = writeln!(md, "Positives: digit 4 (class 1, the minority); negatives: digit 9 (class 0). `lenet` with one output. The relation `w₁n₁(1 − p̄₁) = w₀n₀p̄₀` on the training set, as trained and after the last-layer refit (λ = 1e-3 on the weights only), per seed. After the refit `(1 − p̄₁)/p̄₀` must equal `w₀n₀/(w₁n₁)`: `n₀/n₁` unweighted, 1 with inverse-frequency weights.\n");
    let _ = writeln!(md, "| ρ | loss | seed | n₁ | n₀ | p̄₁ / p̄₀ as trained | residual as trained | p̄₁ / p̄₀ refit | w₁n₁(1−p̄₁) | w₀n₀p̄₀ | residual refit | (1−p̄₁)/p̄₀ | w₀n₀/(w₁n₁) | minority recall (%) | balanced acc. (%) |");
    let _ = writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for b in &relations {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.4} / {:.4} | {} | {:.4} / {:.4} | {:.6e} | {:.6e} | {} | {:.6} | {:.6} | {:.2} | {:.2} |",
            b.group.trim_start_matches("rho="),
            b.label,
            b.seed,
            b.counts[0],
            b.counts[1],
            b.trained_p[0],
            b.trained_p[1],
            sci(b.trained_residual),
            b.refit_p[0],
            b.refit_p[1],
            b.refit_sides[0],
            b.refit_sides[1],
            sci(b.refit_residual),
            b.observed_ratio,
            b.predicted_ratio,
            100.0 * b.minority_recall,
            100.0 * b.balanced_accuracy,
        );
    }
    md.push_str("\n## Test metrics (mean ± standard error over the seeds that did not diverge)\n\n| ρ | loss | minority recall (%) | balanced acc. (%) | accuracy (%) |\n|---|---|---|---|---|\n");
    for s in &summaries {
        let recall = stats(
            &relations
                .iter()
                .filter(|b| b.group == s.group && b.variant == s.variant)
                .map(|b| b.minority_recall)
                .collect::<Vec<_>>(),
        );
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            s.group.trim_start_matches("rho="),
            s.label,
            pm(recall, 100.0, 2),
            pm(s.balanced_accuracy, 100.0, 2),
            pm(s.accuracy, 100.0, 2)
        );
    }
    md.push('\n');
    for group in groups_of(&summaries) {
        let in_group: Vec<&VariantSummary> =
            summaries.iter().filter(|s| s.group == group).collect();
        let tag = group.replace('=', "");
        let name = format!("{tag}-accuracy.png");
        multi_line_chart(
            &dir.join(&name),
            &format!("test accuracy ({group})"),
            "accuracy (%)",
            &in_group
                .iter()
                .map(|s| {
                    (
                        s.label.clone(),
                        s.test_accuracy_curve.iter().map(|a| 100.0 * a).collect(),
                    )
                })
                .collect::<Vec<_>>(),
        )?;
        let bars = format!("{tag}-per-class-accuracy.png");
        grouped_bar_chart(
            &dir.join(&bars),
            &format!("per-class test accuracy ({group}; 0 = nine, 1 = four)"),
            &["9 (neg.)".into(), "4 (pos.)".into()],
            &in_group
                .iter()
                .map(|s| (s.label.clone(), s.per_class_accuracy.clone()))
                .collect::<Vec<_>>(),
        )?;
        let _ = writeln!(md, "![{name}]({name}) ![{bars}]({bars})");
    }
    write_text(&dir.join("README.md"), &md)?;
    write_json(&dir.join("summary.json"), &(&relations, &summaries))?;
    Ok((relations, summaries))
}
