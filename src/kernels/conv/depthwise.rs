//! Depthwise convolution (`groups = c_in = c_out`: every channel its own `kh × kw`
//! filter), MobileNet's layer. One GEMM per channel would multiply a `1 × kh·kw` row by a
//! `kh·kw × pixels` column matrix: all packing, no reuse. This kernel slides each filter
//! tap over the plane instead: for tap `(ki, kj)` and output row `i`, the valid outputs
//! `j` read one input row at `j·s + kj·d − p`, so with stride 1 the inner loop is a
//! contiguous `y += w·x` that the compiler vectorises. Narrow planes go channels-last;
//! f32 "same" stride-1 layers on AVX-512 or AVX2 are read in place, and stride-2 ones
//! with large enough planes from their input split into phases (`depthwise_flat.rs`).
//! The reference is the grouped direct convolution ([`super::grouped`] over [`super::direct`]).

use super::depthwise_flat::{FlatDepthwise, FlatIsa};
use super::depthwise_taps::{for_each_pixel_tap, for_each_row};
use super::{ConvBackward, ConvForward};
use crate::kernels::element::{as_f32, as_f32_mut};
use crate::kernels::transpose::copy_transposed;
use crate::kernels::{Element, Geometry};
use std::borrow::Cow;

/// Output rows narrower than this take the channels-last path of [`Depthwise::forward`]
/// and of the backward pass. 17 puts 16-pixel rows there: mobilenet-v2's 32→32 layer at
/// 16×16 (batch 128, 1 thread) then runs its backward in 5.0 ms instead of 12.3 and its
/// forward in 2.5 instead of 2.1; the train step went from 621/618 to 650/643 images/s
/// (same run, 2 rounds).
const NARROW: usize = 17;

/// Stride-2 layers with output planes of at least this many pixels are summed from their
/// split input (`phases.rs`); smaller ones go channels-last, because splitting and
/// merging cost per row. mobilenet-v2 training at 1 thread, batch 128, minimum ms of 4
/// alternating profiles, forward + backward, channels-last → split: 96/2 on 16×16 (64
/// output pixels) 12.4 → 8.7; 144/2 on 8×8 3.7 → 3.7; 192/2 on 4×4 1.1 → 1.9; 576/2 on
/// 2×2 1.3 → 2.4.
const SPLIT_MIN_PIXELS: usize = 64;

/// On AVX2, smaller output planes stay channels-last (mobilenet-v2 inference, 1 thread,
/// batch 128, min of 3 profiles, channels-last → in place: 32 on 16×16 1.81 → 1.18 ms,
/// 144 on 8×8 1.72 → 1.40, 96/2 on 16×16 2.53 → 1.91; but 192 on 4×4 0.81 → 0.89, 384
/// on 2×2 0.78 → 1.07, 960 on 1×1 0.20 → 0.24).
const AVX2_MIN_PIXELS: usize = 64;

/// The depthwise kernel for geometry `g` (`g.c` channels in, the same number out).
pub struct Depthwise<'a, T: Clone> {
    geometry: Geometry,
    /// Borrowed, or a copy of its own for a kernel kept between calls.
    weight: Cow<'a, [T]>,
    /// The weights tap-major (`kh·kw × c`), for the channels-last path.
    weight_by_tap: Vec<T>,
    /// For a channels-last stride-1 layer: the transposed layer (padding `(k − 1)·d − p`,
    /// the output's size in, the input's out) and its weights by tap, flipped: dX as its
    /// forward pass, each input pixel's sums in registers.
    transposed_by_tap: Option<(Geometry, Vec<T>)>,
    /// The in-place forward and dW of "same" stride-1 layers (f32 on AVX-512 or AVX2 with
    /// FMA), which take
    /// the place of both other paths.
    flat: Option<FlatDepthwise>,
    /// The in-place forward of the transposed layer with its flipped weights: dX of those
    /// layers, when it is wanted.
    flat_input_grad: Option<FlippedLayer>,
}

/// The transposed layer's in-place kernel and its flipped weights.
type FlippedLayer = (FlatDepthwise, Vec<f32>);

impl<'a, T: Element> Depthwise<'a, T> {
    /// A depthwise convolution of geometry `g` with the `c × 1 × kh × kw` weights `w`
    /// (empty for a backward pass that wants no input gradient).
    pub fn new(g: &Geometry, w: impl Into<Cow<'a, [T]>>) -> Self {
        Self::build(
            g,
            w.into(),
            (SPLIT_MIN_PIXELS, AVX2_MIN_PIXELS),
            FlatIsa::detect(),
        )
    }

