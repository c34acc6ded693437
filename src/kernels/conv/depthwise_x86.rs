//! The channels-last depthwise forward for f32 in explicit AVX-512 vectors, and its AVX2
//! twin for CPUs without AVX-512: the fast paths of `Depthwise::forward_channels_last`,
//! whose plain loops are the reference they are tested against (bitwise).
//!
//! The plain loops add one tap to a whole pixel's channels at a time (`y += w·x` over the
//! channels: the output row is read and written back for every tap). Here the sums of a
//! pixel's taps stay in registers: for up to four registers of 16 channels at once (four
//! independent chains of adds, whose latencies overlap), the bias is loaded, each tap's
//! product added, and the result stored once. Multiply and add stay two instructions (no
//! fused multiply-add), in the plain loops' order, so every output rounds the same way.

use crate::kernels::Geometry;
use std::arch::x86_64::*;

/// f32 lanes per AVX-512 register.
const LANES: usize = 16;

/// Registers of channel sums carried through one pixel's taps.
const BLOCKS: usize = 4;

/// The taps `t < k` of one axis that read inside `0..size` for output `out` (input
/// `out·stride + t·dilation − pad`): a contiguous range.
fn valid_taps(
    out: usize,
    (stride, dilation, pad): (usize, usize, usize),
    k: usize,
    size: usize,
) -> std::ops::Range<usize> {
    let inside = |t: usize| {
        (out * stride + t * dilation)
            .checked_sub(pad)
            .is_some_and(|v| v < size)
    };
    let first = (0..k).find(|&t| inside(t)).unwrap_or(k);
    let end = (first..k).find(|&t| !inside(t)).unwrap_or(k);
    first..end
}

/// `yt[pixel][ch] = bias[ch] + Σ_taps w_by_tap[tap][ch] · xt[input pixel][ch]` for every
/// output pixel of geometry `g` (`xt`: `h·w × c`, `w_by_tap`: `kh·kw × c`, `yt`:
/// `oh·ow × c`), the taps summed row by row in the order of the plain loops.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn forward_channels_last(
    g: &Geometry,
    xt: &[f32],
    w_by_tap: &[f32],
    bias: Option<&[f32]>,
    yt: &mut [f32],
) {
    let c = g.c;
    let lengths = (xt, w_by_tap, bias, yt.len());
    for_each_pixel(g, lengths, |pixel| {
        let mut start = 0;
        while c - start >= BLOCKS * LANES {
            // SAFETY: AVX-512F (this function's contract); channels start..start + 64
            // are inside every row of c (checked by the loop condition).
            unsafe { pixel.sum::<BLOCKS>(xt, w_by_tap, bias, yt, start, [u16::MAX; BLOCKS]) };
            start += BLOCKS * LANES;
        }
        // The last 1–4 registers, the last one masked to the channels left.
        let left = c - start;
        let masks = |n: usize| -> [u16; BLOCKS] {
            std::array::from_fn(|b| {
                let lanes = left.saturating_sub(b * LANES).min(LANES);
                if b < n {
                    ((1u32 << lanes) - 1) as u16
                } else {
                    0
                }
            })
        };
        // SAFETY: as above; the masks cover channels start..c only, and masked-off lanes
        // are neither read nor written.
        unsafe {
            match left.div_ceil(LANES) {
                0 => {}
                1 => pixel.sum::<1>(xt, w_by_tap, bias, yt, start, [masks(1)[0]]),
                2 => pixel.sum::<2>(
                    xt,
                    w_by_tap,
                    bias,
                    yt,
                    start,
                    masks(2)[..2].try_into().unwrap(),
                ),
                3 => pixel.sum::<3>(
                    xt,
                    w_by_tap,
                    bias,
                    yt,
                    start,
                    masks(3)[..3].try_into().unwrap(),
                ),
                _ => pixel.sum::<4>(xt, w_by_tap, bias, yt, start, masks(4)),
            }
        }
    });
}

