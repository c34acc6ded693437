//! im2col and col2im for one image: the bridge between a convolution and a GEMM.
//!
//! Row `(c, ki, kj)` of the column matrix holds, for every output pixel `(oh, ow)`, the
//! input value the kernel tap `(ki, kj)` of channel `c` sees there (0 in the padding).

pub use super::im2col_forward::Im2colForward;
use super::ConvBackward;
use crate::kernels::gemm::{gemm, MatMut, MatRef};
use crate::kernels::transpose::copy_transposed;
use crate::kernels::{Element, Geometry};

/// Output positions `lo..hi` along one axis whose input index `o·stride + offset` is in
/// `0..len`.
pub(crate) fn valid_range(
    offset: isize,
    stride: usize,
    len: usize,
    outputs: usize,
) -> (usize, usize) {
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
    // A pointwise (1×1, stride 1, no padding) layer's columns are the input planes
    // themselves: one copy per channel instead of one per row (14% of a mobilenet-v2
    // inference went to per-row copies of its 2–16-pixel rows).
    if g.kernel == (1, 1) && g.stride == (1, 1) && g.padding == (0, 0) {
        let plane = g.h * g.w;
        for (c, dst) in cols.chunks_mut(stride).take(g.c).enumerate() {
            dst[..p].copy_from_slice(&x[c * plane + rows.0 * g.w..][..p]);
        }
        return;
    }
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
                crate::kernels::elementwise::copy_short(
                    &mut dst[lo..hi],
                    &src[first as usize..first as usize + hi - lo],
                );
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

/// [`col2im`] by the AVX-512 kernel where it applies (f32 on a CPU with AVX-512F, stride 1,
/// no dilation; bitwise the same sums), else by the plain loops.
pub(crate) fn col2im_fast<T: Element>(
    cols: &[T],
    g: &Geometry,
    rows: (usize, usize),
    dx: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if super::col2im_x86::supports(g) && crate::kernels::microkernel::has_avx512() {
        use crate::kernels::element::{as_f32, as_f32_mut};
        if let (Some(cols), Some(dx)) = (as_f32(cols), as_f32_mut(&mut *dx)) {
            // SAFETY: the CPU has AVX-512F (checked above); `col2im_avx512` checks the
            // shapes.
            unsafe { super::col2im_x86::col2im_avx512(cols, g, rows, dx) };
            return;
        }
    }
    col2im(cols, g, rows, dx)
}

/// Output pixels per GEMM tile. Measured with single-threaded sgemm on this machine:
/// 32×288×1024 (cifar-cnn conv2, whole image) runs at 42 GFLOP/s, 32×288×256 at 66: a
/// tile's columns stay in cache between im2col and the GEMM that packs them.
const TILE_PIXELS: usize = 256;

/// Tiles of whole output rows, each about [`TILE_PIXELS`] pixels: `(first row, end row)`.
pub(crate) fn row_tiles(g: &Geometry) -> impl Iterator<Item = (usize, usize)> {
    let rows = (TILE_PIXELS / g.ow.max(1)).max(1);
    let oh = g.oh;
    (0..oh)
        .step_by(rows)
        .map(move |r0| (r0, (r0 + rows).min(oh)))
}

/// The largest tile's pixel count (sizes the column workspace).
pub(crate) fn max_tile_pixels(g: &Geometry) -> usize {
    row_tiles(g).map(|(a, b)| (b - a) * g.ow).max().unwrap_or(0)
}

/// Images whose im2col columns share one forward GEMM: as many as fit in [`TILE_PIXELS`]
/// when an image has at most half that many output pixels (LeNet's conv2: 64 pixels, so 4
/// images and a 256-column product), otherwise 1. Per-image products that narrow pack the
/// whole weight matrix again for every image (LeNet's conv2: 25,000 weights for 64 columns).
pub(crate) fn images_per_gemm(g: &Geometry) -> usize {
    let p = g.p();
    if p == 0 || 2 * p > TILE_PIXELS {
        1
    } else {
        TILE_PIXELS / p
    }
}

/// Output pixels up to which a pointwise layer (1×1, stride 1, no padding) runs one
/// product per pixel over its images (a call's group, [`images_per_gemm`]), reading and
/// writing them where they lie, instead of gathering their columns into a workspace (and
/// transposing them, in backward). mobilenet-v2 training at 1 thread, batch 128, its 1×1
/// layers on 2×2 maps, minimum ms of 4 alternating profiles: forward 8.1 → 6.2 (384→64
/// 1.57 → 0.86), backward 10.3 → 9.3; on 1×1 maps (one product before too) level. Groups
/// of 256 images instead of 64 measured level.
const PIXEL_PRODUCTS_MAX_PIXELS: usize = 4;

/// Whether `g` is a pointwise layer on maps of at most [`PIXEL_PRODUCTS_MAX_PIXELS`].
pub(crate) fn pixel_products(g: &Geometry) -> bool {
    g.kernel == (1, 1)
        && g.stride == (1, 1)
        && g.padding == (0, 0)
        && g.p() <= PIXEL_PRODUCTS_MAX_PIXELS
}

/// Output pixels up to which backward groups images as the forward pass does. Beyond,
/// an image's own products are wide enough, and the group's extra transposes cost more
/// than they save: with groups up to 128 pixels LeNet's train step (conv2: 64 pixels) ran
/// 3–5% slower, at 16 within noise (same run, 2 rounds), while mobilenet-v2's step went
/// from 352 to 566 images/s (1 thread).
pub(crate) const BACKWARD_GROUP_MAX_PIXELS: usize = 16;

/// The backward pass by im2col: per tile of output rows, `dW += dY·colsᵀ` and
/// `dX = col2im(Wᵀ·dY)`. The columns are recomputed rather than kept from the forward
/// pass: kept columns would cost `k·p` floats per image (151 MB for `cifar-cnn`'s second
/// conv at batch 128), while im2col is a copy, cheap next to the GEMMs that read it.
pub struct Im2colBackward<'a, T> {
    geometry: Geometry,
    outputs: usize,
    weight: &'a [T],
}

