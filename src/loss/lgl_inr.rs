//! LGL-INR: the paper's in-negative-class reweighted logistic loss (docs/LOSSES.md §3),
//! composed from tensor ops so autodiff gives the gradient, including through the weights.

use super::registry::{finite_in, BuildResult, LossEntry, LossOptions, LossParam};
use super::{check_inputs, AuditSpec, Family, Loss};
use crate::error::{Result, TensorError};
use crate::tensor::{Element, Tensor};

/// LGL-INR in the loss registry.
pub(crate) static ENTRY: LossEntry = LossEntry {
    name: "lgl-inr",
    summary: "the paper's LGL with inverse-rank weights of the negatives (β, detach_weight)",
    params: &[LossParam::Beta, LossParam::DetachWeight],
    build: build_lgl_inr,
};

fn build_lgl_inr(o: &LossOptions, _: &[usize]) -> BuildResult {
    let beta = match o.beta {
        Some(b) => finite_in(LossParam::Beta, b, b >= 0.0, "a finite number ≥ 0")?,
        None => 1.0,
    };
    Ok(Box::new(LglInr {
        beta,
        detach_weight: o.detach_weight,
        ..LglInr::default()
    }))
}

/// An additive mask that removes an entry from a softmax without producing NaN.
const MASKED: f64 = -1e30;

/// `L = −[Σ_{k∈P} (1/n_k) Σ_{i∈C_k} log(p_ik + ε) + Σ_k Σ_{j∈N_k} ω_jk m_jk]` with
/// `m_jk = mean_{i∈C_j} log(1 − p_ik + ε)` and `ω_·k = softmax_{j∈N_k}(β p̄_jk)`, every
/// statistic taken over the classes `P` present in the batch.
#[derive(Clone, Debug, PartialEq)]
pub struct LglInr {
    /// Inverse temperature `β ≥ 0` of the weights (0: uniform over non-target classes).
    pub beta: f64,
    /// Treat `ω` as a constant in backward.
    pub detach_weight: bool,
    /// `ε` inside the logs (1e-7 in the paper's reference implementation).
    pub eps: f64,
}

impl Default for LglInr {
    fn default() -> Self {
        LglInr {
            beta: 1.0,
            detach_weight: false,
            eps: 1e-7,
        }
    }
}

/// The per-batch pieces of LGL-INR, before the weights are applied.
struct Pieces<T: Element> {
    /// `Σ_i log(p_{i,y_i} + ε) / n_{y_i}` (scalar).
    positive: Tensor<T>,
    /// `m_jk`, `[J, K]` over the present classes `j`.
    m: Tensor<T>,
    /// `p̄_jk`, `[J, K]`.
    p_bar: Tensor<T>,
    /// Additive mask removing `j = k` from the softmax over `j`.
    mask: Tensor<T>,
    /// 1 where `j ∈ N_k`, else 0.
    keep: Tensor<T>,
}

impl LglInr {
    fn pieces<T: Element>(&self, logits: &Tensor<T>, labels: &[usize]) -> Result<Pieces<T>> {
        let (z, k) = check_inputs("lgl-inr", logits, labels, Family::Sigmoid)?;
        if k < 2 {
            return Err(TensorError::InvalidShape {
                op: "lgl-inr",
                shape: z.shape().to_vec(),
                reason: "needs at least 2 classes".into(),
            });
        }
        let b = labels.len();
        let mut counts = vec![0usize; k];
        for &l in labels {
            counts[l] += 1;
        }
        let present: Vec<usize> = (0..k).filter(|&c| counts[c] > 0).collect();
        let j = present.len();

        // M[j, i] = 1/n_j for the samples of present class j: M·X averages X per class.
        let mut means = vec![0.0; j * b];
        for (row, &c) in present.iter().enumerate() {
            for (i, &l) in labels.iter().enumerate() {
                if l == c {
                    means[row * b + i] = 1.0 / counts[c] as f64;
                }
            }
        }
        let means = Tensor::from_f64s(&means, &[j, b])?;

        let p = z.sigmoid();
        // Σ_{k∈P} (1/n_k) Σ_{i∈C_k} log(p_ik + ε) = Σ_i log(p_{i,y_i} + ε) / n_{y_i}
        let inv_n: Vec<f64> = labels.iter().map(|&l| 1.0 / counts[l] as f64).collect();
        let log_target = p.add_scalar(self.eps).log().gather(1, labels, &[b, 1])?;
        let positive = log_target
            .mul(&Tensor::from_f64s(&inv_n, &[b, 1])?)?
            .sum_all();
        // (1 − p) + ε in this order, as the reference: 1 + ε would round in f32.
        let m = means.matmul(&p.affine(-1.0, 1.0).add_scalar(self.eps).log())?;
        let p_bar = means.matmul(&p)?;

        // N_k = P \ {k}: mask j = k out of the softmax; a column whose N_k is empty
        // (k is the only class present) is dropped by `keep`.
        let mut mask = vec![0.0; j * k];
        let mut keep = vec![1.0; j * k];
        for (row, &c) in present.iter().enumerate() {
            mask[row * k + c] = MASKED;
            keep[row * k + c] = 0.0;
        }
        Ok(Pieces {
            positive,
            m,
            p_bar,
            mask: Tensor::from_f64s(&mask, &[j, k])?,
            keep: Tensor::from_f64s(&keep, &[j, k])?,
        })
    }

