//! Winograd F(2×2, 3×3) and F(4×4, 3×3) one tile at a time, with their matrices written
//! out: the readable version of what the row and tile-major transforms compute in bulk.
//!
//! An `m×m` output tile of a 3×3 correlation is `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, summed
//! over input channels, for the `(m+2)×(m+2)` input patch `d` under the tile and the
//! kernel `g` (Lavin & Gray, 2016). The fast paths are tested against this, and this
//! against the direct convolution.

use crate::kernels::{Element, Geometry};

/// `Bᵀ` (4×4): the input transform.
pub const BT: [[f64; 4]; 4] = [
    [1.0, 0.0, -1.0, 0.0],
    [0.0, 1.0, 1.0, 0.0],
    [0.0, -1.0, 1.0, 0.0],
    [0.0, 1.0, 0.0, -1.0],
];

/// `G` (4×3): the kernel transform.
pub const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// `Aᵀ` (2×4): the output transform.
pub const AT: [[f64; 4]; 2] = [[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, -1.0]];

/// F(4×4, 3×3)'s `Bᵀ` (6×6), for the interpolation points 0, ±1, ±2 (and ∞).
pub const BT4: [[f64; 6]; 6] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];

/// F(4×4, 3×3)'s `G` (6×3).
pub const G4: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// F(4×4, 3×3)'s `Aᵀ` (4×6).
pub const AT4: [[f64; 6]; 4] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
];

/// `L · X · Rᵀ` for an `r × c` matrix `X`, an `m × r` matrix `L` and an `n × c` matrix
/// `R`: the two-sided transform every stage of Winograd is made of.
pub(super) fn sandwich<const M: usize, const R: usize, const C: usize, const N: usize>(
    l: &[[f64; R]; M],
    x: &[[f64; C]; R],
    r: &[[f64; C]; N],
) -> [[f64; N]; M] {
    let mut lx = [[0.0; C]; M];
    for i in 0..M {
        for j in 0..C {
            lx[i][j] = (0..R).map(|k| l[i][k] * x[k][j]).sum();
        }
    }
    let mut out = [[0.0; N]; M];
    for i in 0..M {
        for j in 0..N {
            out[i][j] = (0..C).map(|k| lx[i][k] * r[j][k]).sum();
        }
    }
    out
}

/// `U = G g Gᵀ`: a 3×3 kernel in the transformed domain (4×4).
pub fn transform_kernel(g: &[[f64; 3]; 3]) -> [[f64; 4]; 4] {
    sandwich(&G, g, &G)
}

/// One image's convolution (`y`: `o × oh × ow`, overwritten) tile by tile by F(2×2, 3×3):
/// for every 2×2 tile, `Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A` plus the bias, cut at odd output
/// edges. In f64 whatever `T` is; `g` must be a geometry Winograd supports.
pub fn forward_image<T: Element>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &Geometry,
    o: usize,
    y: &mut [T],
) {
    forward_image_by::<T, 2, 4>((&BT, &G, &AT), x, w, bias, g, o, y)
}

/// [`forward_image`] by F(4×4, 3×3): 4×4 tiles from 6×6 patches, cut at the output's
/// edges.
pub fn forward_image_f4<T: Element>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &Geometry,
    o: usize,
    y: &mut [T],
) {
    forward_image_by::<T, 4, 6>((&BT4, &G4, &AT4), x, w, bias, g, o, y)
}

