//! E0, the convex case: a linear model on MNIST pixels in f64, fitted full-batch to a
//! gradient norm below 1e-8, and audited for every loss with a condition. Without weight
//! decay unless the pixels are linearly separable (then with the weights-only penalty of
//! E0b, as the protocol says). It validates the audit itself: there the conditions must hold.

use super::analysis::{
    accuracy, audit_logits, LastLayer, RefitLoss, REFIT_PENALTY, REFIT_TOLERANCE,
};
use super::ReproduceConfig;
use crate::autograd::no_grad;
use crate::data::{Augment, Batches, Normalization, Split};
use crate::loss::weights::ClassWeighting;
use crate::loss::{Audit, LossKind, LossOptions, WeightForm};
use crate::tensor::Tensor;
use crate::train::TrainError;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// One loss of E0.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConvexFit {
    /// The loss as the tables print it.
    pub label: String,
    /// Its options.
    pub loss: LossOptions,
    /// `λ` of `½λ‖W‖²` (0: none).
    pub penalty: f64,
    /// Final `‖∇‖₂`.
    pub gradient_norm: f64,
    /// Whether it is below the tolerance.
    pub converged: bool,
    /// L-BFGS iterations.
    pub iterations: usize,
    /// Fixed-point rounds (LGL-INR).
    pub rounds: usize,
    /// Training accuracy at the fitted point.
    pub train_accuracy: f64,
    /// Wall time (seconds).
    pub seconds: f64,
    /// Both sides of every condition.
    pub audit: Audit,
    /// LGL-INR only: the largest residual of its exact condition with `ε` kept.
    pub residual_with_eps: Option<f64>,
}

/// E0's result: `e0/result.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConvexResult {
    /// Whether the unpenalised probe fit classified every training image correctly (the
    /// data are linearly separable, so the fits use the weights-only penalty).
    pub separable: bool,
    /// Training accuracy of that probe.
    pub probe_accuracy: f64,
    /// Training images used (the first ones of MNIST's training set).
    pub images: usize,
    /// Their class counts.
    pub counts: Vec<usize>,
    /// One fit per loss.
    pub fits: Vec<ConvexFit>,
    /// Commit of the code.
    pub git_revision: Option<String>,
    /// Worker threads.
    #[serde(default)]
    pub threads: usize,
    /// Command, CPU and wall time (`jobs` is 1: E0 runs alone).
    #[serde(default)]
    pub provenance: super::Provenance,
}

fn options(name: &str, edit: impl FnOnce(&mut LossOptions)) -> LossOptions {
    let mut o = LossOptions::new(name.parse::<LossKind>().expect("registered loss"));
    edit(&mut o);
    o
}

/// The losses of E0 (LGL-INR is fitted with detached weights).
pub fn convex_losses() -> Vec<(&'static str, LossOptions)> {
    vec![
        ("SML", options("sml", |_| {})),
        (
            "SML inv.",
            options("sml", |o| o.class_weights = Some(ClassWeighting::Inverse)),
        ),
        ("LGL", options("lgl", |_| {})),
        (
            "LGL inv. (sample)",
            options("lgl", |o| {
                o.class_weights = Some(ClassWeighting::Inverse);
                o.weight_form = Some(WeightForm::Sample);
            }),
        ),
        (
            "LGL inv. (pos-neg)",
            options("lgl", |o| {
                o.class_weights = Some(ClassWeighting::Inverse);
                o.weight_form = Some(WeightForm::PosNeg);
            }),
        ),
        (
            "LGL-INR β=1 (detached)",
            options("lgl-inr", |o| {
                o.beta = Some(1.0);
                o.detach_weight = true;
            }),
        ),
    ]
}

/// Normalised pixels of `split.train`'s first `images` images as `[N, 784]` in f64.
fn pixels(split: &Split, images: usize) -> Result<(Tensor<f64>, Vec<usize>), TrainError> {
    let data = split
        .train
        .subset(&(0..images.min(split.train.len())).collect::<Vec<_>>());
    let norm = Normalization::of(&data);
    let mut rows = Vec::new();
    no_grad(|| -> Result<(), TrainError> {
        for (x, _) in Batches::new(&data, 1000, None, 0, &norm, Augment::default()) {
            rows.extend(x.cast::<f64>().flatten(1)?.to_vec());
        }
        Ok(())
    })?;
    let width = data.image_size();
    Ok((Tensor::from_vec(rows, &[data.len(), width])?, data.labels))
}

/// Runs E0 on MNIST (`split`): every loss of [`convex_losses`], no penalty.
pub fn run_convex(config: &ReproduceConfig, split: &Split) -> Result<ConvexResult, TrainError> {
    let started = Instant::now();
    let images = if config.quick { 1000 } else { 10_000 };
    let (features, labels) = pixels(split, images)?;
    let k = split.train.classes;
    let mut counts = vec![0; k];
    labels.iter().for_each(|&l| counts[l] += 1);
    let layer = LastLayer {
        features: &features,
        labels: &labels,
        outputs: k,
    };
    // Separable data have no finite unpenalised minimiser (the gradient vanishes only as
    // the weights grow without bound, and both sides of every condition drift to 0). A
    // probe: unpenalised SML from zero; 100% training accuracy proves separability.
    let probe = RefitLoss::new(&convex_losses()[0].1, &counts)?;
    let (theta, _, _, _) = layer.refit(&probe, vec![0.0; k * (features.shape()[1] + 1)], 0.0)?;
    let probe_accuracy = accuracy(&layer.logits(&theta)?.to_vec(), k, &labels);
    let separable = probe_accuracy == 1.0;
    let penalty = if separable { REFIT_PENALTY } else { 0.0 };
    let mut fits = Vec::new();
    for (label, options) in convex_losses() {
        let loss = RefitLoss::new(&options, &counts)?;
        let Some(spec) = loss.audit_spec() else {
            continue;
        };
        let started = Instant::now();
        let theta = vec![0.0; k * (features.shape()[1] + 1)];
        let (theta, gradient_norm, iterations, rounds) = layer.refit(&loss, theta, penalty)?;
        let z = layer.logits(&theta)?;
        fits.push(ConvexFit {
            label: label.to_string(),
            loss: options,
            penalty,
            gradient_norm,
            converged: gradient_norm < REFIT_TOLERANCE,
            iterations,
            rounds,
            train_accuracy: accuracy(&z.to_vec(), k, &labels),
            seconds: started.elapsed().as_secs_f64(),
            audit: audit_logits(&loss, &spec, &z, &labels)?,
            residual_with_eps: loss.exact_residual(&z, &labels)?,
        });
    }
    Ok(ConvexResult {
        separable,
        probe_accuracy,
        images: labels.len(),
        counts,
        fits,
        git_revision: crate::train::run_dir::git_revision(),
        threads: rayon::current_num_threads(),
        provenance: super::Provenance {
            command: config.command.clone(),
            jobs: 1,
            cpu_model: super::cpu_model(),
            wall_seconds: started.elapsed().as_secs_f64(),
            resumed: false,
        },
    })
}
