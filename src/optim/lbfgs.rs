//! L-BFGS for full-batch problems in f64 (the last-layer refits of the reproduction): a
//! function of a flat parameter vector that returns its value and gradient, minimised to a
//! gradient-norm tolerance.
//!
//! Near the minimum the decrease of the value falls below its rounding error long before the
//! gradient reaches 1e-8, so a step is also accepted when the value has not measurably risen
//! and the gradient got smaller (a value-only Armijo test would stall there).

/// `q ↦ P⁻¹q` for a symmetric positive definite `P` (see [`minimize_lbfgs_preconditioned`]).
pub type Preconditioner<'a> = dyn Fn(&[f64]) -> Vec<f64> + 'a;

/// When to stop.
#[derive(Clone, Copy, Debug)]
pub struct LbfgsOptions {
    /// Stop when `‖∇f‖₂` is below this.
    pub gradient_tolerance: f64,
    /// Stop after this many iterations (each one or more evaluations).
    pub max_iterations: usize,
    /// Pairs `(s, y)` kept for the inverse-Hessian estimate.
    pub history: usize,
}

impl Default for LbfgsOptions {
    fn default() -> Self {
        LbfgsOptions {
            gradient_tolerance: 1e-8,
            max_iterations: 5000,
            history: 20,
        }
    }
}

