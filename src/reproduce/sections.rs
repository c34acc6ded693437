//! The report's sections on the evidence ([`super::evidence`]): learning rates, the
//! headline, each claim's measures, LGL-INR's focus per β, divergence and degenerate
//! networks. Every number is computed from the runs' records.

use super::claims::{concentration, confusable_pairs, hardest_share, pair_error};
use super::evidence::{
    balanced_error, inverse, per_seed, refit_concentration, select, Evidence, RunRecord,
};
use super::markdown::table;
use super::stats::{paired, stats, Paired, Stats};
use super::verdicts::{ClaimOneInput, Comparison, Competition};
use super::{Experiment, VariantKey};
use std::fmt::Write as _;

/// `mean ± se (n)` of `values` scaled, or `—`.
fn cell(values: &[f64], scale: f64, digits: usize) -> String {
    if values.is_empty() {
        return "—".into();
    }
    let s: Stats = stats(values);
    if s.n > 1 {
        format!(
            "{:.d$} ± {:.d$}",
            scale * s.mean,
            scale * s.se(),
            d = digits
        )
    } else {
        format!("{:.d$}", scale * s.mean, d = digits)
    }
}

/// Balanced test error (%) of (group, variant) over the runs that count, with "n of N"
/// when some diverged; `—` when it has no run.
fn error_cell(records: &[RunRecord], group: &str, v: &VariantKey) -> String {
    let runs = select(records, group, v).count();
    let errors = values(&per_seed(records, group, v, false, balanced_error));
    if runs == 0 {
        "—".into()
    } else if errors.len() < runs {
        format!("{} ({} of {runs})", cell(&errors, 100.0, 2), errors.len())
    } else {
        cell(&errors, 100.0, 2)
    }
}

fn values(v: &[(u64, f64)]) -> Vec<f64> {
    v.iter().map(|&(_, x)| x).collect()
}

fn paired_cell(p: Option<Paired>, scale: f64) -> String {
    match p {
        Some(p) if p.n >= 2 => format!(
            "{:+.2} ± {:.2}, p = {:.3}",
            scale * p.mean,
            scale * p.se,
            p.p
        ),
        Some(p) => format!("{:+.2} (n = 1)", scale * p.mean),
        None => "—".into(),
    }
}

/// The learning-rate section: the sweep's validation accuracy per rate, the rate chosen,
/// and which rate every trained variant used.
pub fn lr_section(e: &Evidence) -> String {
    let mut md = String::from("## Learning rates (the sweep)\n\nEach loss family trained 5 epochs at each rate on the first 55,000 MNIST training images (seed 0) and was scored by balanced accuracy on the last 5,000; the best rate among runs that did not diverge is used in E1–E5 (weighted and logit-adjusted softmax take SML's, weighted LGL takes LGL's). Validation balanced accuracy (%), — for a run that diverged:\n\n");
    let Some(lrs) = &e.lrs else {
        md.push_str("The sweep has not finished.\n");
        return md;
    };
    let rates: Vec<f64> = lrs
        .families
        .first()
        .map_or(Vec::new(), |f| f.tried.iter().map(|&(lr, _)| lr).collect());
    let mut header = vec!["family".to_string()];
    header.extend(rates.iter().map(|r| format!("lr {r}")));
    header.push("chosen".into());
    let rows = lrs.families.iter().map(|f| {
        let mut row = vec![f.family.to_string()];
        row.extend(f.tried.iter().map(|&(lr, a)| {
            let text = a.map_or("—".to_string(), |a| format!("{:.2}", 100.0 * a));
            if lr == f.lr {
                format!("**{text}**")
            } else {
                text
            }
        }));
        row.push(f.lr.to_string());
        row
    });
    let header: Vec<&str> = header.iter().map(|s| s.as_str()).collect();
    md.push_str(&table(&header, rows));
    if lrs.get(&VariantKey::lgl_inr(1.0)) == Some(super::protocol::COMMON_LR) {
        let _ = writeln!(
            md,
            "\nLGL-INR β = 1 chose the common rate {} itself, so E3's run of β = 1 at the common rate is the same run as at its own rate and is not repeated.",
            super::protocol::COMMON_LR
        );
    }
    md
}

