//! The forward pass of first layers by output rows: stride 1, few input taps
//! (`c·kh·kw ≤ 75`: an RGB 5×5 or a grey 5×5 kernel) and output rows of at most 32 pixels.
//!
//! Such a layer's GEMM is thin: LeNet's conv1 multiplies 20 outputs by 25 taps, so the
//! implicit GEMM gathered 25 values for every 500 multiply-adds of a pixel and ran at a
//! third of the square sgemm's rate. Here the image is copied once into zero-padded rows,
//! and each output row of 8 channels is summed in registers straight from them: for every
//! tap, one or two loads of 16 pixels (the input row shifted by the tap's column) and a
//! multiply-add per channel. No column matrix, no packing; each input value is loaded once
//! per tap and group of 8 channels.
//!
//! `DirectRowsForward::rows_portable` is that loop in plain Rust (f64, CPUs without
//! AVX-512, and the version to read first); on AVX-512 an f32 twin keeps the 8 × 2
//! accumulators in registers (`rows_avx512`). Both are tested against the definition
//! ([`super::direct`]).

use super::implicit_backward::ImplicitGemmBackward;
use super::{ConvBackward, ConvForward};
use crate::kernels::{Element, Geometry};

/// Pixels per vector: one AVX-512 register of f32.
const LANES: usize = 16;

/// Output channels summed together: 8 × 2 accumulators of 16 lanes use 16 of the 32
/// AVX-512 registers.
const GROUP: usize = 8;

/// The most input taps (`c·kh·kw`) a layer may have: beyond, the GEMM has enough depth
/// to pay for its gathers.
pub const MAX_TAPS: usize = 75;

/// The widest output row: two vectors.
const MAX_WIDTH: usize = 2 * LANES;

/// Whether the rows kernel computes a layer of geometry `g`: stride 1, dilation 1, at
/// most [`MAX_TAPS`] input taps and output rows of at most 32 pixels.
pub fn supports(g: &Geometry) -> bool {
    g.stride == (1, 1) && g.dilation == (1, 1) && g.ow <= MAX_WIDTH && g.k() <= MAX_TAPS
}

/// The zero-padded copy of one image the rows kernels read: `c × (h + 2ph)` rows of
/// `row_len`, each an input row with its padding, long enough for the last tap's last
/// vector.
#[derive(Clone, Copy, Debug)]
struct PaddedImage {
    g: Geometry,
}

impl PaddedImage {
    /// Vectors per output row.
    fn vectors(&self) -> usize {
        self.g.ow.div_ceil(LANES)
    }

    /// Elements of a padded input row: the image's row and its padding, and at least what
    /// the last tap's last vector reads.
    fn row_len(&self) -> usize {
        let g = &self.g;
        (g.w + 2 * g.padding.1).max(self.vectors() * LANES + g.kernel.1 - 1)
    }

    /// Padded rows per channel.
    fn height(&self) -> usize {
        self.g.h + 2 * self.g.padding.0
    }

    /// Elements of the whole copy.
    fn len(&self) -> usize {
        self.g.c * self.height() * self.row_len()
    }

    /// One image `x` copied into `padded` ([`PaddedImage::len`] elements), zeros around it.
    fn fill<T: Element>(&self, x: &[T], padded: &mut [T]) {
        let g = &self.g;
        let (row_len, hp) = (self.row_len(), self.height());
        let (ph, pw) = g.padding;
        padded.fill(T::zero());
        for (plane, out) in x
            .chunks_exact(g.h * g.w)
            .zip(padded.chunks_exact_mut(hp * row_len))
        {
            for (row, to) in plane
                .chunks_exact(g.w)
                .zip(out.chunks_exact_mut(row_len).skip(ph))
            {
                to[pw..pw + g.w].copy_from_slice(row);
            }
        }
    }
}

/// The forward pass by output rows, with the weights regrouped once per call.
pub struct DirectRowsForward<T> {
    geometry: Geometry,
    outputs: usize,
    /// `w[(q·k + tap)·GROUP + j]` = weight `tap` of output channel `q·GROUP + j` (0 past
    /// the last channel): a group's 8 weights of one tap side by side.
    weights: Vec<T>,
}

