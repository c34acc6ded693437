//! Optimizers: they update a module's parameters in place from one backward pass's
//! gradients. State (momentum buffers, moments) is keyed by parameter name.

mod adam;
mod lbfgs;
pub mod linalg;
mod schedule;
mod sgd;

pub use adam::{Adam, AdamConfig};
pub use lbfgs::{
    minimize_lbfgs, minimize_lbfgs_preconditioned, LbfgsOptions, LbfgsResult, Preconditioner,
};
pub use schedule::{LrSchedule, Schedule};
pub use sgd::{Sgd, SgdConfig};

use crate::autograd::Gradients;
use crate::error::Result;
use crate::tensor::{Element, Tensor};
use crate::text::keyword_enum;

/// An optimizer's state as named flat buffers (for checkpoints).
pub type OptimizerState<T> = Vec<(String, Vec<T>)>;

/// One optimisation step over named parameters.
/// ```
/// use tensorgrad::optim::{Optimizer, Sgd, SgdConfig};
/// use tensorgrad::Tensor;
///
/// // Minimise (w − 3)² with SGD.
/// let mut w = Tensor::<f64>::zeros(&[1]).with_grad();
/// let mut opt = Sgd::new(SgdConfig { momentum: 0.0, nesterov: false, weight_decay: 0.0 });
/// for _ in 0..100 {
///     let loss = w.add_scalar(-3.0).powf(2.0).sum_all();
///     let grads = loss.backward()?;
///     opt.step(vec![("w".to_string(), &mut w)], &grads, 0.1)?;
/// }
/// assert!((w.item() - 3.0).abs() < 1e-6);
/// # Ok::<(), tensorgrad::TensorError>(())
/// ```
pub trait Optimizer<T: Element>: Send {
    /// Updates every parameter that has a gradient in `grads`, with learning rate `lr`.
    fn step(
        &mut self,
        params: Vec<(String, &mut Tensor<T>)>,
        grads: &Gradients<T>,
        lr: f64,
    ) -> Result<()>;
    /// The state to checkpoint (momentum buffers, moments, step counts), by name.
    fn state(&self) -> OptimizerState<T>;
    /// Restores state saved by [`Optimizer::state`], checking every entry against the
    /// parameters it belongs to (`params`: name and element count): an entry for an
    /// unknown parameter, or of the wrong length, is an error and nothing is loaded.
    fn load_state(&mut self, state: OptimizerState<T>, params: &[(String, usize)]) -> Result<()>;
    /// The names of the state entries [`Optimizer::state`] holds for parameter `name` once
    /// it has been updated (none for SGD without momentum): a resume checks that a
    /// checkpoint of a run that has taken steps carries them, rather than silently
    /// restarting momentum or moments from zero.
    fn state_entries_for(&self, name: &str) -> Vec<String>;
}

keyword_enum! {
    /// The optimizers a training run can use.
    pub enum OptimizerKind {
        /// [`Sgd`], with momentum and optionally Nesterov.
        Sgd = "sgd",
        /// [`Adam`] with L2 weight decay added to the gradient.
        Adam = "adam",
        /// [`Adam`] with decoupled weight decay (AdamW).
        AdamW = "adamw",
    }
}

/// The hyper-parameters of an optimizer that a training run sets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerSettings {
    /// Which optimizer.
    pub kind: OptimizerKind,
    /// SGD momentum.
    pub momentum: f64,
    /// SGD: Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay of weights (never of biases or normalisation parameters).
    pub weight_decay: f64,
}

impl OptimizerSettings {
    /// The optimizer, with empty state.
    pub fn build<T: Element>(&self) -> Box<dyn Optimizer<T>> {
        match self.kind {
            OptimizerKind::Sgd => Box::new(Sgd::new(SgdConfig {
                momentum: self.momentum,
                nesterov: self.nesterov,
                weight_decay: self.weight_decay,
            })),
            OptimizerKind::Adam | OptimizerKind::AdamW => Box::new(Adam::new(AdamConfig {
                weight_decay: self.weight_decay,
                decoupled: self.kind == OptimizerKind::AdamW,
                ..Default::default()
            })),
        }
    }
}

/// Checks that state entry `key` for parameter `name` has `len` values, as `expected(numel)`
/// says for a parameter of `numel` elements.
pub(crate) fn check_state_entry(
    op: &'static str,
    key: &str,
    name: &str,
    len: usize,
    params: &[(String, usize)],
    expected: impl Fn(usize) -> usize,
) -> Result<()> {
    let Some(&(_, numel)) = params.iter().find(|(n, _)| n == name) else {
        return Err(crate::error::TensorError::InvalidArgument {
            op,
            reason: format!("state entry {key:?} is for no parameter of the model"),
        });
    };
    if len != expected(numel) {
        return Err(crate::error::TensorError::InvalidArgument {
            op,
            reason: format!(
                "state entry {key:?} has {len} values, parameter {name} needs {}",
                expected(numel)
            ),
        });
    }
    Ok(())
}

/// Whether weight decay applies to a parameter: not to biases or normalisation scales and
/// shifts (every 1-D parameter), only to weight matrices and kernels.
pub fn decays(param: &Tensor<impl Element>) -> bool {
    param.ndim() > 1
}
