//! `eˣ − 1`, accurate near 0; derivative `eˣ = y + 1`.

use crate::autograd::{Saved, UnaryFn};
use crate::tensor::{Element, Tensor};

struct Expm1;

impl<T: Element> UnaryFn<T> for Expm1 {
    fn name(&self) -> &'static str {
        "expm1"
    }
    fn f(&self, x: T) -> T {
        x.exp_m1()
    }
    fn saves(&self) -> Saved {
        Saved::Output
    }
    fn df(&self, y: T) -> T {
        y + T::one()
    }
}

impl<T: Element> Tensor<T> {
    /// Elementwise `eˣ − 1` without cancellation for small `x`.
    pub fn expm1(&self) -> Tensor<T> {
        self.unary(Expm1)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Tensor;

    #[test]
    fn expm1_values_and_gradcheck() {
        let x = rand_input(&[5], 13);
        let want: Vec<f64> = x.to_vec().iter().map(|v| v.exp_m1()).collect();
        assert_close(&x.expm1().to_vec(), &want, 1e-15);
        let tiny = Tensor::<f64>::from_vec(vec![1e-12], &[1]).unwrap();
        assert!((tiny.expm1().item() - 1e-12).abs() < 1e-24);
        assert_gradcheck(|t| Ok(t[0].expm1()), &[x]);
    }
}
