//! The backward pass of the rows layers: dW from the shifted copies as dot products over
//! the pixels (`DirectRowsBackward::weight_grad_portable`, and `weight_grad_avx512` on
//! AVX-512), dX as the transposed layer's rows forward or the implicit GEMM's backward.

#[cfg(target_arch = "x86_64")]
use super::has_avx2;
#[cfg(target_arch = "x86_64")]
use super::taps::{InPlaceTaps, ShiftedTaps, Taps};
use super::{in_place_masks, supports, taps::InPlaceMasks, DirectRowsForward, ShiftedImage};
use super::{GROUP, LANES};
use crate::kernels::conv::implicit_backward::ImplicitGemmBackward;
use crate::kernels::conv::{ConvBackward, ConvForward};
use crate::kernels::{Element, Geometry};

/// Pixels the AVX-512 weight gradient sums at a time: 32 vectors, so that the chunk's dY
/// rows of a group of 8 channels (16 KiB) stay in L1 while every tap reads them (16 and
/// 64 vectors were slower on resnet20's 16→16 dW).
#[cfg(target_arch = "x86_64")]
const CHUNK: usize = 32 * LANES;

/// How the rows backward computes dX.
enum InputGrad<T> {
    /// The rows forward of the transposed layer.
    Transposed(DirectRowsForward<T>),
    /// The implicit GEMM's backward, where the transposed layer's padding would be
    /// negative (padding ≥ kernel).
    Implicit(ImplicitGemmBackward<T>),
}

/// The backward pass of a rows layer: `dW` from the shifted copies, dot products over
/// consecutive pixels for each tap (8 channels × up to 3 tap columns in registers), and
/// `dX` (when wanted) as the transposed layer's forward.
pub struct DirectRowsBackward<T> {
    image: ShiftedImage,
    outputs: usize,
    input_grad: Option<InputGrad<T>>,
    /// Where the AVX-512 dW reads the image in place instead of from shifted copies.
    in_place: Option<InPlaceMasks>,
}

impl<T: Element> DirectRowsBackward<T> {
    /// A layer of geometry `g` with the `o × c × kh × kw` weights `w` (empty when no input
    /// gradient is wanted).
    ///
    /// # Panics
    /// If the rows kernels do not compute `g` ([`supports`] says).
    pub fn new(g: &Geometry, o: usize, w: &[T]) -> Self {
        assert!(supports(g), "the rows kernels need dilation 1, not {g:?}");
        let input_grad = (!w.is_empty()).then(|| match DirectRowsForward::transposed(g, o, w) {
            Some(f) => InputGrad::Transposed(f),
            None => InputGrad::Implicit(ImplicitGemmBackward::new(g, o, w)),
        });
        DirectRowsBackward {
            image: ShiftedImage { g: *g },
            outputs: o,
            input_grad,
            in_place: in_place_masks::<T>(g),
        }
    }

    /// `dW += dY · x` of one image from its shifted copies, in plain loops: `dw` holds
    /// [`LANES`] partial sums for each of the `o × k` weights (the AVX-512 kernel's
    /// vectors); these loops add to the first.
    fn weight_grad_portable(&self, shifted: &[T], dy: &[T], dw: &mut [T]) {
        let g = &self.image.g;
        let (k, p, (kh, kw)) = (g.k(), g.p(), g.kernel);
        for (dy, dw) in dy.chunks_exact(p).zip(dw.chunks_exact_mut(k * LANES)) {
            for c in 0..g.c {
                for ki in 0..kh {
                    for kj in 0..kw {
                        let x = &shifted[self.image.offset(c, ki, kj)..][..p];
                        let sum = dy.iter().zip(x).fold(T::zero(), |s, (&d, &x)| s + d * x);
                        dw[((c * kh + ki) * kw + kj) * LANES] += sum;
                    }
                }
            }
        }
    }
}

impl<T: Element> DirectRowsBackward<T> {
    /// The workspace of the shifted copies: none where the image is read in place.
    fn copies_len(&self) -> usize {
        match self.in_place {
            Some(_) => 0,
            None => self.image.len(),
        }
    }

