//! The evidence the verdicts read, computed from the runs on disk: every planned run with
//! how it ended ([`RunRecord`]), the claims' measures per seed, the rules' inputs, and the
//! runs' provenance. The report's sections on them are in [`super::sections`].

use super::analysis::{RunResult, RESULT_FILE};
use super::claims::{concentration, full_batch_ratio, minibatch_ratio};
use super::protocol::{best_beta, chosen_lrs, plan_if_ready, ChosenLrs};
use super::verdicts::{ClaimOneInput, Comparison, Competition, RatioCheck, RecallCheck};
use super::{
    read_json, read_outcome, Experiment, PlannedRun, Provenance, ReproduceConfig, RunOutcome,
    VariantKey,
};
use crate::loss::weights::ClassWeighting;
use crate::train::divergence::CHANCE_MULTIPLE;
use crate::train::TrainError;
use serde::Serialize;

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
    pub(crate) fn conditions(&self) -> Vec<(String, &[RunRecord], &'static str)> {
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

pub(crate) fn select<'a>(
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

pub(crate) fn balanced_error(_: &RunRecord, r: &RunResult) -> Option<f64> {
    Some(1.0 - r.test.balanced_accuracy)
}

pub(crate) fn refit_concentration(_: &RunRecord, r: &RunResult) -> Option<f64> {
    concentration(&r.refit.as_ref()?.audit.p_bar)
}

/// The inverse-frequency weights of `counts` as the losses use them.
pub(crate) fn inverse(counts: &[usize]) -> Vec<f64> {
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
