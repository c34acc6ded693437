//! Tables, plots and `REPORT.md` from the runs' `result.json` files and E0's result.
//! Every number written here is computed from those files; the verdicts follow the rules
//! stated next to them.

use super::analysis::{RunResult, RESULT_FILE};
use super::convex::ConvexResult;
use super::e0::{write_e0, write_e0b};
use super::e2::write_e2;
use super::evidence::{
    claim_one_input, claim_three_input, claim_two_input, provenance_summary, Evidence,
};
use super::markdown::table;
use super::sections::{
    claim_one_section, claim_three_section, claim_two_section, divergence_section, focus_section,
    headline_section, lr_section,
};
use super::stats::{confusion_spread, max_of, mean_matrix, opt_sci, pm, sci, stats, Stats};
pub use super::verdicts::Verdict;
use super::verdicts::{claim_one, claim_three, claim_two};
use super::{read_json, write_json, write_text, Experiment, ReproduceConfig, VariantKey};
use crate::loss::Audit;
use crate::train::plots::{grouped_bar_chart, multi_line_chart, off_diagonal_heatmap};
use crate::train::TrainError;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// The results of `experiment`'s planned runs that have one and did not diverge (the
/// protocol leaves diverged runs out of every mean; the report lists them), in plan order.
/// Empty while the experiment cannot be planned yet.
pub fn load_results(
    config: &ReproduceConfig,
    experiment: Experiment,
) -> Result<Vec<RunResult>, TrainError> {
    load_analysed(config, experiment, false)
}

/// The results of `experiment`'s analysed runs, those that diverged included when
/// `with_diverged` (E2's relation table: a binary network the accuracy clause calls
/// diverged is still the imbalanced network the relation is about).
pub fn load_analysed(
    config: &ReproduceConfig,
    experiment: Experiment,
    with_diverged: bool,
) -> Result<Vec<RunResult>, TrainError> {
    let mut out = Vec::new();
    let Some(runs) = super::protocol::plan_if_ready(config, experiment)? else {
        return Ok(out);
    };
    for run in runs {
        let path = run.dir().join(RESULT_FILE);
        let diverged = match super::read_outcome(run.dir())? {
            Some(super::RunOutcome::Trained(t)) => t.summary.divergence.is_some(),
            _ => true,
        };
        if path.is_file() && (with_diverged || !diverged) {
            out.push(read_json(&path)?);
        }
    }
    Ok(out)
}

/// (group, variant key, label) of a group of runs.
type GroupKey = (String, VariantKey, String);

/// Results grouped by (group, variant), in first-seen order, with the variant's label.
pub(crate) fn grouped(results: &[RunResult]) -> Vec<(GroupKey, Vec<&RunResult>)> {
    let mut order: Vec<GroupKey> = Vec::new();
    let mut map: BTreeMap<(String, VariantKey), Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        let key = (r.run.group.clone(), r.run.variant.clone());
        if !map.contains_key(&key) {
            order.push((key.0.clone(), key.1.clone(), r.run.label.clone()));
        }
        map.entry(key).or_default().push(r);
    }
    order
        .into_iter()
        .map(|(g, v, l)| {
            let runs = map.remove(&(g.clone(), v.clone())).unwrap_or_default();
            ((g, v, l), runs)
        })
        .collect()
}

fn residual(a: &Option<Audit>) -> Option<f64> {
    a.as_ref().map(|a| a.max_residual)
}

pub(crate) fn provenance(results: &[RunResult]) -> String {
    let mut revisions: Vec<String> = results
        .iter()
        .map(|r| r.git_revision.clone().unwrap_or_else(|| "unknown".into()))
        .collect();
    revisions.sort();
    revisions.dedup();
    let mut analysis: Vec<String> = results
        .iter()
        .map(|r| {
            r.analysis_revision
                .clone()
                .unwrap_or_else(|| "unknown".into())
        })
        .collect();
    analysis.sort();
    analysis.dedup();
    let mut threads: Vec<usize> = results.iter().map(|r| r.threads).collect();
    threads.sort();
    threads.dedup();
    let train: f64 = results.iter().map(|r| r.train_seconds).sum();
    let refit: f64 = results
        .iter()
        .filter_map(|r| r.refit.as_ref().map(|f| f.seconds))
        .sum();
    format!(
        "{} runs; recorded revision when training finished: {}; when analysed: {} (the revision the binary was built from; runs made before it was compiled in, as all of these, record git HEAD of the source tree at the moment they finished); {} thread(s) per run; training {:.0} s and refits {:.0} s of run time (summed over runs, which ran side by side)",
        results.len(),
        revisions.join(", "),
        analysis.join(", "),
        threads.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "),
        train,
        refit
    )
}

