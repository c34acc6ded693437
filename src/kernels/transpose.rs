//! Matrix transposes between buffers, in 8×8 blocks (and 8×4 and 4×8 ones at the edges).
//!
//! The Winograd backward pass transposes every image into NHWC (6% of a cifar-cnn step
//! with element-wise block copies), so f32 blocks on AVX take an in-register transpose:
//! eight row loads, 24 shuffles, eight column stores. The depthwise kernel's channels-last
//! path transposes `c × 4` planes (mobilenet-v2's 2×2 maps) and back: those take 8×4 and
//! 4×8 blocks (four loads, eight shuffles, four stores) instead of one element at a time;
//! a single row or column that is contiguous on both sides (1×1 maps) is a copy.

use std::any::TypeId;

/// Block side: eight f32 lanes of an AVX register.
const B: usize = 8;

/// The short side of the edge blocks: four f32 lanes, half an AVX register.
const H: usize = 4;

/// `dst[j·dst_stride + i] = src[i·src_stride + j]` for `i < rows`, `j < cols`: a transpose
/// in 8×8 blocks, so that its loads and its stores are both runs of 8.
///
/// # Panics
/// If `src` or `dst` is too short for the given sizes and strides.
#[inline(always)]
pub fn copy_transposed<T: Copy + Default + 'static>(
    src: &[T],
    (rows, cols, src_stride): (usize, usize, usize),
    dst: &mut [T],
    dst_stride: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    // One column read with stride 1, or one row written with stride 1: a copy.
    if (cols == 1 && src_stride == 1) || (rows == 1 && dst_stride == 1) {
        let n = rows * cols;
        dst[..n].copy_from_slice(&src[..n]);
        return;
    }
    // Every element read or written, checked once here; the blocks index within them.
    assert!(
        src.len() >= (rows - 1) * src_stride + cols,
        "transpose: source too short"
    );
    assert!(
        dst.len() >= (cols - 1) * dst_stride + rows,
        "transpose: destination too short"
    );
    #[cfg(target_arch = "x86_64")]
    if TypeId::of::<T>() == TypeId::of::<f32>() && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: T is f32 (checked above), so the casts only rename the element type.
        let (src, dst) = unsafe {
            (
                std::slice::from_raw_parts(src.as_ptr().cast::<f32>(), src.len()),
                std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<f32>(), dst.len()),
            )
        };
        return blocks(
            src,
            (rows, cols, src_stride),
            dst,
            dst_stride,
            // SAFETY: the CPU has AVX (checked above), and `blocks` hands over in-bounds
            // 8×8 blocks: 8 rows of 8 elements from `s`, 8 of 8 into `d`.
            |s, d| unsafe { block_avx(s, src_stride, d, dst_stride) },
            // SAFETY: as above, for 8 rows of 4 from `s` and 4 of 8 into `d`.
            |s, d| unsafe { block_8x4_avx(s, src_stride, d, dst_stride) },
            // SAFETY: as above, for 4 rows of 8 from `s` and 8 of 4 into `d`.
            |s, d| unsafe { block_4x8_avx(s, src_stride, d, dst_stride) },
        );
    }
    blocks(
        src,
        (rows, cols, src_stride),
        dst,
        dst_stride,
        |s, d| block_scalar(s, src_stride, d, dst_stride),
        |s, d| transpose_reference(s, (B, H, src_stride), d, dst_stride),
        |s, d| transpose_reference(s, (H, B, src_stride), d, dst_stride),
    );
}

/// The 8×8 blocks through `block` (given each block's first source and destination
/// element); at the right edge one 8-row × 4-column block through `tall` where 4 columns
/// are left, at the bottom 4-row × 8-column blocks through `wide` where 4 rows are left;
/// then what remains one element at a time.
#[inline(always)]
fn blocks<T: Copy>(
    src: &[T],
    (rows, cols, src_stride): (usize, usize, usize),
    dst: &mut [T],
    dst_stride: usize,
    mut block: impl FnMut(&[T], &mut [T]),
    mut tall: impl FnMut(&[T], &mut [T]),
    mut wide: impl FnMut(&[T], &mut [T]),
) {
    // The source and destination of the `r × c` block at row i, column j.
    let at = |i: usize, j: usize, (r, c): (usize, usize)| {
        let (from, to) = (i * src_stride + j, j * dst_stride + i);
        (
            from..from + (r - 1) * src_stride + c,
            to..to + (c - 1) * dst_stride + r,
        )
    };
    // Rows `band`, from column `first` on, one element at a time.
    let single = |dst: &mut [T], band: std::ops::Range<usize>, first: usize| {
        for j in first..cols {
            for r in band.clone() {
                dst[j * dst_stride + r] = src[r * src_stride + j];
            }
        }
    };
    let mut i = 0;
    while i + B <= rows {
        let mut j = 0;
        while j + B <= cols {
            let (s, d) = at(i, j, (B, B));
            block(&src[s], &mut dst[d]);
            j += B;
        }
        if j + H <= cols {
            let (s, d) = at(i, j, (B, H));
            tall(&src[s], &mut dst[d]);
            j += H;
        }
        single(dst, i..i + B, j);
        i += B;
    }
    if i + H <= rows {
        let mut j = 0;
        while j + B <= cols {
            let (s, d) = at(i, j, (H, B));
            wide(&src[s], &mut dst[d]);
            j += B;
        }
        single(dst, i..i + H, j);
        i += H;
    }
    single(dst, i..rows, 0);
}

