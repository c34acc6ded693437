//! Dense linear algebra for the optimizers: the Cholesky factorisation of a symmetric
//! positive definite matrix and the solve with its factor (the refit's Newton
//! preconditioner for [`super::minimize_lbfgs_preconditioned`]).

/// Cholesky factor `L` (row-major, lower) of a symmetric positive definite `a: [d, d]`.
pub fn cholesky(a: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let dot: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            let v = a[i * d + j] - dot;
            if i == j {
                if v <= 0.0 || !v.is_finite() {
                    return None;
                }
                l[i * d + i] = v.sqrt();
            } else {
                l[i * d + j] = v / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// Solves `L·Lᵀ x = v` in place, `L` from [`cholesky`].
pub fn cholesky_solve(l: &[f64], d: usize, v: &mut [f64]) {
    for i in 0..d {
        let dot: f64 = (0..i).map(|k| l[i * d + k] * v[k]).sum();
        v[i] = (v[i] - dot) / l[i * d + i];
    }
    for i in (0..d).rev() {
        let dot: f64 = (i + 1..d).map(|k| l[k * d + i] * v[k]).sum();
        v[i] = (v[i] - dot) / l[i * d + i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-factored 3×3: `A = L·Lᵀ` with `L = [[2,0,0],[1,3,0],[−1,2,1]]`.
    #[test]
    fn factor_and_solve_a_known_matrix() {
        let l_want = [2.0, 0.0, 0.0, 1.0, 3.0, 0.0, -1.0, 2.0, 1.0];
        let mut a = [0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                a[i * 3 + j] = (0..3).map(|k| l_want[i * 3 + k] * l_want[j * 3 + k]).sum();
            }
        }
        let l = cholesky(&a, 3).unwrap();
        for (x, y) in l.iter().zip(&l_want) {
            assert!((x - y).abs() < 1e-12, "{l:?}");
        }
        // A·x = b for x = (1, −2, 0.5).
        let x = [1.0, -2.0, 0.5];
        let mut b: Vec<f64> = (0..3)
            .map(|i| (0..3).map(|j| a[i * 3 + j] * x[j]).sum())
            .collect();
        cholesky_solve(&l, 3, &mut b);
        for (got, want) in b.iter().zip(&x) {
            assert!((got - want).abs() < 1e-12);
        }
        // Not positive definite: no factor.
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }
}
