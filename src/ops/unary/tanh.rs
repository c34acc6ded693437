//! `tanh x`; derivative `1 − tanh²x`, read from the output.

use crate::autograd::{Saved, UnaryFn};
use crate::tensor::{Element, Tensor};

struct Tanh;

impl<T: Element> UnaryFn<T> for Tanh {
    fn name(&self) -> &'static str {
        "tanh"
    }
    fn f(&self, x: T) -> T {
        x.tanh()
    }
    fn saves(&self) -> Saved {
        Saved::Output
    }
    fn df(&self, y: T) -> T {
        T::one() - y * y
    }
}

impl<T: Element> Tensor<T> {
    /// Elementwise hyperbolic tangent.
    pub fn tanh(&self) -> Tensor<T> {
        self.unary(Tanh)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn tanh_values_and_gradcheck() {
        let x = rand_input(&[5], 8);
        let want: Vec<f64> = x.to_vec().iter().map(|v| v.tanh()).collect();
        assert_close(&x.tanh().to_vec(), &want, 1e-15);
        assert_gradcheck(|t| Ok(t[0].tanh()), &[x]);
    }
}
