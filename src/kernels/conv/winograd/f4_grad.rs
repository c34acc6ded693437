//! Winograd F(4×4, 3×3) for the weight gradient, where the forward takes F(4×4) too:
//! `dW = Gᵀ [Σ_tiles Ũ ⊙ V] G` with `Ũ = A dY Aᵀ` (6×6, from each 4×4 gradient tile) and
//! `V = Bᵀ d B` (its 6×6 input patch), i.e. 36 products
//! `W̃[ξ] (o × c) += Ũ[ξ] (o × tiles) · V[ξ] (tiles × c)` with the tiles as the inner
//! dimension, transformed back once per batch ([`finish_weight_grad`]).
//!
//! As F(2×2)'s tile-major transforms, the transforms read NHWC copies of the input and the
//! gradient and run eight channels at a time. An F(4×4) image has a quarter of F(2×2)'s
//! tiles, so a call takes several images ([`WeightGrad4::images_per_call`]) to keep the
//! products' inner dimension long.

use super::f4::bt6;
use super::reference::G4;
use super::tile_major::{input_to_nhwc_width, load_patch};
use super::{add_weight_grad_products, position_stride, supports};
use crate::kernels::transpose::copy_transposed;
use crate::kernels::{Element, Geometry};

/// Transformed positions per tile (6×6).
const POSITIONS: usize = 36;

/// Tiles per call, about: the products' inner dimension.
const CALL_TILES: usize = 128;

/// The F(4×4) weight gradient of a layer of geometry `g` with `o` outputs.
pub(super) struct WeightGrad4 {
    geometry: Geometry,
    outputs: usize,
    rows: usize,
    cols: usize,
}

impl WeightGrad4 {
    pub(super) fn new(g: &Geometry, o: usize) -> Self {
        debug_assert!(supports(g));
        WeightGrad4 {
            geometry: *g,
            outputs: o,
            rows: g.oh.div_ceil(4),
            cols: g.ow.div_ceil(4),
        }
    }

    fn tiles(&self) -> usize {
        self.rows * self.cols
    }

    /// Images per call: about [`CALL_TILES`] tiles.
    pub(super) fn images_per_call(&self) -> usize {
        (CALL_TILES / self.tiles()).clamp(1, 16)
    }

    /// Elements of one image's padded NHWC input and NHWC gradient.
    fn nhwc_lens(&self) -> (usize, usize) {
        let (g, o) = (&self.geometry, self.outputs);
        let input = (4 * self.rows + 2) * (4 * self.cols + 2) * g.c;
        (input, 16 * self.tiles() * o)
    }

    /// The position strides of `Ũ` and `V` for a call's tiles.
    fn strides(&self) -> (usize, usize) {
        let nt = self.images_per_call() * self.tiles();
        (
            position_stride(self.outputs * nt),
            position_stride(self.geometry.c * nt),
        )
    }

    pub(super) fn workspace(&self) -> usize {
        let (input, grad) = self.nhwc_lens();
        let (u, v) = self.strides();
        input + grad + POSITIONS * (u + v)
    }