    fn omega<T: Element>(&self, p_bar: &Tensor<T>, mask: &Tensor<T>) -> Result<Tensor<T>> {
        p_bar.mul_scalar(self.beta).add(mask)?.softmax(0)
    }

    fn combine<T: Element>(pieces: &Pieces<T>, omega: &Tensor<T>) -> Result<Tensor<T>> {
        let negative = omega.mul(&pieces.m)?.mul(&pieces.keep)?.sum_all();
        Ok(pieces.positive.add(&negative)?.neg())
    }

    /// The weights `ω_jk` at these logits (`[J, K]`, rows: the classes present in the
    /// batch in increasing order), as constants.
    pub fn weights<T: Element>(&self, logits: &Tensor<T>, labels: &[usize]) -> Result<Tensor<T>> {
        let pieces = self.pieces(logits, labels)?;
        Ok(self.omega(&pieces.p_bar, &pieces.mask)?.detach())
    }

    /// The loss with `ω` held fixed at `omega` (from [`LglInr::weights`]): the function
    /// whose gradient the `detach_weight` loss follows at the point `omega` was taken.
    pub fn forward_with_weights<T: Element>(
        &self,
        logits: &Tensor<T>,
        labels: &[usize],
        omega: &Tensor<T>,
    ) -> Result<Tensor<T>> {
        Self::combine(&self.pieces(logits, labels)?, omega)
    }
}

/// `(K − 1) · max_j ω_jk` averaged over the outputs `k` whose negative set is not empty:
/// `omega` and `keep` are `[J, K]` row-major (rows: the classes present in the batch).
/// `None` when no output has a negative class.
pub fn focus_of(omega: &[f64], keep: &[f64], k: usize) -> Option<f64> {
    let j = omega.len() / k.max(1);
    let mut sum = 0.0;
    let mut outputs = 0;
    for col in 0..k {
        let largest = (0..j)
            .filter(|&row| keep[row * k + col] > 0.0)
            .map(|row| omega[row * k + col])
            .fold(None, |m: Option<f64>, w| Some(m.map_or(w, |m| m.max(w))));
        if let Some(w) = largest {
            sum += (k - 1) as f64 * w;
            outputs += 1;
        }
    }
    (outputs > 0).then(|| sum / outputs as f64)
}

