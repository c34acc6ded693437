//! Convolutions summed directly in registers, the output's rows laid end to end.
//!
//! For stride 1, output pixel `(oh, ox)` reads input `(oh + ki, ox + kj)` of the padded
//! image at tap `(ki, kj)`. If the padded input is stored once per tap column `kj`,
//! shifted left by `kj` and cut to the output's width (`shifted[kj][r][x] =
//! padded[r][x + kj]`), then output pixel `p = oh·ow + ox` reads `shifted[kj][ki·ow + p]`:
//! for every tap, the output's pixels read consecutive inputs. Each block of 32 (or 48)
//! output pixels of 8 channels is summed in registers straight from those copies — per
//! tap one load of 16 pixels per vector and a multiply-add per channel — with no column
//! matrix and no packing, at any width and any channel count. With "same" padding
//! (`ow = w`) a copy is the image's channel moved by `kj − pw` elements as a whole, its
//! wrapped-around column zeroed. With stride `(sh, sw)` the copies also keep every `sw`-th
//! column and are split by row phase (`padded[r·sh + φ][x·sw + kj]`): tap `(ki, kj)` of
//! pixel `p` is then element `(ki / sh)·ow + p` of the copy for `kj` and `φ = ki mod sh`.
//! On AVX-512 a stride-1 layer with `ow = w` makes no copies: its kernels read the image
//! in place, with masked loads that leave out the taps in the padding (`taps.rs`).
//!
//! The weight gradient sums the same products the other way: `dW[oc][c, ki, kj] = Σ_p
//! dY[oc][p] · shifted[c][kj][ki·ow + p]`, dot products over consecutive pixels. The input
//! gradient of a stride-1 layer is the forward pass of the transposed layer (dY
//! correlated with the weights flipped, under padding `k − 1 − p`) where that padding is
//! not negative; otherwise it is the implicit GEMM's backward.
//!
//! `DirectRowsForward::forward_portable` and `DirectRowsBackward::weight_grad_portable`
//! are the loops in plain Rust (f64, CPUs without AVX-512, and the versions to read
//! first); on AVX-512 f32 twins keep the accumulators in registers (`forward_avx512`,
//! `weight_grad_avx512`). All are tested against the definition ([`super::direct`]).

#[cfg(target_arch = "x86_64")]
mod avx2;
mod backward;
#[cfg(target_arch = "x86_64")]
mod epilogue;
mod strided;
mod taps;

pub use backward::DirectRowsBackward;
#[cfg(target_arch = "x86_64")]
use epilogue::{finish_avx512, kind};
use taps::InPlaceMasks;
#[cfg(target_arch = "x86_64")]
use taps::{InPlaceTaps, ShiftedTaps, Taps};

use super::{ConvForward, Epilogue};
use crate::kernels::elementwise::copy_short;
use crate::kernels::{Element, Geometry};

/// Pixels per vector: one AVX-512 register of f32.
pub(super) const LANES: usize = 16;

/// Output channels summed together: 8 channels × 2 or 3 vectors of accumulators use 16
/// or 24 of the 32 AVX-512 registers.
pub(super) const GROUP: usize = 8;

/// Output pixels the portable loops sum at once.
const BLOCK: usize = 2 * LANES;

/// The most pixels a block of the kernels that read the copies unmasked (AVX2, portable)
/// reads past its first: the slack at the end of every shifted copy. The AVX-512 kernels
/// mask their loads to the image's pixels and may use wider blocks.
const MAX_BLOCK: usize = 3 * LANES;

/// The most input taps (`c·kh·kw`) of a layer whose weight gradient the rows kernels are
/// chosen for ([`DirectRowsBackward`]) whatever its channels: first layers.
pub const DOT_GRAD_MAX_TAPS: usize = 75;

/// The most channel pairs (`c·o`) of a deeper layer whose weight gradient the rows
/// kernels are chosen for: resnet20's 16→16 and 16→32 layers. Their dot products load 11
/// vectors for 24 multiply-adds at any channel count, while the GEMMs of Winograd and the
/// implicit GEMM grow more efficient with more channels: from 32→32 on they are faster
/// (batch 128, 1 thread, dW alone: 6.1–6.5 ms against Winograd's 4.5 on 32→32 16×16).
pub const DOT_GRAD_MAX_CHANNEL_PAIRS: usize = 512;

/// Whether the rows kernels compute a layer of geometry `g`: any undilated layer.
pub fn supports(g: &Geometry) -> bool {
    g.dilation == (1, 1)
}

/// Whether the CPU has AVX2 and FMA, which the vector kernels of CPUs without AVX-512
/// need (every AVX-512 CPU has them too).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// The masks with which the AVX-512 kernels read images of layer `g` in place, where
/// they run (f32 on a CPU with AVX-512F) and the layer allows it ([`InPlaceMasks::new`]).
fn in_place_masks<T: Element>(g: &Geometry) -> Option<InPlaceMasks> {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::element::as_f32::<T>(&[]).is_some()
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        return InPlaceMasks::new(g);
    }
    None
}

