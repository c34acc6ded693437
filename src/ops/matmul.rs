//! Matrix products on matrixmultiply's sgemm/dgemm, reading operands through their
//! strides so transposed views need no copy.
//!
//! Parallelism is one level of rayon: over the batch of a batched product, or over
//! tiles of the output of one large product; the GEMM inside each task (through the
//! checked wrapper of `ops/gemm.rs`) is single-threaded (matrixmultiply's own threading
//! is off).

use crate::autograd::Op;
use crate::error::{Result, TensorError};
use crate::kernels::gemm::{gemm, MatMut, MatRef};
use crate::tensor::{Element, Layout, Tensor};
use rayon::prelude::*;

/// Below this many multiply-adds a product runs on one thread (splitting costs more).
const PARALLEL_MIN_MACS: usize = 1 << 21;

/// The shapes a matrix product accepts, worked out once for forward and backward:
/// `[m,k]·[k,n]`, batched `[b,m,k]·[b,k,n]`, or `[b,m,k]·[k,n]` (one right matrix shared
/// by every batch item).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MatmulDims {
    /// Batch size of a 3-D left operand.
    pub batch: Option<usize>,
    /// Rows of the left matrix.
    pub m: usize,
    /// The contracted size.
    pub k: usize,
    /// Columns of the right matrix.
    pub n: usize,
    /// A 2-D right operand shared by every item of a 3-D left operand.
    pub shared_rhs: bool,
}

impl MatmulDims {
    /// The dimensions of `lhs · rhs`, or a shape-mismatch error naming both shapes.
    pub fn of(lhs: &[usize], rhs: &[usize]) -> Result<Self> {
        let mismatch = || TensorError::ShapeMismatch {
            op: "matmul",
            lhs: lhs.to_vec(),
            rhs: rhs.to_vec(),
        };
        let (batch, m, k) = match lhs.len() {
            2 => (None, lhs[0], lhs[1]),
            3 => (Some(lhs[0]), lhs[1], lhs[2]),
            _ => return Err(mismatch()),
        };
        let (k2, n) = match (rhs.len(), batch) {
            (2, _) => (rhs[0], rhs[1]),
            (3, Some(bs)) if rhs[0] == bs => (rhs[1], rhs[2]),
            _ => return Err(mismatch()),
        };
        if k != k2 {
            return Err(mismatch());
        }
        Ok(MatmulDims {
            batch,
            m,
            k,
            n,
            shared_rhs: batch.is_some() && rhs.len() == 2,
        })
    }

    /// The output's shape.
    pub fn out_shape(&self) -> Vec<usize> {
        match self.batch {
            None => vec![self.m, self.n],
            Some(b) => vec![b, self.m, self.n],
        }
    }
}

/// Item `item` of a 2-D or batched 3-D operand as a matrix (a 2-D operand for every item).
fn matrix<'a, T>(data: &'a [T], layout: &Layout, item: usize) -> MatRef<'a, T> {
    let (shape, strides) = (layout.shape(), layout.strides());
    let nd = shape.len();
    let step = if nd == 3 { strides[0] } else { 0 };
    MatRef::new(
        data,
        layout.offset() + item * step,
        (shape[nd - 2], shape[nd - 1]),
        (strides[nd - 2], strides[nd - 1]),
    )
}

/// One product into a row-major `m×n` buffer, split into tiles over rayon when large.
fn gemm_2d<T: Element>(a: MatRef<'_, T>, b: MatRef<'_, T>, c: &mut [T]) {
    let ((m, k), (_, n)) = (a.dims(), b.dims());
    let c = MatMut::new(c, (m, n), n);
    let threads = rayon::current_num_threads();
    if threads == 1 || m * n * k < PARALLEL_MIN_MACS {
        gemm(a, b, T::zero(), c);
        return;
    }
    // Split the longer side of the output into one tile per thread.
    let split_rows = m >= n;
    let extent = if split_rows { m } else { n };
    let tile = extent.div_ceil(threads);
    let mut tiles = Vec::with_capacity(threads);
    let (mut rest, mut lo) = (c, 0);
    while lo < extent {
        let len = tile.min(extent - lo);
        let (head, tail) = if split_rows {
            rest.split_rows(len)
        } else {
            rest.split_cols(len)
        };
        tiles.push((lo, len, head));
        (rest, lo) = (tail, lo + len);
    }
    tiles.into_par_iter().for_each(|(lo, len, c_tile)| {
        if split_rows {
            gemm(a.rows(lo, len), b, T::zero(), c_tile);
        } else {
            gemm(a, b.cols(lo, len), T::zero(), c_tile);
        }
    });
}

impl<T: Element> Tensor<T> {
    /// Matrix product: `[m,k]·[k,n]`, batched `[b,m,k]·[b,k,n]`, or `[b,m,k]·[k,n]`.
    ///
    /// ```
    /// use tensorgrad::Tensor;
    ///
    /// let a = Tensor::<f64>::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    /// let b = Tensor::<f64>::from_vec(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2])?;
    /// assert_eq!(a.matmul(&b)?.to_vec(), vec![4.0, 5.0, 10.0, 11.0]);
    /// // Transposed views are read through their strides, not copied.
    /// assert_eq!(a.matmul(&a.transpose(0, 1)?)?.shape(), &[2, 2]);
    /// assert!(a.matmul(&a).is_err());
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn matmul(&self, rhs: &Tensor<T>) -> Result<Tensor<T>> {
        let dims = MatmulDims::of(self.shape(), rhs.shape())?;
        let (m, n) = (dims.m, dims.n);
        let (sa, sb) = (self.storage(), rhs.storage());
        let (la, lb) = (self.layout(), rhs.layout());
        // Every product overwrites its C (β = 0: not read), so a reused buffer's old
        // values need no zeroing first.
        let mut c = crate::memory::take_stale(dims.batch.unwrap_or(1) * m * n);
        match dims.batch {
            None | Some(1) => gemm_2d(matrix(sa, la, 0), matrix(sb, lb, 0), &mut c),
            Some(_) => c
                .par_chunks_mut((m * n).max(1))
                .enumerate()
                .for_each(|(i, ci)| {
                    let (a, b) = (matrix(sa, la, i), matrix(sb, lb, i));
                    gemm(a, b, T::zero(), MatMut::new(ci, (m, n), n));
                }),
        }
        Ok(Tensor::from_op_vec(
            c,
            &dims.out_shape(),
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
