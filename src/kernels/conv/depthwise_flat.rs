//! The depthwise forward of a "same" stride-1 layer read in place, and of a stride-2
//! layer read from its input split into phases (f32, AVX-512), with no transposes.
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
//!
//! A stride-2 layer's image split into its four phases (`phases.rs`: even or odd rows and
//! columns, each laid out as the output) is read the same way: tap `(ki, kj)` with
//! `ki − ph = 2·dy + a` and `kj − pw = 2·dx + b` reads phase `(a, b)` at
//! `q + dy·ow + dx`. Its input gradient sums each phase from the taps that read it, and
//! merges the phases back.

use super::phases;
use crate::kernels::Geometry;

/// f32 lanes per AVX-512 register.
const LANES: usize = 16;

/// Vectors summed side by side: independent chains of multiply-adds whose latencies
/// overlap.
const UNROLL: usize = 4;

/// The taps a pass of [`FlatDepthwise::sums_avx512`] sums, each with its offset, and the
/// masks of their lanes: all taps with `masks` for the forward pass, a phase's taps with
/// `grad_masks` for the input gradient of a stride-2 layer.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Reads<'r> {
    taps: &'r [(usize, isize)],
    masks: &'r [u16],
}

/// A layer's masks, offsets and (for planes under 16 pixels) per-lane weights.
#[derive(Debug)]
pub(super) struct FlatDepthwise {
    g: Geometry,
    /// Vectors after which the masks repeat: `p / 16`, or 1 for planes of at most 16.
    period: usize,
    /// `masks[r·taps + t]`: the lanes of vector `r` (of a period) whose tap `t` lies
    /// inside their own channel's plane.
    masks: Vec<u16>,
    /// Each tap `t = ki·kw + kj` with where it reads, from the output's own index:
    /// `(ki − ph)·w + kj − pw` in place, and for stride 2 `phase·c·p + dy·ow + dx` in
    /// the split input, where `ki − ph = 2·dy + a`, `kj − pw = 2·dx + b` and
    /// `phase = 2a + b`.
    offsets: Vec<(usize, isize)>,
    /// For stride 2, per phase the taps that read it, each with the shift from a pixel of
    /// the phase to the output that reads it through that tap: `−(dy·ow + dx)`.
    phase_taps: [Vec<(usize, isize)>; 4],
    /// For stride 2, `grad_masks[r·taps + t]`: the lanes of vector `r` (of a period) of a
    /// phase plane whose output through tap `t` lies inside the output plane.
    grad_masks: Vec<u16>,
    /// For planes under 16 pixels, `lane_weights[(v·taps + t)·16 + l]`: the weight of
    /// tap `t` for the channel of lane `l` of vector `v` (0 past the last channel).
    lane_weights: Vec<f32>,
}

