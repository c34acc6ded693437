//! `xᵖ` for a constant real `p`; derivative `p·xᵖ⁻¹`.

use crate::autograd::{Saved, UnaryFn};
use crate::tensor::{Element, Tensor};

struct Powf<T>(T);

impl<T: Element> UnaryFn<T> for Powf<T> {
    fn name(&self) -> &'static str {
        "powf"
    }
    fn f(&self, x: T) -> T {
        x.powf(self.0)
    }
    fn saves(&self) -> Saved {
        Saved::Input
    }
    fn df(&self, x: T) -> T {
        self.0 * x.powf(self.0 - T::one())
    }
}

impl<T: Element> Tensor<T> {
    /// Elementwise `xᵖ`.
    pub fn powf(&self, p: f64) -> Tensor<T> {
        self.unary(Powf(T::from_f64(p)))
    }

    /// Elementwise `x²`.
    pub fn square(&self) -> Tensor<T> {
        self.powf(2.0)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn powf_values_and_gradcheck() {
        let x = rand_input(&[4], 10)
            .abs()
            .add_scalar(0.3)
            .detach()
            .with_grad();
        let want: Vec<f64> = x.to_vec().iter().map(|v| v.powf(1.7)).collect();
        assert_close(&x.powf(1.7).to_vec(), &want, 1e-15);
        for p in [2.0, 1.7, -0.5, 3.0] {
            assert_gradcheck(|t| Ok(t[0].powf(p)), std::slice::from_ref(&x));
        }
    }
}
