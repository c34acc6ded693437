//! The depthwise forward of a "same" stride-1 layer read in place (f32, AVX-512), with
//! no transposes.
//!
//! In such a layer (`oh = h`, `ow = w`) output element `q` of an image, flat over its
//! channels and pixels (`q = c·p + j`), reads tap `(ki, kj)` at flat input element
//! `q + (ki − ph)·w + (kj − pw)`: one offset for every element, as in the rows kernels
//! (`direct_rows/taps.rs`). So 16 consecutive outputs are summed from 16 consecutive
//! inputs per tap, and the lanes whose tap lies outside their own channel's plane are
//! masked off. When the plane is a multiple of 16 pixels every vector lies in one channel
//! and takes its weight by broadcast; when it divides 16 (mobilenet-v2's 4×4, 2×2 and 1×1
//! maps) a vector spans `16 / p` channels and takes per-lane weights prepared once. The
//! narrow planes' other path transposes each image to channels-last and back, and those
//! transposes cost about three times its sums (perf, mobilenet-v2 inference). Tested
//! against the definition in `depthwise.rs`.

use crate::kernels::Geometry;

/// f32 lanes per AVX-512 register.
const LANES: usize = 16;

/// Vectors summed side by side: independent chains of multiply-adds whose latencies
/// overlap.
const UNROLL: usize = 4;

/// A layer's masks, offsets and (for planes under 16 pixels) per-lane weights.
#[derive(Debug)]
pub(super) struct FlatDepthwise {
    g: Geometry,
    /// Vectors after which the masks repeat: `p / 16`, or 1 for planes of at most 16.
    period: usize,
    /// `masks[r·taps + t]`: the lanes of vector `r` (of a period) whose tap `t` lies
    /// inside their own channel's plane.
    masks: Vec<u16>,
    /// `(ki − ph)·w + kj − pw` for tap `t = ki·kw + kj`.
    offsets: Vec<isize>,
    /// For planes under 16 pixels, `lane_weights[(v·taps + t)·16 + l]`: the weight of
    /// tap `t` for the channel of lane `l` of vector `v` (0 past the last channel).
    lane_weights: Vec<f32>,
}

impl FlatDepthwise {
    /// The layer of geometry `g` with the `c × kh·kw` weights `w` (empty for a backward
    /// pass that wants only dW), or `None` where this path does not apply: strided, dilated, not "same", or planes that are neither a
    /// multiple nor a divisor of 16 pixels.
    pub(super) fn new(g: &Geometry, w: &[f32]) -> Option<Self> {
        let p = g.p();
        let same = (g.oh, g.ow) == (g.h, g.w);
        if g.stride != (1, 1) || g.dilation != (1, 1) || !same || p == 0 {
            return None;
        }
        if !p.is_multiple_of(LANES) && !LANES.is_multiple_of(p) {
            return None;
        }
        let ((kh, kw), (ph, pw)) = (g.kernel, g.padding);
        let taps = kh * kw;
        let period = (p / LANES).max(1);
        let mut masks = vec![0u16; period * taps];
        for (r, masks) in masks.chunks_exact_mut(taps).enumerate() {
            for lane in 0..LANES {
                let j = (r * LANES + lane) % p;
                let (oh, ox) = (j / g.w, j % g.w);
                for ki in 0..kh {
                    for kj in 0..kw {
                        let row = (oh + ki).checked_sub(ph).is_some_and(|v| v < g.h);
                        let column = (ox + kj).checked_sub(pw).is_some_and(|v| v < g.w);
                        if row && column {
                            masks[ki * kw + kj] |= 1 << lane;
                        }
                    }
                }
            }
        }
        let offsets = (0..taps)
            .map(|t| {
                (t / kw) as isize * g.w as isize + (t % kw) as isize - (ph * g.w + pw) as isize
            })
            .collect();
        let mut lane_weights = Vec::new();
        // Without weights (a backward pass that wants only dW) there are none to place.
        if p < LANES && w.len() == g.c * taps {
            let vectors = (g.c * p).div_ceil(LANES);
            lane_weights = vec![0.0; vectors * taps * LANES];
            for (i, v) in lane_weights.iter_mut().enumerate() {
                let (vector, t, lane) = (i / (taps * LANES), i / LANES % taps, i % LANES);
                if let Some(&wv) = w.get(((vector * LANES + lane) / p) * taps + t) {
                    *v = wv;
                }
            }
        }
        Some(FlatDepthwise {
            g: *g,
            period,
            masks,
            offsets,
            lane_weights,
        })
    }

