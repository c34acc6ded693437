//! Adam and AdamW (PyTorch's `torch.optim.Adam` / `AdamW` update rules).

use super::{check_state_entry, decays, Optimizer, OptimizerState};
use crate::autograd::Gradients;
use crate::error::{Result, TensorError};
use crate::tensor::{Element, Tensor};
use std::collections::HashMap;

/// Hyper-parameters of [`Adam`].
#[derive(Clone, Debug, PartialEq)]
pub struct AdamConfig {
    /// `β₁`, decay of the first moment.
    pub beta1: f64,
    /// `β₂`, decay of the second moment.
    pub beta2: f64,
    /// Added to `√v̂`.
    pub eps: f64,
    /// Weight decay of multi-dimensional parameters.
    pub weight_decay: f64,
    /// Decoupled weight decay (AdamW: `p ← p − lr·λ·p`) instead of an L2 term in the gradient.
    pub decoupled: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }
}

/// Per-parameter state: step count, first and second moments.
#[derive(Clone, Debug, Default, PartialEq)]
struct Moments<T> {
    step: u64,
    m: Vec<T>,
    v: Vec<T>,
}

/// Adam, or AdamW with `decoupled`: `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
/// `p ← p − lr·m̂/(√v̂ + ε)` with bias-corrected `m̂`, `v̂`.
pub struct Adam<T: Element> {
    /// Hyper-parameters.
    pub config: AdamConfig,
    state: HashMap<String, Moments<T>>,
}

impl<T: Element> Adam<T> {
    /// An optimizer with empty state.
    pub fn new(config: AdamConfig) -> Self {
        Adam {
            config,
            state: HashMap::new(),
        }
    }
}

impl<T: Element> Optimizer<T> for Adam<T> {
    fn step(
        &mut self,
        params: Vec<(String, &mut Tensor<T>)>,
        grads: &Gradients<T>,
        lr: f64,
    ) -> Result<()> {
        let c = self.config.clone();
        for (name, p) in params {
            let Some(grad) = grads.get(p) else { continue };
            let grad = grad.values();
            let wd = if decays(p) { c.weight_decay } else { 0.0 };
            let s = self.state.entry(name).or_default();
            if s.m.is_empty() {
                s.m = vec![T::zero(); grad.len()];
                s.v = vec![T::zero(); grad.len()];
            }
            s.step += 1;
            let bc1 = 1.0 - c.beta1.powi(s.step as i32);
            let bc2 = 1.0 - c.beta2.powi(s.step as i32);
            let (b1, b2) = (T::from_f64(c.beta1), T::from_f64(c.beta2));
            let (one, eps) = (T::one(), T::from_f64(c.eps));
            let (step_size, bc2_sqrt) = (T::from_f64(lr / bc1), T::from_f64(bc2.sqrt()));
            let (l2, shrink) = if c.decoupled {
                (T::zero(), T::from_f64(1.0 - lr * wd))
            } else {
                (T::from_f64(wd), one)
            };
            p.update_data(|p| {
                for (((p, &g), m), v) in p
                    .iter_mut()
                    .zip(grad.iter())
                    .zip(s.m.iter_mut())
                    .zip(s.v.iter_mut())
                {
                    let g = g + l2 * *p;
                    *m = b1 * *m + (one - b1) * g;
                    *v = b2 * *v + (one - b2) * g * g;
                    *p = *p * shrink - step_size * *m / (v.sqrt() / bc2_sqrt + eps);
                }
            });
        }
        Ok(())
    }

    fn state_entries_for(&self, name: &str) -> Vec<String> {
        ["step", "exp_avg", "exp_avg_sq"]
            .map(|kind| format!("{kind}.{name}"))
            .to_vec()
    }

    fn state(&self) -> OptimizerState<T> {
        let mut out = Vec::new();
        for (name, s) in &self.state {
            out.push((format!("step.{name}"), vec![T::from_f64(s.step as f64)]));
            out.push((format!("exp_avg.{name}"), s.m.clone()));
            out.push((format!("exp_avg_sq.{name}"), s.v.clone()));
        }
        out
    }

