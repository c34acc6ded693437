//! The one door to matrixmultiply's sgemm/dgemm: safe, strided matrix views whose bounds
//! are checked once, and [`gemm`], which asserts that the shapes agree before the single
//! `unsafe` call. Matrix products (`ops/matmul.rs`) and convolutions (`ops/conv`) both go
//! through it.

use crate::tensor::Element;
use std::marker::PhantomData;

/// A read-only strided matrix: element `(i, j)` is `data[offset + i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    offset: usize,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A `rows × cols` view of `data` from `offset` with row and column strides `rs`, `cs`.
    ///
    /// # Panics
    /// If the last element lies outside `data`: views are checked where they are made.
    pub fn new(
        data: &'a [T],
        offset: usize,
        (rows, cols): (usize, usize),
        (rs, cs): (usize, usize),
    ) -> Self {
        if rows > 0 && cols > 0 {
            let last = offset + (rows - 1) * rs + (cols - 1) * cs;
            assert!(
                last < data.len(),
                "matrix view {rows}×{cols} (strides {rs}, {cs}) from {offset} overruns {} elements",
                data.len()
            );
        }
        MatRef {
            data,
            offset,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// Rows and columns.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Rows `lo..lo + len` (a view of the same data).
    pub fn rows(self, lo: usize, len: usize) -> Self {
        assert!(
            lo + len <= self.rows,
            "rows {lo}..{} of {}",
            lo + len,
            self.rows
        );
        MatRef {
            offset: self.offset + lo * self.rs,
            rows: len,
            ..self
        }
    }

    /// Columns `lo..lo + len` (a view of the same data).
    pub fn cols(self, lo: usize, len: usize) -> Self {
        assert!(
            lo + len <= self.cols,
            "columns {lo}..{} of {}",
            lo + len,
            self.cols
        );
        MatRef {
            offset: self.offset + lo * self.cs,
            cols: len,
            ..self
        }
    }
}

/// A mutable matrix with unit column stride: `rows` rows of `cols` elements, `ld` apart.
/// Like `&mut [T]`, it is the only way to its elements while it lives; splitting it gives
/// disjoint views that may be filled on different threads.
#[derive(Debug)]
pub struct MatMut<'a, T> {
    ptr: *mut T,
    rows: usize,
    cols: usize,
    ld: usize,
    /// Elements between neighbouring columns: 1, except in [`MatMut::strided`] views.
    cs: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: a `MatMut` is an exclusive borrow of the elements of its tile, as `&mut [T]`
// is (views from `split_*` never overlap), so it may move to another thread when `T` can.
unsafe impl<T: Send> Send for MatMut<'_, T> {}

impl<'a, T> MatMut<'a, T> {
    /// A `rows × cols` view of `data` whose rows start `ld` elements apart.
    ///
    /// # Panics
    /// If `cols > ld` or the last row runs past `data`.
    pub fn new(data: &'a mut [T], (rows, cols): (usize, usize), ld: usize) -> Self {
        assert!(
            cols <= ld || rows <= 1,
            "row length {cols} exceeds row stride {ld}"
        );
        if rows > 0 && cols > 0 {
            assert!(
                (rows - 1) * ld + cols <= data.len(),
                "matrix {rows}×{cols} (row stride {ld}) overruns {} elements",
                data.len()
            );
        }
        MatMut {
            ptr: data.as_mut_ptr(),
            rows,
            cols,
            ld,
            cs: 1,
            _borrow: PhantomData,
        }
    }

    /// A `rows × cols` view of `data` whose element `(i, j)` is `data[i·rs + j·cs]`, for
    /// rows and columns that interleave (one pixel of every image in a batch: `rs` the
    /// image's size, `cs` its pixels). The elements must be distinct.
    ///
    /// # Panics
    /// If two elements would coincide (`cs = 0` with several columns, or the columns of
    /// a row reaching the next row: `(cols − 1)·cs ≥ rs`, with several rows), or the last
    /// element lies past `data`.
    pub fn strided(
        data: &'a mut [T],
        (rows, cols): (usize, usize),
        (rs, cs): (usize, usize),
    ) -> Self {
        assert!(
            (cs > 0 || cols <= 1) && (rows <= 1 || (cols.max(1) - 1) * cs < rs),
            "rows of {cols} columns {cs} apart overlap at row stride {rs}"
        );
        if rows > 0 && cols > 0 {
            assert!(
                (rows - 1) * rs + (cols - 1) * cs < data.len(),
                "matrix {rows}×{cols} (strides {rs}, {cs}) overruns {} elements",
                data.len()
            );
        }
        MatMut {
            ptr: data.as_mut_ptr(),
            rows,
            cols,
            ld: rs,
            cs,
            _borrow: PhantomData,
        }
    }

    /// Rows and columns.
    pub fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Splits before row `r`: rows `..r` and `r..`.
    pub fn split_rows(self, r: usize) -> (Self, Self) {
        assert!(r <= self.rows, "split at row {r} of {}", self.rows);
        let rest = if r < self.rows {
            // SAFETY: row `r` starts inside the tile (r < rows), so the offset stays
            // within the borrowed allocation.
            unsafe { self.ptr.add(r * self.ld) }
        } else {
            self.ptr
        };
        (
            MatMut {
                rows: r,
                ..self.reborrow()
            },
            MatMut {
                ptr: rest,
                rows: self.rows - r,
                ..self
            },
        )
    }

    /// Splits before column `c`: columns `..c` and `c..` (interleaved in memory, but
    /// disjoint: each keeps to its columns).
    pub fn split_cols(self, c: usize) -> (Self, Self) {
        assert!(c <= self.cols, "split at column {c} of {}", self.cols);
        let rest = if c < self.cols {
            // SAFETY: column `c` of row 0 is inside the tile (c < cols).
            unsafe { self.ptr.add(c * self.cs) }
        } else {
            self.ptr
        };
        (
            MatMut {
                cols: c,
                ..self.reborrow()
            },
            MatMut {
                ptr: rest,
                cols: self.cols - c,
                ..self
            },
        )
    }

    /// A copy of the fields, for building the halves of a split.
    fn reborrow(&self) -> Self {
        MatMut {
            ptr: self.ptr,
            rows: self.rows,
            cols: self.cols,
            ld: self.ld,
            cs: self.cs,
            _borrow: PhantomData,
        }
    }
}

/// `C ← A·B + β·C` (β is 0 or 1 in practice: overwrite or accumulate).
///
/// # Panics
/// If the shapes do not agree (`A: m×k`, `B: k×n`, `C: m×n`).
pub fn gemm<T: Element>(a: MatRef<'_, T>, b: MatRef<'_, T>, beta: T, c: MatMut<'_, T>) {
    let ((m, k), (k2, n)) = (a.dims(), b.dims());
    assert!(
        k == k2 && c.dims() == (m, n),
        "gemm: {m}×{k} · {k2}×{n} into {:?}",
        c.dims()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // A·B is zero: C ← β·C.
        for i in 0..m {
            for j in 0..n {
                // SAFETY: element (i, j) of the m×n tile is inside the borrowed region
                // (checked when the view was made) and no other reference to it exists.
                let v = unsafe { &mut *c.ptr.add(i * c.ld + j * c.cs) };
                *v = if beta == T::zero() {
                    T::zero()
                } else {
                    beta * *v
                };
            }
        }
        return;
    }
    // SAFETY: A and B are in bounds for every (i, p) and (p, j) read (checked by
    // `MatRef::new`, kept by `rows`/`cols`); C's m×n tile with row stride ld is in bounds
    // and exclusively borrowed (checked by `MatMut::new`, kept by the splits), so it
    // aliases neither A nor B (shared borrows of other data).
    unsafe {
        T::gemm(
            m,
            k,
            n,
            T::one(),
            a.data.as_ptr().add(a.offset),
            a.rs as isize,
            a.cs as isize,
            b.data.as_ptr().add(b.offset),
            b.rs as isize,
            b.cs as isize,
            beta,
            c.ptr,
            c.ld as isize,
            c.cs as isize,
        )
    }
}

/// The readable reference for [`gemm`] on dense row-major operands: `C = A·B` with
/// `A: m×k`, `B: k×n`, three loops and a sum. Tests compare the packed product against it.
///
/// ```
/// use tensorgrad::kernels::gemm::gemm_reference;
/// let a = [1.0, 2.0, 3.0, 4.0]; // 2×2
/// let b = [5.0, 6.0, 7.0, 8.0]; // 2×2
/// assert_eq!(gemm_reference(&a, &b, (2, 2, 2)), vec![19.0, 22.0, 43.0, 50.0]);
/// ```
pub fn gemm_reference<T: Element>(a: &[T], b: &[T], (m, k, n): (usize, usize, usize)) -> Vec<T> {
    assert!(
        a.len() == m * k && b.len() == k * n,
        "gemm_reference: operands are not {m}×{k} and {k}×{n}"
    );
    let mut c = vec![T::zero(); m * n];
    for i in 0..m {
        for j in 0..n {
            let mut sum = T::zero();
            for p in 0..k {
                sum += a[i * k + p] * b[p * n + j];
            }
            c[i * n + j] = sum;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A strided output view (column stride 3, rows 3·n + 1 apart) receives the product,
    /// split by columns and accumulated with β = 1, and leaves every other element alone;
    /// with k = 0 it is scaled by β elementwise.
    #[test]
    fn strided_outputs_receive_the_product_and_nothing_else() {
        let (m, k, n) = (4, 5, 6);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32).sin()).collect();
        let want = gemm_reference(&a, &b, (m, k, n));
        let (rs, cs) = (3 * n + 1, 3);
        let mut c = vec![f32::NAN; m * rs];
        for (i, row) in c.chunks_mut(rs).enumerate() {
            for j in 0..n {
                row[j * cs] = i as f32;
            }
        }
        let (av, bv) = (
            MatRef::new(&a, 0, (m, k), (k, 1)),
            MatRef::new(&b, 0, (k, n), (n, 1)),
        );
        let (left, right) = MatMut::strided(&mut c, (m, n), (rs, cs)).split_cols(2);
        gemm(av, bv.cols(0, 2), 1.0, left);
        gemm(av, bv.cols(2, 4), 1.0, right);
        for (e, v) in c.iter().enumerate() {
            let (i, r) = (e / rs, e % rs);
            if r % cs == 0 && r / cs < n {
                let expect = want[i * n + r / cs] + i as f32;
                assert!(
                    (v - expect).abs() < 1e-4,
                    "({i}, {}): {v} vs {expect}",
                    r / cs
                );
            } else {
                assert!(v.is_nan(), "element {e} outside the view was written");
            }
        }
        let none: [f32; 0] = [];
        gemm(
            MatRef::new(&none, 0, (m, 0), (0, 1)),
            MatRef::new(&none, 0, (0, n), (n, 1)),
            0.0,
            MatMut::strided(&mut c, (m, n), (rs, cs)),
        );
        assert_eq!(c.iter().filter(|v| **v == 0.0).count(), m * n);
    }

    #[test]
    fn split_tiles_fill_the_whole_product() {
        let (m, k, n) = (5, 3, 7);
        let a: Vec<f64> = (0..m * k).map(|i| i as f64 * 0.5 - 3.0).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64).sin()).collect();
        let want = gemm_reference(&a, &b, (m, k, n));
        let (av, bv) = (
            MatRef::new(&a, 0, (m, k), (k, 1)),
            MatRef::new(&b, 0, (k, n), (n, 1)),
        );
        let mut c = vec![f64::NAN; m * n];
        let (left, right) = MatMut::new(&mut c, (m, n), n).split_cols(4);
        let (top, bottom) = left.split_rows(2);
        gemm(av.rows(0, 2), bv.cols(0, 4), 0.0, top);
        gemm(av.rows(2, 3), bv.cols(0, 4), 0.0, bottom);
        gemm(av, bv.cols(4, 3), 0.0, right);
        for (x, y) in c.iter().zip(&want) {
            assert!((x - y).abs() < 1e-12);
        }
        // β = 1 accumulates; k = 0 leaves β·C.
        gemm(av, bv, 1.0, MatMut::new(&mut c, (m, n), n));
        assert!((c[8] - 2.0 * want[8]).abs() < 1e-12);
        let empty: [f64; 0] = [];
        let z = MatRef::new(&empty, 0, (m, 0), (0, 1));
        let zb = MatRef::new(&empty, 0, (0, n), (n, 1));
        gemm(z, zb, 0.0, MatMut::new(&mut c, (m, n), n));
        assert!(c.iter().all(|&v| v == 0.0));
    }

    #[test]
    #[should_panic(expected = "overruns")]
    fn a_view_past_its_data_is_refused() {
        let a = [0.0f64; 5];
        MatRef::new(&a, 0, (2, 3), (3, 1));
    }

    #[test]
    #[should_panic(expected = "gemm: 2×3 · 2×2")]
    fn mismatched_shapes_are_refused() {
        let a = [0.0f64; 6];
        let mut c = [0.0f64; 4];
        gemm(
            MatRef::new(&a, 0, (2, 3), (3, 1)),
            MatRef::new(&a, 0, (2, 2), (2, 1)),
            0.0,
            MatMut::new(&mut c, (2, 2), 2),
        );
    }
}