    /// [`Depthwise::new`], with stride-2 layers read from their split input where their
    /// output planes have at least `split_min_pixels` pixels, and the in-place path on
    /// `isa` (none without), on AVX2 only for planes of at least `avx2_min_pixels`.
    fn build(
        g: &Geometry,
        weight: Cow<'a, [T]>,
        (split_min_pixels, avx2_min_pixels): (usize, usize),
        isa: Option<FlatIsa>,
    ) -> Self {
        let w: &[T] = &weight;
        let taps = g.kernel.0 * g.kernel.1;
        let mut weight_by_tap = Vec::new();
        if g.ow < NARROW && w.len() == g.c * taps {
            weight_by_tap = vec![T::zero(); w.len()];
            copy_transposed(w, (g.c, taps, taps), &mut weight_by_tap, g.c);
        }
        let transposed_by_tap = transposed_layer(g)
            .filter(|_| !weight_by_tap.is_empty())
            .map(|gt| {
                // Both axes flipped: tap t becomes tap kh·kw − 1 − t.
                let flipped = weight_by_tap.chunks_exact(g.c).rev().flatten().copied();
                (gt, flipped.collect())
            });
        let f32_weights = as_f32(w).zip(isa);
        let flat = f32_weights
            .and_then(|(w, isa)| FlatDepthwise::new(g, w, isa))
            .filter(|flat| flat.split_len() == 0 || g.p() >= split_min_pixels)
            .filter(|_| isa != Some(FlatIsa::Avx2) || g.p() >= avx2_min_pixels);
        let flat_input_grad = f32_weights
            .filter(|(w, _)| w.len() == g.c * taps && flat.is_some())
            .and_then(|(w, isa)| FlatDepthwise::transposed(g, w, isa));
        Depthwise {
            geometry: *g,
            weight,
            weight_by_tap,
            transposed_by_tap,
            flat,
            flat_input_grad,
        }
    }

    /// The plane-by-plane path (see [`ConvForward::forward`]): one image.
    fn forward_planes(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], workspace: &mut [T]) {
        let g = &self.geometry;
        let (plane, out, taps) = (g.h * g.w, g.p(), g.kernel.0 * g.kernel.1);
        let ((kh, kw), (sh, sw), (dh, dw)) = (g.kernel, g.stride, g.dilation);
        let (ph, pw) = g.padding;
        let (hp, wp) = padded(g);
        for (ch, (x_c, y_c)) in x
            .chunks_exact(plane)
            .zip(y.chunks_exact_mut(out))
            .enumerate()
            .map(|(i, v)| (i % g.c, v))
        {
            y_c.fill(bias.map_or(T::zero(), |b| b[ch]));
            let src: &[T] = if (ph, pw) == (0, 0) {
                x_c
            } else {
                let xp = &mut workspace[..hp * wp];
                xp.fill(T::zero());
                for (r, row) in x_c.chunks_exact(g.w).enumerate() {
                    xp[(r + ph) * wp + pw..][..g.w].copy_from_slice(row);
                }
                xp
            };
            let w_c = &self.weight[ch * taps..(ch + 1) * taps];
            for (i, y_row) in y_c.chunks_exact_mut(g.ow).enumerate() {
                for a in 0..kh {
                    let row = &src[(i * sh + a * dh) * wp..];
                    for b in 0..kw {
                        let (wv, from) = (w_c[a * kw + b], &row[b * dw..]);
                        if sw == 1 {
                            for (y, &x) in y_row.iter_mut().zip(&from[..g.ow]) {
                                *y += wv * x;
                            }
                        } else {
                            for (j, y) in y_row.iter_mut().enumerate() {
                                *y += wv * from[j * sw];
                            }
                        }
                    }
                }
            }
        }
    }

    /// The channels-last path: the image transposed to `pixels × c`, the sums of
    /// [`Self::sums_channels_last`] (in AVX-512 registers where the CPU has them, for f32),
    /// then transposed back.
    fn forward_channels_last(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], ws: &mut [T]) {
        let g = &self.geometry;
        let (c, plane, out) = (g.c, g.h * g.w, g.p());
        let (xt, rest) = ws.split_at_mut(plane * c);
        let yt = &mut rest[..out * c];
        copy_transposed(x, (c, plane, plane), xt, c);
        self.sums_channels_last(xt, bias, yt, true);
        copy_transposed(yt, (out, c, c), y, out);
    }

    /// `yt[pixel][·] = bias + Σ_taps w[tap][·] · xt[input pixel][·]` over all channels at
    /// once, for every output pixel and tap inside the image: `xt` is the image
    /// channels-last (`pixels × c`), `yt` the output. The plain loops (the reference,
    /// vectorised by the compiler over the channels) add one tap to a whole pixel at a
    /// time; with `fast`, f32 on an AVX-512 or AVX2 CPU keeps each pixel's sums in
    /// registers instead (`depthwise_x86`), with the same sums in the same order: bitwise
    /// the same. On AVX2 that took mobilenet-v2's depthwise forward passes from 15.2 to
    /// 10.6 ms a training step (AMD EPYC, batch 128, 1 thread, min of 4 profiles).
    fn sums_channels_last(&self, xt: &[T], bias: Option<&[T]>, yt: &mut [T], fast: bool) {
        channels_last_sums(&self.geometry, &self.weight_by_tap, xt, bias, yt, fast)
    }
}

