//! Matrix products on matrixmultiply's sgemm/dgemm, reading operands through their
//! strides so transposed views need no copy.
//!
//! Parallelism is one level of rayon: over the batch of a batched product, or over
//! tiles of the output of one large product; the GEMM inside each task is
//! single-threaded (matrixmultiply's own threading is off).

use crate::autograd::Op;
use crate::error::{Result, TensorError};
use crate::tensor::{Element, Layout, Tensor};
use rayon::prelude::*;

/// Below this many multiply-adds a product runs on one thread (splitting costs more).
const PARALLEL_MIN_MACS: usize = 1 << 21;

/// A matrix read through its storage: element `(i, j)` is `data[offset + i·rs + j·cs]`.
#[derive(Clone, Copy)]
struct MatRef<'a, T> {
    data: &'a [T],
    offset: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// The last two dims of `layout` as a matrix; `batch_stride` steps between items.
    fn of(data: &'a [T], layout: &Layout) -> (Self, usize) {
        let nd = layout.shape.len();
        let batch_stride = if nd == 3 { layout.strides[0] } else { 0 };
        let m = MatRef {
            data,
            offset: layout.offset,
            rs: layout.strides[nd - 2],
            cs: layout.strides[nd - 1],
        };
        (m, batch_stride)
    }

    fn shifted(self, by: usize) -> Self {
        MatRef {
            offset: self.offset + by,
            ..self
        }
    }
}

/// A raw output pointer that tasks writing disjoint tiles may share.
#[derive(Clone, Copy)]
struct OutPtr<T>(*mut T);
impl<T> OutPtr<T> {
    /// The pointer (a method, so closures capture the `Send` wrapper, not the field).
    fn get(self) -> *mut T {
        self.0
    }
}

// SAFETY: every task writes a disjoint tile of the output buffer, which outlives the
// parallel loop; the pointer is never used to create overlapping references.
unsafe impl<T: Send> Send for OutPtr<T> {}
// SAFETY: as above: shared only to hand disjoint tiles to tasks.
unsafe impl<T: Send> Sync for OutPtr<T> {}

/// `C[m×n] = A[m×k]·B[k×n]` into `c`, which has row stride `ldc` and column stride 1.
///
/// # Safety
/// `c` must be valid for writes of an `m×n` tile with row stride `ldc`, not aliasing A or B.
unsafe fn gemm_tile<T: Element>(
    (m, k, n): (usize, usize, usize),
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: *mut T,
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            // SAFETY: row i of the tile lies within the m×n region the caller guarantees.
            unsafe { std::ptr::write_bytes(c.add(i * ldc), 0, n) };
        }
        return;
    }
    // The last elements read are in bounds because the layouts index their storage.
    debug_assert!(a.offset + (m - 1) * a.rs + (k - 1) * a.cs < a.data.len());
    debug_assert!(b.offset + (k - 1) * b.rs + (n - 1) * b.cs < b.data.len());
    // SAFETY: A and B point into live slices and every index they are read at is in
    // bounds (checked above in debug builds, guaranteed by the layouts); C is valid for
    // the tile by the caller's contract and is a distinct allocation from A and B.
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
            T::zero(),
            c,
            ldc as isize,
            1,
        )
    }
}

/// One product into a row-major `m×n` buffer, split into tiles over rayon when large.
fn gemm_2d<T: Element>(
    dims: (usize, usize, usize),
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [T],
) {
    let (m, k, n) = dims;
    let threads = rayon::current_num_threads();
    if threads == 1 || m * n * k < PARALLEL_MIN_MACS {
        // SAFETY: `c` is exactly an m×n row-major buffer.
        unsafe { gemm_tile(dims, a, b, c.as_mut_ptr(), n) };
        return;
    }
    let out = OutPtr(c.as_mut_ptr());
    let split_rows = m >= n;
    let extent = if split_rows { m } else { n };
    let tile = extent.div_ceil(threads);
    (0..extent.div_ceil(tile)).into_par_iter().for_each(|t| {
        let lo = t * tile;
        let len = tile.min(extent - lo);
        // SAFETY: tile t covers rows (or columns) lo..lo+len only; tiles are disjoint
        // and inside the m×n buffer that outlives this loop.
        unsafe {
            if split_rows {
                gemm_tile(
                    (len, k, n),
                    a.shifted(lo * a.rs),
                    b,
                    out.get().add(lo * n),
                    n,
                );
            } else {
                gemm_tile((m, k, len), a, b.shifted(lo * b.cs), out.get().add(lo), n);
            }
        }
    });
}

