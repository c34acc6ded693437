//! Finite-difference gradient checking in f64, with PyTorch's semantics.
//!
//! The slow mode compares the full Jacobian: one backward pass per output element
//! against central differences `(f(x+ε) − f(x−ε)) / 2ε`, one input element at a time.
//! The fast mode compares random projections `vᵀ·J·u` per input, one backward pass and
//! two forward passes per input. An entry passes when
//! `|analytic − numeric| ≤ atol + rtol·|numeric|`.

use super::no_grad;
use crate::error::Result as TensorResult;
use crate::error::TensorError;
use crate::tensor::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::fmt;

/// Step and tolerances of a gradient check.
#[derive(Clone, Debug)]
pub struct GradcheckOptions {
    /// Central-difference step.
    pub eps: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (relative to the numeric value).
    pub rtol: f64,
}

impl Default for GradcheckOptions {
    /// PyTorch's defaults: eps 1e-6, atol 1e-5, rtol 1e-3.
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            atol: 1e-5,
            rtol: 1e-3,
        }
    }
}

/// The first Jacobian entry (or projection) that failed the check.
#[derive(Clone, Debug, PartialEq)]
pub struct GradcheckFailure {
    /// Which input (position in the slice passed to gradcheck).
    pub input: usize,
    /// Multi-index of the input element; empty in fast mode (a projection over all).
    pub element: Vec<usize>,
    /// Multi-index of the output element; empty in fast mode.
    pub output: Vec<usize>,
    /// Value from backward.
    pub analytic: f64,
    /// Value from central differences.
    pub numeric: f64,
    /// How many entries failed in all.
    pub failures: usize,
}

/// Why a gradient check did not pass.
#[derive(Debug)]
pub enum GradcheckError {
    /// Analytic and numeric derivatives disagree.
    Mismatch(GradcheckFailure),
    /// The checked function or backward itself failed.
    Op(TensorError),
    /// No input requires grad, so there is nothing to check (PyTorch raises here too).
    NothingToCheck,
}

impl fmt::Display for GradcheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GradcheckError::Mismatch(m) if m.element.is_empty() => write!(
                f,
                "gradcheck (fast): input {}: projection vᵀJu analytic {:.10e} vs numeric {:.10e}",
                m.input, m.analytic, m.numeric
            ),
            GradcheckError::Mismatch(m) => write!(
                f,
                "gradcheck: input {} element {:?} (output {:?}): analytic {:.10e} vs numeric {:.10e} ({} entries failed)",
                m.input, m.element, m.output, m.analytic, m.numeric, m.failures
            ),
            GradcheckError::Op(e) => write!(f, "gradcheck: the function failed: {e}"),
            GradcheckError::NothingToCheck => write!(
                f,
                "gradcheck: no input requires grad; mark the inputs to check with with_grad()"
            ),
        }
    }
}

impl std::error::Error for GradcheckError {}

impl From<TensorError> for GradcheckError {
    fn from(e: TensorError) -> Self {
        GradcheckError::Op(e)
    }
}

type Func<'a> = dyn Fn(&[Tensor<f64>]) -> TensorResult<Tensor<f64>> + 'a;

/// Row-major multi-index of flat position `i` in `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        idx[d] = i % shape[d];
        i /= shape[d];
    }
    idx
}

/// Evaluates `f` without recording, with input `which` replaced by `x0 + step`.
fn eval_shifted(
    f: &Func<'_>,
    inputs: &[Tensor<f64>],
    which: usize,
    x0: &[f64],
    step: &dyn Fn(usize) -> f64,
) -> TensorResult<Vec<f64>> {
    let shifted: Vec<f64> = x0.iter().enumerate().map(|(j, &v)| v + step(j)).collect();
    let mut args: Vec<Tensor<f64>> = inputs.iter().map(|t| t.detach()).collect();
    args[which] = Tensor::from_vec(shifted, inputs[which].shape())?;
    no_grad(|| Ok(f(&args)?.to_vec()))
}

/// The gradients of every input for output seed `seed`, on a fresh graph.
fn vjp(f: &Func<'_>, inputs: &[Tensor<f64>], seed: &[f64]) -> TensorResult<Vec<Vec<f64>>> {
    // Fresh leaves each time: backward frees the graph it consumes.
    let args: Vec<Tensor<f64>> = inputs
        .iter()
        .map(|t| {
            let leaf = Tensor::from_vec(t.to_vec(), t.shape()).expect("same shape");
            if t.requires_grad() {
                leaf.with_grad()
            } else {
                leaf
            }
        })
        .collect();
    let out = f(&args)?;
    let grads = if out.requires_grad() {
        Some(out.backward_with(&Tensor::from_vec(seed.to_vec(), out.shape())?)?)
    } else {
        None
    };
    Ok(args
        .iter()
        .map(|a| {
            grads
                .as_ref()
                .and_then(|g| g.get(a))
                .map(|g| g.to_vec())
                .unwrap_or_else(|| vec![0.0; a.numel()])
        })
        .collect())
}

