//! Row transforms, channel-major: `V = Bᵀ d B` of the input and `Ũ = A dY Aᵀ` of the
//! output gradient for the forward and dX products, `Y = Aᵀ M A` and the scatter
//! `B M' Bᵀ` after them. Each works on whole rows of tiles of one block.

use super::Tiles;
use crate::kernels::{Element, Geometry};

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
pub(super) fn scratch_len(tiles: &Tiles) -> usize {
    let (tw, cap) = (tiles.cols, tiles.block_capacity());
    // Four row-phase arrays per parity (+ one tile row) and a row's even and odd halves.
    8 * (cap + tw) + 2 * (tw + 1)
}

/// `V[ξ][ci][t] = (Bᵀ d B)[ξ]` for the input patch `d` of every tile `t` in tile rows
/// `block` of one image `x` (`c × h × w`); position ξ's `c × nt` matrix starts at
/// `ξ·stride` in `v` (see [`position_stride`]), `nt` the tiles of the block.
#[inline(always)]
pub(super) fn transform_input<T: Element>(
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
pub(super) fn transform_output_grad<T: Element>(
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
pub(super) fn transform_output<T: Element>(
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
                // Whole pixel pairs first (a branch-free loop that vectorises), then an odd
                // last pixel: with `chunks_mut(2)` and a check per pair it ran scalar.
                let mut pairs = out.chunks_exact_mut(2);
                for ((px, &e), &o) in (&mut pairs).zip(even.iter()).zip(odd.iter()) {
                    px[0] = e;
                    px[1] = o;
                }
                if let [last] = pairs.into_remainder() {
                    *last = even[g.ow / 2];
                }
            }
        }
    }
}

/// Adds `B M' Bᵀ` of every tile of `block` into the padded input-gradient planes `planes`
/// (`c × padded_height × padded_width`); position ξ's `c × nt` values start at
/// `ξ·stride` in `m`.
#[inline(always)]
pub(super) fn scatter_input_grad<T: Element>(
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
