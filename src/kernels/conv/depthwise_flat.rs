//! The depthwise forward of a "same" stride-1 layer read in place, and of a stride-2
//! layer read from its input split into phases (f32, AVX-512 or AVX2 with FMA), with no
//! transposes.
//!
//! In such a layer (`oh = h`, `ow = w`) output element `q` of an image, flat over its
//! channels and pixels (`q = c·p + j`), reads tap `(ki, kj)` at flat input element
//! `q + (ki − ph)·w + (kj − pw)`: one offset for every element, as in the rows kernels
//! (`direct_rows/taps.rs`). So `L` consecutive outputs (a vector: 16 lanes on AVX-512,
//! 8 on AVX2, in `depthwise_flat_avx512.rs` and `depthwise_flat_avx2.rs`) are summed
//! from `L` consecutive inputs per tap, and the lanes whose tap lies outside their own
//! channel's plane are masked off. When the
//! plane is a multiple of `L` pixels every vector lies in one channel and takes its
//! weight by broadcast; when it divides `L` (mobilenet-v2's 4×4, 2×2 and 1×1 maps) a
//! vector spans `L / p` channels and takes per-lane weights prepared once. The
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

#[cfg(target_arch = "x86_64")]
#[path = "depthwise_flat_avx2.rs"]
mod avx2;
#[cfg(target_arch = "x86_64")]
#[path = "depthwise_flat_avx512.rs"]
mod avx512;

/// f32 lanes per AVX-512 register.
const LANES: usize = 16;

/// The vector instructions a [`FlatDepthwise`] sums with, which fix its vectors' width.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FlatIsa {
    /// 16 lanes, masked loads and stores by `u16` masks.
    Avx512,
    /// 8 lanes (AVX2 with FMA), masked loads and stores by vector masks.
    Avx2,
}

impl FlatIsa {
    /// f32 lanes per vector.
    pub(super) fn lanes(self) -> usize {
        match self {
            FlatIsa::Avx512 => LANES,
            FlatIsa::Avx2 => 8,
        }
    }

    /// Whether this CPU has these instructions.
    pub(super) fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                FlatIsa::Avx512 => has!("avx512f"),
                FlatIsa::Avx2 => has!("avx2") && has!("fma"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// The widest this CPU has, if any.
    pub(super) fn detect() -> Option<Self> {
        [FlatIsa::Avx512, FlatIsa::Avx2]
            .into_iter()
            .find(|isa| isa.supported())
    }
}

/// Vectors summed side by side: independent chains of multiply-adds whose latencies
/// overlap.
const UNROLL: usize = 4;

/// The taps a pass of `sums` sums, each with its offset, and the
/// masks of their lanes: all taps with `masks` for the forward pass, a phase's taps with
/// `grad_masks` for the input gradient of a stride-2 layer.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Reads<'r> {
    taps: &'r [(usize, isize)],
    masks: &'r [u16],
    /// The same masks as vectors of 8 lanes (0 or −1), for AVX2.
    lane_masks: &'r [i32],
}

/// A layer's masks, offsets and (for planes under 16 pixels) per-lane weights.
#[derive(Debug)]
pub(super) struct FlatDepthwise {
    g: Geometry,
    /// The instructions it sums with, and so the lanes `L` of a vector.
    isa: FlatIsa,
    /// Vectors after which the masks repeat: `p / L`, or 1 for planes of at most `L`.
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
    /// For planes under `L` pixels, `lane_weights[(v·taps + t)·L + l]`: the weight of
    /// tap `t` for the channel of lane `l` of vector `v` (0 past the last channel).
    lane_weights: Vec<f32>,
    /// For AVX2, `masks` and `grad_masks` as vectors of 8 lanes, each 0 or −1.
    lane_masks: [Vec<i32>; 2],
}