    /// `dW += dY · x` of one image: in place or from the shifted copies (made in
    /// `shifted`) on AVX-512, else by the portable loops.
    fn weight_grad(&self, dy: &[T], x: &[T], dw: &mut [T], shifted: &mut [T]) {
        #[cfg(target_arch = "x86_64")]
        if let (Some(masks), Some(x)) = (&self.in_place, crate::kernels::element::as_f32(x)) {
            if let Some(f32s) = F32Grad::of(self, dy, &mut *dw) {
                // SAFETY: `in_place` is only set on CPUs with AVX-512F; `x` is one image,
                // and `weight_grad_avx512` checks the other shapes.
                unsafe { weight_grad_avx512(f32s, &InPlaceTaps::new(masks, x)) };
                return;
            }
        }
        self.image.fill(x, shifted);
        #[cfg(target_arch = "x86_64")]
        if let (Some(f32s), Some(s), true) = (
            F32Grad::of(self, dy, &mut *dw),
            crate::kernels::element::as_f32(shifted),
            has_avx2(),
        ) {
            let taps = ShiftedTaps::new(self.image, s);
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked just above); the copies are the
                // layer's (`ShiftedTaps::new` checks their length), and
                // `weight_grad_avx512` checks the other shapes.
                unsafe { weight_grad_avx512(f32s, &taps) };
                return;
            }
            // SAFETY: the CPU has AVX2 and FMA (checked above); the copies are the
            // layer's, and `weight_grad_avx2` checks the other shapes.
            unsafe { super::avx2::weight_grad_avx2(f32s, &taps) };
            return;
        }
        self.weight_grad_portable(shifted, dy, dw);
    }
}

impl<T: Element> ConvBackward<T> for DirectRowsBackward<T> {
    /// The shifted copies (unless the image is read in place), and the workspace dX
    /// takes.
    fn workspace(&self) -> usize {
        self.copies_len()
            + match &self.input_grad {
                Some(InputGrad::Transposed(f)) => f.workspace(),
                Some(InputGrad::Implicit(b)) => b.workspace(),
                None => 0,
            }
    }

    /// 16 partial sums per weight (one vector's lanes).
    fn weight_grad_len(&self) -> usize {
        self.outputs * self.image.g.k() * LANES
    }

    /// Each weight's partial sums added up.
    fn finish_weight_grad(&self, summed: Vec<T>) -> Vec<T> {
        summed
            .chunks_exact(LANES)
            .map(|lanes| lanes.iter().fold(T::zero(), |s, &v| s + v))
            .collect()
    }

    /// dX by the transposed layer's rows forward, which writes every element.
    fn writes_every_input_grad(&self) -> bool {
        matches!(self.input_grad, Some(InputGrad::Transposed(_)))
    }

    fn backward_image(
        &self,
        dy: &[T],
        x: &[T],
        dx: Option<&mut [T]>,
        dw: Option<&mut [T]>,
        workspace: &mut [T],
    ) {
        let (shifted, rest) = workspace.split_at_mut(self.copies_len());
        if let Some(dw) = dw {
            self.weight_grad(dy, x, dw, shifted);
        }
        match (dx, &self.input_grad) {
            (Some(dx), Some(InputGrad::Transposed(f))) => f.forward(dy, None, dx, rest),
            (Some(dx), Some(InputGrad::Implicit(b))) => {
                b.backward_image(dy, x, Some(dx), None, rest)
            }
            _ => {}
        }
    }
}

/// The blocks a rows dW kernel sums one after the other: chunks of `chunk` pixels, in each
/// the output channels by groups of at most `group`, in each the tap columns by threes;
/// `f((first channel, channels), first tap column, (first pixel, end))`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn for_each_grad_block(
    g: &Geometry,
    o: usize,
    (chunk, group): (usize, usize),
    mut f: impl FnMut((usize, usize), usize, (usize, usize)),
) {
    let p = g.p();
    for p0 in (0..p).step_by(chunk) {
        let p1 = (p0 + chunk).min(p);
        for first in (0..o).step_by(group) {
            for kj0 in (0..g.kernel.1).step_by(3) {
                f((first, group.min(o - first)), kj0, (p0, p1));
            }
        }
    }
}

/// The operands of a rows `dW` seen as f32, for [`weight_grad_avx512`].
#[cfg(target_arch = "x86_64")]
pub(super) struct F32Grad<'a> {
    pub(super) g: crate::kernels::Geometry,
    pub(super) dy: &'a [f32],
    pub(super) dw: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl<'a> F32Grad<'a> {
    /// The operands as f32, or `None` when `T` is another type.
    pub(super) fn of<T: Element>(
        layer: &DirectRowsBackward<T>,
        dy: &'a [T],
        dw: &'a mut [T],
    ) -> Option<Self> {
        use crate::kernels::element::{as_f32, as_f32_mut};
        Some(F32Grad {
            g: layer.image.g,
            dy: as_f32(dy)?,
            dw: as_f32_mut(dw)?,
        })
    }
}

