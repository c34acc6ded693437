//! Winograd F(4×4, 3×3) forward for maps [`super::f4`]'s row transforms do not take
//! (8×8: 2 tiles a row, 4 an image), tile-major with the channels in the lanes.
//!
//! The input is copied to NHWC and transformed tile by tile, eight channels at a time
//! (as the weight gradient's transforms are), into `V[ξ]` (`tiles × c`) for the tiles of
//! several images at once; each position's product `M[ξ] (tiles × o) = V[ξ] · U[ξ]ᵀ` runs
//! with the tiles as rows, and the output transform `Aᵀ M A` works tile by tile on eight
//! output channels at a time into an NHWC output, transposed back to NCHW.

use super::f4::at6;
use super::f4_grad::{by_lane_groups, transform_input_tiles};
use super::tile_major::{input_to_nhwc_width, load_patch};
use super::{position_stride, supports};
use crate::kernels::conv::ConvForward;
use crate::kernels::gemm::{gemm, MatMut, MatRef};
use crate::kernels::transpose::copy_transposed;
use crate::kernels::{Element, Geometry};

/// Transformed positions per tile (6×6).
const POSITIONS: usize = 36;

/// Tiles per call, about: the products' rows.
const CALL_TILES: usize = 128;

/// The forward pass by F(4×4, 3×3), tile-major: any layer Winograd supports, several images
/// per call.
pub struct Winograd4SmallForward<T> {
    geometry: Geometry,
    outputs: usize,
    /// `U[ξ]` (`o × c`) at `ξ·o·c`, computed in f64 and rounded once.
    u: Vec<T>,
    rows: usize,
    cols: usize,
}

impl<T: Element> Winograd4SmallForward<T> {
    /// Prepares the `o × c × 3 × 3` weights `w` of a layer of geometry `g`.
    ///
    /// # Panics
    /// If Winograd does not support `g` ([`supports`]).
    pub fn new(g: &Geometry, o: usize, w: &[T]) -> Self {
        assert!(supports(g), "F(4×4) needs a 3×3 stride-1 layer, not {g:?}");
        Winograd4SmallForward {
            geometry: *g,
            outputs: o,
            u: super::weights::transform_weights_f4(w, o, g.c),
            rows: g.oh.div_ceil(4),
            cols: g.ow.div_ceil(4),
        }
    }

    fn tiles(&self) -> usize {
        self.rows * self.cols
    }

    /// Images per product: about [`CALL_TILES`] tiles.
    fn images(&self) -> usize {
        (CALL_TILES / self.tiles()).clamp(1, 16)
    }

    /// The parts of the workspace: the NHWC input, `V`'s and `M`'s position strides, the
    /// NHWC output.
    fn parts(&self) -> (usize, usize, usize, usize) {
        let (g, o) = (&self.geometry, self.outputs);
        let nt = self.images() * self.tiles();
        (
            (4 * self.rows + 2) * (4 * self.cols + 2) * g.c,
            position_stride(nt * g.c),
            position_stride(nt * o),
            16 * self.tiles() * o,
        )
    }

    #[inline(always)]
    fn images_body(&self, imgs: usize, x: &[T], bias: Option<&[T]>, y: &mut [T], ws: &mut [T]) {
        let (g, o, c) = (&self.geometry, self.outputs, self.geometry.c);
        let (input_len, v_stride, m_stride, out_len) = self.parts();
        let (xn, rest) = ws.split_at_mut(input_len);
        let (v, rest) = rest.split_at_mut(POSITIONS * v_stride);
        let (m, rest) = rest.split_at_mut(POSITIONS * m_stride);
        let yn = &mut rest[..out_len];
        let (tiles, wp) = (self.tiles(), 4 * self.cols + 2);
        let nt = imgs * tiles;
        for i in 0..imgs {
            input_to_nhwc_width(&x[i * g.chw()..][..g.chw()], g, wp, xn);
            transform_input_tiles(xn, c, (self.rows, self.cols), i * tiles, v, v_stride);
        }
        for xi in 0..POSITIONS {
            // M[ξ] (nt × o) = V[ξ] (nt × c) · U[ξ]ᵀ (c × o)
            gemm(
                MatRef::new(v, xi * v_stride, (nt, c), (c, 1)),
                MatRef::new(&self.u, xi * o * c, (c, o), (1, c)),
                T::zero(),
                MatMut::new(&mut m[xi * m_stride..], (nt, o), o),
            );
        }
        let row = 4 * self.cols;
        for i in 0..imgs {
            for ti in 0..self.rows {
                for tj in 0..self.cols {
                    let t = i * tiles + ti * self.cols + tj;
                    let at = (4 * ti * row + 4 * tj) * o;
                    by_lane_groups(
                        yn,
                        o,
                        |yn, oc| {
                            let b = lanes_of_bias::<T, 8>(bias, oc);
                            output_tile::<T, 8>(
                                m,
                                t * o + oc,
                                m_stride,
                                &b,
                                yn,
                                at + oc,
                                row * o,
                                o,
                            )
                        },
                        |yn, oc| {
                            let b = lanes_of_bias::<T, 1>(bias, oc);
                            output_tile::<T, 1>(
                                m,
                                t * o + oc,
                                m_stride,
                                &b,
                                yn,
                                at + oc,
                                row * o,
                                o,
                            )
                        },
                    );
                }
            }
            // Back to NCHW, cut at the output's edges.
            let y_i = &mut y[i * o * g.p()..][..o * g.p()];
            for r in 0..g.oh {
                copy_transposed(
                    &yn[r * row * o..],
                    (g.ow, o, o),
                    &mut y_i[r * g.ow..],
                    g.oh * g.ow,
                );
            }
        }
    }

