//! tensorgrad: a from-scratch deep-learning framework for CPU training.
//!
//! - [`tensor`]: the [`Tensor`] type (f32 or f64), storage and views;
//! - [`autograd`]: reverse-mode autodiff, `no_grad`, and [`gradcheck`];
//! - [`ops`]: the differentiable operations, one file per op or op family.
//!
//! See `ARCHITECTURE.md` for a guided tour of the internals.

pub mod autograd;
pub mod data;
pub mod error;
pub mod loss;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod tensor;
pub mod text;
pub mod train;

#[cfg(test)]
pub(crate) mod testing;

pub use autograd::{
    gradcheck, gradcheck_fast, no_grad, GradcheckError, GradcheckOptions, Gradients, NoGradGuard,
};
pub use error::{Result, TensorError};
pub use tensor::{Element, Tensor, TensorId};