/// Headline numbers of one variant in one group.
#[derive(Clone, Debug, Serialize)]
pub struct VariantSummary {
    /// Group (`balanced`, `rho=10`, …).
    pub group: String,
    /// Variant key.
    pub variant: VariantKey,
    /// Table label.
    pub label: String,
    /// Seeds with a result.
    pub seeds: usize,
    /// Test accuracy.
    pub accuracy: Stats,
    /// Test balanced accuracy.
    pub balanced_accuracy: Stats,
    /// Mean test accuracy of the three classes with the fewest training images.
    pub rare_accuracy: Stats,
    /// Per-class test accuracy, mean over seeds.
    pub per_class_accuracy: Vec<f64>,
    /// Test `p̄`, mean over seeds.
    pub test_p_bar: Vec<Vec<f64>>,
    /// Column-averaged largest non-target `p̄` (test), per seed.
    pub hardest_confusion: Stats,
    /// Column-averaged mean non-target `p̄` (test), per seed.
    pub mean_confusion: Stats,
    /// Largest audit residual as trained, mean over seeds.
    pub residual_trained: Option<Stats>,
    /// Largest audit residual after the refit, worst seed.
    pub residual_refit: Option<f64>,
    /// Largest refit gradient norm, worst seed.
    pub refit_gradient_norm: Option<f64>,
    /// LGL-INR: largest residual of the exact condition with `ε` kept, worst seed.
    pub refit_residual_with_eps: Option<f64>,
    /// Final training loss, mean over seeds.
    pub train_loss_curve: Vec<f64>,
    /// Test accuracy per epoch, mean over seeds.
    pub test_accuracy_curve: Vec<f64>,
}

pub(crate) fn summarise(
    group: &str,
    variant: &VariantKey,
    label: &str,
    runs: &[&RunResult],
) -> VariantSummary {
    let acc: Vec<f64> = runs.iter().map(|r| r.test.accuracy).collect();
    let bal: Vec<f64> = runs.iter().map(|r| r.test.balanced_accuracy).collect();
    let rare: Vec<f64> = runs
        .iter()
        .map(|r| {
            let mut idx: Vec<usize> = (0..r.train_counts.len()).collect();
            idx.sort_by_key(|&k| r.train_counts[k]);
            let take: Vec<usize> = idx.into_iter().take(3).collect();
            take.iter()
                .map(|&k| r.test.per_class_accuracy.get(k).copied().unwrap_or(0.0))
                .sum::<f64>()
                / take.len().max(1) as f64
        })
        .collect();
    let k = runs.first().map_or(0, |r| r.test.per_class_accuracy.len());
    let per_class = (0..k)
        .map(|c| {
            runs.iter()
                .map(|r| r.test.per_class_accuracy[c])
                .sum::<f64>()
                / runs.len() as f64
        })
        .collect();
    let test_p_bar = mean_matrix(&runs.iter().map(|r| &r.test.p_bar).collect::<Vec<_>>());
    let spreads: Vec<(f64, f64)> = runs
        .iter()
        .map(|r| confusion_spread(&r.test.p_bar))
        .collect();
    let trained: Vec<f64> = runs
        .iter()
        .filter_map(|r| residual(&r.audit_trained))
        .collect();
    let curve = |f: &dyn Fn(&crate::train::EpochRecord) -> f64| -> Vec<f64> {
        let epochs = runs.iter().map(|r| r.epochs.len()).min().unwrap_or(0);
        (0..epochs)
            .map(|e| runs.iter().map(|r| f(&r.epochs[e])).sum::<f64>() / runs.len() as f64)
            .collect()
    };
    VariantSummary {
        group: group.to_string(),
        variant: variant.clone(),
        label: label.to_string(),
        seeds: runs.len(),
        accuracy: stats(&acc),
        balanced_accuracy: stats(&bal),
        rare_accuracy: stats(&rare),
        per_class_accuracy: per_class,
        test_p_bar,
        hardest_confusion: stats(&spreads.iter().map(|s| s.0).collect::<Vec<_>>()),
        mean_confusion: stats(&spreads.iter().map(|s| s.1).collect::<Vec<_>>()),
        residual_trained: (!trained.is_empty()).then(|| stats(&trained)),
        residual_refit: max_of(
            runs.iter()
                .filter_map(|r| residual(&r.refit.as_ref().map(|f| f.audit.clone()))),
        ),
        refit_gradient_norm: max_of(
            runs.iter()
                .filter_map(|r| r.refit.as_ref().map(|f| f.gradient_norm)),
        ),
        refit_residual_with_eps: max_of(
            runs.iter()
                .filter_map(|r| r.refit.as_ref().and_then(|f| f.residual_with_eps)),
        ),
        train_loss_curve: curve(&|e| e.train_loss),
        test_accuracy_curve: curve(&|e| e.test_accuracy),
    }
}