/// Checks the operands' lengths (the bounds every load and store of the kernels relies
/// on), then calls `f` with every output pixel of `g` and the taps that read inside the
/// image, row by row. Plain loops: an iterator chain here made the AVX2 kernel 8–13%
/// slower.
///
/// # Panics
/// If an operand is too short for the layer.
#[inline(always)]
fn for_each_pixel(
    g: &Geometry,
    (xt, w_by_tap, bias, yt): (&[f32], &[f32], Option<&[f32]>, usize),
    mut f: impl FnMut(Pixel<'_>),
) {
    let c = g.c;
    assert!(xt.len() >= g.h * g.w * c, "input too short");
    assert!(
        w_by_tap.len() >= g.kernel.0 * g.kernel.1 * c,
        "weights too short"
    );
    assert!(yt >= g.oh * g.ow * c, "output too short");
    assert!(bias.is_none_or(|b| b.len() >= c), "bias too short");
    let axis_h = (g.stride.0, g.dilation.0, g.padding.0);
    let axis_w = (g.stride.1, g.dilation.1, g.padding.1);
    for i in 0..g.oh {
        let rows = valid_taps(i, axis_h, g.kernel.0, g.h);
        for j in 0..g.ow {
            f(Pixel {
                g,
                rows: rows.clone(),
                cols: valid_taps(j, axis_w, g.kernel.1, g.w),
                at: (i, j),
            });
        }
    }
}

/// One output pixel: where it is and which of its taps read inside the image.
struct Pixel<'g> {
    g: &'g Geometry,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    at: (usize, usize),
}

impl Pixel<'_> {
    /// The pixel's outputs for channels `start .. start + 16·N` (lanes of register `b`
    /// limited by `masks[b]`).
    ///
    /// # Safety
    /// The CPU must have AVX-512F; the slices hold the sizes [`forward_channels_last`]
    /// asserts, and every lane the masks enable is a channel below `g.c`.
    #[target_feature(enable = "avx512f")]
    unsafe fn sum<const N: usize>(
        &self,
        xt: &[f32],
        w_by_tap: &[f32],
        bias: Option<&[f32]>,
        yt: &mut [f32],
        start: usize,
        masks: [u16; N],
    ) {
        let g = self.g;
        let c = g.c;
        let (i, j) = self.at;
        // SAFETY: AVX-512F (this function's contract). Every load and store is at offset
        // `start + 16·b` of a row of `c` channels that exists (the output pixel `(i, j)`,
        // a tap of `rows × cols`, whose input pixel is inside the image by construction, or
        // the bias), and touches only the lanes its mask enables, channels below `c`
        // (the caller's contract); masked-off lanes are not accessed.
        unsafe {
            let mut acc: [__m512; N] = std::array::from_fn(|b| match bias {
                Some(bias) => _mm512_maskz_loadu_ps(masks[b], bias.as_ptr().add(start + b * LANES)),
                None => _mm512_setzero_ps(),
            });
            for a in self.rows.clone() {
                let ih = i * g.stride.0 + a * g.dilation.0 - g.padding.0;
                for bb in self.cols.clone() {
                    let iw = j * g.stride.1 + bb * g.dilation.1 - g.padding.1;
                    let x = xt.as_ptr().add((ih * g.w + iw) * c + start);
                    let w = w_by_tap.as_ptr().add((a * g.kernel.1 + bb) * c + start);
                    for (b, acc) in acc.iter_mut().enumerate() {
                        let xv = _mm512_maskz_loadu_ps(masks[b], x.add(b * LANES));
                        let wv = _mm512_maskz_loadu_ps(masks[b], w.add(b * LANES));
                        *acc = _mm512_add_ps(*acc, _mm512_mul_ps(wv, xv));
                    }
                }
            }
            let y = yt.as_mut_ptr().add((i * g.ow + j) * c + start);
            for (b, acc) in acc.iter().enumerate() {
                _mm512_mask_storeu_ps(y.add(b * LANES), masks[b], *acc);
            }
        }
    }
}

/// f32 lanes per AVX2 register.
const LANES_AVX2: usize = 8;

