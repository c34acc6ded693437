//! Winograd F(2×2, 3×3) for 3×3 stride-1 convolutions: forward, dX and dW as 16 GEMMs
//! over transformed tiles, 2.25× fewer multiplications than im2col.
//!
//! In one dimension, two outputs of a 3-tap correlation come from four inputs `d` and the
//! taps `g` as `y = Aᵀ[(G·g) ⊙ (Bᵀ·d)]`; in two dimensions a 2×2 output tile is
//! `Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A` for its 4×4 input patch (Lavin & Gray, 2016). Summed over
//! input channels, each of the 16 transformed positions ξ is a matrix product:
//! `M[ξ] (o × tiles) = U[ξ] (o × c) · V[ξ] (c × tiles)`.
//!
//! The backward pass uses the same identity read the other way round (the transposition
//! principle): with `Ũ = A dY Aᵀ` the transformed 2×2 gradient tile,
//! - `dX` patch `= B [Σ_o U ⊙ Ũ] Bᵀ`, added into the overlapping 4×4 input patches, i.e.
//!   `M'[ξ] (c × tiles) = U[ξ]ᵀ · Ũ[ξ]`; this is the exact adjoint of the forward pass,
//!   padding and odd output sizes included;
//! - `dW = Gᵀ [Σ_tiles Ũ ⊙ V] G`, i.e. `W̃[ξ] (o × c) += Ũ[ξ] · V[ξ]ᵀ` with the tiles as
//!   the GEMM's inner dimension (long, so these GEMMs are efficient), transformed back once.
//!
//! The transforms run over whole rows of tiles so that their loops are contiguous in the
//! tile index (they vectorise); images are processed in blocks of tile rows so that a
//! block's transformed tiles stay in cache between the transform and its GEMMs.

use super::Geometry;
use crate::ops::gemm::{gemm, MatMut, MatRef};
use crate::tensor::{transpose, Element};

/// Transformed positions per tile (4×4).
const POSITIONS: usize = 16;

/// Tiles per block: enough columns for efficient GEMMs, few enough that a block's
/// transformed input and products stay in L2 (`16·(c + o)·tiles` floats).
const BLOCK_TILES: usize = 256;

/// Whether F(2×2, 3×3) computes this convolution: 3×3 kernel, stride 1, no dilation,
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

/// The output tiles of a layer: `rows × cols` tiles of 2×2 pixels (the last row and
/// column of tiles are cut off when the output side is odd).
#[derive(Clone, Copy, Debug)]
struct Tiles {
    rows: usize,
    cols: usize,
}

impl Tiles {
    fn of(g: &Geometry) -> Self {
        Tiles {
            rows: g.oh.div_ceil(2),
            cols: g.ow.div_ceil(2),
        }
    }

    /// Width of a padded input row covering every tile's 4 columns.
    fn padded_width(&self) -> usize {
        2 * self.cols + 2
    }

    /// Height of the padded input plane covering every tile's 4 rows.
    fn padded_height(&self) -> usize {
        2 * self.rows + 2
    }

    /// Blocks of whole tile rows, about [`BLOCK_TILES`] tiles each: `(first, end)`.
    fn blocks(&self) -> impl Iterator<Item = (usize, usize)> {
        let per = (BLOCK_TILES / self.cols).max(1);
        let rows = self.rows;
        (0..rows)
            .step_by(per)
            .map(move |r| (r, (r + per).min(rows)))
    }

    /// Tiles in the largest block.
    fn block_capacity(&self) -> usize {
        (BLOCK_TILES / self.cols).max(1).min(self.rows) * self.cols
    }
}

/// Distance (elements) between the transformed positions' matrices of `len` elements
/// each in a block's workspace. The 16 matrices are written as 16 concurrent streams;
/// at a multiple of 4 KiB apart they would all fall into the same L1 sets (and alias for
/// store-to-load forwarding), so the stride is padded by one cache line.
fn position_stride(len: usize) -> usize {
    const LINE: usize = 16;
    let stride = len.div_ceil(LINE) * LINE;
    if stride.is_multiple_of(1024) {
        stride + LINE
    } else {
        stride
    }
}

/// How each transformed position's `o × c` weight matrix is stored. matrixmultiply packs
/// the left operand of a product fastest when its rows are adjacent in memory, so the
/// forward product `U[ξ]·V[ξ]` wants `U[ξ]` stored by input channel and the input-gradient
/// product `U[ξ]ᵀ·Ũ[ξ]` wants it by output channel (measured: packing `U` by output
/// channel for the forward GEMMs was 2.2% of a cifar-cnn step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// `U[ξ][o][c]`.
    ByOutput,
    /// `U[ξ][c][o]`.
    ByInput,
}

