//! [`col2im`](super::im2col::col2im) for unit-stride, undilated layers in AVX-512 vectors:
//! the fast path of the implicit GEMM's and im2col's input gradient, whose plain loops are
//! the reference it is tested against (bitwise).
//!
//! The plain loops add one column row (one tap of one channel) at a time onto the rows of
//! `dX` it touches: LeNet's conv2 (8-pixel output rows, 500 taps) makes 4,000 slice adds of
//! 8 values per image, each loading and storing its `dX` row, and they took 9% of the
//! train step. Here each row of `dX` is loaded once into one register per 16 columns,
//! every tap that lands on it is added from the columns with a masked load (lanes that fall
//! outside the output row or the input row read nothing), and the row is stored once. For
//! every element the taps come in the plain loops' order, `(ki, kj)` increasing, so the
//! sums round the same way.

use crate::kernels::Geometry;
use std::arch::x86_64::*;

/// f32 lanes per AVX-512 register.
const LANES: usize = 16;

/// Channels summed side by side.
const CHAINS: usize = 8;

/// Lanes `lo..hi` of a 16-lane mask (none when `hi ≤ lo`).
fn lanes(lo: isize, hi: isize) -> u16 {
    let (lo, hi) = (lo.clamp(0, 16) as u32, hi.clamp(0, 16) as u32);
    if hi <= lo {
        return 0;
    }
    (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
}

/// Whether [`col2im_avx512`] computes `g`: stride 1 and no dilation.
pub(super) fn supports(g: &Geometry) -> bool {
    g.stride == (1, 1) && g.dilation == (1, 1)
}

/// `dx += col2im(cols)` for output rows `r0..r1` of a layer of geometry `g`, as
/// [`col2im`](super::im2col::col2im).
///
/// # Safety
/// The CPU must have AVX-512F.
///
/// # Panics
/// If `g` has a stride or a dilation ([`supports`]), or `cols` (`k × (r1 − r0)·ow`) or
/// `dx` (`c × h × w`) is too short.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn col2im_avx512(
    cols: &[f32],
    g: &Geometry,
    (r0, r1): (usize, usize),
    dx: &mut [f32],
) {
    let p = (r1 - r0) * g.ow;
    assert!(
        supports(g)
            && r0 <= r1
            && r1 <= g.oh
            && cols.len() >= g.k() * p
            && dx.len() >= g.c * g.h * g.w,
        "col2im: operands too short for the layer"
    );
    let mut c = 0;
    while g.c - c >= CHAINS {
        // SAFETY: AVX-512F (this function's contract); channels c..c + CHAINS exist.
        unsafe { channels::<CHAINS>(cols, g, (r0, r1), dx, c) };
        c += CHAINS;
    }
    for c in c..g.c {
        // SAFETY: as above, for channel c.
        unsafe { channels::<1>(cols, g, (r0, r1), dx, c) };
    }
}