    /// Adds the transformed weight gradient (`36 × o × c`) of `imgs` images (at most
    /// [`WeightGrad4::images_per_call`]): their gradient `dy` and input `x`.
    pub(super) fn accumulate<T: Element>(
        &self,
        imgs: usize,
        dy: &[T],
        x: &[T],
        wt: &mut [T],
        workspace: &mut [T],
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { self.accumulate_avx2(imgs, dy, x, wt, workspace) };
        }
        self.accumulate_body(imgs, dy, x, wt, workspace)
    }

    /// [`WeightGrad4::accumulate`] compiled for AVX2: the 8-channel lane groups are vectors.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn accumulate_avx2<T: Element>(
        &self,
        imgs: usize,
        dy: &[T],
        x: &[T],
        wt: &mut [T],
        workspace: &mut [T],
    ) {
        self.accumulate_body(imgs, dy, x, wt, workspace)
    }

    #[inline(always)]
    fn accumulate_body<T: Element>(
        &self,
        imgs: usize,
        dy: &[T],
        x: &[T],
        wt: &mut [T],
        workspace: &mut [T],
    ) {
        let (g, o, c) = (&self.geometry, self.outputs, self.geometry.c);
        let (input_len, grad_len) = self.nhwc_lens();
        let (u_stride, v_stride) = self.strides();
        let (xn, rest) = workspace.split_at_mut(input_len);
        let (dyn_, rest) = rest.split_at_mut(grad_len);
        let (u, v) = rest.split_at_mut(POSITIONS * u_stride);
        let tiles = self.tiles();
        let nt = imgs * tiles;
        let (wp, row) = (4 * self.cols + 2, 4 * self.cols);
        for i in 0..imgs {
            input_to_nhwc_width(&x[i * g.chw()..][..g.chw()], g, wp, xn);
            transform_input_tiles(xn, c, (self.rows, self.cols), i * tiles, v, v_stride);
            grad_to_nhwc(&dy[i * o * g.p()..][..o * g.p()], o, g, row, dyn_);
            for ti in 0..self.rows {
                for tj in 0..self.cols {
                    let t = i * tiles + ti * self.cols + tj;
                    let at = (4 * ti * row + 4 * tj) * o;
                    by_lane_groups(
                        u,
                        o,
                        |u, oc| {
                            grad_tile::<T, 8>(dyn_, at + oc, row * o, o, u, t * o + oc, u_stride)
                        },
                        |u, oc| {
                            grad_tile::<T, 1>(dyn_, at + oc, row * o, o, u, t * o + oc, u_stride)
                        },
                    );
                }
            }
        }
        add_weight_grad_products(POSITIONS, (u, u_stride), (v, v_stride), (o, nt, c), wt);
    }
}

/// Calls `wide(dst, first)` for each whole group of 8 of `n` channels, then
/// `single(dst, ch)` for each channel left over.
#[inline(always)]
pub(super) fn by_lane_groups<T>(
    dst: &mut [T],
    n: usize,
    wide: impl Fn(&mut [T], usize),
    single: impl Fn(&mut [T], usize),
) {
    let whole = n - n % 8;
    for first in (0..whole).step_by(8) {
        wide(dst, first);
    }
    for ch in whole..n {
        single(dst, ch);
    }
}

/// `V[ξ][t][ci]` for the `rows × cols` tiles of one image, numbered from `t0`, from its
/// padded NHWC input `xn` (`4·cols + 2` pixels a row, `c` channels); position ξ's matrix
/// starts at `ξ·plane` in `v`.
#[inline(always)]
pub(super) fn transform_input_tiles<T: Element>(
    xn: &[T],
    c: usize,
    (rows, cols): (usize, usize),
    t0: usize,
    v: &mut [T],
    plane: usize,
) {
    let row = (4 * cols + 2) * c;
    for ti in 0..rows {
        for tj in 0..cols {
            let t = t0 + ti * cols + tj;
            let at = 4 * ti * row + 4 * tj * c;
            by_lane_groups(
                v,
                c,
                |v, ch| input_tile::<T, 8>(xn, at + ch, row, c, v, t * c + ch, plane),
                |v, ch| input_tile::<T, 1>(xn, at + ch, row, c, v, t * c + ch, plane),
            );
        }
    }
}

/// `dyn` (`4·rows × row × o`, NHWC): one image's output gradient `dy` (`o × oh × ow`), with
/// zeros where the last row or column of tiles reaches beyond the output.
fn grad_to_nhwc<T: Element>(dy: &[T], o: usize, g: &Geometry, row: usize, dyn_: &mut [T]) {
    if !g.oh.is_multiple_of(4) || !g.ow.is_multiple_of(4) {
        dyn_.fill(T::zero());
    }
    for r in 0..g.oh {
        copy_transposed(
            &dy[r * g.ow..],
            (o, g.ow, g.oh * g.ow),
            &mut dyn_[r * row * o..],
            o,
        );
    }
}