/// LGL-INR's focus per β in E1, with the test error and the rate.
pub fn focus_section(e: &Evidence) -> String {
    let mut md = String::from("## LGL-INR's focusing (E1)\n\nFocus: the mean over training batches of (K − 1) · max_j ω_jk, averaged over the outputs k (1: uniform weights over the non-target classes; 9: all weight on one). Mean ± standard error over the seeds that did not diverge.\n\n");
    let mut rows = Vec::new();
    for beta in super::protocol::E1_BETAS {
        let key = VariantKey::lgl_inr(beta);
        let runs: Vec<&RunRecord> = select(&e.e1, "balanced", &key).collect();
        if runs.is_empty() {
            continue;
        }
        let focus: Vec<f64> = runs
            .iter()
            .filter(|r| r.counts())
            .filter_map(|r| r.focus)
            .collect();
        let errors = values(&per_seed(&e.e1, "balanced", &key, false, balanced_error));
        let lr = runs.first().map_or(0.0, |r| r.run.config.lr);
        rows.push(vec![
            format!("{beta}"),
            lr.to_string(),
            cell(&focus, 1.0, 3),
            cell(&errors, 100.0, 2),
            format!(
                "{} of {}",
                runs.iter().filter(|r| r.diverged.is_some()).count(),
                runs.len()
            ),
        ]);
    }
    md.push_str(&table(
        &["β", "lr", "focus", "test balanced error (%)", "diverged"],
        rows,
    ));
    if let Some(b) = e.best_beta {
        let _ = writeln!(md, "\nE1's best β (lowest mean test error among the β with no diverged run), used for LGL-INR in E3–E5: **{b}**.");
    }
    md
}

