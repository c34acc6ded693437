//! Tile-major transforms for the weight-gradient products: `V[ξ][tile][channel]` and
//! `Ũ[ξ][tile][channel]` from NHWC copies of the input and the gradient, eight channels
//! at a time.

use super::Tiles;
use crate::kernels::transpose::copy_transposed;
use crate::kernels::{Element, Geometry};

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
pub(super) fn input_to_nhwc<T: Element>(x: &[T], g: &Geometry, xn: &mut [T]) {
    input_to_nhwc_width(x, g, Tiles::of(g).padded_width(), xn)
}

/// [`input_to_nhwc`] into padded rows of `wp` pixels (`xn.len() / (wp·c)` rows).
#[inline(always)]
pub(super) fn input_to_nhwc_width<T: Element>(x: &[T], g: &Geometry, wp: usize, xn: &mut [T]) {
    let (ph, pw) = g.padding;
    xn.fill(T::zero());
    for ih in 0..g.h {
        // Input row ih of every channel, as pixels of padded row ih + ph.
        copy_transposed(
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
pub(super) fn load_patch<T: Element, const L: usize, const P: usize>(
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
pub(super) fn transform_input_tile_major<T: Element>(
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
pub(super) fn grad_to_nhwc<T: Element>(dy: &[T], o: usize, g: &Geometry, dyn_: &mut [T]) {
    let tiles = Tiles::of(g);
    let row = 2 * tiles.cols * o;
    if g.oh % 2 == 1 || g.ow % 2 == 1 {
        dyn_.fill(T::zero());
    }
    for r in 0..g.oh {
        copy_transposed(
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
pub(super) fn transform_output_grad_tile_major<T: Element>(
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

#[cfg(test)]
mod tests {
    use super::super::rows::{scratch_len, transform_output_grad};
    use super::super::{position_stride, POSITIONS};
    use super::*;

    /// The dW products read the tile-major gradient transform and the dX products the
    /// channel-major one; both must hold the same values, computed in the same order.
    #[test]
    fn tile_major_grad_transform_equals_the_channel_major_one() {
        // 11 output channels (8 lanes and 3 single ones), odd output sides.
        for (o, h, w, p) in [(11, 7, 9, 1), (3, 6, 10, 2), (16, 5, 5, 0)] {
            let g = Geometry::new(2, (h, w), (3, 3), (1, 1), (p, p), (1, 1)).unwrap();
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
