//! The per-image drivers: blocks of tile rows through transform, 16 GEMMs and inverse
//! transform, compiled twice (plain and with AVX2 enabled, chosen at run time).

use super::f4_grad::{self, WeightGrad4};
use super::rows::{
    scatter_input_grad, scratch_len, transform_input, transform_output, transform_output_grad,
};
use super::tile_major::{
    grad_to_nhwc, input_to_nhwc, transform_input_tile_major, transform_output_grad_tile_major,
};
use super::{
    add_weight_grad_products, position_stride, Tiles, Winograd4Forward, Winograd4SmallForward,
    POSITIONS,
};
use crate::kernels::conv::{ConvBackward, ConvForward};
use crate::kernels::microkernel::{multiply_block, PackedRows, NR};
use crate::kernels::{Element, Geometry};

/// Workspace (elements) for [`forward_image`]: the block's transformed input and products,
/// the transforms' scratch, and a block of [`NR`] columns for the last, narrower one.
fn forward_workspace(g: &Geometry, o: usize) -> usize {
    let tiles = Tiles::of(g);
    let cap = tiles.block_capacity();
    POSITIONS * (position_stride(g.c * cap) + position_stride(o * cap))
        + scratch_len(&tiles)
        + g.c * NR
}

/// `M (o × nt) = U · V (c × nt)`, both row-major with rows `nt` apart, by the micro-kernel:
/// blocks of [`NR`] tiles read in place, the last narrower one copied into `tail` first.
#[inline(always)]
pub(super) fn multiply_tiles<T: Element>(
    u: &PackedRows<T>,
    v: &[T],
    nt: usize,
    m: &mut [T],
    tail: &mut [T],
) {
    let c = u.dims().1;
    for first in (0..nt).step_by(NR) {
        let n = (nt - first).min(NR);
        if n == NR {
            multiply_block(u, (&v[first..], nt), NR, None, &mut m[first..], nt);
        } else {
            for (ci, row) in tail.chunks_exact_mut(NR).take(c).enumerate() {
                row[..n].copy_from_slice(&v[ci * nt + first..][..n]);
                row[n..].fill(T::zero());
            }
            multiply_block(u, (tail, NR), n, None, &mut m[first..], nt);
        }
    }
}

/// One image's convolution: `y` (`o × oh × ow`) from `x` (`c × h × w`), the transformed
/// weights `u` ([`transform_weights`] packed per position for the micro-kernel) and an
/// optional bias.
fn forward_image<T: Element>(
    x: &[T],
    g: &Geometry,
    u: &[PackedRows<T>],
    o: usize,
    bias: Option<&[T]>,
    y: &mut [T],
    workspace: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { forward_image_avx2(x, g, u, o, bias, y, workspace) };
    }
    forward_image_body(x, g, u, o, bias, y, workspace)
}

/// [`forward_image`] compiled for AVX2: the transforms' loops run 8 floats wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn forward_image_avx2<T: Element>(
    x: &[T],
    g: &Geometry,
    u: &[PackedRows<T>],
    o: usize,
    bias: Option<&[T]>,
    y: &mut [T],
    workspace: &mut [T],
) {
    forward_image_body(x, g, u, o, bias, y, workspace)
}

#[inline(always)]
fn forward_image_body<T: Element>(
    x: &[T],
    g: &Geometry,
    u: &[PackedRows<T>],
    o: usize,
    bias: Option<&[T]>,
    y: &mut [T],
    workspace: &mut [T],
) {
    let tiles = Tiles::of(g);
    let cap = tiles.block_capacity();
    let (v_stride, m_stride) = (position_stride(g.c * cap), position_stride(o * cap));
    let (v, rest) = workspace.split_at_mut(POSITIONS * v_stride);
    let (m, rest) = rest.split_at_mut(POSITIONS * m_stride);
    let (tail, scratch) = rest.split_at_mut(g.c * NR);
    for block in tiles.blocks() {
        let nt = (block.1 - block.0) * tiles.cols;
        transform_input(x, g, block, v, v_stride, scratch);
        for (xi, u) in u.iter().enumerate() {
            // M[ξ] (o × nt) = U[ξ] (o × c) · V[ξ] (c × nt)
            let (v, m) = (&v[xi * v_stride..], &mut m[xi * m_stride..]);
            multiply_tiles(u, v, nt, m, tail);
        }
        transform_output(m, m_stride, o, g, block, bias, y, scratch);
    }
}

/// Workspace (elements) for [`backward_image`].
fn backward_workspace(g: &Geometry, o: usize) -> usize {
    let tiles = Tiles::of(g);
    let cap = tiles.block_capacity();
    let planes = g.c * tiles.padded_height() * tiles.padded_width();
    // Ũ (either layout), V (tile-major) or M' in one buffer, the padded dX planes, the
    // padded NHWC input (as big as the planes), the NHWC gradient, the transforms' scratch.
    let grad_nhwc = 4 * tiles.rows * tiles.cols * o;
    POSITIONS * (position_stride(o * cap) + position_stride(g.c * cap))
        + 2 * planes
        + grad_nhwc
        + scratch_len(&tiles)
        + o * NR
}