/// [`Depthwise::sums_channels_last`] for a layer of geometry `g` with the weights by tap
/// `w_by_tap` (`kh·kw × c`).
fn channels_last_sums<T: Element>(
    g: &Geometry,
    w_by_tap: &[T],
    xt: &[T],
    bias: Option<&[T]>,
    yt: &mut [T],
    fast: bool,
) {
    let c = g.c;
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(xt), Some(w), Some(bias), Some(yt)) = (
        fast,
        as_f32(xt),
        as_f32(w_by_tap),
        bias.map_or(Some(None), |b| as_f32(b).map(Some)),
        as_f32_mut(yt),
    ) {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            unsafe { super::depthwise_x86::forward_channels_last(g, xt, w, bias, yt) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            unsafe { super::depthwise_x86::forward_channels_last_avx2(g, xt, w, bias, yt) };
            return;
        }
    }
    let _ = fast;
    for y_pix in yt.chunks_exact_mut(c) {
        match bias {
            Some(b) => y_pix.copy_from_slice(&b[..c]),
            None => y_pix.fill(T::zero()),
        }
    }
    for_each_pixel_tap(g, |out_pix, tap, in_pix| {
        let y_pix = &mut yt[out_pix * c..][..c];
        let x_pix = &xt[in_pix * c..][..c];
        let w_tap = &w_by_tap[tap * c..][..c];
        for ((y, &xv), &wv) in y_pix.iter_mut().zip(x_pix).zip(w_tap) {
            *y += wv * xv;
        }
    });
}

/// The layer whose forward pass is the input gradient of the stride-1 depthwise layer
/// `g`, if its padding `(k − 1)·d − p` is not negative: the output's size in, the input's
/// out, the same kernel and dilation.
fn transposed_layer(g: &Geometry) -> Option<Geometry> {
    if g.stride != (1, 1) {
        return None;
    }
    let pad = |k: usize, d: usize, p: usize| ((k - 1) * d).checked_sub(p);
    let padding = (
        pad(g.kernel.0, g.dilation.0, g.padding.0)?,
        pad(g.kernel.1, g.dilation.1, g.padding.1)?,
    );
    let gt = Geometry::new(g.c, (g.oh, g.ow), g.kernel, (1, 1), padding, g.dilation)?;
    ((gt.oh, gt.ow) == (g.h, g.w)).then_some(gt)
}

/// The side lengths of a plane with its padding, `(h + 2·ph, w + 2·pw)`.
fn padded(g: &Geometry) -> (usize, usize) {
    (g.h + 2 * g.padding.0, g.w + 2 * g.padding.1)
}

impl<T: Element> ConvForward<T> for Depthwise<'_, T> {
    /// One padded plane, when the layer pads; for the channels-last path, the image and
    /// its output transposed.
    fn workspace(&self) -> usize {
        let g = &self.geometry;
        if let Some(flat) = &self.flat {
            flat.split_len()
        } else if !self.weight_by_tap.is_empty() {
            g.c * (g.h * g.w + g.p())
        } else if g.padding == (0, 0) {
            0
        } else {
            let (hp, wp) = padded(g);
            hp * wp
        }
    }

    /// Both paths start every output from its bias (or zero).
    fn writes_every_output(&self) -> bool {
        true
    }

    /// Per channel, the plane is first copied into a zero-bordered buffer, so that every
    /// tap of every output reads inside it: the loops carry no bounds, only
    /// `y[i][j] += w[a][b] · xp[i·sh + a·dh][j·sw + b·dw]`, row by row. Rows of at most
    /// 16 outputs (MobileNet's planes at 32×32 go down to 1 pixel) leave nothing to
    /// vectorise and pay the per-plane overhead hundreds of thousands of times a batch:
    /// they take the channels-last path, vectorised across channels instead. Both add the
    /// taps of each output in the same order. On AVX-512 or AVX2, f32 "same" stride-1
    /// layers take neither: they are summed in place, a vector of flat outputs at a time
    /// (`depthwise_flat.rs`), with no padded copy and no transposes.
    fn forward(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], workspace: &mut [T]) {
        let g = &self.geometry;
        let per_image = (g.c * g.h * g.w, g.c * g.p());
        for (x_i, y_i) in x
            .chunks_exact(per_image.0)
            .zip(y.chunks_exact_mut(per_image.1))
        {
            if let Some(flat) = &self.flat {
                // `flat` exists only for f32 on CPUs with its instructions: this succeeds.
                let f32s = (as_f32(x_i), as_f32(&self.weight), as_f32_mut(y_i));
                let ws = as_f32_mut(workspace);
                if let (Some(x), Some(w), Some(y), Some(ws)) = (f32s.0, f32s.1, f32s.2, ws) {
                    if flat.forward(x, w, bias.and_then(as_f32), y, ws) {
                        continue;
                    }
                }
                unreachable!("the in-place depthwise path runs on f32 with its instructions");
            }
            if self.weight_by_tap.is_empty() {
                self.forward_planes(x_i, bias, y_i, workspace);
            } else {
                self.forward_channels_last(x_i, bias, y_i, workspace);
            }
        }
    }
}

