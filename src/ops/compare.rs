//! Comparisons with broadcasting, producing 0/1 masks. Not differentiable: the result
//! is always a leaf.

use super::binary::zip_map;
use crate::error::Result;
use crate::tensor::{broadcast_shapes, Element, Tensor};

impl<T: Element> Tensor<T> {
    fn compare(&self, rhs: &Tensor<T>, op: &'static str, f: fn(T, T) -> bool) -> Result<Tensor<T>> {
        let shape = broadcast_shapes(op, self.shape(), rhs.shape())?;
        let la = self.layout().broadcast_to(&shape)?;
        let lb = rhs.layout().broadcast_to(&shape)?;
        let data = zip_map((self.storage(), &la), (rhs.storage(), &lb), |x, y| {
            if f(x, y) {
                T::one()
            } else {
                T::zero()
            }
        });
        Ok(Tensor::from_contiguous(data, &shape))
    }

    /// Mask of `self == rhs`.
    pub fn eq_mask(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(rhs, "eq", |a, b| a == b)
    }

    /// Mask of `self != rhs`.
    pub fn ne_mask(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(rhs, "ne", |a, b| a != b)
    }

    /// Mask of `self > rhs`.
    pub fn gt_mask(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(rhs, "gt", |a, b| a > b)
    }

    /// Mask of `self >= rhs`.
    pub fn ge_mask(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(rhs, "ge", |a, b| a >= b)
    }

    /// Mask of `self < rhs`.
    pub fn lt_mask(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(rhs, "lt", |a, b| a < b)
    }

    /// Mask of `self <= rhs`.
    pub fn le_mask(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        self.compare(rhs, "le", |a, b| a <= b)
    }
}

#[cfg(test)]
mod tests {
    use crate::Tensor;

    #[test]
    fn masks_broadcast_and_do_not_require_grad() {
        let a = Tensor::<f64>::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2])
            .unwrap()
            .with_grad();
        let b = Tensor::<f64>::from_vec(vec![2.0, 2.0], &[2]).unwrap();
        assert_eq!(a.gt_mask(&b).unwrap().to_vec(), vec![0.0, 0.0, 1.0, 1.0]);
        assert_eq!(a.ge_mask(&b).unwrap().to_vec(), vec![0.0, 1.0, 1.0, 1.0]);
        assert_eq!(a.lt_mask(&b).unwrap().to_vec(), vec![1.0, 0.0, 0.0, 0.0]);
        assert_eq!(a.le_mask(&b).unwrap().to_vec(), vec![1.0, 1.0, 0.0, 0.0]);
        assert_eq!(a.eq_mask(&b).unwrap().to_vec(), vec![0.0, 1.0, 0.0, 0.0]);
        assert_eq!(a.ne_mask(&b).unwrap().to_vec(), vec![1.0, 0.0, 1.0, 1.0]);
        assert!(!a.gt_mask(&b).unwrap().requires_grad());
    }
}
