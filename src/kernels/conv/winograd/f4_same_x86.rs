//! F(4×4)'s input and output transforms in AVX2 registers, for f32 "same" layers
//! (padding 1) on maps 32 wide (a row of tiles is one lane group of 8) or 16 wide (two
//! rows of 4 tiles to a group): resnet's and cifar-cnn's 3×3 layers. They are the fast
//! paths of `f4`'s `transform_input` and `transform_output`, which are the reference they
//! are tested against, bitwise (the same sums in the same order, lane by lane).
//!
//! `f4`'s transforms copy each channel into zero-padded rows, pass along the rows into
//! scratch rows, then down the columns, and back out through another scratch; on AMD Zen 3
//! (1 thread) those passes were 64% of a 16→16 layer's time on 32×32 maps, against 31% for
//! its products. Here a lane group's rows come straight from the image: the column phases
//! are an 8 × 4 transpose of the row's registers, and the padding columns are phases
//! shifted by one lane with a zero blended in. The row-transformed rows of a tile row stay
//! in a ring of registers (spilled to the stack at worst), so that the two rows a tile row
//! shares with the next are transformed once; the output's column sums of a tile row are
//! kept the same way, and its rows go straight into the image.

use super::f4_x86::{interleave8_of, phases8_of};
use crate::kernels::conv::Epilogue;
use crate::kernels::element::{as_f32, as_f32_mut};
use crate::kernels::transpose::transpose_in_lanes;
use crate::kernels::{Element, Geometry};
use std::arch::x86_64::*;

/// Whether [`transform_input`] and [`transform_output`] take a layer of `f4`: padding 1 on
/// a map 32 or 16 wide (the output as wide as the input, for F(4×4)'s 3×3 stride-1).
pub(super) fn takes(g: &Geometry) -> bool {
    g.padding == (1, 1) && (g.w == 32 || g.w == 16) && g.ow == g.w
}

/// `f4::transform_input` for f32 on the layers [`takes`] accepts: `V[ξ][ci][t] = (Bᵀ d B)[ξ]`
/// for the tiles of tile rows `block` of one image `x`, position ξ's `c × nt` matrix at
/// `ξ·stride` in `v`. Returns whether it did (not for another `T` or layer).
///
/// # Safety
/// The CPU must support AVX2.
///
/// # Panics
/// If `x` holds less than an image or `v` less than 36 positions.
#[inline(always)]
pub(super) unsafe fn transform_input<T: Element>(
    x: &[T],
    g: &Geometry,
    block: (usize, usize),
    v: &mut [T],
    stride: usize,
) -> bool {
    if !takes(g) {
        return false;
    }
    let (Some(x), Some(v)) = (as_f32(x), as_f32_mut(v)) else {
        return false;
    };
    let nt = (block.1 - block.0) * g.w / 4;
    assert!(x.len() >= g.chw() && v.len() >= 35 * stride + g.c * nt && stride >= g.c * nt);
    for ci in 0..g.c {
        let plane = &x[ci * g.h * g.w..][..g.h * g.w];
        // SAFETY: the caller guarantees AVX2; the planes and `v` are as long as the
        // functions need (asserted above).
        unsafe {
            if g.w == 32 {
                input_rows8(plane, g.h, block, v, stride, ci * nt);
            } else {
                input_rows4x2(plane, g.h, block, v, stride, ci * nt);
            }
        }
    }
    true
}