impl<T: Element> Depthwise<'_, T> {
    /// The channels-last backward of one image (rows narrower than [`NARROW`], as in the
    /// forward): `dy` and `x` transposed to `pixels × c`, then for every output pixel and
    /// tap inside the image `dx[input pixel][·] += w[tap][·] · dy[pixel][·]` and
    /// `dw[tap][·] += dy[pixel][·] · x[input pixel][·]` over all channels at once, then `dx`
    /// transposed back. `dw` stays `kh·kw × c` and sums every image's products in place:
    /// transposing and adding it per image cost as much as the products on
    /// mobilenet-v2's 2×2 and 1×1 planes. Each dX element sums its terms in the order of
    /// the plane path (pixels ascending); dW adds them one by one across the images
    /// instead of row by row per image, so the two paths agree to rounding.
    fn backward_channels_last(
        &self,
        dy: &[T],
        x: &[T],
        dx: Option<&mut [T]>,
        mut dw: Option<&mut [T]>,
        ws: &mut [T],
    ) {
        let g = &self.geometry;
        let (c, plane, out) = (g.c, g.h * g.w, g.p());
        let (dyt, rest) = ws.split_at_mut(out * c);
        let (xt, rest) = rest.split_at_mut(plane * c);
        let dxt = &mut rest[..plane * c];
        copy_transposed(dy, (c, out, out), dyt, c);
        if dw.is_some() {
            copy_transposed(x, (c, plane, plane), xt, c);
        }
        // dX as the transposed layer's forward where there is one, else scattered below.
        let scatter_dx = match (&dx, &self.transposed_by_tap) {
            (Some(_), Some((gt, flipped))) => {
                channels_last_sums(gt, flipped, dyt, None, dxt, true);
                false
            }
            (Some(_), None) => {
                dxt.fill(T::zero());
                true
            }
            (None, _) => false,
        };
        for_each_pixel_tap(g, |out_pix, tap, in_pix| {
            let dy_pix = &dyt[out_pix * c..][..c];
            let (at, tap) = (in_pix * c, tap * c);
            if scatter_dx {
                let w_tap = &self.weight_by_tap[tap..][..c];
                for ((d, &gy), &wv) in dxt[at..][..c].iter_mut().zip(dy_pix).zip(w_tap) {
                    *d += wv * gy;
                }
            }
            if let Some(dw) = dw.as_deref_mut() {
                let x_pix = &xt[at..][..c];
                for ((d, &gy), &xv) in dw[tap..][..c].iter_mut().zip(dy_pix).zip(x_pix) {
                    *d += gy * xv;
                }
            }
        });
        if let Some(dx) = dx {
            copy_transposed(dxt, (plane, c, c), dx, plane);
        }
    }

    /// Whether this layer's backward goes channels-last ([`NARROW`] rows, not in place):
    /// its weight gradient is then summed as `kh·kw × c` over the images, and transposed
    /// to the weights' `c × kh·kw` once, by `finish_weight_grad`.
    fn channels_last_backward(&self) -> bool {
        self.flat_backward().is_none() && self.geometry.ow < NARROW
    }
}

impl<T: Element> Depthwise<'_, T> {
    /// The in-place kernels of the backward pass, where they take it: a "same" stride-1 or
    /// a stride-2 layer in f32 on AVX-512 or AVX2 (dW from `flat`; dX, when wanted, from
    /// `flat_input_grad` in place or from `flat` on the split input).
    fn flat_backward(&self) -> Option<(&FlatDepthwise, FlatInputGrad<'_>)> {
        let flat = self.flat.as_ref()?;
        if self.weight.is_empty() {
            return Some((flat, FlatInputGrad::NotWanted));
        }
        match &self.flat_input_grad {
            Some(transposed) => Some((flat, FlatInputGrad::Transposed(transposed))),
            None if flat.split_len() > 0 => Some((flat, FlatInputGrad::Split)),
            None => None,
        }
    }

    /// The in-place backward of one image ([`Depthwise::flat_backward`]): dW's lane sums
    /// and dX (overwritten). `false` if `T` is not f32.
    fn backward_flat(
        &self,
        dy: &[T],
        x: &[T],
        dx: Option<&mut [T]>,
        dw: Option<&mut [T]>,
        workspace: &mut [T],
    ) -> bool {
        let Some((flat, input_grad)) = self.flat_backward() else {
            return false;
        };
        let (Some(dy), Some(x), Some(ws)) = (as_f32(dy), as_f32(x), as_f32_mut(workspace)) else {
            return false;
        };
        if let Some(dw) = dw.and_then(as_f32_mut) {
            assert!(
                flat.weight_grad(x, dy, dw, ws),
                "the in-place path needs its instructions"
            );
        }
        let Some(dx) = dx.and_then(as_f32_mut) else {
            return true;
        };
        let written = match input_grad {
            FlatInputGrad::Transposed((kernel, flipped)) => {
                kernel.forward(dy, flipped, None, dx, ws)
            }
            FlatInputGrad::Split => {
                as_f32(&self.weight).is_some_and(|w| flat.input_grad(dy, w, dx, ws))
            }
            FlatInputGrad::NotWanted => true,
        };
        assert!(written, "the in-place path needs its instructions");
        true
    }
}

