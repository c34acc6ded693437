//! The four phases of a stride-2 layer's image: `phase (a, b)` holds the pixels at even
//! or odd rows (`a`) and columns (`b`), `x[ch][2i + a][2j + b]`, laid out as the layer's
//! output (`c × oh × ow`). In a phase every tap of a stride-2 layer reads at one offset
//! from its output, as a stride-1 layer's does in its image (`depthwise_flat.rs`).
//! [`split_reference`] and [`merge_reference`] are the loops to read; [`split`] and
//! [`merge`] take 32 elements of a row at a time on AVX-512 (a load pair and one
//! permutation per phase): the element loops, or one strided copy per row, cost more
//! than the depthwise layer's sums.

use crate::kernels::Geometry;

/// Whether the output planes hold the phases: `⌈h/2⌉ ≤ oh` and `⌈w/2⌉ ≤ ow`.
pub(super) fn fits(g: &Geometry) -> bool {
    g.h.div_ceil(2) <= g.oh && g.w.div_ceil(2) <= g.ow
}

/// Where pixel `(r, s)` of channel `ch` goes in the split image (`4·c·p` elements).
fn place(g: &Geometry, ch: usize, r: usize, s: usize) -> usize {
    ((r % 2) * 2 + s % 2) * g.c * g.p() + ch * g.p() + r / 2 * g.ow + s / 2
}

/// `xs[place(ch, r, s)] = x[ch][r][s]` for every pixel of one image, one at a time; the
/// phases' other elements are left as they were.
///
/// # Panics
/// If the phases do not fit ([`fits`]) or an operand is shorter than the layer's.
pub(super) fn split_reference(g: &Geometry, x: &[f32], xs: &mut [f32]) {
    assert!(fits(g), "the phases do not fit the output planes");
    for ch in 0..g.c {
        for r in 0..g.h {
            for s in 0..g.w {
                xs[place(g, ch, r, s)] = x[(ch * g.h + r) * g.w + s];
            }
        }
    }
}

/// `dx[ch][r][s] = xs[place(ch, r, s)]` for every pixel of one image: [`split_reference`]
/// undone.
///
/// # Panics
/// As [`split_reference`].
pub(super) fn merge_reference(g: &Geometry, xs: &[f32], dx: &mut [f32]) {
    assert!(fits(g), "the phases do not fit the output planes");
    for ch in 0..g.c {
        for r in 0..g.h {
            for s in 0..g.w {
                dx[(ch * g.h + r) * g.w + s] = xs[place(g, ch, r, s)];
            }
        }
    }
}

/// Asserts the operands' lengths for one image: `x` (`c·h·w`) and `xs` (`4·c·p`).
fn check(g: &Geometry, x: usize, xs: usize) {
    assert!(fits(g), "the phases do not fit the output planes");
    assert!(
        x >= g.chw() && xs >= 4 * g.c * g.p(),
        "operands too short for the layer"
    );
}

/// [`split_reference`], by 32 elements of a row at a time where the CPU has AVX-512F;
/// the same values.
pub(super) fn split(g: &Geometry, x: &[f32], xs: &mut [f32]) {
    check(g, x.len(), xs.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above); the lengths are checked;
        // with `SPLIT` the image is only read.
        unsafe { rows_avx512::<true>(g, x.as_ptr().cast_mut(), xs.as_mut_ptr()) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above); the lengths are checked; with
        // `SPLIT` the image is only read.
        unsafe { rows_avx2::<true>(g, x.as_ptr().cast_mut(), xs.as_mut_ptr()) };
        return;
    }
    split_reference(g, x, xs);
}

/// [`merge_reference`], by 32 elements of a row at a time where the CPU has AVX-512F;
/// the same values.
pub(super) fn merge(g: &Geometry, xs: &[f32], dx: &mut [f32]) {
    check(g, dx.len(), xs.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above); the lengths are checked;
        // without `SPLIT` the phases are only read.
        unsafe { rows_avx512::<false>(g, dx.as_mut_ptr(), xs.as_ptr().cast_mut()) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above); the lengths are checked;
        // without `SPLIT` the phases are only read.
        unsafe { rows_avx2::<false>(g, dx.as_mut_ptr(), xs.as_ptr().cast_mut()) };
        return;
    }
    merge_reference(g, xs, dx);
}

