//! Indexing: index_select and gather (recorded as a `Take`, whose derivative is a
//! scatter-add), and one_hot.

use crate::autograd::Op;
use crate::error::{Result, TensorError};
use crate::tensor::{contiguous_strides, normalize_axis, Element, Tensor};
use std::sync::Arc;

impl<T: Element> Tensor<T> {
    /// `out.flat[p] = self.flat[positions[p]]` with output `shape`. Does not check
    /// `positions`: every caller has bounds-checked the indices they come from.
    fn take(&self, positions: Vec<usize>, shape: &[usize]) -> Tensor<T> {
        let v = self.values();
        let data = positions.iter().map(|&p| v[p]).collect();
        Tensor::from_op_vec(
            data,
            shape,
            Op::Take {
                input: self.graph_handle(),
                positions: Arc::new(positions),
            },
        )
    }

    /// The slices at `indices` along `axis`, in that order (repeats allowed).
    pub fn index_select(&self, axis: isize, indices: &[usize]) -> Result<Tensor<T>> {
        let a = normalize_axis("index_select", axis, self.ndim())?;
        let size = self.shape()[a];
        if let Some(&bad) = indices.iter().find(|&&i| i >= size) {
            return Err(TensorError::IndexOutOfRange {
                op: "index_select",
                index: bad,
                size,
            });
        }
        let outer: usize = self.shape()[..a].iter().product();
        let inner: usize = self.shape()[a + 1..].iter().product();
        let mut positions = Vec::with_capacity(outer * indices.len() * inner);
        for o in 0..outer {
            for &i in indices {
                let base = (o * size + i) * inner;
                positions.extend(base..base + inner);
            }
        }
        let mut shape = self.shape().to_vec();
        shape[a] = indices.len();
        Ok(self.take(positions, &shape))
    }

    /// PyTorch's `gather`: `out[i₀…iₙ] = self[i₀…index[i₀…iₙ]…iₙ]` along `axis`, where
    /// `index` is row-major with shape `index_shape` (same rank, no larger off `axis`).
    /// ```
    /// use tensorgrad::Tensor;
    ///
    /// // Pick each row's entry at its label: the core of a cross-entropy.
    /// let logp = Tensor::<f64>::from_vec(vec![-0.1, -2.3, -1.2, -0.4], &[2, 2])?;
    /// assert_eq!(logp.gather(1, &[0, 1], &[2, 1])?.to_vec(), vec![-0.1, -0.4]);
    /// assert_eq!(Tensor::<f64>::one_hot(&[1, 0], 3)?.to_vec(), vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
    /// assert!(logp.gather(1, &[0, 2], &[2, 1]).is_err());
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn gather(&self, axis: isize, index: &[usize], index_shape: &[usize]) -> Result<Tensor<T>> {
        let a = normalize_axis("gather", axis, self.ndim())?;
        let fits = index_shape.len() == self.ndim()
            && (0..self.ndim()).all(|d| d == a || index_shape[d] <= self.shape()[d])
            && index.len() == index_shape.iter().product::<usize>();
        if !fits {
            return Err(TensorError::ShapeMismatch {
                op: "gather",
                lhs: self.shape().to_vec(),
                rhs: index_shape.to_vec(),
            });
        }
        let size = self.shape()[a];
        let strides = contiguous_strides(self.shape());
        let mut positions = Vec::with_capacity(index.len());
        let mut idx = vec![0usize; index_shape.len()];
        for &i in index {
            if i >= size {
                return Err(TensorError::IndexOutOfRange {
                    op: "gather",
                    index: i,
                    size,
                });
            }
            let pos: usize = (0..idx.len())
                .map(|d| if d == a { i } else { idx[d] } * strides[d])
                .sum();
            positions.push(pos);
            // Row-major odometer over the index shape.
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < index_shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Ok(self.take(positions, index_shape))
    }

    /// `[labels.len(), classes]` with a 1 at every label; errors on a label ≥ `classes`.
    pub fn one_hot(labels: &[usize], classes: usize) -> Result<Tensor<T>> {
        let mut data = vec![T::zero(); labels.len() * classes];
        for (row, &l) in labels.iter().enumerate() {
            if l >= classes {
                return Err(TensorError::IndexOutOfRange {
                    op: "one_hot",
                    index: l,
                    size: classes,
                });
            }
            data[row * classes + l] = T::one();
        }
        Ok(Tensor::from_contiguous(data, &[labels.len(), classes]))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Tensor;

    #[test]
    fn index_select_values_and_errors() {
        let x = Tensor::<f64>::arange(6).reshape(&[3, 2]).unwrap();
        let s = x.index_select(0, &[2, 0, 2]).unwrap();
        assert_eq!(s.to_vec(), vec![4.0, 5.0, 0.0, 1.0, 4.0, 5.0]);
        let c = x.index_select(1, &[1]).unwrap();
        assert_eq!(c.to_vec(), vec![1.0, 3.0, 5.0]);
        let e = x.index_select(0, &[3]).unwrap_err().to_string();
        assert!(e.contains("index 3") && e.contains("size 3"), "{e}");
    }

    #[test]
    fn gather_matches_pytorch_semantics() {
        // torch.gather(x, 1, [[2],[0]]) on [[0,1,2],[3,4,5]] = [[2],[3]]
        let x = Tensor::<f64>::arange(6).reshape(&[2, 3]).unwrap();
        let g = x.gather(1, &[2, 0], &[2, 1]).unwrap();
        assert_eq!(g.to_vec(), vec![2.0, 3.0]);
        let g0 = x.gather(0, &[1, 0, 1], &[1, 3]).unwrap();
        assert_eq!(g0.to_vec(), vec![3.0, 1.0, 5.0]);
        assert!(x.gather(1, &[3, 0], &[2, 1]).is_err());
    }

    #[test]
    fn one_hot_rejects_out_of_range_labels() {
        let o = Tensor::<f32>::one_hot(&[1, 0], 3).unwrap();
        assert_eq!(o.to_vec(), vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0]);
        let e = Tensor::<f32>::one_hot(&[5], 3).unwrap_err().to_string();
        assert!(e.contains("one_hot") && e.contains('5'), "{e}");
    }

    #[test]
    fn gradcheck_indexing_with_repeats() {
        let x = rand_input(&[3, 4], 31);
        assert_gradcheck(
            |t| t[0].index_select(0, &[2, 0, 2]),
            std::slice::from_ref(&x),
        );
        assert_gradcheck(
            |t| t[0].index_select(1, &[3, 3, 1]),
            std::slice::from_ref(&x),
        );
        assert_gradcheck(
            |t| t[0].gather(1, &[1, 1, 0, 3, 2, 2], &[3, 2]),
            std::slice::from_ref(&x),
        );
        assert_gradcheck(
            |t| t[0].transpose(0, 1)?.gather(0, &[2, 0, 3], &[1, 3]),
            &[x],
        );
    }
}
