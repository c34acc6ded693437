//! Winograd F(4×4, 3×3) for the forward pass: 36 products per 4×4 output tile, 2.25
//! multiplications per output against F(2×2)'s 4 (and im2col's 9), and 2.25 transformed
//! values per output to write and read against 4.
//!
//! `Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A` for the 6×6 input patch `d` of every 4×4 output tile
//! ([`reference::forward_image_f4`](super::reference::forward_image_f4) computes it tile
//! by tile); summed over input channels, each of the 36 positions ξ is the product
//! `M[ξ] (o × tiles) = U[ξ] (o × c) · V[ξ] (c × tiles)` on the micro-kernel, as F(2×2)'s.
//!
//! The transforms run on groups of 8 lanes (`[T; 8]` arrays: one AVX2 vector of f32), each
//! lane a tile: 8 tiles of one row, or 4 tiles of two rows on 16×16 maps. Over whole rows
//! of tiles, as F(2×2)'s run, the loops were as short as the map is narrow (2–8 tiles on
//! resnet's maps) and LLVM left them scalar, which made a first F(4×4) slower than F(2×2)
//! (BENCHMARKS.md). Along a row, the patch of tile `j` is the row's columns `4j..4j+6`:
//! the row's four column phases (split in registers) at `j`, and phases 0–1 at `j + 1`.
//! Down the columns, the row-transformed rows are stored by row phase, so that tile row
//! `ti`'s six rows are phases 0–3 at `ti` and 0–1 at `ti + 1`: the same flattened tile
//! index in each, and the column pass runs over a block's tiles at once.
//!
//! On AVX2, "same" layers 32 or 16 wide take `f4_same_x86`'s transforms instead, straight
//! from the image and kept in registers; the ones below are their reference (and every
//! other width's path).
//!
//! The larger interpolation points cost accuracy: in f32 the outputs differ from the
//! direct sums by about 5× F(2×2)'s error (`f32_error_against_the_direct_sums` states the
//! measured figures). Backward stays F(2×2), which computes the exact adjoint of its own
//! forward; the two forwards agree to that rounding.

use super::driver::multiply_tiles;
use super::weights::transform_weights_f4;
#[cfg(target_arch = "x86_64")]
use super::{f4_same_x86, f4_x86};
use super::{position_stride, supports};
use crate::kernels::conv::{ConvForward, Epilogue};
use crate::kernels::elementwise::copy_short;
use crate::kernels::microkernel::{PackedRows, NR};
use crate::kernels::{Element, Geometry};

/// Transformed positions per tile (6×6).
const POSITIONS: usize = 36;

/// Tiles per block, about: a block's transformed input and products (`36·(c + o)` floats
/// per tile) stay in L2 for the 16–64-channel layers F(4×4) is chosen for.
const BLOCK_TILES: usize = 64;

/// Lanes of the transforms: one AVX2 vector of f32.
const LANES: usize = 8;

/// Whether the forward pass takes F(4×4) rather than F(2×2): a layer Winograd supports
/// whose rows of 4×4 tiles fill the 8 lanes of the transforms (whole groups of 8 tiles, or
/// 4 tiles, two rows to a group: output widths 13–16, 29–32, 61–64, …) and whose images
/// have at least 16 tiles. Narrower maps (8×8: 2 tiles a row) stay F(2×2).
pub fn prefers(g: &Geometry) -> bool {
    let (rows, cols) = (g.oh.div_ceil(4), g.ow.div_ceil(4));
    supports(g) && (cols.is_multiple_of(LANES) || cols == LANES / 2) && rows * cols >= 16
}

/// The tiles of a layer and the blocks they are processed in.
#[derive(Clone, Copy, Debug)]
struct Tiles {
    rows: usize,
    cols: usize,
    /// Tile rows per block.
    per_block: usize,
}

impl Tiles {
    fn of(g: &Geometry) -> Self {
        let (rows, cols) = (g.oh.div_ceil(4), g.ow.div_ceil(4));
        Tiles {
            rows,
            cols,
            per_block: (BLOCK_TILES / cols).clamp(1, rows),
        }
    }

    /// Tiles in the largest block.
    fn capacity(&self) -> usize {
        self.per_block * self.cols
    }

    /// Blocks of whole tile rows: `(first, end)`.
    fn blocks(&self) -> impl Iterator<Item = (usize, usize)> {
        let (per, rows) = (self.per_block, self.rows);
        (0..rows)
            .step_by(per)
            .map(move |r| (r, (r + per).min(rows)))
    }