/// `U[ξ] = G g Gᵀ` at every transformed position ξ for every 3×3 kernel `g = W[o][c]`,
/// stored as `layout` says.
pub fn transform_weights<T: Element>(w: &[T], o: usize, c: usize, layout: WeightLayout) -> Vec<T> {
    let half = T::from_f64(0.5);
    // (G·v) for three taps v.
    let g3 = |v: [T; 3]| {
        [
            v[0],
            half * (v[0] + v[1] + v[2]),
            half * (v[0] - v[1] + v[2]),
            v[2],
        ]
    };
    let mut u = vec![T::zero(); POSITIONS * o * c];
    for (oc_ci, k) in w.chunks_exact(9).enumerate() {
        // Columns first (G applied to each kernel column), then rows.
        let cols: [[T; 4]; 3] = std::array::from_fn(|j| g3([k[j], k[3 + j], k[6 + j]]));
        for a in 0..4 {
            let row = g3([cols[0][a], cols[1][a], cols[2][a]]);
            let at = match layout {
                WeightLayout::ByOutput => oc_ci,
                WeightLayout::ByInput => (oc_ci % c) * o + oc_ci / c,
            };
            for (b, &value) in row.iter().enumerate() {
                u[(a * 4 + b) * o * c + at] = value;
            }
        }
    }
    u
}

/// The weight gradient `o × c × 3 × 3`, `dW[o][c] = Gᵀ W̃[·][o][c] G`, from the
/// transformed gradient `wt` summed over the batch ([`backward_image`]).
pub fn finish_weight_grad<T: Element>(wt: &[T], o: usize, c: usize) -> Vec<T> {
    let half = T::from_f64(0.5);
    // (Gᵀ·v) for four transformed values v.
    let gt4 = |v: [T; 4]| {
        [
            v[0] + half * (v[1] + v[2]),
            half * (v[1] - v[2]),
            half * (v[1] + v[2]) + v[3],
        ]
    };
    let mut dw = vec![T::zero(); o * c * 9];
    for (oc_ci, k) in dw.chunks_exact_mut(9).enumerate() {
        let at = |a: usize, b: usize| wt[(a * 4 + b) * o * c + oc_ci];
        let cols: [[T; 3]; 4] = std::array::from_fn(|b| gt4(std::array::from_fn(|a| at(a, b))));
        for i in 0..3 {
            let row = gt4([cols[0][i], cols[1][i], cols[2][i], cols[3][i]]);
            k[3 * i..3 * i + 3].copy_from_slice(&row);
        }
    }
    dw
}

// The transforms below work on whole rows and on whole blocks so that every inner loop
// runs over contiguous slices (and vectorises). Each 4×4 transform is applied in two
// passes, one per axis; within a block the tiles are numbered `t = (ti − first)·cols + j`,
// so a tile row's 4 input rows `2ti..2ti + 4` read as two rows of even and two of odd
// parity, and "the next tile row" is an offset of `cols` in the flattened tile index.

/// `out[i] = f(a[i], b[i])`.
#[inline(always)]
fn zip_map<T: Copy>(out: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T) -> T) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = f(a, b);
    }
}

/// `out[i] = f(a[i], b[i], c[i])`.
#[inline(always)]
fn zip_map3<T: Copy>(out: &mut [T], a: &[T], b: &[T], c: &[T], f: impl Fn(T, T, T) -> T) {
    for (((o, &a), &b), &c) in out.iter_mut().zip(a).zip(b).zip(c) {
        *o = f(a, b, c);
    }
}

/// Splits a row of zeros holding `src` at offset `pad` into its even- and odd-indexed
/// elements, read straight from `src` (no padded copy of the row).
#[inline(always)]
fn deinterleave_padded<T: Element>(src: &[T], pad: usize, even: &mut [T], odd: &mut [T]) {
    even.fill(T::zero());
    odd.fill(T::zero());
    // Padded index pad + i: src's even elements land on pad's parity.
    let (first, second, at_first, at_second) = if pad.is_multiple_of(2) {
        (even, odd, pad / 2, pad / 2)
    } else {
        (odd, even, pad / 2, pad / 2 + 1)
    };
    let pairs = src.len() / 2;
    let (first_run, second_run) = (&mut first[at_first..], &mut second[at_second..]);
    for ((pair, a), b) in src
        .chunks_exact(2)
        .zip(first_run.iter_mut())
        .zip(second_run.iter_mut())
    {
        *a = pair[0];
        *b = pair[1];
    }
    if src.len() % 2 == 1 {
        first[at_first + pairs] = src[src.len() - 1];
    }
}

