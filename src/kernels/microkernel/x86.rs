//! The f32 kernels with explicit vectors: an `MR × 16` accumulator in `MR` AVX-512
//! registers or `2·MR` AVX2 registers, one broadcast and one fused multiply-add per row
//! and step of `k`.

use super::{PackedRows, RowStarts, Strided, NR};
use crate::kernels::element::{as_f32, as_f32_mut};
use crate::kernels::Element;
use std::arch::x86_64::*;

/// The operands of [`super::multiply_block`] seen as f32 (shapes already checked), `B`'s
/// rows where `rows` says.
pub(super) struct F32Block<'a, R> {
    a: &'a [f32],
    m: usize,
    k: usize,
    mr: usize,
    b: &'a [f32],
    rows: R,
    bias: Option<&'a [f32]>,
    /// Whether the products are added to `c`'s values rather than written over them.
    accumulate: bool,
    c: &'a mut [f32],
}

impl<'a, R: RowStarts> F32Block<'a, R> {
    /// The operands as f32, or `None` when `T` is another type.
    pub(super) fn of<T: Element>(
        a: &'a PackedRows<T>,
        (b, rows): (&'a [T], R),
        bias: Option<&'a [T]>,
        accumulate: bool,
        c: &'a mut [T],
    ) -> Option<Self> {
        Some(F32Block {
            a: as_f32(&a.data)?,
            m: a.m,
            k: a.k,
            mr: a.mr,
            b: as_f32(b)?,
            rows,
            bias: match bias {
                Some(bias) => Some(as_f32(bias)?),
                None => None,
            },
            accumulate,
            c: as_f32_mut(c)?,
        })
    }

    /// The same operands with rows of `NR` contiguous values `ldb` apart.
    pub(super) fn strided(self, ldb: usize) -> F32Block<'a, Strided> {
        F32Block {
            a: self.a,
            m: self.m,
            k: self.k,
            mr: self.mr,
            b: self.b,
            rows: Strided(ldb),
            bias: self.bias,
            accumulate: self.accumulate,
            c: self.c,
        }
    }
}

/// One row of `c`'s block (`n ≤ NR` values) padded with zeros to [`NR`], for loading into
/// accumulators (a whole row is copied as a fixed-size array, with no `memcpy` call).
#[inline(always)]
fn c_row(c: &[f32]) -> [f32; NR] {
    match <&[f32; NR]>::try_from(c) {
        Ok(full) => *full,
        Err(_) => {
            let mut row = [0.0f32; NR];
            row[..c.len()].copy_from_slice(c);
            row
        }
    }
}

/// Calls `$run::<MR>` for the block's panel height.
macro_rules! by_panel_height {
    ($run:ident, $blk:expr, $n:expr, $ldc:expr, [$($mr:literal),*]) => {
        match $blk.mr {
            $($mr => $run::<$mr, _>($blk, $n, $ldc),)*
            mr => unreachable!("no kernel compiled for panels of {mr} rows"),
        }
    };
}

