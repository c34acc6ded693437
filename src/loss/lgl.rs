//! LGL: one-vs-all logistic loss (docs/LOSSES.md §2), written with softplus so it is stable:
//! `−log σ(z) = softplus(−z)`, `−log(1 − σ(z)) = softplus(z)`.

use super::registry::{BuildResult, LossEntry, LossOptions, LossParam, WeightForm};
use super::weights::ClassWeighting;
use super::{
    apply_reduction, check_inputs, check_weights, targets, AuditSpec, Family, Loss, Reduction,
};
use crate::error::{Result, TensorError};
use crate::tensor::{Element, Tensor};

/// LGL in the loss registry.
pub(crate) static ENTRY: LossEntry = LossEntry {
    name: "lgl",
    summary: "one-vs-all logistic loss, with per-sample or per-problem class weights",
    params: &[
        LossParam::ClassWeights,
        LossParam::WeightForm,
        LossParam::Reduction,
    ],
    build: build_lgl,
};

fn build_lgl(o: &LossOptions, counts: &[usize]) -> BuildResult {
    let weights = match (o.weight_form.unwrap_or(WeightForm::Sample), o.weighting()) {
        (_, ClassWeighting::None) => LglWeights::None,
        (WeightForm::Sample, w) => LglWeights::PerSample(w.weights(counts).unwrap_or_default()),
        (WeightForm::PosNeg, w) => {
            // Every class's weights are kept: a model with two logits uses both problems,
            // one with a single logit (`one_logit_for_two_classes`) class 1's.
            let (pos, neg) = w.pos_neg_weights(counts).unwrap_or_default();
            LglWeights::PosNeg { pos, neg }
        }
    };
    Ok(Box::new(Lgl {
        weights,
        reduction: o.reduction_or_mean(),
    }))
}

/// The two class-weighted forms of LGL (and none).
#[derive(Clone, Debug, PartialEq)]
pub enum LglWeights {
    /// Unweighted.
    None,
    /// Every term of sample `i` is multiplied by `w[y_i]` (binary: `[w_0, w_1]`).
    PerSample(Vec<f64>),
    /// Problem `k`: positives (class `k`) weighted `pos[k]`, negatives `neg[k]`. On a
    /// single logit (the binary problem, class 1 against class 0) the weights are class
    /// 1's: `pos[1]`, `neg[1]` of two classes' weights, or the one entry given.
    PosNeg {
        /// `w⁺_k`.
        pos: Vec<f64>,
        /// `w⁻_k`.
        neg: Vec<f64>,
    },
}

/// `L = Σ_i Σ_k [a_ik·softplus(−z_ik) + b_ik·softplus(z_ik)] / R`, where `(a, b)` are the
/// positive/negative coefficients of the chosen weighting and `R` is `Σ_i w[y_i]` for
/// `Mean` with per-sample weights, the batch size otherwise.
/// Unweighted: `∂L/∂z_ik = (p_ik − Y_ik)/R`.
#[derive(Clone, Debug, PartialEq)]
pub struct Lgl {
    /// Weighting form.
    pub weights: LglWeights,
    /// Mean or sum.
    pub reduction: Reduction,
}

impl Default for Lgl {
    fn default() -> Self {
        Lgl {
            weights: LglWeights::None,
            reduction: Reduction::Mean,
        }
    }
}

