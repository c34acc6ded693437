//! Stochastic gradient descent with momentum, Nesterov momentum and weight decay,
//! following PyTorch's `torch.optim.SGD` update rule.

use super::{check_state_entry, decays, Optimizer, OptimizerState};
use crate::autograd::Gradients;
use crate::error::{Result, TensorError};
use crate::tensor::{Element, Tensor};
use rayon::prelude::*;
use std::collections::HashMap;

/// Hyper-parameters of [`Sgd`].
#[derive(Clone, Debug, PartialEq)]
pub struct SgdConfig {
    /// Momentum factor (0 for plain SGD).
    pub momentum: f64,
    /// Use Nesterov momentum.
    pub nesterov: bool,
    /// L2 penalty added to the gradient of multi-dimensional parameters.
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

/// SGD: `g = ∇ + λp`; `b = μb + g` (b = g on the first step);
/// `p −= lr·(g + μb)` with Nesterov, else `p −= lr·b`.
pub struct Sgd<T: Element> {
    /// Hyper-parameters.
    pub config: SgdConfig,
    /// Momentum buffer of every parameter, by name.
    pub momentum_buffers: HashMap<String, Vec<T>>,
}

impl<T: Element> Sgd<T> {
    /// An optimizer with empty state.
    pub fn new(config: SgdConfig) -> Self {
        Sgd {
            config,
            momentum_buffers: HashMap::new(),
        }
    }
}

/// One piece of the momentum update: `g = ∇ + λp`, `b = μb + g` (`b = g` on the `FIRST`
/// step), `p −= lr·(g + μb)` with `NESTEROV`, else `p −= lr·b`. The flags are constants so
/// that each case is its own loop, which the compiler vectorises: with the two tests
/// inside one loop it ran scalar, 0.6 ms of LeNet's 11.8 ms train step (1 thread).
fn momentum_update<T: Element, const FIRST: bool, const NESTEROV: bool>(
    p: &mut [T],
    grad: &[T],
    buf: &mut [T],
    (lr, mu, wd): (T, T, T),
) {
    for ((p, &g), b) in p.iter_mut().zip(grad).zip(buf.iter_mut()) {
        let g = g + wd * *p;
        *b = if FIRST { g } else { mu * *b + g };
        let step = if NESTEROV { g + mu * *b } else { *b };
        *p = *p - lr * step;
    }
}

impl<T: Element> Optimizer<T> for Sgd<T> {
    fn step(
        &mut self,
        params: Vec<(String, &mut Tensor<T>)>,
        grads: &Gradients<T>,
        lr: f64,
    ) -> Result<()> {
        let c = &self.config;
        let (lr, mu) = (T::from_f64(lr), T::from_f64(c.momentum));
        for (name, p) in params {
            let Some(grad) = grads.get(p) else { continue };
            let grad = grad.values();
            let wd = T::from_f64(if decays(p) { c.weight_decay } else { 0.0 });
            let buf = if c.momentum != 0.0 {
                Some(self.momentum_buffers.entry(name).or_default())
            } else {
                None
            };
            let nesterov = c.nesterov;
            // Elementwise, in pieces on the rayon pool (the update of a large layer is
            // memory-bound): the same result on any thread count.
            let piece = crate::kernels::elementwise::PARALLEL_ELEMENTS;
            p.update_data(|p| match buf {
                None => p
                    .par_chunks_mut(piece)
                    .zip(grad.par_chunks(piece))
                    .for_each(|(p, grad)| {
                        for (p, &g) in p.iter_mut().zip(grad) {
                            *p = *p - lr * (g + wd * *p);
                        }
                    }),
                Some(buf) => {
                    let first = buf.is_empty();
                    if first {
                        buf.resize(p.len(), T::zero());
                    }
                    let update = match (first, nesterov) {
                        (true, true) => momentum_update::<T, true, true>,
                        (true, false) => momentum_update::<T, true, false>,
                        (false, true) => momentum_update::<T, false, true>,
                        (false, false) => momentum_update::<T, false, false>,
                    };
                    p.par_chunks_mut(piece)
                        .zip(grad.par_chunks(piece))
                        .zip(buf.par_chunks_mut(piece))
                        .for_each(|((p, grad), buf)| update(p, grad, buf, (lr, mu, wd)));
                }
            });
        }
        Ok(())
    }

    fn state(&self) -> OptimizerState<T> {
        self.momentum_buffers
            .iter()
            .map(|(name, b)| (format!("momentum_buffer.{name}"), b.clone()))
            .collect()
    }

    fn state_entries_for(&self, name: &str) -> Vec<String> {
        if self.config.momentum == 0.0 {
            Vec::new()
        } else {
            vec![format!("momentum_buffer.{name}")]
        }
    }

