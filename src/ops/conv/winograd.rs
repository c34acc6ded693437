//! Winograd F(m×m, 3×3) for 3×3 stride-1 convolutions — F(2×2, 3×3) and F(4×4, 3×3):
//! forward, dX and dW as `α²` GEMMs (`α = m + 2`) over transformed tiles, 2.25× (m = 2)
//! or 4× (m = 4) fewer multiplications than im2col.
//!
//! In one dimension, `m` outputs of a 3-tap correlation come from `α` inputs `d` and the
//! taps `g` as `y = Aᵀ[(G·g) ⊙ (Bᵀ·d)]`; in two dimensions an m×m output tile is
//! `Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A` for its α×α input patch (Lavin & Gray, 2016). Summed over
//! input channels, each of the `α²` transformed positions ξ is a matrix product:
//! `M[ξ] (o × tiles) = U[ξ] (o × c) · V[ξ] (c × tiles)`.
//!
//! The backward pass uses the same identity read the other way round (the transposition
//! principle): with `Ũ = A dY Aᵀ` the transformed m×m gradient tile,
//! - `dX` patch `= B [Σ_o U ⊙ Ũ] Bᵀ`, added into the overlapping input patches, i.e.
//!   `M'[ξ] (c × tiles) = U[ξ]ᵀ · Ũ[ξ]`; this is the exact adjoint of the forward pass,
//!   padding and cut-off edge tiles included;
//! - `dW = Gᵀ [Σ_tiles Ũ ⊙ V] G`, i.e. `W̃[ξ] (o × c) += Ũ[ξ] · V[ξ]ᵀ` with the tiles as
//!   the GEMM's inner dimension, transformed back once.
//!
//! Every transform is applied one axis at a time as a few linear combinations of whole
//! rows of tiles (loops contiguous in the tile index, which vectorise): a patch's rows
//! `m·ti + a` are read as "row phase `a mod m`, shifted by `a div m` tile rows", and the
//! same along columns. Work goes in blocks of about 256 tiles — tile rows of
//! one large image, or several whole small images — so that a block's transformed tiles
//! stay in cache between the transforms and the GEMMs.

use super::Geometry;
use crate::ops::gemm::{gemm, MatMut, MatRef};
use crate::tensor::Element;

/// Tiles per block: enough columns for efficient GEMMs, few enough that a block's
/// transformed input and products stay in L2.
const BLOCK_TILES: usize = 256;

/// Which Winograd algorithm: output tiles of 2×2 or 4×4 pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// F(2×2, 3×3): 4×4 patches, 16 GEMMs, 2.25× fewer multiplications; transform
    /// coefficients 0 and ±1 (exact), ±½ for the weights.
    F2x2,
    /// F(4×4, 3×3): 6×6 patches, 36 GEMMs, 4× fewer multiplications; coefficients up to
    /// 8 (outputs) and 5 (inputs), so f32 rounding grows by about a decimal digit.
    F4x4,
}

// Lavin & Gray's matrices, row-major. F(2×2, 3×3): interpolation points 0, ±1, ∞.
const BT_2: [f64; 16] = [
    1.0, 0.0, -1.0, 0.0, //
    0.0, 1.0, 1.0, 0.0, //
    0.0, -1.0, 1.0, 0.0, //
    0.0, 1.0, 0.0, -1.0,
];
const G_2: [f64; 12] = [
    1.0, 0.0, 0.0, //
    0.5, 0.5, 0.5, //
    0.5, -0.5, 0.5, //
    0.0, 0.0, 1.0,
];
const AT_2: [f64; 8] = [
    1.0, 1.0, 1.0, 0.0, //
    0.0, 1.0, -1.0, -1.0,
];
// F(4×4, 3×3): points 0, ±1, ±2, ∞.
const BT_4: [f64; 36] = [
    4.0, 0.0, -5.0, 0.0, 1.0, 0.0, //
    0.0, -4.0, -4.0, 1.0, 1.0, 0.0, //
    0.0, 4.0, -4.0, -1.0, 1.0, 0.0, //
    0.0, -2.0, -1.0, 2.0, 1.0, 0.0, //
    0.0, 2.0, -1.0, -2.0, 1.0, 0.0, //
    0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
];
const G_4: [f64; 18] = [
    1.0 / 4.0,
    0.0,
    0.0,
    -1.0 / 6.0,
    -1.0 / 6.0,
    -1.0 / 6.0,
    -1.0 / 6.0,
    1.0 / 6.0,
    -1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 12.0,
    1.0 / 6.0,
    1.0 / 24.0,
    -1.0 / 12.0,
    1.0 / 6.0,
    0.0,
    0.0,
    1.0,
];
const AT_4: [f64; 24] = [
    1.0, 1.0, 1.0, 1.0, 1.0, 0.0, //
    0.0, 1.0, -1.0, 2.0, -2.0, 0.0, //
    0.0, 1.0, 1.0, 4.0, 4.0, 0.0, //
    0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
];