/// Positive and negative coefficients `(a, b)` of every logit, and the total sample weight.
pub(crate) fn one_vs_all_coefficients(
    op: &'static str,
    weights: &LglWeights,
    labels: &[usize],
    k: usize,
) -> Result<(Vec<f64>, Vec<f64>, f64)> {
    let y = targets(labels, k);
    let mut a = y.clone();
    let mut b: Vec<f64> = y.iter().map(|v| 1.0 - v).collect();
    let mut weight_sum = labels.len() as f64;
    match weights {
        LglWeights::None => {}
        LglWeights::PerSample(w) => {
            check_weights(op, w, k.max(2))?;
            weight_sum = 0.0;
            for (i, &l) in labels.iter().enumerate() {
                for c in 0..k {
                    a[i * k + c] *= w[l];
                    b[i * k + c] *= w[l];
                }
                weight_sum += w[l];
            }
        }
        LglWeights::PosNeg { pos, neg } => {
            let (pos, neg) = if k == 1 {
                binary_problem_weights(op, pos, neg)?
            } else {
                check_weights(op, pos, k)?;
                check_weights(op, neg, k)?;
                (&pos[..], &neg[..])
            };
            for e in 0..a.len() {
                a[e] *= pos[e % k];
                b[e] *= neg[e % k];
            }
        }
    }
    Ok((a, b, weight_sum))
}

/// The weights of the one problem a single logit solves (class 1 against class 0): class
/// 1's entry of two classes' weights, or a single entry.
pub(crate) fn binary_problem_weights<'a>(
    op: &'static str,
    pos: &'a [f64],
    neg: &'a [f64],
) -> Result<(&'a [f64], &'a [f64])> {
    match (pos.len(), neg.len()) {
        (1, 1) => Ok((pos, neg)),
        (2, 2) => Ok((&pos[1..], &neg[1..])),
        _ => Err(TensorError::InvalidArgument {
            op,
            reason: format!(
                "{} positive and {} negative weights for the binary problem on one logit \
                 (give one or two of each)",
                pos.len(),
                neg.len()
            ),
        }),
    }
}

/// A one-vs-all loss's view of a batch whose terms depend on the margin only.
pub(crate) struct Margins<T: Element> {
    /// `s = (2Y − 1)·z`: positive for the target class.
    pub s: Tensor<T>,
    /// Weight of every positive logit (0 on negatives).
    pub pos: Vec<f64>,
    /// Weight of every negative logit (0 on positives).
    pub neg: Vec<f64>,
    /// Total sample weight (the mean's divisor).
    pub weight_sum: f64,
}

impl<T: Element> Margins<T> {
    /// Checks the inputs and computes margins and per-sample-weighted coefficients.
    pub fn of(
        op: &'static str,
        logits: &Tensor<T>,
        labels: &[usize],
        weights: Option<&[f64]>,
    ) -> Result<Self> {
        let (z, k) = check_inputs(op, logits, labels, Family::Sigmoid)?;
        let form = weights.map_or(LglWeights::None, |w| LglWeights::PerSample(w.to_vec()));
        let (pos, neg, weight_sum) = one_vs_all_coefficients(op, &form, labels, k)?;
        let sign: Vec<f64> = targets(labels, k).iter().map(|y| 2.0 * y - 1.0).collect();
        let s = z.mul(&Tensor::from_f64s(&sign, &[labels.len(), k])?)?;
        Ok(Margins {
            s,
            pos,
            neg,
            weight_sum,
        })
    }

    /// `Σ (pos + neg) ⊙ term`: the weighted sum of per-logit terms.
    pub fn weighted_sum(&self, term: &Tensor<T>) -> Result<Tensor<T>> {
        let coef: Vec<f64> = self.pos.iter().zip(&self.neg).map(|(a, b)| a + b).collect();
        Ok(term
            .mul(&Tensor::from_f64s(&coef, self.s.shape())?)?
            .sum_all())
    }
}