/// Channels `c0..c0 + N` of [`col2im_avx512`], side by side: `N` independent chains of
/// adds, whose latencies overlap (one channel's 25 dependent adds per row of LeNet's conv2
/// left the loop waiting on each add), under one computation of the masks.
///
/// # Safety
/// The CPU must have AVX-512F; the shapes are checked by the caller, `c0 + N ≤ c`.
#[target_feature(enable = "avx512f")]
unsafe fn channels<const N: usize>(
    cols: &[f32],
    g: &Geometry,
    (r0, r1): (usize, usize),
    dx: &mut [f32],
    c0: usize,
) {
    let (kh, kw) = g.kernel;
    let p = (r1 - r0) * g.ow;
    let (ph, pw) = (g.padding.0 as isize, g.padding.1 as isize);
    let (ow, rows) = (g.ow as isize, r0 as isize..r1 as isize);
    let (plane, channel_cols) = (g.h * g.w, kh * kw * p);
    assert!(
        (c0 + N) * plane <= dx.len() && (c0 + N) * channel_cols <= cols.len(),
        "col2im: channels past the operands"
    );
    let dx = dx.as_mut_ptr();
    for ih in 0..g.h {
        for w0 in (0..g.w).step_by(LANES) {
            let row_mask = lanes(0, (g.w - w0) as isize);
            let dst: [*mut f32; N] =
                std::array::from_fn(|j| dx.wrapping_add((c0 + j) * plane + ih * g.w + w0));
            // SAFETY: AVX-512F (this function's contract); the row mask keeps the loads
            // and the stores inside dX's row `ih` of channels c0..c0 + N (checked above).
            let mut acc: [__m512; N] =
                std::array::from_fn(|j| unsafe { _mm512_maskz_loadu_ps(row_mask, dst[j]) });
            for ki in 0..kh {
                // Output row oh reads input row oh + ki − ph.
                let oh = ih as isize + ph - ki as isize;
                if !rows.contains(&oh) {
                    continue;
                }
                for kj in 0..kw {
                    // Lane l is input column w0 + l, read by output column w0 + l + pw − kj.
                    let first = w0 as isize + pw - kj as isize;
                    let mask = row_mask & lanes(-first, ow - first);
                    if mask == 0 {
                        continue;
                    }
                    let at = (ki * kw + kj) * p + (oh - r0 as isize) as usize * g.ow;
                    let src = cols.as_ptr().wrapping_add(c0 * channel_cols + at);
                    for (j, acc) in acc.iter_mut().enumerate() {
                        let src = src.wrapping_add(j * channel_cols).wrapping_offset(first);
                        // SAFETY: AVX-512F; the mask selects output columns 0..ow of
                        // output row oh in the tap's row of channel c0 + j in `cols`
                        // (checked long enough above); masked-out lanes are not read.
                        *acc = unsafe { _mm512_add_ps(*acc, _mm512_maskz_loadu_ps(mask, src)) };
                    }
                }
            }
            for (j, &acc) in acc.iter().enumerate() {
                // SAFETY: as the loads of dX above.
                unsafe { _mm512_mask_storeu_ps(dst[j], row_mask, acc) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::im2col::col2im;

    /// The AVX-512 col2im equals the plain loops bit for bit, onto a `dX` that already
    /// holds values: LeNet's conv2, padding (also padding ≥ kernel − 1), rows wider than 16
    /// and not a multiple of it, a kernel wider than the input, tiles of output rows, and
    /// a 1×1 layer.
    #[test]
    fn avx512_col2im_equals_the_plain_loops() {
        if !crate::kernels::microkernel::has_avx512() {
            eprintln!("no AVX-512 on this CPU: the plain loops run everywhere");
            return;
        }
        let cases = [
            // (c, (h, w), (kh, kw), (ph, pw), rows)
            (20, (12, 12), (5, 5), (0, 0), None),
            (3, (9, 37), (3, 3), (1, 1), None),
            (2, (6, 17), (5, 3), (4, 2), None),
            (2, (4, 5), (3, 7), (1, 3), None),
            (3, (10, 33), (3, 3), (1, 1), Some((2, 7))),
            (4, (5, 18), (1, 1), (0, 0), Some((1, 4))),
        ];
        for (c, (h, w), kernel, padding, rows) in cases {
            let g = Geometry::new(c, (h, w), kernel, (1, 1), padding, (1, 1)).unwrap();
            let (r0, r1) = rows.unwrap_or((0, g.oh));
            let p = (r1 - r0) * g.ow;
            let cols: Vec<f32> = (0..g.k() * p)
                .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 97.0)
                .collect();
            let start: Vec<f32> = (0..c * h * w).map(|i| (i % 13) as f32 * 0.37).collect();
            let mut want = start.clone();
            col2im(&cols, &g, (r0, r1), &mut want);
            let mut got = start;
            // SAFETY: AVX-512F is checked above.
            unsafe { col2im_avx512(&cols, &g, (r0, r1), &mut got) };
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{g:?}, rows {r0}..{r1}"
            );
        }
    }
}
