//! The backward pass of the implicit-GEMM layers, per tile of output rows as
//! [`Im2colBackward`](super::im2col::Im2colBackward)'s, both gradients on the forward pass's
//! micro-kernel ([`crate::kernels::microkernel`]).
//!
//! - **dX**: `dcols (k × pt) = Wᵀ (k × o) · dY[:, tile] (o × pt)`, then `col2im`, with `Wᵀ`
//!   packed once per call. matrixmultiply packs the whole weight matrix again for every
//!   tile: LeNet's conv2 (25,000 weights, one 64-pixel tile per image) did so 64 times a
//!   batch, for 1.6 M multiply-adds each.
//! - **dW**: `dW (o × k) += dY[:, tile] (o × pt) · rows (pt × k)`, where `rows` holds each
//!   pixel's `k` input taps ([`im2row`]: im2col's columns transposed, written straight in
//!   that order) and `dY`'s tile is packed into panels, and every block of 16 taps is read
//!   in place from `rows` and added into `dW` by the micro-kernel. Through matrixmultiply
//!   the same product needed im2col, two transposes into pixel-major order and its own
//!   packing of both operands, and those copies cost more than the products in LeNet's
//!   conv2. Layers with fewer taps than output channels keep that path (see
//!   `weight_grad_by_rows`).

use super::im2col::{add_tile_weight_grad, col2im_fast, max_tile_pixels, row_tiles};
use super::ConvBackward;
use crate::kernels::elementwise::copy_short;
use crate::kernels::microkernel::{add_block, multiply_block, PackedRows, NR};
use crate::kernels::transpose::copy_transposed;
use crate::kernels::{Element, Geometry};

/// Elements past a tile's last row that [`im2row`] may write (it copies a kernel row's
/// `kw ≤ 8` taps as 8 values, the surplus overwritten by the taps after them).
const ROW_SLACK: usize = 8;

/// The row length of [`im2row`]'s matrix for `k` taps: whole blocks of [`NR`], an odd
/// number of them, so that the rows of a block do not all fall into the same few L1 sets
/// (LeNet's conv2: 500 taps, rows of 528 rather than 512).
pub fn row_stride(k: usize) -> usize {
    (k.div_ceil(NR) | 1) * NR
}

/// The plain loops of [`im2row`]: `rows[j·ld + kk]` = the input value that tap `kk`
/// (over `c × kh × kw`) of output pixel `p0 + j` sees, 0 in the padding, for `j < pt`.
pub fn im2row_reference<T: Element>(
    x: &[T],
    g: &Geometry,
    (p0, pt): (usize, usize),
    rows: &mut [T],
    ld: usize,
) {
    let (kh, kw) = g.kernel;
    for j in 0..pt {
        let (oh, ow) = ((p0 + j) / g.ow, (p0 + j) % g.ow);
        let mut kk = 0;
        for c in 0..g.c {
            for ki in 0..kh {
                for kj in 0..kw {
                    let ih = (oh * g.stride.0 + ki * g.dilation.0) as isize - g.padding.0 as isize;
                    let iw = (ow * g.stride.1 + kj * g.dilation.1) as isize - g.padding.1 as isize;
                    let inside = (0..g.h as isize).contains(&ih) && (0..g.w as isize).contains(&iw);
                    rows[j * ld + kk] = if inside {
                        x[(c * g.h + ih as usize) * g.w + iw as usize]
                    } else {
                        T::zero()
                    };
                    kk += 1;
                }
            }
        }
    }
}