/// The shifted copies of one image the kernels read: for each channel `c`, tap column
/// `kj` and row phase `φ < sh` (stride 1: only `φ = 0`), a plane of `height × ow` values
/// `padded[r·sh + φ][x·sw + kj]` and [`MAX_BLOCK`] zeros of slack. Tap `(ki, kj)` of
/// output pixel `p` is then element `(ki / sh)·ow + p` of plane `(c, kj, ki mod sh)`.
#[derive(Clone, Copy, Debug)]
pub(super) struct ShiftedImage {
    pub(super) g: Geometry,
}

impl ShiftedImage {
    /// Row phases: the stride's, or fewer if the kernel is shorter.
    fn phases(&self) -> usize {
        self.g.stride.0.min(self.g.kernel.0)
    }

    /// Rows of a plane: the output's, and the kernel's extra rows at this stride.
    fn height(&self) -> usize {
        self.g.oh + (self.g.kernel.0 - 1) / self.g.stride.0
    }

    /// Elements of a plane, slack included.
    fn plane_len(&self) -> usize {
        self.height() * self.g.ow + MAX_BLOCK
    }

    /// Elements of all copies.
    pub(super) fn len(&self) -> usize {
        self.g.c * self.g.kernel.1 * self.phases() * self.plane_len()
    }

    /// Where tap `(c, ki, kj)` of output pixel 0 is read.
    pub(super) fn offset(&self, c: usize, ki: usize, kj: usize) -> usize {
        let sh = self.g.stride.0;
        let plane = (c * self.g.kernel.1 + kj) * self.phases() + ki % sh;
        plane * self.plane_len() + (ki / sh) * self.g.ow
    }

    /// One image `x` copied into `shifted` ([`ShiftedImage::len`] elements), every
    /// element written once.
    pub(super) fn fill<T: Element>(&self, x: &[T], shifted: &mut [T]) {
        let g = &self.g;
        let ((ph, pw), (sh, sw)) = (g.padding, g.stride);
        let (hw, ow, phases) = (g.h * g.w, g.ow, self.phases());
        // Output columns lo..hi read the image's columns x·sw + kj − pw.
        let columns = |kj: usize| {
            let lo = pw.saturating_sub(kj).div_ceil(sw).min(ow);
            (lo, (g.w + pw).saturating_sub(kj).div_ceil(sw).clamp(lo, ow))
        };
        let planes = shifted.chunks_exact_mut(self.plane_len());
        for (i, plane) in planes.enumerate().take(g.c * g.kernel.1 * phases) {
            let (c, kj, phase) = (
                i / (g.kernel.1 * phases),
                i / phases % g.kernel.1,
                i % phases,
            );
            let src = &x[c * hw..][..hw];
            let (lo, hi) = columns(kj);
            let (body, slack) = plane.split_at_mut(self.height() * ow);
            slack.fill(T::zero());
            if (sh, sw, ow) == (1, 1, g.w) {
                // The whole channel moved by kj − pw, the top and bottom padding rows
                // zeroed, then the columns outside lo..hi (wrapped around from the next
                // or last row) zeroed.
                let (top, rest) = body.split_at_mut(ph * ow);
                let (body, bottom) = rest.split_at_mut(g.h * ow);
                top.fill(T::zero());
                bottom.fill(T::zero());
                let (from, to) = ((kj + lo).saturating_sub(pw), lo);
                let n = hw.saturating_sub(from.max(to));
                if n > 0 {
                    body[to..to + n].copy_from_slice(&src[from..from + n]);
                }
                // Column by column: a few elements per row, where a call per row costs
                // more than the stores.
                for col in (0..lo).chain(hi..ow) {
                    for v in body[col..].iter_mut().step_by(ow) {
                        *v = T::zero();
                    }
                }
                continue;
            }
            if (sh, sw, ph, pw) == (1, 1, 0, 0) {
                // Unpadded, unit stride (LeNet's layers): row r is the image's row r from
                // column kj on, in copies of 8 (a `memmove` call per row of 8 or 24
                // values, and the general loop's bookkeeping, cost more than the copy).
                for (row, from) in body.chunks_exact_mut(ow).zip(src.chunks_exact(g.w)) {
                    copy_short(row, &from[kj..kj + ow]);
                }
                continue;
            }
            for (r, row) in body.chunks_exact_mut(ow).enumerate() {
                let Some(iy) = (r * sh + phase).checked_sub(ph).filter(|&iy| iy < g.h) else {
                    row.fill(T::zero());
                    continue;
                };
                // Element by element: a few per row, where a call per row costs more.
                let (left, rest) = row.split_at_mut(lo);
                for v in left.iter_mut().chain(&mut rest[hi - lo..]) {
                    *v = T::zero();
                }
                if lo == hi {
                    continue;
                }
                let from = &src[iy * g.w + lo * sw + kj - pw..][..(hi - lo - 1) * sw + 1];
                if sw == 1 {
                    row[lo..hi].copy_from_slice(from);
                    continue;
                }
                strided::copy_strided(from, sw, &mut row[lo..hi]);
            }
        }
    }
}