/// How the in-place backward finds dX.
enum FlatInputGrad<'k> {
    /// No weights were given: dX is not wanted.
    NotWanted,
    /// A stride-1 layer: the transposed layer's in-place forward.
    Transposed(&'k FlippedLayer),
    /// A stride-2 layer: its own taps scattered into the split input's gradient.
    Split,
}

impl<T: Element> ConvBackward<T> for Depthwise<'_, T> {
    /// For the channels-last path: `dy`, `x` and `dx` transposed; none for the in-place
    /// path.
    fn workspace(&self) -> usize {
        let g = &self.geometry;
        if let Some((flat, _)) = self.flat_backward() {
            flat.split_len()
        } else if self.channels_last_backward() {
            g.c * (g.p() + 2 * g.h * g.w)
        } else {
            0
        }
    }

    /// `c × kh·kw`, or for the in-place path a partial sum per lane of every vector and
    /// tap of an image.
    fn weight_grad_len(&self) -> usize {
        match self.flat_backward() {
            Some((flat, _)) => flat.weight_grad_len(),
            None => self.geometry.c * self.geometry.kernel.0 * self.geometry.kernel.1,
        }
    }

    /// The in-place path's lane sums added up by channel and tap; the channels-last
    /// path's `kh·kw × c` sums transposed to `c × kh·kw`.
    fn finish_weight_grad(&self, summed: Vec<T>) -> Vec<T> {
        let g = &self.geometry;
        if self.channels_last_backward() {
            let taps = g.kernel.0 * g.kernel.1;
            let mut dw = vec![T::zero(); summed.len()];
            copy_transposed(&summed, (taps, g.c, g.c), &mut dw, taps);
            return dw;
        }
        match (self.flat_backward(), as_f32(&summed)) {
            (Some((flat, _)), Some(lanes)) => flat
                .finish_weight_grad(lanes)
                .into_iter()
                .map(|v| T::from_f64(f64::from(v)))
                .collect(),
            _ => summed,
        }
    }

    /// The in-place path's dX is the transposed layer's forward, which writes every
    /// element.
    fn writes_every_input_grad(&self) -> bool {
        self.flat_backward().is_some()
    }

    fn backward_image(
        &self,
        dy: &[T],
        x: &[T],
        mut dx: Option<&mut [T]>,
        mut dw: Option<&mut [T]>,
        workspace: &mut [T],
    ) {
        if self.backward_flat(dy, x, dx.as_deref_mut(), dw.as_deref_mut(), workspace) {
            return;
        }
        let g = &self.geometry;
        // Narrow rows: vectorised across channels (the weights by tap exist when dX is
        // wanted, as the forward's; dW is summed as `kh·kw × c`, which
        // `finish_weight_grad` expects of these layers whatever is asked).
        if self.channels_last_backward() {
            assert!(
                dx.is_none() || !self.weight_by_tap.is_empty(),
                "the input gradient needs the layer's weights"
            );
            return self.backward_channels_last(dy, x, dx, dw, workspace);
        }
        let (plane, out, taps) = (g.h * g.w, g.p(), g.kernel.0 * g.kernel.1);
        let sw = g.stride.1;
        for ch in 0..g.c {
            let dy_c = &dy[ch * out..(ch + 1) * out];
            if let Some(dx) = dx.as_deref_mut() {
                let dx_c = &mut dx[ch * plane..(ch + 1) * plane];
                let w_c = &self.weight[ch * taps..(ch + 1) * taps];
                for_each_row(g, |tap, i, ih, cols, first| {
                    let wv = w_c[tap];
                    let dy_row = &dy_c[i * g.ow + cols.start..i * g.ow + cols.end];
                    let dx_row = &mut dx_c[ih * g.w..(ih + 1) * g.w];
                    for (n, &d) in dy_row.iter().enumerate() {
                        dx_row[first + n * sw] += wv * d;
                    }
                });
            }
            if let Some(dw) = dw.as_deref_mut() {
                let x_c = &x[ch * plane..(ch + 1) * plane];
                let dw_c = &mut dw[ch * taps..(ch + 1) * taps];
                for_each_row(g, |tap, i, ih, cols, first| {
                    let dy_row = &dy_c[i * g.ow + cols.start..i * g.ow + cols.end];
                    let x_row = &x_c[ih * g.w..(ih + 1) * g.w];
                    let mut s = T::zero();
                    for (n, &d) in dy_row.iter().enumerate() {
                        s += d * x_row[first + n * sw];
                    }
                    dw_c[tap] += s;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `y[c][i][j] = b[c] + Σ w[c][a][b] · x[c][i·s + a·d − p][j·s + b·d − p]` over the taps
    /// inside the image: the definition, one output at a time.
    fn by_definition(g: &Geometry, x: &[f64], w: &[f64], bias: &[f64]) -> Vec<f64> {
        let (kh, kw) = g.kernel;
        let mut y = vec![0.0; g.c * g.p()];
        for c in 0..g.c {
            for i in 0..g.oh {
                for j in 0..g.ow {
                    let mut acc = bias[c];
                    for a in 0..kh {
                        for b in 0..kw {
                            let ih =
                                (i * g.stride.0 + a * g.dilation.0) as isize - g.padding.0 as isize;
                            let iw =
                                (j * g.stride.1 + b * g.dilation.1) as isize - g.padding.1 as isize;
                            if ih >= 0 && iw >= 0 && (ih as usize) < g.h && (iw as usize) < g.w {
                                acc += w[(c * kh + a) * kw + b]
                                    * x[(c * g.h + ih as usize) * g.w + iw as usize];
                            }
                        }
                    }
                    y[(c * g.oh + i) * g.ow + j] = acc;
                }
            }
        }
        y
    }

    /// The channels-last sums in AVX-512 registers (f32, where the CPU has AVX-512F; on
    /// other CPUs both sides are the plain loops) are bitwise the plain loops' — channel
    /// counts below, at and between multiples of 16 (masked last registers, one to five
    /// registers per pixel), stride 2 on odd sizes, padding 0–2, dilation 2, with and
    /// without a bias.
    #[test]
    fn channels_last_registers_equal_the_plain_loops_bitwise() {
        for (c, h, w, k, s, p, d) in [
            (1, 4, 4, 3, 1, 1, 1),
            (7, 5, 6, 3, 1, 1, 1),
            (16, 4, 4, 3, 2, 1, 1),
            (33, 3, 5, 3, 1, 2, 2),
            (64, 2, 2, 3, 1, 1, 1),
            (80, 3, 3, 3, 2, 0, 1),
            (144, 8, 8, 3, 1, 1, 1),
            (21, 7, 7, 5, 2, 2, 1),
        ] {
            let g = Geometry::new(c, (h, w), (k, k), (s, s), (p, p), (d, d)).unwrap();
            let x: Vec<f32> = (0..c * h * w).map(|i| (i as f32 * 0.37).sin()).collect();
            let wt: Vec<f32> = (0..c * k * k).map(|i| (i as f32 * 0.71).cos()).collect();
            let bias: Vec<f32> = (0..c).map(|i| i as f32 * 0.3 - 1.0).collect();
            let mut kernel = Depthwise::new(&g, &wt);
            kernel.weight_by_tap = vec![0.0; wt.len()];
            copy_transposed(&wt, (c, k * k, k * k), &mut kernel.weight_by_tap, c);
            let mut xt = vec![0.0; x.len()];
            copy_transposed(&x, (c, h * w, h * w), &mut xt, c);
            for b in [None, Some(&bias[..])] {
                let (mut fast, mut plain) = (vec![f32::NAN; g.p() * c], vec![0.0; g.p() * c]);
                kernel.sums_channels_last(&xt, b, &mut fast, true);
                kernel.sums_channels_last(&xt, b, &mut plain, false);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let case = format!("c {c}, {h}×{w}, k {k}, s {s}, p {p}, d {d}, bias {b:?}");
                assert_eq!(bits(&fast), bits(&plain), "{case}");
                // The AVX2 kernel, which AVX-512 CPUs do not take, called directly.
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    let w = &kernel.weight_by_tap;
                    fast.fill(f32::NAN);
                    // SAFETY: the CPU has AVX2, checked just above.
                    unsafe {
                        super::super::depthwise_x86::forward_channels_last_avx2(
                            &g, &xt, w, b, &mut fast,
                        )
                    };
                    assert_eq!(bits(&fast), bits(&plain), "AVX2: {case}");
                }
            }
        }
    }

    /// The in-place path of "same" stride-1 layers (f32, on each of AVX-512 and AVX2 the CPU has)
    /// equals the definition: planes that are multiples of 16 pixels and planes that
    /// divide 16 (1×1, 1×2, 2×2, 2×4, 4×4, 4×8, 8×8, 16×16, and 6×8 and 5×32, whose
    /// heights leave rows after the AVX2 rows kernel's groups of 4), channel counts that
    /// leave the last vector partial, 3×3 and 5×5 kernels, with and without a bias; the images
    /// sit between NaNs and the output starts as NaN, so a lane read outside its image or
    /// an output left unwritten shows.
    /// `(c, h, w, k, p, stride)` of "same" stride-1 layers whose planes are a multiple or
    /// a divisor of 16 pixels.
    const STRIDE_1_CASES: &[(usize, usize, usize, usize, usize, usize)] = &[
        (3, 1, 1, 3, 1, 1),
        (7, 1, 2, 3, 1, 1),
        (5, 2, 2, 3, 1, 1),
        (9, 2, 4, 3, 1, 1),
        (6, 4, 4, 3, 1, 1),
        (3, 4, 8, 3, 1, 1),
        (4, 8, 8, 5, 2, 1),
        (2, 16, 16, 3, 1, 1),
        (3, 6, 8, 3, 1, 1),
        (2, 5, 32, 3, 1, 1),
    ];

    /// Stride-2 layers whose output planes are 1, 2×2, 4×4, 8×8 and 3×16 pixels, from even and
    /// odd sizes, with 3×3 and 5×5 kernels: mobilenet-v2's downsampling layers and their
    /// edges.
    const STRIDE_2_CASES: &[(usize, usize, usize, usize, usize, usize)] = &[
        (7, 2, 2, 3, 1, 2),
        (3, 1, 1, 3, 1, 2),
        (6, 4, 4, 3, 1, 2),
        (5, 3, 3, 3, 1, 2),
        (3, 8, 8, 3, 1, 2),
        (4, 7, 7, 3, 1, 2),
        (2, 8, 8, 5, 2, 2),
        (5, 16, 16, 3, 1, 2),
        (2, 15, 16, 3, 1, 2),
        (2, 6, 32, 3, 1, 2),
    ];

    /// Every in-place instruction set this CPU has, then none (the other paths).
    fn isas() -> impl Iterator<Item = Option<FlatIsa>> + Clone {
        [FlatIsa::Avx512, FlatIsa::Avx2]
            .into_iter()
            .filter(|isa| isa.supported())
            .map(Some)
            .chain([None])
    }

    /// How many in-place instruction sets this CPU has.
    fn simd_isas() -> usize {
        isas().flatten().count()
    }

    #[test]
    fn in_place_path_equals_the_definition() {
        let mut taken = 0;
        for (c, h, w, k, p, s) in STRIDE_1_CASES
            .iter()
            .chain(&[(1, 8, 8, 3, 1, 1)])
            .chain(STRIDE_2_CASES)
            .copied()
        {
            let g = Geometry::new(c, (h, w), (k, k), (s, s), (p, p), (1, 1)).unwrap();
            let imgs = 3;
            let x: Vec<f64> = (0..imgs * g.chw())
                .map(|i| (i as f64 * 0.37).sin())
                .collect();
            let wt: Vec<f64> = (0..c * k * k).map(|i| (i as f64 * 0.71).cos()).collect();
            let bias: Vec<f64> = (0..c).map(|i| i as f64 * 0.5 - 1.0).collect();
            let f = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<_>>();
            let guard = vec![f32::NAN; 64];
            let padded = [&guard[..], &f(&x), &guard[..]].concat();
            let x32 = &padded[64..64 + x.len()];
            let w32 = f(&wt);
            for isa in isas() {
                let kernel = Depthwise::build(&g, w32.as_slice().into(), (0, 0), isa);
                taken += usize::from(kernel.flat.is_some());
                for b in [None, Some(&bias[..])] {
                    let want: Vec<f64> = x
                        .chunks_exact(g.chw())
                        .flat_map(|x_i| by_definition(&g, x_i, &wt, b.unwrap_or(&vec![0.0; c])))
                        .collect();
                    let mut y = vec![f32::NAN; want.len()];
                    let mut ws = vec![f32::NAN; ConvForward::workspace(&kernel)];
                    kernel.forward(x32, b.map(f).as_deref(), &mut y, &mut ws);
                    for (a, e) in y.iter().zip(&want) {
                        assert!(
                            (*a as f64 - e).abs() <= 1e-5 * (1.0 + e.abs()),
                            "{g:?} bias {}: {a} vs {e}",
                            b.is_some()
                        );
                    }
                }
            }
        }
        let cases = STRIDE_1_CASES.len() + 1 + STRIDE_2_CASES.len();
        assert_eq!(
            taken,
            cases * simd_isas(),
            "every case takes the in-place path"
        );
    }

    /// The in-place backward of "same" stride-1 layers (f32, on each of AVX-512 and AVX2 the CPU has):
    /// dX by the transposed layer's forward and dW from per-lane sums equal the
    /// definition's over three images, for the planes of `in_place_path_equals_the_
    /// definition`, with dX wanted and not; the images sit between NaNs and dX starts as
    /// NaN (the path says it writes all of it).
    #[test]
    fn in_place_backward_equals_the_definition() {
        let mut taken = 0;
        for &(c, h, w, k, p, s) in STRIDE_1_CASES.iter().chain(STRIDE_2_CASES) {
            let g = Geometry::new(c, (h, w), (k, k), (s, s), (p, p), (1, 1)).unwrap();
            let (imgs, taps, plane, out) = (3, k * k, h * w, g.p());
            let x: Vec<f64> = (0..imgs * g.chw())
                .map(|i| (i as f64 * 0.37).sin())
                .collect();
            let dy: Vec<f64> = (0..imgs * c * out)
                .map(|i| (i as f64 * 0.53).cos())
                .collect();
            let wt: Vec<f64> = (0..c * taps).map(|i| (i as f64 * 0.71).cos()).collect();
            // The definition: every (output, tap) pair inside the image, both ways.
            let (mut dx_want, mut dw_want) = (vec![0.0; x.len()], vec![0.0; c * taps]);
            for n in 0..imgs {
                for ch in 0..c {
                    let (at, at_y) = ((n * c + ch) * plane, (n * c + ch) * out);
                    for q in 0..out {
                        for t in 0..taps {
                            let r = (q / g.ow * s + t / k).checked_sub(p).filter(|&r| r < h);
                            let col = (q % g.ow * s + t % k).checked_sub(p);
                            if let (Some(r), Some(col)) = (r, col.filter(|&v| v < w)) {
                                let (gy, i) = (dy[at_y + q], at + r * w + col);
                                dx_want[i] += wt[ch * taps + t] * gy;
                                dw_want[ch * taps + t] += gy * x[i];
                            }
                        }
                    }
                }
            }
            let f = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<_>>();
            let guard = vec![f32::NAN; 64];
            let padded = [&guard[..], &f(&x), &guard[..]].concat();
            let x32 = &padded[64..64 + x.len()];
            let (dy32, w32) = (f(&dy), f(&wt));
            for (with_dx, isa) in [true, false]
                .into_iter()
                .flat_map(|d| isas().map(move |isa| (d, isa)))
            {
                let weights = if with_dx { &w32[..] } else { &[] };
                let kernel = Depthwise::build(&g, weights.into(), (0, 0), isa);
                taken += usize::from(kernel.flat_backward().is_some());
                let mut dx = vec![f32::NAN; x.len()];
                if !kernel.writes_every_input_grad() {
                    dx.fill(0.0);
                }
                let mut dw = vec![0.0f32; kernel.weight_grad_len()];
                let mut ws = vec![f32::NAN; ConvBackward::workspace(&kernel)];
                let dx_arg = with_dx.then_some(&mut dx[..]);
                kernel.backward_images(imgs, &dy32, x32, dx_arg, Some(&mut dw), &mut ws);
                let dw = kernel.finish_weight_grad(dw);
                let close = |a: f32, e: f64| (a as f64 - e).abs() <= 1e-5 * (1.0 + e.abs());
                for (a, e) in dw.iter().zip(&dw_want) {
                    assert!(close(*a, *e), "{g:?} dW: {a} vs {e}");
                }
                if with_dx {
                    for (a, e) in dx.iter().zip(&dx_want) {
                        assert!(close(*a, *e), "{g:?} dX: {a} vs {e}");
                    }
                }
            }
        }
        let cases = STRIDE_1_CASES.len() + STRIDE_2_CASES.len();
        assert_eq!(
            taken,
            2 * cases * simd_isas(),
            "every case takes the in-place path"
        );
    }

    /// Both forward paths — plane by plane and channels-last — equal the definition, for
    /// wide and narrow planes, stride 2 on odd sizes, padding 0–2, dilation 2, two images.
    #[test]
    fn both_forward_paths_equal_the_definition() {
        for (c, h, w, k, s, p, d) in [
            (3, 5, 40, 3, 1, 1, 1),
            (3, 7, 33, 3, 2, 1, 1),
            (2, 6, 20, 3, 1, 2, 2),
            (5, 4, 3, 3, 2, 1, 1),
            (4, 1, 1, 3, 1, 1, 1),
            (3, 6, 7, 2, 1, 0, 1),
        ] {
            let g = Geometry::new(c, (h, w), (k, k), (s, s), (p, p), (d, d)).unwrap();
            let x: Vec<f64> = (0..2 * c * h * w)
                .map(|i| (i as f64 * 0.37).sin())
                .collect();
            let wt: Vec<f64> = (0..c * k * k).map(|i| (i as f64 * 0.71).cos()).collect();
            let bias: Vec<f64> = (0..c).map(|i| i as f64 - 1.0).collect();
            let want: Vec<f64> = x
                .chunks_exact(c * h * w)
                .flat_map(|x_i| by_definition(&g, x_i, &wt, &bias))
                .collect();
            let kernel = Depthwise::new(&g, &wt);
            let mut tap_major = vec![0.0; wt.len()];
            copy_transposed(&wt, (c, k * k, k * k), &mut tap_major, c);
            for channels_last in [false, true] {
                let kernel = Depthwise {
                    weight_by_tap: if channels_last {
                        tap_major.clone()
                    } else {
                        Vec::new()
                    },
                    ..Depthwise::new(&g, &wt)
                };
                // Into outputs full of NaN: every element is written.
                let mut ws = vec![0.0; ConvForward::<f64>::workspace(&kernel)];
                let mut y = vec![f64::NAN; want.len()];
                kernel.forward(&x, Some(&bias), &mut y, &mut ws);
                for (a, b) in y.iter().zip(&want) {
                    assert!(
                        (a - b).abs() < 1e-12,
                        "{:?} channels_last {channels_last}",
                        (c, h, w, k, s, p, d)
                    );
                }
                let mut y = vec![f64::NAN; want.len()];
                kernel.forward(&x, None, &mut y, &mut ws);
                for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                    let unbiased = b - bias[i / g.p() % c];
                    assert!(
                        (a - unbiased).abs() < 1e-12,
                        "{:?} channels_last {channels_last}, no bias",
                        (c, h, w, k, s, p, d)
                    );
                }
            }
            // The automatic choice: channels-last exactly for rows narrower than NARROW.
            assert_eq!(kernel.weight_by_tap.is_empty(), g.ow >= NARROW);
        }
    }
}