/// [`im2row_reference`], with each kernel row's `kw` taps copied together where they lie
/// inside the input row (undilated layers away from a padded edge): 8 values at a time
/// when `kw ≤ 8`, the surplus overwritten by the next kernel row's taps (or landing in the
/// row's unused tail, or in the 8 elements past the last row). Pointwise layers
/// transpose the input in 8×8 blocks. `rows` holds `pt·ld + 8` elements.
pub fn im2row<T: Element>(
    x: &[T],
    g: &Geometry,
    (p0, pt): (usize, usize),
    rows: &mut [T],
    ld: usize,
) {
    let (kh, kw) = g.kernel;
    let plane = g.h * g.w;
    if g.kernel == (1, 1) && g.stride == (1, 1) && g.padding == (0, 0) {
        return copy_transposed(&x[p0..], (g.c, pt, plane), rows, ld);
    }
    for j in 0..pt {
        let (oh, ow) = ((p0 + j) / g.ow, (p0 + j) % g.ow);
        let iw0 = (ow * g.stride.1) as isize - g.padding.1 as isize;
        let row_inside = g.dilation.1 == 1 && iw0 >= 0 && iw0 as usize + kw <= g.w;
        let row = &mut rows[j * ld..];
        let mut kk = 0;
        for c in 0..g.c {
            for ki in 0..kh {
                let ih = (oh * g.stride.0 + ki * g.dilation.0) as isize - g.padding.0 as isize;
                let out = &mut row[kk..];
                kk += kw;
                if !(0..g.h as isize).contains(&ih) {
                    out[..kw].fill(T::zero());
                    continue;
                }
                let start = c * plane + ih as usize * g.w;
                if row_inside {
                    let from = start + iw0 as usize;
                    match (x.get(from..from + 8), out.get_mut(..8)) {
                        (Some(src), Some(dst)) if kw <= 8 => copy_short(dst, src),
                        _ => copy_short(&mut out[..kw], &x[from..from + kw]),
                    }
                    continue;
                }
                for (kj, out) in out[..kw].iter_mut().enumerate() {
                    let iw = iw0 + (kj * g.dilation.1) as isize;
                    *out = if (0..g.w as isize).contains(&iw) {
                        x[start + iw as usize]
                    } else {
                        T::zero()
                    };
                }
            }
        }
    }
}

/// The backward pass of a dense (one-group) convolution on the micro-kernel.
pub struct ImplicitGemmBackward<T> {
    geometry: Geometry,
    outputs: usize,
    /// `Wᵀ` (`k × o`) in panels, for dX; `None` when no input gradient is wanted.
    weights_t: Option<PackedRows<T>>,
}

impl<T: Element> ImplicitGemmBackward<T> {
    /// A layer of geometry `g` with the `o × c × kh × kw` weights `w` (empty when no
    /// input gradient is wanted).
    pub fn new(g: &Geometry, o: usize, w: &[T]) -> Self {
        let k = g.k();
        let weights_t = (!w.is_empty()).then(|| PackedRows::new(w, (k, o), (1, k)));
        ImplicitGemmBackward {
            geometry: *g,
            outputs: o,
            weights_t,
        }
    }

    /// Whether dW goes by [`im2row`] and the micro-kernel (at least as many taps as output
    /// channels) rather than by im2col and matrixmultiply: packing `dY`'s tile costs as
    /// much as the product when a layer has few taps and many outputs (mobilenet-v2's
    /// 24→144 pointwise layer, batch 128, 1 thread: 3.8 → 6.2 ms), and matrixmultiply
    /// handles that shape better.
    fn weight_grad_by_rows(&self) -> bool {
        self.geometry.k() >= self.outputs
    }

    /// The workspace of one tile's weight gradient (which also holds dX's column gradient).
    fn tile_workspace(&self) -> usize {
        let (g, o, tile) = (
            &self.geometry,
            self.outputs,
            max_tile_pixels(&self.geometry),
        );
        if self.weight_grad_by_rows() {
            tile * row_stride(g.k()) + ROW_SLACK
        } else {
            (2 * g.k() + o) * tile
        }
    }

    /// Adds the weight gradient of the `pt` pixels from `p0` into `dw`: their [`im2row`]
    /// matrix in `rows`, `dY`'s tile packed, one micro-kernel call per 16 taps.
    fn add_tile_weight_grad(
        &self,
        dy: &[T],
        x: &[T],
        (p0, pt): (usize, usize),
        rows: &mut [T],
        dw: &mut [T],
    ) {
        let (g, o) = (&self.geometry, self.outputs);
        let (k, ld) = (g.k(), row_stride(g.k()));
        im2row(x, g, (p0, pt), rows, ld);
        let dy_tile = PackedRows::new(&dy[p0..], (o, pt), (g.p(), 1));
        for t0 in (0..k).step_by(NR) {
            add_block(
                &dy_tile,
                (&rows[t0..], ld),
                NR.min(k - t0),
                &mut dw[t0..],
                k,
            );
        }
    }
}