/// `f4::transform_output` for f32 on the layers [`takes`] accepts: `Y = Aᵀ M A + bias` for
/// the tiles of `block`, written into one image's output `y` (`o × oh × ow`) with the
/// `epilogue` applied in the stores; position ξ's `o × nt` products at `ξ·stride` in `m`.
/// Returns whether it did.
///
/// # Safety
/// The CPU must support AVX2.
///
/// # Panics
/// If `y` holds less than an image's output or `m` less than 36 positions.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn transform_output<T: Element>(
    m: &[T],
    stride: usize,
    o: usize,
    g: &Geometry,
    block: (usize, usize),
    bias: Option<&[T]>,
    epilogue: Option<Epilogue<'_, T>>,
    y: &mut [T],
) -> bool {
    if !takes(g) {
        return false;
    }
    let (Some(m), Some(y)) = (as_f32(m), as_f32_mut(y)) else {
        return false;
    };
    let bias = bias.map(|b| as_f32(b).expect("f32 like the products"));
    let (relu, residual) = match epilogue {
        None => (false, None),
        Some(Epilogue::Relu) => (true, None),
        Some(Epilogue::Add(r)) => (false, Some(r)),
        Some(Epilogue::AddRelu(r)) => (true, Some(r)),
        // Not in these stores: the caller's plain pass applies it.
        Some(Epilogue::Relu6) => return false,
    };
    let residual = residual.map(|r| as_f32(r).expect("f32 like the output"));
    assert!(
        residual.is_none_or(|r| r.len() >= o * g.p()),
        "a residual per output"
    );
    let nt = (block.1 - block.0) * g.ow / 4;
    assert!(m.len() >= 35 * stride + o * nt && stride >= o * nt && y.len() >= o * g.p());
    for oc in 0..o {
        let plane = &mut y[oc * g.p()..][..g.p()];
        let out = Out {
            bias: bias.map_or(0.0, |b| b[oc]),
            relu,
            residual: residual.map(|r| &r[oc * g.p()..][..g.p()]),
        };
        // SAFETY: the caller guarantees AVX2; `m`, the plane and its residual are as long
        // as the functions need (asserted above).
        unsafe {
            if g.ow == 32 {
                output_rows8(m, stride, oc * nt, g.oh, block, &out, plane);
            } else {
                output_rows4x2(m, stride, oc * nt, g.oh, block, &out, plane);
            }
        }
    }
    true
}

/// What the output transform adds and applies to one output channel's pixels.
struct Out<'a> {
    bias: f32,
    /// `max(v, 0)` after the residual: `Epilogue::Relu`'s rule, NaN and −0 to +0.
    relu: bool,
    /// The channel's residual plane, added after the bias.
    residual: Option<&'a [f32]>,
}

impl Out<'_> {
    /// `value` (pixels `at..at + 8` of the plane) as stored: plus the residual's, rectified.
    ///
    /// # Safety
    /// The CPU must support AVX2, and a residual hold pixels `at..at + 8`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn finish(&self, value: __m256, at: usize) -> __m256 {
        let mut v = value;
        if let Some(r) = self.residual {
            // SAFETY: the residual holds pixels at..at + 8 (caller's contract).
            v = _mm256_add_ps(v, unsafe { _mm256_loadu_ps(r.as_ptr().add(at)) });
        }
        if self.relu {
            // `maxps` returns its second operand when either is NaN, and for ±0.
            v = _mm256_max_ps(v, _mm256_setzero_ps());
        }
        v
    }

    /// [`Out::finish`] for 4 pixels.
    ///
    /// # Safety
    /// The CPU must support AVX2, and a residual hold pixels `at..at + 4`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn finish4(&self, value: __m128, at: usize) -> __m128 {
        let mut v = value;
        if let Some(r) = self.residual {
            // SAFETY: the residual holds pixels at..at + 4 (caller's contract).
            v = _mm_add_ps(v, unsafe { _mm_loadu_ps(r.as_ptr().add(at)) });
        }
        if self.relu {
            v = _mm_max_ps(v, _mm_setzero_ps());
        }
        v
    }
}

/// `Bᵀ d` lane-wise: `f4::bt6`'s sums, in its order.
#[target_feature(enable = "avx2")]
#[inline]
fn bt6(d: [__m256; 6]) -> [__m256; 6] {
    let [x0, x1, x2, x3, x4, x5] = d;
    let (two, four, five) = (
        _mm256_set1_ps(2.0),
        _mm256_set1_ps(4.0),
        _mm256_set1_ps(5.0),
    );
    let (add, sub, mul) = (_mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps);
    [
        add(sub(mul(four, x0), mul(five, x2)), x4),
        sub(add(x3, x4), mul(four, add(x1, x2))),
        sub(add(mul(four, sub(x1, x2)), x4), x3),
        sub(add(mul(two, sub(x3, x1)), x4), x2),
        sub(add(mul(two, sub(x1, x3)), x4), x2),
        add(sub(mul(four, x1), mul(five, x3)), x5),
    ]
}