    /// Elements of a padded input row: every tile's 6 columns, and the 4 more a lane group
    /// reads for the tile after the last.
    fn row_len(&self) -> usize {
        4 * self.cols + 4 + 4 * LANES
    }

    /// Elements of one phase of row-transformed rows: `rows + 1` rows of tiles, rounded
    /// up to whole lane groups, and one group more (read by the last tile row's last).
    fn h_phase_len(&self) -> usize {
        ((self.per_block + 2) * self.cols).div_ceil(LANES) * LANES + 2 * LANES
    }

    /// Scratch the transforms need: the block's padded input rows and a zero row, then the
    /// row-transformed rows `H`; or the column sums `S`.
    fn scratch(&self) -> usize {
        let rows = (4 * self.per_block + 3) * self.row_len();
        let h = 6 * 4 * self.h_phase_len();
        let s = 4 * 6 * (self.capacity() + LANES);
        (rows + h).max(s)
    }
}

/// The four column phases of `4·L` elements of a row from `at`: `out[k][j] = row[at + 4j + k]`
/// (a fixed-size loop the compiler turns into shuffles).
#[inline(always)]
fn phases<T: Element, const L: usize>(row: &[T], at: usize) -> [[T; L]; 4] {
    let mut out = [[T::zero(); L]; 4];
    let src = &row[at..at + 4 * L];
    for j in 0..L {
        for k in 0..4 {
            out[k][j] = src[4 * j + k];
        }
    }
    out
}

/// `L` lanes of `s` from `at`.
#[inline(always)]
fn lanes<T: Element, const L: usize>(s: &[T], at: usize) -> [T; L] {
    let mut out = [T::zero(); L];
    out.copy_from_slice(&s[at..at + L]);
    out
}

/// `Bᵀ d` for six lane groups: `out[a] = Σ_s Bᵀ[a][s]·d[s]`, the rows of [`BT4`](super::reference::BT4) written
/// out (plain loops over fixed-size arrays: closures or `array::from_fn` here were left as
/// out-of-line calls).
#[inline(always)]
pub(super) fn bt6<T: Element, const L: usize>(d: &[[T; L]; 6]) -> [[T; L]; 6] {
    let (two, four, five) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(5.0));
    let mut out = [[T::zero(); L]; 6];
    for l in 0..L {
        let (x0, x1, x2, x3, x4, x5) = (d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]);
        out[0][l] = four * x0 - five * x2 + x4;
        out[1][l] = x3 + x4 - four * (x1 + x2);
        out[2][l] = four * (x1 - x2) + x4 - x3;
        out[3][l] = two * (x3 - x1) + x4 - x2;
        out[4][l] = two * (x1 - x3) + x4 - x2;
        out[5][l] = four * x1 - five * x3 + x5;
    }
    out
}

/// `Aᵀ m + bias` for six lane groups: `out[u] = Σ_a Aᵀ[u][a]·m[a] + bias`, the rows of
/// [`AT4`](super::reference::AT4) written out.
#[inline(always)]
pub(super) fn at6<T: Element, const L: usize>(m: &[[T; L]; 6], bias: T) -> [[T; L]; 4] {
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    let mut out = [[T::zero(); L]; 4];
    for l in 0..L {
        let (p12, n12) = (m[1][l] + m[2][l], m[1][l] - m[2][l]);
        let (p34, n34) = (m[3][l] + m[4][l], m[3][l] - m[4][l]);
        out[0][l] = m[0][l] + p12 + p34 + bias;
        out[1][l] = n12 + two * n34 + bias;
        out[2][l] = p12 + four * p34 + bias;
        out[3][l] = n12 + eight * n34 + m[5][l] + bias;
    }
    out
}

/// `L` lanes from the lane groups `a` (first half) and `b` (second half) of half width.
#[inline(always)]
fn concat<T: Element, const H: usize, const L: usize>(a: &[T; H], b: &[T; H]) -> [T; L] {
    let mut out = [T::zero(); L];
    out[..H].copy_from_slice(a);
    out[H..].copy_from_slice(b);
    out
}