/// The even and the odd elements of the 16 in `lo` then `hi`, each in order: one
/// in-lane shuffle (`[a0 a2 b0 b2 | a4 a6 b4 b6]`) and one cross-lane permutation each.
/// The split's step, and the stride-2 depthwise rows' column taps.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn even_odd_avx2(
    lo: std::arch::x86_64::__m256,
    hi: std::arch::x86_64::__m256,
) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
    use std::arch::x86_64::*;
    let even = _mm256_castps_pd(_mm256_shuffle_ps::<0x88>(lo, hi));
    let odd = _mm256_castps_pd(_mm256_shuffle_ps::<0xDD>(lo, hi));
    (
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(even)),
        _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(odd)),
    )
}

/// [`rows_avx512`] on AVX2, 16 elements of a row at a time (two loads; the even and odd
/// elements picked by one in-lane shuffle each and put in order by one cross-lane
/// permutation; the merge interleaves them back by two unpacks and two permutations),
/// the rest of the row element by element.
///
/// # Safety
/// As [`rows_avx512`], with AVX2 for AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn rows_avx2<const SPLIT: bool>(g: &Geometry, image: *mut f32, phases: *mut f32) {
    use std::arch::x86_64::*;
    let (w, cp) = (g.w, g.c * g.p());
    for ch in 0..g.c {
        for r in 0..g.h {
            let row = (ch * g.h + r) * w;
            let phase_row = (r % 2) * 2 * cp + ch * g.p() + r / 2 * g.ow;
            let mut s = 0;
            // SAFETY: s + 16 ≤ w, so the image accesses stay in the row, and the phase
            // rows' 8 from s / 2 end by ⌈w/2⌉ ≤ ow; the image and the phases are as long
            // as the caller guarantees.
            unsafe {
                while s + 16 <= w {
                    let at = image.add(row + s);
                    let (e, o) = (
                        phases.add(phase_row + s / 2),
                        phases.add(phase_row + cp + s / 2),
                    );
                    if SPLIT {
                        let (lo, hi) = (_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8)));
                        let (even, odd) = even_odd_avx2(lo, hi);
                        _mm256_storeu_ps(e, even);
                        _mm256_storeu_ps(o, odd);
                    } else {
                        let (ev, ov) = (_mm256_loadu_ps(e), _mm256_loadu_ps(o));
                        let (a, b) = (_mm256_unpacklo_ps(ev, ov), _mm256_unpackhi_ps(ev, ov));
                        _mm256_storeu_ps(at, _mm256_permute2f128_ps::<0x20>(a, b));
                        _mm256_storeu_ps(at.add(8), _mm256_permute2f128_ps::<0x31>(a, b));
                    }
                    s += 16;
                }
                for s in s..w {
                    let phase = phases.add(phase_row + (s % 2) * cp + s / 2);
                    if SPLIT {
                        *phase = *image.add(row + s);
                    } else {
                        *image.add(row + s) = *phase;
                    }
                }
            }
        }
    }
}

