//! im2col and col2im for one image: the bridge between a convolution and a GEMM.
//!
//! Row `(c, ki, kj)` of the column matrix holds, for every output pixel `(oh, ow)`, the
//! input value the kernel tap `(ki, kj)` of channel `c` sees there (0 in the padding).

use crate::ops::window::Geometry;

/// Output positions `lo..hi` along one axis whose input index `o·stride + offset` is in
/// `0..len`.
fn valid_range(offset: isize, stride: usize, len: usize, outputs: usize) -> (usize, usize) {
    let s = stride as isize;
    let lo = if offset >= 0 {
        0
    } else {
        (-offset + s - 1) / s
    };
    let last = len as isize - 1 - offset;
    let hi = if last < 0 { 0 } else { last / s + 1 };
    let hi = (hi as usize).min(outputs);
    ((lo as usize).min(hi), hi)
}

/// Visits every kernel tap: `f(row, channel, input row offset, valid ow range, iw offset)`.
fn for_each_tap(g: &Geometry, mut f: impl FnMut(usize, usize, isize, (usize, usize), isize)) {
    let (kh, kw) = g.kernel;
    for c in 0..g.c {
        for ki in 0..kh {
            let ih_off = (ki * g.dilation.0) as isize - g.padding.0 as isize;
            for kj in 0..kw {
                let iw_off = (kj * g.dilation.1) as isize - g.padding.1 as isize;
                let range = valid_range(iw_off, g.stride.1, g.w, g.ow);
                f((c * kh + ki) * kw + kj, c, ih_off, range, iw_off);
            }
        }
    }
}

/// Fills `cols` (`k × (rows·ow)`, row-major) from one image `x` (`c × h × w`), for the
/// output rows `rows.0..rows.1` only (a tile of output pixels; `(0, oh)` for all).
pub fn im2col<T: Copy + Default>(x: &[T], g: &Geometry, rows: (usize, usize), cols: &mut [T]) {
    let p = (rows.1 - rows.0) * g.ow;
    im2col_strided(x, g, rows, cols, p);
}

/// [`im2col`] into the first `rows·ow` columns of a matrix whose rows are `stride`
/// elements apart (`cols[r·stride + j]`), so that several images' columns can sit side by
/// side in one GEMM operand.
pub fn im2col_strided<T: Copy + Default>(
    x: &[T],
    g: &Geometry,
    rows: (usize, usize),
    cols: &mut [T],
    stride: usize,
) {
    let (ow, sw) = (g.ow, g.stride.1);
    let p = (rows.1 - rows.0) * ow;
    assert!(
        stride >= p,
        "im2col: row stride {stride} below the tile's {p} pixels"
    );
    let zero = T::default();
    for_each_tap(g, |row, c, ih_off, (lo, hi), iw_off| {
        let dst_row = &mut cols[row * stride..row * stride + p];
        for oh in rows.0..rows.1 {
            let dst = &mut dst_row[(oh - rows.0) * ow..(oh - rows.0 + 1) * ow];
            let ih = (oh * g.stride.0) as isize + ih_off;
            if ih < 0 || ih >= g.h as isize {
                dst.fill(zero);
                continue;
            }
            let src = &x[(c * g.h + ih as usize) * g.w..][..g.w];
            dst[..lo].fill(zero);
            dst[hi..].fill(zero);
            if lo == hi {
                continue;
            }
            let first = (lo * sw) as isize + iw_off;
            if sw == 1 {
                dst[lo..hi].copy_from_slice(&src[first as usize..first as usize + hi - lo]);
            } else {
                for (j, d) in dst[lo..hi].iter_mut().enumerate() {
                    *d = src[first as usize + j * sw];
                }
            }
        }
    });
}

