//! The AVX2 twin of `depthwise_flat.rs`'s AVX-512 sums, for CPUs without AVX-512: the
//! same reads, 8 lanes to a vector. AVX2 has no mask registers, so each (vector, tap)
//! mask is a vector of 8 lanes (0 or −1, prepared once by `FlatDepthwise::new`), which
//! `vmaskmovps` takes: masked-off lanes are neither read nor written, so a tap reaching
//! before or past the image reads nothing there. 3×3 layers of padding 1 at stride 1
//! or 2 whose output rows are a multiple of 8 wide (mobilenet-v2's 16×16 and 8×8
//! planes) take a rows kernel instead ([`rows_3x3`]), which shares each input row's
//! loads between the output rows it feeds. Tested with the AVX-512 path against the
//! definition in `depthwise.rs`.

use super::super::phases::even_odd_avx2;
use super::{FlatDepthwise, Reads, UNROLL};
use crate::kernels::Geometry;
use std::arch::x86_64::*;

/// f32 lanes per AVX2 register.
const LANES: usize = 8;

/// The first `n` lanes (at most 8) set.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
unsafe fn first_lanes(n: usize) -> __m256i {
    let n = n.min(LANES) as i32;
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// [`FlatDepthwise::forward`]'s sums (and each phase of its input gradient, `reads`
/// saying which taps and masks): the full vectors [`UNROLL`] at a time, then the rest
/// one at a time, the last one masked to the image.
///
/// # Safety
/// The CPU must support AVX2 and FMA; the operands must be as long as the layer's, the
/// layer made for AVX2 (its lane masks and weights 8 wide), and the masks keep every
/// lane's read inside `x`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn sums(
    flat: &FlatDepthwise,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    reads: Reads<'_>,
) {
    let total = flat.g.c * flat.g.p();
    let full = total / LANES;
    let grouped = full - full % UNROLL;
    // SAFETY: the caller's guarantee; the ranges of vectors lie within the image's.
    unsafe {
        vectors::<UNROLL, false>(flat, x, w, bias, y, (0, grouped), reads);
        vectors::<1, false>(flat, x, w, bias, y, (grouped, full), reads);
        if !total.is_multiple_of(LANES) {
            vectors::<1, true>(flat, x, w, bias, y, (full, full + 1), reads);
        }
    }
}