/// The four row slices `h[at + k·step .. + len]`, `k < 4`, mutably (`step ≥ len`).
#[inline(always)]
fn four_rows<T>(h: &mut [T], at: usize, step: usize, len: usize) -> [&mut [T]; 4] {
    let (r0, rest) = h[at..].split_at_mut(step);
    let (r1, rest) = rest.split_at_mut(step);
    let (r2, r3) = rest.split_at_mut(step);
    [
        &mut r0[..len],
        &mut r1[..len],
        &mut r2[..len],
        &mut r3[..len],
    ]
}

/// Scratch (elements) the transforms of one block need.
fn scratch_len(tiles: &Tiles) -> usize {
    let (tw, cap) = (tiles.cols, tiles.block_capacity());
    // Four row-phase arrays per parity (+ one tile row) and a row's even and odd halves.
    8 * (cap + tw) + 2 * (tw + 1)
}

/// `V[ξ][ci][t] = (Bᵀ d B)[ξ]` for the input patch `d` of every tile `t` in tile rows
/// `block` of one image `x` (`c × h × w`); position ξ's `c × nt` matrix starts at
/// `ξ·stride` in `v` (see [`position_stride`]), `nt` the tiles of the block.
#[inline(always)]
fn transform_input<T: Element>(
    x: &[T],
    g: &Geometry,
    block: (usize, usize),
    v: &mut [T],
    stride: usize,
    scratch: &mut [T],
) {
    let tiles = Tiles::of(g);
    let tw = tiles.cols;
    let nt = (block.1 - block.0) * tw;
    // Rows of each parity the block reads: its tile rows plus the next one's top half.
    let per_parity = (block.1 - block.0 + 1) * tw;
    let (ph, pw) = g.padding;
    let (h, rest) = scratch.split_at_mut(8 * per_parity);
    let (even, rest) = rest.split_at_mut(tw + 1);
    let odd = &mut rest[..tw + 1];
    for ci in 0..g.c {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        // B along every input row the block reads: tile j's columns 2j..2j+4 give
        // (d0 − d2, d1 + d2, d2 − d1, d1 − d3) = (e_j − e_j+1, o_j + e_j+1, e_j+1 − o_j, o_j − o_j+1).
        for rr in 0..2 * (block.1 - block.0) + 2 {
            let (parity, s) = (rr % 2, rr / 2);
            let at = |b: usize| (b * 2 + parity) * per_parity + s * tw;
            let ih = (2 * block.0 + rr) as isize - ph as isize;
            if ih < 0 || ih >= g.h as isize {
                for b in 0..4 {
                    h[at(b)..at(b) + tw].fill(T::zero());
                }
                continue;
            }
            deinterleave_padded(&plane[ih as usize * g.w..][..g.w], pw, even, odd);
            let (e0, e1, o0, o1) = (&even[..tw], &even[1..], &odd[..tw], &odd[1..]);
            zip_map(&mut h[at(0)..at(0) + tw], e0, e1, |e0, e1| e0 - e1);
            zip_map(&mut h[at(1)..at(1) + tw], o0, e1, |o0, e1| o0 + e1);
            zip_map(&mut h[at(2)..at(2) + tw], e1, o0, |e1, o0| e1 - o0);
            zip_map(&mut h[at(3)..at(3) + tw], o0, o1, |o0, o1| o0 - o1);
        }
        // Bᵀ down the columns, over the whole block at once: tile row ti reads rows
        // 2ti, 2ti+1 (even/odd at t) and 2ti+2, 2ti+3 (even/odd at t + tw).
        for b in 0..4 {
            let even = &h[(b * 2) * per_parity..][..per_parity];
            let odd = &h[(b * 2 + 1) * per_parity..][..per_parity];
            let (d0, d1, d2, d3) = (&even[..nt], &odd[..nt], &even[tw..], &odd[tw..]);
            let at = |a: usize| (a * 4 + b) * stride + ci * nt;
            zip_map(&mut v[at(0)..at(0) + nt], d0, d2, |d0, d2| d0 - d2);
            zip_map(&mut v[at(1)..at(1) + nt], d1, d2, |d1, d2| d1 + d2);
            zip_map(&mut v[at(2)..at(2) + nt], d2, d1, |d2, d1| d2 - d1);
            zip_map(&mut v[at(3)..at(3) + nt], d1, d3, |d1, d3| d1 - d3);
        }
    }
}

