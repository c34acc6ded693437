//! The evidence the verdicts read, computed from the runs on disk: every planned run with
//! how it ended ([`RunRecord`]), the claims' measures per seed, the rules' inputs, and the
//! report's sections on them (learning rates, LGL-INR's focus, the binary relation's
//! predictions, the averaging effect, competitiveness, divergence, provenance).

use super::analysis::{RunResult, RESULT_FILE};
use super::claims::{
    concentration, confusable_pairs, full_batch_ratio, hardest_share, minibatch_ratio, pair_error,
};
use super::markdown::table;
use super::protocol::{best_beta, chosen_lrs, plan_if_ready, ChosenLrs};
use super::stats::{paired, stats, Paired, Stats};
use super::verdicts::{ClaimOneInput, Comparison, Competition, RatioCheck, RecallCheck};
use super::{
    read_json, read_outcome, Experiment, PlannedRun, Provenance, ReproduceConfig, RunOutcome,
    VariantKey,
};
use crate::loss::weights::ClassWeighting;
use crate::train::divergence::CHANCE_MULTIPLE;
use crate::train::TrainError;
use serde::Serialize;
use std::fmt::Write as _;

/// One planned run as the report sees it.
#[derive(Clone, Debug)]
pub struct RunRecord {
    /// The planned run.
    pub run: PlannedRun,
    /// Why it counts as diverged: the divergence rule it broke, or its non-finite loss.
    pub diverged: Option<String>,
    /// Training loss per epoch.
    pub losses: Vec<f64>,
    /// LGL-INR's focus, the mean over every training batch (epochs have equal batches).
    pub focus: Option<f64>,
    /// Balanced training accuracy (eval mode) of a trained run.
    pub train_balanced_accuracy: Option<f64>,
    /// Classes of its data.
    pub classes: usize,
    /// The revision its binary was built from.
    pub revision: Option<String>,
    /// Threads it trained with.
    pub threads: usize,
    /// Command, jobs, CPU, wall time.
    pub provenance: Provenance,
    /// Its analysis, once analysed (trained runs only).
    pub result: Option<RunResult>,
}

impl RunRecord {
    /// Degenerate (docs/EXPERIMENTS.md): balanced training accuracy at most 1.5 / K. Its
    /// audit is reported but never counted as evidence.
    pub fn degenerate(&self) -> bool {
        self.train_balanced_accuracy
            .is_some_and(|a| a <= CHANCE_MULTIPLE / self.classes.max(1) as f64)
    }

    /// Trained, analysed and not diverged: it counts in the means.
    pub fn counts(&self) -> bool {
        self.diverged.is_none() && self.result.is_some()
    }

    /// It counts, and is not degenerate: its audit is evidence.
    pub fn evidence(&self) -> bool {
        self.counts() && !self.degenerate()
    }

    /// Whether training itself failed: its loss grew past the divergence rule's limit or
    /// became non-finite (rather than the run finishing at chance balanced accuracy).
    pub fn training_failed(&self) -> bool {
        let grew = self.losses.first().is_some_and(|&first| {
            self.losses
                .iter()
                .skip(1)
                .any(|&l| l > crate::train::divergence::LOSS_GROWTH_LIMIT * first || !l.is_finite())
        });
        grew || (self.diverged.is_some() && self.result.is_none())
    }

    /// A trained, analysed, non-degenerate network whose training did not fail: what the
    /// binary relation (claim 1) is measured on. A binary network that finished at most
    /// 1.5/K = 75% balanced accuracy is diverged by the protocol's accuracy clause and out
    /// of the means, but it is exactly the imbalanced network whose minority recall and
    /// ratio the claim is about.
    pub fn binary_evidence(&self) -> bool {
        self.result.is_some() && !self.training_failed() && !self.degenerate()
    }
}