/// A variant's matrices as tables: `bt` α×α, `g` α×3, `at` m×α. The transforms are
/// hand-written from `bt` and `at` ([`Kernels`]; a test checks them against the
/// tables); `g` transforms the weights.
struct Matrices {
    alpha: usize,
    #[cfg_attr(not(test), allow(dead_code))]
    bt: &'static [f64],
    g: &'static [f64],
    #[cfg_attr(not(test), allow(dead_code))]
    at: &'static [f64],
}

impl Variant {
    /// Output pixels per tile side.
    pub fn m(self) -> usize {
        match self {
            Variant::F2x2 => 2,
            Variant::F4x4 => 4,
        }
    }

    /// Transformed positions per tile (`α²`).
    fn positions(self) -> usize {
        (self.m() + 2) * (self.m() + 2)
    }

    fn matrices(self) -> Matrices {
        let (bt, g, at): (&'static [f64], &'static [f64], &'static [f64]) = match self {
            Variant::F2x2 => (&BT_2, &G_2, &AT_2),
            Variant::F4x4 => (&BT_4, &G_4, &AT_4),
        };
        Matrices {
            alpha: self.m() + 2,
            bt,
            g,
            at,
        }
    }

    /// `U[ξ][o][c] = (G g Gᵀ)[ξ]` for every 3×3 kernel `g = W[o][c]`.
    pub fn transform_weights<T: Element>(self, w: &[T], o: usize, c: usize) -> Vec<T> {
        let mx = self.matrices();
        let alpha = mx.alpha;
        let g: Vec<T> = mx.g.iter().map(|&v| T::from_f64(v)).collect();
        let mut u = vec![T::zero(); alpha * alpha * o * c];
        for (oc_ci, k) in w.chunks_exact(9).enumerate() {
            // (G k) (α×3), then (G k) Gᵀ (α×α).
            let mut gk = vec![T::zero(); alpha * 3];
            for a in 0..alpha {
                for j in 0..3 {
                    gk[a * 3 + j] = (0..3).map(|i| g[a * 3 + i] * k[i * 3 + j]).sum();
                }
            }
            for a in 0..alpha {
                for b in 0..alpha {
                    let v: T = (0..3).map(|j| gk[a * 3 + j] * g[b * 3 + j]).sum();
                    u[(a * alpha + b) * o * c + oc_ci] = v;
                }
            }
        }
        u
    }

    /// The weight gradient `o × c × 3 × 3`, `dW[o][c] = Gᵀ W̃[·][o][c] G`, from the
    /// transformed gradient `wt` summed over the batch ([`Variant::backward_images`]).
    pub fn finish_weight_grad<T: Element>(self, wt: &[T], o: usize, c: usize) -> Vec<T> {
        let mx = self.matrices();
        let alpha = mx.alpha;
        let g: Vec<T> = mx.g.iter().map(|&v| T::from_f64(v)).collect();
        let mut dw = vec![T::zero(); o * c * 9];
        for (oc_ci, k) in dw.chunks_exact_mut(9).enumerate() {
            let at = |a: usize, b: usize| wt[(a * alpha + b) * o * c + oc_ci];
            // Gᵀ W̃ (3×α), then (Gᵀ W̃) G (3×3).
            let mut left = vec![T::zero(); 3 * alpha];
            for i in 0..3 {
                for b in 0..alpha {
                    left[i * alpha + b] = (0..alpha).map(|a| g[a * 3 + i] * at(a, b)).sum();
                }
            }
            for i in 0..3 {
                for j in 0..3 {
                    k[i * 3 + j] = (0..alpha).map(|b| left[i * alpha + b] * g[b * 3 + j]).sum();
                }
            }
        }
        dw
    }

    /// Elements of a transformed weight gradient.
    pub fn weight_grad_len(self, o: usize, c: usize) -> usize {
        self.positions() * o * c
    }

    /// Images per block for geometry `g`: callers hand [`Variant::forward_images`] and
    /// [`Variant::backward_images`] at most this many images at a time.
    pub fn images_per_block(self, g: &Geometry) -> usize {
        Blocking::of(&Tiles::of(g, self)).images
    }
}

/// Whether Winograd computes this convolution: 3×3 kernel, stride 1, no dilation,
/// padding at most 2 (the input patches of a tile then overlap the image).
pub fn supports(g: &Geometry) -> bool {
    g.kernel == (3, 3)
        && g.stride == (1, 1)
        && g.dilation == (1, 1)
        && g.padding.0 <= 2
        && g.padding.1 <= 2
        && g.oh > 0
        && g.ow > 0
}

/// The output tiles of one image: `rows × cols` tiles of m×m pixels (the last row and
/// column of tiles are cut off when `m` does not divide the output side).
#[derive(Clone, Copy, Debug)]
struct Tiles {
    m: usize,
    rows: usize,
    cols: usize,
}

impl Tiles {
    fn of(g: &Geometry, v: Variant) -> Self {
        let m = v.m();
        Tiles {
            m,
            rows: g.oh.div_ceil(m),
            cols: g.ow.div_ceil(m),
        }
    }

    /// Width of a padded input row covering every tile's α columns.
    fn padded_width(&self) -> usize {
        self.m * self.cols + 2
    }