/// An error unless at least one input requires grad.
fn check_some_input_requires_grad(inputs: &[Tensor<f64>]) -> Result<(), GradcheckError> {
    if inputs.iter().any(|t| t.requires_grad()) {
        Ok(())
    } else {
        Err(GradcheckError::NothingToCheck)
    }
}

fn within(analytic: f64, numeric: f64, o: &GradcheckOptions) -> bool {
    (analytic - numeric).abs() <= o.atol + o.rtol * numeric.abs()
}

/// Checks the full Jacobian of `f` with respect to every input that requires grad; an
/// error when none does.
/// ```
/// use tensorgrad::{gradcheck, GradcheckOptions, Tensor};
///
/// let x = Tensor::<f64>::from_vec(vec![0.3, -1.2, 2.0], &[3])?.with_grad();
/// // Analytic gradients of softplus(x)·x against central differences.
/// let f = |t: &[Tensor<f64>]| t[0].softplus().mul(&t[0]);
/// assert!(gradcheck(f, &[x.clone()], &GradcheckOptions::default()).is_ok());
/// // With no input requiring grad there is nothing to check: an error, as in PyTorch.
/// assert!(gradcheck(f, &[x.detach()], &GradcheckOptions::default()).is_err());
/// # Ok::<(), tensorgrad::TensorError>(())
/// ```
pub fn gradcheck(
    f: impl Fn(&[Tensor<f64>]) -> TensorResult<Tensor<f64>>,
    inputs: &[Tensor<f64>],
    options: &GradcheckOptions,
) -> Result<(), GradcheckError> {
    check_some_input_requires_grad(inputs)?;
    let f: &Func<'_> = &f;
    let out_shape = no_grad(|| f(inputs))?.shape().to_vec();
    let n_out: usize = out_shape.iter().product();
    // Analytic Jacobian, one row (output element) per backward pass.
    let mut rows = Vec::with_capacity(n_out);
    for o in 0..n_out {
        let mut seed = vec![0.0; n_out];
        seed[o] = 1.0;
        rows.push(vjp(f, inputs, &seed)?);
    }
    let mut first: Option<GradcheckFailure> = None;
    let mut failures = 0;
    for (i, x) in inputs.iter().enumerate() {
        if !x.requires_grad() {
            continue;
        }
        let x0 = x.to_vec();
        let eps = options.eps;
        for (e, _) in x0.iter().enumerate() {
            let plus = eval_shifted(f, inputs, i, &x0, &|j| if j == e { eps } else { 0.0 })?;
            let minus = eval_shifted(f, inputs, i, &x0, &|j| if j == e { -eps } else { 0.0 })?;
            for o in 0..n_out {
                let numeric = (plus[o] - minus[o]) / (2.0 * eps);
                let analytic = rows[o][i][e];
                if !within(analytic, numeric, options) {
                    failures += 1;
                    first.get_or_insert_with(|| GradcheckFailure {
                        input: i,
                        element: unravel(e, x.shape()),
                        output: unravel(o, &out_shape),
                        analytic,
                        numeric,
                        failures: 0,
                    });
                }
            }
        }
    }
    match first {
        Some(mut m) => {
            m.failures = failures;
            Err(GradcheckError::Mismatch(m))
        }
        None => Ok(()),
    }
}

/// Checks random projections `vᵀ·J·u` per input (PyTorch's fast mode), seeded by `seed`.
pub fn gradcheck_fast(
    f: impl Fn(&[Tensor<f64>]) -> TensorResult<Tensor<f64>>,
    inputs: &[Tensor<f64>],
    options: &GradcheckOptions,
    seed: u64,
) -> Result<(), GradcheckError> {
    check_some_input_requires_grad(inputs)?;
    let f: &Func<'_> = &f;
    let mut rng = StdRng::seed_from_u64(seed);
    let out_shape = no_grad(|| f(inputs))?.shape().to_vec();
    let v = Tensor::<f64>::normal(&out_shape, 0.0, 1.0, &mut rng).to_vec();
    let grads = vjp(f, inputs, &v)?;
    for (i, x) in inputs.iter().enumerate() {
        if !x.requires_grad() {
            continue;
        }
        let u = Tensor::<f64>::normal(x.shape(), 0.0, 1.0, &mut rng).to_vec();
        let analytic: f64 = grads[i].iter().zip(&u).map(|(g, u)| g * u).sum();
        let x0 = x.to_vec();
        let eps = options.eps;
        let plus = eval_shifted(f, inputs, i, &x0, &|j| eps * u[j])?;
        let minus = eval_shifted(f, inputs, i, &x0, &|j| -eps * u[j])?;
        let numeric: f64 = plus
            .iter()
            .zip(&minus)
            .zip(&v)
            .map(|((p, m), v)| v * (p - m) / (2.0 * eps))
            .sum();
        if !within(analytic, numeric, options) {
            return Err(GradcheckError::Mismatch(GradcheckFailure {
                input: i,
                element: vec![],
                output: vec![],
                analytic,
                numeric,
                failures: 1,
            }));
        }
    }
    Ok(())
}
