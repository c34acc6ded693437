//! The stationarity audit (docs/LOSSES.md §4): both sides of the condition a stationary point
//! of the training loss must satisfy, per class, from the model's probabilities on the
//! whole training set.

use crate::error::{Result, TensorError};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which condition to check, with the weights it involves.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum AuditSpec {
    /// Weighted SML: `w_k n_k (1 − q̄_kk) = Σ_{j≠k} w_j n_j q̄_jk`.
    Sml {
        /// Class weights (`None`: all 1).
        weights: Option<Vec<f64>>,
    },
    /// LGL with per-sample weights: `w_k n_k (1 − p̄_kk) = Σ_{j≠k} w_j n_j p̄_jk`; with one
    /// output (binary): `w_1 n_1 (1 − p̄_1) = w_0 n_0 p̄_0`.
    Lgl {
        /// Class weights (`None`: all 1; binary: `[w_0, w_1]`).
        weights: Option<Vec<f64>>,
    },
    /// LGL with per-problem weights: `w⁺_k n_k (1 − p̄_kk) = w⁻_k Σ_{j≠k} n_j p̄_jk`.
    LglPosNeg {
        /// `w⁺_k`.
        pos: Vec<f64>,
        /// `w⁻_k`.
        neg: Vec<f64>,
    },
    /// LGL-INR with detached weights: `1 − p̄_kk = Σ_{j≠k} ω_jk p̄_jk`.
    LglInr {
        /// Inverse temperature of `ω`.
        beta: f64,
    },
}

/// Both sides of one class's condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    /// The class (for the binary condition, the positive class 1).
    pub class: usize,
    /// Its training-set count.
    pub count: usize,
    /// Left-hand side.
    pub lhs: f64,
    /// Right-hand side.
    pub rhs: f64,
    /// `|lhs − rhs| / max(|lhs|, |rhs|)` (0 when both are 0).
    pub residual: f64,
}

/// The audit of one model on one data set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    /// The condition, in words.
    pub condition: String,
    /// Count of every class.
    pub counts: Vec<usize>,
    /// One row per class checked.
    pub rows: Vec<AuditRow>,
    /// Class-averaged probabilities `p̄_jk` (rows: true class, columns: output).
    pub p_bar: Vec<Vec<f64>>,
    /// Largest residual.
    pub max_residual: f64,
}

fn residual(lhs: f64, rhs: f64) -> f64 {
    let scale = lhs.abs().max(rhs.abs());
    if scale == 0.0 {
        0.0
    } else {
        (lhs - rhs).abs() / scale
    }
}

/// Class counts and class-averaged probabilities `p̄_jk` from probabilities `[N, outputs]`
/// (row-major). With one output the classes are 0 and 1.
pub fn class_average(
    probs: &[f64],
    outputs: usize,
    labels: &[usize],
) -> Result<(Vec<usize>, Vec<Vec<f64>>)> {
    let classes = if outputs == 1 { 2 } else { outputs };
    if outputs == 0 || probs.len() != labels.len() * outputs {
        return Err(TensorError::LengthMismatch {
            op: "audit",
            shape: vec![labels.len(), outputs],
            expected: labels.len() * outputs,
            got: probs.len(),
        });
    }
    let mut counts = vec![0usize; classes];
    let mut sums = vec![vec![0.0; outputs]; classes];
    for (row, &l) in probs.chunks(outputs).zip(labels) {
        if l >= classes {
            return Err(TensorError::IndexOutOfRange {
                op: "audit",
                index: l,
                size: classes,
            });
        }
        counts[l] += 1;
        for (s, &p) in sums[l].iter_mut().zip(row) {
            *s += p;
        }
    }
    for (s, &n) in sums.iter_mut().zip(&counts) {
        if n > 0 {
            s.iter_mut().for_each(|v| *v /= n as f64);
        }
    }
    Ok((counts, sums))
}

