//! F(4×4)'s column phases in explicit AVX2 shuffles, for f32: the fast paths of `f4`'s
//! `phases` (a row's columns split by `col % 4`) and `interleave` (the phases put back
//! into a row), whose plain fixed-size loops are the reference they are tested against.
//!
//! Left to LLVM, those loops became scalar inserts and extracts through the stack. Here a
//! group of 8 tiles (32 columns) is an 8 × 4 transpose of four registers: two
//! `vperm2f128` swaps of 128-bit halves and an in-lane 4 × 4 transpose (unpack, shuffle),
//! twelve shuffles in all. The transforms are lane-wise, so the values are exactly the
//! plain loops'. On AMD Zen 3 (resnet20 train step, batch 128, 1 thread, min of 4
//! profiles) the forward of the 16→16 layers on 32×32 went from 49.2 to 47.1 ms a step
//! and of the 32→32 layers on 16×16 from 26.4 to 24.9: the transforms' loads and stores
//! through their scratch rows, not the shuffles, are most of what is left.

use crate::kernels::element::{as_f32, as_f32_mut};
use crate::kernels::transpose::transpose_in_lanes;
use crate::kernels::{Element, Geometry};
use std::arch::x86_64::*;

/// `f4::row_patches` for f32 by the shuffles below: the six column phases of a lane group
/// of 8 tiles of `rows[0]` from tile column `j0`, or (`cols == 4`) of 4 tiles of each of
/// the two rows; `None` for another `T`.
///
/// # Safety
/// The CPU must support AVX2.
///
/// # Panics
/// If the rows are shorter than `4·cols + 36` (the padded rows' length).
#[inline(always)]
pub(super) unsafe fn row_patches<T: Element>(
    rows: [&[T]; 2],
    j0: usize,
    cols: usize,
) -> Option<[[T; 8]; 6]> {
    let mut d = [[T::zero(); 8]; 6];
    let (a, b, out) = (
        as_f32(rows[0])?,
        as_f32(rows[1])?,
        as_f32_mut(d.as_flattened_mut())?,
    );
    let out: &mut [f32; 48] = out.try_into().expect("6 lane groups");
    // SAFETY: the caller guarantees AVX2; the functions check their rows' lengths.
    unsafe {
        if cols == 4 {
            row_patches4x2(a, b, out);
        } else {
            row_patches8(a, 4 * j0, out);
        }
    }
    Some(d)
}

/// `f4::interleave` for f32 by the shuffles below: the lane group `px` of tile row `ti`
/// (output row `r`, of the block's `rows`) from tile column `j0` into `plane` (one output
/// channel of a layer of geometry `g`). Returns whether it wrote: not for another `T`,
/// nor for a group whose pixels overrun its row (the plain loops cut those).
///
/// # Safety
/// The CPU must support AVX2.
#[inline(always)]
pub(super) unsafe fn interleave<T: Element>(
    px: &[[T; 8]; 4],
    cols: usize,
    (r, ti, rows): (usize, usize, usize),
    j0: usize,
    g: &Geometry,
    plane: &mut [T],
) -> bool {
    let Some(px) = as_f32(px.as_flattened()) else {
        return false;
    };
    let px: &[f32; 32] = px.try_into().expect("4 lane groups");
    let mut out = [0.0f32; 32];
    if cols == 4 {
        // Two rows of 4 tiles, 16 pixels each: only whole rows of 16 here.
        if g.ow != 16 {
            return false;
        }
        // SAFETY: the caller guarantees AVX2.
        unsafe { interleave4x2(px, &mut out) };
        for half in 0..2 {
            let r = r + 4 * half;
            if r < g.oh && ti + half < rows {
                let row = as_f32_mut(&mut plane[r * 16..][..16]).expect("f32");
                row.copy_from_slice(&out[16 * half..][..16]);
            }
        }
    } else {
        if r >= g.oh {
            return true;
        }
        let Some(row) = plane[r * g.ow..][..g.ow].get_mut(4 * j0..4 * j0 + 32) else {
            return false;
        };
        // SAFETY: the caller guarantees AVX2.
        unsafe { interleave8(px, &mut out) };
        as_f32_mut(row).expect("f32").copy_from_slice(&out);
    }
    true
}

