//! Pooling windows over one plane (`h × w`): max with the position of each maximum, mean,
//! and their adjoints. The general window scan is the reference; non-overlapping windows
//! without padding take a tiled path (and 2×2 windows a branch-free one) tested against it.

use super::{Element, Geometry};

/// The input rows (or columns) `lo..hi` covered by window `o` along one axis.
fn window(o: usize, g_stride: usize, pad: usize, kernel: usize, len: usize) -> (usize, usize) {
    let start = (o * g_stride) as isize - pad as isize;
    let lo = start.max(0) as usize;
    let hi = ((start + kernel as isize) as usize).min(len);
    (lo, hi)
}

/// Calls `f(output index, rows y0..y1, columns x0..x1)` for every pooling window of a plane.
pub fn for_each_window(g: &Geometry, mut f: impl FnMut(usize, (usize, usize), (usize, usize))) {
    for oy in 0..g.oh {
        let rows = window(oy, g.stride.0, g.padding.0, g.kernel.0, g.h);
        for ox in 0..g.ow {
            let cols = window(ox, g.stride.1, g.padding.1, g.kernel.1, g.w);
            f(oy * g.ow + ox, rows, cols);
        }
    }
}

/// Max pooling of one plane with `kernel == stride` and no padding: output `(oy, ox)` is
/// the first maximum of rows `k·oy..k·oy+k`, columns `k·ox..k·ox+k` (NaN wins), and `pos`
/// its index in the plane.
fn tiled_max<T: Element>(xp: &[T], g: &Geometry, out: &mut [T], pos: &mut [u32]) {
    if g.kernel == (2, 2) {
        return max_2x2(xp, g, out, pos);
    }
    let (k, w) = (g.kernel.0, g.w);
    let kw = g.kernel.1;
    for oy in 0..g.oh {
        let out_row = &mut out[oy * g.ow..(oy + 1) * g.ow];
        let pos_row = &mut pos[oy * g.ow..(oy + 1) * g.ow];
        // Start every window at its top-left element, then scan the window's rows.
        for (ox, (o, p)) in out_row.iter_mut().zip(pos_row.iter_mut()).enumerate() {
            let at = oy * k * w + ox * kw;
            *o = xp[at];
            *p = at as u32;
        }
        for dy in 0..k {
            let row = &xp[(oy * k + dy) * w..(oy * k + dy) * w + g.ow * kw];
            for (ox, (o, p)) in out_row.iter_mut().zip(pos_row.iter_mut()).enumerate() {
                for (dx, &v) in row[ox * kw..ox * kw + kw].iter().enumerate() {
                    // Strict `>` keeps the first maximum in row-major window order.
                    if v > *o || (v.is_nan() && !o.is_nan()) {
                        *o = v;
                        *p = ((oy * k + dy) * w + ox * kw + dx) as u32;
                    }
                }
            }
        }
    }
}

/// [`tiled_max`] for 2×2 windows: each output compares its two row pairs and then the
/// two winners, with no loop-carried state, so the loop over a row of outputs has no
/// data-dependent branch (on activations such branches mispredict about half the time).
/// A window holding a NaN takes the general scan, which keeps "the first NaN wins".
fn max_2x2<T: Element>(xp: &[T], g: &Geometry, out: &mut [T], pos: &mut [u32]) {
    let w = g.w;
    for oy in 0..g.oh {
        let top = &xp[2 * oy * w..2 * oy * w + 2 * g.ow];
        let bottom = &xp[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * g.ow];
        let out_row = &mut out[oy * g.ow..(oy + 1) * g.ow];
        let pos_row = &mut pos[oy * g.ow..(oy + 1) * g.ow];
        for (ox, ((o, p), (t, b))) in out_row
            .iter_mut()
            .zip(pos_row.iter_mut())
            .zip(top.chunks_exact(2).zip(bottom.chunks_exact(2)))
            .enumerate()
        {
            let (a, bb, c, d) = (t[0], t[1], b[0], b[1]);
            // Strict `>` keeps the first maximum in row-major order a, b, c, d.
            let right_top = bb > a;
            let top_max = if right_top { bb } else { a };
            let right_bottom = d > c;
            let bottom_max = if right_bottom { d } else { c };
            let lower = bottom_max > top_max;
            *o = if lower { bottom_max } else { top_max };
            let col = if lower {
                usize::from(right_bottom)
            } else {
                usize::from(right_top)
            };
            *p = ((2 * oy + usize::from(lower)) * w + 2 * ox + col) as u32;
        }
        // NaN: `>` never selects it; redo such windows with the scan that lets it win
        // (only on the rare row pair that holds one: the check vectorises, the scan not).
        if !holds_nan(top) && !holds_nan(bottom) {
            continue;
        }
        for (ox, (o, p)) in out_row.iter_mut().zip(pos_row.iter_mut()).enumerate() {
            let window = [
                top[2 * ox],
                top[2 * ox + 1],
                bottom[2 * ox],
                bottom[2 * ox + 1],
            ];
            if let Some(i) = window.iter().position(|v| v.is_nan()) {
                *o = window[i];
                *p = ((2 * oy + i / 2) * w + 2 * ox + i % 2) as u32;
            }
        }
    }
}

