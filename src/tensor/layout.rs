//! How a tensor's logical elements map onto its storage: shape, strides and offset.

use crate::error::{Result, TensorError};

/// Shape, element strides and storage offset of a (possibly non-contiguous) view.
///
/// Strides are in elements; a stride of 0 repeats one element (broadcasting).
///
/// **Invariant relied on by every kernel that reads storage through a layout** (`values`,
/// the strided gathers and zips, the GEMM views of `matmul`): a tensor's layout addresses
/// only its own storage — for a non-empty view,
/// `offset + Σ (shape[i] − 1)·strides[i] < storage.len()`. The fields are read-only so
/// that layouts come only from [`Layout::contiguous`] and from views derived from a valid
/// layout (`permute`, `broadcast_to`, `narrow`, a contiguous reshape), each of which keeps
/// the addressed range inside the original one; `Tensor::from_storage` checks it in debug
/// builds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// Row-major strides of a contiguous tensor of this shape.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = acc;
        acc *= d;
    }
    strides
}

/// Normalises a possibly negative axis against `ndim`.
pub fn normalize_axis(op: &'static str, axis: isize, ndim: usize) -> Result<usize> {
    let a = if axis < 0 { axis + ndim as isize } else { axis };
    if a < 0 || a >= ndim as isize {
        return Err(TensorError::AxisOutOfRange { op, axis, ndim });
    }
    Ok(a as usize)
}

/// Normalises, sorts and deduplicates a set of axes; an empty set means all axes.
pub fn normalize_axes(op: &'static str, axes: &[isize], ndim: usize) -> Result<Vec<usize>> {
    if axes.is_empty() {
        return Ok((0..ndim).collect());
    }
    let mut out = axes
        .iter()
        .map(|&a| normalize_axis(op, a, ndim))
        .collect::<Result<Vec<_>>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The NumPy broadcast of two shapes, or a shape-mismatch error naming `op`.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(TensorError::ShapeMismatch {
                    op,
                    lhs: a.to_vec(),
                    rhs: b.to_vec(),
                })
            }
        };
    }
    Ok(out)
}

impl Layout {
    /// A contiguous row-major layout starting at offset 0.
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    /// A row-major layout of `shape` starting at `offset` (a contiguous view into a
    /// larger buffer).
    pub(crate) fn contiguous_at(shape: &[usize], offset: usize) -> Self {
        Layout {
            offset,
            ..Layout::contiguous(shape)
        }
    }

    /// Size of every dimension.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Storage step, in elements, for a unit step along each dimension.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// Storage index of the first element.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// One past the largest storage index the view addresses (0 for an empty view).
    pub fn storage_extent(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        self.offset
            + self
                .shape
                .iter()
                .zip(&self.strides)
                .map(|(&d, &s)| (d - 1) * s)
                .sum::<usize>()
            + 1
    }

    /// The view of elements `start..start + len` along `axis` (the caller checks the range).
    pub(crate) fn narrow(&self, axis: usize, start: usize, len: usize) -> Layout {
        debug_assert!(start + len <= self.shape[axis]);
        let mut l = self.clone();
        l.offset += start * l.strides[axis];
        l.shape[axis] = len;
        l
    }

    /// Number of logical elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the elements are stored densely in row-major order (size-1 dims ignored).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// The view with dimensions reordered by `perm`.
    pub fn permute(&self, perm: &[usize]) -> Layout {
        Layout {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        }
    }

    /// The view of this layout broadcast to `shape` (stride 0 on new or expanded dims).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Layout> {
        let err = || TensorError::ShapeMismatch {
            op: "broadcast_to",
            lhs: self.shape.clone(),
            rhs: shape.to_vec(),
        };
        if shape.len() < self.shape.len() {
            return Err(err());
        }
        let lead = shape.len() - self.shape.len();
        let mut strides = vec![0; shape.len()];
        for i in 0..self.shape.len() {
            let (d, s) = (self.shape[i], self.strides[i]);
            strides[lead + i] = if d == shape[lead + i] {
                s
            } else if d == 1 {
                0
            } else {
                return Err(err());
            };
        }
        Ok(Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        })
    }

    /// Calls `f(storage_start, inner_stride, run)` for every run of `run` elements along
    /// the innermost dimension (after merging dims that step as one, `coalesce`), in
    /// row-major order.
    pub fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize)) {
        for_each_run_zip([self], |starts, strides, run| f(starts[0], strides[0], run));
    }
}