/// `A·d` for four lane groups (`A` 6×4, the transpose of F(4×4)'s `Aᵀ`).
#[inline(always)]
fn a6<T: Element, const L: usize>(d: &[[T; L]; 4]) -> [[T; L]; 6] {
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    let mut out = [[T::zero(); L]; 6];
    for l in 0..L {
        let (d0, d1, d2, d3) = (d[0][l], d[1][l], d[2][l], d[3][l]);
        let (even, odd) = (d0 + d2, d1 + d3);
        let (even4, odd2) = (d0 + four * d2, two * d1 + eight * d3);
        out[0][l] = d0;
        out[1][l] = even + odd;
        out[2][l] = even - odd;
        out[3][l] = even4 + odd2;
        out[4][l] = even4 - odd2;
        out[5][l] = d3;
    }
    out
}

/// `V[ξ][t][ch..ch + L]` of one tile from its 6×6 patch at `at` in the NHWC input `xn`
/// (`row` elements per padded row, `c` per pixel); `out` indexes tile `t`, channel `ch` of
/// position 0, and each position is `plane` further.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `a` picks a row across the six columns
fn input_tile<T: Element, const L: usize>(
    xn: &[T],
    at: usize,
    row: usize,
    c: usize,
    v: &mut [T],
    out: usize,
    plane: usize,
) {
    let d = load_patch::<T, L, 6>(xn, at, row, c);
    // Bᵀ down the patch's columns (index a), then along its rows (index b).
    let mut cols = [[[T::zero(); L]; 6]; 6];
    for (s, col) in cols.iter_mut().enumerate() {
        *col = bt6(&[d[0][s], d[1][s], d[2][s], d[3][s], d[4][s], d[5][s]]);
    }
    for a in 0..6 {
        let rows = [
            cols[0][a], cols[1][a], cols[2][a], cols[3][a], cols[4][a], cols[5][a],
        ];
        for (b, values) in bt6(&rows).iter().enumerate() {
            let at = out + (a * 6 + b) * plane;
            v[at..at + L].copy_from_slice(values);
        }
    }
}

/// `Ũ[ξ][t][oc..oc + L]` of one tile from its 4×4 gradient patch at `at` in the NHWC
/// gradient `dyn` (`row` elements per row, `o` per pixel); `out` indexes tile `t`, channel
/// `oc` of position 0, and each position is `plane` further.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `a` picks a row across the four columns
fn grad_tile<T: Element, const L: usize>(
    dyn_: &[T],
    at: usize,
    row: usize,
    o: usize,
    u: &mut [T],
    out: usize,
    plane: usize,
) {
    let d = load_patch::<T, L, 4>(dyn_, at, row, o);
    // A down the patch's columns (index a), then along its rows (index b).
    let mut cols = [[[T::zero(); L]; 6]; 4];
    for (s, col) in cols.iter_mut().enumerate() {
        *col = a6(&[d[0][s], d[1][s], d[2][s], d[3][s]]);
    }
    for a in 0..6 {
        let rows = [cols[0][a], cols[1][a], cols[2][a], cols[3][a]];
        for (b, values) in a6(&rows).iter().enumerate() {
            let at = out + (a * 6 + b) * plane;
            u[at..at + L].copy_from_slice(values);
        }
    }
}

/// Elements of an F(4×4) transformed weight gradient.
pub(super) fn weight_grad_len(o: usize, c: usize) -> usize {
    POSITIONS * o * c
}

