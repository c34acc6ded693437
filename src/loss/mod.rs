//! The losses of the paper (`docs/LOSSES.md`) and more, built from differentiable tensor
//! ops so that autodiff supplies every gradient; plus class-weight builders, the loss
//! registry (options to a loss object), and the stationarity audit.
//!
//! A loss is a plain struct implementing [`Loss`]; its file also declares its
//! [`LossEntry`] for the registry. Adding a loss is its own file plus a `mod` line and a
//! [`LOSSES`] line here.
//!
//! ```
//! use tensorgrad::loss::{LglInr, Loss};
//! use tensorgrad::Tensor;
//!
//! let logits = Tensor::<f64>::from_vec(vec![2.0, -1.0, 0.5, 0.0, 1.0, -2.0], &[2, 3])?.with_grad();
//! let loss = LglInr::default().forward(&logits, &[0, 1])?;
//! let grads = loss.backward()?;
//! assert_eq!(grads.get(&logits).unwrap().shape(), &[2, 3]);
//! # Ok::<(), tensorgrad::TensorError>(())
//! ```

mod alpha;
pub mod audit;
mod focal;
mod lgl;
mod lgl_inr;
pub mod registry;
mod sml;
pub mod weights;

pub use alpha::AlphaLoss;
pub use audit::{audit, Audit, AuditRow, AuditSpec};
pub use focal::{Focal, FocalSigmoid};
pub use lgl::{Lgl, LglWeights};
pub use lgl_inr::LglInr;
pub use registry::{
    build_loss, AnyLoss, LossEntry, LossKind, LossOptionError, LossOptions, LossParam, WeightForm,
};
pub use sml::Sml;

use crate::error::{Result, TensorError};
use crate::tensor::{Element, Tensor};
use crate::text::keyword_enum;

/// Every loss, in the order help texts list them.
pub static LOSSES: [&LossEntry; 6] = [
    &sml::ENTRY,
    &lgl::ENTRY,
    &lgl_inr::ENTRY,
    &focal::FOCAL_ENTRY,
    &focal::FOCAL_SIGMOID_ENTRY,
    &alpha::ENTRY,
];

keyword_enum! {
    /// How per-sample losses are combined.
    pub enum Reduction {
        /// Divide the sum by the total sample weight (the batch size when unweighted), as
        /// PyTorch's `CrossEntropyLoss(weight=…)`.
        Mean = "mean",
        /// The plain sum.
        Sum = "sum",
    }
}

/// Which probabilities a loss models: what `p̄` and the audit are computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Family {
    /// Softmax over the classes (SML and its variants).
    Softmax,
    /// Independent sigmoids, one-vs-all (LGL and its variants).
    Sigmoid,
}

/// A classification loss on logits and integer labels.
pub trait Loss<T: Element>: Send + Sync {
    /// Name as the CLI spells it.
    fn name(&self) -> &'static str;
    /// The scalar loss of a batch: logits `[B, K]` (or `[B]`/`[B, 1]` for a binary
    /// sigmoid loss) and labels in `0..K` (`0..2` for binary).
    fn forward(&self, logits: &Tensor<T>, labels: &[usize]) -> Result<Tensor<T>>;
    /// Softmax or sigmoid family.
    fn family(&self) -> Family;
    /// Whether a two-class problem is modelled with a single logit (one sigmoid) rather
    /// than one logit per class; the model is then built with one output.
    fn one_logit_for_two_classes(&self) -> bool {
        false
    }
    /// Whether the loss of a batch is the size-weighted mean of the losses of any split of
    /// it into shards: true for an unweighted mean of per-sample terms. A data-parallel run
    /// computes the loss per shard, so for a loss where this is false (LGL-INR, and means
    /// over the shard's own sum of class weights) the objective depends on the number of
    /// ranks, and a resume on another count is refused unless asked for.
    fn splits_exactly(&self) -> bool {
        false
    }
    /// The stationarity condition that applies to this loss, if the paper gives one.
    fn audit_spec(&self) -> Option<AuditSpec> {
        None
    }
    /// How strongly the loss focuses its negative weights on one class in this batch, for
    /// losses that weight the non-target classes (LGL-INR: `(K − 1) · max_j ω_jk` averaged
    /// over the outputs `k`, 1 for uniform weights, `K − 1` for all weight on one class);
    /// `None` for the others. Training records its mean over each epoch's batches.
    fn focus(&self, _logits: &Tensor<T>, _labels: &[usize]) -> Result<Option<f64>> {
        Ok(None)
    }
    /// The modelled probabilities of each class (softmax or sigmoid of the logits).
    fn probabilities(&self, logits: &Tensor<T>) -> Result<Tensor<T>> {
        match self.family() {
            Family::Softmax => logits.softmax(-1),
            Family::Sigmoid => Ok(logits.sigmoid()),
        }
    }
}