/// The six row values of `LANES` tiles of padded rows `rows` (one row: tile columns `j0..`;
/// two rows of 4 tiles: 4 lanes each), each of its row's columns `4j..4j + 6`.
/// With `AVX2` (the caller has checked the CPU), f32 takes [`f4_x86`]'s shuffles.
#[inline(always)]
fn row_patches<T: Element, const AVX2: bool>(
    rows: [&[T]; 2],
    j0: usize,
    cols: usize,
) -> [[T; LANES]; 6] {
    const HALF: usize = LANES / 2;
    #[cfg(target_arch = "x86_64")]
    if AVX2 {
        // SAFETY: the caller has checked that the CPU has AVX2; the padded rows hold
        // `4·cols + 36` elements.
        if let Some(d) = unsafe { f4_x86::row_patches(rows, j0, cols) } {
            return d;
        }
    }
    if cols == HALF {
        let (a, a1) = (phases::<T, HALF>(rows[0], 0), phases::<T, HALF>(rows[0], 4));
        let (b, b1) = (phases::<T, HALF>(rows[1], 0), phases::<T, HALF>(rows[1], 4));
        [
            concat(&a[0], &b[0]),
            concat(&a[1], &b[1]),
            concat(&a[2], &b[2]),
            concat(&a[3], &b[3]),
            concat(&a1[0], &b1[0]),
            concat(&a1[1], &b1[1]),
        ]
    } else {
        let [d0, d1, d2, d3] = phases::<T, LANES>(rows[0], 4 * j0);
        let [d4, d5, _, _] = phases::<T, LANES>(rows[0], 4 * j0 + 4);
        [d0, d1, d2, d3, d4, d5]
    }
}

/// `V[ξ][ci][t] = (Bᵀ d B)[ξ]` for the 6×6 patch `d` of every tile `t` of tile rows
/// `block` of one image `x` (`c × h × w`); position ξ's `c × nt` matrix starts at
/// `ξ·stride` in `v`.
#[inline(always)]
fn transform_input<T: Element, const AVX2: bool>(
    x: &[T],
    g: &Geometry,
    tiles: &Tiles,
    block: (usize, usize),
    v: &mut [T],
    stride: usize,
    scratch: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: with `AVX2`, the caller has checked that the CPU has AVX2.
    if AVX2 && unsafe { f4_same_x86::transform_input(x, g, block, v, stride) } {
        return;
    }
    let cols = tiles.cols;
    let rows = block.1 - block.0;
    let nt = rows * cols;
    let padded_rows = 4 * rows + 2;
    let row_len = tiles.row_len();
    let (padded, h) = scratch.split_at_mut((4 * tiles.per_block + 3) * row_len);
    // H[b][rr % 4][(rr / 4)·cols + j]: Bᵀ along padded row rr for tile column j. Stored by
    // row phase, tile row ti's six rows are phases 0–3 at ti and 0–1 at ti + 1: the same
    // flattened index `ti·cols + j` in each, shifted by `cols` for the last two.
    let h_len = tiles.h_phase_len();
    let (ph, pw) = g.padding;
    // The padded rows' padding columns are zeroed once; rows outside the image, and the
    // zero row after the last, are zeroed whole.
    padded.fill(T::zero());
    let fit = g.w.min(row_len - pw);
    for ci in 0..g.c {
        let plane = &x[ci * g.h * g.w..][..g.h * g.w];
        for (rr, row) in padded
            .chunks_exact_mut(row_len)
            .take(padded_rows)
            .enumerate()
        {
            let ih = (4 * block.0 + rr) as isize - ph as isize;
            if ih < 0 || ih >= g.h as isize {
                row.fill(T::zero());
            } else {
                // In runs of 8 of a known size: `copy_from_slice` was a `memcpy` call per
                // row, 5% of a resnet20 inference on AMD Zen 3.
                copy_short(&mut row[pw..pw + fit], &plane[ih as usize * g.w..][..fit]);
            }
        }
        let padded = &padded[..];
        let row = |rr: usize| {
            let rr = if rr < padded_rows { rr } else { padded_rows };
            &padded[rr * row_len..][..row_len]
        };
        for r4 in 0..4 {
            // Padded rows of this phase: 4q + r4 < padded_rows.
            let count = (padded_rows - r4).div_ceil(4) * cols;
            for f in (0..count).step_by(LANES) {
                let (q, j0) = (f / cols, f % cols);
                let rows = [row(4 * q + r4), row(4 * q + 4 + r4)];
                let d = row_patches::<T, AVX2>(rows, j0, cols);
                let out = bt6(&d);
                for (b, lanes) in out.iter().enumerate() {
                    h[b * 4 * h_len + r4 * h_len + f..][..LANES].copy_from_slice(lanes);
                }
            }
        }
        // Bᵀ down the columns, over the whole block's tiles at once.
        for b in 0..6 {
            let hb = &h[b * 4 * h_len..][..4 * h_len];
            for t in (0..nt).step_by(LANES) {
                let at = |s: usize| lanes::<T, LANES>(hb, (s % 4) * h_len + (s / 4) * cols + t);
                let out = bt6(&[at(0), at(1), at(2), at(3), at(4), at(5)]);
                let n = LANES.min(nt - t);
                for (a, lanes) in out.iter().enumerate() {
                    let to = (a * 6 + b) * stride + ci * nt + t;
                    if n == LANES {
                        // A fixed-size copy: one vector store, no `memcpy` call.
                        v[to..to + LANES].copy_from_slice(lanes);
                    } else {
                        v[to..to + n].copy_from_slice(&lanes[..n]);
                    }
                }
            }
        }
    }
}

