//! `ln x`; derivative `1/x`.

use crate::autograd::{Saved, UnaryFn};
use crate::tensor::{Element, Tensor};

struct Log;

impl<T: Element> UnaryFn<T> for Log {
    fn name(&self) -> &'static str {
        "log"
    }
    fn f(&self, x: T) -> T {
        x.ln()
    }
    fn saves(&self) -> Saved {
        Saved::Input
    }
    fn df(&self, x: T) -> T {
        x.recip()
    }
}

impl<T: Element> Tensor<T> {
    /// Elementwise natural logarithm.
    pub fn log(&self) -> Tensor<T> {
        self.unary(Log)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn log_values_and_gradcheck() {
        let x = rand_input(&[4, 3], 3)
            .abs()
            .add_scalar(0.1)
            .detach()
            .with_grad();
        let want: Vec<f64> = x.to_vec().iter().map(|v| v.ln()).collect();
        assert_close(&x.log().to_vec(), &want, 1e-15);
        assert_gradcheck(|t| Ok(t[0].log()), &[x]);
    }
}
