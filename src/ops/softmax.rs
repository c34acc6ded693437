//! softmax and log_softmax, composed from primitives with the maximum subtracted.

use crate::error::Result;
use crate::tensor::{Element, Tensor};

impl<T: Element> Tensor<T> {
    /// `exp(x − max) / Σ exp(x − max)` along `axis`.
    /// ```
    /// use tensorgrad::Tensor;
    ///
    /// let z = Tensor::<f64>::from_vec(vec![1.0, 2.0, 3.0, 1000.0, 1000.0, 1000.0], &[2, 3])?;
    /// let p = z.softmax(-1)?.to_vec();
    /// assert!((p[0..3].iter().sum::<f64>() - 1.0).abs() < 1e-12);
    /// assert!(p[3..].iter().all(|&v| (v - 1.0 / 3.0).abs() < 1e-12)); // no overflow
    /// assert!(z.log_softmax(-1)?.to_vec().iter().all(|&v| v <= 0.0));
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn softmax(&self, axis: isize) -> Result<Tensor<T>> {
        // The max is a constant shift: softmax does not depend on it, so no gradient.
        let m = self.max(&[axis], true)?.detach();
        let e = self.sub(&m)?.exp();
        e.div(&e.sum(&[axis], true)?)
    }

    /// `x − logsumexp(x)` along `axis`.
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor<T>> {
        self.sub(&self.logsumexp(&[axis], true)?)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Tensor;

    #[test]
    fn rows_sum_to_one_and_match_definition() {
        let x = rand_input(&[3, 5], 41);
        let s = x.softmax(1).unwrap().to_vec();
        for row in s.chunks(5) {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-14);
        }
        let v = x.to_vec();
        let z: f64 = v[..5].iter().map(|a| a.exp()).sum();
        assert_close(
            &s[..5],
            &v[..5].iter().map(|a| a.exp() / z).collect::<Vec<_>>(),
            1e-14,
        );
        let ls = x.log_softmax(1).unwrap().to_vec();
        assert_close(&ls, &s.iter().map(|p| p.ln()).collect::<Vec<_>>(), 1e-13);
    }

    #[test]
    fn stable_for_huge_logits() {
        let x = Tensor::<f32>::from_vec(vec![1e4, -1e4, 0.0, 100.0, -100.0, 0.0], &[2, 3]).unwrap();
        let s = x.softmax(1).unwrap().to_vec();
        let ls = x.log_softmax(1).unwrap().to_vec();
        assert!(s.iter().chain(&ls).all(|v| v.is_finite()), "{s:?} {ls:?}");
        assert_eq!(s[0], 1.0);
    }

    #[test]
    fn gradcheck_softmax_both_axes() {
        let x = rand_input(&[3, 4], 42);
        for axis in [0, 1, -1] {
            assert_gradcheck(|t| t[0].softmax(axis), std::slice::from_ref(&x));
            assert_gradcheck(|t| t[0].log_softmax(axis), std::slice::from_ref(&x));
        }
    }
}
