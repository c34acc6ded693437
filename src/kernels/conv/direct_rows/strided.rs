//! Every `stride`-th element of a row: the copies of a strided layer's input
//! (`ShiftedImage::fill` keeps every `sw`-th column). [`copy_strided_reference`] is the
//! loop to read; [`copy_strided`] takes an AVX-512 or AVX2 path for f32 at stride 2
//! (resnet's and mobilenet-v2's downsampling layers), where the loop's one load and one
//! store per element made the copies cost as much as a 16→32/2 layer's weight-gradient
//! products (on AVX2, 3.6% of a resnet20 inference on AMD Zen 3).

use crate::kernels::Element;

/// `dst[i] = src[i·stride]` for every `i < dst.len()`, one element at a time.
///
/// # Panics
/// If `src` is shorter than `(dst.len() − 1)·stride + 1`.
pub(super) fn copy_strided_reference<T: Element>(src: &[T], stride: usize, dst: &mut [T]) {
    for (i, to) in dst.iter_mut().enumerate() {
        *to = src[i * stride];
    }
}

/// [`copy_strided_reference`], by 16 elements at a time where the CPU has AVX-512F, `T`
/// is f32 and the stride 2 (two loads and one permutation per 16), or by 8 where it has
/// AVX2 (two loads, a shuffle and a permutation per 8); the same values.
///
/// # Panics
/// If `src` is shorter than `(dst.len() − 1)·stride + 1`.
pub(super) fn copy_strided<T: Element>(src: &[T], stride: usize, dst: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if stride == 2 && !dst.is_empty() && std::arch::is_x86_feature_detected!("avx512f") {
        use crate::kernels::element::{as_f32, as_f32_mut};
        if let (Some(src), Some(dst)) = (as_f32(src), as_f32_mut(dst)) {
            assert!(src.len() > 2 * (dst.len() - 1), "source too short");
            // SAFETY: the CPU has AVX-512F (checked above), and `src` holds the
            // 2·(len − 1) + 1 elements the copy reads (asserted).
            unsafe { copy_stride2_avx512(src, dst) };
            return;
        }
    }
    #[cfg(target_arch = "x86_64")]
    if stride == 2 && std::arch::is_x86_feature_detected!("avx2") {
        use crate::kernels::element::{as_f32, as_f32_mut};
        if let (Some(src), Some(dst)) = (as_f32(src), as_f32_mut(dst)) {
            // SAFETY: the CPU has AVX2 (checked above); the function checks the lengths.
            unsafe { copy_stride2_avx2(src, dst) };
            return;
        }
    }
    copy_strided_reference(src, stride, dst);
}

/// `dst[i] = src[2i]` by 8 elements: the even elements of `src[2i..2i + 8]` and the odd
/// ones of `src[2i + 7..2i + 15]` (so no load reads past the last element copied) picked
/// in each 128-bit half by one shuffle, the halves' pairs put in order by one permutation.
/// A last partial block is done again from `len − 8`; fewer than 8 elements one by one.
///
/// # Safety
/// The CPU must support AVX2.
///
/// # Panics
/// If `src` is shorter than `2·(dst.len() − 1) + 1`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy_stride2_avx2(src: &[f32], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = dst.len();
    if n < 8 {
        copy_strided_reference(src, 2, dst);
        return;
    }
    assert!(src.len() > 2 * (n - 1), "source too short");
    let block = |i: usize, dst: &mut [f32]| {
        // SAFETY: i + 8 ≤ n, so the loads read src[2i..2i + 15], within the
        // 2(n − 1) + 1 elements asserted above, and the store writes dst[i..i + 8].
        unsafe {
            let a = _mm256_loadu_ps(src.as_ptr().add(2 * i));
            let b = _mm256_loadu_ps(src.as_ptr().add(2 * i + 7));
            // [a0 a2 b1 b3 | a4 a6 b5 b7], then its 64-bit pairs in the order 0, 2, 1, 3.
            let halves = _mm256_shuffle_ps::<0xD8>(a, b);
            let v = _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(_mm256_castps_pd(halves)));
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), v);
        }
    };
    for i in (0..n - 7).step_by(8) {
        block(i, dst);
    }
    if !n.is_multiple_of(8) {
        block(n - 8, dst);
    }
}

/// `dst[i] = src[2i]` by 16 elements: two (masked) loads of 16 and the even lanes of
/// both picked by one permutation.
///
/// # Safety
/// The CPU must support AVX-512F, and `src.len() ≥ 2·(dst.len() − 1) + 1`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn copy_stride2_avx512(src: &[f32], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let lanes = |n: usize| ((1u32 << n.min(16)) - 1) as u16;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for i in (0..dst.len()).step_by(16) {
        let from = 2 * i;
        let left = src.len() - from;
        // SAFETY: the masks keep the loads within `src` (its `left` elements from
        // `from`) and the store within `dst`.
        unsafe {
            let p = src.as_ptr().add(from);
            let a = _mm512_maskz_loadu_ps(lanes(left), p);
            let b = _mm512_maskz_loadu_ps(lanes(left.saturating_sub(16)), p.wrapping_add(16));
            let v = _mm512_permutex2var_ps(a, even, b);
            _mm512_mask_storeu_ps(dst.as_mut_ptr().add(i), lanes(dst.len() - i), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both paths against the definition for strides 1–3 and lengths around the vector
    /// sizes, the source exactly as long as the copy reads (a longer read would panic or,
    /// with the masks wrong, pick a NaN placed after it).
    #[test]
    fn strided_copies_pick_every_stride_th_element() {
        for stride in 1..=3 {
            for n in [1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 50] {
                let len = (n - 1) * stride + 1;
                let mut src: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
                src.extend([f32::NAN; 40]);
                let src = &src[..len];
                let want: Vec<f32> = (0..n).map(|i| src[i * stride]).collect();
                let mut got = vec![f32::NAN; n];
                copy_strided(src, stride, &mut got);
                assert_eq!(got, want, "stride {stride}, {n} elements");
                #[cfg(target_arch = "x86_64")]
                if stride == 2 && std::arch::is_x86_feature_detected!("avx2") {
                    let mut got = vec![f32::NAN; n];
                    // SAFETY: the CPU has AVX2 (checked just above).
                    unsafe { copy_stride2_avx2(src, &mut got) };
                    assert_eq!(got, want, "AVX2, {n} elements");
                }
                let mut got = vec![0.0; n];
                copy_strided_reference(src, stride, &mut got);
                assert_eq!(got, want);
            }
        }
    }
}
