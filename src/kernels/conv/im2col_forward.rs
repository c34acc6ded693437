//! The forward pass by im2col + GEMM ([`super::im2col`]'s columns): per tile of output
//! rows, or for a group of images on small maps in one product, with the activation (and
//! residual) applied per image while its outputs are in cache.

use super::im2col::{
    im2col, im2col_strided, images_per_gemm, max_tile_pixels, pixel_products, row_tiles,
};
use super::{ConvForward, Epilogue};
use crate::kernels::gemm::{gemm, MatMut, MatRef};
use crate::kernels::transpose::copy_transposed;
use crate::kernels::{Element, Geometry};

/// The forward pass by im2col + GEMM: `Y = W·im2col(X) + b`, per tile of output rows, or
/// for a group of small images in one product.
pub struct Im2colForward<T> {
    geometry: Geometry,
    outputs: usize,
    /// `W` (`o × k`) stored by column: the GEMMs take it as their left operand, which
    /// matrixmultiply packs with contiguous loads only when stored so. Transposed once per
    /// call here, not gathered again by every GEMM (LeNet's conv2: 25,000 weights per
    /// product).
    w_by_column: Vec<T>,
}

impl<T: Element> Im2colForward<T> {
    /// Prepares the `o × c × kh × kw` weights `w` of a layer of geometry `g`.
    pub fn new(g: &Geometry, o: usize, w: &[T]) -> Self {
        let k = g.k();
        let mut w_by_column = vec![T::zero(); o * k];
        copy_transposed(w, (o, k, k), &mut w_by_column, o);
        Im2colForward {
            geometry: *g,
            outputs: o,
            w_by_column,
        }
    }

    /// The weights as a `o × k` matrix view.
    fn weights(&self) -> MatRef<'_, T> {
        let (o, k) = (self.outputs, self.geometry.k());
        MatRef::new(&self.w_by_column, 0, (o, k), (1, o))
    }

    /// One image: `y` (`o × p`, any values) from `x`, tile by tile, the bias seeding the
    /// GEMM.
    fn image(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], cols: &mut [T]) {
        let (g, o) = (&self.geometry, self.outputs);
        let (k, p) = (g.k(), g.p());
        let beta = match bias {
            Some(b) => {
                for (row, &bv) in y.chunks_mut(p).zip(b.iter()) {
                    row.fill(bv);
                }
                T::one()
            }
            None => T::zero(),
        };
        for (r0, r1) in row_tiles(g) {
            let pt = (r1 - r0) * g.ow;
            im2col(x, g, (r0, r1), cols);
            // Y[:, tile] (=|+=) W[o×k] · cols[k×pt]
            gemm(
                self.weights(),
                MatRef::new(cols, 0, (k, pt), (pt, 1)),
                beta,
                MatMut::new(&mut y[r0 * g.ow..], (o, pt), p),
            );
        }
    }

    /// Several images through one product into a workspace, each column block then copied
    /// (plus bias) to its image, with `epilogue` (its residual the images') applied there.
    fn images(
        &self,
        x: &[T],
        bias: Option<&[T]>,
        epilogue: Option<Epilogue<'_, T>>,
        y: &mut [T],
        ws: &mut [T],
    ) {
        let (g, o) = (&self.geometry, self.outputs);
        let (k, p) = (g.k(), g.p());
        let imgs = y.len() / (o * p);
        if pixel_products(g) {
            // Pointwise layers on maps of a few pixels (mobilenet-v2's last layers on
            // 32×32 inputs): per pixel j the batch is the matrix X_j[imgs × c] as it lies
            // (rows c·p apart, columns p), and Y_j[imgs × o] = X_j · Wᵀ (Wᵀ is the
            // weights by column, row-major) one product with no copies.
            // The GEMMs overwrite; the bias is added in one pass after them, per image,
            // `(W·x) + b` as a seeded GEMM computes `1·(W·x) + 1·b`: bitwise the same.
            for j in 0..p {
                gemm(
                    MatRef::new(x, j, (imgs, k), (k * p, p)),
                    MatRef::new(&self.w_by_column, 0, (k, o), (o, 1)),
                    T::zero(),
                    MatMut::strided(&mut y[j..], (imgs, o), (o * p, p)),
                );
            }
            if bias.is_none() && epilogue.is_none() {
                return;
            }
            // The bias of every output of an image (each channel's `p` times), so that the
            // sums run over whole images and vectorise (a scalar add per element was 3.9%
            // of a mobilenet-v2 inference).
            let repeated: Option<Vec<T>> = bias.filter(|_| p > 1).map(|b| {
                b.iter()
                    .flat_map(|&bv| std::iter::repeat_n(bv, p))
                    .collect()
            });
            let bias = repeated.as_deref().or(bias);
            for (i, y_i) in y.chunks_exact_mut(o * p).enumerate() {
                if let Some(b) = bias {
                    y_i.iter_mut().zip(b).for_each(|(v, &bv)| *v += bv);
                }
                if let Some(epilogue) = epilogue {
                    epilogue.apply(y_i, i * o * p);
                }
            }
            return;
        }
        let cols_len = imgs * p;
        let (cols, product) = ws[..(k + o) * cols_len].split_at_mut(k * cols_len);
        for (i, x_i) in x.chunks_exact(g.chw()).enumerate() {
            im2col_strided(x_i, g, (0, g.oh), &mut cols[i * p..], cols_len);
        }
        // product[o × imgs·p] = W[o×k] · cols[k × imgs·p]
        gemm(
            self.weights(),
            MatRef::new(cols, 0, (k, cols_len), (cols_len, 1)),
            T::zero(),
            MatMut::new(product, (o, cols_len), cols_len),
        );
        for (i, y_i) in y.chunks_exact_mut(o * p).enumerate() {
            for (oc, row) in y_i.chunks_exact_mut(p).enumerate() {
                let from = &product[oc * cols_len + i * p..][..p];
                match bias {
                    // The same sum as the one-image path's `W·cols + 1·bias`.
                    Some(b) => {
                        for (out, &v) in row.iter_mut().zip(from) {
                            *out = v + b[oc];
                        }
                    }
                    None => row.copy_from_slice(from),
                }
            }
            if let Some(epilogue) = epilogue {
                epilogue.apply(y_i, i * o * p);
            }
        }
    }
}