/// The four column phases of 8 tiles from `row[at..at + 32]`: `out[k][j] = row[at + 4j + k]`.
#[target_feature(enable = "avx2")]
#[inline]
fn phases8(row: &[f32], at: usize) -> [__m256; 4] {
    let src = &row[at..at + 32];
    // SAFETY: `src` holds 32 floats: four unaligned loads of 8.
    let r = unsafe { [0, 8, 16, 24].map(|i| _mm256_loadu_ps(src.as_ptr().add(i))) };
    phases8_of(r)
}

/// The four column phases of 8 tiles held in the registers `r` (32 consecutive columns):
/// `out[k]` lane j is column `4j + k`.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn phases8_of(r: [__m256; 4]) -> [__m256; 4] {
    // Tiles 0–1 are r[0], 2–3 r[1], 4–5 r[2], 6–7 r[3]: first the halves holding tiles
    // 0–3 go to the low lanes and 4–7 to the high ones, then each lane is a 4 × 4 block.
    transpose_in_lanes([
        _mm256_permute2f128_ps::<0x20>(r[0], r[2]),
        _mm256_permute2f128_ps::<0x31>(r[0], r[2]),
        _mm256_permute2f128_ps::<0x20>(r[1], r[3]),
        _mm256_permute2f128_ps::<0x31>(r[1], r[3]),
    ])
}

/// `f4::row_patches` for one row of 8 tiles from column `at`: `out[k][j] = row[at + 4j + k]`
/// for the six columns `k < 6` of each tile's patch (`out` is `[[f32; 8]; 6]` flattened).
///
/// # Safety
/// The CPU must support AVX2.
///
/// # Panics
/// If `row` is shorter than `at + 36`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn row_patches8(row: &[f32], at: usize, out: &mut [f32; 48]) {
    let [d0, d1, d2, d3] = phases8(row, at);
    let [d4, d5, _, _] = phases8(row, at + 4);
    store6(out, [d0, d1, d2, d3, d4, d5]);
}

/// Six registers into `out`, in order.
#[target_feature(enable = "avx2")]
#[inline]
fn store6(out: &mut [f32; 48], v: [__m256; 6]) {
    for (k, v) in v.into_iter().enumerate() {
        // SAFETY: `out` holds 48 floats; this stores 8 from 8·k.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * k), v) };
    }
}

/// `f4::row_patches` for two rows of 4 tiles: lanes 0–3 are row `a`'s tiles, 4–7 row `b`'s,
/// `out[k][l] = a[4l + k]` and `out[k][4 + l] = b[4l + k]` for `k < 6` (`out` flattened).
///
/// # Safety
/// The CPU must support AVX2.
///
/// # Panics
/// If `a` or `b` is shorter than 20.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn row_patches4x2(a: &[f32], b: &[f32], out: &mut [f32; 48]) {
    let (a, b) = (&a[..20], &b[..20]);
    // Register m holds tile m of row a in its low half and of row b in its high half.
    // SAFETY: `a` and `b` hold 20 floats; the loads read 4 at offsets up to 16.
    let tiles = |shift: usize| unsafe {
        [0, 4, 8, 12]
            .map(|i| _mm256_loadu2_m128(b.as_ptr().add(shift + i), a.as_ptr().add(shift + i)))
    };
    let [d0, d1, d2, d3] = transpose_in_lanes(tiles(0));
    let [d4, d5, _, _] = transpose_in_lanes(tiles(4));
    store6(out, [d0, d1, d2, d3, d4, d5]);
}

/// `f4::interleave` for 8 tiles: `out[4l + v] = px[v][l]` (`px` is `[[f32; 8]; 4]` flattened).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn interleave8(px: &[f32; 32], out: &mut [f32; 32]) {
    for (i, v) in interleave8_of(load4(px)).into_iter().enumerate() {
        // SAFETY: `out` holds 32 floats; this stores 8 from 8·i.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * i), v) };
    }
}