impl<'a, T: Element> Im2colBackward<'a, T> {
    /// A layer of geometry `g` with the `o × c × kh × kw` weights `w` (empty when no input
    /// gradient is wanted).
    pub fn new(g: &Geometry, o: usize, w: &'a [T]) -> Self {
        Im2colBackward {
            geometry: *g,
            outputs: o,
            weight: w,
        }
    }
}

impl<T: Element> Im2colBackward<'_, T> {
    /// Several small images at once (`m = imgs·p` columns): `dW += dY·colsᵀ` and
    /// `dcols = Wᵀ·dY` as one product each over all their pixels, instead of one per image
    /// (a 1×1 layer on 1×1 maps made each image's `dW` a rank-1 update: mobilenet-v2's
    /// last layers ran their backward at 7 GFLOP/s).
    fn images(&self, dy: &[T], x: &[T], dx: Option<&mut [T]>, dw: Option<&mut [T]>, ws: &mut [T]) {
        let (g, o, w) = (&self.geometry, self.outputs, self.weight);
        let (k, p) = (g.k(), g.p());
        let imgs = dy.len() / (o * p);
        if pixel_products(g) {
            return self.pixel_products(imgs, dy, x, dx, dw);
        }
        let m = imgs * p;
        let (cols, rest) = ws.split_at_mut(k * m);
        let (cols_t, rest) = rest.split_at_mut(m * k);
        let dy_t = &mut rest[..m * o];
        // dY pixel-major, all images' pixels in a row: dy_t[(i·p + j)·o + oc] = dY_i[oc][j].
        for (i, dy_i) in dy.chunks_exact(o * p).enumerate() {
            copy_transposed(dy_i, (o, p, p), &mut dy_t[i * p * o..], o);
        }
        // A 1×1 stride-1 layer's columns are its input planes.
        let pointwise = g.kernel == (1, 1) && g.stride == (1, 1) && g.padding == (0, 0);
        if let Some(dw) = dw {
            // colsᵀ (m × k): each image's columns, transposed.
            for (i, x_i) in x.chunks_exact(g.chw()).enumerate() {
                if pointwise {
                    copy_transposed(x_i, (k, p, p), &mut cols_t[i * p * k..], k);
                } else {
                    im2col(x_i, g, (0, g.oh), &mut cols[..k * p]);
                    copy_transposed(&cols[..k * p], (k, p, p), &mut cols_t[i * p * k..], k);
                }
            }
            gemm(
                MatRef::new(dy_t, 0, (o, m), (1, o)),
                MatRef::new(cols_t, 0, (m, k), (k, 1)),
                T::one(),
                MatMut::new(dw, (o, k), k),
            );
        }
        if let Some(dx) = dx {
            // dcolsᵀ (m × k) = dYᵀ (m × o) · W (o × k), then each image's block back to
            // k × p and onto its input.
            gemm(
                MatRef::new(dy_t, 0, (m, o), (o, 1)),
                MatRef::new(w, 0, (o, k), (k, 1)),
                T::zero(),
                MatMut::new(cols_t, (m, k), k),
            );
            for (i, dx_i) in dx.chunks_exact_mut(g.chw()).enumerate() {
                let block = &cols_t[i * p * k..(i + 1) * p * k];
                if pointwise {
                    // dx_i (zeroed) receives each value once: a transposed copy is col2im.
                    copy_transposed(block, (p, k, k), dx_i, p);
                } else {
                    copy_transposed(block, (p, k, k), &mut cols[..k * p], p);
                    col2im_fast(&cols[..k * p], g, (0, g.oh), dx_i);
                }
            }
        }
    }
}

