//! Inverted dropout: zero each element with probability `p`, scale the rest by `1/(1−p)`.

use crate::error::{Result, TensorError};
use crate::tensor::{Element, Tensor};
use rand::Rng;

impl<T: Element> Tensor<T> {
    /// A dropout mask of `shape`: `0` with probability `p`, else `1/(1−p)`; an error unless
    /// `p ∈ [0, 1]`.
    pub fn dropout_mask(shape: &[usize], p: f64, rng: &mut impl Rng) -> Result<Tensor<T>> {
        if !(0.0..=1.0).contains(&p) {
            return Err(TensorError::InvalidArgument {
                op: "dropout",
                reason: format!("probability {p} is not in [0, 1]"),
            });
        }
        let keep = if p < 1.0 {
            T::from_f64(1.0 / (1.0 - p))
        } else {
            T::zero()
        };
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| {
                if rng.random::<f64>() < p {
                    T::zero()
                } else {
                    keep
                }
            })
            .collect();
        Ok(Tensor::from_contiguous(data, shape))
    }

    /// Training-mode dropout with a fresh mask drawn from `rng`.
    pub fn dropout(&self, p: f64, rng: &mut impl Rng) -> Result<Tensor<T>> {
        self.mul(&Tensor::dropout_mask(self.shape(), p, rng)?)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Tensor;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn keeps_expected_fraction_and_scales() {
        let mut rng = StdRng::seed_from_u64(1);
        let m = Tensor::<f64>::dropout_mask(&[10000], 0.3, &mut rng)
            .unwrap()
            .to_vec();
        let kept = m.iter().filter(|&&v| v > 0.0).count() as f64 / 1e4;
        assert!((kept - 0.7).abs() < 0.02, "{kept}");
        assert!(m.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-12));
        assert!(Tensor::<f64>::dropout_mask(&[3], 1.5, &mut rng).is_err());
        assert!(Tensor::<f64>::dropout_mask(&[3], 1.0, &mut rng)
            .unwrap()
            .to_vec()
            .iter()
            .all(|&v| v == 0.0));
    }

    #[test]
    fn same_seed_same_mask() {
        let a = Tensor::<f32>::dropout_mask(&[50], 0.5, &mut StdRng::seed_from_u64(9)).unwrap();
        let b = Tensor::<f32>::dropout_mask(&[50], 0.5, &mut StdRng::seed_from_u64(9)).unwrap();
        assert_eq!(a.to_vec(), b.to_vec());
    }

    #[test]
    fn gradcheck_with_a_fixed_mask() {
        let mask =
            Tensor::<f64>::dropout_mask(&[3, 4], 0.4, &mut StdRng::seed_from_u64(2)).unwrap();
        assert_gradcheck(|t| t[0].mul(&mask), &[rand_input(&[3, 4], 87)]);
    }
}
