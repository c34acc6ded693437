//! Movement ops: reshape, permute, broadcast, narrow are views where the layout allows;
//! concat and stack copy.

use crate::autograd::Op;
use crate::error::{Result, TensorError};
use crate::tensor::{gather_strided, normalize_axis, Element, Layout, Tensor};
use std::sync::Arc;

impl<T: Element> Tensor<T> {
    /// A view with a new layout over the same storage, recorded as `op`.
    fn view(&self, layout: Layout, op: Op<T>) -> Tensor<T> {
        Tensor::from_op(Arc::clone(self.storage()), layout, op)
    }

    /// The same elements in a new shape: a view when contiguous, else a copy.
    /// ```
    /// use tensorgrad::Tensor;
    ///
    /// let x = Tensor::<f32>::arange(6).reshape(&[2, 3])?;
    /// assert_eq!(x.permute(&[1, 0])?.shape(), &[3, 2]);
    /// assert_eq!(x.narrow(1, 1, 2)?.to_vec(), vec![1.0, 2.0, 4.0, 5.0]);
    /// let both = Tensor::concat(&[x.clone(), x.clone()], 0)?;
    /// assert_eq!(both.shape(), &[4, 3]);
    /// assert!(x.reshape(&[4, 2]).is_err());
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor<T>> {
        if shape.iter().product::<usize>() != self.numel() {
            return Err(TensorError::ShapeMismatch {
                op: "reshape",
                lhs: self.shape().to_vec(),
                rhs: shape.to_vec(),
            });
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let op = Op::Reshape {
            input: self.graph_handle(),
        };
        if self.is_contiguous() {
            let layout = Layout::contiguous_at(shape, self.layout().offset());
            Ok(self.view(layout, op))
        } else {
            let data = gather_strided(self.storage(), self.layout());
            Ok(Tensor::from_op_vec(data, shape, op))
        }
    }

    /// A row-major copy of this tensor, or the tensor itself if it already is one.
    pub fn contiguous(&self) -> Tensor<T> {
        if self.is_contiguous() {
            return self.clone();
        }
        let data = gather_strided(self.storage(), self.layout());
        Tensor::from_op_vec(
            data,
            self.shape(),
            Op::Contiguous {
                input: self.graph_handle(),
            },
        )
    }

    /// Flattens dimensions `start..` into one (`flatten(1)` turns NCHW into N×CHW).
    pub fn flatten(&self, start: usize) -> Result<Tensor<T>> {
        if start > self.ndim() {
            return Err(TensorError::AxisOutOfRange {
                op: "flatten",
                axis: start as isize,
                ndim: self.ndim(),
            });
        }
        let mut shape = self.shape()[..start].to_vec();
        shape.push(self.shape()[start..].iter().product());
        self.reshape(&shape)
    }

    /// Inserts a dimension of size 1 at `axis` (`0..=ndim`).
    pub fn unsqueeze(&self, axis: usize) -> Result<Tensor<T>> {
        if axis > self.ndim() {
            return Err(TensorError::AxisOutOfRange {
                op: "unsqueeze",
                axis: axis as isize,
                ndim: self.ndim(),
            });
        }
        let mut shape = self.shape().to_vec();
        shape.insert(axis, 1);
        self.reshape(&shape)
    }

    /// Removes the dimension `axis`, which must have size 1.
    pub fn squeeze(&self, axis: isize) -> Result<Tensor<T>> {
        let a = normalize_axis("squeeze", axis, self.ndim())?;
        if self.shape()[a] != 1 {
            return Err(TensorError::InvalidShape {
                op: "squeeze",
                shape: self.shape().to_vec(),
                reason: format!("axis {a} has size {}, not 1", self.shape()[a]),
            });
        }
        let mut shape = self.shape().to_vec();
        shape.remove(a);
        self.reshape(&shape)
    }

    /// Reorders dimensions: `out.shape[i] = self.shape[perm[i]]` (a view).
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor<T>> {
        let mut seen = vec![false; self.ndim()];
        let valid = perm.len() == self.ndim()
            && perm
                .iter()
                .all(|&p| p < seen.len() && !std::mem::replace(&mut seen[p], true));
        if !valid {
            return Err(TensorError::InvalidArgument {
                op: "permute",
                reason: format!(
                    "{perm:?} is not a permutation of the axes of shape {:?}",
                    self.shape()
                ),
            });
        }
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(self.clone());
        }
        let layout = self.layout().permute(perm);
        Ok(self.view(
            layout,
            Op::Permute {
                input: self.graph_handle(),
                perm: perm.to_vec(),
            },
        ))
    }