/// Every run of `experiment` that has ended, in plan order (none while it cannot be
/// planned yet).
pub fn records(
    config: &ReproduceConfig,
    experiment: Experiment,
) -> Result<Vec<RunRecord>, TrainError> {
    if experiment == Experiment::E4 && config.cifar_dir.is_none() {
        return Ok(Vec::new());
    }
    let Some(runs) = plan_if_ready(config, experiment)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for run in runs {
        let Some(outcome) = read_outcome(run.dir())? else {
            continue;
        };
        let path = run.dir().join(RESULT_FILE);
        let result: Option<RunResult> = path.is_file().then(|| read_json(&path)).transpose()?;
        let record = match outcome {
            RunOutcome::Trained(t) => {
                let focus: Vec<f64> = t.summary.epochs.iter().filter_map(|e| e.focus).collect();
                RunRecord {
                    diverged: t
                        .summary
                        .divergence
                        .as_ref()
                        .map(|d| format!("epoch {}: {}", d.epoch, d.rule)),
                    losses: t.summary.epochs.iter().map(|e| e.train_loss).collect(),
                    focus: (!focus.is_empty())
                        .then(|| focus.iter().sum::<f64>() / focus.len() as f64),
                    train_balanced_accuracy: Some(t.summary.train.balanced_accuracy),
                    classes: t.summary.train_class_counts.len(),
                    revision: t.git_revision.clone(),
                    threads: t.threads,
                    provenance: t.provenance.clone(),
                    result,
                    run,
                }
            }
            RunOutcome::Failed(f) => RunRecord {
                diverged: Some(f.error.clone()),
                losses: f.epochs.iter().map(|e| e.train_loss).collect(),
                focus: None,
                train_balanced_accuracy: None,
                classes: 0,
                revision: f.git_revision.clone(),
                threads: f.threads,
                provenance: f.provenance.clone(),
                result: None,
                run,
            },
        };
        out.push(record);
    }
    Ok(out)
}

/// Every experiment's records (the sweep's included), for the report.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// The learning-rate sweep.
    pub sweep: Vec<RunRecord>,
    /// E1.
    pub e1: Vec<RunRecord>,
    /// E2.
    pub e2: Vec<RunRecord>,
    /// E3.
    pub e3: Vec<RunRecord>,
    /// E4.
    pub e4: Vec<RunRecord>,
    /// E5.
    pub e5: Vec<RunRecord>,
    /// The sweep's choice, once it is done.
    pub lrs: Option<ChosenLrs>,
    /// E1's best β, once E1 is done.
    pub best_beta: Option<f64>,
}

impl Evidence {
    /// Reads every experiment's runs.
    pub fn load(config: &ReproduceConfig) -> Result<Self, TrainError> {
        Ok(Evidence {
            sweep: records(config, Experiment::LrSweep)?,
            e1: records(config, Experiment::E1)?,
            e2: records(config, Experiment::E2)?,
            e3: records(config, Experiment::E3)?,
            e4: records(config, Experiment::E4)?,
            e5: records(config, Experiment::E5)?,
            lrs: chosen_lrs(config)?,
            best_beta: best_beta(config)?,
        })
    }

    /// Every record, the sweep's first.
    pub fn all(&self) -> impl Iterator<Item = &RunRecord> {
        self.sweep
            .iter()
            .chain(&self.e1)
            .chain(&self.e2)
            .chain(&self.e3)
            .chain(&self.e4)
            .chain(&self.e5)
    }

    /// The training revisions of the runs, each with how many runs record it.
    pub fn revisions(&self) -> Vec<(String, usize)> {
        let mut out: Vec<(String, usize)> = Vec::new();
        for r in self.all() {
            let rev = r.revision.clone().unwrap_or_else(|| "unknown".into());
            match out.iter_mut().find(|(v, _)| *v == rev) {
                Some((_, n)) => *n += 1,
                None => out.push((rev, 1)),
            }
        }
        out
    }

    /// The conditions claims (2) and (3) are judged in: (name, records, group).
    fn conditions(&self) -> Vec<(String, &[RunRecord], &'static str)> {
        let mut c: Vec<(String, &[RunRecord], &'static str)> = vec![
            ("E1 balanced".into(), &self.e1, "balanced"),
            ("E3 ρ=10".into(), &self.e3, "rho=10"),
            ("E3 ρ=100".into(), &self.e3, "rho=100"),
            ("E5 ρ=100 (resnet20)".into(), &self.e5, "rho=100"),
        ];
        if !self.e4.is_empty() {
            c.push(("E4 balanced (CIFAR-10)".into(), &self.e4, "balanced"));
            c.push(("E4 ρ=100 (CIFAR-10)".into(), &self.e4, "rho=100"));
        }
        c
    }

