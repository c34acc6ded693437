//! Class weights from class counts: inverse frequency and effective number (Cui et al.).

use crate::text::{serde_as_text, ParseError};
use std::fmt;
use std::str::FromStr;

/// How class weights are derived from class counts, spelled `none`, `inverse` or
/// `effective:BETA`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClassWeighting {
    /// No weights.
    None,
    /// `w_k ∝ 1/n_k`.
    Inverse,
    /// `w_k ∝ (1 − β)/(1 − β^{n_k})`, the inverse effective number of samples.
    Effective(f64),
}

impl FromStr for ClassWeighting {
    type Err = ParseError;

    /// Parses `none`, `inverse` or `effective:β` with `β ∈ [0, 1)`.
    fn from_str(spec: &str) -> Result<Self, ParseError> {
        let bad = |why: &str| ParseError::new(spec, why);
        match spec {
            "none" => Ok(ClassWeighting::None),
            "inverse" => Ok(ClassWeighting::Inverse),
            _ => {
                let Some(beta) = spec.strip_prefix("effective:") else {
                    return Err(bad("expected none, inverse or effective:BETA"));
                };
                let beta: f64 = beta.parse().map_err(|_| bad("BETA is not a number"))?;
                if !(0.0..1.0).contains(&beta) {
                    return Err(bad("BETA must be in [0, 1)"));
                }
                Ok(ClassWeighting::Effective(beta))
            }
        }
    }
}

impl fmt::Display for ClassWeighting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClassWeighting::None => write!(f, "none"),
            ClassWeighting::Inverse => write!(f, "inverse"),
            ClassWeighting::Effective(beta) => write!(f, "effective:{beta}"),
        }
    }
}

serde_as_text!(ClassWeighting);

impl ClassWeighting {
    /// The weight of a class with `n` samples, before normalisation (0 when `n = 0`).
    fn raw(self, n: usize) -> f64 {
        if n == 0 {
            return 0.0;
        }
        match self {
            ClassWeighting::None => 1.0,
            ClassWeighting::Inverse => 1.0 / n as f64,
            ClassWeighting::Effective(beta) => (1.0 - beta) / (1.0 - beta.powi(n as i32)),
        }
    }

    /// Per-class weights normalised to sum to the number of classes; `None` for `None`.
    /// Classes with no samples get weight 0.
    pub fn weights(self, counts: &[usize]) -> Option<Vec<f64>> {
        if self == ClassWeighting::None {
            return None;
        }
        let raw: Vec<f64> = counts.iter().map(|&n| self.raw(n)).collect();
        let total: f64 = raw.iter().sum();
        Some(
            raw.iter()
                .map(|w| w * counts.len() as f64 / total)
                .collect(),
        )
    }

    /// Per-problem positive/negative weights for one-vs-all losses: problem `k` has
    /// `n_k` positives and `n − n_k` negatives; each side gets this weighting's weight of
    /// its count, scaled so that both sides carry total weight `n/2` in the inverse case
    /// (`w⁺_k = n/(2n_k)`, `w⁻_k = n/(2(n − n_k))`). `None` for `None`.
    pub fn pos_neg_weights(self, counts: &[usize]) -> Option<(Vec<f64>, Vec<f64>)> {
        if self == ClassWeighting::None {
            return None;
        }
        let n: usize = counts.iter().sum();
        let half = n as f64 / 2.0;
        let side = |m: usize| self.raw(m) * half;
        let pos = counts.iter().map(|&c| side(c)).collect();
        let neg = counts.iter().map(|&c| side(n - c)).collect();
        Some((pos, neg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_and_effective_normalise_to_k() {
        let counts = [600, 150, 30];
        let w = ClassWeighting::Inverse.weights(&counts).unwrap();
        assert!((w.iter().sum::<f64>() - 3.0).abs() < 1e-12);
        assert!((w[2] / w[0] - 20.0).abs() < 1e-12);
        let e = ClassWeighting::Effective(0.99).weights(&counts).unwrap();
        assert!((e.iter().sum::<f64>() - 3.0).abs() < 1e-12);
        let raw = |n: i32| (1.0 - 0.99) / (1.0 - 0.99f64.powi(n));
        assert!((e[2] / e[0] - raw(30) / raw(600)).abs() < 1e-12);
        assert_eq!(ClassWeighting::None.weights(&counts), None);
    }

    #[test]
    fn parse_specs_and_reject_bad_ones() {
        assert_eq!(
            ClassWeighting::from_str("effective:0.9999").unwrap(),
            ClassWeighting::Effective(0.9999)
        );
        for bad in ["effective:1", "effective:x", "inverted", "effective:-0.1"] {
            let e = ClassWeighting::from_str(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{bad:?}: ")), "{e}");
        }
        for good in ["none", "inverse", "effective:0.9999", "effective:0"] {
            let w = ClassWeighting::from_str(good).unwrap();
            assert_eq!(w.to_string(), good);
        }
    }

    #[test]
    fn pos_neg_inverse_frequency() {
        let (pos, neg) = ClassWeighting::Inverse.pos_neg_weights(&[10, 30]).unwrap();
        assert_eq!(pos, vec![2.0, 40.0 / 60.0]);
        assert_eq!(neg, vec![40.0 / 60.0, 2.0]);
    }
}