/// One 8×8 block, element by element through a local array.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `c` picks a column of `block`: indices read clearer
fn block_scalar<T: Copy>(src: &[T], src_stride: usize, dst: &mut [T], dst_stride: usize) {
    let mut block = [[src[0]; B]; B];
    for (r, lanes) in block.iter_mut().enumerate() {
        lanes.copy_from_slice(&src[r * src_stride..r * src_stride + B]);
    }
    for c in 0..B {
        for (r, o) in dst[c * dst_stride..c * dst_stride + B]
            .iter_mut()
            .enumerate()
        {
            *o = block[r][c];
        }
    }
}

/// One 8×8 f32 block in AVX registers.
///
/// # Safety
/// The CPU must have AVX; `src` must hold 8 rows of 8 at `src_stride` and `dst` 8 rows of
/// 8 at `dst_stride`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn block_avx(src: &[f32], src_stride: usize, dst: &mut [f32], dst_stride: usize) {
    use std::arch::x86_64::*;
    debug_assert!(src.len() >= (B - 1) * src_stride + B);
    debug_assert!(dst.len() >= (B - 1) * dst_stride + B);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    // SAFETY: rows 0..8 of 8 elements at `src_stride` are within `src` (caller's contract).
    let r: [__m256; B] = std::array::from_fn(|k| unsafe { _mm256_loadu_ps(s.add(k * src_stride)) });
    // Pairs of rows interleaved: t0 = (a00 a10 a01 a11 | a04 a14 a05 a15), …
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    // Quads: s0 = (a00 a10 a20 a30 | a04 a14 a24 a34), s1 = columns 1 and 5, …
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    // Low halves give columns 0–3, high halves columns 4–7.
    let c = [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ];
    for (k, column) in c.into_iter().enumerate() {
        // SAFETY: rows 0..8 of 8 elements at `dst_stride` are within `dst` (caller's contract).
        unsafe { _mm256_storeu_ps(d.add(k * dst_stride), column) };
    }
}

/// The in-lane 4 × 4 transposes of `r`: in each 128-bit half, element `j` of register `k`
/// of the result is element `k` of register `j` of `r` (unpacks, then shuffles).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
pub(crate) fn transpose_in_lanes(
    r: [std::arch::x86_64::__m256; 4],
) -> [std::arch::x86_64::__m256; 4] {
    use std::arch::x86_64::*;
    let u0 = _mm256_unpacklo_ps(r[0], r[1]);
    let u1 = _mm256_unpackhi_ps(r[0], r[1]);
    let u2 = _mm256_unpacklo_ps(r[2], r[3]);
    let u3 = _mm256_unpackhi_ps(r[2], r[3]);
    [
        _mm256_shuffle_ps::<0x44>(u0, u2),
        _mm256_shuffle_ps::<0xEE>(u0, u2),
        _mm256_shuffle_ps::<0x44>(u1, u3),
        _mm256_shuffle_ps::<0xEE>(u1, u3),
    ]
}

/// One block of 8 rows × 4 columns into 4 rows × 8: rows m and m + 4 share a register
/// (low and high half), so the in-lane transposes leave column k whole in register k.
///
/// # Safety
/// The CPU must have AVX; `src` must hold 8 rows of 4 at `src_stride` and `dst` 4 rows of
/// 8 at `dst_stride`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn block_8x4_avx(src: &[f32], src_stride: usize, dst: &mut [f32], dst_stride: usize) {
    use std::arch::x86_64::*;
    debug_assert!(src.len() >= (B - 1) * src_stride + H);
    debug_assert!(dst.len() >= (H - 1) * dst_stride + B);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    // SAFETY: rows m and m + 4 (m < 4) of 4 elements at `src_stride` are within `src`.
    let r = [0, 1, 2, 3]
        .map(|m| unsafe { _mm256_loadu2_m128(s.add((m + H) * src_stride), s.add(m * src_stride)) });
    for (k, column) in transpose_in_lanes(r).into_iter().enumerate() {
        // SAFETY: row k < 4 of 8 elements at `dst_stride` is within `dst`.
        unsafe { _mm256_storeu_ps(d.add(k * dst_stride), column) };
    }
}