/// `Ũ[ξ][oc][t] = (A dY Aᵀ)[ξ]` for the 2×2 gradient tile of every tile `t` in `block` of
/// one image's output gradient `dy` (`o × oh × ow`; zero beyond the output's edge);
/// position ξ's `o × nt` matrix starts at `ξ·stride` in `u`.
#[inline(always)]
fn transform_output_grad<T: Element>(
    dy: &[T],
    o: usize,
    g: &Geometry,
    block: (usize, usize),
    u: &mut [T],
    stride: usize,
    scratch: &mut [T],
) {
    let tw = Tiles::of(g).cols;
    let nt = (block.1 - block.0) * tw;
    let h = &mut scratch[..8 * nt];
    for oc in 0..o {
        let plane = &dy[oc * g.oh * g.ow..(oc + 1) * g.oh * g.ow];
        // A along each gradient row: pixels (d0, d1) = (e_j, o_j) give (d0, d0 + d1, d0 − d1, −d1).
        for rr in 0..2 * (block.1 - block.0) {
            let (parity, s) = (rr % 2, rr / 2);
            let at = |b: usize| (b * 2 + parity) * nt + s * tw;
            let r = 2 * block.0 + rr;
            if r >= g.oh {
                for b in 0..4 {
                    h[at(b)..at(b) + tw].fill(T::zero());
                }
                continue;
            }
            // Straight from the gradient row, pixel pairs (e, o) to the four phases;
            // an odd last pixel pairs with a zero.
            let src = &plane[r * g.ow..(r + 1) * g.ow];
            let [h0, h1, h2, h3] = four_rows(h, at(0), 2 * nt, tw);
            for ((((pair, h0), h1), h2), h3) in src
                .chunks_exact(2)
                .zip(h0.iter_mut())
                .zip(h1.iter_mut())
                .zip(h2.iter_mut())
                .zip(h3.iter_mut())
            {
                let (e, o) = (pair[0], pair[1]);
                (*h0, *h1, *h2, *h3) = (e, e + o, e - o, -o);
            }
            if g.ow % 2 == 1 {
                let (e, o, j) = (src[g.ow - 1], T::zero(), tw - 1);
                (h0[j], h1[j], h2[j], h3[j]) = (e, e + o, e - o, -o);
            }
        }
        // A down the columns, over the whole block: rows 2ti (top) and 2ti+1 (bottom).
        for b in 0..4 {
            let top = &h[(b * 2) * nt..][..nt];
            let bottom = &h[(b * 2 + 1) * nt..][..nt];
            let at = |a: usize| (a * 4 + b) * stride + oc * nt;
            u[at(0)..at(0) + nt].copy_from_slice(top);
            zip_map(&mut u[at(1)..at(1) + nt], top, bottom, |t, b| t + b);
            zip_map(&mut u[at(2)..at(2) + nt], top, bottom, |t, b| t - b);
            zip_map(&mut u[at(3)..at(3) + nt], top, bottom, |_, b| -b);
        }
    }
}

/// `Y = Aᵀ M A (+ bias)` for every tile of `block`, written into one image's output `y`
/// (`o × oh × ow`); position ξ's `o × nt` products start at `ξ·stride` in `m`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn transform_output<T: Element>(
    m: &[T],
    stride: usize,
    o: usize,
    g: &Geometry,
    block: (usize, usize),
    bias: Option<&[T]>,
    y: &mut [T],
    scratch: &mut [T],
) {
    let tw = Tiles::of(g).cols;
    let nt = (block.1 - block.0) * tw;
    let (sums, rest) = scratch.split_at_mut(8 * nt);
    let (even, rest) = rest.split_at_mut(tw);
    let odd = &mut rest[..tw];
    for oc in 0..o {
        let bias = bias.map_or(T::zero(), |b| b[oc]);
        // Aᵀ down the columns, over the whole block: output rows 2ti (u = 0) and 2ti+1
        // (u = 1) of column phase q are (m0 + m1 + m2, m1 − m2 − m3).
        for q in 0..4 {
            let at = |a: usize| &m[(a * 4 + q) * stride + oc * nt..][..nt];
            let (top, bottom) = sums.split_at_mut(4 * nt);
            zip_map3(
                &mut top[q * nt..(q + 1) * nt],
                at(0),
                at(1),
                at(2),
                |a, b, c| a + b + c,
            );
            zip_map3(
                &mut bottom[q * nt..(q + 1) * nt],
                at(1),
                at(2),
                at(3),
                |a, b, c| a - b - c,
            );
        }
        // Aᵀ along each output row, then interleaved into the image (the last row and
        // column may be cut off).
        for ti in block.0..block.1 {
            for uu in 0..2 {
                let r = 2 * ti + uu;
                if r >= g.oh {
                    break;
                }
                let t0 = (ti - block.0) * tw;
                let s = |q: usize| &sums[(uu * 4 + q) * nt + t0..][..tw];
                zip_map3(even, s(0), s(1), s(2), |a, b, c| a + b + c + bias);
                zip_map3(odd, s(1), s(2), s(3), |a, b, c| a - b - c + bias);
                let out = &mut y[(oc * g.oh + r) * g.ow..(oc * g.oh + r + 1) * g.ow];
                for ((px, &e), &o) in out.chunks_mut(2).zip(even.iter()).zip(odd.iter()) {
                    px[0] = e;
                    if let Some(second) = px.get_mut(1) {
                        *second = o;
                    }
                }
            }
        }
    }
}

