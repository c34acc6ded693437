//! Reductions over any set of axes, with or without keeping the reduced dims.

use crate::autograd::Op;
use crate::error::{Result, TensorError};
use crate::tensor::{contiguous_strides, gather_strided, normalize_axes, Element, Tensor};
use std::borrow::Cow;
use std::sync::Arc;

/// A reduction problem: the input's values reordered so that every output element owns
/// one contiguous chunk of `chunk` values.
struct Chunks<'a, T: Clone> {
    values: Cow<'a, [T]>,
    chunk: usize,
    /// Order of input axes in `values`: kept axes first, then reduced ones.
    perm: Vec<usize>,
    out_shape: Vec<usize>,
}

impl<T: Element> Tensor<T> {
    fn reduction_chunks(&self, axes: &[usize], keepdim: bool) -> Chunks<'_, T> {
        let nd = self.ndim();
        let kept: Vec<usize> = (0..nd).filter(|a| !axes.contains(a)).collect();
        let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
        let layout = self.layout().permute(&perm);
        let values = if layout.is_contiguous() {
            let o = layout.offset();
            Cow::Borrowed(&self.storage()[o..o + layout.numel()])
        } else {
            Cow::Owned(gather_strided(self.storage(), &layout))
        };
        let chunk = axes.iter().map(|&a| self.shape()[a]).product();
        let out_shape = if keepdim {
            (0..nd)
                .map(|a| {
                    if axes.contains(&a) {
                        1
                    } else {
                        self.shape()[a]
                    }
                })
                .collect()
        } else {
            kept.iter().map(|&a| self.shape()[a]).collect()
        };
        Chunks {
            values,
            chunk,
            perm,
            out_shape,
        }
    }

    /// Sum over `axes` (all axes when empty).
    /// ```
    /// use tensorgrad::Tensor;
    ///
    /// let x = Tensor::<f64>::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// assert_eq!(x.sum(&[1], false)?.to_vec(), vec![6.0, 15.0]);
    /// assert_eq!(x.sum(&[0], true)?.shape(), &[1, 3]);
    /// assert_eq!(x.max(&[-1], false)?.to_vec(), vec![3.0, 6.0]);
    /// assert_eq!(x.mean_all().item(), 3.5);
    /// // logsumexp is stable for large inputs.
    /// let big = Tensor::<f64>::from_vec(vec![1000.0, 1000.0], &[2])?;
    /// assert!((big.logsumexp(&[0], false)?.item() - (1000.0 + 2f64.ln())).abs() < 1e-9);
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Result<Tensor<T>> {
        let axes = normalize_axes("sum", axes, self.ndim())?;
        let c = self.reduction_chunks(&axes, keepdim);
        let data: Vec<T> = if c.chunk == 0 {
            crate::memory::take_zeroed(c.out_shape.iter().product())
        } else {
            c.values
                .chunks(c.chunk)
                .map(|ch| ch.iter().copied().sum())
                .collect()
        };
        Ok(Tensor::from_op_vec(
            data,
            &c.out_shape,
            Op::Sum {
                input: self.graph_handle(),
                axes,
            },
        ))
    }

    /// Sum of all elements, as a 0-dimensional tensor.
    pub fn sum_all(&self) -> Tensor<T> {
        self.sum(&[], false)
            .expect("summing over all axes cannot fail")
    }

    /// Mean over `axes` (all axes when empty).
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Result<Tensor<T>> {
        let norm = normalize_axes("mean", axes, self.ndim())?;
        let count: usize = norm.iter().map(|&a| self.shape()[a]).product();
        Ok(self.sum(axes, keepdim)?.mul_scalar(1.0 / count as f64))
    }

    /// Mean of all elements, as a 0-dimensional tensor.
    pub fn mean_all(&self) -> Tensor<T> {
        self.mean(&[], false)
            .expect("averaging over all axes cannot fail")
    }

    /// Maximum over `axes`, and for every output element the row-major index of its
    /// maximum within the reduced axes (the first one at ties, as PyTorch).
    pub fn max_with_argmax(
        &self,
        axes: &[isize],
        keepdim: bool,
    ) -> Result<(Tensor<T>, Vec<usize>)> {
        let axes = normalize_axes("max", axes, self.ndim())?;
        let c = self.reduction_chunks(&axes, keepdim);
        if c.chunk == 0 {
            return Err(TensorError::InvalidShape {
                op: "max",
                shape: self.shape().to_vec(),
                reason: "cannot take the maximum over an empty axis".into(),
            });
        }
        let mut values = Vec::with_capacity(c.values.len() / c.chunk);
        let mut argmax = Vec::with_capacity(values.capacity());
        for ch in c.values.chunks(c.chunk) {
            let (mut best, mut at) = (ch[0], 0);
            for (j, &v) in ch.iter().enumerate().skip(1) {
                // NaN propagates: once `best` is NaN nothing replaces it.
                if v > best || (v.is_nan() && !best.is_nan()) {
                    best = v;
                    at = j;
                }
            }
            values.push(best);
            argmax.push(at);
        }
        // Map (output element, position in chunk) back to a row-major input index.
        let in_strides = contiguous_strides(self.shape());
        let perm_shape: Vec<usize> = c.perm.iter().map(|&a| self.shape()[a]).collect();
        let positions: Vec<usize> = argmax
            .iter()
            .enumerate()
            .map(|(o, &r)| {
                let mut flat = o * c.chunk + r;
                let mut pos = 0;
                for d in (0..perm_shape.len()).rev() {
                    pos += (flat % perm_shape[d]) * in_strides[c.perm[d]];
                    flat /= perm_shape[d];
                }
                pos
            })
            .collect();
        let out = Tensor::from_op_vec(
            values,
            &c.out_shape,
            Op::Take {
                input: self.graph_handle(),
                positions: Arc::new(positions),
            },
        );
        Ok((out, argmax))
    }

    /// Maximum over `axes` (all axes when empty); the gradient goes to the first maximum.
    pub fn max(&self, axes: &[isize], keepdim: bool) -> Result<Tensor<T>> {
        Ok(self.max_with_argmax(axes, keepdim)?.0)
    }

    /// Minimum over `axes`, as `-max(-x)`.
    pub fn min(&self, axes: &[isize], keepdim: bool) -> Result<Tensor<T>> {
        Ok(self.neg().max(axes, keepdim)?.neg())
    }

    /// Index of the maximum along one axis, for every position of the other axes.
    pub fn argmax(&self, axis: isize) -> Result<Vec<usize>> {
        let _no_grad = crate::autograd::NoGradGuard::new();
        Ok(self.max_with_argmax(&[axis], false)?.1)
    }

    /// `log Σ exp(x)` over `axes`, computed with the maximum subtracted (no overflow).
    pub fn logsumexp(&self, axes: &[isize], keepdim: bool) -> Result<Tensor<T>> {
        let m = self.max(axes, true)?.detach();
        let lse = self.sub(&m)?.exp().sum(axes, true)?.log().add(&m)?;
        if keepdim {
            return Ok(lse);
        }
        let norm = normalize_axes("logsumexp", axes, self.ndim())?;
        let shape: Vec<usize> = (0..self.ndim())
            .filter(|a| !norm.contains(a))
            .map(|a| self.shape()[a])
            .collect();
        lse.reshape(&shape)
    }

    /// Sums a broadcast result back to `shape` (the inverse of [`Tensor::broadcast_to`]).
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor<T>> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let err = || TensorError::ShapeMismatch {
            op: "sum_to",
            lhs: self.shape().to_vec(),
            rhs: shape.to_vec(),
        };
        if shape.len() > self.ndim() {
            return Err(err());
        }
        let lead = self.ndim() - shape.len();
        let mut axes: Vec<isize> = (0..lead as isize).collect();
        for (i, &d) in shape.iter().enumerate() {
            let have = self.shape()[lead + i];
            if d == 1 && have != 1 {
                axes.push((lead + i) as isize);
            } else if d != have {
                return Err(err());
            }
        }
        self.sum(&axes, true)?.reshape(shape)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Tensor;

    #[test]
    fn sum_values_over_axis_sets() {
        let x = Tensor::<f64>::arange(24).reshape(&[2, 3, 4]).unwrap();
        assert_eq!(x.sum_all().item(), 276.0);
        let s = x.sum(&[0, 2], false).unwrap();
        assert_eq!(s.shape(), &[3]);
        assert_eq!(s.to_vec(), vec![60.0, 92.0, 124.0]);
        let k = x.sum(&[-1], true).unwrap();
        assert_eq!(k.shape(), &[2, 3, 1]);
        assert_eq!(k.to_vec(), vec![6.0, 22.0, 38.0, 54.0, 70.0, 86.0]);
        assert!(x.sum(&[3], false).is_err());
    }

    #[test]
    fn max_takes_first_index_at_ties() {
        let x = Tensor::<f64>::from_vec(vec![1.0, 3.0, 3.0, 2.0, 0.0, -1.0], &[2, 3]).unwrap();
        let (m, arg) = x.max_with_argmax(&[1], false).unwrap();
        assert_eq!(m.to_vec(), vec![3.0, 2.0]);
        assert_eq!(arg, vec![1, 0]);
        assert_eq!(x.argmax(0).unwrap(), vec![1, 0, 0]);
        let x = x.with_grad();
        let g = x.max(&[1], false).unwrap().sum_all().backward().unwrap();
        assert_eq!(
            g.get(&x).unwrap().to_vec(),
            vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
        );
    }

    #[test]
    fn logsumexp_is_stable() {
        let x = Tensor::<f32>::from_vec(vec![1e4, 1e4, -1e4, 0.0], &[2, 2]).unwrap();
        let l = x.logsumexp(&[1], false).unwrap().to_vec();
        assert!((l[0] - (1e4 + 2f32.ln())).abs() < 1e-2);
        assert_eq!(l[1], 0.0);
    }

    #[test]
    fn gradcheck_reductions_over_several_axes() {
        let x = rand_input(&[2, 3, 4], 21);
        for (axes, keep) in [
            (vec![], false),
            (vec![0], false),
            (vec![1], true),
            (vec![0, 2], false),
            (vec![-1, 0], true),
        ] {
            assert_gradcheck(|t| t[0].sum(&axes, keep), std::slice::from_ref(&x));
            assert_gradcheck(|t| t[0].mean(&axes, keep), std::slice::from_ref(&x));
            assert_gradcheck(|t| t[0].max(&axes, keep), std::slice::from_ref(&x));
            assert_gradcheck(|t| t[0].min(&axes, keep), std::slice::from_ref(&x));
            assert_gradcheck(|t| t[0].logsumexp(&axes, keep), std::slice::from_ref(&x));
        }
        // Reduction of a non-contiguous view.
        assert_gradcheck(|t| t[0].transpose(0, 2)?.sum(&[1], false), &[x]);
    }

    #[test]
    fn sum_to_inverts_broadcast() {
        let x = rand_input(&[2, 3, 4], 22);
        let s = x.sum_to(&[3, 1]).unwrap();
        let want = x.sum(&[0, 2], false).unwrap().to_vec();
        assert_close(&s.to_vec(), &want, 1e-14);
        assert!(x.sum_to(&[2, 4]).is_err());
    }
}