impl<T: Element> ConvBackward<T> for ImplicitGemmBackward<T> {
    /// A tile's [`im2row`] matrix (or its columns, the columns transposed and `dY`'s tile
    /// transposed, for matrixmultiply; or, for dX, its column gradient), then one block of
    /// `dY` padded to [`NR`] pixels.
    fn workspace(&self) -> usize {
        self.tile_workspace() + self.outputs * NR
    }

    fn weight_grad_len(&self) -> usize {
        self.outputs * self.geometry.k()
    }

    fn backward_image(
        &self,
        dy: &[T],
        x: &[T],
        mut dx: Option<&mut [T]>,
        mut dw: Option<&mut [T]>,
        ws: &mut [T],
    ) {
        let (g, o) = (&self.geometry, self.outputs);
        let (k, p, tile) = (g.k(), g.p(), max_tile_pixels(g));
        let (cols, dy_block) = ws.split_at_mut(self.tile_workspace());
        for (r0, r1) in row_tiles(g) {
            let (p0, pt) = (r0 * g.ow, (r1 - r0) * g.ow);
            if let Some(dw) = dw.as_deref_mut() {
                if self.weight_grad_by_rows() {
                    self.add_tile_weight_grad(dy, x, (p0, pt), cols, dw);
                } else {
                    let (cols, rest) = cols.split_at_mut(k * tile);
                    let (cols_t, dy_t) = rest.split_at_mut(k * tile);
                    add_tile_weight_grad(dy, x, g, o, (r0, r1), (cols, cols_t, dy_t), dw);
                }
            }
            if let (Some(dx), Some(w_t)) = (dx.as_deref_mut(), &self.weights_t) {
                for first in (p0..p0 + pt).step_by(NR) {
                    let n = NR.min(p0 + pt - first);
                    // The micro-kernel reads 16 pixels of every row of dY: past the image's
                    // last pixel, from a copy padded to 16.
                    let block = if first + NR <= p {
                        (&dy[first..], p)
                    } else {
                        for (to, row) in dy_block.chunks_exact_mut(NR).zip(dy.chunks_exact(p)) {
                            to[..n].copy_from_slice(&row[first..first + n]);
                        }
                        (&dy_block[..], NR)
                    };
                    multiply_block(w_t, block, n, None, &mut cols[first - p0..], pt);
                }
                col2im_fast(&cols[..k * pt], g, (r0, r1), dx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::direct::Direct;
    use super::*;

    fn geometry(c: usize, (h, w): (usize, usize), k: usize, s: usize, p: usize) -> Geometry {
        let out = |n: usize| (n + 2 * p - k) / s + 1;
        Geometry {
            c,
            h,
            w,
            kernel: (k, k),
            stride: (s, s),
            padding: (p, p),
            dilation: (1, 1),
            oh: out(h),
            ow: out(w),
        }
    }

    fn values(n: usize, seed: u64) -> Vec<f64> {
        (0..n)
            .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1009) as f64 / 504.5) - 1.0)
            .collect()
    }

    /// Input and weight gradients against the direct convolution's, over two images (the
    /// weight gradient summed): LeNet's layers, padding, stride 2 on sizes it does not
    /// divide, pixel counts that are not a multiple of 16, rows longer than a tile, a tap
    /// count that is not a multiple of 16, and dW by both paths (by rows where `k ≥ o`,
    /// pointwise included; by matrixmultiply for the 1×300 layer with 3 taps and 5 outputs).
    #[test]
    fn gradients_match_the_direct_convolution() {
        let cases = [
            // (c, o, (h, w), k, stride, pad)
            (1, 20, (28, 28), 5, 1, 0),
            (20, 50, (12, 12), 5, 1, 0),
            (3, 7, (9, 11), 3, 2, 1),
            (16, 32, (32, 32), 3, 2, 1),
            (5, 3, (7, 5), 3, 1, 1),
            (4, 6, (3, 40), 3, 1, 1),
            (3, 5, (1, 300), 1, 1, 0),
            (24, 8, (6, 7), 1, 1, 0),
        ];
        for (c, o, hw, k, s, pad) in cases {
            let g = geometry(c, hw, k, s, pad);
            let imgs = 2;
            let x = values(imgs * g.chw(), 1);
            let w = values(o * g.k(), 2);
            let dy = values(imgs * o * g.p(), 3);
            let run = |kernel: &dyn ConvBackward<f64>| {
                let mut dx = vec![0.0; x.len()];
                let mut dw = vec![0.0; kernel.weight_grad_len()];
                let mut ws = vec![0.0; kernel.workspace()];
                kernel.backward_images(imgs, &dy, &x, Some(&mut dx), Some(&mut dw), &mut ws);
                (dx, kernel.finish_weight_grad(dw))
            };
            let (dx, dw) = run(&ImplicitGemmBackward::new(&g, o, &w));
            let (dx_ref, dw_ref) = run(&Direct::new(&g, o, &w));
            for (a, b) in dx.iter().zip(&dx_ref).chain(dw.iter().zip(&dw_ref)) {
                assert!(
                    (a - b).abs() <= 1e-11 * (1.0 + b.abs()),
                    "{g:?}: {a} vs {b}"
                );
            }
        }
    }

    /// The fast [`im2row`] writes what its plain loops write, for every pixel of tiles that
    /// start inside the image: kernel rows inside the input (copied 8 at a time with
    /// `kw ≤ 8`, one by one with `kw = 9`), padded edges, stride 2 on sizes it does not
    /// divide, dilation, and pointwise layers (transposed in blocks).
    #[test]
    fn im2row_matches_its_reference() {
        let cases = [
            // (c, (h, w), kernel, stride, padding, dilation)
            (20, (12, 12), (5, 5), (1, 1), (0, 0), (1, 1)),
            (3, (9, 11), (3, 3), (2, 2), (1, 1), (1, 1)),
            (2, (10, 13), (3, 3), (1, 1), (2, 2), (2, 2)),
            (2, (12, 12), (9, 9), (1, 1), (1, 1), (1, 1)),
            (2, (5, 17), (2, 8), (1, 3), (0, 1), (1, 1)),
            (7, (6, 5), (1, 1), (1, 1), (0, 0), (1, 1)),
            (3, (1, 300), (1, 1), (2, 2), (0, 0), (1, 1)),
        ];
        for (c, hw, kernel, stride, padding, dilation) in cases {
            let g = Geometry::new(c, hw, kernel, stride, padding, dilation).expect("fits");
            let (k, ld) = (g.k(), row_stride(g.k()));
            let x = values(g.chw(), 6);
            for (p0, pt) in [
                (0, g.p()),
                (g.ow.min(g.p() - 1), g.p() - g.ow.min(g.p() - 1)),
            ] {
                let mut fast = vec![f64::NAN; pt * ld + ROW_SLACK];
                let mut want = vec![f64::NAN; pt * ld];
                im2row(&x, &g, (p0, pt), &mut fast, ld);
                im2row_reference(&x, &g, (p0, pt), &mut want, ld);
                for j in 0..pt {
                    let (a, b) = (&fast[j * ld..][..k], &want[j * ld..][..k]);
                    assert!(a == b, "{g:?}, pixels from {p0}: pixel {j}");
                }
            }
        }
    }

    /// The odd number of blocks per row, and room for every tap.
    #[test]
    fn row_stride_holds_the_taps_in_an_odd_number_of_blocks() {
        for k in 1..2000 {
            let ld = row_stride(k);
            assert!(
                ld >= k && ld.is_multiple_of(NR) && (ld / NR) % 2 == 1,
                "k {k}: {ld}"
            );
            assert!(ld < k + 2 * NR, "k {k}: {ld}");
        }
    }

    /// Without the weights (no input gradient wanted), only dW is computed, as in f32.
    #[test]
    fn weight_gradient_alone_in_f32() {
        let g = geometry(20, (12, 12), 5, 1, 0);
        let o = 50;
        let x: Vec<f32> = values(g.chw(), 4).iter().map(|&v| v as f32).collect();
        let dy: Vec<f32> = values(o * g.p(), 5).iter().map(|&v| v as f32).collect();
        let kernel = ImplicitGemmBackward::<f32>::new(&g, o, &[]);
        let mut dw = vec![0.0; kernel.weight_grad_len()];
        let mut ws = vec![0.0; kernel.workspace()];
        kernel.backward_image(&dy, &x, None, Some(&mut dw), &mut ws);
        let w = vec![0.0f32; o * g.k()];
        let reference = Direct::new(&g, o, &w);
        let mut dw_ref = vec![0.0; reference.weight_grad_len()];
        let mut ws = vec![0.0; reference.workspace()];
        reference.backward_image(&dy, &x, None, Some(&mut dw_ref), &mut ws);
        for (a, b) in dw.iter().zip(&dw_ref) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}