/// Adds `B M' Bᵀ` of every tile of `block` into the padded input-gradient planes `planes`
/// (`c × padded_height × padded_width`); position ξ's `c × nt` values start at
/// `ξ·stride` in `m`.
#[inline(always)]
fn scatter_input_grad<T: Element>(
    m: &[T],
    stride: usize,
    g: &Geometry,
    block: (usize, usize),
    planes: &mut [T],
    scratch: &mut [T],
) {
    let tiles = Tiles::of(g);
    let (tw, wp, hp) = (tiles.cols, tiles.padded_width(), tiles.padded_height());
    let nt = (block.1 - block.0) * tw;
    // Padded rows 2·block.0 .. 2·block.1 + 2, by parity: one tile row more than the block.
    let per_parity = nt + tw;
    let (z, rest) = scratch.split_at_mut(8 * per_parity);
    let (even, rest) = rest.split_at_mut(tw + 1);
    let odd = &mut rest[..tw + 1];
    for ci in 0..g.c {
        // B down the columns: patch rows 0..4 of a tile get (m0, m1 − m2 + m3,
        // −m0 + m1 + m2, −m3); rows 2 and 3 of tile row ti are rows 0 and 1 of ti + 1,
        // so each parity's rows sum two terms, the second shifted by one tile row.
        for b in 0..4 {
            let at = |a: usize| &m[(a * 4 + b) * stride + ci * nt..][..nt];
            let (m0, m1, m2, m3) = (at(0), at(1), at(2), at(3));
            let (ze, zo) =
                z[(b * 2) * per_parity..(b * 2 + 2) * per_parity].split_at_mut(per_parity);
            ze[..nt].copy_from_slice(m0);
            ze[nt..].fill(T::zero());
            zip_map3(&mut zo[..nt], m1, m2, m3, |m1, m2, m3| m1 - m2 + m3);
            zo[nt..].fill(T::zero());
            for (((e, &m0), &m1), &m2) in ze[tw..].iter_mut().zip(m0).zip(m1).zip(m2) {
                *e += m1 + m2 - m0;
            }
            for (o, &m3) in zo[tw..].iter_mut().zip(m3) {
                *o = *o - m3;
            }
        }
        // B along each padded row: columns 2j..2j+4 of tile j get (z0, z1 − z2 + z3,
        // −z0 + z1 + z2, −z3); even column 2j sums tile j's first and tile j−1's third,
        // odd column 2j+1 tile j's second and tile j−1's fourth.
        let plane = &mut planes[ci * hp * wp..(ci + 1) * hp * wp];
        for rr in 0..2 * (block.1 - block.0) + 2 {
            let (parity, s) = (rr % 2, rr / 2);
            let zs = |b: usize| &z[(b * 2 + parity) * per_parity + s * tw..][..tw];
            let (z0, z1, z2, z3) = (zs(0), zs(1), zs(2), zs(3));
            even[..tw].copy_from_slice(z0);
            even[tw] = T::zero();
            zip_map3(&mut odd[..tw], z1, z2, z3, |a, b, c| a - b + c);
            odd[tw] = T::zero();
            for (((e, &z0), &z1), &z2) in even[1..].iter_mut().zip(z0).zip(z1).zip(z2) {
                *e += z1 + z2 - z0;
            }
            for (o, &z3) in odd[1..].iter_mut().zip(z3) {
                *o = *o - z3;
            }
            let row = &mut plane[(2 * block.0 + rr) * wp..][..wp];
            for ((px, &e), &o) in row.chunks_exact_mut(2).zip(even.iter()).zip(odd.iter()) {
                px[0] += e;
                px[1] += o;
            }
        }
    }
}

// The weight gradient's products `Ũ[ξ]·V[ξ]ᵀ` run over tiles, so matrixmultiply packs
// their operands with contiguous loads only if they are stored tile-major
// (`[ξ][tile][channel]`); stored channel-major, as the forward and dX products want them,
// it gathers 16 strided streams per panel (11% of a cifar-cnn step). The backward pass
// therefore transforms the input and the gradient tile-major as well, from NHWC copies,
// eight channels at a time; the dX products still take a channel-major `Ũ`, made after
// the dW products in the same buffers. This paid only once the positions' matrices were
// padded apart ([`position_stride`]): dX + dW of conv2 went from 134–144 to 159–165
// GFLOP/s-equivalent. Before, a second gradient transform cost more than the packing
// it saved (same-run A/B: 905–911 against 941–951 images/s), and transposing a
// tile-major `Ũ` into the channel-major one for dX was slower still.