/// `DirectRowsBackward::weight_grad_portable` on AVX-512 for one image read from `taps`, by chunks of
/// [`CHUNK`] pixels: within a chunk, for each group of 8 output channels, input channel,
/// kernel row and up to 3 tap columns, the 8 × 3 products summed lane by lane in registers
/// (the last vector masked), then added to the accumulator's vectors. The chunk's dY rows
/// stay in L1 across all taps; the lanes are summed once per batch
/// (`finish_weight_grad`).
///
/// # Safety
/// The CPU must support AVX-512F, and `taps` must cover the layer's input: every lane of
/// [`Taps::mask`] at tap `(ki, kj)` of pixel `p < p` (output pixels) readable at
/// `origin(ki, kj) + p + c · channel_stride` for every channel `c`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_avx512<S: Taps>(mut r: F32Grad<'_>, src: &S) {
    use std::arch::x86_64::*;
    /// Tap columns `kj0..kj0 + M` of every kernel row and input channel, for output
    /// channels `first..first + n`, over pixels `p0..p1`.
    #[target_feature(enable = "avx512f")]
    unsafe fn taps<const M: usize, S: Taps>(
        r: &mut F32Grad<'_>,
        src: &S,
        (first, n): (usize, usize),
        kj0: usize,
        (p0, p1): (usize, usize),
    ) {
        let g = r.g;
        let (k, p, (kh, kw)) = (g.k(), g.p(), g.kernel);
        assert!(
            (1..=GROUP).contains(&n)
                && kj0 + M <= kw
                && p0 < p1
                && p1 <= p
                && p0 % LANES == 0
                && r.dy.len() >= (first + n) * p
                && r.dw.len() >= (first + n) * k * LANES,
            "operands too short for the layer"
        );
        // Channels past n read row first + n − 1 again; their sums are never stored.
        let rows: [*const f32; GROUP] =
            std::array::from_fn(|j| r.dy[(first + j.min(n - 1)) * p + p0..].as_ptr());
        let dw = r.dw[first * k * LANES..].as_mut_ptr();
        let (channel_stride, column) = (src.channel_stride(), src.column_stride());
        assert!(p1 - p0 <= CHUNK, "a span is at most a chunk");
        let (vectors, v0) = ((p1 - p0).div_ceil(LANES), p0 / LANES);
        let tail = match (p1 - p0) % LANES {
            0 => u16::MAX,
            t => ((1u32 << t) - 1) as u16,
        };
        for ki in 0..kh {
            let x0 = src.origin(ki, kj0).wrapping_add(p0);
            // The lanes each vector reads at each tap column, the same in every channel:
            // looked up once per kernel row, not once per channel and vector.
            let mut lanes = [[0u16; M]; CHUNK / LANES];
            for (v, columns) in lanes.iter_mut().enumerate().take(vectors) {
                let pixels = if v + 1 == vectors { tail } else { u16::MAX };
                for (m, mask) in columns.iter_mut().enumerate() {
                    *mask = pixels & src.mask(v0 + v, ki, kj0 + m);
                }
            }
            for c in 0..g.c {
                let tap = (c * kh + ki) * kw + kj0;
                // SAFETY: weights (first + j, tap + m) for j < n, m < M each have LANES
                // partial sums in dw; the loads below read pixels p0..p1 ≤ p of dY's rows
                // and the lanes of the taps the caller guarantees readable.
                unsafe {
                    let x = x0.wrapping_add(c * channel_stride);
                    let mut acc = [[_mm512_setzero_ps(); M]; GROUP];
                    for (j, acc) in acc.iter_mut().enumerate().take(n) {
                        for (m, a) in acc.iter_mut().enumerate() {
                            *a = _mm512_loadu_ps(dw.add((j * k + tap + m) * LANES));
                        }
                    }
                    let step = |acc: &mut [[__m512; M]; GROUP], v: usize, pixels: u16| {
                        let q = v * LANES;
                        let mut xs = [_mm512_setzero_ps(); M];
                        for (m, xv) in xs.iter_mut().enumerate() {
                            *xv =
                                _mm512_maskz_loadu_ps(lanes[v][m], x.wrapping_add(m * column + q));
                        }
                        for (acc, &row) in acc.iter_mut().zip(&rows) {
                            let d = _mm512_maskz_loadu_ps(pixels, row.add(q));
                            for (a, &xv) in acc.iter_mut().zip(&xs) {
                                *a = _mm512_fmadd_ps(d, xv, *a);
                            }
                        }
                    };
                    for v in 0..vectors - 1 {
                        step(&mut acc, v, u16::MAX);
                    }
                    step(&mut acc, vectors - 1, tail);
                    for (j, acc) in acc.iter().enumerate().take(n) {
                        for (m, &a) in acc.iter().enumerate() {
                            _mm512_storeu_ps(dw.add((j * k + tap + m) * LANES), a);
                        }
                    }
                }
            }
        }
    }
    let (g, o) = (r.g, r.dy.len() / r.g.p());
    for_each_grad_block(&g, o, (CHUNK, GROUP), |group, kj0, span| {
        // SAFETY: the caller guarantees AVX-512F; `taps` checks the shapes.
        unsafe {
            match g.kernel.1 - kj0 {
                1 => taps::<1, S>(&mut r, src, group, kj0, span),
                2 => taps::<2, S>(&mut r, src, group, kj0, span),
                _ => taps::<3, S>(&mut r, src, group, kj0, span),
            }
        }
    });
}