impl<T: Element> DirectRowsForward<T> {
    /// Prepares the `o × c × kh × kw` weights `w` of a layer of geometry `g`.
    ///
    /// # Panics
    /// If the rows kernel does not compute `g` ([`supports`] says).
    pub fn new(g: &Geometry, o: usize, w: &[T]) -> Self {
        assert!(
            supports(g),
            "the rows kernel needs stride 1, dilation 1, ≤ 75 taps and rows ≤ 32 pixels, not {g:?}"
        );
        let k = g.k();
        let groups = o.div_ceil(GROUP);
        let mut weights = vec![T::zero(); groups * k * GROUP];
        for (oc, kernel) in w.chunks_exact(k).enumerate().take(o) {
            let (q, j) = (oc / GROUP, oc % GROUP);
            for (tap, &v) in kernel.iter().enumerate() {
                weights[(q * k + tap) * GROUP + j] = v;
            }
        }
        DirectRowsForward {
            geometry: *g,
            outputs: o,
            weights,
        }
    }

    /// The padded copy of an image this layer reads.
    fn padded(&self) -> PaddedImage {
        PaddedImage { g: self.geometry }
    }

    /// Output row `oh` of output channels `q·GROUP..` of one image: `V` vectors of 16
    /// pixels per channel, each tap's input loaded once for the group's 8 channels.
    #[inline(always)]
    fn rows_portable<const V: usize>(&self, padded: &[T], bias: Option<&[T]>, y: &mut [T]) {
        let g = &self.geometry;
        let (k, p, o) = (g.k(), g.p(), self.outputs);
        let (row_len, hp) = (self.padded().row_len(), self.padded().height());
        let (kh, kw) = g.kernel;
        for oh in 0..g.oh {
            for (q, w) in self.weights.chunks_exact(k * GROUP).enumerate() {
                let mut acc = [[[T::zero(); LANES]; V]; GROUP];
                for (j, acc) in acc.iter_mut().enumerate() {
                    let b = bias.and_then(|b| b.get(q * GROUP + j)).copied();
                    *acc = [[b.unwrap_or(T::zero()); LANES]; V];
                }
                for c in 0..g.c {
                    for ki in 0..kh {
                        let row = &padded[(c * hp + oh + ki) * row_len..][..row_len];
                        for kj in 0..kw {
                            let tap = (c * kh + ki) * kw + kj;
                            let wt = &w[tap * GROUP..][..GROUP];
                            for v in 0..V {
                                let xs = &row[kj + v * LANES..][..LANES];
                                for (acc, &wj) in acc.iter_mut().zip(wt) {
                                    for (a, &x) in acc[v].iter_mut().zip(xs) {
                                        *a += wj * x;
                                    }
                                }
                            }
                        }
                    }
                }
                for (j, acc) in acc.iter().enumerate().take(o - q * GROUP) {
                    let out = &mut y[(q * GROUP + j) * p + oh * g.ow..][..g.ow];
                    for (v, chunk) in out.chunks_mut(LANES).enumerate() {
                        chunk.copy_from_slice(&acc[v][..chunk.len()]);
                    }
                }
            }
        }
    }

    /// One image by the portable loops.
    fn image_portable(&self, padded: &[T], bias: Option<&[T]>, y: &mut [T]) {
        match self.padded().vectors() {
            1 => self.rows_portable::<1>(padded, bias, y),
            _ => self.rows_portable::<2>(padded, bias, y),
        }
    }
}

impl<T: Element> ConvForward<T> for DirectRowsForward<T> {
    /// The padded image.
    fn workspace(&self) -> usize {
        self.padded().len()
    }

    fn forward(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], workspace: &mut [T]) {
        let g = &self.geometry;
        let padded = &mut workspace[..self.workspace()];
        for (x_i, y_i) in x
            .chunks_exact(g.chw())
            .zip(y.chunks_exact_mut(self.outputs * g.p()))
        {
            self.padded().fill(x_i, padded);
            #[cfg(target_arch = "x86_64")]
            if let Some(f32s) = F32Rows::of(self, padded, bias, y_i) {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above); the shapes are the
                    // layer's own (`padded` from `PaddedImage::fill`, `y_i` one image's output).
                    unsafe { rows_avx512(f32s) };
                    continue;
                }
            }
            self.image_portable(padded, bias, y_i);
        }
    }
}