impl<T: Element> Im2colBackward<'_, T> {
    /// A pointwise layer on small maps ([`pixel_products`]), per pixel `j` over all the
    /// images where they lie: `dW += dY_jᵀ · X_j` and `dX_j = dY_j · W`, with `dY_j`
    /// (`imgs × o`) and `X_j`, `dX_j` (`imgs × c`) strided views of the batch.
    fn pixel_products(
        &self,
        imgs: usize,
        dy: &[T],
        x: &[T],
        mut dx: Option<&mut [T]>,
        mut dw: Option<&mut [T]>,
    ) {
        let (g, o, w) = (&self.geometry, self.outputs, self.weight);
        let (k, p) = (g.k(), g.p());
        for j in 0..p {
            if let Some(dw) = dw.as_deref_mut() {
                gemm(
                    MatRef::new(dy, j, (o, imgs), (p, o * p)),
                    MatRef::new(x, j, (imgs, k), (k * p, p)),
                    T::one(),
                    MatMut::new(dw, (o, k), k),
                );
            }
            if let Some(dx) = dx.as_deref_mut() {
                gemm(
                    MatRef::new(dy, j, (imgs, o), (o * p, p)),
                    MatRef::new(w, 0, (o, k), (k, 1)),
                    T::zero(),
                    MatMut::strided(&mut dx[j..], (imgs, k), (k * p, p)),
                );
            }
        }
    }
}

/// `dW (o × k) += dY[:, tile] (o × pt) · cols[k × pt]ᵀ` for the output rows `rows` of one
/// image, in the workspace `(cols, cols_t, dy_t)` (`k·pt`, `pt·k` and `o·pt` elements).
pub(crate) fn add_tile_weight_grad<T: Element>(
    dy: &[T],
    x: &[T],
    g: &Geometry,
    o: usize,
    rows: (usize, usize),
    (cols, cols_t, dy_t): (&mut [T], &mut [T], &mut [T]),
    dw: &mut [T],
) {
    let (k, p) = (g.k(), g.p());
    let (p0, pt) = (rows.0 * g.ow, (rows.1 - rows.0) * g.ow);
    im2col(x, g, rows, cols);
    let cols_t = &mut cols_t[..pt * k];
    copy_transposed(cols, (k, pt, pt), cols_t, k);
    copy_transposed(&dy[p0..], (o, pt, p), dy_t, o);
    // The product runs over pixels, so matrixmultiply packs its operands with contiguous
    // loads only if they are stored pixel-major: both are transposed first (8×8 blocks;
    // with the AVX kernel this is cheaper than the gathered packing, measured: LeNet conv2
    // dW 73.6 -> 82.0 GFLOP/s, before that kernel it was slower).
    gemm(
        MatRef::new(dy_t, 0, (o, pt), (1, o)),
        MatRef::new(cols_t, 0, (pt, k), (k, 1)),
        T::one(),
        MatMut::new(dw, (o, k), k),
    );
}