/// Logits as `[B, K]` and `K`, after checking them against the labels. Sigmoid losses
/// accept `[B]` or `[B, 1]` (binary, labels 0/1); softmax losses need `K ≥ 2`.
pub(crate) fn check_inputs<T: Element>(
    op: &'static str,
    logits: &Tensor<T>,
    labels: &[usize],
    family: Family,
) -> Result<(Tensor<T>, usize)> {
    let z = match logits.ndim() {
        1 if family == Family::Sigmoid => logits.unsqueeze(1)?,
        2 => logits.clone(),
        _ => {
            return Err(TensorError::InvalidShape {
                op,
                shape: logits.shape().to_vec(),
                reason: "logits must be [batch, classes] (or [batch] for a binary sigmoid loss)"
                    .into(),
            })
        }
    };
    let (b, k) = (z.shape()[0], z.shape()[1]);
    if labels.len() != b {
        return Err(TensorError::LengthMismatch {
            op,
            shape: z.shape().to_vec(),
            expected: b,
            got: labels.len(),
        });
    }
    if b == 0 {
        return Err(TensorError::InvalidShape {
            op,
            shape: z.shape().to_vec(),
            reason: "empty batch".into(),
        });
    }
    if family == Family::Softmax && k < 2 {
        return Err(TensorError::InvalidShape {
            op,
            shape: z.shape().to_vec(),
            reason: "a softmax loss needs at least 2 classes".into(),
        });
    }
    // A single sigmoid output is the binary problem: labels are 0 or 1.
    let classes = if k == 1 { 2 } else { k };
    if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
        return Err(TensorError::IndexOutOfRange {
            op,
            index: bad,
            size: classes,
        });
    }
    Ok((z, k))
}

/// Checks that a weight vector has one entry per class.
pub(crate) fn check_weights(op: &'static str, weights: &[f64], classes: usize) -> Result<()> {
    if weights.len() != classes {
        return Err(TensorError::InvalidArgument {
            op,
            reason: format!("{} class weights for {classes} classes", weights.len()),
        });
    }
    Ok(())
}

/// `{0,1}` targets `Y[B, K]` (for `K = 1`, the label itself) as f64, row-major.
pub(crate) fn targets(labels: &[usize], k: usize) -> Vec<f64> {
    let mut y = vec![0.0; labels.len() * k];
    for (i, &l) in labels.iter().enumerate() {
        if k == 1 {
            y[i] = l as f64;
        } else {
            y[i * k + l] = 1.0;
        }
    }
    y
}

/// Applies the reduction to a per-batch sum, given the total sample weight.
pub(crate) fn apply_reduction<T: Element>(
    total: Tensor<T>,
    reduction: Reduction,
    weight_sum: f64,
) -> Tensor<T> {
    match reduction {
        Reduction::Sum => total,
        Reduction::Mean => total.mul_scalar(1.0 / weight_sum),
    }
}

#[cfg(test)]
pub(crate) mod test_util;
