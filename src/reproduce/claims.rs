//! The measures the claims are tested by (docs/EXPERIMENTS.md, version 2), as functions of
//! plain numbers: the averaging effect's concentration and hardest-class share, the
//! confusable pairs, and the binary relation's two predictions (full batch and minibatch).

/// The off-target entries `p̄_jk`, `j ≠ k`, of output column `k`, with their row `j`.
fn off_target(p_bar: &[Vec<f64>], k: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
    p_bar
        .iter()
        .enumerate()
        .filter(move |&(j, _)| j != k)
        .map(move |(j, row)| (j, row[k]))
}

fn square(p_bar: &[Vec<f64>]) -> Option<usize> {
    let k = p_bar.len();
    (k >= 2 && p_bar.iter().all(|r| r.len() == k)).then_some(k)
}

/// The concentration of the non-target probability, averaged over the outputs `k`:
/// `c_k = max_{j≠k} p̄_jk / mean_{j≠k} p̄_jk` (1 when every non-target class gets the same,
/// `K − 1` when one gets it all). `None` for a matrix that is not square with `K ≥ 2`, or
/// an output whose non-target probabilities are all 0.
///
/// ```
/// use tensorgrad::reproduce::claims::concentration;
/// // Output 0: rows 1 and 2 give 0.1 and 0.3, so c_0 = 0.3 / 0.2; outputs 1, 2 even.
/// let p = vec![vec![0.8, 0.1, 0.1], vec![0.1, 0.8, 0.1], vec![0.3, 0.1, 0.8]];
/// let c = concentration(&p).unwrap();
/// assert!((c - (1.5 + 1.0 + 1.0) / 3.0).abs() < 1e-12);
/// ```
pub fn concentration(p_bar: &[Vec<f64>]) -> Option<f64> {
    let k = square(p_bar)?;
    let mut sum = 0.0;
    for col in 0..k {
        let values: Vec<f64> = off_target(p_bar, col).map(|(_, v)| v).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let max = values.iter().cloned().fold(0.0, f64::max);
        if mean <= 0.0 {
            return None;
        }
        sum += max / mean;
    }
    Some(sum / k as f64)
}

/// The hardest non-target class's share of the negative mass, averaged over outputs:
/// `max_j n_j p̄_jk / Σ_{j≠k} n_j p̄_jk`, with `n_j` the class counts of the set `p̄` was
/// measured on. `None` as [`concentration`].
pub fn hardest_share(p_bar: &[Vec<f64>], counts: &[usize]) -> Option<f64> {
    let k = square(p_bar)?;
    if counts.len() != k {
        return None;
    }
    let mut sum = 0.0;
    for col in 0..k {
        let mass: Vec<f64> = off_target(p_bar, col)
            .map(|(j, v)| counts[j] as f64 * v)
            .collect();
        let total: f64 = mass.iter().sum();
        if total <= 0.0 {
            return None;
        }
        sum += mass.iter().cloned().fold(0.0, f64::max) / total;
    }
    Some(sum / k as f64)
}

/// The `n` ordered pairs `(true j, predicted k)`, `j ≠ k`, with the highest confusion rate
/// `confusion[j][k] / Σ_k confusion[j][k]` in the pooled matrices (ties: the lower pair).
pub fn confusable_pairs(confusions: &[&Vec<Vec<usize>>], n: usize) -> Vec<(usize, usize)> {
    let Some(first) = confusions.first() else {
        return Vec::new();
    };
    let k = first.len();
    let mut pooled = vec![vec![0usize; k]; k];
    for m in confusions {
        for (p, r) in pooled.iter_mut().zip(m.iter()) {
            for (a, b) in p.iter_mut().zip(r) {
                *a += b;
            }
        }
    }
    let mut pairs: Vec<((usize, usize), f64)> = Vec::new();
    for (j, row) in pooled.iter().enumerate() {
        let total: usize = row.iter().sum();
        for (c, &v) in row.iter().enumerate() {
            if c != j && total > 0 {
                pairs.push(((j, c), v as f64 / total as f64));
            }
        }
    }
    // Stable: equal rates keep the order (j, k).
    pairs.sort_by(|a, b| b.1.total_cmp(&a.1));
    pairs.into_iter().take(n).map(|(p, _)| p).collect()
}