/// The forward pass by blocks of output pixels, with the weights regrouped once per call.
pub struct DirectRowsForward<T> {
    geometry: Geometry,
    outputs: usize,
    /// `w[(q·k + (ki·kw + kj)·c + ci)·GROUP + j]` = weight `(ci, ki, kj)` of output
    /// channel `q·GROUP + j` (0 past the last channel): a group's 8 weights of one tap side
    /// by side, the input channels of one kernel position one after the other.
    weights: Vec<T>,
    /// Where the AVX-512 kernel reads the image in place instead of from shifted copies
    /// (f32 on a CPU with AVX-512, stride-1 layers with `ow = w`).
    in_place: Option<InPlaceMasks>,
}

impl<T: Element> DirectRowsForward<T> {
    /// Prepares the `o × c × kh × kw` weights `w` of a layer of geometry `g`.
    ///
    /// # Panics
    /// If the rows kernels do not compute `g` ([`supports`] says).
    pub fn new(g: &Geometry, o: usize, w: &[T]) -> Self {
        assert!(supports(g), "the rows kernels need dilation 1, not {g:?}");
        let (k, kk) = (g.k(), g.kernel.0 * g.kernel.1);
        let mut weights = vec![T::zero(); o.div_ceil(GROUP) * k * GROUP];
        for (oc, kernel) in w.chunks_exact(k).enumerate().take(o) {
            let (q, j) = (oc / GROUP, oc % GROUP);
            for (tap, &v) in kernel.iter().enumerate() {
                let (ci, at) = (tap / kk, tap % kk);
                weights[(q * k + at * g.c + ci) * GROUP + j] = v;
            }
        }
        DirectRowsForward {
            geometry: *g,
            outputs: o,
            in_place: in_place_masks::<T>(g),
            weights,
        }
    }

    /// The rows forward of the layer whose forward pass is the input gradient of layer `g`
    /// with weights `w` ([`transposed_layer`](crate::kernels::conv::transposed_layer)):
    /// `None` for an empty `w`, strided layers and padding that reaches the kernel.
    pub fn transposed(g: &Geometry, o: usize, w: &[T]) -> Option<Self> {
        if w.is_empty() {
            return None;
        }
        let (gx, flipped) = crate::kernels::conv::transposed_layer(g, o, w)?;
        Some(DirectRowsForward::new(&gx, g.c, &flipped))
    }

    /// The shifted copies of an image this layer reads.
    fn shifted(&self) -> ShiftedImage {
        ShiftedImage { g: self.geometry }
    }

    /// One image from its shifted copies: for each block of [`BLOCK`] output pixels and
    /// group of 8 channels, every tap's inputs loaded once and multiplied into all 8.
    fn forward_portable(&self, shifted: &[T], bias: Option<&[T]>, y: &mut [T]) {
        let g = &self.geometry;
        let img = self.shifted();
        let (k, p, o) = (g.k(), g.p(), self.outputs);
        let (kh, kw) = g.kernel;
        for p0 in (0..p).step_by(BLOCK) {
            let n = BLOCK.min(p - p0);
            for (q, w) in self.weights.chunks_exact(k * GROUP).enumerate() {
                let mut acc = [[T::zero(); BLOCK]; GROUP];
                for (j, acc) in acc.iter_mut().enumerate() {
                    let b = bias.and_then(|b| b.get(q * GROUP + j)).copied();
                    *acc = [b.unwrap_or(T::zero()); BLOCK];
                }
                for ki in 0..kh {
                    for kj in 0..kw {
                        for c in 0..g.c {
                            let xs = &shifted[img.offset(c, ki, kj) + p0..][..BLOCK];
                            let wt = &w[((ki * kw + kj) * g.c + c) * GROUP..][..GROUP];
                            for (acc, &wj) in acc.iter_mut().zip(wt) {
                                for (a, &x) in acc.iter_mut().zip(xs) {
                                    *a += wj * x;
                                }
                            }
                        }
                    }
                }
                for (j, acc) in acc.iter().enumerate().take(o - q * GROUP) {
                    y[(q * GROUP + j) * p + p0..][..n].copy_from_slice(&acc[..n]);
                }
            }
        }
    }
}

impl<T: Element> ConvForward<T> for DirectRowsForward<T> {
    /// The shifted copies, unless the image is read in place.
    fn workspace(&self) -> usize {
        match self.in_place {
            Some(_) => 0,
            None => self.shifted().len(),
        }
    }

    /// Every block's stores cover all its pixels and channels.
    fn writes_every_output(&self) -> bool {
        true
    }