/// [`forward_channels_last`] on AVX2 (CPUs without AVX-512): registers of 8 channels,
/// the same sums in the same order (bitwise the plain loops' too). AVX2's masked store is
/// slow on AMD CPUs, so only a last register holding fewer than 8 channels is masked.
///
/// # Safety
/// The CPU must have AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn forward_channels_last_avx2(
    g: &Geometry,
    xt: &[f32],
    w_by_tap: &[f32],
    bias: Option<&[f32]>,
    yt: &mut [f32],
) {
    let c = g.c;
    let lengths = (xt, w_by_tap, bias, yt.len());
    for_each_pixel(g, lengths, |pixel| {
        let mut start = 0;
        let full = LANES_AVX2;
        while c - start >= BLOCKS * LANES_AVX2 {
            // SAFETY: AVX2 (this function's contract); channels start..start + 32 are
            // inside every row of c (checked by the loop condition).
            unsafe { pixel.sum_avx2::<BLOCKS>(xt, w_by_tap, bias, yt, start, full) };
            start += BLOCKS * LANES_AVX2;
        }
        // The last 1–4 registers, the last one holding the 1–8 channels left.
        let left = c - start;
        let regs = left.div_ceil(LANES_AVX2);
        let last = left + LANES_AVX2 - regs.max(1) * LANES_AVX2;
        // SAFETY: as above; the registers cover channels start..c only.
        unsafe {
            match regs {
                0 => {}
                1 => pixel.sum_avx2::<1>(xt, w_by_tap, bias, yt, start, last),
                2 => pixel.sum_avx2::<2>(xt, w_by_tap, bias, yt, start, last),
                3 => pixel.sum_avx2::<3>(xt, w_by_tap, bias, yt, start, last),
                _ => pixel.sum_avx2::<4>(xt, w_by_tap, bias, yt, start, last),
            }
        }
    });
}

/// The 8 floats at `p`, or only the lanes `mask` enables (the others read as zero and
/// not accessed) when `masked`.
///
/// # Safety
/// The CPU must have AVX2, and the enabled lanes must be readable.
#[inline(always)]
unsafe fn load8(p: *const f32, masked: bool, mask: __m256i) -> __m256 {
    // SAFETY: the caller's contract.
    unsafe {
        if masked {
            _mm256_maskload_ps(p, mask)
        } else {
            _mm256_loadu_ps(p)
        }
    }
}

impl Pixel<'_> {
    /// The pixel's outputs for channels `start .. start + 8·(N − 1) + last` (`1 ≤ last ≤
    /// 8` channels in register `N − 1`).
    ///
    /// # Safety
    /// The CPU must have AVX2; the slices hold the sizes [`forward_channels_last_avx2`]
    /// asserts, and channel `start + 8·(N − 1) + last − 1` is below `g.c`.
    #[target_feature(enable = "avx2")]
    unsafe fn sum_avx2<const N: usize>(
        &self,
        xt: &[f32],
        w_by_tap: &[f32],
        bias: Option<&[f32]>,
        yt: &mut [f32],
        start: usize,
        last: usize,
    ) {
        let g = self.g;
        let c = g.c;
        let (i, j) = self.at;
        let lanes: [i32; LANES_AVX2] = std::array::from_fn(|l| -i32::from(l < last));
        // SAFETY: AVX2 (this function's contract). Every load and store is at offset
        // `start + 8·b` of a row of `c` channels that exists (the output pixel, a tap
        // inside the image by construction, or the bias) and touches channels below `c`
        // only: whole registers before the last, the last one's enabled lanes (masked-off
        // lanes are not accessed).
        unsafe {
            let mask = _mm256_loadu_si256(lanes.as_ptr().cast());
            let masked = |b: usize| b + 1 == N && last < LANES_AVX2;
            let mut acc: [__m256; N] = std::array::from_fn(|b| match bias {
                Some(bias) => load8(bias.as_ptr().add(start + b * LANES_AVX2), masked(b), mask),
                None => _mm256_setzero_ps(),
            });
            for a in self.rows.clone() {
                let ih = i * g.stride.0 + a * g.dilation.0 - g.padding.0;
                for bb in self.cols.clone() {
                    let iw = j * g.stride.1 + bb * g.dilation.1 - g.padding.1;
                    let x = xt.as_ptr().add((ih * g.w + iw) * c + start);
                    let w = w_by_tap.as_ptr().add((a * g.kernel.1 + bb) * c + start);
                    for (b, acc) in acc.iter_mut().enumerate() {
                        let xv = load8(x.add(b * LANES_AVX2), masked(b), mask);
                        let wv = load8(w.add(b * LANES_AVX2), masked(b), mask);
                        *acc = _mm256_add_ps(*acc, _mm256_mul_ps(wv, xv));
                    }
                }
            }
            let y = yt.as_mut_ptr().add((i * g.ow + j) * c + start);
            for (b, acc) in acc.iter().enumerate() {
                if masked(b) {
                    _mm256_maskstore_ps(y.add(b * LANES_AVX2), mask, *acc);
                } else {
                    _mm256_storeu_ps(y.add(b * LANES_AVX2), *acc);
                }
            }
        }
    }
}