    fn load_state(&mut self, state: OptimizerState<T>, params: &[(String, usize)]) -> Result<()> {
        let mut loaded: HashMap<String, _> = HashMap::new();
        for (key, values) in state {
            let bad = || TensorError::InvalidArgument {
                op: "Adam::load_state",
                reason: format!("unexpected entry {key:?}"),
            };
            let (kind, name) = key.split_once('.').ok_or_else(bad)?;
            let per_param = |n: usize| if kind == "step" { 1 } else { n };
            check_state_entry(
                "Adam::load_state",
                &key,
                name,
                values.len(),
                params,
                per_param,
            )?;
            let s: &mut Moments<T> = loaded.entry(name.to_string()).or_default();
            match kind {
                "step" => s.step = values[0].as_f64() as u64,
                "exp_avg" => s.m = values,
                "exp_avg_sq" => s.v = values,
                _ => return Err(bad()),
            }
        }
        self.state = loaded;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: AdamConfig, p0: f64, g: f64, shape: &[usize], steps: usize, lr: f64) -> f64 {
        let mut p = Tensor::<f64>::full(shape, p0).with_grad();
        let mut opt = Adam::new(config);
        for _ in 0..steps {
            let grads = p.mul_scalar(g).sum_all().backward().unwrap();
            opt.step(vec![("p".into(), &mut p)], &grads, lr).unwrap();
        }
        p.to_vec()[0]
    }

    #[test]
    fn adam_steps_match_hand_computation() {
        // Constant gradient g: m̂ = g and v̂ = g² at every step, so each step moves lr·g/(|g|+ε).
        let p = run(AdamConfig::default(), 1.0, 0.5, &[1], 3, 0.1);
        let step = 0.1 * 0.5 / (0.5 + 1e-8);
        assert!((p - (1.0 - 3.0 * step)).abs() < 1e-12, "{p}");
    }

    #[test]
    fn adam_l2_and_adamw_decoupled_decay() {
        // Adam + L2 (matrix param): g = 0.5 + 0.1·1 = 0.6 on the first step; the move is lr·g/(g+ε).
        let cfg = AdamConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        let p = run(cfg, 1.0, 0.5, &[1, 1], 1, 0.1);
        assert!((p - (1.0 - 0.1 * 0.6 / (0.6 + 1e-8))).abs() < 1e-12, "{p}");
        // AdamW: p ← p(1 − lr·λ) − lr·m̂/(√v̂+ε) = 0.99 − 0.1·0.5/(0.5+ε).
        let cfg = AdamConfig {
            weight_decay: 0.1,
            decoupled: true,
            ..Default::default()
        };
        let p = run(cfg.clone(), 1.0, 0.5, &[1, 1], 1, 0.1);
        assert!((p - (0.99 - 0.1 * 0.5 / (0.5 + 1e-8))).abs() < 1e-12, "{p}");
        // Biases are not decayed.
        let p = run(cfg, 1.0, 0.5, &[1], 1, 0.1);
        assert!((p - (1.0 - 0.1 * 0.5 / (0.5 + 1e-8))).abs() < 1e-12, "{p}");
    }

    #[test]
    fn adam_two_steps_with_changing_gradient() {
        // Loss p²: g₁ = 2, then g₂ = 2·p₁.
        let mut p = Tensor::<f64>::full(&[1], 1.0).with_grad();
        let mut opt = Adam::new(AdamConfig::default());
        let lr = 0.1;
        for _ in 0..2 {
            let g = p.square().sum_all().backward().unwrap();
            opt.step(vec![("p".into(), &mut p)], &g, lr).unwrap();
        }
        let p1 = 1.0 - lr * 2.0 / (2.0 + 1e-8);
        let g2 = 2.0 * p1;
        let m = 0.9 * 0.1 * 2.0 + 0.1 * g2;
        let v = 0.999 * 0.001 * 4.0 + 0.001 * g2 * g2;
        let (mh, vh) = (m / (1.0 - 0.81), v / (1.0 - 0.999f64.powi(2)));
        let want = p1 - lr * mh / (vh.sqrt() + 1e-8);
        assert!((p.to_vec()[0] - want).abs() < 1e-12);
    }
}