    /// LGL-INR's key in the claims: E1's best β at its own rate.
    pub fn lgl_inr(&self) -> Option<VariantKey> {
        self.best_beta.map(VariantKey::lgl_inr)
    }
}

fn select<'a>(
    records: &'a [RunRecord],
    group: &'a str,
    variant: &'a VariantKey,
) -> impl Iterator<Item = &'a RunRecord> + 'a {
    records
        .iter()
        .filter(move |r| r.run.group == group && r.run.variant == *variant)
}

/// `(seed, f(run))` over the runs of (group, variant) that count (`evidence_only`: that
/// are also not degenerate) and where `f` has a value.
pub fn per_seed(
    records: &[RunRecord],
    group: &str,
    variant: &VariantKey,
    evidence_only: bool,
    f: impl Fn(&RunRecord, &RunResult) -> Option<f64>,
) -> Vec<(u64, f64)> {
    select(records, group, variant)
        .filter(|r| {
            if evidence_only {
                r.evidence()
            } else {
                r.counts()
            }
        })
        .filter_map(|r| f(r, r.result.as_ref()?).map(|v| (r.run.seed, v)))
        .collect()
}

fn balanced_error(_: &RunRecord, r: &RunResult) -> Option<f64> {
    Some(1.0 - r.test.balanced_accuracy)
}

fn refit_concentration(_: &RunRecord, r: &RunResult) -> Option<f64> {
    concentration(&r.refit.as_ref()?.audit.p_bar)
}

/// The inverse-frequency weights of `counts` as the losses use them.
fn inverse(counts: &[usize]) -> Vec<f64> {
    ClassWeighting::Inverse
        .weights(counts)
        .unwrap_or_else(|| vec![1.0; counts.len()])
}

/// Claim (1)'s inputs from E2.
pub fn claim_one_input(e: &Evidence) -> ClaimOneInput {
    let lgl_variants = [
        VariantKey::LGL,
        VariantKey::LGL_INV_SAMPLE,
        VariantKey::LGL_INV_POSNEG,
    ];
    let mut input = ClaimOneInput::default();
    for r in
        e.e2.iter()
            .filter(|r| lgl_variants.contains(&r.run.variant) && r.binary_evidence())
    {
        if let Some(refit) = r.result.as_ref().and_then(|x| x.refit.as_ref()) {
            input.refit_residuals.push((
                format!("{} {} seed {}", r.run.group, r.run.label, r.run.seed),
                refit.audit.max_residual,
            ));
        }
    }
    let mut groups: Vec<&str> = Vec::new();
    for r in &e.e2 {
        if !groups.contains(&r.run.group.as_str()) {
            groups.push(&r.run.group);
        }
    }
    for group in &groups {
        for v in &lgl_variants {
            let runs: Vec<&RunRecord> = select(&e.e2, group, v)
                .filter(|r| r.binary_evidence())
                .collect();
            let Some(first) = runs.first().and_then(|r| r.result.as_ref()) else {
                continue;
            };
            let counts = &first.train_counts;
            if counts.len() != 2 {
                continue;
            }
            let (n0, n1) = (counts[0], counts[1]);
            let w = if *v == VariantKey::LGL {
                vec![1.0, 1.0]
            } else {
                inverse(counts)
            };
            let observed: Vec<f64> = runs
                .iter()
                .filter_map(|r| {
                    let a = r.result.as_ref()?.audit_trained.as_ref()?;
                    let (p1, p0) = (a.p_bar[1][0], a.p_bar[0][0]);
                    Some((1.0 - p1) / p0)
                })
                .collect();
            input.ratios.push(RatioCheck {
                group: group.to_string(),
                label: first.run.label.clone(),
                observed,
                full_batch: full_batch_ratio(n1, n0, w[1], w[0]),
                minibatch: minibatch_ratio(n1, n0, w[1], w[0], first.run.config.batch_size),
                // The per-sample form divides each batch by its sum of weights; the
                // positive/negative form, like unweighted LGL, by the batch size.
                divides_by_weights: *v == VariantKey::LGL_INV_SAMPLE,
            });
        }
    }
    let recall = |v: &VariantKey| -> Vec<(u64, f64)> {
        select(&e.e2, "rho=100", v)
            .filter(|r| r.binary_evidence())
            .filter_map(|r| {
                let x = r.result.as_ref()?;
                Some((r.run.seed, *x.test.per_class_accuracy.get(1)?))
            })
            .collect()
    };
    let unweighted = recall(&VariantKey::LGL);
    for v in [VariantKey::LGL_INV_SAMPLE, VariantKey::LGL_INV_POSNEG] {
        let weighted = recall(&v);
        if weighted.is_empty() {
            continue;
        }
        let label = select(&e.e2, "rho=100", &v)
            .next()
            .map_or(v.to_string(), |r| r.run.label.clone());
        input.recall.push(RecallCheck {
            label,
            seeds: weighted
                .iter()
                .filter_map(|&(s, w)| {
                    unweighted
                        .iter()
                        .find(|&&(t, _)| t == s)
                        .map(|&(_, u)| (s, w, u))
                })
                .collect(),
        });
    }
    input
}