/// Where the minimiser stopped.
#[derive(Clone, Debug)]
pub struct LbfgsResult {
    /// The final point.
    pub x: Vec<f64>,
    /// `f` there.
    pub value: f64,
    /// `‖∇f‖₂` there.
    pub gradient_norm: f64,
    /// Iterations taken.
    pub iterations: usize,
    /// Function evaluations.
    pub evaluations: usize,
    /// Whether the gradient tolerance was reached.
    pub converged: bool,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// Minimises `f` (returning value and gradient) from `x0`.
/// ```
/// use tensorgrad::optim::{minimize_lbfgs, LbfgsOptions};
///
/// // Rosenbrock's valley: minimum 0 at (1, 1).
/// let f = |x: &[f64]| {
///     let (a, b) = (x[0], x[1]);
///     let value = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
///     let grad = vec![-2.0 * (1.0 - a) - 400.0 * a * (b - a * a), 200.0 * (b - a * a)];
///     (value, grad)
/// };
/// let r = minimize_lbfgs(f, vec![-1.2, 1.0], &LbfgsOptions::default());
/// assert!(r.converged && (r.x[0] - 1.0).abs() < 1e-7 && (r.x[1] - 1.0).abs() < 1e-7);
/// ```
pub fn minimize_lbfgs(
    f: impl FnMut(&[f64]) -> (f64, Vec<f64>),
    x0: Vec<f64>,
    options: &LbfgsOptions,
) -> LbfgsResult {
    minimize_lbfgs_preconditioned(f, x0, options, None)
}

/// [`minimize_lbfgs`] whose initial inverse-Hessian estimate is `γ·P⁻¹` instead of `γ·I`:
/// `precondition(q)` returns `P⁻¹q` for a symmetric positive definite `P` close to the
/// Hessian (a block-diagonal Gauss–Newton matrix, say), which turns thousands of iterations
/// on an ill-conditioned problem into tens.
pub fn minimize_lbfgs_preconditioned(
    mut f: impl FnMut(&[f64]) -> (f64, Vec<f64>),
    x0: Vec<f64>,
    options: &LbfgsOptions,
    precondition: Option<&Preconditioner<'_>>,
) -> LbfgsResult {
    let apply = |q: &[f64]| -> Vec<f64> {
        match precondition {
            Some(p) => p(q),
            None => q.to_vec(),
        }
    };
    let mut x = x0;
    let (mut value, mut grad) = f(&x);
    let mut evaluations = 1;
    let mut history: Vec<(Vec<f64>, Vec<f64>, f64)> = Vec::new();
    let mut iterations = 0;
    while norm(&grad) >= options.gradient_tolerance && iterations < options.max_iterations {
        iterations += 1;
        // Two-loop recursion: d = −H·g.
        let mut q = grad.clone();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y, rho) in history.iter().rev() {
            let a = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(qi, yi)| *qi -= a * yi);
            alphas.push(a);
        }
        let first = if precondition.is_some() {
            1.0
        } else {
            1.0 / norm(&grad).max(1e-300)
        };
        let gamma = history
            .last()
            .map_or(first, |(s, y, _)| dot(s, y) / dot(y, &apply(y)).max(1e-300));
        let mut q: Vec<f64> = apply(&q);
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, y, rho), a) in history.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &q);
            q.iter_mut().zip(s).for_each(|(qi, si)| *qi += (a - b) * si);
        }
        let mut direction: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&grad, &direction);
        if slope >= 0.0 {
            // Not a descent direction (curvature went wrong): restart from steepest descent.
            history.clear();
            let scale = 1.0 / norm(&grad).max(1e-300);
            direction = grad.iter().map(|g| -g * scale).collect();
            if precondition.is_some() {
                direction = apply(&grad).iter().map(|g| -g).collect();
                if dot(&grad, &direction) >= 0.0 {
                    direction = grad.iter().map(|g| -g * scale).collect();
                }
            }
            slope = dot(&grad, &direction);
        }
        // Backtracking line search from the quasi-Newton step.
        let grad_norm = norm(&grad);
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..60 {
            let candidate: Vec<f64> = x
                .iter()
                .zip(&direction)
                .map(|(xi, di)| xi + step * di)
                .collect();
            let (v, g) = f(&candidate);
            evaluations += 1;
            let armijo = v <= value + 1e-4 * step * slope;
            let flat = v <= value + 1e-13 * value.abs().max(1e-300) && norm(&g) < grad_norm;
            if v.is_finite() && (armijo || flat) {
                accepted = Some((candidate, v, g));
                break;
            }
            step *= 0.5;
        }
        let Some((new_x, new_value, new_grad)) = accepted else {
            break; // no progress possible at this precision
        };
        let s: Vec<f64> = new_x.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = new_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > 1e-12 * norm(&s) * norm(&y) {
            if history.len() == options.history {
                history.remove(0);
            }
            history.push((s, y, 1.0 / sy));
        }
        x = new_x;
        value = new_value;
        grad = new_grad;
    }
    let gradient_norm = norm(&grad);
    LbfgsResult {
        x,
        value,
        gradient_norm,
        iterations,
        evaluations,
        converged: gradient_norm < options.gradient_tolerance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_an_ill_conditioned_quadratic_to_the_tolerance() {
        // f = ½ Σ c_i (x_i − i)², condition number 1e3.
        let c: Vec<f64> = (0..50).map(|i| 10f64.powf(3.0 * i as f64 / 49.0)).collect();
        let f = |x: &[f64]| {
            let v = x
                .iter()
                .zip(&c)
                .enumerate()
                .map(|(i, (xi, ci))| 0.5 * ci * (xi - i as f64).powi(2))
                .sum();
            let g = x
                .iter()
                .zip(&c)
                .enumerate()
                .map(|(i, (xi, ci))| ci * (xi - i as f64))
                .collect();
            (v, g)
        };
        let r = minimize_lbfgs(f, vec![0.0; 50], &LbfgsOptions::default());
        assert!(r.converged, "{r:?}");
        assert!(r.gradient_norm < 1e-8);
        for (i, xi) in r.x.iter().enumerate() {
            assert!((xi - i as f64).abs() < 1e-8, "x[{i}] = {xi}");
        }
    }

    #[test]
    fn a_good_preconditioner_cuts_the_iterations() {
        // Condition number 1e8: hopeless without, immediate with the exact diagonal.
        let c: Vec<f64> = (0..50).map(|i| 10f64.powf(8.0 * i as f64 / 49.0)).collect();
        let f = |x: &[f64]| {
            let v = x
                .iter()
                .zip(&c)
                .map(|(xi, ci)| 0.5 * ci * (xi - 1.0).powi(2))
                .sum();
            let g = x.iter().zip(&c).map(|(xi, ci)| ci * (xi - 1.0)).collect();
            (v, g)
        };
        let p = |q: &[f64]| {
            q.iter()
                .zip(&c)
                .map(|(qi, ci)| qi / ci)
                .collect::<Vec<f64>>()
        };
        let r = minimize_lbfgs_preconditioned(f, vec![0.0; 50], &LbfgsOptions::default(), Some(&p));
        assert!(r.converged && r.iterations <= 3, "{r:?}");
        let plain = minimize_lbfgs(
            f,
            vec![0.0; 50],
            &LbfgsOptions {
                max_iterations: 100,
                ..LbfgsOptions::default()
            },
        );
        assert!(!plain.converged);
    }

    #[test]
    fn logistic_regression_reaches_the_stationary_point() {
        // Non-separable 1-d logistic regression: the gradient vanishes at a finite point.
        let xs = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 0.3];
        let ys = [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0];
        let f = |p: &[f64]| {
            let (mut v, mut g) = (0.0, vec![0.0; 2]);
            for (x, y) in xs.iter().zip(&ys) {
                let z = p[0] * x + p[1];
                let s = 1.0 / (1.0 + (-z).exp());
                v += -(y * s.ln() + (1.0 - y) * (1.0 - s).ln());
                g[0] += (s - y) * x;
                g[1] += s - y;
            }
            (v, g)
        };
        let r = minimize_lbfgs(f, vec![0.0, 0.0], &LbfgsOptions::default());
        assert!(r.converged && r.gradient_norm < 1e-8, "{r:?}");
        // At the optimum Σ (s_i − y_i) = 0: the mean prediction equals the positive rate.
        let mean: f64 = xs
            .iter()
            .map(|x| 1.0 / (1.0 + (-(r.x[0] * x + r.x[1])).exp()))
            .sum::<f64>()
            / xs.len() as f64;
        assert!((mean - 0.5).abs() < 1e-9);
    }
}