/// One image's backward pass. With `dx`, writes the image's input gradient (`c × h × w`)
/// from the transformed weights `u` (`U[ξ]ᵀ`, packed per position); with `wt`, adds the image's transformed weight
/// gradient (`16 × o × c`, see [`finish_weight_grad`]) computed from its input `x`.
#[allow(clippy::too_many_arguments)]
fn backward_image<T: Element>(
    dy: &[T],
    g: &Geometry,
    o: usize,
    u: &[PackedRows<T>],
    x: &[T],
    dx: Option<&mut [T]>,
    wt: Option<&mut [T]>,
    workspace: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { backward_image_avx2(dy, g, o, u, x, dx, wt, workspace) };
    }
    backward_image_body(dy, g, o, u, x, dx, wt, workspace)
}

/// [`backward_image`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn backward_image_avx2<T: Element>(
    dy: &[T],
    g: &Geometry,
    o: usize,
    u: &[PackedRows<T>],
    x: &[T],
    dx: Option<&mut [T]>,
    wt: Option<&mut [T]>,
    workspace: &mut [T],
) {
    backward_image_body(dy, g, o, u, x, dx, wt, workspace)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_image_body<T: Element>(
    dy: &[T],
    g: &Geometry,
    o: usize,
    u: &[PackedRows<T>],
    x: &[T],
    dx: Option<&mut [T]>,
    wt: Option<&mut [T]>,
    workspace: &mut [T],
) {
    let tiles = Tiles::of(g);
    let cap = tiles.block_capacity();
    let c = g.c;
    let plane_len = c * tiles.padded_height() * tiles.padded_width();
    let (u_stride, c_stride) = (position_stride(o * cap), position_stride(c * cap));
    // The dW products of a block run before its dX products, and each pair of operands
    // shares one pair of buffers, so that a block's working set stays in L2.
    let (ut, rest) = workspace.split_at_mut(POSITIONS * u_stride);
    let (dyn_, rest) = rest.split_at_mut(4 * tiles.rows * tiles.cols * o);
    let (v, rest) = rest.split_at_mut(POSITIONS * c_stride);
    let (planes, rest) = rest.split_at_mut(plane_len);
    let (xn, rest) = rest.split_at_mut(plane_len);
    let (tail, scratch) = rest.split_at_mut(o * NR);
    if dx.is_some() {
        planes.fill(T::zero());
    }
    let mut wt = wt;
    if wt.is_some() {
        input_to_nhwc(x, g, xn);
        grad_to_nhwc(dy, o, g, dyn_);
    }
    for block in tiles.blocks() {
        let nt = (block.1 - block.0) * tiles.cols;
        if let Some(wt) = wt.as_deref_mut() {
            transform_output_grad_tile_major(dyn_, o, g, block, ut, u_stride);
            transform_input_tile_major(xn, g, block, v, c_stride);
            add_weight_grad_products(POSITIONS, (ut, u_stride), (v, c_stride), (o, nt, c), wt);
        }
        if dx.is_some() {
            transform_output_grad(dy, o, g, block, ut, u_stride, scratch);
            for (xi, u) in u.iter().enumerate() {
                // M'[ξ] (c × nt) = U[ξ]ᵀ (c × o) · Ũ[ξ] (o × nt)
                let (ut, m) = (&ut[xi * u_stride..], &mut v[xi * c_stride..]);
                multiply_tiles(u, ut, nt, m, tail);
            }
            scatter_input_grad(v, c_stride, g, block, planes, scratch);
        }
    }
    if let Some(dx) = dx {
        // Crop the padding: input pixel (ih, iw) is padded (ih + ph, iw + pw).
        let (wp, hp) = (tiles.padded_width(), tiles.padded_height());
        let (ph, pw) = g.padding;
        for (ci, out) in dx.chunks_exact_mut(g.h * g.w).enumerate() {
            for (ih, row) in out.chunks_exact_mut(g.w).enumerate() {
                let src = &planes[(ci * hp + ih + ph) * wp + pw..][..g.w];
                row.copy_from_slice(src);
            }
        }
    }
}

/// The forward pass by Winograd, with the weights transformed and packed for the
/// micro-kernel once per call, one `o × c` matrix per transformed position.
pub struct WinogradForward<T> {
    geometry: Geometry,
    outputs: usize,
    u: Vec<PackedRows<T>>,
}

impl<T: Element> WinogradForward<T> {
    /// Prepares the `o × c × 3 × 3` weights `w` of a layer of geometry `g`
    /// ([`supports`](super::supports) must hold).
    pub fn new(g: &Geometry, o: usize, w: &[T]) -> Self {
        let c = g.c;
        let u = super::transform_weights(w, o, c, super::WeightLayout::ByOutput);
        WinogradForward {
            geometry: *g,
            outputs: o,
            u: u.chunks_exact(o * c)
                .map(|u| PackedRows::new(u, (o, c), (c, 1)))
                .collect(),
        }
    }
}

impl<T: Element> ConvForward<T> for WinogradForward<T> {
    fn workspace(&self) -> usize {
        forward_workspace(&self.geometry, self.outputs)
    }

    fn forward(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], workspace: &mut [T]) {
        let (g, o) = (&self.geometry, self.outputs);
        for (x_i, y_i) in x.chunks_exact(g.chw()).zip(y.chunks_exact_mut(o * g.p())) {
            forward_image(x_i, g, &self.u, o, bias, y_i, workspace);
        }
    }
}