/// Adds the columns `cols` (`k × (rows·ow)`) of output rows `rows.0..rows.1` back onto
/// the image `dx` (`c × h × w`): the adjoint of [`im2col`]. Accumulates into `dx`.
pub fn col2im<T: Copy + std::ops::AddAssign>(
    cols: &[T],
    g: &Geometry,
    rows: (usize, usize),
    dx: &mut [T],
) {
    let (ow, sw) = (g.ow, g.stride.1);
    let p = (rows.1 - rows.0) * ow;
    for_each_tap(g, |row, c, ih_off, (lo, hi), iw_off| {
        let src_row = &cols[row * p..(row + 1) * p];
        for oh in rows.0..rows.1 {
            let ih = (oh * g.stride.0) as isize + ih_off;
            if ih < 0 || ih >= g.h as isize {
                continue;
            }
            if lo == hi {
                continue;
            }
            let src = &src_row[(oh - rows.0) * ow..(oh - rows.0 + 1) * ow];
            let dst = &mut dx[(c * g.h + ih as usize) * g.w..][..g.w];
            let first = ((lo * sw) as isize + iw_off) as usize;
            if sw == 1 {
                // Unit stride: a plain slice add, which vectorises.
                for (d, &v) in dst[first..first + hi - lo].iter_mut().zip(&src[lo..hi]) {
                    *d += v;
                }
            } else {
                for (j, &v) in src[lo..hi].iter().enumerate() {
                    dst[first + j * sw] += v;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(h: usize, w: usize, k: usize, s: usize, p: usize, d: usize) -> Geometry {
        Geometry {
            c: 2,
            h,
            w,
            kernel: (k, k),
            stride: (s, s),
            padding: (p, p),
            dilation: (d, d),
            oh: Geometry::out_size(h, k, s, p, d).unwrap(),
            ow: Geometry::out_size(w, k, s, p, d).unwrap(),
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), y> = <x, col2im(y)> for arbitrary x, y.
        for (h, w, k, s, p, d) in [(5, 7, 3, 2, 1, 1), (6, 5, 2, 3, 2, 2), (4, 4, 1, 1, 0, 1)] {
            let g = geometry(h, w, k, s, p, d);
            let x: Vec<f64> = (0..g.chw()).map(|i| (i as f64 * 0.37).sin()).collect();
            let y: Vec<f64> = (0..g.k() * g.p())
                .map(|i| (i as f64 * 0.11).cos())
                .collect();
            let mut cols = vec![0.0; g.k() * g.p()];
            im2col(&x, &g, (0, g.oh), &mut cols);
            let mut back = vec![0.0; g.chw()];
            col2im(&y, &g, (0, g.oh), &mut back);
            let lhs: f64 = cols.iter().zip(&y).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-10, "{lhs} vs {rhs}");
        }
    }

    #[test]
    fn tiles_of_rows_assemble_the_whole_matrix() {
        let g = geometry(9, 6, 3, 2, 1, 1);
        let x: Vec<f64> = (0..g.chw()).map(|i| i as f64).collect();
        let mut whole = vec![0.0; g.k() * g.p()];
        im2col(&x, &g, (0, g.oh), &mut whole);
        for (r0, r1) in [(0, 2), (2, 3), (3, g.oh)] {
            let tp = (r1 - r0) * g.ow;
            let mut tile = vec![0.0; g.k() * tp];
            im2col(&x, &g, (r0, r1), &mut tile);
            for row in 0..g.k() {
                assert_eq!(
                    tile[row * tp..(row + 1) * tp],
                    whole[row * g.p() + r0 * g.ow..row * g.p() + r1 * g.ow]
                );
            }
        }
    }

    #[test]
    fn padding_reads_zero() {
        let g = geometry(2, 2, 3, 1, 1, 1);
        let x = vec![1.0f32; g.chw()];
        let mut cols = vec![9.0; g.k() * g.p()];
        im2col(&x, &g, (0, g.oh), &mut cols);
        // Tap (0,0) at output (0,0) reads input (-1,-1): padding.
        assert_eq!(cols[0], 0.0);
        // The centre tap always reads a real pixel.
        assert!(cols[4 * g.p()..5 * g.p()].iter().all(|&v| v == 1.0));
    }
}
