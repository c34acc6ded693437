//! Every `stride`-th element of a row: the copies of a strided layer's input
//! (`ShiftedImage::fill` keeps every `sw`-th column). [`copy_strided_reference`] is the
//! loop to read; [`copy_strided`] takes the AVX-512 path for f32 at stride 2 (resnet's and
//! mobilenet-v2's downsampling layers), where the loop's one load and one store per
//! element made the copies cost as much as a 16→32/2 layer's weight-gradient products.

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
/// is f32 and the stride 2 (two loads and one permutation per 16); the same values.
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
    copy_strided_reference(src, stride, dst);
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
                let mut got = vec![0.0; n];
                copy_strided_reference(src, stride, &mut got);
                assert_eq!(got, want);
            }
        }
    }
}