/// Whether any element of `v` is NaN (an or over the whole slice, which vectorises where
/// a short-circuiting search does not).
#[inline]
fn holds_nan<T: Element>(v: &[T]) -> bool {
    v.iter().fold(false, |any, x| any | x.is_nan())
}

/// Max pooling of one plane, values only (no position of the maximum: inference, where
/// no gradient will need it): bitwise the values of [`max_pool_plane`]. 2×2 windows with
/// stride 2 and no padding take a branch-free path; other windows run [`max_pool_plane`]
/// with a scratch buffer for the positions.
pub fn max_pool_values<T: Element>(xp: &[T], g: &Geometry, out: &mut [T]) {
    if g.kernel != (2, 2) || g.stride != (2, 2) || g.padding != (0, 0) {
        let mut pos = vec![0u32; out.len()];
        return max_pool_plane(xp, g, out, &mut pos);
    }
    let w = g.w;
    for oy in 0..g.oh {
        let top = &xp[2 * oy * w..2 * oy * w + 2 * g.ow];
        let bottom = &xp[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * g.ow];
        let out_row = &mut out[oy * g.ow..(oy + 1) * g.ow];
        for (o, (t, b)) in out_row
            .iter_mut()
            .zip(top.chunks_exact(2).zip(bottom.chunks_exact(2)))
        {
            // The selections of `max_2x2`, in the same order.
            let top_max = if t[1] > t[0] { t[1] } else { t[0] };
            let bottom_max = if b[1] > b[0] { b[1] } else { b[0] };
            *o = if bottom_max > top_max {
                bottom_max
            } else {
                top_max
            };
        }
        if !holds_nan(top) && !holds_nan(bottom) {
            continue;
        }
        for (ox, o) in out_row.iter_mut().enumerate() {
            let window = [
                top[2 * ox],
                top[2 * ox + 1],
                bottom[2 * ox],
                bottom[2 * ox + 1],
            ];
            if let Some(&first_nan) = window.iter().find(|v| v.is_nan()) {
                *o = first_nan;
            }
        }
    }
}

/// Max pooling of one plane by the general scan: every window's first maximum in
/// row-major order (NaN wins and stays) and its index in the plane. The reference.
pub fn max_pool_reference<T: Element>(xp: &[T], g: &Geometry, out: &mut [T], pos: &mut [u32]) {
    for_each_window(g, |o, (y0, y1), (x0, x1)| {
        let mut best = y0 * g.w + x0;
        let mut best_value = xp[best];
        for iy in y0..y1 {
            let start = iy * g.w + x0;
            for (j, &v) in xp[start..iy * g.w + x1].iter().enumerate() {
                // Strict `>` keeps the first maximum; NaN wins and stays.
                if v > best_value || (v.is_nan() && !best_value.is_nan()) {
                    best_value = v;
                    best = start + j;
                }
            }
        }
        out[o] = best_value;
        pos[o] = best as u32;
    });
}

/// Max pooling of one plane (`out`, `pos`: `oh × ow`), the same as
/// [`max_pool_reference`]: non-overlapping windows without padding (the usual 2×2,
/// stride 2) read whole window rows as slices, with no per-window range arithmetic.
pub fn max_pool_plane<T: Element>(xp: &[T], g: &Geometry, out: &mut [T], pos: &mut [u32]) {
    if g.padding == (0, 0) && g.stride == g.kernel {
        tiled_max(xp, g, out, pos);
    } else {
        max_pool_reference(xp, g, out, pos);
    }
}

/// Adds each output's gradient `dy` to the input position `pos` its maximum came from.
pub fn max_pool_plane_backward<T: Element>(pos: &[u32], dy: &[T], dxp: &mut [T]) {
    for (&at, &g) in pos.iter().zip(dy) {
        dxp[at as usize] += g;
    }
}

/// Average pooling of one plane; padded positions count as zeros (PyTorch's default).
/// Same as [`avg_pool_reference`]; 1×1 windows without padding (the residual networks'
/// option-A shortcut, `x[:, :, ::2, ::2]`) are read straight from their pixels, where
/// the general scan cost about 4.5 ns per output (2.6% of a resnet20 inference).
pub fn avg_pool_plane<T: Element>(xp: &[T], g: &Geometry, out: &mut [T]) {
    if g.kernel == (1, 1) && g.padding == (0, 0) {
        // One term: the reference's sum (from −0.0, as `Iterator::sum` starts) is the
        // pixel itself, and the scale is 1.
        for (oy, row) in out.chunks_exact_mut(g.ow).take(g.oh).enumerate() {
            let src = &xp[oy * g.stride.0 * g.w..];
            for (ox, o) in row.iter_mut().enumerate() {
                *o = src[ox * g.stride.1];
            }
        }
        return;
    }
    avg_pool_reference(xp, g, out)
}