/// `Aᵀ m + bias` lane-wise: `f4::at6`'s sums, in its order.
#[target_feature(enable = "avx2")]
#[inline]
fn at6(m: [__m256; 6], bias: __m256) -> [__m256; 4] {
    let (two, four, eight) = (
        _mm256_set1_ps(2.0),
        _mm256_set1_ps(4.0),
        _mm256_set1_ps(8.0),
    );
    let (add, sub, mul) = (_mm256_add_ps, _mm256_sub_ps, _mm256_mul_ps);
    let (p12, n12) = (add(m[1], m[2]), sub(m[1], m[2]));
    let (p34, n34) = (add(m[3], m[4]), sub(m[3], m[4]));
    [
        add(add(add(m[0], p12), p34), bias),
        add(add(n12, mul(two, n34)), bias),
        add(add(p12, mul(four, p34)), bias),
        add(add(add(n12, mul(eight, n34)), m[5]), bias),
    ]
}

/// `Bᵀ` along image row `r` of a plane 32 wide (`h` rows; rows outside are the padding's
/// zeros) for its 8 tiles: six registers, tile j in lane j.
///
/// # Safety
/// The CPU must support AVX2; `plane` must hold `32·h` floats.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn row_transform8(plane: &[f32], h: usize, r: isize) -> [__m256; 6] {
    let zero = _mm256_setzero_ps();
    if r < 0 || r >= h as isize {
        return [zero; 6];
    }
    let mut q = [zero; 4];
    for (i, q) in q.iter_mut().enumerate() {
        // SAFETY: row r < h of 32 floats is within the plane: this loads 8 from 8i.
        *q = unsafe { _mm256_loadu_ps(plane.as_ptr().add(32 * r as usize + 8 * i)) };
    }
    let p = phases8_of(q);
    // The patches' columns: `p[k]` lane j is column `4j + k`, the patch's column k + 1;
    // its column 0 is p[3] one tile to the left, column 5 p[0] one to the right, with the
    // padding's zero at the row's ends.
    let right = _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6);
    let left = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7);
    bt6([
        _mm256_blend_ps::<0x01>(_mm256_permutevar8x32_ps(p[3], right), zero),
        p[0],
        p[1],
        p[2],
        p[3],
        _mm256_blend_ps::<0x80>(_mm256_permutevar8x32_ps(p[0], left), zero),
    ])
}

/// `Bᵀ` along image rows `r` (lanes 0–3) and `r + 4` (lanes 4–7, zeros unless `both`) of
/// a plane 16 wide (`h` rows; rows outside are zeros) for their 4 tiles each.
///
/// # Safety
/// The CPU must support AVX2; `plane` must hold `16·h` floats.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn row_transform4x2(plane: &[f32], h: usize, r: isize, both: bool) -> [__m256; 6] {
    let zero = _mm256_setzero_ps();
    let inside = |r: isize| r >= 0 && r < h as isize;
    let (low, high) = (inside(r), both && inside(r + 4));
    if !low && !high {
        return [zero; 6];
    }
    // Register m: tile m (4 floats from 4m) of row r in its low half, of row r + 4 in its
    // high one, zeros for a row outside.
    let mut tiles = [zero; 4];
    for (m, tile) in tiles.iter_mut().enumerate() {
        let (mut lo, mut hi) = (_mm_setzero_ps(), _mm_setzero_ps());
        // SAFETY: rows r and r + 4 are loaded only if < h, and hold 16 floats each in the
        // plane; each load reads 4 from 4m.
        unsafe {
            if low {
                lo = _mm_loadu_ps(plane.as_ptr().add(16 * r as usize + 4 * m));
            }
            if high {
                hi = _mm_loadu_ps(plane.as_ptr().add(16 * (r + 4) as usize + 4 * m));
            }
        }
        *tile = _mm256_set_m128(hi, lo);
    }
    let p = transpose_in_lanes(tiles);
    // As `row_transform8`'s, within each half.
    bt6([
        _mm256_blend_ps::<0x11>(_mm256_permute_ps::<0x90>(p[3]), zero),
        p[0],
        p[1],
        p[2],
        p[3],
        _mm256_blend_ps::<0x88>(_mm256_permute_ps::<0xF9>(p[0]), zero),
    ])
}

