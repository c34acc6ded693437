//! Which output pixels each depthwise tap reaches inside the image, and which input pixel
//! it reads: the index arithmetic the depthwise paths loop over (`depthwise.rs`).

use crate::kernels::Geometry;

/// The outputs `j` of one axis whose input `j·stride + tap − pad` lies in `0..size`,
/// as a range (`tap` already multiplied by the dilation).
pub(super) fn valid(
    out: usize,
    size: usize,
    stride: usize,
    tap: usize,
    pad: usize,
) -> std::ops::Range<usize> {
    // j·stride + tap ≥ pad  ⇔  j ≥ ⌈(pad − tap)/stride⌉.
    let lo = pad.saturating_sub(tap).div_ceil(stride);
    // j·stride + tap − pad ≤ size − 1  ⇔  j ≤ ⌊(size − 1 + pad − tap)/stride⌋.
    let hi = match (size + pad).checked_sub(tap + 1) {
        Some(last) => (last / stride + 1).min(out),
        None => 0,
    };
    lo.min(hi)..hi
}

/// For every tap `(ki, kj)` and output row `i` whose input row is inside the image:
/// `f(tap index, output row, input row, valid output columns, first input column)`.
pub(super) fn for_each_row(
    g: &Geometry,
    mut f: impl FnMut(usize, usize, usize, std::ops::Range<usize>, usize),
) {
    let (kh, kw) = g.kernel;
    let ((sh, sw), (ph, pw), (dh, dw)) = (g.stride, g.padding, g.dilation);
    for ki in 0..kh {
        let rows = valid(g.oh, g.h, sh, ki * dh, ph);
        for kj in 0..kw {
            let cols = valid(g.ow, g.w, sw, kj * dw, pw);
            if cols.is_empty() {
                continue;
            }
            for i in rows.clone() {
                let ih = i * sh + ki * dh - ph;
                let first = cols.start * sw + kj * dw - pw;
                f(ki * kw + kj, i, ih, cols.clone(), first);
            }
        }
    }
}

/// For every output pixel and every tap that reads inside the image, in the order output
/// row, column, tap row, tap column: `f(output pixel, tap index, input pixel)` (pixels as
/// `row · width + column`). The channels-last paths' loop.
pub(super) fn for_each_pixel_tap(g: &Geometry, mut f: impl FnMut(usize, usize, usize)) {
    let ((kh, kw), (sh, sw), (dh, dw)) = (g.kernel, g.stride, g.dilation);
    let (ph, pw) = g.padding;
    for i in 0..g.oh {
        for j in 0..g.ow {
            for a in 0..kh {
                let Some(ih) = (i * sh + a * dh).checked_sub(ph).filter(|&r| r < g.h) else {
                    continue;
                };
                for b in 0..kw {
                    let Some(iw) = (j * sw + b * dw).checked_sub(pw).filter(|&q| q < g.w) else {
                        continue;
                    };
                    f(i * g.ow + j, a * kw + b, ih * g.w + iw);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The valid output range of one axis, against checking every output by hand.
    #[test]
    fn valid_ranges_are_exactly_the_outputs_inside_the_image() {
        for size in 1..9 {
            for stride in 1..4 {
                for pad in 0..3 {
                    for tap in 0..5 {
                        let span = tap + 1;
                        if size + 2 * pad < span {
                            continue;
                        }
                        let out = (size + 2 * pad - span) / stride + 1;
                        let want: Vec<usize> = (0..out)
                            .filter(|&j| {
                                let at = (j * stride + tap) as isize - pad as isize;
                                at >= 0 && (at as usize) < size
                            })
                            .collect();
                        let got: Vec<usize> = valid(out, size, stride, tap, pad).collect();
                        assert_eq!(got, want, "size {size} stride {stride} pad {pad} tap {tap}");
                    }
                }
            }
        }
    }
}
