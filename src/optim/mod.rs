//! Optimizers: they update a module's parameters in place from one backward pass's
//! gradients. State (momentum buffers, moments) is keyed by parameter name.

mod adam;
mod schedule;
mod sgd;

pub use adam::{Adam, AdamConfig};
pub use schedule::{LrSchedule, Schedule};
pub use sgd::{Sgd, SgdConfig};

use crate::autograd::Gradients;
use crate::error::Result;
use crate::tensor::{Element, Tensor};

/// An optimizer's state as named flat buffers (for checkpoints).
pub type OptimizerState<T> = Vec<(String, Vec<T>)>;

/// One optimisation step over named parameters.
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
    /// Restores state saved by [`Optimizer::state`].
    fn load_state(&mut self, state: OptimizerState<T>) -> Result<()>;
}

/// Whether weight decay applies to a parameter: not to biases or normalisation scales and
/// shifts (every 1-D parameter), only to weight matrices and kernels.
pub fn decays(param: &Tensor<impl Element>) -> bool {
    param.ndim() > 1
}
