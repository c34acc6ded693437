//! The backward pass of the rows layers: dW from the shifted copies as dot products over
//! the pixels (`DirectRowsBackward::weight_grad_portable`, and `weight_grad_avx512` on
//! AVX-512), dX as the transposed layer's rows forward or the implicit GEMM's backward.

use super::{supports, DirectRowsForward, ShiftedImage, GROUP, LANES};
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

impl<T: Element> ConvBackward<T> for DirectRowsBackward<T> {
    /// The shifted copies, and the workspace dX takes.
    fn workspace(&self) -> usize {
        self.image.len()
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
        let (shifted, rest) = workspace.split_at_mut(self.image.len());
        if let Some(dw) = dw {
            self.image.fill(x, shifted);
            #[cfg(target_arch = "x86_64")]
            if let (Some(f32s), true) = (
                F32Grad::of(self, shifted, dy, &mut *dw),
                std::arch::is_x86_feature_detected!("avx512f"),
            ) {
                // SAFETY: the CPU has AVX-512F (checked just above); `weight_grad_avx512`
                // checks the shapes.
                unsafe { weight_grad_avx512(f32s) };
            } else {
                self.weight_grad_portable(shifted, dy, dw);
            }
            #[cfg(not(target_arch = "x86_64"))]
            self.weight_grad_portable(shifted, dy, dw);
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

/// The operands of a rows `dW` seen as f32, for [`weight_grad_avx512`].
#[cfg(target_arch = "x86_64")]
struct F32Grad<'a> {
    image: ShiftedImage,
    shifted: &'a [f32],
    dy: &'a [f32],
    dw: &'a mut [f32],
}

#[cfg(target_arch = "x86_64")]
impl<'a> F32Grad<'a> {
    /// The operands as f32, or `None` when `T` is another type.
    fn of<T: Element>(
        layer: &DirectRowsBackward<T>,
        shifted: &'a [T],
        dy: &'a [T],
        dw: &'a mut [T],
    ) -> Option<Self> {
        use crate::kernels::element::{as_f32, as_f32_mut};
        Some(F32Grad {
            image: layer.image,
            shifted: as_f32(shifted)?,
            dy: as_f32(dy)?,
            dw: as_f32_mut(dw)?,
        })
    }
}

/// `DirectRowsBackward::weight_grad_portable` on AVX-512 for one image, by chunks of
/// [`CHUNK`] pixels: within a chunk, for each group of 8 output channels, input channel,
/// kernel row and up to 3 tap columns, the 8 × 3 products summed lane by lane in registers
/// (the last vector masked), then added to the accumulator's vectors. The chunk's dY rows
/// stay in L1 across all taps; the lanes are summed once per batch
/// (`finish_weight_grad`).
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn weight_grad_avx512(mut r: F32Grad<'_>) {
    use std::arch::x86_64::*;
    /// Tap columns `kj0..kj0 + M` of every kernel row and input channel, for output
    /// channels `first..first + n`, over pixels `p0..p1`.
    #[target_feature(enable = "avx512f")]
    unsafe fn taps<const M: usize>(
        r: &mut F32Grad<'_>,
        (first, n): (usize, usize),
        kj0: usize,
        (p0, p1): (usize, usize),
    ) {
        let (g, img) = (r.image.g, r.image);
        let (k, p, (kh, kw)) = (g.k(), g.p(), g.kernel);
        assert!(
            (1..=GROUP).contains(&n)
                && kj0 + M <= kw
                && p0 < p1
                && p1 <= p
                && r.shifted.len() >= img.len()
                && r.dy.len() >= (first + n) * p
                && r.dw.len() >= (first + n) * k * LANES,
            "operands too short for the layer"
        );
        // Channels past n read row first + n − 1 again; their sums are never stored.
        let rows: [*const f32; GROUP] =
            std::array::from_fn(|j| r.dy[(first + j.min(n - 1)) * p + p0..].as_ptr());
        let dw = r.dw[first * k * LANES..].as_mut_ptr();
        let channel_stride = img.offset(1, 0, 0);
        let tail = ((1u32 << ((p1 - p0) % LANES)) - 1) as u16;
        let full = (p1 - p0) / LANES;
        for ki in 0..kh {
            let x0 = r.shifted[img.offset(0, ki, kj0) + p0..].as_ptr();
            let column = img.offset(0, 0, 1) - img.offset(0, 0, 0);
            for c in 0..g.c {
                let tap = (c * kh + ki) * kw + kj0;
                // SAFETY: weights (first + j, tap + m) for j < n, m < M each have LANES
                // partial sums in dw; the loads below read pixels p0..p1 ≤ p of dY's rows
                // and of the taps' planes, which hold p elements past `offset`.
                unsafe {
                    let x = x0.add(c * channel_stride);
                    let mut acc = [[_mm512_setzero_ps(); M]; GROUP];
                    for (j, acc) in acc.iter_mut().enumerate().take(n) {
                        for (m, a) in acc.iter_mut().enumerate() {
                            *a = _mm512_loadu_ps(dw.add((j * k + tap + m) * LANES));
                        }
                    }
                    let step = |acc: &mut [[__m512; M]; GROUP], q: usize, mask: u16| {
                        let mut xs = [_mm512_setzero_ps(); M];
                        for (m, xv) in xs.iter_mut().enumerate() {
                            *xv = _mm512_maskz_loadu_ps(mask, x.add(m * column + q));
                        }
                        for (acc, &row) in acc.iter_mut().zip(&rows) {
                            let d = _mm512_maskz_loadu_ps(mask, row.add(q));
                            for (a, &xv) in acc.iter_mut().zip(&xs) {
                                *a = _mm512_fmadd_ps(d, xv, *a);
                            }
                        }
                    };
                    for v in 0..full {
                        step(&mut acc, v * LANES, u16::MAX);
                    }
                    if tail != 0 {
                        step(&mut acc, full * LANES, tail);
                    }
                    for (j, acc) in acc.iter().enumerate().take(n) {
                        for (m, &a) in acc.iter().enumerate() {
                            _mm512_storeu_ps(dw.add((j * k + tap + m) * LANES), a);
                        }
                    }
                }
            }
        }
    }
    let g = r.image.g;
    let (p, kw) = (g.p(), g.kernel.1);
    let o = r.dy.len() / p;
    for p0 in (0..p).step_by(CHUNK) {
        let p1 = (p0 + CHUNK).min(p);
        for first in (0..o).step_by(GROUP) {
            let n = GROUP.min(o - first);
            for kj0 in (0..kw).step_by(3) {
                // SAFETY: the caller guarantees AVX-512F; `taps` checks the shapes.
                unsafe {
                    match kw - kj0 {
                        1 => taps::<1>(&mut r, (first, n), kj0, (p0, p1)),
                        2 => taps::<2>(&mut r, (first, n), kj0, (p0, p1)),
                        _ => taps::<3>(&mut r, (first, n), kj0, (p0, p1)),
                    }
                }
            }
        }
    }
}