impl FlatDepthwise {
    /// The layer of geometry `g` with the `c × kh·kw` weights `w` (empty for a backward
    /// pass that wants only dW), or `None` where this path does not apply: dilated, a
    /// stride-1 layer that is not "same", a stride-2 layer whose input's phases do not fit
    /// its output planes, other strides, or planes that are neither a multiple nor a
    /// divisor of 16 pixels.
    pub(super) fn new(g: &Geometry, w: &[f32]) -> Option<Self> {
        let p = g.p();
        let stride = g.stride.0;
        let fits = match g.stride {
            (1, 1) => (g.oh, g.ow) == (g.h, g.w),
            (2, 2) => phases::fits(g),
            _ => false,
        };
        if g.dilation != (1, 1) || !fits || p == 0 {
            return None;
        }
        if !p.is_multiple_of(LANES) && !LANES.is_multiple_of(p) {
            return None;
        }
        let ((kh, kw), (ph, pw)) = (g.kernel, g.padding);
        let taps = kh * kw;
        // Per axis and tap: (phase, shift) with tap − pad = stride·shift + phase, so
        // output o reads row o + shift of that phase, inside the image when
        // stride·(o + shift) + phase lies in 0..size.
        let split = |tap: usize, pad: usize| {
            let rel = tap as isize - pad as isize;
            (
                rel.rem_euclid(stride as isize),
                rel.div_euclid(stride as isize),
            )
        };
        let inside = |o: usize, (phase, shift): (isize, isize), size: usize| {
            let i = o as isize + shift;
            i >= 0 && ((stride as isize * i + phase) as usize) < size
        };
        let period = (p / LANES).max(1);
        let mut masks = vec![0u16; period * taps];
        for (r, masks) in masks.chunks_exact_mut(taps).enumerate() {
            for lane in 0..LANES {
                let j = (r * LANES + lane) % p;
                let (oy, ox) = (j / g.ow, j % g.ow);
                for ki in 0..kh {
                    for kj in 0..kw {
                        if inside(oy, split(ki, ph), g.h) && inside(ox, split(kj, pw), g.w) {
                            masks[ki * kw + kj] |= 1 << lane;
                        }
                    }
                }
            }
        }
        let mut offsets = Vec::with_capacity(taps);
        let mut phase_taps: [Vec<(usize, isize)>; 4] = Default::default();
        let mut grad_masks = Vec::new();
        for t in 0..taps {
            let ((a, dy), (b, dx)) = (split(t / kw, ph), split(t % kw, pw));
            let phase = (a * stride as isize + b) as usize;
            let shift = dy * g.ow as isize + dx;
            offsets.push((t, (phase * g.c * p) as isize + shift));
            phase_taps[phase].push((t, -shift));
        }
        if stride == 2 {
            // Phase pixel (i, j) is read through tap t by output (i − dy, j − dx).
            grad_masks = vec![0u16; period * taps];
            let within = |o: usize, shift: isize, size: usize| {
                (o as isize - shift >= 0) && ((o as isize - shift) as usize) < size
            };
            for (r, masks) in grad_masks.chunks_exact_mut(taps).enumerate() {
                for lane in 0..LANES {
                    let j = (r * LANES + lane) % p;
                    let (i, jj) = (j / g.ow, j % g.ow);
                    for (t, mask) in masks.iter_mut().enumerate() {
                        let ((_, dy), (_, dx)) = (split(t / kw, ph), split(t % kw, pw));
                        if within(i, dy, g.oh) && within(jj, dx, g.ow) {
                            *mask |= 1 << lane;
                        }
                    }
                }
            }
        }
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
            phase_taps,
            grad_masks,
            lane_weights,
        })
    }

    /// The layer whose forward pass is this one's input gradient (dY correlated with each
    /// channel's filter flipped, under padding `k − 1 − p`), with those flipped weights;
    /// `None` for strided layers or where that layer is not read in place either.
    pub(super) fn transposed(g: &Geometry, w: &[f32]) -> Option<(Self, Vec<f32>)> {
        if g.stride != (1, 1) {
            return None;
        }
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
    pub(super) fn weight_grad(
        &self,
        x: &[f32],
        dy: &[f32],
        lanes: &mut [f32],
        workspace: &mut [f32],
    ) -> bool {
        let g = &self.g;
        assert!(
            x.len() >= g.chw() && dy.len() >= g.c * g.p() && lanes.len() >= self.weight_grad_len(),
            "operands too short for the layer"
        );
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            let x = self.source(x, workspace);
            // SAFETY: the CPU has AVX-512F (checked just above); the lengths are checked,
            // and `source` gives the split input its 4·c·p elements.
            unsafe { self.weight_grad_avx512(x, dy, lanes) };
            return true;
        }
        let _ = workspace;
        false
    }

    /// Whether the layer is strided, and read from its input split into phases.
    fn split(&self) -> bool {
        self.g.stride == (2, 2)
    }

    /// Elements of workspace the forward pass and dW need: the split input of a stride-2
    /// layer (`4·c·p`), none in place.
    pub(super) fn split_len(&self) -> usize {
        if self.split() {
            4 * self.g.c * self.g.p()
        } else {
            0
        }
    }

    /// What the kernels read: `x` itself in place, or its four phases split into the
    /// front of `workspace` (stride 2).
    fn source<'s>(&self, x: &'s [f32], workspace: &'s mut [f32]) -> &'s [f32] {
        if !self.split() {
            return x;
        }
        let xs = &mut workspace[..self.split_len()];
        phases::split(&self.g, x, xs);
        xs
    }

    /// dX of one image of a stride-2 layer (overwritten) from `dy`, with the layer's
    /// weights `w`: each phase of the split input gradient summed from the taps that read
    /// that phase (`w · dY` of the output each pixel's tap feeds), as the forward pass
    /// sums its outputs, then the phases merged back into `dx`; `false` (nothing
    /// written) where the CPU lacks AVX-512F. The workspace holds `4·c·p` elements.
    ///
    /// # Panics
    /// If the layer is not strided, or an operand is shorter than the layer's.
    pub(super) fn input_grad(
        &self,
        dy: &[f32],
        w: &[f32],
        dx: &mut [f32],
        workspace: &mut [f32],
    ) -> bool {
        let g = &self.g;
        let taps = g.kernel.0 * g.kernel.1;
        assert!(self.split(), "in-place layers take the transposed forward");
        assert!(
            dy.len() >= g.c * g.p() && w.len() >= g.c * taps && dx.len() >= g.chw(),
            "operands too short for the layer"
        );
        assert!(
            g.p() >= LANES || self.lane_weights.len() == self.weight_grad_len(),
            "dX needs the weights given to `FlatDepthwise::new`"
        );
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            let dxs = &mut workspace[..self.split_len()];
            let cp = g.c * g.p();
            for (taps, dxs) in self.phase_taps.iter().zip(dxs.chunks_exact_mut(cp)) {
                let reads = Reads {
                    taps,
                    masks: &self.grad_masks,
                };
                // SAFETY: the CPU has AVX-512F (checked just above); the lengths are
                // checked, each phase plane is c·p long, and the grad masks keep every
                // lane's read of dY inside its channel's output plane.
                unsafe { self.sums_avx512(dy, w, None, dxs, reads) };
            }
            phases::merge(g, dxs, dx);
            return true;
        }
        let _ = workspace;
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
                for (&(t, offset), &mask) in self.offsets.iter().zip(masks) {
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
    /// not. A stride-2 layer splits `x` into the workspace first ([`Self::split_len`]).
    ///
    /// # Panics
    /// If `x`, `y`, `w` or `bias` is shorter than the layer's.
    pub(super) fn forward(
        &self,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        workspace: &mut [f32],
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
            let x = self.source(x, workspace);
            let reads = Reads {
                taps: &self.offsets,
                masks: &self.masks,
            };
            // SAFETY: the CPU has AVX-512F (checked just above); the lengths are checked,
            // and `source` gives the split input its 4·c·p elements.
            unsafe { self.sums_avx512(x, w, bias, y, reads) };
            return true;
        }
        let _ = workspace;
        false
    }

    /// [`FlatDepthwise::forward`] in AVX-512 registers (and each phase of
    /// [`FlatDepthwise::input_grad`], `reads` saying which taps and masks): the full
    /// vectors [`UNROLL`] at a time, then the rest (the last one masked to the image) one
    /// at a time.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; the operands must be as long as the layer's, and
    /// the masks keep every lane's read inside `x`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn sums_avx512(
        &self,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        reads: Reads<'_>,
    ) {
        let total = self.g.c * self.g.p();
        let full = total / LANES;
        let grouped = full - full % UNROLL;
        // SAFETY: AVX-512F and the lengths are the caller's guarantee; the ranges of
        // vectors lie within the image's.
        unsafe { self.vectors_avx512::<UNROLL>(x, w, bias, y, (0, grouped), reads) };
        // SAFETY: as above.
        unsafe { self.vectors_avx512::<1>(x, w, bias, y, (grouped, full), reads) };
        if !total.is_multiple_of(LANES) {
            // SAFETY: as above; the last vector is partial, and its loads and store
            // are masked to the image.
            unsafe { self.vectors_avx512::<1>(x, w, bias, y, (full, full + 1), reads) };
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
        reads: Reads<'_>,
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
            let mut masks = [reads.masks.as_ptr(); U];
            let mut weights = [w.as_ptr(); U];
            for u in 0..U {
                let v = v0 + u;
                let c0 = v * LANES / p;
                tails[u] = lanes_of(v);
                // SAFETY: r < period rows of `taps` masks; channel c0 < c has `taps`
                // weights; vector v < vectors has `taps · 16` lane weights.
                unsafe {
                    masks[u] = reads.masks.as_ptr().add((v % self.period) * taps);
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
}
