//! `√x`; derivative `1/(2√x)`, read from the output.

use crate::autograd::{Saved, UnaryFn};
use crate::tensor::{Element, Tensor};

struct Sqrt;

impl<T: Element> UnaryFn<T> for Sqrt {
    fn name(&self) -> &'static str {
        "sqrt"
    }
    fn f(&self, x: T) -> T {
        x.sqrt()
    }
    fn saves(&self) -> Saved {
        Saved::Output
    }
    fn df(&self, y: T) -> T {
        (y + y).recip()
    }
}

impl<T: Element> Tensor<T> {
    /// Elementwise square root.
    pub fn sqrt(&self) -> Tensor<T> {
        self.unary(Sqrt)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn sqrt_values_and_gradcheck() {
        let x = rand_input(&[6], 4)
            .abs()
            .add_scalar(0.2)
            .detach()
            .with_grad();
        let want: Vec<f64> = x.to_vec().iter().map(|v| v.sqrt()).collect();
        assert_close(&x.sqrt().to_vec(), &want, 1e-15);
        assert_gradcheck(|t| Ok(t[0].sqrt()), &[x]);
    }
}
