//! α-loss (Sypherd et al.), margin form, used one-vs-all like LGL:
//! `ℓ_α(s) = α/(α−1)·(1 − σ(s)^{1−1/α})` on the margin `s = ±z`.

use super::lgl::Margins;
use super::registry::{BuildResult, LossEntry, LossOptionError, LossOptions, LossParam};
use super::{apply_reduction, Family, Loss, Reduction};
use crate::error::{Result, TensorError};
use crate::tensor::{Element, Tensor};

/// The α-loss in the loss registry.
pub(crate) static ENTRY: LossEntry = LossEntry {
    name: "alpha-loss",
    summary: "one-vs-all α-loss (α = 1: logistic, α = ∞: 0-1 limit), with class weights",
    params: &[
        LossParam::ClassWeights,
        LossParam::Alpha,
        LossParam::Reduction,
    ],
    build: build_alpha_loss,
};

fn build_alpha_loss(o: &LossOptions, counts: &[usize]) -> BuildResult {
    let Some(alpha) = o.alpha else {
        return Err(LossOptionError::new(
            LossParam::Alpha,
            "alpha-loss needs a value (in (0, inf]; 1 is the logistic loss)",
        ));
    };
    // ∞ is allowed (the 0-1 limit); NaN and non-positive values are not.
    if alpha.is_nan() || alpha <= 0.0 {
        return Err(LossOptionError::new(
            LossParam::Alpha,
            format!("{alpha} is not in (0, inf]"),
        ));
    }
    Ok(Box::new(AlphaLoss {
        alpha,
        weights: o.weights(counts),
        reduction: o.reduction_or_mean(),
    }))
}

/// α-loss for `α ∈ (0, ∞]`. With `c = 1 − 1/α`, `ℓ = −expm1(−c·softplus(−s))/c`: exactly
/// the logistic loss `softplus(−s)` at `α = 1` (`c = 0`), accurate near it, and `1 − σ(s)`
/// at `α = ∞`.
#[derive(Clone, Debug, PartialEq)]
pub struct AlphaLoss {
    /// `α > 0`; `f64::INFINITY` allowed.
    pub alpha: f64,
    /// Per-sample class weights `w[y_i]`, if any.
    pub weights: Option<Vec<f64>>,
    /// Mean or sum.
    pub reduction: Reduction,
}

impl Default for AlphaLoss {
    fn default() -> Self {
        AlphaLoss {
            alpha: 1.0,
            weights: None,
            reduction: Reduction::Mean,
        }
    }
}

impl<T: Element> Loss<T> for AlphaLoss {
    fn splits_exactly(&self) -> bool {
        self.weights.is_none() && self.reduction == Reduction::Mean
    }
    fn name(&self) -> &'static str {
        ENTRY.name
    }

    fn one_logit_for_two_classes(&self) -> bool {
        true
    }

    fn family(&self) -> Family {
        Family::Sigmoid
    }

    fn forward(&self, logits: &Tensor<T>, labels: &[usize]) -> Result<Tensor<T>> {
        if self.alpha.is_nan() || self.alpha <= 0.0 {
            return Err(TensorError::InvalidArgument {
                op: "alpha-loss",
                reason: format!("alpha must be in (0, inf], got {}", self.alpha),
            });
        }
        let m = Margins::of("alpha-loss", logits, labels, self.weights.as_deref())?;
        let sp = m.s.neg().softplus();
        let c = 1.0 - 1.0 / self.alpha; // 1 at α = ∞
        let term = if c == 0.0 {
            sp
        } else {
            sp.mul_scalar(-c).expm1().mul_scalar(-1.0 / c)
        };
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
    use crate::loss::Lgl;
    use crate::testing::*;

    #[test]
    fn limits_alpha_one_and_infinity() {
        let z = rand_input(&[4, 3], 31);
        let labels = [0, 2, 1, 2];
        let lgl = Loss::<f64>::forward(&Lgl::default(), &z, &labels)
            .unwrap()
            .item();
        let one = Loss::<f64>::forward(&AlphaLoss::default(), &z, &labels)
            .unwrap()
            .item();
        assert_eq!(one, lgl);
        let near = AlphaLoss {
            alpha: 1.0 + 1e-9,
            ..Default::default()
        };
        let near = Loss::<f64>::forward(&near, &z, &labels).unwrap().item();
        assert!((near - lgl).abs() < 1e-8 * lgl, "{near} vs {lgl}");
        let inf = AlphaLoss {
            alpha: f64::INFINITY,
            reduction: Reduction::Sum,
            ..Default::default()
        };
        let got = Loss::<f64>::forward(&inf, &z, &labels).unwrap().item();
        let p = z.sigmoid().to_vec();
        let want: f64 = (0..12)
            .map(|e| {
                if labels[e / 3] == e % 3 {
                    1.0 - p[e]
                } else {
                    p[e]
                }
            })
            .sum();
        assert!((got - want).abs() < 1e-13);
        // The definition at a generic α.
        let a = 2.0;
        let two = AlphaLoss {
            alpha: a,
            reduction: Reduction::Sum,
            ..Default::default()
        };
        let got = Loss::<f64>::forward(&two, &z, &labels).unwrap().item();
        let want: f64 = (0..12)
            .map(|e| {
                let st = if labels[e / 3] == e % 3 {
                    p[e]
                } else {
                    1.0 - p[e]
                };
                a / (a - 1.0) * (1.0 - st.powf(1.0 - 1.0 / a))
            })
            .sum();
        assert!((got - want).abs() < 1e-13);
        assert!(Loss::<f64>::forward(
            &AlphaLoss {
                alpha: 0.0,
                ..Default::default()
            },
            &z,
            &labels
        )
        .is_err());
    }

    #[test]
    fn gradcheck_every_option() {
        let labels = [1, 0, 3, 3];
        for alpha in [0.5, 1.0, 1.5, 4.0, f64::INFINITY] {
            for weights in [None, Some(vec![0.2, 1.0, 3.0, 0.7])] {
                for reduction in [Reduction::Mean, Reduction::Sum] {
                    check_loss(
                        &AlphaLoss {
                            alpha,
                            weights: weights.clone(),
                            reduction,
                        },
                        &[4, 4],
                        &labels,
                    );
                }
            }
        }
        check_loss(
            &AlphaLoss {
                alpha: 3.0,
                ..Default::default()
            },
            &[4],
            &[1, 0, 0, 1],
        );
    }

    #[test]
    fn stable_for_huge_logits() {
        for alpha in [1.0, 3.0, f64::INFINITY] {
            assert_stable(
                &AlphaLoss {
                    alpha,
                    ..Default::default()
                },
                3,
            );
        }
    }
}
