//! Optimizers: they update a module's parameters in place from one backward pass's
//! gradients. State (momentum buffers, moments) is keyed by parameter name.

mod sgd;

pub use sgd::{Sgd, SgdConfig};

use crate::autograd::Gradients;
use crate::error::Result;
use crate::tensor::{Element, Tensor};

/// One optimisation step over named parameters.
pub trait Optimizer<T: Element> {
    /// Updates every parameter that has a gradient in `grads`, with learning rate `lr`.
    fn step(
        &mut self,
        params: Vec<(String, &mut Tensor<T>)>,
        grads: &Gradients<T>,
        lr: f64,
    ) -> Result<()>;
}

/// Whether weight decay applies to a parameter: not to biases or normalisation scales and
/// shifts (every 1-D parameter), only to weight matrices and kernels.
pub fn decays(param: &Tensor<impl Element>) -> bool {
    param.ndim() > 1
}