/// A layer's operands seen as f32, for [`rows_avx512`].
#[cfg(target_arch = "x86_64")]
struct F32Rows<'a> {
    image: PaddedImage,
    o: usize,
    weights: &'a [f32],
    padded: &'a [f32],
    bias: Option<&'a [f32]>,
    y: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl<'a> F32Rows<'a> {
    /// The operands as f32, or `None` when `T` is another type.
    fn of<T: Element>(
        layer: &'a DirectRowsForward<T>,
        padded: &'a [T],
        bias: Option<&'a [T]>,
        y: &'a mut [T],
    ) -> Option<Self> {
        use crate::kernels::element::{as_f32, as_f32_mut};
        Some(F32Rows {
            image: layer.padded(),
            o: layer.outputs,
            weights: as_f32(&layer.weights)?,
            padded: as_f32(padded)?,
            bias: match bias {
                Some(b) => Some(as_f32(b)?),
                None => None,
            },
            y: as_f32_mut(y)?,
        })
    }
}

/// [`DirectRowsForward::rows_portable`] on AVX-512 for one image: the group's 8 × `V`
/// accumulators are registers, each tap one load per vector and 8 fused multiply-adds.
///
/// # Safety
/// The CPU must support AVX-512F; `r` must hold a padded image and an output of the
/// layer's shapes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512(r: F32Rows<'_>) {
    use std::arch::x86_64::*;
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const V: usize>(r: F32Rows<'_>) {
        let (g, row_len, hp) = (r.image.g, r.image.row_len(), r.image.height());
        let (k, p) = (g.k(), g.p());
        let (kh, kw) = g.kernel;
        assert!(
            r.padded.len() >= r.image.len()
                && row_len >= V * LANES + kw - 1
                && hp >= g.oh + kh - 1
                && r.weights.len() >= r.o.div_ceil(GROUP) * k * GROUP
                && r.y.len() >= r.o * p,
            "operands too short for the layer"
        );
        for oh in 0..g.oh {
            for (q, w) in r.weights.chunks_exact(k * GROUP).enumerate() {
                let mut acc = [[_mm512_setzero_ps(); V]; GROUP];
                if let Some(b) = r.bias {
                    for (j, acc) in acc.iter_mut().enumerate() {
                        if let Some(&b) = b.get(q * GROUP + j) {
                            *acc = [_mm512_set1_ps(b); V];
                        }
                    }
                }
                for c in 0..g.c {
                    for ki in 0..kh {
                        let row = r.padded[(c * hp + oh + ki) * row_len..].as_ptr();
                        for kj in 0..kw {
                            let wt = w[((c * kh + ki) * kw + kj) * GROUP..][..GROUP].as_ptr();
                            // SAFETY: kj + (V−1)·16 + 16 ≤ row_len (asserted), inside the
                            // padded row; wt holds GROUP weights.
                            unsafe {
                                let mut xs = [_mm512_setzero_ps(); V];
                                for (v, x) in xs.iter_mut().enumerate() {
                                    *x = _mm512_loadu_ps(row.add(kj + v * LANES));
                                }
                                for (j, acc) in acc.iter_mut().enumerate() {
                                    let wj = _mm512_set1_ps(*wt.add(j));
                                    for (a, &x) in acc.iter_mut().zip(&xs) {
                                        *a = _mm512_fmadd_ps(wj, x, *a);
                                    }
                                }
                            }
                        }
                    }
                }
                for (j, acc) in acc.iter().enumerate().take(r.o - q * GROUP) {
                    let out = &mut r.y[(q * GROUP + j) * p + oh * g.ow..][..g.ow];
                    for (v, chunk) in out.chunks_mut(LANES).enumerate() {
                        let mask: __mmask16 = ((1u32 << chunk.len()) - 1) as u16;
                        // SAFETY: the mask covers chunk.len() ≤ 16 floats of `chunk`.
                        unsafe { _mm512_mask_storeu_ps(chunk.as_mut_ptr(), mask, acc[v]) };
                    }
                }
            }
        }
    }
    // SAFETY: the caller guarantees AVX-512F; `run` checks the shapes.
    unsafe {
        match r.image.vectors() {
            1 => run::<1>(r),
            _ => run::<2>(r),
        }
    }
}

