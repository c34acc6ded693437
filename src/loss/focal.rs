//! Focal loss (Lin et al. 2017), softmax and sigmoid (one-vs-all) forms.

use super::lgl::Margins;
use super::registry::{finite_in, BuildResult, LossEntry, LossOptions, LossParam};
use super::{apply_reduction, check_inputs, check_weights, Family, Loss, Reduction};
use crate::error::Result;
use crate::tensor::{Element, Tensor};

/// The softmax focal loss in the loss registry.
pub(crate) static FOCAL_ENTRY: LossEntry = LossEntry {
    name: "focal",
    summary: "softmax focal loss (γ, scale α), with class weights",
    params: &[
        LossParam::ClassWeights,
        LossParam::Gamma,
        LossParam::Alpha,
        LossParam::Reduction,
    ],
    build: build_focal,
};

/// The sigmoid focal loss in the loss registry.
pub(crate) static FOCAL_SIGMOID_ENTRY: LossEntry = LossEntry {
    name: "focal-sigmoid",
    summary: "one-vs-all sigmoid focal loss (γ, balance α), with class weights",
    params: &[
        LossParam::ClassWeights,
        LossParam::Gamma,
        LossParam::Alpha,
        LossParam::Reduction,
    ],
    build: build_focal_sigmoid,
};

fn build_focal(o: &LossOptions, counts: &[usize]) -> BuildResult {
    let alpha = match o.alpha {
        Some(a) => finite_in(LossParam::Alpha, a, a > 0.0, "a finite number > 0")?,
        None => 1.0,
    };
    Ok(Box::new(Focal {
        gamma: o.gamma_or_default()?,
        alpha,
        weights: o.weights(counts),
        reduction: o.reduction_or_mean(),
    }))
}

fn build_focal_sigmoid(o: &LossOptions, counts: &[usize]) -> BuildResult {
    let alpha = match o.alpha {
        Some(a) => Some(finite_in(
            LossParam::Alpha,
            a,
            (0.0..=1.0).contains(&a),
            "in [0, 1]",
        )?),
        None => None,
    };
    Ok(Box::new(FocalSigmoid {
        gamma: o.gamma_or_default()?,
        alpha,
        weights: o.weights(counts),
        reduction: o.reduction_or_mean(),
    }))
}

/// Smallest value of `1 − q` raised to `γ`: keeps `γ·(1−q)^{γ−1}` finite at `q = 1`.
const FLOOR: f64 = 1e-30;

/// Softmax focal loss `−α·w_{y_i}·(1 − q_{i,y_i})^γ·log q_{i,y_i}`, reduced like SML
/// (`α` a scalar factor as in kornia's `focal_loss`; `w` optional class weights).
#[derive(Clone, Debug, PartialEq)]
pub struct Focal {
    /// Focusing parameter `γ ≥ 0` (0 gives cross-entropy).
    pub gamma: f64,
    /// Scalar factor `α` (default 1).
    pub alpha: f64,
    /// Class weights.
    pub weights: Option<Vec<f64>>,
    /// Mean (over the total sample weight) or sum.
    pub reduction: Reduction,
}

impl Default for Focal {
    fn default() -> Self {
        Focal {
            gamma: 2.0,
            alpha: 1.0,
            weights: None,
            reduction: Reduction::Mean,
        }
    }
}

/// `(1 − q)^γ` computed from `log q`, skipping the factor when `γ = 0`.
fn modulating<T: Element>(one_minus: Tensor<T>, gamma: f64) -> Option<Tensor<T>> {
    (gamma != 0.0).then(|| one_minus.clamp(FLOOR, f64::INFINITY).powf(gamma))
}

impl<T: Element> Loss<T> for Focal {
    fn splits_exactly(&self) -> bool {
        self.weights.is_none() && self.reduction == Reduction::Mean
    }
    fn name(&self) -> &'static str {
        FOCAL_ENTRY.name
    }

    fn family(&self) -> Family {
        Family::Softmax
    }

    fn forward(&self, logits: &Tensor<T>, labels: &[usize]) -> Result<Tensor<T>> {
        let (z, k) = check_inputs("focal", logits, labels, Family::Softmax)?;
        let b = labels.len();
        let w: Vec<f64> = match &self.weights {
            Some(w) => {
                check_weights("focal", w, k)?;
                labels.iter().map(|&l| w[l]).collect()
            }
            None => vec![1.0; b],
        };
        let log_q = z.log_softmax(1)?.gather(1, labels, &[b, 1])?;
        // 1 − q = −expm1(log q), accurate when q is close to 1.
        let mut per_sample = log_q.neg();
        if let Some(m) = modulating(log_q.expm1().neg(), self.gamma) {
            per_sample = per_sample.mul(&m)?;
        }
        let scale: Vec<f64> = w.iter().map(|v| v * self.alpha).collect();
        let total = per_sample
            .mul(&Tensor::from_f64s(&scale, &[b, 1])?)?
            .sum_all();
        Ok(apply_reduction(total, self.reduction, w.iter().sum()))
    }
}

