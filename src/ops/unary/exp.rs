//! `eˣ`; derivative `eˣ`, read from the output.

use crate::autograd::{Saved, UnaryFn};
use crate::tensor::{Element, Tensor};

struct Exp;

impl<T: Element> UnaryFn<T> for Exp {
    fn name(&self) -> &'static str {
        "exp"
    }
    fn f(&self, x: T) -> T {
        x.exp()
    }
    fn saves(&self) -> Saved {
        Saved::Output
    }
    fn df(&self, y: T) -> T {
        y
    }
}

impl<T: Element> Tensor<T> {
    /// Elementwise `eˣ`.
    pub fn exp(&self) -> Tensor<T> {
        self.unary(Exp)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn exp_values_and_gradcheck() {
        let x = rand_input(&[2, 5], 2);
        let want: Vec<f64> = x.to_vec().iter().map(|v| v.exp()).collect();
        assert_close(&x.exp().to_vec(), &want, 1e-15);
        assert_gradcheck(|t| Ok(t[0].exp()), &[x]);
    }
}