/// The mean over `pairs` of the rate at which class `j` is predicted as `k`.
pub fn pair_error(confusion: &[Vec<usize>], pairs: &[(usize, usize)]) -> f64 {
    if pairs.is_empty() {
        return 0.0;
    }
    pairs
        .iter()
        .map(|&(j, k)| {
            let total: usize = confusion[j].iter().sum();
            if total == 0 {
                0.0
            } else {
                confusion[j][k] as f64 / total as f64
            }
        })
        .sum::<f64>()
        / pairs.len() as f64
}

/// The full-batch prediction of `(1 − p̄₁)/p̄₀` for binary weighted LGL: `w₀n₀ / (w₁n₁)`.
pub fn full_batch_ratio(n1: usize, n0: usize, w1: f64, w0: f64) -> f64 {
    w0 * n0 as f64 / (w1 * n1 as f64)
}

/// The minibatch prediction of `(1 − p̄₁)/p̄₀` (docs/LOSSES.md §4) for a loss whose batch
/// mean divides by the batch's own sum of weights `W_B`: each class weight becomes
/// `a_c = w_c E[1/W_B | a class-c sample is in B]`, the expectation exact over the
/// binomial number of positives among the other `batch − 1` samples (probability
/// `n₁/(n₀ + n₁)` each). A loss that divides by the batch size has `a_c ∝ w_c`: use
/// [`full_batch_ratio`].
///
/// ```
/// use tensorgrad::reproduce::claims::minibatch_ratio;
/// // docs/LOSSES.md §4: inverse weights, batch 64, n₀/n₁ = 100 predicts about 2.23.
/// let r = minibatch_ratio(59, 5949, 1.0 / 59.0, 1.0 / 5949.0, 64);
/// assert!((r - 2.23).abs() < 0.005, "{r}");
/// ```
pub fn minibatch_ratio(n1: usize, n0: usize, w1: f64, w0: f64, batch: usize) -> f64 {
    let pi = n1 as f64 / (n0 + n1) as f64;
    let others = batch.saturating_sub(1);
    // ln C(others, m) + m ln π + (others − m) ln(1 − π), summed in logs for large batches.
    let ln_binomial = |m: usize| {
        super::stats::ln_gamma(others as f64 + 1.0)
            - super::stats::ln_gamma(m as f64 + 1.0)
            - super::stats::ln_gamma((others - m) as f64 + 1.0)
            + if m > 0 { m as f64 * pi.ln() } else { 0.0 }
            + if others > m {
                (others - m) as f64 * (1.0 - pi).ln()
            } else {
                0.0
            }
    };
    let (mut e1, mut e0) = (0.0, 0.0);
    for m in 0..=others {
        let p = ln_binomial(m).exp();
        // m positives among the others: a positive's batch has m + 1, a negative's m.
        e1 += p / (w1 * (m + 1) as f64 + w0 * (others - m) as f64);
        e0 += p / (w1 * m as f64 + w0 * (others - m + 1) as f64);
    }
    let (a1, a0) = (w1 * e1, w0 * e0);
    a0 * n0 as f64 / (a1 * n1 as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concentration_and_share_are_one_and_even_without_a_hard_class() {
        let even = vec![
            vec![0.7, 0.1, 0.1],
            vec![0.1, 0.7, 0.1],
            vec![0.1, 0.1, 0.7],
        ];
        assert!((concentration(&even).unwrap() - 1.0).abs() < 1e-15);
        assert!((hardest_share(&even, &[5, 5, 5]).unwrap() - 0.5).abs() < 1e-15);
        // All of output 0's negative probability on class 2: c_0 = K − 1 = 2.
        let hard = vec![
            vec![0.7, 0.1, 0.1],
            vec![0.0, 0.7, 0.1],
            vec![0.4, 0.1, 0.7],
        ];
        assert!((concentration(&hard).unwrap() - (2.0 + 1.0 + 1.0) / 3.0).abs() < 1e-12);
        // Shares weigh by the counts: class 1 ten times as many as class 2.
        let mixed = vec![
            vec![0.7, 0.1, 0.1],
            vec![0.1, 0.7, 0.1],
            vec![0.3, 0.1, 0.7],
        ];
        let s = hardest_share(&mixed, &[10, 10, 1]).unwrap();
        let col0 = (10.0 * 0.1) / (10.0 * 0.1 + 0.3);
        let col1 = (10.0 * 0.1) / (10.0 * 0.1 + 0.1);
        let col2 = (10.0 * 0.1) / (10.0 * 0.1 + 10.0 * 0.1);
        assert!((s - (col0 + col1 + col2) / 3.0).abs() < 1e-12);
        // One output (binary) has nothing to compare.
        assert!(concentration(&[vec![0.2], vec![0.9]]).is_none());
    }

    #[test]
    fn confusable_pairs_rank_rates_not_counts() {
        // Class 0 has 100 samples, 10 called 1; class 2 has 10, 5 called 0.
        let m = vec![vec![90, 10, 0], vec![1, 98, 1], vec![5, 0, 5]];
        let pairs = confusable_pairs(&[&m], 2);
        assert_eq!(pairs, vec![(2, 0), (0, 1)]);
        assert!((pair_error(&m, &pairs) - (0.5 + 0.1) / 2.0).abs() < 1e-15);
        // Pooling sums the counts first.
        let n = vec![vec![50, 50, 0], vec![1, 98, 1], vec![0, 0, 10]];
        assert_eq!(confusable_pairs(&[&m, &n], 1), vec![(0, 1)]);
    }

    #[test]
    fn minibatch_ratio_against_a_direct_sum_and_its_limits() {
        // Direct evaluation of the expectation with explicit binomial coefficients.
        let (n1, n0, b) = (30usize, 300usize, 8usize);
        let (w1, w0) = (1.0 / 30.0, 1.0 / 300.0);
        let pi = n1 as f64 / (n0 + n1) as f64;
        let choose =
            |n: usize, k: usize| (0..k).fold(1.0, |c, i| c * (n - i) as f64 / (i + 1) as f64);
        let (mut e1, mut e0) = (0.0, 0.0);
        for m in 0..b {
            let p = choose(b - 1, m) * pi.powi(m as i32) * (1.0 - pi).powi((b - 1 - m) as i32);
            e1 += p / (w1 * (m + 1) as f64 + w0 * (b - 1 - m) as f64);
            e0 += p / (w1 * m as f64 + w0 * (b - m) as f64);
        }
        let want = w0 * e0 * n0 as f64 / (w1 * e1 * n1 as f64);
        assert!((minibatch_ratio(n1, n0, w1, w0, b) - want).abs() < 1e-12 * want);
        // Equal weights: W_B = B whatever the batch, so it is the full-batch n₀/n₁.
        let r = minibatch_ratio(n1, n0, 1.0, 1.0, b);
        assert!((r - full_batch_ratio(n1, n0, 1.0, 1.0)).abs() < 1e-12 * r);
        // Batch 1: W_B is the sample's own weight, so a_c = 1 and the ratio is n₀/n₁.
        let r = minibatch_ratio(n1, n0, w1, w0, 1);
        assert!((r - 10.0).abs() < 1e-12, "{r}");
        // Inverse weights at full batch predict 1.
        assert!((full_batch_ratio(n1, n0, w1, w0) - 1.0).abs() < 1e-12);
    }
}