/// The backward pass by Winograd: dX from the transformed weights, transposed and packed
/// for the micro-kernel per position; dW accumulated transformed and brought back once
/// ([`finish_weight_grad`](super::finish_weight_grad)).
///
/// By F(4×4, 3×3) ([`WinogradBackward::new`]), dX is computed as what it is, a forward
/// convolution of dY with the kernels flipped and transposed (`o` inputs, `c` outputs,
/// padding `2 − p`), by [`Winograd4Forward`] or [`Winograd4SmallForward`], and dW by the
/// F(4×4) tile-major transforms; by F(2×2, 3×3) ([`WinogradBackward::f2`]) as above.
pub struct WinogradBackward<T> {
    geometry: Geometry,
    outputs: usize,
    u: Vec<PackedRows<T>>,
    /// dX by F(4×4), where it applies.
    dx4: Option<Box<dyn ConvForward<T>>>,
    /// dW by F(4×4), where the forward takes F(4×4).
    dw4: Option<WeightGrad4>,
}

impl<T: Element> WinogradBackward<T> {
    /// A layer of geometry `g` with the `o × c × 3 × 3` weights `w` (empty when no input
    /// gradient is wanted: then nothing is transformed), by F(4×4, 3×3): dX by
    /// [`Winograd4Forward`] or [`Winograd4SmallForward`], dW by the F(4×4) transforms.
    pub fn new(g: &Geometry, o: usize, w: &[T]) -> Self {
        Self::with_tiles(g, o, w, true)
    }

    /// The same by F(2×2, 3×3): the smaller rounding error.
    pub fn f2(g: &Geometry, o: usize, w: &[T]) -> Self {
        Self::with_tiles(g, o, w, false)
    }

    fn with_tiles(g: &Geometry, o: usize, w: &[T], f4: bool) -> Self {
        let c = g.c;
        let dx4 = (f4 && !w.is_empty())
            .then(|| crate::kernels::conv::transposed_layer(g, o, w))
            .flatten()
            .map(|(gx, flipped)| -> Box<dyn ConvForward<T>> {
                if super::f4::prefers(&gx) {
                    Box::new(Winograd4Forward::new(&gx, c, &flipped))
                } else {
                    Box::new(Winograd4SmallForward::new(&gx, c, &flipped))
                }
            });
        let u = if w.is_empty() || dx4.is_some() {
            Vec::new()
        } else {
            let u = super::transform_weights(w, o, c, super::WeightLayout::ByOutput);
            // U[ξ]ᵀ (c × o): element (ci, oc) of U[ξ] stored by output channel.
            u.chunks_exact(o * c)
                .map(|u| PackedRows::new(u, (c, o), (1, c)))
                .collect()
        };
        WinogradBackward {
            geometry: *g,
            outputs: o,
            u,
            dx4,
            dw4: f4.then(|| WeightGrad4::new(g, o)),
        }
    }
}

impl<T: Element> ConvBackward<T> for WinogradBackward<T> {
    fn workspace(&self) -> usize {
        let dx4 = self.dx4.as_ref().map_or(0, |f4| f4.workspace());
        let dw4 = self.dw4.as_ref().map_or(0, |f4| f4.workspace());
        backward_workspace(&self.geometry, self.outputs)
            .max(dx4)
            .max(dw4)
    }

    fn weight_grad_len(&self) -> usize {
        let (o, c) = (self.outputs, self.geometry.c);
        match self.dw4 {
            Some(_) => f4_grad::weight_grad_len(o, c),
            None => super::weight_grad_len(o, c),
        }
    }

    fn images_per_call(&self) -> usize {
        self.dw4.as_ref().map_or(1, |f4| f4.images_per_call())
    }