    /// Swaps two axes (a view).
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor<T>> {
        let a = normalize_axis("transpose", a, self.ndim())?;
        let b = normalize_axis("transpose", b, self.ndim())?;
        let mut perm: Vec<usize> = (0..self.ndim()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Broadcasts to `shape` under NumPy rules (a view with zero strides).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor<T>> {
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let layout = self.layout().broadcast_to(shape)?;
        Ok(self.view(
            layout,
            Op::BroadcastTo {
                input: self.graph_handle(),
            },
        ))
    }

    /// Elements `start..start+len` along `axis` (a view).
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor<T>> {
        let a = normalize_axis("narrow", axis, self.ndim())?;
        let size = self.shape()[a];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(TensorError::InvalidArgument {
                op: "narrow",
                reason: format!(
                    "elements {start}..{start}+{len} do not fit in axis {a} of size {size}"
                ),
            });
        }
        if start == 0 && len == size {
            return Ok(self.clone());
        }
        let layout = self.layout().narrow(a, start, len);
        Ok(self.view(
            layout,
            Op::Narrow {
                input: self.graph_handle(),
                axis: a,
                start,
            },
        ))
    }

    /// Joins tensors along `axis`; all other dimensions must agree.
    pub fn concat(tensors: &[Tensor<T>], axis: isize) -> Result<Tensor<T>> {
        let first = tensors
            .first()
            .ok_or_else(|| TensorError::InvalidArgument {
                op: "concat",
                reason: "no tensors to join".into(),
            })?;
        let a = normalize_axis("concat", axis, first.ndim())?;
        for t in tensors {
            let fits = t.ndim() == first.ndim()
                && (0..t.ndim()).all(|d| d == a || t.shape()[d] == first.shape()[d]);
            if !fits {
                return Err(TensorError::ShapeMismatch {
                    op: "concat",
                    lhs: first.shape().to_vec(),
                    rhs: t.shape().to_vec(),
                });
            }
        }
        let mut shape = first.shape().to_vec();
        shape[a] = tensors.iter().map(|t| t.shape()[a]).sum();
        let outer: usize = shape[..a].iter().product();
        let inner: usize = shape[a + 1..].iter().product();
        let parts: Vec<_> = tensors.iter().map(|t| t.values()).collect();
        // A reused buffer: a fresh one page-faults on first touch (resnet20's shortcuts
        // concatenate 6 MB a batch of 128, every step).
        let mut data = crate::memory::take(shape.iter().product());
        for o in 0..outer {
            for (t, v) in tensors.iter().zip(&parts) {
                let block = t.shape()[a] * inner;
                data.extend_from_slice(&v[o * block..(o + 1) * block]);
            }
        }
        Ok(Tensor::from_op_vec(
            data,
            &shape,
            Op::Concat {
                inputs: tensors.iter().map(Tensor::graph_handle).collect(),
                axis: a,
            },
        ))
    }

    /// Stacks tensors of one shape along a new axis `axis` (`0..=ndim`).
    pub fn stack(tensors: &[Tensor<T>], axis: usize) -> Result<Tensor<T>> {
        let expanded = tensors
            .iter()
            .map(|t| t.unsqueeze(axis))
            .collect::<Result<Vec<_>>>()?;
        Tensor::concat(&expanded, axis as isize)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Tensor;
    use std::sync::Arc;

    #[test]
    fn views_share_storage() {
        let x = rand_input(&[2, 3, 4], 1);
        let p = x.permute(&[2, 0, 1]).unwrap();
        assert!(Arc::ptr_eq(x.storage(), p.storage()));
        assert_eq!(p.shape(), &[4, 2, 3]);
        let r = x.reshape(&[6, 4]).unwrap();
        assert!(Arc::ptr_eq(x.storage(), r.storage()));
        let n = x.narrow(1, 1, 2).unwrap();
        assert!(Arc::ptr_eq(x.storage(), n.storage()));
        let b = Tensor::<f64>::ones(&[3, 1])
            .broadcast_to(&[2, 3, 5])
            .unwrap();
        assert_eq!(b.layout().strides(), &[0, 1, 0]);
        // Reshaping a non-contiguous view copies.
        let rp = p.reshape(&[8, 3]).unwrap();
        assert!(!Arc::ptr_eq(x.storage(), rp.storage()));
    }

    #[test]
    fn narrow_out_of_range_names_the_real_axis_size() {
        let x = rand_input(&[2, 3, 4], 1);
        let e = x.narrow(1, 2, 2).unwrap_err().to_string();
        assert!(e.contains("axis 1 of size 3"), "{e}");
        assert!(x.narrow(1, usize::MAX, 2).is_err());
        assert_eq!(x.narrow(1, 1, 2).unwrap().shape(), &[2, 2, 4]);
    }

    #[test]
    fn permute_values() {
        let x = Tensor::<f64>::arange(6).reshape(&[2, 3]).unwrap();
        let t = x.transpose(0, 1).unwrap();
        assert_eq!(t.to_vec(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert!(x.permute(&[0, 0]).is_err());
    }

    #[test]
    fn concat_and_stack_values() {
        let a = Tensor::<f64>::arange(4).reshape(&[2, 2]).unwrap();
        let b = Tensor::<f64>::arange(2).reshape(&[2, 1]).unwrap();
        let c = Tensor::concat(&[a.clone(), b.clone()], 1).unwrap();
        assert_eq!(c.to_vec(), vec![0.0, 1.0, 0.0, 2.0, 3.0, 1.0]);
        let e = Tensor::concat(&[a.clone(), b], 0).unwrap_err().to_string();
        assert!(
            e.contains("concat") && e.contains("[2, 2]") && e.contains("[2, 1]"),
            "{e}"
        );
        let s = Tensor::stack(&[a.clone(), a], 1).unwrap();
        assert_eq!(s.shape(), &[2, 2, 2]);
        assert_eq!(s.to_vec(), vec![0.0, 1.0, 0.0, 1.0, 2.0, 3.0, 2.0, 3.0]);
    }

    #[test]
    fn reshape_checks_size() {
        let e = Tensor::<f32>::zeros(&[2, 3])
            .reshape(&[4])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("reshape") && e.contains("[2, 3]") && e.contains("[4]"),
            "{e}"
        );
    }

    #[test]
    fn gradcheck_movement_ops() {
        let x = rand_input(&[2, 3, 4], 3);
        assert_gradcheck(|t| t[0].reshape(&[4, 6]), std::slice::from_ref(&x));
        assert_gradcheck(|t| t[0].permute(&[2, 0, 1]), std::slice::from_ref(&x));
        assert_gradcheck(
            |t| t[0].transpose(0, 2)?.reshape(&[24]),
            std::slice::from_ref(&x),
        );
        assert_gradcheck(|t| t[0].narrow(2, 1, 2), std::slice::from_ref(&x));
        assert_gradcheck(
            |t| t[0].narrow(0, 1, 1)?.squeeze(0),
            std::slice::from_ref(&x),
        );
        let y = rand_input(&[3, 1], 4);
        assert_gradcheck(|t| t[0].broadcast_to(&[2, 3, 5]), &[y]);
        let a = rand_input(&[2, 3], 5);
        let b = rand_input(&[2, 2], 6);
        assert_gradcheck(
            |t| Tensor::concat(&[t[0].clone(), t[1].clone(), t[0].clone()], 1),
            &[a.clone(), b],
        );
        let c = rand_input(&[2, 3], 7);
        assert_gradcheck(|t| Tensor::stack(&[t[0].clone(), t[1].clone()], 2), &[a, c]);
    }
}