/// Writes `N` tiles' four column phases (`px[v][first + l]`, `l < N`) as `4N` pixels of
/// an output row from column `at`, the pixels past the row's end left out.
#[inline(always)]
fn interleave<T: Element, const N: usize>(
    px: &[[T; LANES]; 4],
    first: usize,
    row: &mut [T],
    at: usize,
) {
    if at + 4 * N <= row.len() {
        let dst = &mut row[at..at + 4 * N];
        for l in 0..N {
            for (v, phase) in px.iter().enumerate() {
                dst[4 * l + v] = phase[first + l];
            }
        }
    } else {
        for l in 0..N {
            for (v, phase) in px.iter().enumerate() {
                if let Some(p) = row.get_mut(at + 4 * l + v) {
                    *p = phase[first + l];
                }
            }
        }
    }
}

/// `Y = Aᵀ M A + bias` for the tiles of `block`, written into one image's output `y`
/// (`o × oh × ow`, cut at its edges), then `epilogue` on the rows written (`f4_same_x86`
/// applies it in its stores); position ξ's `o × nt` products start at `ξ·stride` in `m`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn transform_output<T: Element, const AVX2: bool>(
    m: &[T],
    stride: usize,
    o: usize,
    g: &Geometry,
    tiles: &Tiles,
    block: (usize, usize),
    bias: Option<&[T]>,
    epilogue: Option<Epilogue<'_, T>>,
    y: &mut [T],
    scratch: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: with `AVX2`, the caller has checked that the CPU has AVX2.
    if AVX2 && unsafe { f4_same_x86::transform_output(m, stride, o, g, block, bias, epilogue, y) } {
        return;
    }
    let cols = tiles.cols;
    let rows = block.1 - block.0;
    let nt = rows * cols;
    // S[u][b][t] = Σ_a Aᵀ[u][a]·M[(a, b)][oc][t], rows `s_len` apart (one lane group spare,
    // read but never stored by the last group).
    let s_len = nt + LANES;
    let s = &mut scratch[..24 * s_len];
    for oc in 0..o {
        // Aᵀ down the columns, over the whole block.
        for b in 0..6 {
            let at = |a: usize| &m[(a * 6 + b) * stride + oc * nt..][..nt];
            let ms = [at(0), at(1), at(2), at(3), at(4), at(5)];
            let whole = nt - nt % LANES;
            for t in (0..whole).step_by(LANES) {
                let d = [
                    lanes::<T, LANES>(ms[0], t),
                    lanes(ms[1], t),
                    lanes(ms[2], t),
                    lanes(ms[3], t),
                    lanes(ms[4], t),
                    lanes(ms[5], t),
                ];
                let out = at6(&d, T::zero());
                for (u, lanes) in out.iter().enumerate() {
                    s[(u * 6 + b) * s_len + t..][..LANES].copy_from_slice(lanes);
                }
            }
            for t in whole..nt {
                let out = at6(&ms.map(|m| [m[t]]), T::zero());
                for (u, value) in out.iter().enumerate() {
                    s[(u * 6 + b) * s_len + t] = value[0];
                }
            }
        }
        // Aᵀ along each output row, the four column phases interleaved into the image: a
        // lane group is 8 tiles of one row, or 4 tiles of two.
        let bias = bias.map_or(T::zero(), |b| b[oc]);
        let plane = &mut y[oc * g.oh * g.ow..][..g.oh * g.ow];
        for u in 0..4 {
            for t in (0..nt).step_by(LANES) {
                let at = |b: usize| lanes::<T, LANES>(s, (u * 6 + b) * s_len + t);
                let px = at6(&[at(0), at(1), at(2), at(3), at(4), at(5)], bias);
                let (ti, j0) = (t / cols, t % cols);
                let r = 4 * (block.0 + ti) + u;
                #[cfg(target_arch = "x86_64")]
                // SAFETY: with `AVX2`, the caller has checked that the CPU has AVX2.
                if AVX2 && unsafe { f4_x86::interleave(&px, cols, (r, ti, rows), j0, g, plane) } {
                    continue;
                }
                if cols == LANES / 2 {
                    for half in 0..2 {
                        let r = r + 4 * half;
                        if r < g.oh && ti + half < rows {
                            let row = &mut plane[r * g.ow..][..g.ow];
                            interleave::<T, { LANES / 2 }>(&px, half * LANES / 2, row, 0);
                        }
                    }
                } else if r < g.oh {
                    let row = &mut plane[r * g.ow..][..g.ow];
                    interleave::<T, LANES>(&px, 0, row, 4 * j0);
                }
            }
        }
        if let Some(epilogue) = epilogue {
            // The block's output rows of this channel, still in cache.
            let rows = 4 * block.0..(4 * block.1).min(g.oh);
            let at = rows.start * g.ow..rows.end * g.ow;
            epilogue.apply(&mut plane[at.clone()], oc * g.oh * g.ow + at.start);
        }
    }
}