/// The backward pass of a rows layer: `dW` by rows, as the forward pass sums them
/// (`dW[oc][tap] = Σ_rows Σ_pixels dY[oc][row][px] · x_padded[row + ki][px + kj]`, each
/// group of 8 channels' sums for one tap in registers across all rows), and `dX` (when
/// wanted) by the implicit GEMM's backward. As a GEMM, LeNet's conv1 `dW` (20 × 25, over
/// 576 pixels) ran at 18 GFLOP/s.
pub struct DirectRowsBackward<T> {
    padded: PaddedImage,
    outputs: usize,
    input_grad: Option<ImplicitGemmBackward<T>>,
}

impl<T: Element> DirectRowsBackward<T> {
    /// A layer of geometry `g` with the `o × c × kh × kw` weights `w` (empty when no input
    /// gradient is wanted).
    ///
    /// # Panics
    /// If the rows kernel does not compute `g` ([`supports`] says).
    pub fn new(g: &Geometry, o: usize, w: &[T]) -> Self {
        assert!(
            supports(g),
            "the rows kernel needs stride 1, dilation 1, ≤ 75 taps and rows ≤ 32 pixels, not {g:?}"
        );
        DirectRowsBackward {
            padded: PaddedImage { g: *g },
            outputs: o,
            input_grad: (!w.is_empty()).then(|| ImplicitGemmBackward::new(g, o, w)),
        }
    }

    /// `dW += dY · x` of one image by rows, in plain loops: `dw` holds `o × k`.
    fn weight_grad_portable(&self, padded: &[T], dy: &[T], dw: &mut [T]) {
        let g = &self.padded.g;
        let (k, (kh, kw)) = (g.k(), g.kernel);
        let (row_len, hp) = (self.padded.row_len(), self.padded.height());
        for (oc, dy) in dy.chunks_exact(g.p()).enumerate() {
            for c in 0..g.c {
                for ki in 0..kh {
                    for kj in 0..kw {
                        let mut sum = T::zero();
                        for (oh, dy_row) in dy.chunks_exact(g.ow).enumerate() {
                            let x = &padded[(c * hp + oh + ki) * row_len + kj..][..g.ow];
                            for (&d, &x) in dy_row.iter().zip(x) {
                                sum += d * x;
                            }
                        }
                        dw[oc * k + (c * kh + ki) * kw + kj] += sum;
                    }
                }
            }
        }
    }
}

impl<T: Element> ConvBackward<T> for DirectRowsBackward<T> {
    /// The padded image, and the implicit GEMM's workspace for dX.
    fn workspace(&self) -> usize {
        self.padded.len() + self.input_grad.as_ref().map_or(0, |b| b.workspace())
    }

    fn weight_grad_len(&self) -> usize {
        self.outputs * self.padded.g.k()
    }

    fn backward_image(
        &self,
        dy: &[T],
        x: &[T],
        dx: Option<&mut [T]>,
        dw: Option<&mut [T]>,
        workspace: &mut [T],
    ) {
        let (padded, rest) = workspace.split_at_mut(self.padded.len());
        if let Some(dw) = dw {
            self.padded.fill(x, padded);
            #[cfg(target_arch = "x86_64")]
            if let (Some(f32s), true) = (
                F32Grad::of(self, padded, dy, &mut *dw),
                std::arch::is_x86_feature_detected!("avx512f"),
            ) {
                // SAFETY: the CPU has AVX-512F (checked just above); `padded` is the padded
                // image and `dy`, `dw` the layer's shapes.
                unsafe { weight_grad_avx512(f32s) };
            } else {
                self.weight_grad_portable(padded, dy, dw);
            }
            #[cfg(not(target_arch = "x86_64"))]
            self.weight_grad_portable(padded, dy, dw);
        }
        if let (Some(dx), Some(b)) = (dx, &self.input_grad) {
            b.backward_image(dy, x, Some(dx), None, rest);
        }
    }
}

