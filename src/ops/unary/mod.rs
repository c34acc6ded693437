//! Elementwise unary ops, one file each: a [`UnaryFn`] (`f` and `df`) and its method.

mod abs;
mod affine;
pub(crate) mod clamp;
mod exp;
mod expm1;
mod log;
mod neg;
mod powf;
pub(crate) mod relu;
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
    /// The built-in ones are methods (`exp`, `log`, `relu`, `sigmoid`, `tanh`, …); a new one is
    /// an [`UnaryFn`] — `f`, `df` and what `df` reads:
    ///
    /// ```
    /// use tensorgrad::autograd::{Saved, UnaryFn};
    /// use tensorgrad::{Element, Tensor};
    ///
    /// /// x³, whose derivative 3x² reads the input.
    /// struct Cube;
    /// impl<T: Element> UnaryFn<T> for Cube {
    ///     fn name(&self) -> &'static str { "cube" }
    ///     fn f(&self, x: T) -> T { x * x * x }
    ///     fn saves(&self) -> Saved { Saved::Input }
    ///     fn df(&self, x: T) -> T { T::from_f64(3.0) * x * x }
    /// }
    ///
    /// let x = Tensor::<f64>::from_vec(vec![1.0, -2.0], &[2])?.with_grad();
    /// let y = x.unary(Cube);
    /// assert_eq!(y.to_vec(), vec![1.0, -8.0]);
    /// let grads = y.sum_all().backward()?;
    /// assert_eq!(grads.get(&x).unwrap().to_vec(), vec![3.0, 12.0]);
    /// assert_eq!(x.exp().log().to_vec(), vec![1.0, -2.0]);
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn unary<F: UnaryFn<T> + 'static>(&self, f: F) -> Tensor<T> {
        // Statically dispatched loop (vectorisable); the trait object is only for backward.
        let data: Arc<Vec<T>> = Arc::new(crate::kernels::elementwise::map_elements(
            &self.values(),
            |x| f.f(x),
        ));
        // The record keeps only what the derivative reads.
        let saves = f.saves();
        let op = Op::Unary {
            input: self.kept_if(saves == Saved::Input),
            output: (saves == Saved::Output).then(|| crate::memory::SharedBuffer::new(&data)),
            f: Arc::new(f),
        };
        Tensor::from_op(data, Layout::contiguous(self.shape()), op)
    }
}