/// Row by row, 32 elements at a time: with `SPLIT`, two loads of the image row, its even
/// and odd elements picked by one permutation each and stored to the row's two phases;
/// without, the two phases' rows loaded and interleaved back by two permutations.
///
/// # Safety
/// The CPU must support AVX-512F; the phases must fit, the image hold `c·h·w` elements
/// and the phases `4·c·p`. With `SPLIT` only the phases are written, without it only
/// the image (so the other may come from a shared slice).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512<const SPLIT: bool>(g: &Geometry, image: *mut f32, phases: *mut f32) {
    use std::arch::x86_64::*;
    let lanes = |n: usize| ((1u32 << n.min(16)) - 1) as u16;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let (w, cp) = (g.w, g.c * g.p());
    for ch in 0..g.c {
        for r in 0..g.h {
            let row = (ch * g.h + r) * w;
            let phase_row = (r % 2) * 2 * cp + ch * g.p() + r / 2 * g.ow;
            for s in (0..w).step_by(32) {
                let left = w - s;
                let (evens, odds) = (left.div_ceil(2).min(16), (left / 2).min(16));
                // SAFETY: the masks keep every access within the row's `left` elements
                // from `s` and the phase rows' `evens` and `odds` (≤ ow) from `s / 2`;
                // the image and the phases are as long as the caller guarantees.
                unsafe {
                    let at = image.add(row + s);
                    let (e, o) = (
                        phases.add(phase_row + s / 2),
                        phases.add(phase_row + cp + s / 2),
                    );
                    if SPLIT {
                        let lo = _mm512_maskz_loadu_ps(lanes(left), at);
                        let hi = _mm512_maskz_loadu_ps(
                            lanes(left.saturating_sub(16)),
                            at.wrapping_add(16),
                        );
                        _mm512_mask_storeu_ps(
                            e,
                            lanes(evens),
                            _mm512_permutex2var_ps(lo, even, hi),
                        );
                        _mm512_mask_storeu_ps(o, lanes(odds), _mm512_permutex2var_ps(lo, odd, hi));
                    } else {
                        let ev = _mm512_maskz_loadu_ps(lanes(evens), e);
                        let ov = _mm512_maskz_loadu_ps(lanes(odds), o);
                        _mm512_mask_storeu_ps(at, lanes(left), _mm512_permutex2var_ps(ev, low, ov));
                        let rest = lanes(left.saturating_sub(16));
                        _mm512_mask_storeu_ps(
                            at.wrapping_add(16),
                            rest,
                            _mm512_permutex2var_ps(ev, high, ov),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both directions of both paths on even and odd sizes from 1 to 70 columns (rows of
    /// under 16, 16, and several chunks of 32): the split places every pixel where
    /// [`place`] says and leaves the rest (NaN) alone, the fast split equals the loop,
    /// and the merge gives back the image.
    #[test]
    fn split_and_merge_place_every_pixel_in_its_phase() {
        for (c, h, w) in [
            (3, 1, 1),
            (2, 2, 2),
            (3, 3, 5),
            (2, 4, 4),
            (5, 8, 8),
            (2, 7, 16),
            (3, 16, 16),
            (2, 5, 33),
            (1, 6, 70),
        ] {
            let g = Geometry::new(c, (h, w), (3, 3), (2, 2), (1, 1), (1, 1)).unwrap();
            assert!(fits(&g));
            let x: Vec<f32> = (0..g.chw()).map(|i| i as f32 * 0.25 - 7.0).collect();
            let n = 4 * g.c * g.p();
            let (mut fast, mut plain) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            split(&g, &x, &mut fast);
            split_reference(&g, &x, &mut plain);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&plain), "{g:?}");
            for ch in 0..c {
                for r in 0..h {
                    for s in 0..w {
                        assert_eq!(plain[place(&g, ch, r, s)], x[(ch * h + r) * w + s]);
                    }
                }
            }
            assert_eq!(
                plain.iter().filter(|v| !v.is_nan()).count(),
                g.chw(),
                "{g:?}"
            );
            let (mut back, mut back_plain) = (vec![f32::NAN; g.chw()], vec![f32::NAN; g.chw()]);
            merge(&g, &plain, &mut back);
            merge_reference(&g, &plain, &mut back_plain);
            assert_eq!(bits(&back), bits(&x), "{g:?}");
            assert_eq!(bits(&back_plain), bits(&x), "{g:?}");
            // The AVX2 rows, which AVX-512 CPUs do not take, called directly.
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let (mut split2, mut back2) = (vec![f32::NAN; n], vec![f32::NAN; g.chw()]);
                // SAFETY: the CPU has AVX2 (checked just above); the phases fit, and the
                // image and the phases have c·h·w and 4·c·p elements.
                unsafe {
                    rows_avx2::<true>(&g, x.as_ptr().cast_mut(), split2.as_mut_ptr());
                    rows_avx2::<false>(&g, back2.as_mut_ptr(), plain.as_ptr().cast_mut());
                }
                assert_eq!(bits(&split2), bits(&plain), "AVX2 split {g:?}");
                assert_eq!(bits(&back2), bits(&x), "AVX2 merge {g:?}");
            }
        }
    }
}
