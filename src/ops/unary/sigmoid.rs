//! `σ(x) = 1/(1+e⁻ˣ)`, evaluated without overflow; derivative `σ(1−σ)`.

use crate::autograd::{Saved, UnaryFn};
use crate::tensor::{Element, Tensor};

struct Sigmoid;

impl<T: Element> UnaryFn<T> for Sigmoid {
    fn name(&self) -> &'static str {
        "sigmoid"
    }
    fn f(&self, x: T) -> T {
        // Only ever exponentiate a non-positive number.
        if x >= T::zero() {
            (T::one() + (-x).exp()).recip()
        } else {
            let e = x.exp();
            e / (T::one() + e)
        }
    }
    fn saves(&self) -> Saved {
        Saved::Output
    }
    fn df(&self, y: T) -> T {
        y * (T::one() - y)
    }
}

impl<T: Element> Tensor<T> {
    /// Elementwise logistic function.
    pub fn sigmoid(&self) -> Tensor<T> {
        self.unary(Sigmoid)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Tensor;

    #[test]
    fn sigmoid_values_and_gradcheck() {
        let x = rand_input(&[2, 3], 7);
        let want: Vec<f64> = x
            .to_vec()
            .iter()
            .map(|v| 1.0 / (1.0 + (-v).exp()))
            .collect();
        assert_close(&x.sigmoid().to_vec(), &want, 1e-15);
        assert_gradcheck(|t| Ok(t[0].sigmoid()), &[x]);
    }

    #[test]
    fn sigmoid_is_finite_for_huge_logits() {
        let x = Tensor::<f32>::from_vec(vec![-1e4, -100.0, 100.0, 1e4], &[4]).unwrap();
        let s = x.sigmoid().to_vec();
        assert_eq!((s[0], s[2], s[3]), (0.0, 1.0, 1.0));
        assert!(s[1] > 0.0 && s[1] < 1e-40, "{}", s[1]);
    }
}