    /// Height of the padded input plane covering every tile's α rows.
    fn padded_height(&self) -> usize {
        self.m * self.rows + 2
    }
}

/// How an image batch is cut into blocks: several whole images when an image has fewer
/// than [`BLOCK_TILES`] tiles, else bands of tile rows of one image.
#[derive(Clone, Copy, Debug)]
struct Blocking {
    images: usize,
    rows: usize,
}

impl Blocking {
    fn of(t: &Tiles) -> Self {
        let per_image = t.rows * t.cols;
        if per_image >= BLOCK_TILES {
            Blocking {
                images: 1,
                rows: (BLOCK_TILES / t.cols).clamp(1, t.rows),
            }
        } else {
            Blocking {
                images: BLOCK_TILES / per_image,
                rows: t.rows,
            }
        }
    }

    /// Tiles in the largest block.
    fn capacity(&self, t: &Tiles) -> usize {
        self.images * self.rows * t.cols
    }

    /// Bands of tile rows `(first, end)` of an image.
    fn bands(&self, t: &Tiles) -> impl Iterator<Item = (usize, usize)> {
        let (per, rows) = (self.rows, t.rows);
        (0..rows)
            .step_by(per)
            .map(move |r| (r, (r + per).min(rows)))
    }
}

/// Up to six rows of a buffer, as the kernels take them (unused rows are empty).
type Rows<'a, T> = [&'a [T]; 6];
/// Up to six disjoint mutable rows of a buffer.
type RowsMut<'a, T> = [&'a mut [T]; 6];

/// `count` rows of `len` elements of `buf` starting at `offset(k)`.
#[inline(always)]
fn rows<T>(buf: &[T], count: usize, len: usize, offset: impl Fn(usize) -> usize) -> Rows<'_, T> {
    let row = |k: usize| {
        if k < count {
            &buf[offset(k)..][..len]
        } else {
            &[][..]
        }
    };
    [row(0), row(1), row(2), row(3), row(4), row(5)]
}

/// `count` disjoint rows of `len` elements of `buf`, `stride` apart from `start`.
#[inline(always)]
fn rows_mut<T>(
    buf: &mut [T],
    start: usize,
    stride: usize,
    count: usize,
    len: usize,
) -> RowsMut<'_, T> {
    let mut it = buf[start..]
        .chunks_mut(stride.max(1))
        .take(count)
        .map(|chunk| &mut chunk[..len]);
    let mut next = || it.next().unwrap_or_default();
    [next(), next(), next(), next(), next(), next()]
}

/// The four one-axis transforms of a variant, each one pass over whole rows: row `i` of
/// the output is a fixed combination of the input rows, elementwise.
trait Kernels<T: Element> {
    /// Output pixels per tile side.
    const M: usize;
    /// Patch side, `M + 2`.
    const ALPHA: usize;
    /// The variant these kernels compute.
    fn variant() -> Variant;
    /// `out[b] = Σ_k Bᵀ[b][k]·x[k]` (α rows from α).
    fn bt(x: Rows<'_, T>, out: RowsMut<'_, T>);
    /// `out[r] = Σ_a Bᵀ[a][r]·x[a]`, i.e. `B·x` (α rows from α).
    fn b(x: Rows<'_, T>, out: RowsMut<'_, T>);
    /// `out[u] = Σ_a Aᵀ[u][a]·x[a]` (m rows from α).
    fn at(x: Rows<'_, T>, out: RowsMut<'_, T>);
    /// `out[a] = Σ_u Aᵀ[u][a]·x[u]`, i.e. `A·x` (α rows from m).
    fn a(x: Rows<'_, T>, out: RowsMut<'_, T>);
}

/// Applies `$body` (a block computing `out` values from the `d` inputs) to every column
/// of equally long rows: binds `d0…` to the inputs at column j and assigns the results.
macro_rules! rowwise {
    ($x:expr, $out:expr, [$($d:ident),*], [$($o:ident),*], $body:expr) => {{
        let n = $out[0].len();
        let mut xs = $x.into_iter();
        $(let $d = &xs.next().unwrap()[..n];)*
        let mut outs = $out.into_iter();
        $(let $o = &mut outs.next().unwrap()[..n];)*
        for j in 0..n {
            $(let $d = $d[j];)*
            let values = $body;
            let mut k = 0;
            $(
                $o[j] = values[k];
                k += 1;
            )*
            let _ = k;
        }
    }};
}

/// F(2×2, 3×3): coefficients 0 and ±1.
struct F2;