/// The matrices `(Bᵀ, G, Aᵀ)` of F(m×m, 3×3) with `P = m + 2` points.
type Matrices<'a, const M: usize, const P: usize> =
    (&'a [[f64; P]; P], &'a [[f64; 3]; P], &'a [[f64; P]; M]);

/// F(m×m, 3×3) tile by tile, for the matrices `(bt, gm, at)`.
fn forward_image_by<T: Element, const M: usize, const P: usize>(
    (bt, gm, at): Matrices<'_, M, P>,
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    g: &Geometry,
    o: usize,
    y: &mut [T],
) {
    // The input pixel under patch position (r, s) of the tile at output (m·ti, m·tj).
    let pixel = |c: usize, iy: isize, ix: isize| -> f64 {
        let inside = iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w;
        if inside {
            x[(c * g.h + iy as usize) * g.w + ix as usize].as_f64()
        } else {
            0.0
        }
    };
    for oc in 0..o {
        for ti in 0..g.oh.div_ceil(M) {
            for tj in 0..g.ow.div_ceil(M) {
                let mut m = [[0.0; P]; P];
                for c in 0..g.c {
                    let k = &w[(oc * g.c + c) * 9..][..9];
                    let kernel: [[f64; 3]; 3] =
                        std::array::from_fn(|i| std::array::from_fn(|j| k[3 * i + j].as_f64()));
                    let patch: [[f64; P]; P] = std::array::from_fn(|r| {
                        std::array::from_fn(|s| {
                            let iy = (M * ti + r) as isize - g.padding.0 as isize;
                            let ix = (M * tj + s) as isize - g.padding.1 as isize;
                            pixel(c, iy, ix)
                        })
                    });
                    let (u, v) = (sandwich(gm, &kernel, gm), sandwich(bt, &patch, bt));
                    for a in 0..P {
                        for b in 0..P {
                            m[a][b] += u[a][b] * v[a][b];
                        }
                    }
                }
                let tile = sandwich(at, &m, at);
                let b = bias.map_or(0.0, |b| b[oc].as_f64());
                for (dr, row) in tile.iter().enumerate() {
                    for (dc, &v) in row.iter().enumerate() {
                        let (oy, ox) = (M * ti + dr, M * tj + dc);
                        if oy < g.oh && ox < g.ow {
                            y[(oc * g.oh + oy) * g.ow + ox] = T::from_f64(v + b);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_values as values;
    use super::*;
    use crate::kernels::conv::{direct, winograd};

    /// The tile formula is the correlation: against the direct convolution for every
    /// padding Winograd takes, odd and even outputs, several channels.
    #[test]
    fn one_tile_at_a_time_equals_the_direct_convolution() {
        for (c, o, h, w, p) in [
            (1, 1, 4, 4, 0),
            (3, 2, 7, 5, 1),
            (2, 3, 6, 9, 2),
            (2, 1, 3, 3, 1),
            (2, 2, 11, 13, 1),
        ] {
            let g = Geometry::new(c, (h, w), (3, 3), (1, 1), (p, p), (1, 1)).unwrap();
            assert!(winograd::supports(&g));
            let (x, k, b) = (values(g.chw(), 1), values(o * c * 9, 2), values(o, 3));
            let mut want = vec![0.0; o * g.p()];
            direct::forward(&x, &k, Some(&b), &g, o, &mut want);
            for f4 in [false, true] {
                let mut got = vec![f64::NAN; o * g.p()];
                if f4 {
                    forward_image_f4(&x, &k, Some(&b), &g, o, &mut got);
                } else {
                    forward_image(&x, &k, Some(&b), &g, o, &mut got);
                }
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (a - b).abs() < 1e-11,
                        "{a} vs {b} for {:?}, F(4×4) {f4}",
                        (c, o, h, w, p)
                    );
                }
            }
        }
    }

    /// The fast weight transform (`G g Gᵀ` as two passes of three-term sums) holds the
    /// matrices' products at every position, in both layouts.
    #[test]
    fn fast_weight_transform_equals_g_g_gt() {
        let (o, c) = (3, 2);
        let w = values(o * c * 9, 5);
        let by_output = winograd::transform_weights(&w, o, c, winograd::WeightLayout::ByOutput);
        let by_input = winograd::transform_weights(&w, o, c, winograd::WeightLayout::ByInput);
        for oc in 0..o {
            for ci in 0..c {
                let k = &w[(oc * c + ci) * 9..][..9];
                let kernel = std::array::from_fn(|i| std::array::from_fn(|j| k[3 * i + j]));
                let u = transform_kernel(&kernel);
                for (a, row) in u.iter().enumerate() {
                    for (b, &value) in row.iter().enumerate() {
                        let xi = (a * 4 + b) * o * c;
                        assert!((by_output[xi + oc * c + ci] - value).abs() < 1e-14);
                        assert!((by_input[xi + ci * o + oc] - value).abs() < 1e-14);
                    }
                }
            }
        }
    }

    /// `finish_weight_grad` is `Gᵀ W̃ G`: the adjoint of the kernel transform, so
    /// `⟨G g Gᵀ, W̃⟩ = ⟨g, Gᵀ W̃ G⟩` for any kernel and any transformed gradient.
    #[test]
    fn weight_grad_transform_is_the_adjoint_of_the_kernel_transform() {
        let g = values(9, 7);
        let wt = values(16, 8);
        let kernel: [[f64; 3]; 3] = std::array::from_fn(|i| std::array::from_fn(|j| g[3 * i + j]));
        let u = transform_kernel(&kernel);
        let lhs: f64 = (0..16).map(|i| u[i / 4][i % 4] * wt[i]).sum();
        let back = winograd::finish_weight_grad(&wt, 1, 1);
        let rhs: f64 = g.iter().zip(&back).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-12, "{lhs} vs {rhs}");
    }
}
