//! The rows kernels on AVX2 + FMA, for CPUs without AVX-512: 16 registers of 8 floats
//! hold 4 output channels × 3 vectors of pixels (12 accumulators), where the AVX-512
//! twins hold 8 × 3 of 16. They read the shifted copies (AVX2 has no masked loads cheap
//! enough to read "same" layers in place); the copies' zero slack covers the last
//! block's loads. Each is the AVX-512 kernel with half the channels per pass and half the
//! lanes per vector, tested against the definition below.

use super::backward::{for_each_grad_block, F32Grad};
use super::taps::{ShiftedTaps, Taps};
use super::{F32Rows, GROUP, LANES, MAX_BLOCK};
use std::arch::x86_64::*;

/// Floats per AVX2 register.
const WIDTH: usize = 8;

/// Output channels one pass sums: half a weight group.
const HALF: usize = GROUP / 2;

/// Pixels the weight gradient sums at a time, as on AVX-512: the chunk's dY rows of 4
/// channels (8 KiB) stay in L1 while every tap reads them.
const CHUNK: usize = 512;

/// Vectors of output pixels the forward sums per block: 3 (24 pixels), unless that
/// wastes more of the last block than 2 do (LeNet's conv2 has 64 pixels).
fn block_vectors(p: usize) -> usize {
    let waste = |v: usize| p.next_multiple_of(v * WIDTH) - p;
    if waste(3) <= waste(2) {
        3
    } else {
        2
    }
}

/// `DirectRowsForward::forward_portable` on AVX2 for one image read from its shifted
/// copies: for each block of 16 or 24 pixels and each half of a group (4 channels), the
/// 4 × `V` accumulators are registers; each tap is `V` loads, 4 broadcasts of a weight and
/// 4·`V` fused multiply-adds.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `taps` are the copies of the image `r` describes
/// (their slack of [`MAX_BLOCK`] covers the loads past the last pixel).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn forward_avx2(r: F32Rows<'_>, taps: &ShiftedTaps<'_>) {
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run<const V: usize>(r: F32Rows<'_>, taps: &ShiftedTaps<'_>) {
        let g = r.g;
        let (k, p, (kh, kw)) = (g.k(), g.p(), g.kernel);
        assert!(
            V * WIDTH <= MAX_BLOCK
                && r.weights.len() >= r.o.div_ceil(GROUP) * k * GROUP
                && r.y.len() >= r.o * p,
            "operands too short for the layer"
        );
        let channel_stride = taps.channel_stride();
        for p0 in (0..p).step_by(V * WIDTH) {
            for (q, w) in r.weights.chunks_exact(k * GROUP).enumerate() {
                for half in (0..GROUP).step_by(HALF) {
                    let first = q * GROUP + half;
                    if first >= r.o {
                        break;
                    }
                    let mut acc = [[_mm256_setzero_ps(); V]; HALF];
                    if let Some(b) = r.bias {
                        for (j, acc) in acc.iter_mut().enumerate() {
                            if let Some(&b) = b.get(first + j) {
                                *acc = [_mm256_set1_ps(b); V];
                            }
                        }
                    }
                    for ki in 0..kh {
                        for kj in 0..kw {
                            let x0 = taps.origin(ki, kj).wrapping_add(p0);
                            let w0 = w[(ki * kw + kj) * g.c * GROUP + half..].as_ptr();
                            for c in 0..g.c {
                                // SAFETY: the copies hold every channel's taps for pixels
                                // up to p0 + 24 ≤ p + MAX_BLOCK (the slack); the position's
                                // weights hold c·GROUP, and half + j < GROUP.
                                unsafe {
                                    let x = x0.wrapping_add(c * channel_stride);
                                    let wt = w0.add(c * GROUP);
                                    let xs: [__m256; V] =
                                        std::array::from_fn(|v| _mm256_loadu_ps(x.add(v * WIDTH)));
                                    for (j, acc) in acc.iter_mut().enumerate() {
                                        let wj = _mm256_broadcast_ss(&*wt.add(j));
                                        for (a, &xv) in acc.iter_mut().zip(&xs) {
                                            *a = _mm256_fmadd_ps(wj, xv, *a);
                                        }
                                    }
                                }
                            }
                        }
                    }
                    for (j, acc) in acc.iter().enumerate().take(r.o - first) {
                        let out = &mut r.y[(first + j) * p..][..p];
                        for (v, &a) in acc.iter().enumerate() {
                            let at = p0 + v * WIDTH;
                            if at + WIDTH <= p {
                                // SAFETY: `out` holds pixels at..at + 8.
                                unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(at), a) };
                            } else if at < p {
                                let mut row = [0.0f32; WIDTH];
                                // SAFETY: `row` holds 8 floats.
                                unsafe { _mm256_storeu_ps(row.as_mut_ptr(), a) };
                                out[at..].copy_from_slice(&row[..p - at]);
                            }
                        }
                    }
                }
            }
        }
    }
    // SAFETY: the caller guarantees AVX2 + FMA and the copies; `run` checks the shapes.
    unsafe {
        match block_vectors(r.g.p()) {
            2 => run::<2>(r, taps),
            _ => run::<3>(r, taps),
        }
    }
}