    /// The layer whose forward pass is this one's input gradient (dY correlated with each
    /// channel's filter flipped, under padding `k − 1 − p`), with those flipped weights;
    /// `None` where that layer is not read in place either.
    pub(super) fn transposed(g: &Geometry, w: &[f32]) -> Option<(Self, Vec<f32>)> {
        let ((kh, kw), (ph, pw)) = (g.kernel, g.padding);
        let (ph, pw) = ((kh - 1).checked_sub(ph)?, (kw - 1).checked_sub(pw)?);
        let gt = Geometry::new(g.c, (g.oh, g.ow), g.kernel, (1, 1), (ph, pw), (1, 1))?;
        let taps = kh * kw;
        let flipped: Vec<f32> = (0..g.c * taps)
            .map(|i| w[i / taps * taps + taps - 1 - i % taps])
            .collect();
        Some((FlatDepthwise::new(&gt, &flipped)?, flipped))
    }

    /// Partial sums the weight gradient keeps: for every vector of an image and tap, one
    /// per lane (each lane's channel is fixed by its place in the image).
    pub(super) fn weight_grad_len(&self) -> usize {
        let taps = self.g.kernel.0 * self.g.kernel.1;
        (self.g.c * self.g.p()).div_ceil(LANES) * taps * LANES
    }

    /// The `c × kh·kw` weight gradient from the lanes' partial sums: each lane added to
    /// its channel's tap.
    pub(super) fn finish_weight_grad(&self, lanes: &[f32]) -> Vec<f32> {
        let (p, taps) = (self.g.p(), self.g.kernel.0 * self.g.kernel.1);
        let total = self.g.c * p;
        // Lane l of a vector lies l / p channels past the vector's first (0 for planes of
        // 16 pixels or more): no division per element (this runs serially, after the
        // parallel part of backward).
        let past_first: [usize; LANES] = std::array::from_fn(|l| if p < LANES { l / p } else { 0 });
        let mut dw = vec![0.0; self.g.c * taps];
        for (v, sums) in lanes.chunks_exact(taps * LANES).enumerate() {
            let (first, n) = (v * LANES / p, (total - v * LANES).min(LANES));
            for (t, sums) in sums.chunks_exact(LANES).enumerate() {
                for (&s, &past) in sums.iter().zip(&past_first).take(n) {
                    dw[(first + past) * taps + t] += s;
                }
            }
        }
        dw
    }