/// One block of 4 rows × 8 columns into 8 rows × 4: after the in-lane transposes register
/// m holds column m (low half) and column m + 4 (high half) of the 4 rows.
///
/// # Safety
/// The CPU must have AVX; `src` must hold 4 rows of 8 at `src_stride` and `dst` 8 rows of
/// 4 at `dst_stride`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn block_4x8_avx(src: &[f32], src_stride: usize, dst: &mut [f32], dst_stride: usize) {
    use std::arch::x86_64::*;
    debug_assert!(src.len() >= (H - 1) * src_stride + B);
    debug_assert!(dst.len() >= (B - 1) * dst_stride + H);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    // SAFETY: rows 0..4 of 8 elements at `src_stride` are within `src`.
    let r = [0, 1, 2, 3].map(|k| unsafe { _mm256_loadu_ps(s.add(k * src_stride)) });
    for (m, columns) in transpose_in_lanes(r).into_iter().enumerate() {
        // SAFETY: rows m and m + 4 (m < 4) of 4 elements at `dst_stride` are within `dst`.
        unsafe { _mm256_storeu2_m128(d.add((m + H) * dst_stride), d.add(m * dst_stride), columns) };
    }
}

/// The readable reference for [`copy_transposed`]: the same contract, one element at a
/// time. Tests compare the blocked version against it.
///
/// ```
/// use tensorgrad::kernels::transpose::transpose_reference;
/// // A 2×3 matrix (row stride 3) into its 3×2 transpose (row stride 2).
/// let src = [1, 2, 3, 4, 5, 6];
/// let mut dst = [0; 6];
/// transpose_reference(&src, (2, 3, 3), &mut dst, 2);
/// assert_eq!(dst, [1, 4, 2, 5, 3, 6]);
/// ```
pub fn transpose_reference<T: Copy>(
    src: &[T],
    (rows, cols, src_stride): (usize, usize, usize),
    dst: &mut [T],
    dst_stride: usize,
) {
    for i in 0..rows {
        for j in 0..cols {
            dst[j * dst_stride + i] = src[i * src_stride + j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whole blocks, remainders on either side, strides wider than the matrix, and
    /// elements outside the matrix left as they were.
    #[test]
    fn blocked_transpose_matches_element_by_element() {
        // Also the edge blocks: 8×4 ones at the right (12 and 13 columns), 4×8 ones at the
        // bottom (4–7 rows left), `c × 4` planes and back, and single rows and columns
        // (copies where contiguous).
        let cases: [(usize, usize, usize, usize); 18] = [
            (8, 8, 8, 8),
            (16, 24, 24, 16),
            (19, 13, 21, 23),
            (3, 17, 17, 3),
            (17, 3, 5, 20),
            (1, 1, 1, 1),
            (0, 5, 5, 1),
            (32, 32, 1024, 32),
            (16, 12, 12, 16),
            (21, 13, 15, 22),
            (6, 21, 22, 9),
            (13, 4, 4, 13),
            (4, 13, 13, 4),
            (96, 4, 4, 96),
            (4, 96, 96, 4),
            (960, 1, 1, 960),
            (1, 960, 960, 1),
            (7, 1, 3, 7),
        ];
        for (rows, cols, src_stride, dst_stride) in cases {
            let src_len = rows.saturating_sub(1) * src_stride + cols;
            let dst_len = cols.saturating_sub(1) * dst_stride + rows;
            let src32: Vec<f32> = (0..src_len).map(|v| v as f32 * 0.5 - 7.0).collect();
            let mut got = vec![0.0f32; dst_len];
            copy_transposed(&src32, (rows, cols, src_stride), &mut got, dst_stride);
            let mut want = vec![0.0f32; dst_len];
            transpose_reference(&src32, (rows, cols, src_stride), &mut want, dst_stride);
            assert_eq!(got, want, "f32 {rows}×{cols}");
            let src64: Vec<f64> = src32.iter().map(|&v| f64::from(v)).collect();
            let mut got = vec![0.0f64; dst_len];
            copy_transposed(&src64, (rows, cols, src_stride), &mut got, dst_stride);
            let mut want = vec![0.0f64; dst_len];
            transpose_reference(&src64, (rows, cols, src_stride), &mut want, dst_stride);
            assert_eq!(got, want, "f64 {rows}×{cols}");
        }
    }

    #[test]
    #[should_panic(expected = "destination too short")]
    fn short_destination_is_refused() {
        let src = [1.0f32; 64];
        let mut dst = [0.0f32; 63];
        copy_transposed(&src, (8, 8, 8), &mut dst, 8);
    }
}