    /// [`Winograd4SmallForward::images_body`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn images_avx2(&self, imgs: usize, x: &[T], bias: Option<&[T]>, y: &mut [T], ws: &mut [T]) {
        self.images_body(imgs, x, bias, y, ws)
    }
}

/// `L` output channels' biases from `oc` (zeros without a bias).
#[inline(always)]
fn lanes_of_bias<T: Element, const L: usize>(bias: Option<&[T]>, oc: usize) -> [T; L] {
    let mut out = [T::zero(); L];
    if let Some(b) = bias {
        out.copy_from_slice(&b[oc..oc + L]);
    }
    out
}

/// `Y = Aᵀ M A + bias` of one tile for `L` output channels: `M[ξ]` at `from + ξ·plane` in
/// `m`, the 4×4 output pixels written from `at` into the NHWC output `yn` (`row` elements
/// per row, `o` per pixel).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::needless_range_loop)] // `u` picks a row across the six columns
fn output_tile<T: Element, const L: usize>(
    m: &[T],
    from: usize,
    plane: usize,
    bias: &[T; L],
    yn: &mut [T],
    at: usize,
    row: usize,
    o: usize,
) {
    let d = load_patch::<T, L, 6>(m, from, 6 * plane, plane);
    // Aᵀ down the columns (index a), then along the rows (index b), the bias added last.
    let mut cols = [[[T::zero(); L]; 4]; 6];
    for (b, col) in cols.iter_mut().enumerate() {
        *col = at6(
            &[d[0][b], d[1][b], d[2][b], d[3][b], d[4][b], d[5][b]],
            T::zero(),
        );
    }
    for u in 0..4 {
        let px = at6(
            &[
                cols[0][u], cols[1][u], cols[2][u], cols[3][u], cols[4][u], cols[5][u],
            ],
            T::zero(),
        );
        for (v, values) in px.iter().enumerate() {
            let to = at + u * row + v * o;
            for l in 0..L {
                yn[to + l] = values[l] + bias[l];
            }
        }
    }
}

impl<T: Element> ConvForward<T> for Winograd4SmallForward<T> {
    /// Every tile's output transform writes its pixels (bias included), and the tiles
    /// cover the map: the output is not zeroed first (the tests start from NaN).
    fn writes_every_output(&self) -> bool {
        true
    }

    fn images_per_call(&self) -> usize {
        self.images()
    }

    fn workspace(&self) -> usize {
        let (input, v, m, out) = self.parts();
        input + POSITIONS * (v + m) + out
    }

    fn forward(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], workspace: &mut [T]) {
        let (g, o) = (&self.geometry, self.outputs);
        let n = x.len() / g.chw().max(1);
        let per = self.images();
        for first in (0..n).step_by(per) {
            let imgs = per.min(n - first);
            let x = &x[first * g.chw()..(first + imgs) * g.chw()];
            let y = &mut y[first * o * g.p()..(first + imgs) * o * g.p()];
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                unsafe { self.images_avx2(imgs, x, bias, y, workspace) };
                continue;
            }
            self.images_body(imgs, x, bias, y, workspace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_values as values;
    use super::*;
    use crate::kernels::conv::direct;

    /// In f64 equal to the direct convolution to rounding: 8×8 maps and odd sides, 9 and 17
    /// channels (8 lanes and single ones), padding 0–2, more images than one product takes,
    /// with and without a bias; and the portable body equals the dispatched one.
    #[test]
    fn small_maps_match_the_direct_convolution() {
        for (c, o, h, w, p, n) in [
            (9, 17, 8, 8, 1, 11),
            (2, 3, 7, 5, 2, 3),
            (16, 8, 10, 9, 0, 2),
            (3, 2, 16, 16, 1, 1),
        ] {
            let g = Geometry::new(c, (h, w), (3, 3), (1, 1), (p, p), (1, 1)).unwrap();
            let (x, k, b) = (values(n * g.chw(), 1), values(o * c * 9, 2), values(o, 3));
            let fast = Winograd4SmallForward::new(&g, o, &k);
            assert!(fast.writes_every_output());
            for bias in [Some(&b[..]), None] {
                let mut y = vec![f64::NAN; n * o * g.p()];
                let mut ws = vec![f64::NAN; fast.workspace()];
                fast.forward(&x, bias, &mut y, &mut ws);
                let mut want = vec![0.0; n * o * g.p()];
                for (x_i, y_i) in x
                    .chunks_exact(g.chw())
                    .zip(want.chunks_exact_mut(o * g.p()))
                {
                    direct::forward(x_i, &k, bias, &g, o, y_i);
                }
                for (a, b) in y.iter().zip(&want) {
                    assert!(
                        (a - b).abs() < 1e-11 * (1.0 + b.abs()),
                        "{a} vs {b} for {g:?}"
                    );
                }
                let mut plain = vec![f64::NAN; n * o * g.p()];
                let per = fast.images();
                for first in (0..n).step_by(per) {
                    let imgs = per.min(n - first);
                    fast.images_body(
                        imgs,
                        &x[first * g.chw()..(first + imgs) * g.chw()],
                        bias,
                        &mut plain[first * o * g.p()..(first + imgs) * o * g.p()],
                        &mut ws,
                    );
                }
                assert_eq!(plain, y);
            }
        }
    }
}