/// Claim (1)'s evidence: the ratios and predictions, minority recall, the softmax contrast.
pub fn claim_one_section(e: &Evidence, input: &ClaimOneInput) -> String {
    let mut md = String::from("## Claim (1): the binary relation as trained\n\nE2 (4 vs 9, positives subsampled to n₀/n₁ = ρ). Measured on every trained network whose training did not fail (loss growth or a non-finite loss) and that is not degenerate: the protocol's accuracy clause (balanced test accuracy at most 1.5/K, which is 75% for K = 2) would otherwise remove exactly the imbalanced networks the claim is about; such runs are still listed as diverged below and left out of the means. `(1 − p̄₁)/p̄₀` on the training set as trained (eval mode), mean ± std over seeds, against the full-batch prediction `w₀n₀/(w₁n₁)` and the minibatch one of docs/LOSSES.md §4 for a batch mean over the batch's own sum of weights (batch 64; the expectation exact over the binomial number of positives). The rule compares each loss with the prediction for the reduction it uses.\n\n");
    let rows = input.ratios.iter().map(|r| {
        let s = stats(&r.observed);
        vec![
            r.group.clone(),
            r.label.clone(),
            format!("{:.3} ± {:.3} (n = {})", s.mean, s.std, s.n),
            format!("{:.3}", r.full_batch),
            format!("{:.3}", r.minibatch),
            if r.divides_by_weights {
                "sum of weights → minibatch".into()
            } else {
                "batch size → full-batch".into()
            },
            match (r.agrees(r.full_batch), r.agrees(r.minibatch)) {
                (true, true) => "both".into(),
                (true, false) => "full-batch".into(),
                (false, true) => "minibatch".into(),
                (false, false) => "neither".into(),
            },
        ]
    });
    md.push_str(&table(
        &[
            "data",
            "loss",
            "observed",
            "full-batch",
            "minibatch",
            "batch divided by",
            "agrees with",
        ],
        rows,
    ));
    md.push_str(
        "\nMinority (positive) test recall (%), mean ± standard error over the same networks:\n\n",
    );
    let mut rows = Vec::new();
    let mut groups: Vec<String> = Vec::new();
    for r in &e.e2 {
        if !groups.contains(&r.run.group) {
            groups.push(r.run.group.clone());
        }
    }
    for g in &groups {
        let mut row = vec![g.clone()];
        for v in [
            VariantKey::LGL,
            VariantKey::LGL_INV_SAMPLE,
            VariantKey::LGL_INV_POSNEG,
            VariantKey::SML,
            VariantKey::SML_INV,
        ] {
            let recall: Vec<f64> = select(&e.e2, g, &v)
                .filter(|r| r.binary_evidence())
                .filter_map(|r| r.result.as_ref()?.test.per_class_accuracy.get(1).copied())
                .collect();
            row.push(cell(&recall, 100.0, 1));
        }
        rows.push(row);
    }
    md.push_str(&table(
        &[
            "data",
            "LGL",
            "LGL inv. (sample)",
            "LGL inv. (pos-neg)",
            "SML (2 outputs)",
            "SML inv.",
        ],
        rows,
    ));
    md.push_str("\n### The softmax contrast\n\nOn the training set after the refit: the spread across classes k of `(1 − p̄_kk)·w_k·n_k` (coefficient of variation, std/mean) and the range of `1 − p̄_kk`, mean over seeds. For binary LGL the relation fixes `w₁n₁(1 − p̄₁)` against the other class alone; for softmax every weight enters every class's condition, so a weight change moves all classes' `1 − q̄_kk` together and none is pinned.\n\n");
    let mut rows = Vec::new();
    for (name, records, group) in [
        ("E2 ρ=100", &e.e2, "rho=100"),
        ("E3 ρ=10", &e.e3, "rho=10"),
        ("E3 ρ=100", &e.e3, "rho=100"),
    ] {
        for v in [
            VariantKey::SML,
            VariantKey::SML_INV,
            VariantKey::LGL,
            VariantKey::LGL_INV,
        ] {
            let runs: Vec<&RunRecord> = select(records, group, &v)
                .filter(|r| r.evidence())
                .collect();
            if runs.is_empty() {
                continue;
            }
            let (mut cv, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new());
            for r in &runs {
                let Some(x) = r.result.as_ref() else { continue };
                let Some(refit) = x.refit.as_ref() else {
                    continue;
                };
                let p = &refit.audit.p_bar;
                let k = p.len();
                if k < 2 || p[0].len() != k {
                    continue;
                }
                let w = if v == VariantKey::SML_INV || v == VariantKey::LGL_INV {
                    inverse(&x.train_counts)
                } else {
                    vec![1.0; k]
                };
                let miss: Vec<f64> = (0..k).map(|c| 1.0 - p[c][c]).collect();
                let side: Vec<f64> = (0..k)
                    .map(|c| miss[c] * w[c] * x.train_counts[c] as f64)
                    .collect();
                let s = stats(&side);
                cv.push(s.std / s.mean);
                lo.push(miss.iter().cloned().fold(f64::INFINITY, f64::min));
                hi.push(miss.iter().cloned().fold(0.0, f64::max));
            }
            if cv.is_empty() {
                continue;
            }
            rows.push(vec![
                name.to_string(),
                runs[0].run.label.clone(),
                cell(&cv, 1.0, 3),
                format!("{:.4} – {:.4}", stats(&lo).mean, stats(&hi).mean),
            ]);
        }
    }
    md.push_str(&table(
        &["data", "loss", "CV of (1 − p̄_kk)·w_k·n_k", "1 − p̄_kk range"],
        rows,
    ));
    md
}