/// The weight gradient `o × c × 3 × 3`, `dW[o][c] = Gᵀ W̃[·][o][c] G` (in f64, rounded
/// once), from the transformed gradient `wt` summed over the batch.
pub(super) fn finish_weight_grad<T: Element>(wt: &[T], o: usize, c: usize) -> Vec<T> {
    let mut dw = vec![T::zero(); o * c * 9];
    for (oc_ci, k) in dw.chunks_exact_mut(9).enumerate() {
        // (Gᵀ W̃)[i][b], then (Gᵀ W̃ G)[i][j].
        let mut left = [[0.0; 6]; 3];
        for (i, row) in left.iter_mut().enumerate() {
            for (b, value) in row.iter_mut().enumerate() {
                *value = (0..6)
                    .map(|a| G4[a][i] * wt[(a * 6 + b) * o * c + oc_ci].as_f64())
                    .sum();
            }
        }
        for i in 0..3 {
            for j in 0..3 {
                let value: f64 = (0..6).map(|b| left[i][b] * G4[b][j]).sum();
                k[3 * i + j] = T::from_f64(value);
            }
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::super::reference::{sandwich, AT4};
    use super::super::test_values as values;
    use super::*;
    use crate::kernels::conv::direct;

    /// `a6` is `A·d` with `A` the transpose of [`AT4`].
    #[test]
    fn a6_is_the_transpose_of_the_output_transform() {
        let d = values(4, 3);
        let out = a6(&std::array::from_fn(|k| [d[k]]));
        for a in 0..6 {
            let want: f64 = (0..4).map(|k| AT4[k][a] * d[k]).sum();
            assert!((out[a][0] - want).abs() < 1e-12, "row {a}");
        }
    }

    /// `finish_weight_grad` is `Gᵀ W̃ G`: the adjoint of the kernel transform, so
    /// `⟨G g Gᵀ, W̃⟩ = ⟨g, Gᵀ W̃ G⟩` for any kernel and transformed gradient.
    #[test]
    fn finish_is_the_adjoint_of_the_kernel_transform() {
        let g = values(9, 7);
        let wt = values(36, 8);
        let kernel: [[f64; 3]; 3] = std::array::from_fn(|i| std::array::from_fn(|j| g[3 * i + j]));
        let u = sandwich(&G4, &kernel, &G4);
        let lhs: f64 = (0..36).map(|i| u[i / 6][i % 6] * wt[i]).sum();
        let back = finish_weight_grad(&wt, 1, 1);
        let rhs: f64 = g.iter().zip(&back).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-11, "{lhs} vs {rhs}");
    }

    /// In f64, the weight gradient of a batch equals the direct convolution's: 11 input and
    /// 9 output channels (8 lanes and single ones), odd output sides, padding 0–2, more
    /// images than one call takes.
    #[test]
    fn weight_grad_matches_the_direct_convolution() {
        for (c, o, h, w, p, n) in [
            (11, 9, 16, 15, 1, 3),
            (3, 2, 14, 30, 0, 20),
            (2, 8, 13, 13, 2, 2),
        ] {
            let g = Geometry::new(c, (h, w), (3, 3), (1, 1), (p, p), (1, 1)).unwrap();
            let (x, dy) = (values(n * g.chw(), 1), values(n * o * g.p(), 2));
            let wg = WeightGrad4::new(&g, o);
            let mut wt = vec![0.0; weight_grad_len(o, c)];
            let mut ws = vec![f64::NAN; wg.workspace()];
            let per = wg.images_per_call();
            for first in (0..n).step_by(per) {
                let imgs = per.min(n - first);
                let dy = &dy[first * o * g.p()..(first + imgs) * o * g.p()];
                let x = &x[first * g.chw()..(first + imgs) * g.chw()];
                wg.accumulate(imgs, dy, x, &mut wt, &mut ws);
            }
            let got = finish_weight_grad(&wt, o, c);
            let mut want = vec![0.0; o * c * 9];
            for i in 0..n {
                let (x, dy) = (
                    &x[i * g.chw()..][..g.chw()],
                    &dy[i * o * g.p()..][..o * g.p()],
                );
                direct::weight_grad(dy, x, &g, o, &mut want);
            }
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-9 * (1.0 + b.abs()),
                    "{a} vs {b} for {:?}",
                    (c, o, h, w, p)
                );
            }
        }
    }
}