impl<T: Element> Loss<T> for Lgl {
    fn splits_exactly(&self) -> bool {
        self.reduction == Reduction::Mean && !matches!(self.weights, LglWeights::PerSample(_))
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

    fn audit_spec(&self) -> Option<AuditSpec> {
        Some(match &self.weights {
            LglWeights::None => AuditSpec::Lgl { weights: None },
            LglWeights::PerSample(w) => AuditSpec::Lgl {
                weights: Some(w.clone()),
            },
            LglWeights::PosNeg { pos, neg } => AuditSpec::LglPosNeg {
                pos: pos.clone(),
                neg: neg.clone(),
            },
        })
    }

    fn forward(&self, logits: &Tensor<T>, labels: &[usize]) -> Result<Tensor<T>> {
        let (z, k) = check_inputs("lgl", logits, labels, Family::Sigmoid)?;
        let (a, b, weight_sum) = one_vs_all_coefficients("lgl", &self.weights, labels, k)?;
        let shape = [labels.len(), k];
        let pos = z.neg().softplus().mul(&Tensor::from_f64s(&a, &shape)?)?;
        let neg = z.softplus().mul(&Tensor::from_f64s(&b, &shape)?)?;
        Ok(apply_reduction(
            pos.add(&neg)?.sum_all(),
            self.reduction,
            weight_sum,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::test_util::*;
    use crate::testing::*;

    #[test]
    fn analytic_gradients_of_all_forms() {
        let labels = [0, 2, 1, 2, 2];
        let z = rand_input(&[5, 3], 3);
        let p = z.sigmoid().to_vec();
        let y = targets(&labels, 3);
        let ws = [0.5, 2.0, 1.5];
        let (pos, neg) = (vec![3.0, 0.5, 1.0], vec![0.2, 1.0, 2.0]);
        for reduction in [Reduction::Mean, Reduction::Sum] {
            // Unweighted: (p − Y)/R.
            let g = grad_of(
                &Lgl {
                    weights: LglWeights::None,
                    reduction,
                },
                &z,
                &labels,
            );
            let r = if reduction == Reduction::Mean {
                5.0
            } else {
                1.0
            };
            let want: Vec<f64> = (0..15).map(|e| (p[e] - y[e]) / r).collect();
            assert_close(&g, &want, 1e-13);
            // Per-sample: w_{y_i}(p − Y)/R with R = Σ w_{y_i}.
            let g = grad_of(
                &Lgl {
                    weights: LglWeights::PerSample(ws.to_vec()),
                    reduction,
                },
                &z,
                &labels,
            );
            let r = if reduction == Reduction::Mean {
                labels.iter().map(|&l| ws[l]).sum()
            } else {
                1.0
            };
            let want: Vec<f64> = (0..15)
                .map(|e| ws[labels[e / 3]] * (p[e] - y[e]) / r)
                .collect();
            assert_close(&g, &want, 1e-13);
            // Per-problem: −w⁺_k(1 − p) on positives, w⁻_k p on negatives.
            let form = LglWeights::PosNeg {
                pos: pos.clone(),
                neg: neg.clone(),
            };
            let g = grad_of(
                &Lgl {
                    weights: form,
                    reduction,
                },
                &z,
                &labels,
            );
            let r = if reduction == Reduction::Mean {
                5.0
            } else {
                1.0
            };
            let want: Vec<f64> = (0..15)
                .map(|e| {
                    let k = e % 3;
                    if y[e] == 1.0 {
                        -pos[k] * (1.0 - p[e]) / r
                    } else {
                        neg[k] * p[e] / r
                    }
                })
                .collect();
            assert_close(&g, &want, 1e-13);
        }
    }

    #[test]
    fn binary_case_and_coinciding_forms() {
        let z = rand_input(&[6], 4);
        let labels = [1, 0, 0, 1, 0, 0];
        let per_sample = Lgl {
            weights: LglWeights::PerSample(vec![0.3, 2.0]),
            reduction: Reduction::Sum,
        };
        let pos_neg = Lgl {
            weights: LglWeights::PosNeg {
                pos: vec![2.0],
                neg: vec![0.3],
            },
            reduction: Reduction::Sum,
        };
        let a = Loss::<f64>::forward(&per_sample, &z, &labels)
            .unwrap()
            .item();
        let b = Loss::<f64>::forward(&pos_neg, &z, &labels).unwrap().item();
        assert!((a - b).abs() < 1e-14);
        let z2 = z.reshape(&[6, 1]).unwrap();
        let c = Loss::<f64>::forward(&per_sample, &z2, &labels)
            .unwrap()
            .item();
        assert!((a - c).abs() < 1e-14);
        assert!(Loss::<f64>::forward(&per_sample, &z, &[2, 0, 0, 1, 0, 0]).is_err());
        check_loss(&per_sample, &[6], &labels);
        check_loss(&Lgl::default(), &[6, 1], &labels);
    }

    #[test]
    fn pos_neg_weights_of_two_classes_serve_one_logit_and_two() {
        // The registry's weights for two classes, on a one-logit model (the binary problem,
        // class 1's weights) and on a two-logit model (two one-vs-all problems).
        let counts = [40, 10];
        let o = LossOptions {
            class_weights: Some(ClassWeighting::Inverse),
            weight_form: Some(WeightForm::PosNeg),
            ..LossOptions::new("lgl".parse().unwrap())
        };
        let loss: Box<dyn Loss<f64>> = crate::loss::build_loss(&o, &counts).unwrap();
        let (pos, neg) = ClassWeighting::Inverse.pos_neg_weights(&counts).unwrap();
        let labels = [1, 0, 0, 1, 0];
        let z2 = rand_input(&[5, 2], 7);
        let two = loss.forward(&z2, &labels).unwrap().item();
        let zs = z2.to_vec();
        let softplus = |x: f64| x.exp().ln_1p();
        let want: f64 = (0..10)
            .map(|e| {
                let (i, k) = (e / 2, e % 2);
                if labels[i] == k {
                    pos[k] * softplus(-zs[e])
                } else {
                    neg[k] * softplus(zs[e])
                }
            })
            .sum::<f64>()
            / 5.0;
        assert!((two - want).abs() < 1e-13, "{two} vs {want}");
        check_loss(loss.as_ref(), &[5, 2], &labels);
        let z1 = rand_input(&[5, 1], 8);
        let one = loss.forward(&z1, &labels).unwrap().item();
        let zs = z1.to_vec();
        let want: f64 = (0..5)
            .map(|i| {
                if labels[i] == 1 {
                    pos[1] * softplus(-zs[i])
                } else {
                    neg[1] * softplus(zs[i])
                }
            })
            .sum::<f64>()
            / 5.0;
        assert!((one - want).abs() < 1e-13, "{one} vs {want}");
        check_loss(loss.as_ref(), &[5, 1], &labels);
        // Three weights cannot describe one problem.
        let three = Lgl {
            weights: LglWeights::PosNeg {
                pos: vec![1.0; 3],
                neg: vec![1.0; 3],
            },
            reduction: Reduction::Mean,
        };
        let e = Loss::<f64>::forward(&three, &z1, &labels).unwrap_err();
        assert!(e.to_string().contains("binary problem"), "{e}");
    }

    #[test]
    fn gradcheck_every_option() {
        let labels = [1, 0, 3, 3];
        for reduction in [Reduction::Mean, Reduction::Sum] {
            for weights in [
                LglWeights::None,
                LglWeights::PerSample(vec![0.2, 1.0, 3.0, 0.7]),
                LglWeights::PosNeg {
                    pos: vec![1.0, 2.0, 3.0, 4.0],
                    neg: vec![0.5, 0.25, 1.0, 2.0],
                },
            ] {
                check_loss(&Lgl { weights, reduction }, &[4, 4], &labels);
            }
        }
        check_loss(&Lgl::default(), &[1, 3], &[0]);
    }

    #[test]
    fn stable_and_equal_weights_equal_unweighted() {
        assert_stable(&Lgl::default(), 3);
        assert_stable(&Lgl::default(), 1);
        let z = rand_input(&[4, 3], 5);
        let plain = Loss::<f64>::forward(&Lgl::default(), &z, &[0, 1, 2, 1])
            .unwrap()
            .item();
        let same = Lgl {
            weights: LglWeights::PerSample(vec![3.0; 3]),
            ..Default::default()
        };
        let w = Loss::<f64>::forward(&same, &z, &[0, 1, 2, 1])
            .unwrap()
            .item();
        assert!((plain - w).abs() < 1e-14);
    }
}