    /// dX by F(4×4) is a forward pass, which writes every element; by F(2×2) each tile's
    /// patch is added into the overlapping ones.
    fn writes_every_input_grad(&self) -> bool {
        self.dx4.as_ref().is_some_and(|f4| f4.writes_every_output())
    }

    fn backward_images(
        &self,
        imgs: usize,
        dy: &[T],
        x: &[T],
        dx: Option<&mut [T]>,
        mut dw: Option<&mut [T]>,
        workspace: &mut [T],
    ) {
        let (g, o) = (&self.geometry, self.outputs);
        if let (Some(f4), Some(dw)) = (&self.dw4, dw.as_deref_mut()) {
            f4.accumulate(imgs, dy, x, dw, workspace);
        }
        let mut dw_f2 = if self.dw4.is_some() { None } else { dw };
        let mut dx_f2 = match (&self.dx4, dx) {
            (Some(f4), Some(dx)) => {
                f4.forward(dy, None, dx, workspace);
                None
            }
            (_, dx) => dx,
        };
        if dx_f2.is_none() && dw_f2.is_none() {
            return;
        }
        // What is left runs by F(2×2), one image at a time.
        let (dy_len, x_len, dx_len) = (o * g.p(), x.len() / imgs.max(1), g.chw());
        for i in 0..imgs {
            let dx = dx_f2.as_deref_mut().map(|d| &mut d[i * dx_len..][..dx_len]);
            let (dy, x) = (&dy[i * dy_len..][..dy_len], &x[i * x_len..][..x_len]);
            backward_image(dy, g, o, &self.u, x, dx, dw_f2.as_deref_mut(), workspace);
        }
    }

    fn backward_image(
        &self,
        dy: &[T],
        x: &[T],
        dx: Option<&mut [T]>,
        dw: Option<&mut [T]>,
        workspace: &mut [T],
    ) {
        self.backward_images(1, dy, x, dx, dw, workspace)
    }

    fn finish_weight_grad(&self, summed: Vec<T>) -> Vec<T> {
        let (o, c) = (self.outputs, self.geometry.c);
        match self.dw4 {
            Some(_) => f4_grad::finish_weight_grad(&summed, o, c),
            None => super::finish_weight_grad(&summed, o, c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_values as values;
    use super::*;
    use crate::kernels::conv::direct;

    /// dX by F(4×4) (rows of 8 tiles, of 4, and the small maps' tile-major path) into a
    /// dX full of NaN, as [`ConvBackward::writes_every_input_grad`] allows, and dW, against
    /// the definition; F(2×2) makes no such claim.
    #[test]
    fn input_grad_by_f4_overwrites_dx_and_both_match_the_definition() {
        for (c, o, h, w, p, imgs) in [
            (3, 5, 32, 32, 1, 2),
            (4, 2, 16, 15, 1, 3),
            (2, 3, 8, 8, 1, 2),
        ] {
            let g = Geometry::new(c, (h, w), (3, 3), (1, 1), (p, p), (1, 1)).unwrap();
            let (x, k, dy) = (
                values(imgs * g.chw(), 1),
                values(o * c * 9, 2),
                values(imgs * o * g.p(), 3),
            );
            let kernel = WinogradBackward::new(&g, o, &k);
            assert!(kernel.writes_every_input_grad(), "{g:?}");
            assert!(!WinogradBackward::f2(&g, o, &k).writes_every_input_grad());
            let mut dx = vec![f64::NAN; imgs * g.chw()];
            let mut dw = vec![0.0; kernel.weight_grad_len()];
            let mut ws = vec![f64::NAN; kernel.workspace()];
            let per = kernel.images_per_call();
            for first in (0..imgs).step_by(per) {
                let n = per.min(imgs - first);
                kernel.backward_images(
                    n,
                    &dy[first * o * g.p()..(first + n) * o * g.p()],
                    &x[first * g.chw()..(first + n) * g.chw()],
                    Some(&mut dx[first * g.chw()..(first + n) * g.chw()]),
                    Some(&mut dw),
                    &mut ws,
                );
            }
            let dw = kernel.finish_weight_grad(dw);
            let (mut dx_ref, mut dw_ref) = (vec![0.0; imgs * g.chw()], vec![0.0; o * c * 9]);
            for i in 0..imgs {
                let dy_i = &dy[i * o * g.p()..][..o * g.p()];
                direct::input_grad(dy_i, &k, &g, o, &mut dx_ref[i * g.chw()..][..g.chw()]);
                direct::weight_grad(dy_i, &x[i * g.chw()..][..g.chw()], &g, o, &mut dw_ref);
            }
            for (a, e) in dx.iter().zip(&dx_ref).chain(dw.iter().zip(&dw_ref)) {
                assert!((a - e).abs() < 1e-10 * (1.0 + e.abs()), "{g:?}: {a} vs {e}");
            }
        }
    }
}
