//! Direct convolution: the definition, one image at a time, in plain loops.
//!
//! `y[oc][oy][ox] = b[oc] + Σ_c Σ_i Σ_j x[c][oy·s + i·d − p][ox·s + j·d − p] · w[oc][c][i][j]`
//! (cross-correlation, as PyTorch's `conv2d`; taps that land in the padding read 0). The
//! two gradients are the same sum read the other way: every tap that carried `x·w` into
//! `y` carries `dy·w` back into `dX` and `dy·x` into `dW`.
//!
//! This is the readable reference the fast algorithms ([`super::im2col`],
//! [`super::winograd`]) are tested against, and it is selectable as
//! `ConvAlgorithm::Direct`. It does no blocking and no vectorising on purpose.

use super::{ConvBackward, ConvForward};
use crate::kernels::{Element, Geometry};
use std::borrow::Cow;

/// Visits every kernel tap of one image that lands inside the input:
/// `f(output pixel, input pixel, tap)` as flat indices into `oc·oh·ow + …` without the
/// channel terms: `(oy·ow + ox, (c·h + iy)·w + ix, (c·kh + i)·kw + j)`, for each channel `c`.
fn for_each_tap(g: &Geometry, mut f: impl FnMut(usize, usize, usize)) {
    let (kh, kw) = g.kernel;
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            for c in 0..g.c {
                for i in 0..kh {
                    let iy = (oy * g.stride.0 + i * g.dilation.0) as isize - g.padding.0 as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    for j in 0..kw {
                        let ix =
                            (ox * g.stride.1 + j * g.dilation.1) as isize - g.padding.1 as isize;
                        if ix < 0 || ix >= g.w as isize {
                            continue;
                        }
                        let input = (c * g.h + iy as usize) * g.w + ix as usize;
                        f(oy * g.ow + ox, input, (c * kh + i) * kw + j);
                    }
                }
            }
        }
    }
}

/// One image's output `y` (`o × oh × ow`, overwritten) from `x` (`c × h × w`), the weights
/// `w` (`o × c × kh × kw`) and an optional bias.
pub fn forward<T: Element>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &Geometry,
    o: usize,
    y: &mut [T],
) {
    let (p, k) = (g.p(), g.k());
    for oc in 0..o {
        let out = &mut y[oc * p..(oc + 1) * p];
        out.fill(bias.map_or(T::zero(), |b| b[oc]));
        let taps = &w[oc * k..(oc + 1) * k];
        for_each_tap(g, |pixel, input, tap| out[pixel] += x[input] * taps[tap]);
    }
}

/// Adds one image's input gradient into `dx` (`c × h × w`) from its output gradient `dy`.
pub fn input_grad<T: Element>(dy: &[T], w: &[T], g: &Geometry, o: usize, dx: &mut [T]) {
    let (p, k) = (g.p(), g.k());
    for oc in 0..o {
        let (grad, taps) = (&dy[oc * p..(oc + 1) * p], &w[oc * k..(oc + 1) * k]);
        for_each_tap(g, |pixel, input, tap| dx[input] += grad[pixel] * taps[tap]);
    }
}

/// Adds one image's weight gradient into `dw` (`o × c × kh × kw`) from its input `x`.
pub fn weight_grad<T: Element>(dy: &[T], x: &[T], g: &Geometry, o: usize, dw: &mut [T]) {
    let (p, k) = (g.p(), g.k());
    for oc in 0..o {
        let (grad, taps) = (&dy[oc * p..(oc + 1) * p], &mut dw[oc * k..(oc + 1) * k]);
        for_each_tap(g, |pixel, input, tap| taps[tap] += grad[pixel] * x[input]);
    }
}

/// The direct algorithm behind the per-image interface: it keeps the weights as they are
/// (borrowed, or a copy of its own for a kernel kept between calls).
pub struct Direct<'a, T: Clone> {
    geometry: Geometry,
    outputs: usize,
    weight: Cow<'a, [T]>,
}

impl<'a, T: Element> Direct<'a, T> {
    /// A convolution of geometry `g` with the `o × c × kh × kw` weights `w` (for the
    /// backward pass, `w` may be empty when no input gradient is wanted).
    pub fn new(g: &Geometry, o: usize, w: impl Into<Cow<'a, [T]>>) -> Self {
        Direct {
            geometry: *g,
            outputs: o,
            weight: w.into(),
        }
    }
}

impl<T: Element> ConvForward<T> for Direct<'_, T> {
    fn workspace(&self) -> usize {
        0
    }

    fn forward(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], _workspace: &mut [T]) {
        let (g, o) = (&self.geometry, self.outputs);
        for (x_i, y_i) in x.chunks_exact(g.chw()).zip(y.chunks_exact_mut(o * g.p())) {
            forward(x_i, &self.weight, bias, g, o, y_i);
        }
    }
}

impl<T: Element> ConvBackward<T> for Direct<'_, T> {
    fn workspace(&self) -> usize {
        0
    }

    fn weight_grad_len(&self) -> usize {
        self.outputs * self.geometry.k()
    }

    fn backward_image(
        &self,
        dy: &[T],
        x: &[T],
        dx: Option<&mut [T]>,
        dw: Option<&mut [T]>,
        _workspace: &mut [T],
    ) {
        let (g, o) = (&self.geometry, self.outputs);
        if let Some(dx) = dx {
            input_grad(dy, &self.weight, g, o, dx);
        }
        if let Some(dw) = dw {
            weight_grad(dy, x, g, o, dw);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(h: usize, w: usize, k: usize, stride: usize, pad: usize) -> Geometry {
        Geometry {
            c: 1,
            h,
            w,
            kernel: (k, k),
            stride: (stride, stride),
            padding: (pad, pad),
            dilation: (1, 1),
            oh: Geometry::out_size(h, k, stride, pad, 1).unwrap(),
            ow: Geometry::out_size(w, k, stride, pad, 1).unwrap(),
        }
    }

    /// Worked by hand: a 3×3 image 1..9, the 2×2 kernel [[1, 0], [0, −1]], padding 1,
    /// stride 2: outputs at the corners of a 2×2 grid over the padded 5×5 plane.
    #[test]
    fn forward_and_gradients_by_hand() {
        let g = geometry(3, 3, 2, 2, 1);
        assert_eq!((g.oh, g.ow), (2, 2));
        let x: Vec<f64> = (1..=9).map(f64::from).collect();
        let w = [1.0, 0.0, 0.0, -1.0];
        let mut y = [f64::NAN; 4];
        forward(&x, &w, Some(&[0.5]), &g, 1, &mut y);
        // Tap (0,0) reads input (2oy − 1, 2ox − 1), tap (1,1) input (2oy, 2ox).
        assert_eq!(y, [0.5 - 1.0, 0.5 - 3.0, 0.5 - 7.0, 0.5 + 5.0 - 9.0]);
        // dX of Σy: every tap weight added where it landed inside the image.
        let mut dx = [0.0; 9];
        input_grad(&[1.0; 4], &w, &g, 1, &mut dx);
        assert_eq!(dx, [-1.0, 0.0, -1.0, 0.0, 1.0, 0.0, -1.0, 0.0, -1.0]);
        // dW of Σy: per tap, the sum of the inputs it saw (a zero weight still has one).
        let mut dw = [0.0; 4];
        weight_grad(&[1.0; 4], &x, &g, 1, &mut dw);
        assert_eq!(dw, [5.0, 4.0 + 6.0, 2.0 + 8.0, 1.0 + 3.0 + 7.0 + 9.0]);
    }
}