/// Sigmoid focal loss, one-vs-all: for every logit with margin `s = ±z` (positive for
/// the target class), `α_t·σ(−s)^γ·softplus(−s)`, with `α_t = α` on positives and `1 − α`
/// on negatives when `α` is set (torchvision's convention). Reduced like LGL.
#[derive(Clone, Debug, PartialEq)]
pub struct FocalSigmoid {
    /// Focusing parameter `γ ≥ 0` (0 gives LGL).
    pub gamma: f64,
    /// Balance `α ∈ [0, 1]` between positives and negatives, if any.
    pub alpha: Option<f64>,
    /// Per-sample class weights `w[y_i]`, if any.
    pub weights: Option<Vec<f64>>,
    /// Mean or sum.
    pub reduction: Reduction,
}

impl Default for FocalSigmoid {
    fn default() -> Self {
        FocalSigmoid {
            gamma: 2.0,
            alpha: None,
            weights: None,
            reduction: Reduction::Mean,
        }
    }
}

impl<T: Element> Loss<T> for FocalSigmoid {
    fn splits_exactly(&self) -> bool {
        self.weights.is_none() && self.reduction == Reduction::Mean
    }
    fn name(&self) -> &'static str {
        FOCAL_SIGMOID_ENTRY.name
    }

    fn one_logit_for_two_classes(&self) -> bool {
        true
    }

    fn family(&self) -> Family {
        Family::Sigmoid
    }

    fn forward(&self, logits: &Tensor<T>, labels: &[usize]) -> Result<Tensor<T>> {
        let mut m = Margins::of("focal-sigmoid", logits, labels, self.weights.as_deref())?;
        if let Some(alpha) = self.alpha {
            m.pos.iter_mut().for_each(|v| *v *= alpha);
            m.neg.iter_mut().for_each(|v| *v *= 1.0 - alpha);
        }
        let mut term = m.s.neg().softplus();
        if let Some(factor) = modulating(m.s.neg().sigmoid(), self.gamma) {
            term = term.mul(&factor)?;
        }
        Ok(apply_reduction(
            m.weighted_sum(&term)?,
            self.reduction,
            m.weight_sum,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::test_util::*;
    use crate::loss::{Lgl, Sml};
    use crate::testing::*;

    #[test]
    fn gamma_zero_reduces_to_sml_and_lgl() {
        let z = rand_input(&[5, 3], 21);
        let labels = [0, 2, 1, 1, 2];
        let w = Some(vec![0.5, 1.0, 2.0]);
        let f = Focal {
            gamma: 0.0,
            weights: w.clone(),
            ..Default::default()
        };
        let s = Sml {
            weights: w.clone(),
            ..Default::default()
        };
        assert_close(&grad_of(&f, &z, &labels), &grad_of(&s, &z, &labels), 1e-13);
        let fs = FocalSigmoid {
            gamma: 0.0,
            ..Default::default()
        };
        assert_close(
            &grad_of(&fs, &z, &labels),
            &grad_of(&Lgl::default(), &z, &labels),
            1e-13,
        );
    }

    #[test]
    fn softmax_focal_analytic_gradient() {
        // d/dz_k of −(1−q_y)^γ log q_y = (1−q_y)^{γ−1}(γ q_y log q_y − (1−q_y))·(Y_k − q_k)... per sample.
        let z = rand_input(&[4, 3], 22);
        let labels = [2, 0, 1, 2];
        let gamma = 2.0;
        let g = grad_of(
            &Focal {
                gamma,
                reduction: Reduction::Sum,
                ..Default::default()
            },
            &z,
            &labels,
        );
        let q = z.softmax(1).unwrap().to_vec();
        for i in 0..4 {
            let qt = q[i * 3 + labels[i]];
            // dℓ/d log q_t, then d log q_t / dz_k = Y_k − q_k.
            let dl = gamma * (1.0 - qt).powf(gamma - 1.0) * qt * qt.ln() - (1.0 - qt).powf(gamma);
            for k in 0..3 {
                let y = if k == labels[i] { 1.0 } else { 0.0 };
                let want = dl * (y - q[i * 3 + k]);
                assert!(
                    (g[i * 3 + k] - want).abs() < 1e-12,
                    "{} vs {want}",
                    g[i * 3 + k]
                );
            }
        }
    }

    #[test]
    fn gradcheck_every_option() {
        let labels = [1, 0, 3, 3];
        for gamma in [0.0, 0.5, 2.0] {
            for weights in [None, Some(vec![0.2, 1.0, 3.0, 0.7])] {
                for reduction in [Reduction::Mean, Reduction::Sum] {
                    let f = Focal {
                        gamma,
                        alpha: 0.75,
                        weights: weights.clone(),
                        reduction,
                    };
                    check_loss(&f, &[4, 4], &labels);
                    for alpha in [None, Some(0.25)] {
                        let fs = FocalSigmoid {
                            gamma,
                            alpha,
                            weights: weights.clone(),
                            reduction,
                        };
                        check_loss(&fs, &[4, 4], &labels);
                    }
                }
            }
        }
        check_loss(&FocalSigmoid::default(), &[5], &[1, 0, 0, 1, 1]);
    }

    #[test]
    fn stable_for_huge_logits() {
        assert_stable(&Focal::default(), 3);
        assert_stable(
            &Focal {
                gamma: 0.5,
                ..Default::default()
            },
            3,
        );
        assert_stable(&FocalSigmoid::default(), 3);
        assert_stable(
            &FocalSigmoid {
                gamma: 0.5,
                alpha: Some(0.25),
                ..Default::default()
            },
            1,
        );
    }
}
