//! SML: softmax cross-entropy (docs/LOSSES.md §1), with class weights, label smoothing and
//! logit adjustment.

use super::registry::{finite_in, BuildResult, LossEntry, LossOptions, LossParam};
use super::{apply_reduction, check_inputs, check_weights, AuditSpec, Family, Loss, Reduction};
use crate::error::Result;
use crate::tensor::{Element, Tensor};

/// SML in the loss registry.
pub(crate) static ENTRY: LossEntry = LossEntry {
    name: "sml",
    summary: "softmax cross-entropy, with class weights, label smoothing, logit adjustment",
    params: &[
        LossParam::ClassWeights,
        LossParam::LabelSmoothing,
        LossParam::LogitAdjust,
        LossParam::Reduction,
    ],
    build: build_sml,
};

fn build_sml(o: &LossOptions, counts: &[usize]) -> BuildResult {
    let label_smoothing = match o.label_smoothing {
        Some(e) => finite_in(
            LossParam::LabelSmoothing,
            e,
            (0.0..1.0).contains(&e),
            "in [0, 1)",
        )?,
        None => 0.0,
    };
    let logit_offsets = match o.logit_adjust {
        Some(tau) => Some(Sml::logit_adjustment(
            finite_in(LossParam::LogitAdjust, tau, true, "finite")?,
            counts,
        )),
        None => None,
    };
    Ok(Box::new(Sml {
        weights: o.weights(counts),
        reduction: o.reduction_or_mean(),
        label_smoothing,
        logit_offsets,
    }))
}

/// `L = Σ_i Σ_k −T_ik log q_ik / R` with `q = softmax(z + τ log π)`,
/// `T_ik = (1−ε)·w_{y_i}·Y_ik + (ε/K)·w_k` (PyTorch's weighted label smoothing) and
/// `R = Σ_i w_{y_i}` for `Mean`. Without options: `∂L/∂z_ik = w_{y_i}(q_ik − Y_ik)/R`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sml {
    /// Class weights `w_k` (`None`: all 1).
    pub weights: Option<Vec<f64>>,
    /// Mean or sum.
    pub reduction: Reduction,
    /// Label smoothing `ε ∈ [0, 1)`.
    pub label_smoothing: f64,
    /// Logit adjustment offsets `τ log π_k` added to the logits (`None`: no adjustment).
    pub logit_offsets: Option<Vec<f64>>,
}

impl Default for Sml {
    fn default() -> Self {
        Sml {
            weights: None,
            reduction: Reduction::Mean,
            label_smoothing: 0.0,
            logit_offsets: None,
        }
    }
}

impl Sml {
    /// Offsets `τ log π_k` for logit adjustment from class counts (π = counts / total).
    pub fn logit_adjustment(tau: f64, class_counts: &[usize]) -> Vec<f64> {
        let total: usize = class_counts.iter().sum();
        class_counts
            .iter()
            .map(|&n| tau * (n.max(1) as f64 / total.max(1) as f64).ln())
            .collect()
    }
}