/// Claim (2)'s and the remedy's measures per condition and loss.
pub fn claim_two_section(e: &Evidence, input: &[Comparison]) -> String {
    let mut md = String::from("## Claim (2): the averaging effect\n\nPer output k, over the non-target classes j: concentration `max p̄_jk / mean p̄_jk` and the hardest class's share of the negative mass `max n_j p̄_jk / Σ n_j p̄_jk`, averaged over outputs — on the training set after the refit (E0b) and on the test set as trained; and the test error rate on the 6 most-confused ordered class pairs, chosen from SML's confusion matrices pooled over seeds. Mean ± standard error over seeds (non-degenerate and not diverged for the training-set measures).\n\n");
    let inr = e.lgl_inr();
    let mut rows = Vec::new();
    for (name, records, group) in e.conditions() {
        let sml = VariantKey::SML;
        let sml_confusions: Vec<&Vec<Vec<usize>>> = select(records, group, &sml)
            .filter(|r| r.counts())
            .filter_map(|r| r.result.as_ref().map(|x| &x.test.confusion))
            .collect();
        let pairs = confusable_pairs(&sml_confusions, 6);
        let mut variants = vec![VariantKey::SML, VariantKey::LGL];
        variants.extend(inr.clone());
        for v in &variants {
            if select(records, group, v).next().is_none() {
                continue;
            }
            let label = select(records, group, v)
                .next()
                .map_or(v.to_string(), |r| r.run.label.clone());
            let train_c = per_seed(records, group, v, true, refit_concentration);
            let train_s = per_seed(records, group, v, true, |_, x| {
                let refit = x.refit.as_ref()?;
                hardest_share(&refit.audit.p_bar, &x.train_counts)
            });
            let test_c = per_seed(records, group, v, false, |_, x| {
                concentration(&x.test.p_bar)
            });
            let test_s = per_seed(records, group, v, false, |_, x| {
                hardest_share(&x.test.p_bar, &x.test.counts)
            });
            let pair = per_seed(records, group, v, false, |_, x| {
                Some(pair_error(&x.test.confusion, &pairs))
            });
            rows.push(vec![
                name.clone(),
                label,
                cell(&values(&train_c), 1.0, 3),
                cell(&values(&train_s), 1.0, 3),
                cell(&values(&test_c), 1.0, 3),
                cell(&values(&test_s), 1.0, 3),
                cell(&values(&pair), 100.0, 2),
            ]);
        }
    }
    md.push_str(&table(
        &[
            "condition",
            "loss",
            "concentration (train, refit)",
            "hardest share (train, refit)",
            "concentration (test)",
            "hardest share (test)",
            "confusable-pair error (%)",
        ],
        rows,
    ));
    md.push_str("\nThe rule's comparison, LGL minus SML (concentration, training set after the refit), and the remedy's, LGL-INR minus LGL (the same measure; it belongs to claim (3)):\n\n");
    let mut rows = Vec::new();
    for (c, (name, records, group)) in input.iter().zip(e.conditions()) {
        let remedy = inr.as_ref().map(|k| {
            paired(
                &per_seed(records, group, k, true, refit_concentration),
                &per_seed(records, group, &VariantKey::LGL, true, refit_concentration),
            )
        });
        rows.push(vec![
            name,
            paired_cell(c.paired, 1.0),
            paired_cell(remedy.flatten(), 1.0),
        ]);
    }
    md.push_str(&table(&["condition", "LGL − SML", "LGL-INR − LGL"], rows));
    md
}

/// Claim (3)'s table: balanced error of the main losses per condition, and the paired
/// differences the rule reads.
pub fn claim_three_section(e: &Evidence, input: &[Competition]) -> String {
    let mut md = String::from("## Claim (3): competitiveness\n\nBalanced test error (%), mean ± standard error over the seeds that did not diverge (n of N when some did); LGL-INR at E1's best β and its own learning rate, and at β = 1.\n\n");
    let mut variants = vec![VariantKey::SML, VariantKey::LGL];
    variants.extend(e.lgl_inr());
    if e.best_beta != Some(1.0) {
        variants.push(VariantKey::LGL_INR_B1);
    }
    variants.push(VariantKey::LGL_INR_B1_COMMON_LR);
    // Only the variants that were planned somewhere (β = 1 at the common rate is not when
    // the sweep chose that rate).
    variants.retain(|v| {
        e.all()
            .any(|r| r.run.variant == *v && r.run.experiment != Experiment::LrSweep)
    });
    let mut header = vec!["condition".to_string()];
    let mut rows = Vec::new();
    for (name, records, group) in e.conditions() {
        let mut row = vec![name];
        for v in &variants {
            row.push(error_cell(records, group, v));
        }
        rows.push(row);
    }
    for v in &variants {
        let label = e
            .all()
            .find(|r| r.run.variant == *v && r.run.experiment != Experiment::LrSweep)
            .map_or(v.to_string(), |r| {
                format!("{} (lr {})", r.run.label, r.run.config.lr)
            });
        header.push(label);
    }
    let header: Vec<&str> = header.iter().map(|s| s.as_str()).collect();
    md.push_str(&table(&header, rows));
    md.push_str("\nLGL-INR minus SML (percentage points), paired by seed:\n\n");
    md.push_str(&table(
        &["condition", "difference", "LGL-INR diverged"],
        input.iter().map(|c| {
            vec![
                c.error.condition.clone(),
                paired_cell(c.error.paired, 100.0),
                format!("{} of {}", c.diverged.0, c.diverged.1),
            ]
        }),
    ));
    md
}