    fn forward(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], workspace: &mut [T]) {
        self.images(x, bias, None, y, workspace);
    }

    /// Fused where the AVX-512 kernel runs (f32 on a CPU with AVX-512F), in its stores.
    fn forward_fused(
        &self,
        x: &[T],
        bias: Option<&[T]>,
        epilogue: Epilogue<'_, T>,
        y: &mut [T],
        workspace: &mut [T],
    ) -> bool {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::element::as_f32(x).is_some()
            && has_avx2()
            && std::arch::is_x86_feature_detected!("avx512f")
        {
            self.images(x, bias, Some(epilogue), y, workspace);
            return true;
        }
        false
    }
}

impl<T: Element> DirectRowsForward<T> {
    /// The images of `x` into `y`, each with its part of `epilogue` applied: in the
    /// AVX-512 kernel's stores, else by a pass over the image's outputs.
    fn images(
        &self,
        x: &[T],
        bias: Option<&[T]>,
        epilogue: Option<Epilogue<'_, T>>,
        y: &mut [T],
        workspace: &mut [T],
    ) {
        let g = &self.geometry;
        let len = self.outputs * g.p();
        let shifted = &mut workspace[..self.workspace()];
        for (i, (x_i, y_i)) in x
            .chunks_exact(g.chw())
            .zip(y.chunks_exact_mut(len))
            .enumerate()
        {
            let epilogue = epilogue.map(|e| e.part(i * len, len));
            #[cfg(target_arch = "x86_64")]
            if let (Some(masks), Some(x)) = (&self.in_place, crate::kernels::element::as_f32(x_i)) {
                if let Some(f32s) = F32Rows::of(self, bias, epilogue, y_i) {
                    // SAFETY: `in_place` is only set on CPUs with AVX-512F; `x` is one
                    // image, `y_i` its output, and `forward_avx512` checks the shapes.
                    unsafe { forward_avx512(f32s, &InPlaceTaps::new(masks, x)) };
                    continue;
                }
            }
            self.shifted().fill(x_i, shifted);
            #[cfg(target_arch = "x86_64")]
            if let (Some(f32s), Some(s), true) = (
                F32Rows::of(self, bias, epilogue, y_i),
                crate::kernels::element::as_f32(shifted),
                has_avx2(),
            ) {
                let taps = ShiftedTaps::new(self.shifted(), s);
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above); the shapes are the
                    // layer's own (`shifted` from `ShiftedImage::fill`, `y_i` one image's
                    // output), and `forward_avx512` checks them.
                    unsafe { forward_avx512(f32s, &taps) };
                    continue;
                }
                // SAFETY: the CPU has AVX2 and FMA (checked above); the copies are this
                // image's, and `forward_avx2` checks the other shapes.
                unsafe { avx2::forward_avx2(f32s.without_epilogue(), &taps) };
                if let Some(e) = epilogue {
                    e.apply(y_i, 0);
                }
                continue;
            }
            self.forward_portable(shifted, bias, y_i);
            if let Some(e) = epilogue {
                e.apply(y_i, 0);
            }
        }
    }
}

/// A layer's operands seen as f32, for [`forward_avx512`].
#[cfg(target_arch = "x86_64")]
struct F32Rows<'a> {
    g: Geometry,
    o: usize,
    weights: &'a [f32],
    bias: Option<&'a [f32]>,
    /// Applied in the stores (`forward_avx512` only), its residual this image's.
    epilogue: Option<Epilogue<'a, f32>>,
    y: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl<'a> F32Rows<'a> {
    /// The operands as f32, or `None` when `T` is another type.
    fn of<T: Element>(
        layer: &'a DirectRowsForward<T>,
        bias: Option<&'a [T]>,
        epilogue: Option<Epilogue<'a, T>>,
        y: &'a mut [T],
    ) -> Option<Self> {
        use crate::kernels::element::{as_f32, as_f32_mut};
        Some(F32Rows {
            g: layer.geometry,
            o: layer.outputs,
            weights: as_f32(&layer.weights)?,
            bias: match bias {
                Some(b) => Some(as_f32(b)?),
                None => None,
            },
            epilogue: match epilogue {
                None => None,
                Some(Epilogue::Relu) => Some(Epilogue::Relu),
                Some(Epilogue::Relu6) => Some(Epilogue::Relu6),
                Some(Epilogue::Add(r)) => Some(Epilogue::Add(as_f32(r)?)),
                Some(Epilogue::AddRelu(r)) => Some(Epilogue::AddRelu(as_f32(r)?)),
            },
            y: as_f32_mut(y)?,
        })
    }

    /// The same operands with no epilogue (for kernels that do not apply one).
    fn without_epilogue(self) -> Self {
        F32Rows {
            epilogue: None,
            ..self
        }
    }
}