/// Vectors `first..end` of an image, `U` at a time (`end − first` a multiple of `U`):
/// per vector its bias, then per tap its masked input times its weight, the `U` sums
/// independent chains. With `PARTIAL` the vectors' lanes past the image are masked off.
///
/// # Safety
/// As [`sums`]; without `PARTIAL`, every vector of the range lies whole in the image.
#[target_feature(enable = "avx2,fma")]
unsafe fn vectors<const U: usize, const PARTIAL: bool>(
    flat: &FlatDepthwise,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    (first, end): (usize, usize),
    reads: Reads<'_>,
) {
    let g = &flat.g;
    let (p, taps) = (g.p(), g.kernel.0 * g.kernel.1);
    let total = g.c * p;
    let broadcast = p >= LANES;
    // Lane l of a vector spanning several channels belongs to its channel l / p.
    let mut lane_channel = [0i32; LANES];
    for (l, c) in lane_channel.iter_mut().enumerate() {
        *c = (l / p) as i32;
    }
    // SAFETY: the array holds 8 i32.
    let lane_channel = unsafe { _mm256_loadu_si256(lane_channel.as_ptr().cast()) };
    // The taps' reach before and past an output: a group of vectors whose every tap
    // reads inside `x` takes plain loads with their lanes and-ed off, as `vmaskmovps`
    // (about 2.5× slower here) would give them.
    let (lo, hi) = reads
        .taps
        .iter()
        .fold((0isize, 0isize), |(lo, hi), &(_, d)| (lo.min(d), hi.max(d)));
    // Vector v's row of masks, v % period, and its first channel, v·8 / p, counted
    // along rather than divided per vector (a division per vector cost as much as the
    // sums of mobilenet-v2's 2×2 planes).
    let (mut row, mut c0) = (first % flat.period, first * LANES / p);
    // With one row of masks (planes of at most 8 pixels), the taps no lane reads are
    // left out: a 1×1 plane's 3×3 layer sums its centre tap alone.
    let mut live = [(0, 0); 49];
    let mut n_live = 0;
    let taps_read = if flat.period == 1 && reads.taps.len() <= live.len() {
        for &(t, d) in reads.taps {
            if reads.lane_masks[t * LANES..][..LANES]
                .iter()
                .any(|&m| m != 0)
            {
                live[n_live] = (t, d);
                n_live += 1;
            }
        }
        &live[..n_live]
    } else {
        reads.taps
    };
    for v0 in (first..end).step_by(U) {
        let inside =
            (v0 * LANES) as isize + lo >= 0 && ((v0 + U) * LANES) as isize + hi <= x.len() as isize;
        let mut acc = [_mm256_setzero_ps(); U];
        let mut tails = [_mm256_set1_epi32(-1); U];
        let mut masks = [reads.lane_masks.as_ptr(); U];
        let mut weights = [w.as_ptr(); U];
        for u in 0..U {
            let v = v0 + u;
            if PARTIAL {
                // SAFETY: AVX2 (this function's contract).
                tails[u] = unsafe { first_lanes(total - v * LANES) };
            }
            // SAFETY: row v % period of the masks has `taps` vectors of 8; channel
            // c0 < c has `taps` weights; vector v has `taps · 8` lane weights.
            unsafe {
                masks[u] = reads.lane_masks.as_ptr().add(row * taps * LANES);
                weights[u] = if broadcast {
                    w.as_ptr().add(c0 * taps)
                } else {
                    flat.lane_weights.as_ptr().add(v * taps * LANES)
                };
            }
            if let Some(b) = bias {
                acc[u] = if broadcast {
                    _mm256_set1_ps(b[c0])
                } else {
                    let n = (g.c - c0).min(LANES / p);
                    // SAFETY: the mask keeps the load within the bias's c elements.
                    let b = unsafe { _mm256_maskload_ps(b.as_ptr().add(c0), first_lanes(n)) };
                    _mm256_permutevar8x32_ps(b, lane_channel)
                };
            }
            if broadcast {
                // A channel's plane is `period` whole vectors.
                row += 1;
                if row == flat.period {
                    (row, c0) = (0, c0 + 1);
                }
            } else {
                c0 += LANES / p;
            }
        }
        for &(t, d) in taps_read {
            for u in 0..U {
                // SAFETY: the masks and weights of tap t < taps (above); the lanes kept
                // are outputs inside the image whose tap lies in their channel's plane,
                // inside `x`, and the others are not read, or (`inside`) read inside `x`
                // and cleared.
                unsafe {
                    let mut lanes = _mm256_loadu_si256(masks[u].add(t * LANES).cast());
                    if PARTIAL {
                        lanes = _mm256_and_si256(lanes, tails[u]);
                    }
                    let wv = if broadcast {
                        _mm256_set1_ps(*weights[u].add(t))
                    } else {
                        _mm256_loadu_ps(weights[u].add(t * LANES))
                    };
                    let at = x.as_ptr().wrapping_offset(((v0 + u) * LANES) as isize + d);
                    let xv = if inside && !PARTIAL {
                        _mm256_and_ps(_mm256_loadu_ps(at), _mm256_castsi256_ps(lanes))
                    } else {
                        _mm256_maskload_ps(at, lanes)
                    };
                    acc[u] = _mm256_fmadd_ps(wv, xv, acc[u]);
                }
            }
        }
        for u in 0..U {
            // SAFETY: whole vectors lie in the image's c·p outputs (the caller's
            // guarantee), and the partial one's store is masked to them.
            unsafe {
                let to = y.as_mut_ptr().add((v0 + u) * LANES);
                if PARTIAL {
                    _mm256_maskstore_ps(to, tails[u], acc[u]);
                } else {
                    _mm256_storeu_ps(to, acc[u]);
                }
            }
        }
    }
}