/// Writes the plots of a group: curves, per-class accuracy, `p̄` heatmaps.
fn group_plots(
    dir: &Path,
    group: &str,
    summaries: &[&VariantSummary],
) -> Result<Vec<String>, TrainError> {
    let tag = group.replace('=', "");
    let mut files = Vec::new();
    let series = |f: &dyn Fn(&VariantSummary) -> Vec<f64>| -> Vec<(String, Vec<f64>)> {
        summaries.iter().map(|s| (s.label.clone(), f(s))).collect()
    };
    let name = format!("{tag}-loss.png");
    multi_line_chart(
        &dir.join(&name),
        &format!("training loss ({group})"),
        "loss",
        &series(&|s| s.train_loss_curve.clone()),
    )?;
    files.push(name);
    let name = format!("{tag}-accuracy.png");
    multi_line_chart(
        &dir.join(&name),
        &format!("test accuracy ({group})"),
        "accuracy (%)",
        &series(&|s| s.test_accuracy_curve.iter().map(|a| 100.0 * a).collect()),
    )?;
    files.push(name);
    let k = summaries.first().map_or(0, |s| s.per_class_accuracy.len());
    let names: Vec<String> = (0..k).map(|c| c.to_string()).collect();
    let name = format!("{tag}-per-class-accuracy.png");
    grouped_bar_chart(
        &dir.join(&name),
        &format!("per-class test accuracy ({group})"),
        &names,
        &series(&|s| s.per_class_accuracy.clone()),
    )?;
    files.push(name);
    for s in summaries {
        let name = format!("{tag}-{}-p-bar.png", s.variant);
        off_diagonal_heatmap(
            &dir.join(&name),
            &format!("test p̄, {} ({group})", s.label),
            &s.test_p_bar,
        )?;
        files.push(name);
    }
    Ok(files)
}

pub(crate) fn summaries_of(results: &[RunResult]) -> Vec<VariantSummary> {
    grouped(results)
        .into_iter()
        .map(|((g, v, l), runs)| summarise(&g, &v, &l, &runs))
        .collect()
}

pub(crate) fn groups_of(summaries: &[VariantSummary]) -> Vec<String> {
    let mut g: Vec<String> = Vec::new();
    for s in summaries {
        if !g.contains(&s.group) {
            g.push(s.group.clone());
        }
    }
    g
}