impl<T: Element> Loss<T> for LglInr {
    fn name(&self) -> &'static str {
        ENTRY.name
    }

    fn family(&self) -> Family {
        Family::Sigmoid
    }

    fn audit_spec(&self) -> Option<AuditSpec> {
        Some(AuditSpec::LglInr { beta: self.beta })
    }

    fn focus(&self, logits: &Tensor<T>, labels: &[usize]) -> Result<Option<f64>> {
        let (omega, keep) = crate::autograd::no_grad(|| -> Result<_> {
            let pieces = self.pieces(logits, labels)?;
            let omega = self.omega(&pieces.p_bar, &pieces.mask)?;
            Ok((omega.to_f64_vec(), pieces.keep.to_f64_vec()))
        })?;
        Ok(focus_of(&omega, &keep, logits.shape()[1]))
    }

    fn forward(&self, logits: &Tensor<T>, labels: &[usize]) -> Result<Tensor<T>> {
        let pieces = self.pieces(logits, labels)?;
        let p_bar = if self.detach_weight {
            pieces.p_bar.detach()
        } else {
            pieces.p_bar.clone()
        };
        Self::combine(&pieces, &self.omega(&p_bar, &pieces.mask)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::test_util::*;
    use crate::testing::*;

    /// The gradient formula of docs/LOSSES.md §3, written out per element.
    fn formula(
        z: &[f64],
        labels: &[usize],
        k: usize,
        beta: f64,
        detach: bool,
        eps: f64,
    ) -> Vec<f64> {
        let b = labels.len();
        let p: Vec<f64> = z.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect();
        let mut n = vec![0usize; k];
        for &l in labels {
            n[l] += 1;
        }
        let present: Vec<usize> = (0..k).filter(|&c| n[c] > 0).collect();
        let mean_over = |c: usize, f: &dyn Fn(usize) -> f64| -> f64 {
            (0..b).filter(|&i| labels[i] == c).map(f).sum::<f64>() / n[c] as f64
        };
        let negs = |kk: usize| -> Vec<usize> {
            present
                .iter()
                .copied()
                .filter(|&jj| jj != kk || n[kk] == 0)
                .collect()
        };
        let omega = |jj: usize, kk: usize| -> f64 {
            let nk = negs(kk);
            let z: f64 = nk
                .iter()
                .map(|&l| (beta * mean_over(l, &|i| p[i * k + kk])).exp())
                .sum();
            (beta * mean_over(jj, &|i| p[i * k + kk])).exp() / z
        };
        let m = |jj: usize, kk: usize| mean_over(jj, &|i| (1.0 - p[i * k + kk] + eps).ln());
        let mut g = vec![0.0; b * k];
        for (i, &c) in labels.iter().enumerate() {
            for kk in 0..k {
                let e = i * k + kk;
                let s = p[e] * (1.0 - p[e]);
                if kk == c {
                    g[e] = -s / (p[e] + eps) / n[c] as f64;
                    continue;
                }
                if !negs(kk).contains(&c) {
                    continue;
                }
                g[e] = omega(c, kk) / n[c] as f64 * s / (1.0 - p[e] + eps);
                if !detach {
                    let s_k: f64 = negs(kk).iter().map(|&jj| omega(jj, kk) * m(jj, kk)).sum();
                    g[e] -= beta * omega(c, kk) / n[c] as f64 * (m(c, kk) - s_k) * s;
                }
            }
        }
        g
    }

    #[test]
    fn autodiff_matches_the_analytic_gradient() {
        // Class 3 absent; class 1 with a single sample.
        let labels = [0, 2, 0, 1, 2, 0, 4];
        let z = rand_input(&[7, 5], 11);
        for beta in [0.0, 1.0, 5.0] {
            for detach in [false, true] {
                let loss = LglInr {
                    beta,
                    detach_weight: detach,
                    eps: 1e-7,
                };
                let g = grad_of(&loss, &z, &labels);
                let want = formula(&z.to_vec(), &labels, 5, beta, detach, 1e-7);
                assert_close(&g, &want, 1e-12);
            }
        }
    }

    #[test]
    fn gradcheck_every_option_and_edge_batches() {
        let batches: [(&[usize], &[usize]); 3] = [
            (&[5, 4], &[0, 2, 0, 1, 2]), // class 3 absent
            (&[3, 3], &[1, 1, 1]),       // one class present
            (&[1, 3], &[2]),             // batch of one
        ];
        for beta in [0.0, 1.0, 5.0] {
            for (shape, labels) in batches {
                check_loss(
                    &LglInr {
                        beta,
                        detach_weight: false,
                        eps: 1e-7,
                    },
                    shape,
                    labels,
                );
                // Detached weights: the gradient is that of the loss with ω held at its
                // current value; gradcheck that function and compare at the point.
                let detached = LglInr {
                    beta,
                    detach_weight: true,
                    eps: 1e-7,
                };
                let z = rand_input(shape, 40);
                let omega = detached.weights(&z, labels).unwrap();
                assert_gradcheck(
                    |t| detached.forward_with_weights(&t[0], labels, &omega),
                    std::slice::from_ref(&z),
                );
                let zz = z.detach().with_grad();
                let g = detached
                    .forward_with_weights(&zz, labels, &omega)
                    .unwrap()
                    .backward()
                    .unwrap();
                assert_close(
                    &grad_of(&detached, &z, labels),
                    &g.get(&zz).unwrap().to_vec(),
                    1e-14,
                );
            }
        }
    }

    #[test]
    fn one_class_present_has_only_the_other_columns_as_negatives() {
        let z = rand_input(&[3, 3], 12);
        let labels = [1, 1, 1];
        let loss = LglInr::default();
        let got = Loss::<f64>::forward(&loss, &z, &labels).unwrap().item();
        let p: Vec<f64> = z
            .to_vec()
            .iter()
            .map(|v| 1.0 / (1.0 + (-v).exp()))
            .collect();
        let mut want = 0.0;
        for i in 0..3 {
            want -= (p[i * 3 + 1] + 1e-7).ln() / 3.0;
            for kk in [0, 2] {
                want -= (1.0 - p[i * 3 + kk] + 1e-7).ln() / 3.0;
            }
        }
        assert!((got - want).abs() < 1e-13, "{got} vs {want}");
    }

    #[test]
    fn stable_for_huge_logits() {
        assert_stable(&LglInr::default(), 3);
        assert_stable(
            &LglInr {
                beta: 5.0,
                detach_weight: true,
                eps: 1e-7,
            },
            4,
        );
    }

    #[test]
    fn f32_matches_f64_on_saturated_logits() {
        // A non-target logit of 30 saturates its sigmoid: log((1 − p) + ε) is then log ε.
        // Computing (1 + ε) − p instead rounds 1 + 1e-7 to 1 + 1.19e-7 in f32 (1e-2 off).
        let z = [30.0, -2.0, 1.0, 0.5, 25.0, -3.0];
        let labels = [1, 0];
        let loss = LglInr::default();
        let l64 = loss
            .forward(&Tensor::<f64>::from_f64s(&z, &[2, 3]).unwrap(), &labels)
            .unwrap()
            .item();
        let l32 = loss
            .forward(&Tensor::<f32>::from_f64s(&z, &[2, 3]).unwrap(), &labels)
            .unwrap()
            .item() as f64;
        assert!(((l32 - l64) / l64).abs() < 1e-5, "f32 {l32} vs f64 {l64}");
    }

    #[test]
    fn focus_is_one_for_uniform_weights_and_grows_with_beta_on_a_hard_class() {
        // 3 classes, all present; class 2's samples score high on output 0.
        let z = Tensor::<f64>::from_vec(
            vec![4.0, -4.0, -4.0, -4.0, 4.0, -4.0, 3.0, -4.0, 4.0],
            &[3, 3],
        )
        .unwrap();
        let labels = [0, 1, 2];
        let at = |beta: f64| {
            let loss = LglInr {
                beta,
                ..LglInr::default()
            };
            Loss::<f64>::focus(&loss, &z, &labels).unwrap().unwrap()
        };
        // β = 0: ω = 1/(K − 1) on every output, so (K − 1) · max ω = 1 exactly.
        assert!((at(0.0) - 1.0).abs() < 1e-12, "{}", at(0.0));
        // Output 0's negatives have p̄ = σ(−4) and σ(3): with β the weight moves to class 2.
        // By hand: column 0 gives 2·e^{βσ(3)}/(e^{βσ(−4)} + e^{βσ(3)}); columns 1 and 2
        // have equal p̄ over their negatives (σ(−4)), so they stay at 1.
        let s = |x: f64| 1.0 / (1.0 + (-x).exp());
        for beta in [1.0, 5.0, 100.0] {
            let col0 =
                2.0 * (beta * s(3.0)).exp() / ((beta * s(-4.0)).exp() + (beta * s(3.0)).exp());
            let want = (col0 + 2.0) / 3.0;
            assert!(
                (at(beta) - want).abs() < 1e-12,
                "β = {beta}: {} vs {want}",
                at(beta)
            );
        }
        assert!(at(100.0) > at(5.0) && at(5.0) > at(1.0));
        // Losses without non-target weights have no focus.
        let sml = crate::loss::Sml::default();
        assert_eq!(Loss::<f64>::focus(&sml, &z, &labels).unwrap(), None);
    }
}
