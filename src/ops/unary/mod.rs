//! Elementwise unary ops, one file each: a [`UnaryFn`] (`f` and `df`) and its method.

mod abs;
mod affine;
mod clamp;
mod exp;
mod expm1;
mod log;
mod neg;
mod powf;
mod relu;
mod sigmoid;
mod softplus;
mod sqrt;
mod tanh;

pub use affine::Affine;

use crate::autograd::{Op, UnaryFn};
use crate::tensor::{Element, Tensor};
use std::sync::Arc;

impl<T: Element> Tensor<T> {
    /// Applies `f` to every element and records it for backward.
    pub fn unary<F: UnaryFn<T> + 'static>(&self, f: F) -> Tensor<T> {
        // Statically dispatched loop (vectorisable); the trait object is only for backward.
        let data = self.values().iter().map(|&x| f.f(x)).collect();
        let op = Op::Unary {
            input: self.clone(),
            f: Arc::new(f),
        };
        Tensor::from_op_vec(data, self.shape(), op)
    }
}