/// Runs the audit for `spec` on probabilities `[N, outputs]` and labels.
pub fn audit(spec: &AuditSpec, probs: &[f64], outputs: usize, labels: &[usize]) -> Result<Audit> {
    let (counts, p_bar) = class_average(probs, outputs, labels)?;
    let n = |j: usize| counts[j] as f64;
    let weight = |w: &Option<Vec<f64>>, j: usize| w.as_ref().map_or(1.0, |w| w[j]);
    let check_len = |w: &[f64], want: usize| -> Result<()> {
        if w.len() != want {
            return Err(TensorError::InvalidArgument {
                op: "audit",
                reason: format!("{} weights for {want} classes", w.len()),
            });
        }
        Ok(())
    };
    let mut rows = Vec::new();
    let condition;
    if outputs == 1 {
        // Binary: positives are class 1; p̄_1 = p̄[1][0], p̄_0 = p̄[0][0].
        let (w0, w1) = match spec {
            AuditSpec::Lgl { weights } => {
                if let Some(w) = weights {
                    check_len(w, 2)?;
                }
                (weight(weights, 0), weight(weights, 1))
            }
            AuditSpec::LglPosNeg { pos, neg } => {
                let (pos, neg) = crate::loss::lgl::binary_problem_weights("audit", pos, neg)?;
                (neg[0], pos[0])
            }
            other => {
                return Err(TensorError::InvalidArgument {
                    op: "audit",
                    reason: format!("{other:?} has no binary condition"),
                })
            }
        };
        condition = "binary weighted LGL: w1·n1·(1 − p̄1) = w0·n0·p̄0".to_string();
        let (lhs, rhs) = (w1 * n(1) * (1.0 - p_bar[1][0]), w0 * n(0) * p_bar[0][0]);
        rows.push(AuditRow {
            class: 1,
            count: counts[1],
            lhs,
            rhs,
            residual: residual(lhs, rhs),
        });
    } else {
        let k = outputs;
        let present: Vec<usize> = (0..k).filter(|&j| counts[j] > 0).collect();
        condition = match spec {
            AuditSpec::Sml { .. } => "weighted SML: w_k·n_k·(1 − q̄_kk) = Σ_{j≠k} w_j·n_j·q̄_jk",
            AuditSpec::Lgl { .. } => {
                "LGL (per-sample weights): w_k·n_k·(1 − p̄_kk) = Σ_{j≠k} w_j·n_j·p̄_jk"
            }
            AuditSpec::LglPosNeg { .. } => {
                "LGL (per-problem weights): w⁺_k·n_k·(1 − p̄_kk) = w⁻_k·Σ_{j≠k} n_j·p̄_jk"
            }
            AuditSpec::LglInr { .. } => "LGL-INR (detached weights): 1 − p̄_kk = Σ_{j≠k} ω_jk·p̄_jk",
        }
        .to_string();
        for &c in &present {
            let others = present.iter().copied().filter(|&j| j != c);
            let (lhs, rhs) = match spec {
                AuditSpec::Sml { weights } | AuditSpec::Lgl { weights } => {
                    if let Some(w) = weights {
                        check_len(w, k)?;
                    }
                    let rhs = others
                        .map(|j| weight(weights, j) * n(j) * p_bar[j][c])
                        .sum();
                    (weight(weights, c) * n(c) * (1.0 - p_bar[c][c]), rhs)
                }
                AuditSpec::LglPosNeg { pos, neg } => {
                    check_len(pos, k)?;
                    check_len(neg, k)?;
                    let rhs: f64 = others.map(|j| n(j) * p_bar[j][c]).sum();
                    (pos[c] * n(c) * (1.0 - p_bar[c][c]), neg[c] * rhs)
                }
                AuditSpec::LglInr { beta } => {
                    let others: Vec<usize> = others.collect();
                    let z: f64 = others.iter().map(|&j| (beta * p_bar[j][c]).exp()).sum();
                    let rhs = others
                        .iter()
                        .map(|&j| (beta * p_bar[j][c]).exp() / z * p_bar[j][c])
                        .sum();
                    (1.0 - p_bar[c][c], if others.is_empty() { 0.0 } else { rhs })
                }
            };
            rows.push(AuditRow {
                class: c,
                count: counts[c],
                lhs,
                rhs,
                residual: residual(lhs, rhs),
            });
        }
    }
    let max_residual = rows.iter().map(|r| r.residual).fold(0.0, f64::max);
    Ok(Audit {
        condition,
        counts,
        rows,
        p_bar,
        max_residual,
    })
}

impl fmt::Display for Audit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "stationarity audit: {}", self.condition)?;
        writeln!(
            f,
            "{:>6} {:>8} {:>14} {:>14} {:>10}",
            "class", "n", "lhs", "rhs", "residual"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:>6} {:>8} {:>14.6e} {:>14.6e} {:>10.2e}",
                r.class, r.count, r.lhs, r.rhs, r.residual
            )?;
        }
        writeln!(f, "max residual {:.3e}", self.max_residual)?;
        writeln!(f, "p̄ (rows: true class, columns: output):")?;
        for (j, row) in self.p_bar.iter().enumerate() {
            write!(f, "{j:>6}")?;
            for v in row {
                write!(f, " {v:>7.4}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_averages_and_binary_rows_by_hand() {
        let probs = [0.9, 0.2, 0.6, 0.1];
        let labels = [1, 0, 1, 0];
        let a = audit(
            &AuditSpec::Lgl {
                weights: Some(vec![1.0, 3.0]),
            },
            &probs,
            1,
            &labels,
        )
        .unwrap();
        assert_eq!(a.counts, vec![2, 2]);
        assert!((a.p_bar[1][0] - 0.75).abs() < 1e-15 && (a.p_bar[0][0] - 0.15).abs() < 1e-15);
        let r = &a.rows[0];
        assert!((r.lhs - 3.0 * 2.0 * 0.25).abs() < 1e-15 && (r.rhs - 2.0 * 0.15).abs() < 1e-15);
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("\"max_residual\""));
        assert!(a.to_string().contains("residual"));
    }

    #[test]
    fn lgl_inr_weights_are_a_softmax_over_non_targets() {
        // Three classes, one sample each: p̄ is the probability matrix itself.
        let probs = [0.8, 0.1, 0.3, 0.2, 0.7, 0.4, 0.1, 0.5, 0.6];
        let a = audit(&AuditSpec::LglInr { beta: 2.0 }, &probs, 3, &[0, 1, 2]).unwrap();
        let (p10, p20) = (0.2f64, 0.1f64);
        let (e1, e2) = ((2.0 * p10).exp(), (2.0 * p20).exp());
        let want = (e1 * p10 + e2 * p20) / (e1 + e2);
        assert!((a.rows[0].rhs - want).abs() < 1e-15 && (a.rows[0].lhs - 0.2).abs() < 1e-15);
        assert!(audit(
            &AuditSpec::Sml {
                weights: Some(vec![1.0])
            },
            &probs,
            3,
            &[0, 1, 2]
        )
        .is_err());
        assert!(audit(&AuditSpec::Sml { weights: None }, &probs, 3, &[0, 1, 3]).is_err());
    }
}