/// `xn` (`padded_height × padded_width × c`, NHWC): the image `x` (`c × h × w`) placed at
/// offset `padding` in a zero plane covering every tile's 4×4 patch.
#[inline(always)]
fn input_to_nhwc<T: Element>(x: &[T], g: &Geometry, xn: &mut [T]) {
    let wp = Tiles::of(g).padded_width();
    let (ph, pw) = g.padding;
    xn.fill(T::zero());
    for ih in 0..g.h {
        // Input row ih of every channel, as pixels of padded row ih + ph.
        transpose(
            &x[ih * g.w..],
            (g.c, g.w, g.h * g.w),
            &mut xn[((ih + ph) * wp + pw) * g.c..],
            g.c,
        );
    }
}

// The tile kernels below use plain loops over fixed-size lane arrays (no closures or
// `array::from_fn`, which the compiler left as out-of-line calls: 10% of a step).

/// `(d0 − d2, d1 + d2, d2 − d1, d1 − d3)`: `Bᵀ` applied to four lanes-wide values.
#[inline(always)]
fn bt4<T: Element, const L: usize>(
    d0: &[T; L],
    d1: &[T; L],
    d2: &[T; L],
    d3: &[T; L],
) -> [[T; L]; 4] {
    let mut out = [[T::zero(); L]; 4];
    for l in 0..L {
        out[0][l] = d0[l] - d2[l];
        out[1][l] = d1[l] + d2[l];
        out[2][l] = d2[l] - d1[l];
        out[3][l] = d1[l] - d3[l];
    }
    out
}

/// The `P × P` patch at `at` of an NHWC source (`row` elements per row, `pixel` per
/// pixel), `L` channels of each pixel.
#[inline(always)]
fn load_patch<T: Element, const L: usize, const P: usize>(
    src: &[T],
    at: usize,
    row: usize,
    pixel: usize,
) -> [[[T; L]; P]; P] {
    let mut d = [[[T::zero(); L]; P]; P];
    for (r, d_row) in d.iter_mut().enumerate() {
        for (s, lanes) in d_row.iter_mut().enumerate() {
            let from = at + r * row + s * pixel;
            lanes.copy_from_slice(&src[from..from + L]);
        }
    }
    d
}

/// Visits the tiles of `block` (`cols` per tile row) and their `channels` eight at a time,
/// then one at a time: `wide` and `single` get `dst`, the tile's first channel in an NHWC
/// source (2 pixels per tile, `row` elements per source row) and its place in a tile-major
/// destination (`channels` per tile).
#[inline(always)]
fn for_each_tile_lanes<T>(
    dst: &mut [T],
    (block, cols, channels, row): ((usize, usize), usize, usize, usize),
    wide: impl Fn(&mut [T], usize, usize),
    single: impl Fn(&mut [T], usize, usize),
) {
    for ti in block.0..block.1 {
        for tj in 0..cols {
            let t = (ti - block.0) * cols + tj;
            let at = 2 * ti * row + 2 * tj * channels;
            let mut ch = 0;
            while ch + 8 <= channels {
                wide(dst, at + ch, t * channels + ch);
                ch += 8;
            }
            for ch in ch..channels {
                single(dst, at + ch, t * channels + ch);
            }
        }
    }
}

/// `V[ξ][t][ch..ch + L]` of one tile from its 4×4 patch at `at` in the NHWC input `xn`
/// (`row` elements per padded row, `c` per pixel); `out` indexes tile `t`, channel `ch`
/// of position 0, and each position is `plane` further.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // `a` picks a row across the four columns
fn input_tile<T: Element, const L: usize>(
    xn: &[T],
    at: usize,
    row: usize,
    c: usize,
    v: &mut [T],
    out: usize,
    plane: usize,
) {
    let d = load_patch::<T, L, 4>(xn, at, row, c);
    // Bᵀ down the patch's columns (index a), then B along its rows (index b).
    let mut cols = [[[T::zero(); L]; 4]; 4];
    for (s, col) in cols.iter_mut().enumerate() {
        *col = bt4(&d[0][s], &d[1][s], &d[2][s], &d[3][s]);
    }
    for a in 0..4 {
        let row = bt4(&cols[0][a], &cols[1][a], &cols[2][a], &cols[3][a]);
        for (b, values) in row.iter().enumerate() {
            let at = out + (a * 4 + b) * plane;
            v[at..at + L].copy_from_slice(values);
        }
    }
}