    fn load_state(&mut self, state: OptimizerState<T>, params: &[(String, usize)]) -> Result<()> {
        let mut buffers = HashMap::new();
        for (key, values) in state {
            let name = key.strip_prefix("momentum_buffer.").ok_or_else(|| {
                TensorError::InvalidArgument {
                    op: "Sgd::load_state",
                    reason: format!("unexpected entry {key:?}"),
                }
            })?;
            check_state_entry("Sgd::load_state", &key, name, values.len(), params, |n| n)?;
            buffers.insert(name.to_string(), values);
        }
        self.momentum_buffers = buffers;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parameter `p`, loss `Σ c·p` so the gradient is the constant `c`.
    fn run(
        config: SgdConfig,
        p0: &[f64],
        c: &[f64],
        shape: &[usize],
        steps: usize,
        lr: f64,
    ) -> Vec<f64> {
        let mut p = Tensor::<f64>::from_vec(p0.to_vec(), shape)
            .unwrap()
            .with_grad();
        let cst = Tensor::<f64>::from_vec(c.to_vec(), shape).unwrap();
        let mut opt = Sgd::new(config);
        for _ in 0..steps {
            let g = p.mul(&cst).unwrap().sum_all().backward().unwrap();
            opt.step(vec![("p".into(), &mut p)], &g, lr).unwrap();
        }
        p.to_vec()
    }

    #[test]
    fn a_large_parameter_updates_piecewise_as_the_formula_on_any_thread_count() {
        // Several parallel pieces and a ragged last one; momentum with weight decay.
        let n = 3 * crate::kernels::elementwise::PARALLEL_ELEMENTS + 5;
        let p0: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
        let c: Vec<f64> = (0..n).map(|i| (i as f64 * 0.11).cos()).collect();
        let cfg = SgdConfig {
            momentum: 0.9,
            weight_decay: 0.01,
            ..Default::default()
        };
        let (lr, mu, wd) = (0.1, 0.9, 0.01);
        // Two steps by the formula: b1 = g1, b2 = μ·b1 + g2, with g = c + λp.
        let want: Vec<f64> = p0
            .iter()
            .zip(&c)
            .map(|(&p, &c)| {
                let b1 = c + wd * p;
                let p1 = p - lr * b1;
                let b2 = mu * b1 + (c + wd * p1);
                p1 - lr * b2
            })
            .collect();
        for threads in [1, 2, 3] {
            let got = crate::train::with_threads(Some(threads), || {
                run(cfg.clone(), &p0, &c, &[n, 1], 2, lr)
            })
            .unwrap();
            assert!(got == want, "{threads} threads");
        }
    }

    #[test]
    fn plain_sgd() {
        let p = run(
            SgdConfig::default(),
            &[1.0, 2.0],
            &[0.5, -1.0],
            &[2],
            2,
            0.1,
        );
        assert!(
            (p[0] - 0.9).abs() < 1e-15 && (p[1] - 2.2).abs() < 1e-15,
            "{p:?}"
        );
    }

    #[test]
    fn momentum_matches_hand_computation() {
        let cfg = SgdConfig {
            momentum: 0.9,
            ..Default::default()
        };
        // g = 1 each step; b1 = 1, b2 = 1.9, b3 = 2.71; p = 1 − 0.1·(1 + 1.9 + 2.71).
        let p = run(cfg, &[1.0], &[1.0], &[1], 3, 0.1)[0];
        assert!((p - (1.0 - 0.561)).abs() < 1e-12, "{p}");
    }

    #[test]
    fn nesterov_matches_hand_computation() {
        let cfg = SgdConfig {
            momentum: 0.9,
            nesterov: true,
            ..Default::default()
        };
        // step 1: b=1, update g+μb = 1.9; step 2: b=1.9, update 1 + 0.9·1.9 = 2.71.
        let p = run(cfg, &[1.0], &[1.0], &[1], 2, 0.1)[0];
        assert!((p - (1.0 - 0.1 * (1.9 + 2.71))).abs() < 1e-12, "{p}");
    }

    #[test]
    fn weight_decay_skips_one_dimensional_parameters() {
        let cfg = SgdConfig {
            weight_decay: 0.5,
            ..Default::default()
        };
        // Matrix: g = 1 + 0.5·2 = 2 → 2 − 0.1·2 = 1.8. Vector (bias): g = 1 → 1.9.
        assert_eq!(run(cfg.clone(), &[2.0], &[1.0], &[1, 1], 1, 0.1), vec![1.8]);
        assert_eq!(run(cfg, &[2.0], &[1.0], &[1], 1, 0.1), vec![1.9]);
    }
}