impl<T: Element> Kernels<T> for F2 {
    const M: usize = 2;
    const ALPHA: usize = 4;
    fn variant() -> Variant {
        Variant::F2x2
    }
    #[inline(always)]
    fn bt(x: Rows<'_, T>, out: RowsMut<'_, T>) {
        rowwise!(x, out, [d0, d1, d2, d3], [o0, o1, o2, o3], {
            [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
        });
    }
    #[inline(always)]
    fn b(x: Rows<'_, T>, out: RowsMut<'_, T>) {
        rowwise!(x, out, [d0, d1, d2, d3], [o0, o1, o2, o3], {
            [d0, d1 - d2 + d3, d1 + d2 - d0, -d3]
        });
    }
    #[inline(always)]
    fn at(x: Rows<'_, T>, out: RowsMut<'_, T>) {
        rowwise!(x, out, [d0, d1, d2, d3], [o0, o1], {
            [d0 + d1 + d2, d1 - d2 - d3]
        });
    }
    #[inline(always)]
    fn a(x: Rows<'_, T>, out: RowsMut<'_, T>) {
        rowwise!(x, out, [d0, d1], [o0, o1, o2, o3], {
            [d0, d0 + d1, d0 - d1, -d1]
        });
    }
}

/// F(4×4, 3×3): points 0, ±1, ±2, ∞.
struct F4;

impl<T: Element> Kernels<T> for F4 {
    const M: usize = 4;
    const ALPHA: usize = 6;
    fn variant() -> Variant {
        Variant::F4x4
    }
    #[inline(always)]
    fn bt(x: Rows<'_, T>, out: RowsMut<'_, T>) {
        let (c2, c4, c5) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0));
        rowwise!(
            x,
            out,
            [d0, d1, d2, d3, d4, d5],
            [o0, o1, o2, o3, o4, o5],
            {
                let (p, q) = (d4 - c4 * d2, d3 - c4 * d1);
                let (r, s) = (d4 - d2, c2 * (d3 - d1));
                [
                    c4 * d0 - c5 * d2 + d4,
                    p + q,
                    p - q,
                    r + s,
                    r - s,
                    c4 * d1 - c5 * d3 + d5,
                ]
            }
        );
    }
    #[inline(always)]
    fn b(x: Rows<'_, T>, out: RowsMut<'_, T>) {
        let (c2, c4, c5) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0));
        rowwise!(
            x,
            out,
            [m0, m1, m2, m3, m4, m5],
            [o0, o1, o2, o3, o4, o5],
            {
                let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
                [
                    c4 * m0,
                    c4 * m5 - c4 * d12 - c2 * d34,
                    -c5 * m0 - c4 * s12 - s34,
                    d12 + c2 * d34 - c5 * m5,
                    m0 + s12 + s34,
                    m5,
                ]
            }
        );
    }
    #[inline(always)]
    fn at(x: Rows<'_, T>, out: RowsMut<'_, T>) {
        let (c2, c4, c8) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
        rowwise!(x, out, [m0, m1, m2, m3, m4, m5], [o0, o1, o2, o3], {
            let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
            [
                m0 + s12 + s34,
                d12 + c2 * d34,
                s12 + c4 * s34,
                d12 + c8 * d34 + m5,
            ]
        });
    }
    #[inline(always)]
    fn a(x: Rows<'_, T>, out: RowsMut<'_, T>) {
        let (c2, c4, c8) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
        rowwise!(x, out, [d0, d1, d2, d3], [o0, o1, o2, o3, o4, o5], {
            let (e, f) = (d0 + d2, d1 + d3);
            let (g, h) = (d0 + c4 * d2, c2 * d1 + c8 * d3);
            [d0, e + f, e - f, g + h, g - h, d3]
        });
    }
}

/// Scratch (elements) any transform of one block needs.
fn scratch_len(t: &Tiles, b: &Blocking) -> usize {
    let alpha = t.m + 2;
    let band = b.rows * t.cols;
    // α·m phase arrays of a band plus one tile row, α rows of a band, and row buffers.
    alpha * t.m * (band + t.cols) + alpha * band + 2 * t.m * (t.cols + 1) + alpha * (t.cols + 1)
}

/// `V[ξ][ci][t] = (Bᵀ d B)[ξ]` for the input patch `d` of every tile `t` of a block:
/// `images` images of `x` (`images × c × h × w`), tile rows `band` of each. `v` holds
/// `α² × c × nt` values, `nt` the tiles of the block.
#[inline(always)]
fn transform_input<T: Element, K: Kernels<T>>(
    x: &[T],
    images: usize,
    g: &Geometry,
    band: (usize, usize),
    v: &mut [T],
    scratch: &mut [T],
) {
    let (m, alpha) = (K::M, K::ALPHA);
    let cols = g.ow.div_ceil(m);
    let per_img = (band.1 - band.0) * cols;
    let nt = images * per_img;
    // Padded rows of each phase the band reads: its tile rows plus one.
    let per_phase = per_img + cols;
    let (ph, pw) = g.padding;
    let (h, rest) = scratch.split_at_mut(alpha * m * per_phase);
    let (row, rest) = rest.split_at_mut(m * (cols + 1));
    let phases = &mut rest[..m * (cols + 1)];
    for img in 0..images {
        for ci in 0..g.c {
            let plane = &x[(img * g.c + ci) * g.h * g.w..][..g.h * g.w];
            // B along every padded row the band reads: tile j's α columns m·j + k are
            // column phase k mod m at index j + k div m.
            for rr in 0..m * (band.1 - band.0) + 2 {
                let (q, s) = (rr % m, rr / m);
                let start = q * per_phase + s * cols;
                let ih = (m * band.0 + rr) as isize - ph as isize;
                if ih < 0 || ih >= g.h as isize {
                    for out in rows_mut(h, start, m * per_phase, alpha, cols) {
                        out.fill(T::zero());
                    }
                    continue;
                }
                row[..pw].fill(T::zero());
                row[pw..pw + g.w].copy_from_slice(&plane[ih as usize * g.w..][..g.w]);
                row[pw + g.w..].fill(T::zero());
                for (j, chunk) in row.chunks_exact(m).enumerate() {
                    for (k, &value) in chunk.iter().enumerate() {
                        phases[k * (cols + 1) + j] = value;
                    }
                }
                let input = rows(phases, alpha, cols, |k| (k % m) * (cols + 1) + k / m);
                K::bt(input, rows_mut(h, start, m * per_phase, alpha, cols));
            }
            // Bᵀ down the columns: tile row ti's patch row a is row phase a mod m,
            // a div m tile rows further on.
            for b in 0..alpha {
                let input = rows(h, alpha, per_img, |a| {
                    (b * m + a % m) * per_phase + (a / m) * cols
                });
                let start = (b * g.c + ci) * nt + img * per_img;
                K::bt(input, rows_mut(v, start, alpha * g.c * nt, alpha, per_img));
            }
        }
    }
}

