//! The statistics and number formats of the report: mean ± std over seeds, the noise
//! rule of the verdicts, the confusion spread of a `p̄` matrix.

use serde::Serialize;

/// Mean and sample standard deviation.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Stats {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for one value).
    pub std: f64,
    /// Values.
    pub n: usize,
}

/// Mean ± std of `values`.
pub fn stats(values: &[f64]) -> Stats {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n.max(1) as f64;
    let var = if n > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    Stats {
        mean,
        std: var.sqrt(),
        n,
    }
}

pub(crate) fn pm(s: Stats, scale: f64, digits: usize) -> String {
    if s.n > 1 {
        format!("{:.d$} ± {:.d$}", s.mean * scale, s.std * scale, d = digits)
    } else {
        format!("{:.d$}", s.mean * scale, d = digits)
    }
}

pub(crate) fn sci(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else {
        format!("{v:.1e}")
    }
}

pub(crate) fn mean_matrix(ms: &[&Vec<Vec<f64>>]) -> Vec<Vec<f64>> {
    let Some(first) = ms.first() else {
        return Vec::new();
    };
    let mut out = vec![vec![0.0; first.first().map_or(0, |r| r.len())]; first.len()];
    for m in ms {
        for (o, r) in out.iter_mut().zip(m.iter()) {
            for (a, b) in o.iter_mut().zip(r) {
                *a += b / ms.len() as f64;
            }
        }
    }
    out
}

/// The largest and the mean non-target probability of each output column of `p̄`,
/// averaged over columns: how concentrated the probability on wrong classes is.
pub fn confusion_spread(p_bar: &[Vec<f64>]) -> (f64, f64) {
    let k = p_bar.len();
    // One output (binary) has no non-target columns to compare.
    if k < 2 || p_bar.iter().any(|r| r.len() != k) {
        return (0.0, 0.0);
    }
    let (mut hardest, mut mean) = (0.0, 0.0);
    for col in 0..k {
        let off: Vec<f64> = p_bar
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != col)
            .map(|(_, row)| row[col])
            .collect();
        hardest += off.iter().cloned().fold(0.0, f64::max);
        mean += off.iter().sum::<f64>() / off.len() as f64;
    }
    (hardest / k as f64, mean / k as f64)
}

pub(crate) fn max_of(values: impl Iterator<Item = f64>) -> Option<f64> {
    values.fold(None, |m, v| Some(m.map_or(v, |m: f64| m.max(v))))
}

pub(crate) fn opt_sci(v: Option<f64>) -> String {
    v.map_or("—".into(), sci)
}

/// Two means differ by less than twice their combined standard deviation.
pub(crate) fn within_noise(a: Stats, b: Stats) -> bool {
    (a.mean - b.mean).abs() <= 2.0 * (a.std.powi(2) + b.std.powi(2)).sqrt()
}