/// Tile-major `V[ξ][t][ci]` for the tiles of `block` from the NHWC input `xn`; position
/// ξ's `nt × c` matrix starts at `ξ·plane` in `v`.
#[inline(always)]
fn transform_input_tile_major<T: Element>(
    xn: &[T],
    g: &Geometry,
    block: (usize, usize),
    v: &mut [T],
    plane: usize,
) {
    let tiles = Tiles::of(g);
    let (cols, c) = (tiles.cols, g.c);
    let row = tiles.padded_width() * c;
    for_each_tile_lanes(
        v,
        (block, cols, c, row),
        |v, at, out| input_tile::<T, 8>(xn, at, row, c, v, out, plane),
        |v, at, out| input_tile::<T, 1>(xn, at, row, c, v, out, plane),
    );
}

/// `dyn` (`2·rows × 2·cols × o`, NHWC): the output gradient `dy` (`o × oh × ow`), with
/// zeros where the last row or column of tiles reaches beyond the output.
#[inline(always)]
fn grad_to_nhwc<T: Element>(dy: &[T], o: usize, g: &Geometry, dyn_: &mut [T]) {
    let tiles = Tiles::of(g);
    let row = 2 * tiles.cols * o;
    if g.oh % 2 == 1 || g.ow % 2 == 1 {
        dyn_.fill(T::zero());
    }
    for r in 0..g.oh {
        transpose(
            &dy[r * g.ow..],
            (o, g.ow, g.oh * g.ow),
            &mut dyn_[r * row..],
            o,
        );
    }
}

/// `(d0, d0 + d1, d0 − d1, −d1)`: `A` applied to two lanes-wide values.
#[inline(always)]
fn a4<T: Element, const L: usize>(d0: &[T; L], d1: &[T; L]) -> [[T; L]; 4] {
    let mut out = [[T::zero(); L]; 4];
    for l in 0..L {
        out[0][l] = d0[l];
        out[1][l] = d0[l] + d1[l];
        out[2][l] = d0[l] - d1[l];
        out[3][l] = -d1[l];
    }
    out
}

/// `Ũ[ξ][t][oc..oc + L]` of one tile from its 2×2 gradient patch at `at` in the NHWC
/// gradient `dyn` (`row` elements per row, `o` per pixel); `out` indexes tile `t`, channel
/// `oc` of position 0, and each position is `plane` further. Rows first, then columns, as
/// [`transform_output_grad`] does, so both layouts hold the same values.
#[inline(always)]
fn grad_tile<T: Element, const L: usize>(
    dyn_: &[T],
    at: usize,
    row: usize,
    o: usize,
    u: &mut [T],
    out: usize,
    plane: usize,
) {
    let d = load_patch::<T, L, 2>(dyn_, at, row, o);
    // A along the patch's rows (index b), then down its columns (index a).
    let top = a4(&d[0][0], &d[0][1]);
    let bottom = a4(&d[1][0], &d[1][1]);
    for b in 0..4 {
        let col = a4(&top[b], &bottom[b]);
        for (a, values) in col.iter().enumerate() {
            let at = out + (a * 4 + b) * plane;
            u[at..at + L].copy_from_slice(values);
        }
    }
}

/// Tile-major `Ũ[ξ][t][oc]` for the tiles of `block` from the NHWC gradient `dyn`
/// ([`grad_to_nhwc`]); position ξ's `nt × o` matrix starts at `ξ·plane` in `u`.
#[inline(always)]
fn transform_output_grad_tile_major<T: Element>(
    dyn_: &[T],
    o: usize,
    g: &Geometry,
    block: (usize, usize),
    u: &mut [T],
    plane: usize,
) {
    let cols = Tiles::of(g).cols;
    let row = 2 * cols * o;
    for_each_tile_lanes(
        u,
        (block, cols, o, row),
        |u, at, out| grad_tile::<T, 8>(dyn_, at, row, o, u, out, plane),
        |u, at, out| grad_tile::<T, 1>(dyn_, at, row, o, u, out, plane),
    );
}

/// Workspace (elements) for [`forward_image`].
pub fn forward_workspace(g: &Geometry, o: usize) -> usize {
    let tiles = Tiles::of(g);
    let cap = tiles.block_capacity();
    POSITIONS * (position_stride(g.c * cap) + position_stride(o * cap)) + scratch_len(&tiles)
}