/// The forward pass by F(4×4, 3×3), with the weights transformed (in f64, rounded once)
/// and packed for the micro-kernel once per call, one `o × c` matrix per position.
pub struct Winograd4Forward<T> {
    geometry: Geometry,
    outputs: usize,
    u: Vec<PackedRows<T>>,
}

impl<T: Element> Winograd4Forward<T> {
    /// Prepares the `o × c × 3 × 3` weights `w` of a layer of geometry `g`.
    ///
    /// # Panics
    /// If Winograd does not support `g` ([`supports`]), or its rows of tiles do not fill
    /// the transforms' lanes (a multiple of 8 tiles, or 4): [`prefers`] says both.
    pub fn new(g: &Geometry, o: usize, w: &[T]) -> Self {
        let cols = g.ow.div_ceil(4);
        assert!(
            supports(g) && (cols.is_multiple_of(LANES) || cols == LANES / 2),
            "F(4×4) needs a 3×3 stride-1 layer with 4 or a multiple of 8 tiles a row, not {g:?}"
        );
        let c = g.c;
        let u = transform_weights_f4(w, o, c);
        Winograd4Forward {
            geometry: *g,
            outputs: o,
            u: u.chunks_exact(o * c)
                .map(|u| PackedRows::new(u, (o, c), (c, 1)))
                .collect(),
        }
    }

    /// The workspace's parts: the transformed input's and the products' position strides.
    fn strides(&self) -> (usize, usize) {
        let cap = Tiles::of(&self.geometry).capacity();
        (
            position_stride(self.geometry.c * cap),
            position_stride(self.outputs * cap),
        )
    }

    /// One image (with `AVX2`, the caller has checked that the CPU has AVX2).
    #[inline(always)]
    fn image_body<const AVX2: bool>(
        &self,
        x: &[T],
        bias: Option<&[T]>,
        epilogue: Option<Epilogue<'_, T>>,
        y: &mut [T],
        ws: &mut [T],
    ) {
        let (g, o) = (&self.geometry, self.outputs);
        let tiles = Tiles::of(g);
        let (v_stride, m_stride) = self.strides();
        let (v, rest) = ws.split_at_mut(POSITIONS * v_stride);
        let (m, rest) = rest.split_at_mut(POSITIONS * m_stride);
        let (tail, scratch) = rest.split_at_mut(g.c * NR);
        for block in tiles.blocks() {
            let nt = (block.1 - block.0) * tiles.cols;
            transform_input::<T, AVX2>(x, g, &tiles, block, v, v_stride, scratch);
            for (xi, u) in self.u.iter().enumerate() {
                // M[ξ] (o × nt) = U[ξ] (o × c) · V[ξ] (c × nt)
                let (v, m) = (&v[xi * v_stride..], &mut m[xi * m_stride..]);
                multiply_tiles(u, v, nt, m, tail);
            }
            transform_output::<T, AVX2>(
                m, m_stride, o, g, &tiles, block, bias, epilogue, y, scratch,
            );
        }
    }