/// The operands of a rows `dW` seen as f32, for [`weight_grad_avx512`].
#[cfg(target_arch = "x86_64")]
struct F32Grad<'a> {
    image: PaddedImage,
    padded: &'a [f32],
    dy: &'a [f32],
    dw: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl<'a> F32Grad<'a> {
    /// The operands as f32, or `None` when `T` is another type.
    fn of<T: Element>(
        layer: &DirectRowsBackward<T>,
        padded: &'a [T],
        dy: &'a [T],
        dw: &'a mut [T],
    ) -> Option<Self> {
        use crate::kernels::element::{as_f32, as_f32_mut};
        Some(F32Grad {
            image: layer.padded,
            padded: as_f32(padded)?,
            dy: as_f32(dy)?,
            dw: as_f32_mut(dw)?,
        })
    }
}

/// `DirectRowsBackward::weight_grad_portable` on AVX-512 for one image: per group of 8
/// output channels and tap, 8 × `V` sums of 16 lanes in registers over every row (the
/// last vector of a row masked to its pixels), then each summed across its lanes.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_avx512(r: F32Grad<'_>) {
    use std::arch::x86_64::*;
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const V: usize>(r: F32Grad<'_>) {
        let (g, row_len, hp) = (r.image.g, r.image.row_len(), r.image.height());
        let (k, p, o) = (g.k(), g.p(), r.dy.len() / g.p());
        let (kh, kw) = g.kernel;
        assert!(
            r.padded.len() >= r.image.len()
                && row_len >= V * LANES + kw - 1
                && hp >= g.oh + kh - 1
                && V * LANES >= g.ow
                && r.dw.len() >= o * k,
            "operands too short for the layer"
        );
        // Lanes of each vector of a row that are its pixels.
        let mut masks = [0u16; V];
        for (v, m) in masks.iter_mut().enumerate() {
            let n = g.ow.saturating_sub(v * LANES).min(LANES);
            *m = ((1u32 << n) - 1) as u16;
        }
        for first in (0..o).step_by(GROUP) {
            let n = GROUP.min(o - first);
            let dy = &r.dy[first * p..(first + n) * p];
            for c in 0..g.c {
                for ki in 0..kh {
                    for kj in 0..kw {
                        let mut acc = [[_mm512_setzero_ps(); V]; GROUP];
                        for oh in 0..g.oh {
                            let x = r.padded[(c * hp + oh + ki) * row_len + kj..].as_ptr();
                            // SAFETY: the masked loads read at most the row's `ow` pixels
                            // of dY and kj + V·16 ≤ row_len of the padded row (asserted).
                            unsafe {
                                let mut xs = [_mm512_setzero_ps(); V];
                                for (v, xv) in xs.iter_mut().enumerate() {
                                    *xv = _mm512_maskz_loadu_ps(masks[v], x.add(v * LANES));
                                }
                                for (j, acc) in acc.iter_mut().enumerate().take(n) {
                                    let d = dy[j * p + oh * g.ow..].as_ptr();
                                    for (v, a) in acc.iter_mut().enumerate() {
                                        let dv = _mm512_maskz_loadu_ps(masks[v], d.add(v * LANES));
                                        *a = _mm512_fmadd_ps(dv, xs[v], *a);
                                    }
                                }
                            }
                        }
                        let tap = (c * kh + ki) * kw + kj;
                        for (j, acc) in acc.iter().enumerate().take(n) {
                            let mut sum = acc[0];
                            for a in &acc[1..] {
                                sum = _mm512_add_ps(sum, *a);
                            }
                            r.dw[(first + j) * k + tap] += _mm512_reduce_add_ps(sum);
                        }
                    }
                }
            }
        }
    }
    // SAFETY: the caller guarantees AVX-512F; `run` checks the shapes.
    unsafe {
        match r.image.vectors() {
            1 => run::<1>(r),
            _ => run::<2>(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::direct::Direct;
    use super::*;

    fn geometry(c: usize, (h, w): (usize, usize), k: usize, pad: usize) -> Geometry {
        Geometry::new(c, (h, w), (k, k), (1, 1), (pad, pad), (1, 1)).expect("kernel fits")
    }

    fn values(n: usize, seed: u64) -> Vec<f64> {
        (0..n)
            .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1009) as f64 / 504.5) - 1.0)
            .collect()
    }

    /// LeNet's conv1, cifar-cnn's and resnet's first layers, rows of 1, 16, 17 and 32
    /// pixels, output channels not a multiple of 8, padding 0–2, with and without bias,
    /// two images: against the definition, in f64 (the portable loops) and in f32 (the
    /// AVX-512 kernel where the CPU has it).
    #[test]
    fn rows_match_the_direct_convolution() {
        let cases = [
            // (c, o, (h, w), k, pad)
            (1, 20, (28, 28), 5, 0),
            (3, 32, (32, 32), 3, 1),
            (3, 16, (32, 32), 3, 1),
            (2, 5, (5, 1), 3, 1),
            (3, 9, (7, 17), 3, 0),
            (1, 8, (20, 19), 5, 1),
            (3, 3, (6, 28), 5, 2),
        ];
        for (c, o, hw, k, pad) in cases {
            let g = geometry(c, hw, k, pad);
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
                let mut ws = vec![0.0; rows.workspace()];
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
                let mut ws = vec![0.0; rows.workspace()];
                rows.forward(&f(&x), bias.map(f).as_deref(), &mut got, &mut ws);
                for (a, e) in got.iter().zip(&want) {
                    assert!(
                        (*a as f64 - e).abs() <= 1e-5 * (1.0 + e.abs()),
                        "{g:?}: {a} vs {e}"
                    );
                }
            }
        }
    }

    /// The backward pass against the definition's, over two images (dW summed): dX and dW
    /// in f64 (the portable loops), dW alone in f32 (the AVX-512 kernel where the CPU has
    /// it), on the forward test's layers.
    #[test]
    fn gradients_match_the_direct_convolution() {
        let cases = [
            (1, 20, (28, 28), 5, 0),
            (3, 32, (32, 32), 3, 1),
            (2, 5, (5, 1), 3, 1),
            (3, 9, (7, 17), 3, 0),
            (1, 8, (20, 19), 5, 1),
            (3, 3, (6, 28), 5, 2),
        ];
        for (c, o, hw, k, pad) in cases {
            let g = geometry(c, hw, k, pad);
            let imgs = 2;
            let x = values(imgs * g.chw(), 4);
            let w = values(o * g.k(), 5);
            let dy = values(imgs * o * g.p(), 6);
            let run = |kernel: &dyn ConvBackward<f64>| {
                let mut dx = vec![0.0; x.len()];
                let mut dw = vec![0.0; kernel.weight_grad_len()];
                let mut ws = vec![0.0; kernel.workspace()];
                kernel.backward_images(imgs, &dy, &x, Some(&mut dx), Some(&mut dw), &mut ws);
                (dx, dw)
            };
            let (dx, dw) = run(&DirectRowsBackward::new(&g, o, &w));
            let (dx_ref, dw_ref) = run(&Direct::new(&g, o, &w));
            for (a, e) in dx.iter().zip(&dx_ref).chain(dw.iter().zip(&dw_ref)) {
                assert!(
                    (a - e).abs() <= 1e-11 * (1.0 + e.abs()),
                    "{g:?}: {a} vs {e}"
                );
            }
            let f = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<_>>();
            let kernel = DirectRowsBackward::<f32>::new(&g, o, &[]);
            let mut dw = vec![0.0f32; kernel.weight_grad_len()];
            let mut ws = vec![0.0; kernel.workspace()];
            kernel.backward_images(imgs, &f(&dy), &f(&x), None, Some(&mut dw), &mut ws);
            for (a, e) in dw.iter().zip(&dw_ref) {
                assert!(
                    (*a as f64 - e).abs() <= 1e-4 * (1.0 + e.abs()),
                    "{g:?}: {a} vs {e}"
                );
            }
        }
    }

    #[test]
    fn supports_only_narrow_stride_one_layers_with_few_taps() {
        assert!(supports(&geometry(3, (32, 32), 5, 2)));
        assert!(!supports(&geometry(4, (32, 32), 5, 2)), "100 taps");
        assert!(!supports(&geometry(1, (40, 40), 5, 2)), "rows of 40");
        let strided = Geometry::new(3, (32, 32), (3, 3), (2, 2), (1, 1), (1, 1)).unwrap();
        assert!(!supports(&strided));
    }
}
