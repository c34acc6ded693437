//! Depthwise convolution (`groups = c_in = c_out`: every channel its own `kh × kw`
//! filter), MobileNet's layer. One GEMM per channel would multiply a `1 × kh·kw` row by a
//! `kh·kw × pixels` column matrix: all packing, no reuse. This kernel slides each filter
//! tap over the plane instead: for tap `(ki, kj)` and output row `i`, the valid outputs
//! `j` read one input row at `j·s + kj·d − p`, so with stride 1 the inner loop is a
//! contiguous `y += w·x` that the compiler vectorises. The reference is the grouped direct
//! convolution ([`super::grouped`] over [`super::direct`]).

use super::{ConvBackward, ConvForward};
use crate::kernels::{Element, Geometry};

/// The outputs `j` of one axis whose input `j·stride + tap − pad` lies in `0..size`,
/// as a range (`tap` already multiplied by the dilation).
fn valid(out: usize, size: usize, stride: usize, tap: usize, pad: usize) -> std::ops::Range<usize> {
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
fn for_each_row(
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

/// The depthwise kernel for geometry `g` (`g.c` channels in, the same number out).
pub struct Depthwise<'a, T> {
    geometry: Geometry,
    weight: &'a [T],
}

impl<'a, T: Element> Depthwise<'a, T> {
    /// A depthwise convolution of geometry `g` with the `c × 1 × kh × kw` weights `w`
    /// (empty for a backward pass that wants no input gradient).
    pub fn new(g: &Geometry, w: &'a [T]) -> Self {
        Depthwise {
            geometry: *g,
            weight: w,
        }
    }
}

impl<T: Element> ConvForward<T> for Depthwise<'_, T> {
    fn workspace(&self) -> usize {
        0
    }

    fn forward(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], _workspace: &mut [T]) {
        let g = &self.geometry;
        let (plane, out, taps) = (g.h * g.w, g.p(), g.kernel.0 * g.kernel.1);
        let sw = g.stride.1;
        for (ch, (x_c, y_c)) in x
            .chunks_exact(plane)
            .zip(y.chunks_exact_mut(out))
            .enumerate()
            .map(|(i, v)| (i % g.c, v))
        {
            if let Some(b) = bias {
                y_c.fill(b[ch]);
            }
            let w_c = &self.weight[ch * taps..(ch + 1) * taps];
            for_each_row(g, |tap, i, ih, cols, first| {
                let wv = w_c[tap];
                let x_row = &x_c[ih * g.w..(ih + 1) * g.w];
                let y_row = &mut y_c[i * g.ow + cols.start..i * g.ow + cols.end];
                if sw == 1 {
                    let len = y_row.len();
                    for (y, &x) in y_row.iter_mut().zip(&x_row[first..first + len]) {
                        *y += wv * x;
                    }
                } else {
                    for (n, y) in y_row.iter_mut().enumerate() {
                        *y += wv * x_row[first + n * sw];
                    }
                }
            });
        }
    }
}

impl<T: Element> ConvBackward<T> for Depthwise<'_, T> {
    fn workspace(&self) -> usize {
        0
    }

    fn weight_grad_len(&self) -> usize {
        self.geometry.c * self.geometry.kernel.0 * self.geometry.kernel.1
    }

    fn backward_image(
        &self,
        dy: &[T],
        x: &[T],
        mut dx: Option<&mut [T]>,
        mut dw: Option<&mut [T]>,
        _workspace: &mut [T],
    ) {
        let g = &self.geometry;
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