    /// [`Winograd4Forward::image_body`] compiled for AVX2: the lane groups are vectors.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn image_avx2(
        &self,
        x: &[T],
        bias: Option<&[T]>,
        epilogue: Option<Epilogue<'_, T>>,
        y: &mut [T],
        ws: &mut [T],
    ) {
        self.image_body::<true>(x, bias, epilogue, y, ws)
    }

    /// The images of `x` into `y`, with `epilogue` (its residual the batch's) if any.
    fn images(
        &self,
        x: &[T],
        bias: Option<&[T]>,
        epilogue: Option<Epilogue<'_, T>>,
        y: &mut [T],
        workspace: &mut [T],
    ) {
        let (g, o) = (&self.geometry, self.outputs);
        let len = o * g.p();
        for (i, (x_i, y_i)) in x
            .chunks_exact(g.chw())
            .zip(y.chunks_exact_mut(len))
            .enumerate()
        {
            // The residual's values of image i.
            let epilogue = epilogue.map(|e| e.part(i * len, len));
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                unsafe { self.image_avx2(x_i, bias, epilogue, y_i, workspace) };
                continue;
            }
            self.image_body::<false>(x_i, bias, epilogue, y_i, workspace);
        }
    }
}

impl<T: Element> ConvForward<T> for Winograd4Forward<T> {
    /// Every tile's output transform writes its pixels (bias included), and the tiles
    /// cover the map: the output is not zeroed first (the tests start from NaN).
    fn writes_every_output(&self) -> bool {
        true
    }

    fn workspace(&self) -> usize {
        let (v_stride, m_stride) = self.strides();
        let tiles = Tiles::of(&self.geometry);
        POSITIONS * (v_stride + m_stride) + self.geometry.c * NR + tiles.scratch()
    }