/// [`FlatDepthwise::weight_grad`] in AVX2 registers: `lanes[(v·taps + t)·8 + l] +=
/// dY[q] · x[q + offset(t)]` for output `q = 8v + l`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; the operands must be as long as the layer's, and
/// the layer made for AVX2.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn weight_grad(flat: &FlatDepthwise, x: &[f32], dy: &[f32], lanes: &mut [f32]) {
    let g = &flat.g;
    let taps = g.kernel.0 * g.kernel.1;
    let total = g.c * g.p();
    for v in 0..total.div_ceil(LANES) {
        // SAFETY: AVX2 (this function's contract).
        let tail = unsafe { first_lanes(total - v * LANES) };
        let masks = &flat.lane_masks[0][(v % flat.period) * taps * LANES..][..taps * LANES];
        let sums = &mut lanes[v * taps * LANES..][..taps * LANES];
        // SAFETY: the tail keeps the loads within the image's c·p outputs of dY; the
        // partial sums hold 8 per tap; the lanes kept of x are taps inside their
        // channel's plane, inside `x`, and the others are not read.
        unsafe {
            let d = _mm256_maskload_ps(dy.as_ptr().add(v * LANES), tail);
            for &(t, offset) in &flat.offsets {
                let mask = _mm256_loadu_si256(masks.as_ptr().add(t * LANES).cast());
                let at = (v * LANES) as isize + offset;
                let xv = _mm256_maskload_ps(
                    x.as_ptr().wrapping_offset(at),
                    _mm256_and_si256(mask, tail),
                );
                let sum = sums.as_mut_ptr().add(t * LANES);
                _mm256_storeu_ps(sum, _mm256_fmadd_ps(d, xv, _mm256_loadu_ps(sum)));
            }
        }
    }
}

/// Whether [`rows_3x3`] takes layer `g`: 3×3, padding 1, undilated, output rows a
/// multiple of 8 wide, and stride 1 ("same") or stride 2 from rows twice as wide.
pub(super) fn takes_rows_3x3(g: &Geometry) -> bool {
    let shape = g.kernel == (3, 3) && g.padding == (1, 1) && g.dilation == (1, 1);
    let stride = match g.stride {
        (1, 1) => g.w == g.ow,
        (2, 2) => g.w == 2 * g.ow,
        _ => false,
    };
    shape && stride && g.ow.is_multiple_of(LANES)
}

/// Output rows summed side by side in [`rows_3x3`]: independent chains of multiply-adds
/// that share the loads of the input rows between them.
const ROWS: usize = 4;