/// `Ũ[ξ][oc][t] = (A dY Aᵀ)[ξ]` for the m×m gradient tile of every tile `t` of a block of
/// `dy` (`images × o × oh × ow`; zero beyond the output's edge).
#[inline(always)]
fn transform_output_grad<T: Element, K: Kernels<T>>(
    dy: &[T],
    images: usize,
    o: usize,
    g: &Geometry,
    band: (usize, usize),
    u: &mut [T],
    scratch: &mut [T],
) {
    let (m, alpha) = (K::M, K::ALPHA);
    let cols = g.ow.div_ceil(m);
    let per_img = (band.1 - band.0) * cols;
    let nt = images * per_img;
    let (h, rest) = scratch.split_at_mut(alpha * m * per_img);
    let (row, rest) = rest.split_at_mut(m * cols);
    let phases = &mut rest[..m * cols];
    for img in 0..images {
        for oc in 0..o {
            let plane = &dy[(img * o + oc) * g.oh * g.ow..][..g.oh * g.ow];
            // A along each gradient row, over its m column phases.
            for rr in 0..m * (band.1 - band.0) {
                let (q, s) = (rr % m, rr / m);
                let start = q * per_img + s * cols;
                let r = m * band.0 + rr;
                if r >= g.oh {
                    for out in rows_mut(h, start, m * per_img, alpha, cols) {
                        out.fill(T::zero());
                    }
                    continue;
                }
                row[..g.ow].copy_from_slice(&plane[r * g.ow..(r + 1) * g.ow]);
                row[g.ow..].fill(T::zero());
                for (j, chunk) in row.chunks_exact(m).enumerate() {
                    for (k, &value) in chunk.iter().enumerate() {
                        phases[k * cols + j] = value;
                    }
                }
                let input = rows(phases, m, cols, |k| k * cols);
                K::a(input, rows_mut(h, start, m * per_img, alpha, cols));
            }
            // A down the columns, over the whole band: gradient row phase u.
            for b in 0..alpha {
                let input = rows(h, m, per_img, |uu| (b * m + uu) * per_img);
                let start = (b * o + oc) * nt + img * per_img;
                K::a(input, rows_mut(u, start, alpha * o * nt, alpha, per_img));
            }
        }
    }
}

/// `Y = Aᵀ M A (+ bias)` for every tile of a block, written into `y`
/// (`images × o × oh × ow`); `mm` holds `α² × o × nt` products.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn transform_output<T: Element, K: Kernels<T>>(
    mm: &[T],
    images: usize,
    o: usize,
    g: &Geometry,
    band: (usize, usize),
    bias: Option<&[T]>,
    y: &mut [T],
    scratch: &mut [T],
) {
    let (m, alpha) = (K::M, K::ALPHA);
    let cols = g.ow.div_ceil(m);
    let per_img = (band.1 - band.0) * cols;
    let nt = images * per_img;
    let (sums, rest) = scratch.split_at_mut(m * alpha * per_img);
    let phases = &mut rest[..m * cols];
    for img in 0..images {
        for oc in 0..o {
            let bias = bias.map_or(T::zero(), |b| b[oc]);
            // Aᵀ down the columns: output row phase u of patch column b.
            for b in 0..alpha {
                let input = rows(mm, alpha, per_img, |a| {
                    ((a * alpha + b) * o + oc) * nt + img * per_img
                });
                K::at(
                    input,
                    rows_mut(sums, b * per_img, alpha * per_img, m, per_img),
                );
            }
            // Aᵀ along each output row, then interleaved into the image (the last tile
            // row and column may be cut off).
            for ti in band.0..band.1 {
                for uu in 0..m {
                    let r = m * ti + uu;
                    if r >= g.oh {
                        break;
                    }
                    let t0 = (ti - band.0) * cols;
                    let input = rows(sums, alpha, cols, |b| (uu * alpha + b) * per_img + t0);
                    K::at(input, rows_mut(phases, 0, cols, m, cols));
                    let out = &mut y[((img * o + oc) * g.oh + r) * g.ow..][..g.ow];
                    for (j, px) in out.chunks_mut(m).enumerate() {
                        for (q, p) in px.iter_mut().enumerate() {
                            *p = phases[q * cols + j] + bias;
                        }
                    }
                }
            }
        }
    }
}