/// Claim (2)'s inputs: LGL's concentration against SML's (training set, after the refit)
/// in E1, E3 ρ=10 and E3 ρ=100.
pub fn claim_two_input(e: &Evidence) -> Vec<Comparison> {
    e.conditions()
        .into_iter()
        .take(3)
        .map(|(name, records, group)| {
            Comparison::of(
                &name,
                &per_seed(records, group, &VariantKey::LGL, true, refit_concentration),
                &per_seed(records, group, &VariantKey::SML, true, refit_concentration),
            )
        })
        .collect()
}

/// Claim (3)'s inputs: LGL-INR (E1's best β) against SML in balanced error, per condition.
pub fn claim_three_input(e: &Evidence) -> Vec<Competition> {
    let Some(inr) = e.lgl_inr() else {
        return Vec::new();
    };
    e.conditions()
        .into_iter()
        .filter(|(_, records, group)| select(records, group, &inr).next().is_some())
        .map(|(name, records, group)| {
            let runs: Vec<&RunRecord> = select(records, group, &inr).collect();
            Competition {
                error: Comparison::of(
                    &name,
                    &per_seed(records, group, &inr, false, balanced_error),
                    &per_seed(records, group, &VariantKey::SML, false, balanced_error),
                ),
                diverged: (
                    runs.iter().filter(|r| r.diverged.is_some()).count(),
                    runs.len(),
                ),
            }
        })
        .collect()
}

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

/// The runs' provenance: revisions, commands, jobs, threads, CPUs and wall time.
#[derive(Clone, Debug, Serialize)]
pub struct ProvenanceSummary {
    /// Training revisions, with how many runs record each.
    pub revisions: Vec<(String, usize)>,
    /// The commands that trained them.
    pub commands: Vec<String>,
    /// `--jobs` values.
    pub jobs: Vec<usize>,
    /// Threads per run.
    pub threads: Vec<usize>,
    /// CPU models.
    pub cpus: Vec<String>,
    /// Training wall time summed over runs (seconds).
    pub train_seconds: f64,
    /// Runs.
    pub runs: usize,
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// Summarises every run's provenance.
pub fn provenance_summary(e: &Evidence) -> ProvenanceSummary {
    let mut s = ProvenanceSummary {
        revisions: e.revisions(),
        commands: Vec::new(),
        jobs: Vec::new(),
        threads: Vec::new(),
        cpus: Vec::new(),
        train_seconds: 0.0,
        runs: 0,
    };
    for r in e.all() {
        push_unique(&mut s.commands, r.provenance.command.join(" "));
        push_unique(&mut s.jobs, r.provenance.jobs);
        push_unique(&mut s.threads, r.threads);
        push_unique(
            &mut s.cpus,
            r.provenance
                .cpu_model
                .clone()
                .unwrap_or_else(|| "unknown".into()),
        );
        s.train_seconds += r.provenance.wall_seconds;
        s.runs += 1;
    }
    s
}