    /// `lanes[(v·taps + t)·16 + l] += dY[q] · x[q + offset(t)]` for output `q = 16v + l` of
    /// one image and every tap inside its plane, where the CPU has AVX-512F; `false`
    /// (nothing added) where it has not.
    ///
    /// # Panics
    /// If `x`, `dy` or `lanes` is shorter than the layer's.
    pub(super) fn weight_grad(&self, x: &[f32], dy: &[f32], lanes: &mut [f32]) -> bool {
        let g = &self.g;
        assert!(
            x.len() >= g.chw() && dy.len() >= g.c * g.p() && lanes.len() >= self.weight_grad_len(),
            "operands too short for the layer"
        );
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above); the lengths are checked.
            unsafe { self.weight_grad_avx512(x, dy, lanes) };
            return true;
        }
        false
    }

    /// [`FlatDepthwise::weight_grad`] in AVX-512 registers.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; the operands must be as long as the layer's.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn weight_grad_avx512(&self, x: &[f32], dy: &[f32], lanes: &mut [f32]) {
        use std::arch::x86_64::*;
        let g = &self.g;
        let taps = g.kernel.0 * g.kernel.1;
        let total = g.c * g.p();
        for v in 0..total.div_ceil(LANES) {
            let tail = ((1u32 << (total - v * LANES).min(LANES)) - 1) as u16;
            let masks = &self.masks[(v % self.period) * taps..][..taps];
            let sums = &mut lanes[v * taps * LANES..][..taps * LANES];
            // SAFETY: the tail keeps the loads within the image's c·p outputs of dY and
            // the partial sums' 16 per tap; the lanes kept of x are taps inside their
            // channel's plane, inside `x`, and the others are not read.
            unsafe {
                let d = _mm512_maskz_loadu_ps(tail, dy.as_ptr().add(v * LANES));
                for (t, (&offset, &mask)) in self.offsets.iter().zip(masks).enumerate() {
                    let at = (v * LANES) as isize + offset;
                    let xv = _mm512_maskz_loadu_ps(mask & tail, x.as_ptr().wrapping_offset(at));
                    let sum = sums.as_mut_ptr().add(t * LANES);
                    _mm512_storeu_ps(sum, _mm512_fmadd_ps(d, xv, _mm512_loadu_ps(sum)));
                }
            }
        }
    }

    /// One image: `y` (`c·p`) from `x` (`c·h·w`), the `c × kh·kw` weights `w` and the
    /// optional bias, where the CPU has AVX-512F; `false` (nothing written) where it has
    /// not.
    ///
    /// # Panics
    /// If `x`, `y`, `w` or `bias` is shorter than the layer's.
    pub(super) fn forward(
        &self,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
    ) -> bool {
        let g = &self.g;
        let taps = g.kernel.0 * g.kernel.1;
        assert!(
            x.len() >= g.chw()
                && y.len() >= g.c * g.p()
                && w.len() >= g.c * taps
                && bias.is_none_or(|b| b.len() >= g.c),
            "operands too short for the layer"
        );
        // Planes under 16 pixels read the lane weights made from `new`'s weights.
        assert!(
            g.p() >= LANES || self.lane_weights.len() == self.weight_grad_len(),
            "a forward pass needs the weights given to `FlatDepthwise::new`"
        );
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above); the lengths are checked.
            unsafe { self.forward_avx512(x, w, bias, y) };
            return true;
        }
        false
    }

    /// [`FlatDepthwise::forward`] in AVX-512 registers: the full vectors [`UNROLL`] at a
    /// time, then the rest (the last one masked to the image) one at a time.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; the operands must be as long as the layer's.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn forward_avx512(&self, x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
        let total = self.g.c * self.g.p();
        let full = total / LANES;
        let grouped = full - full % UNROLL;
        // SAFETY: AVX-512F and the lengths are the caller's guarantee; the ranges of
        // vectors lie within the image's.
        unsafe { self.vectors_avx512::<UNROLL>(x, w, bias, y, (0, grouped)) };
        // SAFETY: as above.
        unsafe { self.vectors_avx512::<1>(x, w, bias, y, (grouped, full)) };
        if !total.is_multiple_of(LANES) {
            // SAFETY: as above; the last vector is partial, and its loads and store
            // are masked to the image.
            unsafe { self.vectors_avx512::<1>(x, w, bias, y, (full, full + 1)) };
        }
    }

    /// Vectors `first..end` of an image, `U` at a time (`end − first` a multiple of `U`):
    /// per vector its bias, then per tap its (masked) input times its weight, the `U`
    /// sums independent chains.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; the operands must be as long as the layer's, and
    /// `end` at most the image's vectors.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn vectors_avx512<const U: usize>(
        &self,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        (first, end): (usize, usize),
    ) {
        use std::arch::x86_64::*;
        let g = &self.g;
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
            let mut masks = [self.masks.as_ptr(); U];
            let mut weights = [w.as_ptr(); U];
            for u in 0..U {
                let v = v0 + u;
                let c0 = v * LANES / p;
                tails[u] = lanes_of(v);
                // SAFETY: r < period rows of `taps` masks; channel c0 < c has `taps`
                // weights; vector v < vectors has `taps · 16` lane weights.
                unsafe {
                    masks[u] = self.masks.as_ptr().add((v % self.period) * taps);
                    weights[u] = if broadcast {
                        w.as_ptr().add(c0 * taps)
                    } else {
                        self.lane_weights.as_ptr().add(v * taps * LANES)
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
            for (t, &d) in self.offsets.iter().enumerate() {
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
}