/// Adds `B M' Bᵀ` of every tile of a block into the padded input-gradient planes
/// `planes` (`images × c × padded_height × padded_width`); `mm` holds `α² × c × nt`.
#[inline(always)]
fn scatter_input_grad<T: Element, K: Kernels<T>>(
    mm: &[T],
    images: usize,
    g: &Geometry,
    band: (usize, usize),
    planes: &mut [T],
    scratch: &mut [T],
) {
    let (m, alpha) = (K::M, K::ALPHA);
    let tiles = Tiles {
        m,
        rows: g.oh.div_ceil(m),
        cols: g.ow.div_ceil(m),
    };
    let (cols, wp, hp) = (tiles.cols, tiles.padded_width(), tiles.padded_height());
    let per_img = (band.1 - band.0) * cols;
    let nt = images * per_img;
    let per_phase = per_img + cols;
    let (e, rest) = scratch.split_at_mut(alpha * m * per_phase);
    let (z, rest) = rest.split_at_mut(alpha * per_img);
    let (zrow, rest) = rest.split_at_mut(alpha * (cols + 1));
    let phases = &mut rest[..m * (cols + 1)];
    for img in 0..images {
        for ci in 0..g.c {
            // B down the columns: patch row r lands on row phase r mod m, r div m tile
            // rows further on (the last two rows of a tile row are the first two of the
            // next); each phase sums its rows.
            for b in 0..alpha {
                let input = rows(mm, alpha, per_img, |a| {
                    ((a * alpha + b) * g.c + ci) * nt + img * per_img
                });
                K::b(input, rows_mut(z, 0, per_img, alpha, per_img));
                for q in 0..m {
                    let dst = &mut e[(b * m + q) * per_phase..][..per_phase];
                    dst[..per_img].copy_from_slice(&z[q * per_img..][..per_img]);
                    dst[per_img..].fill(T::zero());
                }
                for r in m..alpha {
                    let dst = &mut e[(b * m + r - m) * per_phase + cols..][..per_img];
                    for (d, &v) in dst.iter_mut().zip(&z[r * per_img..][..per_img]) {
                        *d += v;
                    }
                }
            }
            // B along each padded row: patch column k lands on column phase k mod m,
            // k div m tiles further on.
            let plane = &mut planes[(img * g.c + ci) * hp * wp..][..hp * wp];
            for rr in 0..m * (band.1 - band.0) + 2 {
                let (q, s) = (rr % m, rr / m);
                let input = rows(e, alpha, cols, |b| (b * m + q) * per_phase + s * cols);
                K::b(input, rows_mut(zrow, 0, cols, alpha, cols));
                for k in 0..m {
                    let dst = &mut phases[k * (cols + 1)..][..cols + 1];
                    dst[..cols].copy_from_slice(&zrow[k * cols..][..cols]);
                    dst[cols] = T::zero();
                }
                for k in m..alpha {
                    let dst = &mut phases[(k - m) * (cols + 1) + 1..][..cols];
                    for (d, &v) in dst.iter_mut().zip(&zrow[k * cols..][..cols]) {
                        *d += v;
                    }
                }
                let row = &mut plane[(m * band.0 + rr) * wp..][..wp];
                for (j, px) in row.chunks_mut(m).enumerate() {
                    for (k, p) in px.iter_mut().enumerate() {
                        *p += phases[k * (cols + 1) + j];
                    }
                }
            }
        }
    }
}

impl Variant {
    /// Workspace (elements) for [`Variant::forward_images`].
    pub fn forward_workspace(self, g: &Geometry, o: usize) -> usize {
        let tiles = Tiles::of(g, self);
        let blocking = Blocking::of(&tiles);
        self.positions() * (g.c + o) * blocking.capacity(&tiles) + scratch_len(&tiles, &blocking)
    }

