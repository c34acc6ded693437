//! `min(max(x, lo), hi)`; derivative 1 inside `[lo, hi]`, 0 outside (as PyTorch).

use crate::autograd::{Saved, UnaryFn};
use crate::tensor::{Element, Tensor};

struct Clamp<T> {
    lo: T,
    hi: T,
}

impl<T: Element> UnaryFn<T> for Clamp<T> {
    fn name(&self) -> &'static str {
        "clamp"
    }
    fn f(&self, x: T) -> T {
        x.max(self.lo).min(self.hi)
    }
    fn saves(&self) -> Saved {
        Saved::Input
    }
    fn df(&self, x: T) -> T {
        if x >= self.lo && x <= self.hi {
            T::one()
        } else {
            T::zero()
        }
    }
}

impl<T: Element> Tensor<T> {
    /// Elementwise clamp to `[lo, hi]` (use ±infinity for a one-sided clamp).
    pub fn clamp(&self, lo: f64, hi: f64) -> Tensor<T> {
        self.unary(Clamp {
            lo: T::from_f64(lo),
            hi: T::from_f64(hi),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;

    #[test]
    fn clamp_values_and_gradcheck() {
        // Keep points away from the kinks at -0.5 and 0.7.
        let x = rand_input(&[20], 11);
        let v: Vec<f64> = x
            .to_vec()
            .into_iter()
            .map(|v| {
                if (v + 0.5).abs() < 0.01 || (v - 0.7).abs() < 0.01 {
                    v + 0.05
                } else {
                    v
                }
            })
            .collect();
        let x = crate::Tensor::from_vec(v.clone(), &[20])
            .unwrap()
            .with_grad();
        let want: Vec<f64> = v.iter().map(|v| v.clamp(-0.5, 0.7)).collect();
        assert_eq!(x.clamp(-0.5, 0.7).to_vec(), want);
        assert_gradcheck(|t| Ok(t[0].clamp(-0.5, 0.7)), &[x]);
    }
}