impl<T: Element> Tensor<T> {
    /// Matrix product: `[m,k]·[k,n]`, batched `[b,m,k]·[b,k,n]`, or `[b,m,k]·[k,n]`.
    pub fn matmul(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        let (sa, sb) = (self.shape(), rhs.shape());
        let mismatch = || TensorError::ShapeMismatch {
            op: "matmul",
            lhs: sa.to_vec(),
            rhs: sb.to_vec(),
        };
        let (batch, m, k) = match sa.len() {
            2 => (None, sa[0], sa[1]),
            3 => (Some(sa[0]), sa[1], sa[2]),
            _ => return Err(mismatch()),
        };
        let (k2, n) = match (sb.len(), batch) {
            (2, _) => (sb[0], sb[1]),
            (3, Some(bs)) if sb[0] == bs => (sb[1], sb[2]),
            _ => return Err(mismatch()),
        };
        if k != k2 {
            return Err(mismatch());
        }
        let (a, a_step) = MatRef::of(self.storage(), self.layout());
        let (b, b_step) = MatRef::of(rhs.storage(), rhs.layout());
        let dims = (m, k, n);
        let (data, shape) = match batch {
            None => {
                let mut c = vec![T::zero(); m * n];
                gemm_2d(dims, a, b, &mut c);
                (c, vec![m, n])
            }
            Some(1) => {
                let mut c = vec![T::zero(); m * n];
                gemm_2d(dims, a, b, &mut c);
                (c, vec![1, m, n])
            }
            Some(bs) => {
                let mut c = vec![T::zero(); bs * m * n];
                c.par_chunks_mut((m * n).max(1))
                    .enumerate()
                    .for_each(|(i, ci)| {
                        // SAFETY: `ci` is exactly one m×n row-major output item.
                        unsafe {
                            gemm_tile(
                                dims,
                                a.shifted(i * a_step),
                                b.shifted(i * b_step),
                                ci.as_mut_ptr(),
                                n,
                            )
                        };
                    });
                (c, vec![bs, m, n])
            }
        };
        Ok(Tensor::from_op_vec(
            data,
            &shape,
            // dA = G·Bᵀ reads B, dB = Aᵀ·G reads A: keep each only if the other needs it.
            Op::Matmul {
                lhs: self.kept_if(rhs.requires_grad()),
                rhs: rhs.kept_if(self.requires_grad()),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Tensor;

    /// Textbook triple loop, the reference for every layout.
    fn naive(a: &Tensor<f64>, b: &Tensor<f64>) -> Vec<f64> {
        let (m, k, n) = (a.shape()[0], a.shape()[1], b.shape()[1]);
        let (av, bv) = (a.to_vec(), b.to_vec());
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| av[i * k + p] * bv[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_for_transposed_views() {
        let a = rand_input(&[5, 7], 51);
        let b = rand_input(&[7, 3], 52);
        let at = rand_input(&[7, 5], 53).transpose(0, 1).unwrap();
        let bt = rand_input(&[3, 7], 54).transpose(0, 1).unwrap();
        for (x, y) in [(&a, &b), (&at, &b), (&a, &bt), (&at, &bt)] {
            assert_close(&x.matmul(y).unwrap().to_vec(), &naive(x, y), 1e-13);
        }
    }

    #[test]
    fn large_products_split_into_tiles_agree_with_naive() {
        // Big enough to cross the parallel threshold; tall and wide variants.
        for (m, k, n) in [(300, 40, 200), (16, 300, 700)] {
            let a = rand_input(&[m, k], 55);
            let b = rand_input(&[k, n], 56);
            assert_close(&a.matmul(&b).unwrap().to_vec(), &naive(&a, &b), 1e-12);
        }
    }

    #[test]
    fn batched_matches_per_item_products() {
        let a = rand_input(&[4, 3, 5], 57);
        let b = rand_input(&[4, 5, 2], 58);
        let c = a.matmul(&b).unwrap();
        assert_eq!(c.shape(), &[4, 3, 2]);
        for i in 0..4 {
            let ai = a.narrow(0, i, 1).unwrap().squeeze(0).unwrap();
            let bi = b.narrow(0, i, 1).unwrap().squeeze(0).unwrap();
            let ci = c.narrow(0, i, 1).unwrap().to_vec();
            assert_close(&ci, &naive(&ai, &bi), 1e-13);
        }
        let shared = rand_input(&[5, 2], 59);
        let c2 = a.matmul(&shared).unwrap();
        let a0 = a.narrow(0, 2, 1).unwrap().squeeze(0).unwrap();
        assert_close(
            &c2.narrow(0, 2, 1).unwrap().to_vec(),
            &naive(&a0, &shared),
            1e-13,
        );
    }

    #[test]
    fn shape_errors_name_both_shapes() {
        let a = Tensor::<f32>::zeros(&[2, 3]);
        let b = Tensor::<f32>::zeros(&[4, 5]);
        let e = a.matmul(&b).unwrap_err().to_string();
        assert!(
            e.contains("matmul") && e.contains("[2, 3]") && e.contains("[4, 5]"),
            "{e}"
        );
        assert!(Tensor::<f32>::zeros(&[2, 3, 4])
            .matmul(&Tensor::zeros(&[3, 4, 5]))
            .is_err());
    }

    #[test]
    fn gradcheck_matmul_layouts() {
        let a = rand_input(&[3, 4], 61);
        let b = rand_input(&[4, 2], 62);
        assert_gradcheck(|t| t[0].matmul(&t[1]), &[a.clone(), b.clone()]);
        // Transposed operands (views with swapped strides).
        let at = rand_input(&[4, 3], 63);
        let bt = rand_input(&[2, 4], 64);
        assert_gradcheck(
            |t| t[0].transpose(0, 1)?.matmul(&t[1].transpose(0, 1)?),
            &[at, bt],
        );
        // Batched, and batched by a shared matrix.
        let x = rand_input(&[3, 2, 4], 65);
        let y = rand_input(&[3, 4, 3], 66);
        assert_gradcheck(|t| t[0].matmul(&t[1]), &[x.clone(), y]);
        assert_gradcheck(|t| t[0].matmul(&t[1]), &[x, b]);
        // Batch of one.
        let p = rand_input(&[1, 2, 3], 67);
        let q = rand_input(&[1, 3, 2], 68);
        assert_gradcheck(|t| t[0].matmul(&t[1]), &[p, q]);
    }
}