/// Every headline loss per condition: balanced test error, mean ± standard error.
pub fn headline_section(e: &Evidence) -> String {
    let mut md = String::from("## Headline: balanced test error (%)\n\nMean ± standard error over the seeds that did not diverge (n of N when some did). Differences within two standard errors are noise: no loss is called best here; the claims' paired comparisons are above.\n\n");
    let conditions = e.conditions();
    let mut variants: Vec<(VariantKey, String)> = Vec::new();
    for (_, records, _) in &conditions {
        for r in records.iter() {
            if !variants.iter().any(|(v, _)| *v == r.run.variant) {
                variants.push((r.run.variant.clone(), r.run.label.clone()));
            }
        }
    }
    let mut header = vec!["loss".to_string()];
    header.extend(conditions.iter().map(|(n, _, _)| n.clone()));
    let rows = variants.iter().map(|(v, label)| {
        let mut row = vec![label.clone()];
        for (_, records, group) in &conditions {
            row.push(error_cell(records, group, v));
        }
        row
    });
    let header: Vec<&str> = header.iter().map(|s| s.as_str()).collect();
    md.push_str(&table(&header, rows));
    md
}

/// Failure rate per (experiment, condition, loss) where a run diverged, and every diverged
/// run with its rule and loss curve; and the degenerate networks.
pub fn divergence_section(e: &Evidence) -> String {
    let mut md = String::from("## Divergence and degenerate networks\n\nA run diverged if its training loss in an epoch after the first exceeded 1.5 × its first epoch's, or its final balanced test accuracy was at most 1.5/K, or its loss became non-finite. Diverged runs are left out of every mean. A network with balanced training accuracy at most 1.5/K is degenerate: its audit is listed in E0b but never counted as evidence.\n\n");
    let mut rows = Vec::new();
    let mut keys: Vec<(Experiment, String, VariantKey, String)> = Vec::new();
    for r in e.all() {
        let k = (
            r.run.experiment,
            r.run.group.clone(),
            r.run.variant.clone(),
            r.run.label.clone(),
        );
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (x, g, v, label) in &keys {
        let runs: Vec<&RunRecord> = e
            .all()
            .filter(|r| r.run.experiment == *x && r.run.group == *g && r.run.variant == *v)
            .collect();
        let diverged = runs.iter().filter(|r| r.diverged.is_some()).count();
        if diverged > 0 {
            rows.push(vec![
                x.name().to_string(),
                g.clone(),
                label.clone(),
                format!("{diverged} of {}", runs.len()),
            ]);
        }
    }
    if rows.is_empty() {
        md.push_str("No run diverged.\n");
    } else {
        md.push_str("Failure rate (only where a run diverged):\n\n");
        md.push_str(&table(&["experiment", "data", "loss", "diverged"], rows));
        md.push_str("\nThe diverged runs:\n\n");
        for r in e.all().filter(|r| r.diverged.is_some()) {
            let _ = writeln!(
                md,
                "- {} {} {} (lr {}), seed {}: {}; training loss per epoch {}",
                r.run.experiment,
                r.run.group,
                r.run.label,
                r.run.config.lr,
                r.run.seed,
                r.diverged.as_deref().unwrap_or(""),
                r.losses
                    .iter()
                    .map(|l| format!("{l:.4}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let degenerate: Vec<&RunRecord> = e
        .all()
        .filter(|r| r.run.experiment != Experiment::LrSweep && r.degenerate())
        .collect();
    md.push_str("\nDegenerate networks: ");
    if degenerate.is_empty() {
        md.push_str("none.\n");
    } else {
        md.push('\n');
        for r in degenerate {
            let _ = writeln!(
                md,
                "- {} {} {}, seed {}: balanced training accuracy {:.2}%",
                r.run.experiment,
                r.run.group,
                r.run.label,
                r.run.seed,
                100.0 * r.train_balanced_accuracy.unwrap_or(0.0)
            );
        }
    }
    md
}