impl<T: Element> ConvBackward<T> for Im2colBackward<'_, T> {
    /// One tile's columns, its column gradient (or its columns transposed), and its output
    /// gradient transposed; for a group of images, the same for all their pixels.
    fn workspace(&self) -> usize {
        let g = &self.geometry;
        if pixel_products(g) {
            return 0;
        }
        let pixels = max_tile_pixels(g).max(self.images_per_call() * g.p());
        (2 * g.k() + self.outputs) * pixels
    }

    fn weight_grad_len(&self) -> usize {
        self.outputs * self.geometry.k()
    }

    fn images_per_call(&self) -> usize {
        if self.geometry.p() <= BACKWARD_GROUP_MAX_PIXELS {
            images_per_gemm(&self.geometry)
        } else {
            1
        }
    }

    fn backward_images(
        &self,
        imgs: usize,
        dy: &[T],
        x: &[T],
        dx: Option<&mut [T]>,
        dw: Option<&mut [T]>,
        ws: &mut [T],
    ) {
        // Pointwise layers on small maps keep no workspace for the one-image path.
        if imgs > 1 || pixel_products(&self.geometry) {
            return self.images(dy, x, dx, dw, ws);
        }
        self.backward_image(dy, x, dx, dw, ws);
    }

    fn backward_image(
        &self,
        dy: &[T],
        x: &[T],
        mut dx: Option<&mut [T]>,
        mut dw: Option<&mut [T]>,
        ws: &mut [T],
    ) {
        let (g, o, w) = (&self.geometry, self.outputs, self.weight);
        let (k, p, tile) = (g.k(), g.p(), max_tile_pixels(g));
        let (cols, rest) = ws.split_at_mut(k * tile);
        let (dcols, rest) = rest.split_at_mut(k * tile);
        let dy_t = &mut rest[..o * tile];
        for (r0, r1) in row_tiles(g) {
            let (p0, pt) = (r0 * g.ow, (r1 - r0) * g.ow);
            if let Some(dw) = dw.as_deref_mut() {
                add_tile_weight_grad(dy, x, g, o, (r0, r1), (cols, dcols, dy_t), dw);
            }
            if let Some(dx) = dx.as_deref_mut() {
                // dcols[k×pt] = W[o×k]ᵀ · dY[:, tile][o×pt]
                gemm(
                    MatRef::new(w, 0, (k, o), (1, k)),
                    MatRef::new(dy, p0, (o, pt), (p, 1)),
                    T::zero(),
                    MatMut::new(dcols, (k, pt), pt),
                );
                col2im_fast(dcols, g, (r0, r1), dx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv::ConvForward;

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

    /// Both forward paths (one image per GEMM, and images grouped on small maps) against
    /// the definition, with and without bias, into outputs full of NaN: they write every
    /// element ([`ConvForward::writes_every_output`]).
    #[test]
    fn forward_overwrites_the_output_and_equals_the_definition() {
        // (h, w, k, s, p): 16 output pixels (grouped images) and 64+ (one image per GEMM).
        for (h, w, k, s, p) in [(4, 4, 3, 1, 1), (10, 9, 3, 1, 1), (7, 8, 3, 2, 0)] {
            let g = geometry(h, w, k, s, p, 1);
            let (o, imgs) = (5, 3);
            let x: Vec<f64> = (0..imgs * g.chw()).map(|i| (i % 11) as f64 - 5.0).collect();
            let wt: Vec<f64> = (0..o * g.k()).map(|i| (i % 7) as f64 / 3.0).collect();
            let b: Vec<f64> = (0..o).map(|i| i as f64 - 2.0).collect();
            let kernel = Im2colForward::new(&g, o, &wt);
            assert!(kernel.writes_every_output());
            for bias in [None, Some(&b[..])] {
                let mut y = vec![f64::NAN; imgs * o * g.p()];
                let mut ws = vec![f64::NAN; kernel.workspace()];
                let per = kernel.images_per_call();
                for i in (0..imgs).step_by(per) {
                    let n = per.min(imgs - i);
                    let x_i = &x[i * g.chw()..(i + n) * g.chw()];
                    let y_i = &mut y[i * o * g.p()..(i + n) * o * g.p()];
                    kernel.forward(x_i, bias, y_i, &mut ws);
                }
                for (i, y_i) in y.chunks_exact(o * g.p()).enumerate() {
                    let mut want = vec![0.0; o * g.p()];
                    let x_i = &x[i * g.chw()..(i + 1) * g.chw()];
                    super::super::direct::forward(x_i, &wt, bias, &g, o, &mut want);
                    for (a, e) in y_i.iter().zip(&want) {
                        assert!(
                            (a - e).abs() <= 1e-12 * (1.0 + e.abs()),
                            "{g:?}: {a} vs {e}"
                        );
                    }
                }
            }
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

    /// The pointwise fast path (1×1, stride 1, no padding) copies the tile's rows of each
    /// plane into its strided row, as the definition `cols[c][pixel] = x[c][pixel]` says,
    /// and leaves the padding between rows alone; a 1×1 layer with padding or stride takes
    /// the general path and agrees with the same definition where it is one.
    #[test]
    fn pointwise_columns_are_the_input_planes() {
        let g = geometry(4, 5, 1, 1, 0, 1);
        let x: Vec<f64> = (0..g.chw()).map(|i| i as f64).collect();
        let (rows, stride) = ((1, 3), 2 * 5 + 3);
        let mut cols = vec![-1.0; g.c * stride];
        im2col_strided(&x, &g, rows, &mut cols, stride);
        for c in 0..g.c {
            assert_eq!(
                cols[c * stride..c * stride + 10],
                x[c * 20 + 5..c * 20 + 15]
            );
            assert!(cols[c * stride + 10..(c + 1) * stride]
                .iter()
                .all(|&v| v == -1.0));
        }
        let strided = geometry(4, 5, 1, 2, 0, 1);
        let mut cols = vec![0.0; strided.k() * strided.p()];
        im2col(&x, &strided, (0, strided.oh), &mut cols);
        assert_eq!(cols[..3], [0.0, 2.0, 4.0]);
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
