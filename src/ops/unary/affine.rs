//! `a·x + b` for constants `a`, `b`: scalar multiply and add; derivative `a`.

use crate::autograd::{Saved, UnaryFn};
use crate::tensor::{Element, Tensor};

/// The affine map `x ↦ scale·x + shift`.
pub struct Affine<T> {
    /// Multiplier.
    pub scale: T,
    /// Offset.
    pub shift: T,
}

impl<T: Element> UnaryFn<T> for Affine<T> {
    fn name(&self) -> &'static str {
        "affine"
    }
    fn f(&self, x: T) -> T {
        self.scale * x + self.shift
    }
    fn saves(&self) -> Saved {
        Saved::Nothing
    }
    fn df(&self, _: T) -> T {
        self.scale
    }
}

impl<T: Element> Tensor<T> {
    /// Elementwise `scale·x + shift`.
    pub fn affine(&self, scale: f64, shift: f64) -> Tensor<T> {
        self.unary(Affine {
            scale: T::from_f64(scale),
            shift: T::from_f64(shift),
        })
    }

    /// Elementwise `x·c`.
    pub fn mul_scalar(&self, c: f64) -> Tensor<T> {
        self.affine(c, 0.0)
    }

    /// Elementwise `x + c`.
    pub fn add_scalar(&self, c: f64) -> Tensor<T> {
        self.affine(1.0, c)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn affine_values_and_gradcheck() {
        let x = rand_input(&[3, 2], 12);
        let want: Vec<f64> = x.to_vec().iter().map(|v| 2.5 * v - 1.0).collect();
        assert_close(&x.affine(2.5, -1.0).to_vec(), &want, 1e-15);
        assert_gradcheck(|t| Ok(t[0].affine(-3.0, 0.5)), &[x]);
    }
}
