//! `|x|`; derivative `sign(x)` (0 at 0, as PyTorch).

use crate::autograd::{Saved, UnaryFn};
use crate::tensor::{Element, Tensor};

struct Abs;

impl<T: Element> UnaryFn<T> for Abs {
    fn name(&self) -> &'static str {
        "abs"
    }
    fn f(&self, x: T) -> T {
        x.abs()
    }
    fn saves(&self) -> Saved {
        Saved::Input
    }
    fn df(&self, x: T) -> T {
        if x > T::zero() {
            T::one()
        } else if x < T::zero() {
            -T::one()
        } else {
            T::zero()
        }
    }
}

impl<T: Element> Tensor<T> {
    /// Elementwise absolute value.
    pub fn abs(&self) -> Tensor<T> {
        self.unary(Abs)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn abs_values_and_gradcheck() {
        let x = rand_input_away_from_zero(&[3, 3], 5, 0.05);
        let want: Vec<f64> = x.to_vec().iter().map(|v| v.abs()).collect();
        assert_eq!(x.abs().to_vec(), want);
        assert_gradcheck(|t| Ok(t[0].abs()), &[x]);
    }
}
