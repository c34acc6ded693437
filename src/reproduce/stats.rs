//! The statistics and number formats of the report: mean ± standard error over seeds,
//! paired differences with a two-sided paired t-test (Student's t through the regularised
//! incomplete beta function), the confusion spread of a `p̄` matrix.

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

/// `mean ± standard error`, scaled (the protocol reports standard errors).
pub(crate) fn pm(s: Stats, scale: f64, digits: usize) -> String {
    if s.n > 1 {
        format!(
            "{:.d$} ± {:.d$}",
            s.mean * scale,
            s.se() * scale,
            d = digits
        )
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

impl Stats {
    /// Standard error of the mean, `std / √n` (0 for fewer than two values).
    pub fn se(&self) -> f64 {
        if self.n > 1 {
            self.std / (self.n as f64).sqrt()
        } else {
            0.0
        }
    }
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, 9 terms: about 15 significant digits).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1 − x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularised incomplete beta function `I_x(a, b)`, by its continued fraction
/// (modified Lentz), on the side where it converges fast.
pub fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - incomplete_beta(1.0 - x, b, a);
    }
    const TINY: f64 = 1e-300;
    let (mut c, mut d) = (1.0, 1.0 - (a + b) * x / (a + 1.0));
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut f = d;
    for m in 1..500 {
        let m = m as f64;
        for numerator in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + numerator * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + numerator / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            f *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-15 {
            break;
        }
    }
    front * f / a
}

/// Two-sided p-value of Student's t statistic `t` with `df` degrees of freedom.
pub fn t_test_p(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return if t.is_nan() { f64::NAN } else { 0.0 };
    }
    incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
}

/// A paired comparison over seeds: the differences `a − b` of the seeds both have.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Paired {
    /// Mean difference.
    pub mean: f64,
    /// Its standard error.
    pub se: f64,
    /// Pairs.
    pub n: usize,
    /// Two-sided paired t-test p-value (`NaN` with fewer than two pairs or no spread and
    /// no difference; 0 with no spread and a difference).
    pub p: f64,
}

impl Paired {
    /// "Within noise" of the protocol: `|mean| ≤ 2 × se`.
    pub fn within_noise(&self) -> bool {
        self.mean.abs() <= 2.0 * self.se
    }

    /// `a` above `b` beyond noise.
    pub fn above(&self) -> bool {
        !self.within_noise() && self.mean > 0.0
    }

    /// `a` below `b` beyond noise.
    pub fn below(&self) -> bool {
        !self.within_noise() && self.mean < 0.0
    }
}

/// The paired differences `a − b` over the seeds present in both (`(seed, value)` lists);
/// `None` without a common seed.
pub fn paired(a: &[(u64, f64)], b: &[(u64, f64)]) -> Option<Paired> {
    let d: Vec<f64> = a
        .iter()
        .filter_map(|&(s, x)| b.iter().find(|&&(t, _)| t == s).map(|&(_, y)| x - y))
        .collect();
    if d.is_empty() {
        return None;
    }
    let s = stats(&d);
    let se = s.se();
    let p = if s.n < 2 {
        f64::NAN
    } else if se == 0.0 {
        if s.mean == 0.0 {
            f64::NAN
        } else {
            0.0
        }
    } else {
        t_test_p(s.mean / se, (s.n - 1) as f64)
    };
    Some(Paired {
        mean: s.mean,
        se,
        n: s.n,
        p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_and_the_t_test_match_tabulated_values() {
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
        assert!((ln_gamma(0.1) - 2.252_712_651_734_206).abs() < 1e-12);
        // Two-sided 5% critical values of Student's t (tables): df 1, 4, 10, and the
        // normal limit.
        for (t, df) in [
            (12.706_204_736, 1.0),
            (2.776_445_105, 4.0),
            (2.228_138_852, 10.0),
        ] {
            assert!((t_test_p(t, df) - 0.05).abs() < 1e-8, "t = {t}, df = {df}");
            assert!((t_test_p(-t, df) - 0.05).abs() < 1e-8);
        }
        assert!((t_test_p(1.959_963_985, 1e7) - 0.05).abs() < 1e-6);
        // 1% at df 4, and the edges.
        assert!((t_test_p(4.604_094_871, 4.0) - 0.01).abs() < 1e-8);
        assert_eq!(t_test_p(0.0, 4.0), 1.0);
        assert_eq!(t_test_p(f64::INFINITY, 4.0), 0.0);
        // I_x(a, b) against closed forms: I_x(1, 1) = x, I_x(2, 1) = x².
        assert!((incomplete_beta(0.3, 1.0, 1.0) - 0.3).abs() < 1e-14);
        assert!((incomplete_beta(0.3, 2.0, 1.0) - 0.09).abs() < 1e-14);
    }

    #[test]
    fn paired_differences_use_common_seeds_only() {
        let a = [(0, 1.0), (1, 2.0), (2, 4.0), (7, 100.0)];
        let b = [(2, 1.0), (0, 0.5), (1, 1.0), (3, -100.0)];
        let p = paired(&a, &b).unwrap();
        // Differences 0.5, 1.0, 3.0 (seeds 0, 1, 2).
        assert_eq!(p.n, 3);
        assert!((p.mean - 1.5).abs() < 1e-15);
        let sd = ((1.0f64 + 0.25 + 2.25) / 2.0).sqrt();
        assert!((p.se - sd / 3f64.sqrt()).abs() < 1e-15);
        assert!((p.p - t_test_p(1.5 / p.se, 2.0)).abs() < 1e-15);
        assert!(!p.within_noise() || p.mean.abs() <= 2.0 * p.se);
        assert!(paired(&a, &[(9, 1.0)]).is_none());
        // One pair has no test; equal values no spread.
        assert!(paired(&a[..1], &b).unwrap().p.is_nan());
        let same = paired(&[(0, 1.0), (1, 2.0)], &[(0, 1.0), (1, 2.0)]).unwrap();
        assert!(same.within_noise() && same.p.is_nan());
    }
}