/// `DirectRowsBackward::weight_grad_portable` on AVX2 for one image read from its shifted
/// copies, by chunks of [`CHUNK`] pixels: for each 4 output channels, input channel,
/// kernel row and up to 3 tap columns, the 4 × 3 products summed lane by lane in
/// registers (the last vector's loads masked to the pixels), then added to the first 8 of
/// each weight's [`LANES`] partial sums.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `src` are the copies of the image `r` describes.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn weight_grad_avx2(mut r: F32Grad<'_>, src: &ShiftedTaps<'_>) {
    /// Tap columns `kj0..kj0 + M` of every kernel row and input channel, for output
    /// channels `first..first + n`, over pixels `p0..p1`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn taps<const M: usize>(
        r: &mut F32Grad<'_>,
        src: &ShiftedTaps<'_>,
        (first, n): (usize, usize),
        kj0: usize,
        (p0, p1): (usize, usize),
    ) {
        let g = r.g;
        let (k, p, (kh, kw)) = (g.k(), g.p(), g.kernel);
        assert!(
            (1..=HALF).contains(&n)
                && kj0 + M <= kw
                && p0 < p1
                && p1 <= p
                && r.dy.len() >= (first + n) * p
                && r.dw.len() >= (first + n) * k * LANES,
            "operands too short for the layer"
        );
        // Channels past n read row first + n − 1 again; their sums are never stored.
        let rows: [*const f32; HALF] =
            std::array::from_fn(|j| r.dy[(first + j.min(n - 1)) * p + p0..].as_ptr());
        let dw = r.dw[first * k * LANES..].as_mut_ptr();
        let (channel_stride, column) = (src.channel_stride(), src.column_stride());
        let (full, rest) = ((p1 - p0) / WIDTH, (p1 - p0) % WIDTH);
        let lanes: [i32; WIDTH] = std::array::from_fn(|i| if i < rest { -1 } else { 0 });
        // SAFETY: `lanes` holds 8 i32.
        let tail = unsafe { _mm256_loadu_si256(lanes.as_ptr().cast()) };
        for ki in 0..kh {
            let x0 = src.origin(ki, kj0).wrapping_add(p0);
            for c in 0..g.c {
                let tap = (c * kh + ki) * kw + kj0;
                // SAFETY: weights (first + j, tap + m) for j < n, m < M each have LANES
                // partial sums in dw; the loads read pixels p0..p1 ≤ p of dY's rows (the
                // last vector masked to them) and the copies' taps of those pixels.
                unsafe {
                    let x = x0.wrapping_add(c * channel_stride);
                    let mut acc = [[_mm256_setzero_ps(); M]; HALF];
                    for (j, acc) in acc.iter_mut().enumerate().take(n) {
                        for (m, a) in acc.iter_mut().enumerate() {
                            *a = _mm256_loadu_ps(dw.add((j * k + tap + m) * LANES));
                        }
                    }
                    for v in 0..full {
                        let q = v * WIDTH;
                        let xs: [__m256; M] =
                            std::array::from_fn(|m| _mm256_loadu_ps(x.add(m * column + q)));
                        for (acc, &row) in acc.iter_mut().zip(&rows) {
                            let d = _mm256_loadu_ps(row.add(q));
                            for (a, &xv) in acc.iter_mut().zip(&xs) {
                                *a = _mm256_fmadd_ps(d, xv, *a);
                            }
                        }
                    }
                    if rest != 0 {
                        let q = full * WIDTH;
                        let xs: [__m256; M] = std::array::from_fn(|m| {
                            _mm256_maskload_ps(x.add(m * column + q), tail)
                        });
                        for (acc, &row) in acc.iter_mut().zip(&rows) {
                            let d = _mm256_maskload_ps(row.add(q), tail);
                            for (a, &xv) in acc.iter_mut().zip(&xs) {
                                *a = _mm256_fmadd_ps(d, xv, *a);
                            }
                        }
                    }
                    for (j, acc) in acc.iter().enumerate().take(n) {
                        for (m, &a) in acc.iter().enumerate() {
                            _mm256_storeu_ps(dw.add((j * k + tap + m) * LANES), a);
                        }
                    }
                }
            }
        }
    }
    let (g, o) = (r.g, r.dy.len() / r.g.p());
    for_each_grad_block(&g, o, (CHUNK, HALF), |group, kj0, span| {
        // SAFETY: the caller guarantees AVX2 + FMA; `taps` checks the shapes.
        unsafe {
            match g.kernel.1 - kj0 {
                1 => taps::<1>(&mut r, src, group, kj0, span),
                2 => taps::<2>(&mut r, src, group, kj0, span),
                _ => taps::<3>(&mut r, src, group, kj0, span),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::tests::{run_backward, strided, values, CASES};
    use super::super::{has_avx2, DirectRowsBackward, DirectRowsForward, ShiftedImage};
    use super::*;
    use crate::kernels::conv::direct::Direct;
    use crate::kernels::conv::{ConvBackward, ConvForward};

    /// The AVX2 kernels called directly (so that AVX-512 CPUs test them too) against the
    /// definition, on copies made from NaN-filled buffers: the forward with bias and dW,
    /// for output channels that fill no half group (2, 3, 5, 7, 9, 11, 50), pixels that
    /// fill no vector, strides 2 and 3.
    #[test]
    fn avx2_kernels_match_the_direct_convolution() {
        if !has_avx2() {
            return;
        }
        let f = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<_>>();
        for (c, o, hw, k, pad, stride) in CASES {
            let g = strided(c, hw, k, pad, stride);
            let (x, w, bias, dy) = (
                values(g.chw(), 1),
                values(o * g.k(), 2),
                values(o, 3),
                values(o * g.p(), 4),
            );
            let reference = Direct::new(&g, o, &w);
            let mut want = vec![0.0; o * g.p()];
            let mut ws = vec![0.0; ConvForward::workspace(&reference)];
            reference.forward(&x, Some(&bias), &mut want, &mut ws);
            let (_, dw_want) = run_backward(&reference, 1, &dy, &x);

            let image = ShiftedImage { g };
            let mut shifted = vec![f32::NAN; image.len()];
            image.fill(&f(&x), &mut shifted);
            let layer = DirectRowsForward::new(&g, o, &f(&w));
            let (bias, dy) = (f(&bias), f(&dy));
            let mut y = vec![f32::NAN; o * g.p()];
            let rows = F32Rows::of(&layer, Some(&bias), None, &mut y).expect("f32");
            // SAFETY: the CPU has AVX2 and FMA; the copies are the image's.
            unsafe { forward_avx2(rows, &ShiftedTaps::new(image, &shifted)) };
            let backward = DirectRowsBackward::new(&g, o, &[]);
            let mut dw = vec![0.0f32; backward.weight_grad_len()];
            let grad = F32Grad::of(&backward, &dy, &mut dw).expect("f32");
            // SAFETY: as above.
            unsafe { weight_grad_avx2(grad, &ShiftedTaps::new(image, &shifted)) };
            let dw = backward.finish_weight_grad(dw);
            let tol = 1e-6 * g.k().max(g.p()) as f64;
            assert_eq!((y.len(), dw.len()), (want.len(), dw_want.len()));
            for (a, e) in y.iter().zip(&want).chain(dw.iter().zip(&dw_want)) {
                assert!(
                    (*a as f64 - e).abs() <= tol * (1.0 + e.abs()),
                    "{g:?}: {a} vs {e}"
                );
            }
        }
    }
}
