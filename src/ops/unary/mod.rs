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

use crate::autograd::{Op, Saved, UnaryFn};
use crate::tensor::{Element, Layout, Tensor};
use std::sync::Arc;

impl<T: Element> Tensor<T> {
    /// Applies `f` to every element and records it for backward.
    pub fn unary<F: UnaryFn<T> + 'static>(&self, f: F) -> Tensor<T> {
        // Statically dispatched loop (vectorisable); the trait object is only for backward.
        let data: Arc<Vec<T>> = Arc::new(self.values().iter().map(|&x| f.f(x)).collect());
        // The record keeps only what the derivative reads.
        let saves = f.saves();
        let op = Op::Unary {
            input: self.kept_if(saves == Saved::Input),
            output: (saves == Saved::Output).then(|| Arc::clone(&data)),
            f: Arc::new(f),
        };
        Tensor::from_op(data, Layout::contiguous(self.shape()), op)
    }
}
