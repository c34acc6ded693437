//! The AVX-512 sums of `depthwise_flat.rs`: 16 lanes to a vector, each (vector, tap)
//! read masked by a `u16` of lanes, so a tap reaching before or past the image reads
//! nothing there. Tested with the AVX2 path against the definition in `depthwise.rs`.

use super::{FlatDepthwise, Reads, LANES, UNROLL};
use std::arch::x86_64::*;

/// [`FlatDepthwise::weight_grad`] in AVX-512 registers.
///
/// # Safety
/// The CPU must support AVX-512F; the operands must be as long as the layer's.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn weight_grad(flat: &FlatDepthwise, x: &[f32], dy: &[f32], lanes: &mut [f32]) {
    let g = &flat.g;
    let taps = g.kernel.0 * g.kernel.1;
    let total = g.c * g.p();
    for v in 0..total.div_ceil(LANES) {
        let tail = ((1u32 << (total - v * LANES).min(LANES)) - 1) as u16;
        let masks = &flat.masks[(v % flat.period) * taps..][..taps];
        let sums = &mut lanes[v * taps * LANES..][..taps * LANES];
        // SAFETY: the tail keeps the loads within the image's c·p outputs of dY and
        // the partial sums' 16 per tap; the lanes kept of x are taps inside their
        // channel's plane, inside `x`, and the others are not read.
        unsafe {
            let d = _mm512_maskz_loadu_ps(tail, dy.as_ptr().add(v * LANES));
            for (&(t, offset), &mask) in flat.offsets.iter().zip(masks) {
                let at = (v * LANES) as isize + offset;
                let xv = _mm512_maskz_loadu_ps(mask & tail, x.as_ptr().wrapping_offset(at));
                let sum = sums.as_mut_ptr().add(t * LANES);
                _mm512_storeu_ps(sum, _mm512_fmadd_ps(d, xv, _mm512_loadu_ps(sum)));
            }
        }
    }
}

/// [`FlatDepthwise::forward`]'s sums in AVX-512 registers (and each phase of
/// [`FlatDepthwise::input_grad`], `reads` saying which taps and masks): the full
/// vectors [`UNROLL`] at a time, then the rest (the last one masked to the image) one
/// at a time.
///
/// # Safety
/// The CPU must support AVX-512F; the operands must be as long as the layer's, and
/// the masks keep every lane's read inside `x`.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn sums(
    flat: &FlatDepthwise,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    reads: Reads<'_>,
) {
    let total = flat.g.c * flat.g.p();
    let full = total / LANES;
    let grouped = full - full % UNROLL;
    // SAFETY: AVX-512F and the lengths are the caller's guarantee; the ranges of
    // vectors lie within the image's.
    unsafe { vectors::<UNROLL>(flat, x, w, bias, y, (0, grouped), reads) };
    // SAFETY: as above.
    unsafe { vectors::<1>(flat, x, w, bias, y, (grouped, full), reads) };
    if !total.is_multiple_of(LANES) {
        // SAFETY: as above; the last vector is partial, and its loads and store
        // are masked to the image.
        unsafe { vectors::<1>(flat, x, w, bias, y, (full, full + 1), reads) };
    }
}

/// Vectors `first..end` of an image, `U` at a time (`end − first` a multiple of `U`):
/// per vector its bias, then per tap its (masked) input times its weight, the `U`
/// sums independent chains.
///
/// # Safety
/// The CPU must support AVX-512F; the operands must be as long as the layer's, and
/// `end` at most the image's vectors.
#[target_feature(enable = "avx512f")]
unsafe fn vectors<const U: usize>(
    flat: &FlatDepthwise,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    (first, end): (usize, usize),
    reads: Reads<'_>,
) {
    let g = &flat.g;
    let (p, taps) = (g.p(), g.kernel.0 * g.kernel.1);
    let total = g.c * p;
    let broadcast = p >= LANES;
    // Lane l of a vector spanning several channels belongs to its channel l / p.
    let channel_of_lane: [i32; LANES] = std::array::from_fn(|l| (l / p) as i32);
    // SAFETY: the array holds 16 i32.
    let channel_of_lane = unsafe { _mm512_loadu_si512(channel_of_lane.as_ptr().cast()) };
    let lanes_of = |v: usize| ((1u32 << (total - v * LANES).min(LANES)) - 1) as u16;
    for v0 in (first..end).step_by(U) {
        let mut acc = [_mm512_setzero_ps(); U];
        let mut tails = [u16::MAX; U];
        let mut masks = [reads.masks.as_ptr(); U];
        let mut weights = [w.as_ptr(); U];
        for u in 0..U {
            let v = v0 + u;
            let c0 = v * LANES / p;
            tails[u] = lanes_of(v);
            // SAFETY: r < period rows of `taps` masks; channel c0 < c has `taps`
            // weights; vector v < vectors has `taps · 16` lane weights.
            unsafe {
                masks[u] = reads.masks.as_ptr().add((v % flat.period) * taps);
                weights[u] = if broadcast {
                    w.as_ptr().add(c0 * taps)
                } else {
                    flat.lane_weights.as_ptr().add(v * taps * LANES)
                };
            }
            if let Some(b) = bias {
                acc[u] = if broadcast {
                    _mm512_set1_ps(b[c0])
                } else {
                    let n = (g.c - c0).min(LANES / p);
                    // SAFETY: the mask keeps the load within the bias's c elements.
                    let b = unsafe {
                        _mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, b.as_ptr().add(c0))
                    };
                    _mm512_permutexvar_ps(channel_of_lane, b)
                };
            }
        }
        for &(t, d) in reads.taps {
            for u in 0..U {
                // SAFETY: the masks and weights of tap t < taps (above); the lanes
                // kept are outputs q < c·p whose tap q + d lies in their channel's
                // plane, inside `x`, and the others are not read.
                unsafe {
                    let lanes = *masks[u].add(t) & tails[u];
                    let wv = if broadcast {
                        _mm512_set1_ps(*weights[u].add(t))
                    } else {
                        _mm512_loadu_ps(weights[u].add(t * LANES))
                    };
                    let at = ((v0 + u) * LANES) as isize + d;
                    let xv = _mm512_maskz_loadu_ps(lanes, x.as_ptr().wrapping_offset(at));
                    acc[u] = _mm512_fmadd_ps(wv, xv, acc[u]);
                }
            }
        }
        for u in 0..U {
            // SAFETY: the mask keeps the store within the image's c·p outputs.
            unsafe {
                let to = y.as_mut_ptr().add((v0 + u) * LANES);
                _mm512_mask_storeu_ps(to, tails[u], acc[u]);
            }
        }
    }
}
