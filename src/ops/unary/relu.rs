//! `max(x, 0)`; derivative 1 for `x > 0`, else 0.

use crate::autograd::{Saved, UnaryFn};
use crate::tensor::{Element, Tensor};

struct Relu;

impl<T: Element> UnaryFn<T> for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }
    fn f(&self, x: T) -> T {
        relu_value(x)
    }
    fn saves(&self) -> Saved {
        // y > 0 exactly where x > 0; the output is kept anyway by most consumers.
        Saved::Output
    }
    fn df(&self, y: T) -> T {
        relu_derivative(y)
    }
}

/// `max(x, 0)`, as every fused ReLU computes it (conv2d_relu, add_relu).
pub(crate) fn relu_value<T: Element>(x: T) -> T {
    if x > T::zero() {
        x
    } else {
        T::zero()
    }
}

/// The ReLU's derivative read from its output: 1 where `y > 0`, else 0.
pub(crate) fn relu_derivative<T: Element>(y: T) -> T {
    if y > T::zero() {
        T::one()
    } else {
        T::zero()
    }
}

impl<T: Element> Tensor<T> {
    /// Elementwise rectifier `max(x, 0)`.
    pub fn relu(&self) -> Tensor<T> {
        self.unary(Relu)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn relu_values_and_gradcheck() {
        let x = rand_input_away_from_zero(&[4, 4], 6, 0.05);
        let want: Vec<f64> = x.to_vec().iter().map(|v| v.max(0.0)).collect();
        assert_eq!(x.relu().to_vec(), want);
        assert_gradcheck(|t| Ok(t[0].relu()), &[x]);
    }
}