/// One image's convolution: `y` (`o × oh × ow`) from `x` (`c × h × w`), the transformed
/// weights `u` ([`transform_weights`], [`WeightLayout::ByInput`]) and an optional bias.
pub fn forward_image<T: Element>(
    x: &[T],
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
    u: &[T],
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
    u: &[T],
    o: usize,
    bias: Option<&[T]>,
    y: &mut [T],
    workspace: &mut [T],
) {
    let tiles = Tiles::of(g);
    let cap = tiles.block_capacity();
    let (v_stride, m_stride) = (position_stride(g.c * cap), position_stride(o * cap));
    let (v, rest) = workspace.split_at_mut(POSITIONS * v_stride);
    let (m, scratch) = rest.split_at_mut(POSITIONS * m_stride);
    let c = g.c;
    for block in tiles.blocks() {
        let nt = (block.1 - block.0) * tiles.cols;
        transform_input(x, g, block, v, v_stride, scratch);
        for xi in 0..POSITIONS {
            // M[ξ] (o × nt) = U[ξ] (o × c) · V[ξ] (c × nt)
            gemm(
                MatRef::new(u, xi * o * c, (o, c), (1, o)),
                MatRef::new(v, xi * v_stride, (c, nt), (nt, 1)),
                T::zero(),
                MatMut::new(&mut m[xi * m_stride..], (o, nt), nt),
            );
        }
        transform_output(m, m_stride, o, g, block, bias, y, scratch);
    }
}

/// Workspace (elements) for [`backward_image`].
pub fn backward_workspace(g: &Geometry, o: usize) -> usize {
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
}

/// One image's backward pass. With `dx`, writes the image's input gradient (`c × h × w`)
/// from the transformed weights `u` ([`WeightLayout::ByOutput`]); with `wt`, adds the image's transformed weight
/// gradient (`16 × o × c`, see [`finish_weight_grad`]) computed from its input `x`.
#[allow(clippy::too_many_arguments)]
pub fn backward_image<T: Element>(
    dy: &[T],
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
    u: &[T],
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
    u: &[T],
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
    let (xn, scratch) = rest.split_at_mut(plane_len);
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
            for xi in 0..POSITIONS {
                // W̃[ξ] (o × c) += Ũ[ξ] (o × nt) · V[ξ] (nt × c), both stored tile-major.
                gemm(
                    MatRef::new(ut, xi * u_stride, (o, nt), (1, o)),
                    MatRef::new(v, xi * c_stride, (nt, c), (c, 1)),
                    T::one(),
                    MatMut::new(&mut wt[xi * o * c..], (o, c), c),
                );
            }
        }
        if dx.is_some() {
            transform_output_grad(dy, o, g, block, ut, u_stride, scratch);
            for xi in 0..POSITIONS {
                // M'[ξ] (c × nt) = U[ξ]ᵀ (c × o) · Ũ[ξ] (o × nt)
                gemm(
                    MatRef::new(u, xi * o * c, (c, o), (1, c)),
                    MatRef::new(ut, xi * u_stride, (o, nt), (nt, 1)),
                    T::zero(),
                    MatMut::new(&mut v[xi * c_stride..], (c, nt), nt),
                );
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

/// Elements of a transformed weight gradient.
pub fn weight_grad_len(o: usize, c: usize) -> usize {
    POSITIONS * o * c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::{conv_geometry, Conv2dConfig};

    /// The dW products read the tile-major gradient transform and the dX products the
    /// channel-major one; both must hold the same values, computed in the same order.
    #[test]
    fn tile_major_grad_transform_equals_the_channel_major_one() {
        // 11 output channels (8 lanes and 3 single ones), odd output sides.
        for (o, h, w, p) in [(11, 7, 9, 1), (3, 6, 10, 2), (16, 5, 5, 0)] {
            let g = conv_geometry(
                &[1, 2, h, w],
                &[o, 2, 3, 3],
                None,
                Conv2dConfig::new(1, p, 1),
            )
            .unwrap();
            let tiles = Tiles::of(&g);
            let dy: Vec<f32> = (0..o * g.oh * g.ow)
                .map(|i| ((i * 7919) % 113) as f32 / 17.0 - 3.0)
                .collect();
            let mut dyn_ = vec![f32::NAN; 4 * tiles.rows * tiles.cols * o];
            grad_to_nhwc(&dy, o, &g, &mut dyn_);
            let mut scratch = vec![0.0; scratch_len(&tiles) + 8 * tiles.block_capacity()];
            for block in tiles.blocks() {
                let nt = (block.1 - block.0) * tiles.cols;
                let stride = position_stride(o * nt);
                let mut channel_major = vec![0.0; POSITIONS * stride];
                transform_output_grad(&dy, o, &g, block, &mut channel_major, stride, &mut scratch);
                let mut tile_major = vec![0.0; POSITIONS * stride];
                transform_output_grad_tile_major(&dyn_, o, &g, block, &mut tile_major, stride);
                for xi in 0..POSITIONS {
                    for oc in 0..o {
                        for t in 0..nt {
                            let a = channel_major[xi * stride + oc * nt + t];
                            let b = tile_major[xi * stride + t * o + oc];
                            // Equal as numbers: beyond the output's edge one side has +0
                            // and the other −0.
                            assert_eq!(a, b, "ξ {xi}, channel {oc}, tile {t}");
                        }
                    }
                }
            }
        }
    }
}