/// Vectors of output pixels the AVX-512 forward sums per block: 3 (48 pixels; resnet20's
/// 16→16 on 32×32 67–73 → 74–78 GFLOP/s), unless that wastes p/16 more lanes than 2.
#[cfg(target_arch = "x86_64")]
fn block_vectors(p: usize) -> usize {
    let waste = |v: usize| p.next_multiple_of(v * LANES) - p;
    if waste(3) <= waste(2) + p / 16 {
        3
    } else {
        2
    }
}

/// [`DirectRowsForward::forward_portable`] on AVX-512 for one image, its taps read from
/// `taps`: a group's `G` (8, or 4 for a last group of at most 4) × `V` accumulators are
/// registers, each tap one load per vector (masked to the image's pixels) and `G` fused
/// multiply-adds; the stores are masked to the image's pixels.
///
/// # Safety
/// The CPU must support AVX-512F, and `taps` must cover the layer's input: every lane of
/// [`Taps::mask`] at tap `(ki, kj)` of pixel `p` readable at `origin(ki, kj) + p + c ·
/// channel_stride` for every channel `c`, for every output pixel `p`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn forward_avx512<S: Taps>(r: F32Rows<'_>, taps: &S) {
    use std::arch::x86_64::*;
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const V: usize, const G: usize, const E: u8, S: Taps>(
        r: &mut F32Rows<'_>,
        taps: &S,
        groups: std::ops::Range<usize>,
    ) {
        let g = r.g;
        let (k, p, (kh, kw)) = (g.k(), g.p(), g.kernel);
        assert!(
            G <= GROUP
                && groups.end <= r.o.div_ceil(GROUP)
                && r.weights.len() >= groups.end * k * GROUP
                && r.y.len() >= r.o * p,
            "operands too short for the layer"
        );
        let residual = match r.epilogue {
            Some(Epilogue::Add(s) | Epilogue::AddRelu(s)) => {
                assert!(s.len() >= r.o * p, "a residual for every output");
                s.as_ptr()
            }
            _ => std::ptr::null(),
        };
        let channel_stride = taps.channel_stride();
        for p0 in (0..p).step_by(V * LANES) {
            let mut masks = [0u16; V];
            for (v, m) in masks.iter_mut().enumerate() {
                let n = p.saturating_sub(p0 + v * LANES).min(LANES);
                *m = ((1u32 << n) - 1) as u16;
            }
            for q in groups.clone() {
                let w = &r.weights[q * k * GROUP..][..k * GROUP];
                let mut acc = [[_mm512_setzero_ps(); V]; G];
                if let Some(b) = r.bias {
                    for (j, acc) in acc.iter_mut().enumerate() {
                        if let Some(&b) = b.get(q * GROUP + j) {
                            *acc = [_mm512_set1_ps(b); V];
                        }
                    }
                }
                for ki in 0..kh {
                    for kj in 0..kw {
                        let x0 = taps.origin(ki, kj).wrapping_add(p0);
                        // Only the image's pixels: blocks are wider than the copies'
                        // slack.
                        let lanes: [u16; V] =
                            std::array::from_fn(|v| taps.mask(p0 / LANES + v, ki, kj) & masks[v]);
                        let w0 = w[(ki * kw + kj) * g.c * GROUP..][..g.c * GROUP].as_ptr();
                        for c in 0..g.c {
                            // SAFETY: the caller guarantees that the lanes of `lanes` are
                            // readable at x0 + c·channel_stride + v·16; the position's
                            // weights hold c·GROUP.
                            unsafe {
                                let x = x0.wrapping_add(c * channel_stride);
                                let wt = w0.add(c * GROUP);
                                let mut xs = [_mm512_setzero_ps(); V];
                                for (v, xv) in xs.iter_mut().enumerate() {
                                    *xv =
                                        _mm512_maskz_loadu_ps(lanes[v], x.wrapping_add(v * LANES));
                                }
                                for (j, acc) in acc.iter_mut().enumerate() {
                                    let wj = _mm512_set1_ps(*wt.add(j));
                                    for (a, &xv) in acc.iter_mut().zip(&xs) {
                                        *a = _mm512_fmadd_ps(wj, xv, *a);
                                    }
                                }
                            }
                        }
                    }
                }
                for (j, acc) in acc.iter().enumerate().take((r.o - q * GROUP).min(G)) {
                    let at = (q * GROUP + j) * p;
                    let out = r.y[at..][..p].as_mut_ptr();
                    for (v, (&m, &a)) in masks.iter().zip(acc).enumerate() {
                        let pixel = at + p0 + v * LANES;
                        // SAFETY: the mask covers the pixels p0 + v·16.. that are < p, of
                        // the output and of the residual (as long as the output, checked).
                        unsafe {
                            let a = finish_avx512::<E>(a, m, residual.wrapping_add(pixel));
                            _mm512_mask_storeu_ps(out.add(p0 + v * LANES), m, a);
                        }
                    }
                }
            }
        }
    }
    /// `run` for the layer's block width.
    ///
    /// # Safety
    /// As [`forward_avx512`]'s.
    #[target_feature(enable = "avx512f")]
    unsafe fn blocks<const E: u8, S: Taps>(mut r: F32Rows<'_>, taps: &S) {
        let (groups, tail) = (r.o.div_ceil(GROUP), r.o % GROUP);
        // A last group of at most 4 channels runs with 4 rows of accumulators over blocks
        // twice as wide, instead of computing 8 channels and storing fewer: LeNet's conv1
        // (20 channels) forward went from 0.41–0.47 to 0.385–0.405 ms (batch 64, 1 thread).
        let full = if (1..=4).contains(&tail) {
            groups - 1
        } else {
            groups
        };
        let narrow = block_vectors(r.g.p()) == 2;
        // SAFETY: as the caller's; `run` checks the shapes.
        unsafe {
            match narrow {
                true => run::<2, GROUP, E, S>(&mut r, taps, 0..full),
                false => run::<3, GROUP, E, S>(&mut r, taps, 0..full),
            }
            match (full < groups, narrow) {
                (false, _) => {}
                (true, true) => run::<4, 4, E, S>(&mut r, taps, full..groups),
                (true, false) => run::<6, 4, E, S>(&mut r, taps, full..groups),
            }
        }
    }
    // SAFETY: the caller guarantees AVX-512F and the taps; `run` checks the other shapes.
    unsafe {
        match r.epilogue {
            None => blocks::<{ kind::NONE }, S>(r, taps),
            Some(Epilogue::Relu) => blocks::<{ kind::RELU }, S>(r, taps),
            Some(Epilogue::Relu6) => blocks::<{ kind::RELU6 }, S>(r, taps),
            Some(Epilogue::Add(_)) => blocks::<{ kind::ADD }, S>(r, taps),
            Some(Epilogue::AddRelu(_)) => blocks::<{ kind::ADD_RELU }, S>(r, taps),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::direct::Direct;
    use super::super::ConvBackward;
    use super::*;

    fn geometry(c: usize, (h, w): (usize, usize), k: usize, pad: usize) -> Geometry {
        strided(c, (h, w), k, pad, 1)
    }

    pub(super) fn strided(
        c: usize,
        (h, w): (usize, usize),
        k: usize,
        pad: usize,
        s: usize,
    ) -> Geometry {
        Geometry::new(c, (h, w), (k, k), (s, s), (pad, pad), (1, 1)).expect("kernel fits")
    }

    pub(super) fn values(n: usize, seed: u64) -> Vec<f64> {
        (0..n)
            .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1009) as f64 / 504.5) - 1.0)
            .collect()
    }

    /// `(c, o, (h, w), k, pad, stride)`.
    pub(super) type Case = (usize, usize, (usize, usize), usize, usize, usize);

    /// First layers (LeNet's conv1, cifar-cnn's and resnet's), resnet's 16-, 32- and
    /// 64-channel layers and its stride-2 ones, LeNet's conv2, rows of 1–40 pixels, images
    /// whose pixels are not a multiple of 16, output channels not a multiple of 8, padding
    /// 0–3 (as large as the kernel, and larger than the image), 1×1 kernels, strides 2 and
    /// 3 on sizes they do not divide.
    pub(super) const CASES: [Case; 20] = [
        (1, 20, (28, 28), 5, 0, 1),
        (3, 32, (32, 32), 3, 1, 1),
        (3, 16, (32, 32), 3, 1, 1),
        (16, 16, (32, 32), 3, 1, 1),
        (32, 32, (16, 16), 3, 1, 1),
        (64, 64, (8, 8), 3, 1, 1),
        (20, 50, (12, 12), 5, 0, 1),
        (2, 5, (5, 1), 3, 1, 1),
        (3, 9, (7, 17), 3, 0, 1),
        (1, 8, (20, 19), 5, 1, 1),
        (3, 3, (6, 28), 5, 2, 1),
        (4, 11, (9, 40), 3, 1, 1),
        (2, 3, (5, 6), 3, 3, 1),
        (3, 2, (1, 1), 5, 2, 1),
        (5, 7, (6, 7), 1, 0, 1),
        (16, 32, (32, 32), 3, 1, 2),
        (32, 64, (16, 16), 3, 1, 2),
        (3, 9, (7, 9), 3, 1, 2),
        (2, 5, (11, 10), 5, 2, 3),
        (4, 6, (9, 9), 1, 0, 2),
    ];

    /// The forward pass against the definition, with and without bias, two images, in
    /// f64 (the portable loops) and in f32 (the AVX-512 kernel where the CPU has it).
    #[test]
    fn rows_match_the_direct_convolution() {
        for (c, o, hw, k, pad, stride) in CASES {
            let g = strided(c, hw, k, pad, stride);
            assert!(supports(&g), "{g:?}");
            let imgs = 2;
            let x = values(imgs * g.chw(), 1);
            let w = values(o * g.k(), 2);
            let b = values(o, 3);
            for bias in [None, Some(&b[..])] {
                let mut want = vec![0.0; imgs * o * g.p()];
                let reference = Direct::new(&g, o, &w);
                let mut ws = vec![0.0; ConvForward::workspace(&reference)];
                reference.forward(&x, bias, &mut want, &mut ws);
                let rows = DirectRowsForward::new(&g, o, &w);
                let mut got = vec![f64::NAN; want.len()];
                let mut ws = vec![f64::NAN; rows.workspace()];
                rows.forward(&x, bias, &mut got, &mut ws);
                for (a, e) in got.iter().zip(&want) {
                    assert!(
                        (a - e).abs() <= 1e-12 * (1.0 + e.abs()),
                        "{g:?}: {a} vs {e}"
                    );
                }
                let f = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<_>>();
                let rows = DirectRowsForward::new(&g, o, &f(&w));
                let mut got = vec![f32::NAN; want.len()];
                let mut ws = vec![f32::NAN; rows.workspace()];
                rows.forward(&f(&x), bias.map(f).as_deref(), &mut got, &mut ws);
                let tol = 1e-6 * g.k() as f64;
                for (a, e) in got.iter().zip(&want) {
                    assert!(
                        (*a as f64 - e).abs() <= tol * (1.0 + e.abs()),
                        "{g:?}: {a} vs {e}"
                    );
                }
            }
        }
    }

    /// The epilogues (ReLU, ReLU6, residual add, both) applied by `images`, in the
    /// AVX-512 kernel's stores or by a pass, and by `forward_fused` where it fuses, are
    /// bitwise `forward` followed by [`Epilogue::apply`] on every case, f32 and f64, with
    /// NaN, −0 and large negative values in the residual and outputs overwritten from NaN.
    #[test]
    fn fused_epilogues_equal_the_pass_after_the_forward() {
        fn check<T: Element>(case: Case, f: impl Fn(Vec<f64>) -> Vec<T>) -> usize {
            let (c, o, hw, k, pad, stride) = case;
            let g = strided(c, hw, k, pad, stride);
            let (imgs, len) = (3, o * g.p());
            let (x, w, b) = (
                f(values(imgs * g.chw(), 7)),
                f(values(o * g.k(), 8)),
                f(values(o, 9)),
            );
            let mut residual = f(values(imgs * len, 10));
            for (i, special) in [f64::NAN, -0.0, -1e30].into_iter().enumerate() {
                let at = (7 + 100 * i) % residual.len();
                residual[at] = T::from_f64(special);
            }
            let rows = DirectRowsForward::new(&g, o, &w);
            let mut ws = vec![T::from_f64(f64::NAN); rows.workspace()];
            let mut plain = vec![T::from_f64(f64::NAN); imgs * len];
            rows.forward(&x, Some(&b), &mut plain, &mut ws);
            let bits = |v: &[T]| v.iter().map(|v| v.as_f64().to_bits()).collect::<Vec<_>>();
            let mut fused_runs = 0;
            for epilogue in [
                Epilogue::Relu,
                Epilogue::Relu6,
                Epilogue::Add(&residual),
                Epilogue::AddRelu(&residual),
            ] {
                let mut want = plain.clone();
                epilogue.apply(&mut want, 0);
                let mut got = vec![T::from_f64(f64::NAN); imgs * len];
                rows.images(&x, Some(&b), Some(epilogue), &mut got, &mut ws);
                assert_eq!(bits(&got), bits(&want), "images, {epilogue:?}, {g:?}");
                let mut got = vec![T::from_f64(f64::NAN); imgs * len];
                if rows.forward_fused(&x, Some(&b), epilogue, &mut got, &mut ws) {
                    assert_eq!(bits(&got), bits(&want), "fused, {epilogue:?}, {g:?}");
                    fused_runs += 1;
                } else {
                    assert!(
                        got.iter().all(|v| v.as_f64().is_nan()),
                        "untouched unless fused"
                    );
                }
            }
            fused_runs
        }
        let mut fused = 0;
        for case in CASES {
            assert_eq!(check::<f64>(case, |v| v), 0, "f64 is never fused");
            fused += check::<f32>(case, |v| v.iter().map(|&v| v as f32).collect());
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && has_avx2() {
            assert_eq!(fused, 4 * CASES.len(), "every f32 case fused on AVX-512");
        }
    }

    /// The backward pass against the definition's over two images (dW summed), in f64
    /// (the portable loops) and in f32 (the AVX-512 kernels where the CPU has them): dX by
    /// the transposed layer, or by the implicit GEMM where the padding reaches the kernel.
    #[test]
    fn gradients_match_the_direct_convolution() {
        for (c, o, hw, k, pad, stride) in CASES {
            let g = strided(c, hw, k, pad, stride);
            let imgs = 2;
            let x = values(imgs * g.chw(), 4);
            let w = values(o * g.k(), 5);
            let dy = values(imgs * o * g.p(), 6);
            let (dx_ref, dw_ref) = run_backward(&Direct::new(&g, o, &w), imgs, &dy, &x);
            let (dx, dw) = run_backward(&DirectRowsBackward::new(&g, o, &w), imgs, &dy, &x);
            for (a, e) in dx.iter().zip(&dx_ref).chain(dw.iter().zip(&dw_ref)) {
                assert!(
                    (a - e).abs() <= 1e-11 * (1.0 + e.abs()),
                    "{g:?}: {a} vs {e}"
                );
            }
            let f = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<_>>();
            let kernel = DirectRowsBackward::new(&g, o, &f(&w));
            let (dx, dw) = run_backward(&kernel, imgs, &f(&dy), &f(&x));
            let tol = 1e-6 * (o * k * k).max(imgs * g.p()) as f64;
            for (a, e) in dx.iter().zip(&dx_ref).chain(dw.iter().zip(&dw_ref)) {
                assert!(
                    (*a as f64 - e).abs() <= tol * (1.0 + e.abs()),
                    "{g:?}: {a} vs {e}"
                );
            }
        }
    }

    /// dX and dW of `imgs` images by `kernel`, from workspaces filled with NaN (every
    /// element the kernels read must be written first) and, where the kernel says it writes
    /// all of it, a dX filled with NaN.
    pub(super) fn run_backward<T: Element>(
        kernel: &dyn ConvBackward<T>,
        imgs: usize,
        dy: &[T],
        x: &[T],
    ) -> (Vec<T>, Vec<T>) {
        // A kernel that writes every element of dX gets it full of NaN, as it may.
        let stale = if kernel.writes_every_input_grad() {
            f64::NAN
        } else {
            0.0
        };
        let mut dx = vec![T::from_f64(stale); x.len()];
        let mut dw = vec![T::zero(); kernel.weight_grad_len()];
        let mut ws = vec![T::from_f64(f64::NAN); kernel.workspace()];
        kernel.backward_images(imgs, dy, x, Some(&mut dx), Some(&mut dw), &mut ws);
        (dx, kernel.finish_weight_grad(dw))
    }

    /// The AVX-512 kernels that read "same" layers' images in place: every lane they read
    /// lies inside its image. The images sit between NaNs (a lane read past an image's
    /// edge would make a NaN), and the results match the definition's. On CPUs without
    /// AVX-512 this checks the shifted copies again.
    #[test]
    fn in_place_reads_stay_inside_each_image() {
        let f = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<_>>();
        let mut in_place = 0;
        for (c, o, hw, k, pad, stride) in CASES {
            let g = strided(c, hw, k, pad, stride);
            let imgs = 2;
            let guard = 3 * LANES + g.chw();
            let mut x = vec![f32::NAN; guard];
            x.extend(f(&values(imgs * g.chw(), 7)));
            x.extend(vec![f32::NAN; guard]);
            let x_ref: Vec<f64> = x[guard..guard + imgs * g.chw()]
                .iter()
                .map(|&v| v as f64)
                .collect();
            let x = &x[guard..guard + imgs * g.chw()];
            let w = values(o * g.k(), 8);
            let dy = values(imgs * o * g.p(), 9);
            let mut want = vec![0.0; imgs * o * g.p()];
            let reference = Direct::new(&g, o, &w);
            let mut ws = vec![0.0; ConvForward::workspace(&reference)];
            reference.forward(&x_ref, None, &mut want, &mut ws);
            let (_, dw_ref) = run_backward(&reference, imgs, &dy, &x_ref);

            let rows = DirectRowsForward::new(&g, o, &f(&w));
            in_place += usize::from(rows.in_place.is_some());
            let mut got = vec![f32::NAN; want.len()];
            rows.forward(x, None, &mut got, &mut vec![f32::NAN; rows.workspace()]);
            let backward = DirectRowsBackward::new(&g, o, &[]);
            let (_, dw) = run_backward(&backward, imgs, &f(&dy), x);
            let tol = 1e-6 * (o * k * k).max(imgs * g.p()) as f64;
            for (a, e) in got.iter().zip(&want).chain(dw.iter().zip(&dw_ref)) {
                assert!(
                    (*a as f64 - e).abs() <= tol * (1.0 + e.abs()),
                    "{g:?}: {a} vs {e}"
                );
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            // The "same" stride-1 layers of CASES, 1×1 included.
            assert_eq!(in_place, 10, "the same layers read in place");
        }
    }

    #[test]
    fn supports_only_undilated_layers() {
        assert!(supports(&geometry(3, (32, 32), 5, 2)));
        assert!(supports(&geometry(64, (40, 40), 3, 1)));
        assert!(supports(&strided(3, (32, 32), 3, 1, 2)));
        let dilated = Geometry::new(3, (32, 32), (3, 3), (1, 1), (2, 2), (2, 2)).unwrap();
        assert!(!supports(&dilated));
    }
}