impl<T: Element> Loss<T> for Sml {
    fn splits_exactly(&self) -> bool {
        self.weights.is_none() && self.reduction == Reduction::Mean
    }
    fn name(&self) -> &'static str {
        ENTRY.name
    }

    fn family(&self) -> Family {
        Family::Softmax
    }

    fn audit_spec(&self) -> Option<AuditSpec> {
        // The condition is that of the plain weighted loss.
        (self.label_smoothing == 0.0 && self.logit_offsets.is_none()).then(|| AuditSpec::Sml {
            weights: self.weights.clone(),
        })
    }

    fn forward(&self, logits: &Tensor<T>, labels: &[usize]) -> Result<Tensor<T>> {
        let (z, k) = check_inputs("sml", logits, labels, Family::Softmax)?;
        let ones = vec![1.0; k];
        let w = self.weights.as_deref().unwrap_or(&ones);
        check_weights("sml", w, k)?;
        let z = match &self.logit_offsets {
            Some(off) => {
                check_weights("sml logit adjustment", off, k)?;
                z.add(&Tensor::from_f64s(off, &[k])?)?
            }
            None => z,
        };
        let eps = self.label_smoothing;
        let mut t = vec![0.0; labels.len() * k];
        for (row, &y) in t.chunks_mut(k).zip(labels) {
            for (c, v) in row.iter_mut().enumerate() {
                *v = eps / k as f64 * w[c];
            }
            row[y] += (1.0 - eps) * w[y];
        }
        let weight_sum: f64 = labels.iter().map(|&y| w[y]).sum();
        let t = Tensor::from_f64s(&t, &[labels.len(), k])?;
        let total = z.log_softmax(1)?.mul(&t)?.sum_all().neg();
        Ok(apply_reduction(total, self.reduction, weight_sum))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::test_util::*;
    use crate::testing::*;

    #[test]
    fn analytic_gradient_weighted_and_unweighted() {
        let labels = [0, 2, 1, 2, 2];
        for weights in [None, Some(vec![0.5, 2.0, 1.5])] {
            for reduction in [Reduction::Mean, Reduction::Sum] {
                let loss = Sml {
                    weights: weights.clone(),
                    reduction,
                    ..Default::default()
                };
                let z = rand_input(&[5, 3], 1);
                let g = grad_of(&loss, &z, &labels);
                let q = z.softmax(1).unwrap().to_vec();
                let w: Vec<f64> = labels
                    .iter()
                    .map(|&y| weights.as_ref().map_or(1.0, |w| w[y]))
                    .collect();
                let r = if reduction == Reduction::Mean {
                    w.iter().sum()
                } else {
                    1.0
                };
                let want: Vec<f64> = (0..15)
                    .map(|e| {
                        let (i, k) = (e / 3, e % 3);
                        w[i] * (q[e] - if labels[i] == k { 1.0 } else { 0.0 }) / r
                    })
                    .collect();
                assert_close(&g, &want, 1e-13);
            }
        }
    }

    #[test]
    fn matches_pytorch_definition_values() {
        // Mean CE by hand: −(1/Σw) Σ w_y log q_y.
        let z = Tensor::<f64>::from_vec(vec![1.0, 2.0, 0.5, -1.0, 0.0, 3.0], &[2, 3]).unwrap();
        let loss = Sml {
            weights: Some(vec![1.0, 2.0, 3.0]),
            ..Default::default()
        };
        let got = Loss::<f64>::forward(&loss, &z, &[1, 2]).unwrap().item();
        let lse0 = (1f64.exp() + 2f64.exp() + 0.5f64.exp()).ln();
        let lse1 = ((-1f64).exp() + 1.0 + 3f64.exp()).ln();
        let want = (2.0 * (lse0 - 2.0) + 3.0 * (lse1 - 3.0)) / 5.0;
        assert!((got - want).abs() < 1e-14);
    }

    #[test]
    fn gradcheck_every_option() {
        let labels = [1, 0, 3, 3];
        let counts = [10, 5, 1, 30];
        let variants = [
            Sml::default(),
            Sml {
                reduction: Reduction::Sum,
                ..Default::default()
            },
            Sml {
                weights: Some(vec![0.2, 1.0, 3.0, 0.7]),
                ..Default::default()
            },
            Sml {
                label_smoothing: 0.1,
                ..Default::default()
            },
            Sml {
                label_smoothing: 0.2,
                weights: Some(vec![0.2, 1.0, 3.0, 0.7]),
                ..Default::default()
            },
            Sml {
                logit_offsets: Some(Sml::logit_adjustment(1.0, &counts)),
                ..Default::default()
            },
        ];
        for loss in variants {
            check_loss(&loss, &[4, 4], &labels);
        }
        // Batch of one.
        check_loss(&Sml::default(), &[1, 3], &[2]);
    }

    #[test]
    fn stable_for_huge_logits() {
        assert_stable(&Sml::default(), 3);
        assert_stable(
            &Sml {
                label_smoothing: 0.1,
                ..Default::default()
            },
            3,
        );
    }

    #[test]
    fn equal_weights_equal_unweighted_and_bad_labels_are_errors() {
        let z = rand_input(&[4, 3], 2);
        let plain = Loss::<f64>::forward(&Sml::default(), &z, &[0, 1, 2, 1])
            .unwrap()
            .item();
        let same = Sml {
            weights: Some(vec![2.5; 3]),
            ..Default::default()
        };
        let weighted = Loss::<f64>::forward(&same, &z, &[0, 1, 2, 1])
            .unwrap()
            .item();
        assert!((plain - weighted).abs() < 1e-14);
        let e = Loss::<f64>::forward(&Sml::default(), &z, &[0, 1, 3, 1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sml") && e.contains("index 3"), "{e}");
        assert!(Loss::<f64>::forward(&Sml::default(), &z, &[0, 1]).is_err());
    }
}