/// Average pooling of one plane by the general window scan: every window's sum in
/// row-major order, times `1 / (kh·kw)`. The reference.
pub fn avg_pool_reference<T: Element>(xp: &[T], g: &Geometry, out: &mut [T]) {
    let scale = T::from_f64(1.0 / (g.kernel.0 * g.kernel.1) as f64);
    for_each_window(g, |o, (y0, y1), (x0, x1)| {
        let s: T = (y0..y1)
            .flat_map(|iy| xp[iy * g.w + x0..iy * g.w + x1].iter().copied())
            .sum();
        out[o] = s * scale;
    });
}

/// Adds each output's gradient, spread evenly over its window, into the plane `dxp`
/// (1×1 windows without padding: each output's gradient to its one pixel; the same as
/// [`avg_pool_backward_reference`]).
pub fn avg_pool_plane_backward<T: Element>(dyp: &[T], g: &Geometry, dxp: &mut [T]) {
    if g.kernel == (1, 1) && g.padding == (0, 0) {
        for (oy, row) in dyp.chunks_exact(g.ow).take(g.oh).enumerate() {
            let dst = &mut dxp[oy * g.stride.0 * g.w..];
            for (ox, &d) in row.iter().enumerate() {
                // The reference's share `d · 1`, added.
                dst[ox * g.stride.1] += d;
            }
        }
        return;
    }
    avg_pool_backward_reference(dyp, g, dxp)
}

/// The adjoint of [`avg_pool_reference`] by the general window scan. The reference.
pub fn avg_pool_backward_reference<T: Element>(dyp: &[T], g: &Geometry, dxp: &mut [T]) {
    let scale = T::from_f64(1.0 / (g.kernel.0 * g.kernel.1) as f64);
    for_each_window(g, |o, (y0, y1), (x0, x1)| {
        let share = dyp[o] * scale;
        for iy in y0..y1 {
            for v in &mut dxp[iy * g.w + x0..iy * g.w + x1] {
                *v += share;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Max pooling without positions gives bitwise the values of the path with them:
    /// 2×2/2 windows on odd and even sizes (NaN in some windows, ties of ±0), and other
    /// windows (3×3/2 with padding, 2×2/1) through the fallback.
    #[test]
    fn max_pool_values_equal_the_values_with_positions_bitwise() {
        for (h, w, k, s, p) in [
            (6, 8, 2, 2, 0),
            (7, 9, 2, 2, 0),
            (2, 2, 2, 2, 0),
            (7, 7, 3, 2, 1),
            (5, 6, 2, 1, 0),
        ] {
            let g = Geometry::new(1, (h, w), (k, k), (s, s), (p, p), (1, 1)).unwrap();
            for nan_every in [0, 5, 13] {
                let x: Vec<f32> = (0..h * w)
                    .map(|i| match i {
                        _ if nan_every > 0 && i % nan_every == 3 => f32::NAN,
                        _ if i % 7 == 1 => -0.0,
                        _ if i % 7 == 2 => 0.0,
                        _ => ((i * 5 % 11) as f32 - 5.0).floor(),
                    })
                    .collect();
                let (mut values, mut with_pos) = (vec![1.0; g.p()], vec![2.0; g.p()]);
                max_pool_values(&x, &g, &mut values);
                max_pool_plane(&x, &g, &mut with_pos, &mut vec![0; g.p()]);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&values),
                    bits(&with_pos),
                    "{h}×{w}, {k}/{s}, pad {p}, NaN every {nan_every}"
                );
            }
        }
    }

    /// 1×1 windows without padding (strides 1–3 on odd and even sizes) are read straight
    /// from their pixels: values and gradients bitwise those of the general scan, signed
    /// zeros and NaN included.
    #[test]
    fn one_pixel_windows_equal_the_general_scan_bitwise() {
        for (h, w, s) in [(5, 7, 2), (8, 8, 2), (7, 4, 3), (3, 3, 1), (1, 6, 2)] {
            let g = Geometry::new(1, (h, w), (1, 1), (s, s), (0, 0), (1, 1)).unwrap();
            let special = [-0.0, 0.0, f32::NAN, f32::INFINITY];
            let x: Vec<f32> = (0..h * w)
                .map(|i| {
                    special
                        .get(i % 9)
                        .copied()
                        .unwrap_or((i as f32 * 0.37).sin())
                })
                .collect();
            let (mut fast, mut reference) = (vec![1.0; g.p()], vec![2.0; g.p()]);
            avg_pool_plane(&x, &g, &mut fast);
            avg_pool_reference(&x, &g, &mut reference);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&reference), "{h}×{w}, stride {s}");
            let dy: Vec<f32> = (0..g.p()).map(|i| (i as f32 * 0.53).cos()).collect();
            let (mut dx_fast, mut dx_reference) = (x.clone(), x.clone());
            avg_pool_plane_backward(&dy, &g, &mut dx_fast);
            avg_pool_backward_reference(&dy, &g, &mut dx_reference);
            assert_eq!(bits(&dx_fast), bits(&dx_reference), "{h}×{w}, stride {s}");
        }
    }
}