/// `Bᵀ` down the six row-transformed rows `rows` of a lane group, stored as `V[(a, b)]` at
/// `at` (`v[(6a + b)·stride + at..]`); only the low 4 lanes unless `whole`.
///
/// # Safety
/// The CPU must support AVX2; `v` must hold `35·stride + at + 8` floats (`+ 4` if not `whole`).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn column_transform(
    rows: [&[__m256; 6]; 6],
    v: &mut [f32],
    stride: usize,
    at: usize,
    whole: bool,
) {
    for b in 0..6 {
        let mut column = [_mm256_setzero_ps(); 6];
        for (value, row) in column.iter_mut().zip(rows) {
            *value = row[b];
        }
        let out = bt6(column);
        for (a, value) in out.into_iter().enumerate() {
            // SAFETY: position 6a + b < 36 of `v` holds the lanes at `at` (caller's contract).
            unsafe {
                let to = v.as_mut_ptr().add((6 * a + b) * stride + at);
                if whole {
                    _mm256_storeu_ps(to, value);
                } else {
                    _mm_storeu_ps(to, _mm256_castps256_ps128(value));
                }
            }
        }
    }
}

/// The input transform of one channel `plane` (`h × 32`) for tile rows `block`, at `at` of
/// each position of `v`. Image rows are row-transformed once into a ring of 8: tile row
/// `ti` reads rows `4ti − 1 ..= 4ti + 4`, four of them new.
///
/// # Safety
/// The CPU must support AVX2; `plane` must hold `32·h` floats and `v` `35·stride + at + nt`.
#[target_feature(enable = "avx2")]
unsafe fn input_rows8(
    plane: &[f32],
    h: usize,
    block: (usize, usize),
    v: &mut [f32],
    stride: usize,
    at: usize,
) {
    let mut ring = [[_mm256_setzero_ps(); 6]; 8];
    let first = 4 * block.0 as isize - 1;
    let mut next = first;
    for ti in block.0..block.1 {
        let top = 4 * ti as isize - 1;
        while next <= top + 5 {
            // SAFETY: AVX2 and the plane's length are the caller's contract.
            ring[((next - first) & 7) as usize] = unsafe { row_transform8(plane, h, next) };
            next += 1;
        }
        let base = (top - first) as usize;
        let rows = [0, 1, 2, 3, 4, 5].map(|s| &ring[(base + s) & 7]);
        let t0 = (ti - block.0) * 8;
        // SAFETY: tile row ti's 8 lanes end within `nt` of `at`.
        unsafe { column_transform(rows, v, stride, at + t0, true) };
    }
}

/// The input transform of one channel `plane` (`h × 16`) for tile rows `block`, two tile
/// rows to a lane group (lanes 0–3 the first, 4–7 the second).
///
/// # Safety
/// The CPU must support AVX2; `plane` must hold `16·h` floats and `v` `35·stride + at + nt`.
#[target_feature(enable = "avx2")]
unsafe fn input_rows4x2(
    plane: &[f32],
    h: usize,
    block: (usize, usize),
    v: &mut [f32],
    stride: usize,
    at: usize,
) {
    for ti in (block.0..block.1).step_by(2) {
        let both = ti + 1 < block.1;
        let top = 4 * ti as isize - 1;
        // Written out: a zeroed array filled in a loop was a `memset` call per group (1.2%
        // of a resnet20 inference).
        // SAFETY: AVX2 and the plane's length are the caller's contract.
        let rows = unsafe {
            [
                row_transform4x2(plane, h, top, both),
                row_transform4x2(plane, h, top + 1, both),
                row_transform4x2(plane, h, top + 2, both),
                row_transform4x2(plane, h, top + 3, both),
                row_transform4x2(plane, h, top + 4, both),
                row_transform4x2(plane, h, top + 5, both),
            ]
        };
        let t0 = (ti - block.0) * 4;
        // SAFETY: the group's lanes (4 of them unless `both`) end within `nt` of `at`.
        unsafe { column_transform(rows.each_ref(), v, stride, at + t0, both) };
    }
}