/// The four column phases `p` of 8 tiles (`p[v]` lane l: tile l's column v) back in order:
/// 32 consecutive columns, 8 to a register. The inverse of [`phases8_of`].
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn interleave8_of(p: [__m256; 4]) -> [__m256; 4] {
    // In-lane transposes make register m hold tile m in its low half and tile m + 4 in its
    // high one; the halves are then paired back in order.
    let [s0, s1, s2, s3] = transpose_in_lanes(p);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s1),
        _mm256_permute2f128_ps::<0x20>(s2, s3),
        _mm256_permute2f128_ps::<0x31>(s0, s1),
        _mm256_permute2f128_ps::<0x31>(s2, s3),
    ]
}

/// `f4::interleave` for two rows of 4 tiles: `out[4l + v] = px[v][l]` (row a, the first
/// 16) and `out[16 + 4l + v] = px[v][4 + l]` (row b).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn interleave4x2(px: &[f32; 32], out: &mut [f32; 32]) {
    let p = load4(px);
    for (m, v) in transpose_in_lanes(p).into_iter().enumerate() {
        // SAFETY: `out` holds 32 floats; the stores write 4 at 4m and at 16 + 4m.
        unsafe {
            _mm256_storeu2_m128(
                out.as_mut_ptr().add(16 + 4 * m),
                out.as_mut_ptr().add(4 * m),
                v,
            )
        };
    }
}

/// Four registers from `px`, in order.
#[target_feature(enable = "avx2")]
#[inline]
fn load4(px: &[f32; 32]) -> [__m256; 4] {
    // SAFETY: `px` holds 32 floats; each load reads 8 from 8·k.
    [0, 1, 2, 3].map(|k| unsafe { _mm256_loadu_ps(px.as_ptr().add(8 * k)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avx2() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
    }

    /// Every value of the row is distinct, so any misplaced lane shows.
    fn row(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32 * 1.5 - 7.0).collect()
    }

    #[test]
    fn row_patches_are_the_column_phases() {
        if !avx2() {
            return;
        }
        let (a, b) = (
            row(40),
            row(40).iter().map(|v| v + 100.0).collect::<Vec<_>>(),
        );
        for at in [0, 4, 3] {
            let mut out = [0.0; 48];
            // SAFETY: the CPU has AVX2 (checked above).
            unsafe { row_patches8(&a, at, &mut out) };
            for (k, lanes) in out.chunks_exact(8).enumerate() {
                for (j, v) in lanes.iter().enumerate() {
                    assert_eq!(*v, a[at + 4 * j + k], "at {at}, column {k}, tile {j}");
                }
            }
        }
        let mut out = [0.0; 48];
        // SAFETY: the CPU has AVX2 (checked above).
        unsafe { row_patches4x2(&a, &b, &mut out) };
        for (k, lanes) in out.chunks_exact(8).enumerate() {
            for l in 0..4 {
                assert_eq!(lanes[l], a[4 * l + k], "row a, column {k}, tile {l}");
                assert_eq!(lanes[4 + l], b[4 * l + k], "row b, column {k}, tile {l}");
            }
        }
    }

    #[test]
    fn interleaving_puts_the_phases_back_in_order() {
        if !avx2() {
            return;
        }
        let values = row(32);
        let flat: [f32; 32] = std::array::from_fn(|i| values[i]);
        let px = |v: usize, l: usize| flat[8 * v + l];
        let mut out = [0.0; 32];
        // SAFETY: the CPU has AVX2 (checked above).
        unsafe { interleave8(&flat, &mut out) };
        for l in 0..8 {
            for v in 0..4 {
                assert_eq!(out[4 * l + v], px(v, l), "tile {l}, phase {v}");
            }
        }
        // SAFETY: the CPU has AVX2 (checked above).
        unsafe { interleave4x2(&flat, &mut out) };
        for l in 0..4 {
            for v in 0..4 {
                assert_eq!(out[4 * l + v], px(v, l), "row a, tile {l}, phase {v}");
                assert_eq!(
                    out[16 + 4 * l + v],
                    px(v, 4 + l),
                    "row b, tile {l}, phase {v}"
                );
            }
        }
    }
}
