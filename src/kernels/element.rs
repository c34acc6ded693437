//! The element types a tensor can hold: `f32` for training, `f64` for gradient checks.

use std::cell::RefCell;
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, MulAssign};

/// Keeps [`Element`] to the two types whose GEMM and workspace this module provides.
mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A floating-point element type; every kernel is written once, generic over it. Sealed:
/// implemented for `f32` and `f64` only, so the `unsafe` GEMM hook below has exactly the
/// two implementations of this module.
pub trait Element:
    sealed::Sealed
    + num_traits::Float
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + Sum
    + AddAssign
    + MulAssign
    + 'static
{
    /// Name of the type as it appears in messages and files (`"f32"`, `"f64"`).
    const DTYPE: &'static str;

    /// Converts from `f64`, rounding to the nearest representable value.
    fn from_f64(x: f64) -> Self;

    /// Converts to `f64` exactly.
    fn as_f64(self) -> f64;

    /// Runs `f` on a zeroed-on-first-use scratch buffer of `len` elements owned by this
    /// thread and reused across calls (im2col columns and the like); falls back to a fresh
    /// buffer if this thread's is already in use. Contents on entry are unspecified.
    fn with_workspace<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R;

    /// The cache of freed buffers of this type ([`crate::memory::pool`]).
    fn buffer_pool() -> &'static crate::memory::pool::BufferPool<Self>;

    /// `C ← α·A·B + β·C` for strided row/column layouts (matrixmultiply's sgemm/dgemm).
    /// Kernels call it through the checked wrapper `kernels::gemm::gemm`.
    ///
    /// # Safety
    /// `a`, `b` and `c` must point to matrices of `m×k`, `k×n` and `m×n` elements laid
    /// out with the given strides, valid for reads (and writes, for `c`), and `c` must not
    /// alias `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );
}

thread_local! {
    static WORKSPACE_F32: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static WORKSPACE_F64: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
}

fn with_thread_workspace<T: Copy + Default, R>(
    cell: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    cell.with(|ws| match ws.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, T::default());
            }
            f(&mut buf[..len])
        }
        // Re-entered on this thread (a rayon task stolen while the buffer is lent out).
        Err(_) => f(&mut vec![T::default(); len]),
    })
}

/// Implements [`Element`] for a float type with its matrixmultiply GEMM and workspace.
macro_rules! impl_element {
    ($t:ty, $name:literal, $gemm:path, $workspace:ident) => {
        impl Element for $t {
            const DTYPE: &'static str = $name;

            fn with_workspace<R>(len: usize, f: impl FnOnce(&mut [Self]) -> R) -> R {
                with_thread_workspace(&$workspace, len, f)
            }

            fn buffer_pool() -> &'static crate::memory::pool::BufferPool<Self> {
                static POOL: crate::memory::pool::BufferPool<$t> =
                    crate::memory::pool::BufferPool::new();
                &POOL
            }

            fn from_f64(x: f64) -> Self {
                x as $t
            }

            fn as_f64(self) -> f64 {
                self as f64
            }

            unsafe fn gemm(
                m: usize,
                k: usize,
                n: usize,
                alpha: Self,
                a: *const Self,
                rsa: isize,
                csa: isize,
                b: *const Self,
                rsb: isize,
                csb: isize,
                beta: Self,
                c: *mut Self,
                rsc: isize,
                csc: isize,
            ) {
                // SAFETY: the caller upholds the layout and aliasing contract of the trait.
                unsafe { $gemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc) }
            }
        }
    };
}

impl_element!(f32, "f32", matrixmultiply::sgemm, WORKSPACE_F32);
impl_element!(f64, "f64", matrixmultiply::dgemm, WORKSPACE_F64);

/// `s` as f32, when `T` is f32: the door from the generic kernels to their f32 vector
/// paths.
pub(crate) fn as_f32<T: Element>(s: &[T]) -> Option<&[f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        // SAFETY: T is f32 (checked): same size, alignment and validity.
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<f32>(), s.len()) })
}

/// `s` as f32, mutably, when `T` is f32.
pub(crate) fn as_f32_mut<T: Element>(s: &mut [T]) -> Option<&mut [f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        // SAFETY: T is f32 (checked): same size, alignment and validity; the borrow of
        // `s` moves into the result.
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<f32>(), s.len()) })
}