/// [`super::multiply_block`] on AVX-512: each accumulator row is one 16-float register.
///
/// # Safety
/// The CPU must support AVX-512F, and the block's shapes must have been checked by
/// [`super::multiply_block`] (which also handles an empty inner dimension: `k ≥ 1` here).
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn block_avx512(blk: F32Block<'_, Strided>, n: usize, ldc: usize) {
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const MR: usize, R: RowStarts>(blk: F32Block<'_, R>, n: usize, ldc: usize) {
        let (k, b, b_rows) = (blk.k, blk.b.as_ptr(), blk.rows);
        for (q, panel) in blk.a.chunks_exact(k * MR).enumerate() {
            let rows = (blk.m - q * MR).min(MR);
            let mut acc = [_mm512_setzero_ps(); MR];
            if let Some(bias) = blk.bias {
                for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                    *acc = _mm512_set1_ps(bias[q * MR + r]);
                }
            }
            if blk.accumulate {
                for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                    let row = c_row(&blk.c[(q * MR + r) * ldc..][..n]);
                    // SAFETY: `row` holds 16 floats.
                    *acc = unsafe { _mm512_loadu_ps(row.as_ptr()) };
                }
            }
            let a = panel.as_ptr();
            for kk in 0..k {
                // SAFETY: only strided rows come here (`block_avx512`'s argument), which
                // `super::strided` checked: `b` holds k rows of NR floats, kk < k; the panel
                // holds k·MR.
                unsafe {
                    let bv = _mm512_loadu_ps(b.add(b_rows.at(kk).0));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let av = _mm512_set1_ps(*a.add(kk * MR + r));
                        *acc = _mm512_fmadd_ps(av, bv, *acc);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(rows) {
                let out = &mut blk.c[(q * MR + r) * ldc..][..n];
                if n == NR {
                    // SAFETY: `out` holds NR = 16 floats.
                    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), *acc) };
                } else {
                    let mut row = [0.0f32; NR];
                    // SAFETY: `row` holds 16 floats.
                    unsafe { _mm512_storeu_ps(row.as_mut_ptr(), *acc) };
                    out.copy_from_slice(&row[..n]);
                }
            }
        }
    }
    // SAFETY: the caller guarantees AVX-512F and checked shapes.
    unsafe { by_panel_height!(run, blk, n, ldc, [4, 5, 6, 8, 10, 12, 14]) }
}

/// [`super::multiply_block`] on AVX2 + FMA: each accumulator row is two 8-float registers.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and the block's shapes must have been checked by
/// [`super::multiply_block`] (which also handles an empty inner dimension: `k ≥ 1` here).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn block_avx2<R: RowStarts>(blk: F32Block<'_, R>, n: usize, ldc: usize) {
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run<const MR: usize, R: RowStarts>(blk: F32Block<'_, R>, n: usize, ldc: usize) {
        let (k, b, b_rows) = (blk.k, blk.b.as_ptr(), blk.rows);
        for (q, panel) in blk.a.chunks_exact(k * MR).enumerate() {
            let rows = (blk.m - q * MR).min(MR);
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            if let Some(bias) = blk.bias {
                for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                    *acc = [_mm256_set1_ps(bias[q * MR + r]); 2];
                }
            }
            if blk.accumulate {
                for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                    let row = c_row(&blk.c[(q * MR + r) * ldc..][..n]);
                    // SAFETY: `row` holds 16 floats.
                    *acc = unsafe {
                        [
                            _mm256_loadu_ps(row.as_ptr()),
                            _mm256_loadu_ps(row.as_ptr().add(8)),
                        ]
                    };
                }
            }
            let a = panel.as_ptr();
            for kk in 0..k {
                let (lo, hi) = b_rows.at(kk);
                // SAFETY: the caller checked that both halves of every row kk < k lie in
                // `b` (`super::strided`, `super::multiply_taps`); the panel holds k·MR.
                unsafe {
                    let b0 = _mm256_loadu_ps(b.add(lo));
                    let b1 = _mm256_loadu_ps(b.add(hi));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let av = _mm256_set1_ps(*a.add(kk * MR + r));
                        acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                        acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate().take(rows) {
                let out = &mut blk.c[(q * MR + r) * ldc..][..n];
                if n == NR {
                    // Straight into `c`: through `row` below, the copy of a length the
                    // compiler cannot see is a `memcpy` call per row (2.5% of a resnet20
                    // train step on AMD Zen 3).
                    // SAFETY: `out` holds NR = 16 floats.
                    unsafe {
                        _mm256_storeu_ps(out.as_mut_ptr(), acc[0]);
                        _mm256_storeu_ps(out.as_mut_ptr().add(8), acc[1]);
                    }
                } else {
                    let mut row = [0.0f32; NR];
                    // SAFETY: `row` holds 16 floats.
                    unsafe {
                        _mm256_storeu_ps(row.as_mut_ptr(), acc[0]);
                        _mm256_storeu_ps(row.as_mut_ptr().add(8), acc[1]);
                    }
                    out.copy_from_slice(&row[..n]);
                }
            }
        }
    }
    // SAFETY: the caller guarantees AVX2 + FMA and checked shapes.
    unsafe { by_panel_height!(run, blk, n, ldc, [4, 5, 6, 8, 10, 12, 14]) }
}