/// The forward of a 3×3 layer of stride `S` (1 or 2; `takes_rows_3x3`) plane by plane:
/// for each column of 8 outputs and [`ROWS`] output rows, the input rows they read are
/// loaded once each as their three column taps (`x[S·j − 1]`, `x[S·j]`, `x[S·j + 1]`;
/// zero for rows outside the plane), and each output is its bias plus nine
/// multiply-adds, in the order of the taps. The flat sums read every tap through a lane
/// mask, three loads to a multiply-add; here about one load feeds two, and only a row's
/// first vector meets the image's left edge (and at stride 1 its last the right): the
/// outer tap is then a neighbouring tap's vector moved by one lane, with a zero moved
/// in. At stride 2 a row's 16 inputs are split into their even and odd columns (taps 1
/// and 2) by one shuffle and one permutation each; tap 0 is the odd columns moved by one
/// lane, with the input before them moved in. A stride-2 layer so needs no split input.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `takes_rows_3x3(g)` with stride `S`.
///
/// # Panics
/// If `x` holds fewer than `c·h·w` elements, `y` fewer than `c·oh·ow`, `w` fewer than
/// `9·c` or `bias` fewer than `c`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn rows_3x3<const S: usize>(
    g: &Geometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (h, width, plane, out) = (g.h, g.w, g.h * g.w, g.p());
    assert!(
        x.len() >= g.c * plane && y.len() >= g.c * out && w.len() >= 9 * g.c,
        "operands too short for the layer"
    );
    // Lanes moved by one towards the end (lane 0 gets lane 7, then replaced) and towards
    // the start (lane 7 gets lane 0, then zeroed).
    let to_end = _mm256_setr_epi32(7, 0, 1, 2, 3, 4, 5, 6);
    let to_start = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 0);
    let zero = _mm256_setzero_ps();
    // Input rows a group of ROWS output rows reads.
    let span = (ROWS - 1) * S + 3;
    for ch in 0..g.c {
        let t = &w[ch * 9..][..9];
        let k = [
            _mm256_set1_ps(t[0]),
            _mm256_set1_ps(t[1]),
            _mm256_set1_ps(t[2]),
            _mm256_set1_ps(t[3]),
            _mm256_set1_ps(t[4]),
            _mm256_set1_ps(t[5]),
            _mm256_set1_ps(t[6]),
            _mm256_set1_ps(t[7]),
            _mm256_set1_ps(t[8]),
        ];
        let b = _mm256_set1_ps(bias.map_or(0.0, |b| b[ch]));
        let x_c = x[ch * plane..][..plane].as_ptr();
        let y_c = y[ch * out..][..out].as_mut_ptr();
        for col in (0..g.ow).step_by(LANES) {
            let (first, last) = (col == 0, col + LANES == g.ow);
            for i0 in (0..g.oh).step_by(ROWS) {
                // Input rows S·i0 − 1 .. S·i0 − 1 + span, each as its three column taps.
                let mut taps = [[zero; 3]; 2 * ROWS + 1];
                for (j, tap) in taps.iter_mut().enumerate().take(span) {
                    let r = (S * i0 + j).wrapping_sub(1);
                    if r >= h {
                        continue;
                    }
                    // SAFETY: row r < h of the plane. Stride 1: the loads read
                    // row[col − 1..col + 7] only when col > 0 and row[col + 1..col + 9]
                    // only when col + 8 < width. Stride 2: row[2·col..2·col + 16] ends by
                    // 2·ow = width, and row[2·col − 1] is read only when col > 0.
                    unsafe {
                        let at = x_c.add(r * width + S * col);
                        if S == 1 {
                            let mid = _mm256_loadu_ps(at);
                            tap[0] = if first {
                                _mm256_blend_ps::<1>(_mm256_permutevar8x32_ps(mid, to_end), zero)
                            } else {
                                _mm256_loadu_ps(at.sub(1))
                            };
                            tap[1] = mid;
                            tap[2] = if last {
                                let moved = _mm256_permutevar8x32_ps(mid, to_start);
                                _mm256_blend_ps::<0x80>(moved, zero)
                            } else {
                                _mm256_loadu_ps(at.add(1))
                            };
                        } else {
                            let (lo, hi) = (_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8)));
                            let (even, odd) = even_odd_avx2(lo, hi);
                            let before = if first {
                                zero
                            } else {
                                _mm256_set1_ps(*at.sub(1))
                            };
                            tap[0] =
                                _mm256_blend_ps::<1>(_mm256_permutevar8x32_ps(odd, to_end), before);
                            tap[1] = even;
                            tap[2] = odd;
                        }
                    }
                }
                // The rows' chains side by side, so their latencies overlap (rows past
                // the plane are summed from zeros and not stored).
                let mut acc = [b; ROWS];
                for a in 0..3 {
                    for kj in 0..3 {
                        for (u, acc) in acc.iter_mut().enumerate() {
                            *acc = _mm256_fmadd_ps(k[3 * a + kj], taps[S * u + a][kj], *acc);
                        }
                    }
                }
                for (u, acc) in acc.iter().enumerate().take(g.oh - i0) {
                    // SAFETY: output row i0 + u < oh, columns col..col + 8 ≤ ow.
                    unsafe { _mm256_storeu_ps(y_c.add((i0 + u) * g.ow + col), *acc) };
                }
            }
        }
    }
}
