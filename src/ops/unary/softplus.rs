//! `softplus(x) = ln(1 + eˣ)`, evaluated as `max(x,0) + ln1p(e^{−|x|})`; derivative `σ(x)`.

use crate::autograd::{Saved, UnaryFn};
use crate::tensor::{Element, Tensor};

struct Softplus;

impl<T: Element> UnaryFn<T> for Softplus {
    fn name(&self) -> &'static str {
        "softplus"
    }
    fn f(&self, x: T) -> T {
        x.max(T::zero()) + (-x.abs()).exp().ln_1p()
    }
    fn saves(&self) -> Saved {
        Saved::Input
    }
    fn df(&self, x: T) -> T {
        if x >= T::zero() {
            (T::one() + (-x).exp()).recip()
        } else {
            let e = x.exp();
            e / (T::one() + e)
        }
    }
}

impl<T: Element> Tensor<T> {
    /// Elementwise `ln(1 + eˣ)`, stable for large `|x|`.
    pub fn softplus(&self) -> Tensor<T> {
        self.unary(Softplus)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Tensor;

    #[test]
    fn softplus_values_and_gradcheck() {
        let x = rand_input(&[3, 2], 9);
        let want: Vec<f64> = x.to_vec().iter().map(|v| (1.0 + v.exp()).ln()).collect();
        assert_close(&x.softplus().to_vec(), &want, 1e-14);
        assert_gradcheck(|t| Ok(t[0].softplus()), &[x]);
    }

    #[test]
    fn softplus_is_finite_for_huge_logits() {
        let x = Tensor::<f32>::from_vec(vec![-1e4, 1e4], &[2]).unwrap();
        assert_eq!(x.softplus().to_vec(), vec![0.0, 1e4]);
    }
}