/// E1/E3/E4: the multi-class table, plots and `summary.json`. Returns the summaries.
pub fn write_multiclass(
    config: &ReproduceConfig,
    experiment: Experiment,
    title: &str,
) -> Result<Vec<VariantSummary>, TrainError> {
    let results = load_results(config, experiment)?;
    let dir = config.out.join(experiment.name());
    if results.is_empty() {
        // Planned and trained, but no run counts (all diverged): say so.
        if dir.join("runs").is_dir() {
            write_text(
                &dir.join("README.md"),
                &format!(
                    "# {} — {title}\n\nNo analysed run that did not diverge: REPORT.md lists the diverged ones.\n",
                    experiment.name().to_uppercase()
                ),
            )?;
        }
        return Ok(Vec::new());
    }
    let summaries = summaries_of(&results);
    let mut md = format!("# {} — {title}\n\n", experiment.name().to_uppercase());
    let _ = writeln!(md, "{}.\n", provenance(&results));
    let _ = writeln!(md, "Test metrics are mean ± standard error over the seeds that did not diverge (REPORT.md lists diverged runs); residuals are the largest relative residual of the stationarity audit on the training set (docs/LOSSES.md §4) as trained (mean over seeds) and after the last-layer refit of E0b (worst seed). `hardest p̄` is the largest non-target class-averaged probability of each output on the test set, averaged over outputs; `mean p̄` the mean non-target one.\n");
    for group in groups_of(&summaries) {
        let in_group: Vec<&VariantSummary> =
            summaries.iter().filter(|s| s.group == group).collect();
        let _ = writeln!(md, "## {group}\n");
        let _ = writeln!(md, "| loss | seeds | test error (%) | balanced acc. (%) | rarest-3 acc. (%) | hardest p̄ (‰) | mean p̄ (‰) | residual as trained | after refit |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
        for s in &in_group {
            let err = Stats {
                mean: 1.0 - s.accuracy.mean,
                ..s.accuracy
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.label,
                s.seeds,
                pm(err, 100.0, 2),
                pm(s.balanced_accuracy, 100.0, 2),
                pm(s.rare_accuracy, 100.0, 2),
                pm(s.hardest_confusion, 1000.0, 2),
                pm(s.mean_confusion, 1000.0, 3),
                s.residual_trained.map_or("—".into(), |r| sci(r.mean)),
                opt_sci(s.residual_refit),
            );
        }
        md.push('\n');
        let files = group_plots(&dir, &group, &in_group)?;
        for f in files {
            let _ = writeln!(md, "![{f}]({f})");
        }
        md.push('\n');
    }
    md.push_str(&audit_appendix(&results));
    write_text(&dir.join("README.md"), &md)?;
    write_json(&dir.join("summary.json"), &summaries)?;
    Ok(summaries)
}

/// Both sides of every class's condition, as trained and after the refit, for the first
/// seed of each loss that has a condition.
fn audit_appendix(results: &[RunResult]) -> String {
    let mut md = String::from("## Audit tables (first seed of each loss)\n\n");
    for ((g, _, l), runs) in grouped(results) {
        let Some(r) = runs.first() else { continue };
        let (Some(trained), Some(refit)) = (&r.audit_trained, &r.refit) else {
            continue;
        };
        let _ = writeln!(
            md,
            "### {g}, {l}, seed {}\n\n{}\n\n| class | n | lhs as trained | rhs as trained | residual | lhs after refit | rhs after refit | residual |\n|---|---|---|---|---|---|---|---|",
            r.run.seed, trained.condition
        );
        for (a, b) in trained.rows.iter().zip(&refit.audit.rows) {
            let _ = writeln!(
                md,
                "| {} | {} | {:.6e} | {:.6e} | {} | {:.6e} | {:.6e} | {} |",
                a.class,
                a.count,
                a.lhs,
                a.rhs,
                sci(a.residual),
                b.lhs,
                b.rhs,
                sci(b.residual)
            );
        }
        md.push('\n');
    }
    md
}

/// Writes every requested experiment's outputs and `REPORT.md` from what is on disk.
pub fn write_report(
    config: &ReproduceConfig,
    convex: Option<&ConvexResult>,
    wall_seconds: f64,
) -> Result<Vec<Verdict>, TrainError> {
    write_multiclass(
        config,
        Experiment::E1,
        "balanced MNIST: LGL vs SML vs LGL-INR",
    )?;
    write_e2(config)?;
    write_multiclass(config, Experiment::E3, "long-tailed MNIST, 10 classes")?;
    write_multiclass(
        config,
        Experiment::E5,
        "resnet20 on long-tailed MNIST (ρ = 100)",
    )?;
    if config.cifar_dir.is_some() {
        write_multiclass(config, Experiment::E4, "CIFAR-10 on resnet32, 30 epochs")?;
    }
    let e0b = write_e0b(config)?;
    if let Some(c) = convex {
        write_e0(config, c)?;
    }
    let evidence = Evidence::load(config)?;
    let one = claim_one_input(&evidence);
    let two = claim_two_input(&evidence);
    let three = claim_three_input(&evidence);
    let verdicts = vec![claim_one(&one), claim_two(&two), claim_three(&three)];
    let provenance = provenance_summary(&evidence);
    let mut md = String::from("# Reproducing Li et al., \"On the Learning Property of Logistic and Softmax Losses for Deep Neural Networks\" (AAAI 2020)\n\n");
    if config.quick {
        md.push_str("**Quick mode: small data and 2 epochs — a smoke test of the pipeline, not evidence. The verdicts below say nothing about the paper.**\n\n");
    }
    let _ = writeln!(
        md,
        "Produced by `tensorgrad reproduce` from protocol version 2 (docs/EXPERIMENTS.md), seeds {:?}; every number below is computed from the JSON records under this folder, and each verdict by the rule stated with it (unit-tested in `src/reproduce/verdicts.rs`).\n",
        config.seeds
    );
    md.push_str("## Provenance\n\n");
    let revisions: Vec<String> = provenance
        .revisions
        .iter()
        .map(|(r, n)| format!("`{r}` ({n} runs)"))
        .collect();
    let mixed = provenance.revisions.len() > 1;
    let _ = writeln!(
        md,
        "- Runs: {}, trained by a binary built from {}{}.",
        provenance.runs,
        revisions.join(", "),
        if mixed {
            " — **runs of different revisions are mixed in this report (--allow-mixed-revisions)**"
        } else {
            ""
        }
    );
    for c in &provenance.commands {
        let _ = writeln!(md, "- Trained by: `{c}`");
    }
    let _ = writeln!(
        md,
        "- Analysed and reported by: `{}` at revision `{}`; this invocation took {:.0} s.",
        config.command.join(" "),
        crate::train::run_dir::git_revision().unwrap_or_else(|| "unknown".into()),
        wall_seconds
    );
    let _ = writeln!(
        md,
        "- Runs side by side (--jobs): {:?}; threads per run: {:?}; CPU: {}.",
        provenance.jobs,
        provenance.threads,
        provenance.cpus.join("; ")
    );
    let _ = writeln!(
        md,
        "- Training wall time summed over runs: {:.1} h (runs trained side by side, so the elapsed time is about this divided by --jobs; a resumed run counts its last invocation only).\n",
        provenance.train_seconds / 3600.0
    );
    md.push_str("## Verdicts\n\n");
    md.push_str(&table(
        &["claim", "verdict"],
        verdicts
            .iter()
            .map(|v| vec![v.claim.clone(), format!("**{}**", v.verdict)]),
    ));
    for v in &verdicts {
        let _ = writeln!(md, "\n### {}\n\n**{}.** {}", v.claim, v.verdict, v.reason);
    }
    md.push('\n');
    md.push_str(&lr_section(&evidence));
    md.push('\n');
    md.push_str(&headline_section(&evidence));
    md.push('\n');
    md.push_str(&claim_one_section(&evidence, &one));
    md.push('\n');
    md.push_str(&claim_two_section(&evidence, &two));
    md.push('\n');
    md.push_str(&claim_three_section(&evidence, &three));
    md.push('\n');
    md.push_str(&focus_section(&evidence));
    md.push('\n');
    md.push_str(&divergence_section(&evidence));
    md.push_str("\n## E0 — the audit in the convex case\n\n");
    match convex {
        Some(c) => {
            let _ = writeln!(md, "Linear model on {} MNIST images, f64, penalty λ = {} on the weights only ({}; revision `{}`; [details](e0/README.md)). For LGL-INR the exact condition with ε kept is the one checked; the ε-free limit is beside it.\n\n| loss | gradient norm | train acc. (%) | max residual (LGL-INR: ε-free limit) | exact, ε kept (LGL-INR) |\n|---|---|---|---|---|", c.images, c.fits.first().map_or(0.0, |f| f.penalty), if c.separable { "the pixels are linearly separable" } else { "not separable" }, c.git_revision.as_deref().unwrap_or("unknown"));
            for f in &c.fits {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.2} | {} | {} |",
                    f.label,
                    sci(f.gradient_norm),
                    100.0 * f.train_accuracy,
                    sci(f.audit.max_residual),
                    opt_sci(f.residual_with_eps)
                );
            }
        }
        None => md.push_str("Not run in this invocation.\n"),
    }
    md.push_str("\n## E0b — the conditions on learned features\n\nLargest residual as trained (mean over seeds) and after the last-layer refit (worst seed); for LGL-INR also the exact condition with the loss's ε kept. The refit shows that the audit's algebra holds on learned features; it is not by itself evidence for a claim (the refit drives the bias gradient, which is the condition, to zero). Degenerate networks are listed above. [Details](e0b/README.md).\n\n| experiment | data | loss | as trained | after refit | LGL-INR with ε kept | refit gradient norm |\n|---|---|---|---|---|---|---|\n");
    for (e, s, _, _) in &e0b {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            e.name().to_uppercase(),
            s.group,
            s.label,
            s.residual_trained.map_or("—".into(), |r| sci(r.mean)),
            opt_sci(s.residual_refit),
            opt_sci(s.refit_residual_with_eps),
            opt_sci(s.refit_gradient_norm)
        );
    }
    md.push_str("\nPer experiment: [E1](e1/README.md), [E2](e2/README.md), [E3](e3/README.md), [E5](e5/README.md), [E0b](e0b/README.md)");
    if convex.is_some() {
        md.push_str(", [E0](e0/README.md)");
    }
    if config.cifar_dir.is_some() {
        md.push_str(", [E4](e4/README.md).\n");
    } else {
        md.push_str(". E4 (CIFAR-10) needs the data, which is not shipped.\n");
    }
    write_text(&config.out.join("REPORT.md"), &md)?;
    write_json(&config.out.join("verdicts.json"), &verdicts)?;
    write_json(
        &config.out.join("evidence.json"),
        &serde_json::json!({
            "provenance": provenance,
            "learning_rates": evidence.lrs,
            "best_beta": evidence.best_beta,
            "claim_one": one,
            "claim_two": two,
            "claim_three": three,
        }),
    )?;
    Ok(verdicts)
}