impl FlatDepthwise {
    /// The layer of geometry `g` with the `c × kh·kw` weights `w` (empty for a backward
    /// pass that wants only dW), summed with `isa`, or `None` where this path does not
    /// apply: the CPU lacks `isa`, dilated, a stride-1 layer that is not "same", a
    /// stride-2 layer whose input's phases do not fit its output planes, other strides,
    /// or planes that are neither a multiple nor a divisor of `isa`'s lanes.
    pub(super) fn new(g: &Geometry, w: &[f32], isa: FlatIsa) -> Option<Self> {
        let p = g.p();
        let stride = g.stride.0;
        let fits = match g.stride {
            (1, 1) => (g.oh, g.ow) == (g.h, g.w),
            (2, 2) => phases::fits(g),
            _ => false,
        };
        if g.dilation != (1, 1) || !fits || p == 0 || !isa.supported() {
            return None;
        }
        let lanes = isa.lanes();
        if !p.is_multiple_of(lanes) && !lanes.is_multiple_of(p) {
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
        let period = (p / lanes).max(1);
        let mut masks = vec![0u16; period * taps];
        for (r, masks) in masks.chunks_exact_mut(taps).enumerate() {
            for lane in 0..lanes {
                let j = (r * lanes + lane) % p;
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
                for lane in 0..lanes {
                    let j = (r * lanes + lane) % p;
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
        if p < lanes && w.len() == g.c * taps {
            let vectors = (g.c * p).div_ceil(lanes);
            lane_weights = vec![0.0; vectors * taps * lanes];
            // Vector v's lane l holds channel v·(lanes / p) + l / p: no division per
            // element (this runs on every call, and dividing per element cost 0.4 ms on
            // mobilenet-v2's 576-channel 2×2 layer at batch 128).
            let per_vector = lanes / p;
            let past_first: Vec<usize> = (0..lanes).map(|l| l / p).collect();
            for (v, by_tap) in lane_weights.chunks_exact_mut(taps * lanes).enumerate() {
                for (t, by_lane) in by_tap.chunks_exact_mut(lanes).enumerate() {
                    for (wv, &past) in by_lane.iter_mut().zip(&past_first) {
                        let ch = v * per_vector + past;
                        if ch < g.c {
                            *wv = w[ch * taps + t];
                        }
                    }
                }
            }
        }
        let lane_masks = match isa {
            FlatIsa::Avx2 => [as_vectors(&masks, lanes), as_vectors(&grad_masks, lanes)],
            FlatIsa::Avx512 => Default::default(),
        };
        Some(FlatDepthwise {
            g: *g,
            isa,
            period,
            masks,
            offsets,
            phase_taps,
            grad_masks,
            lane_weights,
            lane_masks,
        })
    }

    /// The layer whose forward pass is this one's input gradient (dY correlated with each
    /// channel's filter flipped, under padding `k − 1 − p`), with those flipped weights;
    /// `None` for strided layers or where that layer is not read in place either.
    pub(super) fn transposed(g: &Geometry, w: &[f32], isa: FlatIsa) -> Option<(Self, Vec<f32>)> {
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
        Some((FlatDepthwise::new(&gt, &flipped, isa)?, flipped))
    }

    /// Partial sums the weight gradient keeps: for every vector of an image and tap, one
    /// per lane (each lane's channel is fixed by its place in the image).
    pub(super) fn weight_grad_len(&self) -> usize {
        let (taps, lanes) = (self.g.kernel.0 * self.g.kernel.1, self.isa.lanes());
        (self.g.c * self.g.p()).div_ceil(lanes) * taps * lanes
    }

    /// The `c × kh·kw` weight gradient from the lanes' partial sums: each lane added to
    /// its channel's tap.
    pub(super) fn finish_weight_grad(&self, lanes: &[f32]) -> Vec<f32> {
        let (p, taps) = (self.g.p(), self.g.kernel.0 * self.g.kernel.1);
        let (total, width) = (self.g.c * p, self.isa.lanes());
        // Lane l of a vector lies l / p channels past the vector's first (0 for planes of
        // a vector's width or more): no division per element (this runs serially, after
        // the parallel part of backward).
        let past_first: [usize; LANES] = std::array::from_fn(|l| if p < width { l / p } else { 0 });
        let mut dw = vec![0.0; self.g.c * taps];
        for (v, sums) in lanes.chunks_exact(taps * width).enumerate() {
            let (first, n) = (v * width / p, (total - v * width).min(width));
            for (t, sums) in sums.chunks_exact(width).enumerate() {
                for (&s, &past) in sums.iter().zip(&past_first).take(n) {
                    dw[(first + past) * taps + t] += s;
                }
            }
        }
        dw
    }

    /// `lanes[(v·taps + t)·16 + l] += dY[q] · x[q + offset(t)]` for output `q = 16v + l` of
    /// one image and every tap inside its plane, where the CPU has the layer's
    /// instructions; `false` (nothing added) where it has not.
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
        if self.isa.supported() {
            let x = self.source(x, workspace);
            // SAFETY: the CPU has the instructions (checked just above); the lengths are
            // checked, and `source` gives the split input its 4·c·p elements.
            unsafe {
                match self.isa {
                    FlatIsa::Avx512 => avx512::weight_grad(self, x, dy, lanes),
                    FlatIsa::Avx2 => avx2::weight_grad(self, x, dy, lanes),
                }
            }
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
    /// written) where the CPU lacks the layer's instructions. The workspace holds `4·c·p` elements.
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
            g.p() >= self.isa.lanes() || self.lane_weights.len() == self.weight_grad_len(),
            "dX needs the weights given to `FlatDepthwise::new`"
        );
        #[cfg(target_arch = "x86_64")]
        if self.isa.supported() {
            let dxs = &mut workspace[..self.split_len()];
            let cp = g.c * g.p();
            for (taps, dxs) in self.phase_taps.iter().zip(dxs.chunks_exact_mut(cp)) {
                let reads = Reads {
                    taps,
                    masks: &self.grad_masks,
                    lane_masks: &self.lane_masks[1],
                };
                // SAFETY: the CPU has the instructions (checked just above); the lengths
                // are checked, each phase plane is c·p long, and the grad masks keep
                // every lane's read of dY inside its channel's output plane.
                unsafe { self.sums(dy, w, None, dxs, reads) };
            }
            phases::merge(g, dxs, dx);
            return true;
        }
        let _ = workspace;
        false
    }

    /// One image: `y` (`c·p`) from `x` (`c·h·w`), the `c × kh·kw` weights `w` and the
    /// optional bias, where the CPU has the layer's instructions; `false` (nothing
    /// written) where it has not. A stride-2 layer splits `x` into the workspace first ([`Self::split_len`]).
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
        // Planes under a vector's width read the lane weights made from `new`'s weights.
        assert!(
            g.p() >= self.isa.lanes() || self.lane_weights.len() == self.weight_grad_len(),
            "a forward pass needs the weights given to `FlatDepthwise::new`"
        );
        #[cfg(target_arch = "x86_64")]
        if self.isa == FlatIsa::Avx2 && self.isa.supported() && avx2::takes_rows_3x3(g) {
            // SAFETY: the CPU has AVX2 and FMA (checked just above), the layer is one
            // `rows_3x3` takes at its stride, and the lengths are checked.
            unsafe {
                match g.stride.0 {
                    1 => avx2::rows_3x3::<1>(g, x, w, bias, y),
                    _ => avx2::rows_3x3::<2>(g, x, w, bias, y),
                }
            }
            return true;
        }
        #[cfg(target_arch = "x86_64")]
        if self.isa.supported() {
            let x = self.source(x, workspace);
            let reads = Reads {
                taps: &self.offsets,
                masks: &self.masks,
                lane_masks: &self.lane_masks[0],
            };
            // SAFETY: the CPU has the instructions (checked just above); the lengths are
            // checked, and `source` gives the split input its 4·c·p elements.
            unsafe { self.sums(x, w, bias, y, reads) };
            return true;
        }
        let _ = workspace;
        false
    }

    /// [`FlatDepthwise::forward`] (and each phase of [`FlatDepthwise::input_grad`]) in
    /// the layer's instructions.
    ///
    /// # Safety
    /// As `avx512::sums`, with the layer's instructions for AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn sums(
        &self,
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        reads: Reads<'_>,
    ) {
        // SAFETY: the caller's guarantee.
        unsafe {
            match self.isa {
                FlatIsa::Avx512 => avx512::sums(self, x, w, bias, y, reads),
                FlatIsa::Avx2 => avx2::sums(self, x, w, bias, y, reads),
            }
        }
    }
}

/// `bits` (one `u16` of lane bits per vector and tap) as vectors of `lanes` `i32`, each
/// −1 where its bit is set and 0 where not: the form AVX2's masked loads take.
fn as_vectors(bits: &[u16], lanes: usize) -> Vec<i32> {
    bits.iter()
        .flat_map(|&b| (0..lanes).map(move |l| -i32::from((b >> l) & 1)))
        .collect()
}
