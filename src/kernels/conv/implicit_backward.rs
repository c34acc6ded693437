//! The backward pass of the implicit-GEMM layers, per tile of output rows as
//! [`Im2colBackward`](super::im2col::Im2colBackward)'s, with the input gradient on the
//! forward pass's micro-kernel: `dcols (k × pt) = Wᵀ (k × o) · dY[:, tile] (o × pt)`, then
//! `col2im`, with `Wᵀ` packed once per call. matrixmultiply packs the whole weight matrix
//! again for every tile: LeNet's conv2 (25,000 weights, one 64-pixel tile per image) did so
//! 64 times a batch, for 1.6 M multiply-adds each. The weight gradient stays
//! matrixmultiply's (`im2col::add_tile_weight_grad`): on the micro-kernel, with `dY`'s tile
//! packed as the left operand, resnet20's stride-2 layers ran 5–15% slower.

use super::im2col::{add_tile_weight_grad, col2im, max_tile_pixels, row_tiles};
use super::ConvBackward;
use crate::kernels::microkernel::{multiply_block, PackedRows, NR};
use crate::kernels::{Element, Geometry};

/// The backward pass of a dense (one-group) convolution with dX on the micro-kernel.
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
}

impl<T: Element> ConvBackward<T> for ImplicitGemmBackward<T> {
    /// A tile's columns (or column gradient), the columns transposed, the tile of `dY`
    /// transposed, and one block of `dY` padded to [`NR`] pixels.
    fn workspace(&self) -> usize {
        let (g, o) = (&self.geometry, self.outputs);
        let tile = max_tile_pixels(g);
        (2 * g.k() + o) * tile + o * NR
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
        let (cols, rest) = ws.split_at_mut(k * tile);
        let (cols_t, rest) = rest.split_at_mut(k * tile);
        let (dy_t, dy_block) = rest.split_at_mut(o * tile);
        for (r0, r1) in row_tiles(g) {
            let (p0, pt) = (r0 * g.ow, (r1 - r0) * g.ow);
            if let Some(dw) = dw.as_deref_mut() {
                add_tile_weight_grad(dy, x, g, o, (r0, r1), (cols, cols_t, dy_t), dw);
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
                col2im(&cols[..k * pt], g, (r0, r1), dx);
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
    /// divide, pixel counts that are not a multiple of 16, rows longer than a tile, and a
    /// tap count that is not a multiple of 16.
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