/// The dims of `layouts` (all of one shape) without unit dims, and with adjacent dims
/// merged wherever every layout steps through the pair as through one dim
/// (`stride[i] = stride[i + 1] · shape[i + 1]`, broadcast zeros included): fewer, longer
/// runs. A `[960, 160, 1, 1]` weight times a `[960, 1, 1, 1]` scale walks 960 runs of 160
/// instead of 153,600 runs of 1 (mobilenet-v2's batch-norm folding, 13% of its inference).
/// Returns the merged shape and each layout's strides for it.
fn coalesce<const N: usize>(layouts: [&Layout; N]) -> (Vec<usize>, [Vec<usize>; N]) {
    let mut shape: Vec<usize> = Vec::new();
    let mut strides: [Vec<usize>; N] = std::array::from_fn(|_| Vec::new());
    for (d, &size) in layouts[0].shape.iter().enumerate() {
        if size == 1 {
            continue;
        }
        let merges = !shape.is_empty()
            && layouts
                .iter()
                .zip(&strides)
                .all(|(l, st)| st[st.len() - 1] == l.strides[d] * size);
        if merges {
            *shape.last_mut().expect("merging into a dim") *= size;
            for (l, st) in layouts.iter().zip(strides.iter_mut()) {
                *st.last_mut().expect("merging into a dim") = l.strides[d];
            }
        } else {
            shape.push(size);
            for (l, st) in layouts.iter().zip(strides.iter_mut()) {
                st.push(l.strides[d]);
            }
        }
    }
    (shape, strides)
}

/// Walks `N` layouts of one shape together, calling `f(starts, inner_strides, run)` for
/// each run of `run` elements along the innermost of their merged dims (`coalesce`), in
/// row-major order (an odometer over the outer dims).
pub fn for_each_run_zip<const N: usize>(
    layouts: [&Layout; N],
    mut f: impl FnMut([usize; N], [usize; N], usize),
) {
    debug_assert!(layouts.iter().all(|l| l.shape == layouts[0].shape));
    if layouts[0].shape.iter().product::<usize>() == 0 {
        return;
    }
    let mut pos = layouts.map(|l| l.offset);
    let (shape, strides) = coalesce(layouts);
    let nd = shape.len();
    if nd == 0 {
        f(pos, [1; N], 1);
        return;
    }
    let inner = std::array::from_fn(|k| strides[k][nd - 1]);
    let run = shape[nd - 1];
    let outer = &shape[..nd - 1];
    let mut idx = vec![0usize; outer.len()];
    loop {
        f(pos, inner, run);
        let mut d = outer.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            for (p, st) in pos.iter_mut().zip(&strides) {
                *p += st[d];
            }
            if idx[d] < outer[d] {
                break;
            }
            for (p, st) in pos.iter_mut().zip(&strides) {
                *p -= st[d] * outer[d];
            }
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        assert_eq!(
            broadcast_shapes("t", &[3, 1, 5], &[4, 1]).unwrap(),
            vec![3, 4, 5]
        );
        assert!(broadcast_shapes("t", &[3, 2], &[3]).is_err());
    }

    #[test]
    fn contiguity_ignores_unit_dims() {
        let l = Layout {
            shape: vec![2, 1, 3],
            strides: vec![3, 99, 1],
            offset: 0,
        };
        assert!(l.is_contiguous());
        assert!(!Layout::contiguous(&[2, 3]).permute(&[1, 0]).is_contiguous());
    }

    #[test]
    fn runs_visit_every_element_in_order() {
        let l = Layout::contiguous(&[2, 3]).permute(&[1, 0]);
        let mut seen = vec![];
        l.for_each_run(|start, stride, run| {
            for j in 0..run {
                seen.push(start + j * stride);
            }
        });
        assert_eq!(seen, vec![0, 3, 1, 4, 2, 5]);
    }

    /// Merged dims visit the same elements in the same order as the plain odometer, in
    /// fewer runs: unit dims dropped, contiguous and broadcast pairs merged, a permuted
    /// pair kept apart.
    #[test]
    fn merged_runs_visit_what_the_plain_walk_visits() {
        let weight = Layout::contiguous(&[4, 3, 1, 1]);
        let scale = Layout {
            shape: vec![4, 3, 1, 1],
            strides: vec![1, 0, 0, 0],
            offset: 0,
        };
        let permuted = Layout::contiguous(&[3, 4]).permute(&[1, 0]);
        let permuted = Layout {
            shape: vec![4, 3, 1, 1],
            strides: vec![permuted.strides[0], permuted.strides[1], 5, 7],
            offset: 2,
        };
        for pair in [[&weight, &scale], [&weight, &permuted], [&scale, &permuted]] {
            let mut walked = vec![];
            let mut runs = 0;
            for_each_run_zip(pair, |[a, b], [ia, ib], run| {
                runs += 1;
                walked.extend((0..run).map(|j| (a + j * ia, b + j * ib)));
            });
            // The plain walk: every index of the shape in row-major order.
            let at = |l: &Layout, i: [usize; 4]| {
                l.offset + (0..4).map(|d| i[d] * l.strides[d]).sum::<usize>()
            };
            let mut plain = vec![];
            for i in 0..4 {
                for j in 0..3 {
                    plain.push((at(pair[0], [i, j, 0, 0]), at(pair[1], [i, j, 0, 0])));
                }
            }
            assert_eq!(walked, plain);
            // Contiguous and broadcast: 4 runs of 3; with the permuted layout too.
            assert_eq!(runs, 4);
        }
        // Both contiguous: one run.
        let mut runs = vec![];
        for_each_run_zip([&weight, &weight], |_, _, run| runs.push(run));
        assert_eq!(runs, vec![12]);
    }
}