    /// The convolution of `images` images (at most [`Variant::images_per_block`]):
    /// `y` (`images × o × oh × ow`) from `x` (`images × c × h × w`), the transformed
    /// weights `u` ([`Variant::transform_weights`]) and an optional bias.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_images<T: Element>(
        self,
        x: &[T],
        images: usize,
        g: &Geometry,
        u: &[T],
        o: usize,
        bias: Option<&[T]>,
        y: &mut [T],
        workspace: &mut [T],
    ) {
        match self {
            Variant::F2x2 => forward_dispatch::<T, F2>(x, images, g, u, o, bias, y, workspace),
            Variant::F4x4 => forward_dispatch::<T, F4>(x, images, g, u, o, bias, y, workspace),
        }
    }

    /// Workspace (elements) for [`Variant::backward_images`].
    pub fn backward_workspace(self, g: &Geometry, o: usize) -> usize {
        let tiles = Tiles::of(g, self);
        let blocking = Blocking::of(&tiles);
        self.positions() * (o + 2 * g.c) * blocking.capacity(&tiles)
            + blocking.images * g.c * tiles.padded_height() * tiles.padded_width()
            + scratch_len(&tiles, &blocking)
    }

    /// The backward pass of `images` images (at most [`Variant::images_per_block`]). With
    /// `dx`, writes their input gradient (`images × c × h × w`) from the transformed
    /// weights `u`; with `wt`, adds their transformed weight gradient
    /// ([`Variant::finish_weight_grad`]) computed from their input `x`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward_images<T: Element>(
        self,
        dy: &[T],
        images: usize,
        g: &Geometry,
        o: usize,
        u: &[T],
        x: &[T],
        dx: Option<&mut [T]>,
        wt: Option<&mut [T]>,
        workspace: &mut [T],
    ) {
        match self {
            Variant::F2x2 => backward_dispatch::<T, F2>(dy, images, g, o, u, x, dx, wt, workspace),
            Variant::F4x4 => backward_dispatch::<T, F4>(dy, images, g, o, u, x, dx, wt, workspace),
        }
    }
}

/// [`Variant::forward_images`] for one variant: the AVX2 build where the CPU has it.
#[allow(clippy::too_many_arguments)]
fn forward_dispatch<T: Element, K: Kernels<T>>(
    x: &[T],
    images: usize,
    g: &Geometry,
    u: &[T],
    o: usize,
    bias: Option<&[T]>,
    y: &mut [T],
    workspace: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { forward_avx2::<T, K>(x, images, g, u, o, bias, y, workspace) };
    }
    forward_body::<T, K>(x, images, g, u, o, bias, y, workspace)
}

/// [`forward_body`] compiled for AVX2: the transforms run 8 floats wide.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn forward_avx2<T: Element, K: Kernels<T>>(
    x: &[T],
    images: usize,
    g: &Geometry,
    u: &[T],
    o: usize,
    bias: Option<&[T]>,
    y: &mut [T],
    workspace: &mut [T],
) {
    forward_body::<T, K>(x, images, g, u, o, bias, y, workspace)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_body<T: Element, K: Kernels<T>>(
    x: &[T],
    images: usize,
    g: &Geometry,
    u: &[T],
    o: usize,
    bias: Option<&[T]>,
    y: &mut [T],
    workspace: &mut [T],
) {
    let tiles = Tiles::of(g, K::variant());
    let blocking = Blocking::of(&tiles);
    let (cap, c, positions) = (blocking.capacity(&tiles), g.c, K::ALPHA * K::ALPHA);
    let (vt, rest) = workspace.split_at_mut(positions * c * cap);
    let (m, scratch) = rest.split_at_mut(positions * o * cap);
    for band in blocking.bands(&tiles) {
        let nt = images * (band.1 - band.0) * tiles.cols;
        transform_input::<T, K>(x, images, g, band, vt, scratch);
        for xi in 0..positions {
            // M[ξ] (o × nt) = U[ξ] (o × c) · V[ξ] (c × nt)
            gemm(
                MatRef::new(u, xi * o * c, (o, c), (c, 1)),
                MatRef::new(vt, xi * c * nt, (c, nt), (nt, 1)),
                T::zero(),
                MatMut::new(&mut m[xi * o * nt..], (o, nt), nt),
            );
        }
        transform_output::<T, K>(m, images, o, g, band, bias, y, scratch);
    }
}

/// [`Variant::backward_images`] for one variant: the AVX2 build where the CPU has it.
#[allow(clippy::too_many_arguments)]
fn backward_dispatch<T: Element, K: Kernels<T>>(
    dy: &[T],
    images: usize,
    g: &Geometry,
    o: usize,
    u: &[T],
    x: &[T],
    dx: Option<&mut [T]>,
    wt: Option<&mut [T]>,
    workspace: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { backward_avx2::<T, K>(dy, images, g, o, u, x, dx, wt, workspace) };
    }
    backward_body::<T, K>(dy, images, g, o, u, x, dx, wt, workspace)
}

