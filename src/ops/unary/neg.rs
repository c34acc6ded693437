//! `-x`; derivative `-1`.

use crate::autograd::{Saved, UnaryFn};
use crate::tensor::{Element, Tensor};

struct Neg;

impl<T: Element> UnaryFn<T> for Neg {
    fn name(&self) -> &'static str {
        "neg"
    }
    fn f(&self, x: T) -> T {
        -x
    }
    fn saves(&self) -> Saved {
        Saved::Nothing
    }
    fn df(&self, _: T) -> T {
        -T::one()
    }
}

impl<T: Element> Tensor<T> {
    /// Elementwise negation.
    pub fn neg(&self) -> Tensor<T> {
        self.unary(Neg)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn neg_values_and_gradcheck() {
        let x = rand_input(&[3, 4], 1);
        assert_eq!(
            x.neg().to_vec(),
            x.to_vec().iter().map(|v| -v).collect::<Vec<_>>()
        );
        assert_gradcheck(|t| Ok(t[0].neg()), &[x]);
    }
}