/// `Aᵀ` down the columns of a lane group's products at `at` (`m[(6a + b)·stride + at..]`):
/// `s[b][u]`, column b's four sums (lanes past the low 4 zero unless `whole`).
///
/// # Safety
/// The CPU must support AVX2; `m` must hold `35·stride + at + 8` floats (`+ 4` if not `whole`).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn column_sums(m: &[f32], stride: usize, at: usize, whole: bool) -> [[__m256; 4]; 6] {
    let zero = _mm256_setzero_ps();
    let mut s = [[zero; 4]; 6];
    for (b, sums) in s.iter_mut().enumerate() {
        let mut d = [zero; 6];
        for (a, d) in d.iter_mut().enumerate() {
            // SAFETY: position 6a + b < 36 of `m` holds the lanes at `at` (caller's contract).
            *d = unsafe {
                let from = m.as_ptr().add((6 * a + b) * stride + at);
                if whole {
                    _mm256_loadu_ps(from)
                } else {
                    _mm256_set_m128(_mm_setzero_ps(), _mm_loadu_ps(from))
                }
            };
        }
        // `f4`'s column pass adds a zero bias: kept, so the sums are bitwise the same.
        *sums = at6(d, zero);
    }
    s
}

/// Row u of the column sums `s` (`s[b][u]` for b < 6).
#[target_feature(enable = "avx2")]
#[inline]
fn sums_row(s: &[[__m256; 4]; 6], u: usize) -> [__m256; 6] {
    let mut row = [_mm256_setzero_ps(); 6];
    for (value, column) in row.iter_mut().zip(s) {
        *value = column[u];
    }
    row
}

/// The output transform of output channel `plane` (`oh × 32`) for tile rows `block`, the
/// products at `at` of each position of `m`.
///
/// # Safety
/// The CPU must support AVX2; `m` must hold `35·stride + at + nt` floats, `plane` (and a
/// residual) `32·oh`.
#[target_feature(enable = "avx2")]
unsafe fn output_rows8(
    m: &[f32],
    stride: usize,
    at: usize,
    oh: usize,
    block: (usize, usize),
    out: &Out<'_>,
    plane: &mut [f32],
) {
    let bias = _mm256_set1_ps(out.bias);
    for ti in block.0..block.1 {
        // SAFETY: tile row ti's 8 lanes end within `nt` of `at`.
        let s = unsafe { column_sums(m, stride, at + (ti - block.0) * 8, true) };
        for u in 0..4 {
            let r = 4 * ti + u;
            if r >= oh {
                break;
            }
            // The column phases of output row r, back in order.
            let pixels = interleave8_of(at6(sums_row(&s, u), bias));
            for (i, value) in pixels.into_iter().enumerate() {
                let at = 32 * r + 8 * i;
                // SAFETY: row r < oh of 32 floats is within the plane (and its residual);
                // this stores 8 from 8i.
                unsafe { _mm256_storeu_ps(plane.as_mut_ptr().add(at), out.finish(value, at)) };
            }
        }
    }
}

/// The output transform of output channel `plane` (`oh × 16`) for tile rows `block`, two
/// tile rows to a lane group.
///
/// # Safety
/// The CPU must support AVX2; `m` must hold `35·stride + at + nt` floats, `plane` (and a
/// residual) `16·oh`.
#[target_feature(enable = "avx2")]
unsafe fn output_rows4x2(
    m: &[f32],
    stride: usize,
    at: usize,
    oh: usize,
    block: (usize, usize),
    out: &Out<'_>,
    plane: &mut [f32],
) {
    let bias = _mm256_set1_ps(out.bias);
    for ti in (block.0..block.1).step_by(2) {
        let both = ti + 1 < block.1;
        // SAFETY: the group's lanes (4 of them unless `both`) end within `nt` of `at`.
        let s = unsafe { column_sums(m, stride, at + (ti - block.0) * 4, both) };
        for u in 0..4 {
            let (r, r2) = (4 * ti + u, 4 * (ti + 1) + u);
            // Register k: tile k of row r in its low half, of row r2 in its high half.
            let pixels = transpose_in_lanes(at6(sums_row(&s, u), bias));
            for (k, value) in pixels.into_iter().enumerate() {
                // SAFETY: rows r, r2 < oh of 16 floats are within the plane; each store
                // writes 4 from 4k.
                unsafe {
                    if r < oh {
                        let at = 16 * r + 4 * k;
                        let v = out.finish4(_mm256_castps256_ps128(value), at);
                        _mm_storeu_ps(plane.as_mut_ptr().add(at), v);
                    }
                    if both && r2 < oh {
                        let at = 16 * r2 + 4 * k;
                        let v = out.finish4(_mm256_extractf128_ps::<1>(value), at);
                        _mm_storeu_ps(plane.as_mut_ptr().add(at), v);
                    }
                }
            }
        }
    }
}