/// [`backward_body`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
fn backward_avx2<T: Element, K: Kernels<T>>(
    dy: &[T],
    images: usize,
    g: &Geometry,
    o: usize,
    u: &[T],
    x: &[T],
    dx: Option<&mut [T]>,
    wt: Option<&mut [T]>,
    workspace: &mut [T],
) {
    backward_body::<T, K>(dy, images, g, o, u, x, dx, wt, workspace)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_body<T: Element, K: Kernels<T>>(
    dy: &[T],
    images: usize,
    g: &Geometry,
    o: usize,
    u: &[T],
    x: &[T],
    dx: Option<&mut [T]>,
    wt: Option<&mut [T]>,
    workspace: &mut [T],
) {
    let tiles = Tiles::of(g, K::variant());
    let blocking = Blocking::of(&tiles);
    let (cap, c, positions) = (blocking.capacity(&tiles), g.c, K::ALPHA * K::ALPHA);
    let (wp, hp) = (tiles.padded_width(), tiles.padded_height());
    let (ut, rest) = workspace.split_at_mut(positions * o * cap);
    let (vt, rest) = rest.split_at_mut(positions * c * cap);
    let (mx_dx, rest) = rest.split_at_mut(positions * c * cap);
    let (planes, scratch) = rest.split_at_mut(blocking.images * c * hp * wp);
    let planes = &mut planes[..images * c * hp * wp];
    if dx.is_some() {
        planes.fill(T::zero());
    }
    let mut wt = wt;
    for band in blocking.bands(&tiles) {
        let nt = images * (band.1 - band.0) * tiles.cols;
        transform_output_grad::<T, K>(dy, images, o, g, band, ut, scratch);
        if let Some(wt) = wt.as_deref_mut() {
            transform_input::<T, K>(x, images, g, band, vt, scratch);
            for xi in 0..positions {
                // W̃[ξ] (o × c) += Ũ[ξ] (o × nt) · V[ξ]ᵀ (nt × c)
                gemm(
                    MatRef::new(ut, xi * o * nt, (o, nt), (nt, 1)),
                    MatRef::new(vt, xi * c * nt, (nt, c), (1, nt)),
                    T::one(),
                    MatMut::new(&mut wt[xi * o * c..], (o, c), c),
                );
            }
        }
        if dx.is_some() {
            for xi in 0..positions {
                // M'[ξ] (c × nt) = U[ξ]ᵀ (c × o) · Ũ[ξ] (o × nt)
                gemm(
                    MatRef::new(u, xi * o * c, (c, o), (1, c)),
                    MatRef::new(ut, xi * o * nt, (o, nt), (nt, 1)),
                    T::zero(),
                    MatMut::new(&mut mx_dx[xi * c * nt..], (c, nt), nt),
                );
            }
            scatter_input_grad::<T, K>(mx_dx, images, g, band, planes, scratch);
        }
    }
    if let Some(dx) = dx {
        // Crop the padding: input pixel (ih, iw) is padded (ih + ph, iw + pw).
        let (ph, pw) = g.padding;
        for (plane, out) in planes
            .chunks_exact(hp * wp)
            .zip(dx.chunks_exact_mut(g.h * g.w))
        {
            for (ih, row) in out.chunks_exact_mut(g.w).enumerate() {
                row.copy_from_slice(&plane[(ih + ph) * wp + pw..][..g.w]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrices_satisfy_the_winograd_identity() {
        // Σ_ξ Aᵀ[i][ξ]·G[ξ][k]·Bᵀ[ξ][j] = [j = i + k]: output i of a 3-tap correlation.
        for v in [Variant::F2x2, Variant::F4x4] {
            let (mx, m) = (v.matrices(), v.m());
            let alpha = mx.alpha;
            for i in 0..m {
                for k in 0..3 {
                    for j in 0..alpha {
                        let sum: f64 = (0..alpha)
                            .map(|x| mx.at[i * alpha + x] * mx.g[x * 3 + k] * mx.bt[x * alpha + j])
                            .sum();
                        let want = if j == i + k { 1.0 } else { 0.0 };
                        assert!((sum - want).abs() < 1e-14, "{v:?} ({i}, {k}, {j}): {sum}");
                    }
                }
            }
        }
    }

    /// Runs a kernel on unit rows and reads back its matrix: `out[r] = Σ_k K[r][k]·x[k]`.
    fn kernel_matrix(
        apply: fn(Rows<'_, f64>, RowsMut<'_, f64>),
        inputs: usize,
        outputs: usize,
    ) -> Vec<f64> {
        let mut matrix = vec![0.0; outputs * inputs];
        for k in 0..inputs {
            let x: Vec<f64> = (0..inputs)
                .map(|i| if i == k { 1.0 } else { 0.0 })
                .collect();
            let mut out = vec![f64::NAN; outputs];
            apply(
                rows(&x, inputs, 1, |i| i),
                rows_mut(&mut out, 0, 1, outputs, 1),
            );
            for r in 0..outputs {
                matrix[r * inputs + k] = out[r];
            }
        }
        matrix
    }

    fn transpose(a: &[f64], rows: usize, cols: usize) -> Vec<f64> {
        (0..cols * rows)
            .map(|i| a[(i % rows) * cols + i / rows])
            .collect()
    }

    fn check_kernels<K: Kernels<f64>>() {
        let mx = K::variant().matrices();
        let (m, alpha) = (K::M, K::ALPHA);
        assert_eq!(kernel_matrix(K::bt, alpha, alpha), mx.bt);
        assert_eq!(
            kernel_matrix(K::b, alpha, alpha),
            transpose(mx.bt, alpha, alpha)
        );
        assert_eq!(kernel_matrix(K::at, alpha, m), mx.at);
        assert_eq!(kernel_matrix(K::a, m, alpha), transpose(mx.at, m, alpha));
    }

    #[test]
    fn hand_written_kernels_match_their_matrices() {
        check_kernels::<F2>();
        check_kernels::<F4>();
    }
}