    fn forward(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], workspace: &mut [T]) {
        self.images(x, bias, None, y, workspace);
    }

    /// Always fused: in the AVX2 transforms' stores, else on each block's rows as the
    /// output transform leaves them (in cache).
    fn forward_fused(
        &self,
        x: &[T],
        bias: Option<&[T]>,
        epilogue: Epilogue<'_, T>,
        y: &mut [T],
        workspace: &mut [T],
    ) -> bool {
        self.images(x, bias, Some(epilogue), y, workspace);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_values as values;
    use super::*;
    use crate::kernels::conv::winograd::reference::{sandwich, AT4, BT4, G4};
    use crate::kernels::conv::{direct, winograd};

    /// The written-out transforms are the matrices: `bt6` is `Bᵀ·d`, `at6` is `Aᵀ·m`.
    /// The vectorised weight transform is bitwise the reference's, kernel by kernel (15
    /// kernels: one whole group of 8 and a partial one).
    #[test]
    fn weight_transform_is_the_reference_sandwich() {
        let (o, c) = (3, 5);
        let w: Vec<f64> = values(o * c * 9, 7);
        let u = transform_weights_f4(&w, o, c);
        for (k, g) in w.chunks_exact(9).enumerate() {
            let g: [[f64; 3]; 3] = std::array::from_fn(|i| std::array::from_fn(|j| g[3 * i + j]));
            let want = sandwich(&G4, &g, &G4);
            for (xi, v) in want.iter().flatten().enumerate() {
                assert_eq!(
                    u[xi * o * c + k].to_bits(),
                    v.to_bits(),
                    "kernel {k}, position {xi}"
                );
            }
        }
    }

    #[test]
    fn lane_transforms_are_the_matrices() {
        let d = values(6, 1);
        let cols: [[f64; 1]; 6] = std::array::from_fn(|s| [d[s]]);
        let out = bt6(&cols);
        for a in 0..6 {
            let want: f64 = (0..6).map(|s| BT4[a][s] * d[s]).sum();
            assert!((out[a][0] - want).abs() < 1e-12, "Bᵀ row {a}");
        }
        let back = at6(&cols, 0.5);
        for u in 0..4 {
            let want: f64 = (0..6).map(|a| AT4[u][a] * d[a]).sum::<f64>() + 0.5;
            assert!((back[u][0] - want).abs() < 1e-12, "Aᵀ row {u}");
        }
    }

    /// `T` outputs of the fast path and of the direct convolution (in f64) for a batch.
    fn run<T: Element>(
        shape: (usize, usize, usize, usize, usize),
        batch: usize,
    ) -> (Vec<T>, Vec<f64>) {
        let (c, o, h, w, p) = shape;
        let g = Geometry::new(c, (h, w), (3, 3), (1, 1), (p, p), (1, 1)).unwrap();
        let x = values(batch * g.chw(), 1);
        let k = values(o * c * 9, 2);
        let b = values(o, 3);
        let cast = |v: &[f64]| v.iter().map(|&x| T::from_f64(x)).collect::<Vec<T>>();
        let fast = Winograd4Forward::new(&g, o, &cast(&k));
        assert!(fast.writes_every_output());
        let mut y = vec![T::nan(); batch * o * g.p()];
        let mut ws = vec![T::nan(); fast.workspace()];
        fast.forward(&cast(&x), Some(&cast(&b)), &mut y, &mut ws);
        let mut want = vec![0.0; batch * o * g.p()];
        for (x_i, y_i) in x
            .chunks_exact(g.chw())
            .zip(want.chunks_exact_mut(o * g.p()))
        {
            direct::forward(x_i, &k, Some(&b), &g, o, y_i);
        }
        (y, want)
    }

    /// In f64 the fast path is the convolution to rounding: padding 0–2, output sides not
    /// divisible by 4, rows of 4 tiles (two to a lane group, an odd number of them), 8 and
    /// 16, several blocks of tile rows, a batch of two; and the per-tile reference agrees.
    #[test]
    fn f4_matches_the_direct_convolution_and_the_reference() {
        for shape in [
            (3, 5, 16, 16, 1),
            (2, 17, 15, 13, 2),
            (4, 3, 34, 34, 0),
            (1, 2, 70, 62, 1),
            (2, 3, 31, 29, 2),
            (16, 16, 8, 16, 1),
            (5, 4, 16, 16, 0),
        ] {
            let (y, want) = run::<f64>(shape, 2);
            for (a, b) in y.iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-11 * (1.0 + b.abs()),
                    "{a} vs {b} for {shape:?}"
                );
            }
            let (c, o, h, w, p) = shape;
            let g = Geometry::new(c, (h, w), (3, 3), (1, 1), (p, p), (1, 1)).unwrap();
            let mut tiled = vec![f64::NAN; o * g.p()];
            let (x, k, b) = (values(2 * g.chw(), 1), values(o * c * 9, 2), values(o, 3));
            winograd::reference::forward_image_f4(&x, &k, Some(&b), &g, o, &mut tiled);
            for (a, b) in y.iter().zip(&tiled) {
                assert!(
                    (a - b).abs() < 1e-11 * (1.0 + b.abs()),
                    "{a} vs {b} for {shape:?}"
                );
            }
        }
    }

    /// The fast path on a CPU without AVX2 (the portable body) equals the dispatched one
    /// bitwise (on AVX2 CPUs, `f4_x86`'s shuffles, and `f4_same_x86`'s transforms for maps
    /// 32 and 16 wide): two rows of 4 tiles (16 wide, and 14 with its last tile cut), one
    /// row of 8 (32 wide, and 30) and of 16 (64 wide).
    #[test]
    fn portable_body_equals_the_dispatched_path() {
        // 32 and 16 wide: `f4_same_x86`'s, with blocks of whole images, blocks after the
        // first (40 and 70 rows), an odd count of tile rows (20) and rows cut (13, 70).
        for (c, h, w) in [
            (8, 16, 16),
            (3, 14, 14),
            (5, 32, 32),
            (4, 30, 30),
            (2, 9, 64),
            (3, 40, 32),
            (2, 13, 32),
            (3, 20, 16),
            (2, 70, 16),
        ] {
            let g = Geometry::new(c, (h, w), (3, 3), (1, 1), (1, 1), (1, 1)).unwrap();
            let (o, k) = (16, values(16 * c * 9, 4));
            let x: Vec<f32> = values(g.chw(), 5).iter().map(|&v| v as f32).collect();
            let k: Vec<f32> = k.iter().map(|&v| v as f32).collect();
            let bias: Vec<f32> = values(o, 6).iter().map(|&v| v as f32).collect();
            let fast = Winograd4Forward::new(&g, o, &k);
            let mut ws = vec![f32::NAN; fast.workspace()];
            let (mut a, mut b) = (vec![f32::NAN; o * g.p()], vec![f32::NAN; o * g.p()]);
            fast.forward(&x, Some(&bias), &mut a, &mut ws);
            fast.image_body::<false>(&x, Some(&bias), None, &mut b, &mut ws);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b), "{c} channels, {h}×{w}");
        }
    }

    /// The fused epilogues (ReLU, ReLU6, residual add, both) are bitwise `forward` followed by
    /// [`Epilogue::apply`], in the dispatched path (on AVX2, `f4_same_x86`'s stores for 32
    /// and 16 wide) and the portable one, with NaN, −0 and negative values in the residual
    /// and the outputs overwritten from NaN.
    #[test]
    fn fused_epilogues_equal_the_pass_after_the_forward() {
        for (c, h, w) in [
            (5, 32, 32),
            (8, 16, 16),
            (3, 20, 16),
            (2, 13, 32),
            (4, 30, 30),
        ] {
            let g = Geometry::new(c, (h, w), (3, 3), (1, 1), (1, 1), (1, 1)).unwrap();
            let (o, n) = (9, 2);
            let f32s = |v: Vec<f64>| v.iter().map(|&v| v as f32).collect::<Vec<_>>();
            let x = f32s(values(n * g.chw(), 5));
            let k = f32s(values(o * c * 9, 4));
            let bias = f32s(values(o, 6));
            let mut residual = f32s(values(n * o * g.p(), 7));
            for (i, special) in [f32::NAN, -0.0, -1e30].into_iter().enumerate() {
                residual[7 + 100 * i] = special;
            }
            let kernel = Winograd4Forward::new(&g, o, &k);
            let mut ws = vec![f32::NAN; kernel.workspace()];
            let mut plain = vec![f32::NAN; n * o * g.p()];
            kernel.forward(&x, Some(&bias), &mut plain, &mut ws);
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            for epilogue in [
                Epilogue::Relu,
                Epilogue::Relu6,
                Epilogue::Add(&residual),
                Epilogue::AddRelu(&residual),
            ] {
                let mut want = plain.clone();
                epilogue.apply(&mut want, 0);
                let mut fused = vec![f32::NAN; n * o * g.p()];
                assert!(kernel.forward_fused(&x, Some(&bias), epilogue, &mut fused, &mut ws));
                let name = match epilogue {
                    Epilogue::Relu => "relu",
                    Epilogue::Relu6 => "relu6",
                    Epilogue::Add(_) => "add",
                    Epilogue::AddRelu(_) => "add+relu",
                };
                let same = |a: &[f32]| bits(a) == bits(&want);
                assert!(same(&fused), "fused {name}, {c} × {h}×{w}");
                // The portable body, image by image.
                let len = o * g.p();
                let mut portable = vec![f32::NAN; n * len];
                for (i, y) in portable.chunks_exact_mut(len).enumerate() {
                    let e = Some(epilogue.part(i * len, len));
                    let x = &x[i * g.chw()..][..g.chw()];
                    kernel.image_body::<false>(x, Some(&bias), e, y, &mut ws);
                }
                assert!(same(&portable), "portable {name}, {c} × {h}×{w}");
            }
        }
    }

    /// The f32 error against the direct sums (in f64) on resnet-sized layers, as a share
    /// of the largest output: measured for F(4×4) at 32 → 32 channels 16×16 about 5× that
    /// of F(2×2) (see the assertion message for the figures); bounded at 1e-5.
    #[test]
    fn f32_error_against_the_direct_sums() {
        for (c, hw) in [(16, 32), (32, 16), (64, 16)] {
            let shape = (c, c, hw, hw, 1);
            let (y, want) = run::<f32>(shape, 1);
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let worst = |y: &[f32]| {
                y.iter()
                    .zip(&want)
                    .map(|(a, b)| (*a as f64 - b).abs())
                    .fold(0.0, f64::max)
                    / scale
            };
            let g = Geometry::new(c, (hw, hw), (3, 3), (1, 1), (1, 1), (1, 1)).unwrap();
            let single = |v: Vec<f64>| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
            let f2 = winograd::WinogradForward::new(&g, c, &single(values(c * c * 9, 2)));
            let mut y2 = vec![0.0f32; c * g.p()];
            let mut ws = vec![0.0f32; f2.workspace()];
            let (x, b) = (single(values(g.chw(), 1)), single(values(c, 3)));
            f2.forward(&x, Some(&b), &mut y2, &mut ws);
            let (e4, e2) = (worst(&y), worst(&y2));
            assert!(
                e4 <= 1e-5 && e2 <= 1e-6,
                "{c} channels {hw}×{hw}: F(4×4) {e4:.2e}, F(2×2) {e2:.2e} of the largest output"
            );
            eprintln!("{c} channels {hw}×{hw}: F(4×4) {e4:.2e}, F(2×2) {e2:.2e}");
        }
    }
}