impl<T: Element> ConvForward<T> for Im2colForward<T> {
    fn images_per_call(&self) -> usize {
        images_per_gemm(&self.geometry)
    }

    fn workspace(&self) -> usize {
        let g = &self.geometry;
        if pixel_products(g) {
            return 0;
        }
        match self.images_per_call() {
            1 => g.k() * max_tile_pixels(g),
            imgs => (g.k() + self.outputs) * imgs * g.p(),
        }
    }

    /// The GEMMs overwrite their outputs (β = 0), or add to the bias written first.
    fn writes_every_output(&self) -> bool {
        true
    }

    fn forward(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], workspace: &mut [T]) {
        if self.images_per_call() == 1 {
            let g = &self.geometry;
            for (x_i, y_i) in x
                .chunks_exact(g.chw())
                .zip(y.chunks_exact_mut(self.outputs * g.p()))
            {
                self.image(x_i, bias, y_i, workspace);
            }
        } else {
            self.images(x, bias, None, y, workspace);
        }
    }

    /// Fused where images share products (the epilogue applied per image while in cache);
    /// per-image products leave it to the caller's pass.
    fn forward_fused(
        &self,
        x: &[T],
        bias: Option<&[T]>,
        epilogue: Epilogue<'_, T>,
        y: &mut [T],
        workspace: &mut [T],
    ) -> bool {
        if self.images_per_call() == 1 {
            return false;
        }
        self.images(x, bias, Some(epilogue), y, workspace);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where images share products (pointwise on 1×1 and 2×2 maps, by pixel; a 3×3 layer
    /// on 4×4 maps, through the columns), the fused epilogues are bitwise `forward`
    /// followed by [`Epilogue::apply`], with and without bias, with NaN, −0 and outputs
    /// past 6 in the values and the outputs overwritten from NaN; per-image products
    /// decline, leaving the pass to the caller.
    #[test]
    fn fused_epilogues_equal_the_pass_after_the_forward() {
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (c, hw, k, pad) in [
            (7, 1, 1, 0),
            (5, 2, 1, 0),
            (3, 4, 3, 1),
            (2, 9, 3, 1),
            (2, 17, 3, 1),
        ] {
            let g = Geometry::new(c, (hw, hw), (k, k), (1, 1), (pad, pad), (1, 1)).unwrap();
            let (o, n) = (6, 5);
            let wave = |len: usize, seed: usize| -> Vec<f32> {
                (0..len)
                    .map(|i| ((i * 7 + seed) % 13) as f32 * 0.9 - 4.0)
                    .collect()
            };
            let mut x = wave(n * g.chw(), 1);
            x[3] = f32::NAN;
            let w = wave(o * g.k(), 2);
            let b = wave(o, 3);
            let mut residual = wave(n * o * g.p(), 4);
            residual[1] = -0.0;
            residual[2] = f32::NAN;
            let kernel = Im2colForward::new(&g, o, &w);
            let per = kernel.images_per_call().min(n);
            let one = o * g.p();
            // `run(y, epilogue)` calls the kernel on groups of at most `per` images, as
            // `conv2d_fused` does; `None` runs `forward`, else whether it fused.
            let run = |y: &mut [f32], bias: Option<&[f32]>, epilogue: Option<Epilogue<'_, f32>>| {
                let mut ws = vec![f32::NAN; kernel.workspace()];
                let mut took = true;
                for first in (0..n).step_by(per) {
                    let imgs = per.min(n - first);
                    let x = &x[first * g.chw()..][..imgs * g.chw()];
                    let y = &mut y[first * one..][..imgs * one];
                    match epilogue {
                        None => kernel.forward(x, bias, y, &mut ws),
                        Some(e) => {
                            let e = e.part(first * one, imgs * one);
                            took &= kernel.forward_fused(x, bias, e, y, &mut ws);
                        }
                    }
                }
                took
            };
            for bias in [None, Some(&b[..])] {
                let mut plain = vec![f32::NAN; n * one];
                run(&mut plain, bias, None);
                for epilogue in [
                    Epilogue::Relu,
                    Epilogue::Relu6,
                    Epilogue::Add(&residual),
                    Epilogue::AddRelu(&residual),
                ] {
                    let mut want = plain.clone();
                    epilogue.apply(&mut want, 0);
                    let mut fused = vec![f32::NAN; n * one];
                    let took = run(&mut fused, bias, Some(epilogue));
                    let case = format!("{epilogue:?} {g:?} bias {}", bias.is_some());
                    if kernel.images_per_call() == 1 {
                        assert!(!took, "{case}");
                        assert!(
                            fused.iter().all(|v| v.is_nan()),
                            "{case}: declined, untouched"
                        );
                        continue;
                    }
                    assert!(took, "{case}");
                    assert_eq!(bits(&fused), bits(&want), "{case}");
                }
            }
            // The values reach both sides of the clamp.
            assert!(residual.iter().any(|&v| v > 6.0) && residual.iter().any(|&v| v < 0.0));
        }
    }
}
