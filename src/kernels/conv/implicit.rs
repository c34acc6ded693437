//! The forward pass as an implicit GEMM: `Y = W·im2col(X) + b` without the im2col matrix.
//!
//! The weights are packed once per call into the micro-kernel's panels
//! ([`PackedRows`]); then, for every block of [`NR`] output pixels of an image, the
//! block's columns of `im2col(X)` are gathered straight from the image into a `k × NR`
//! buffer and multiplied by every panel, each output row's 16 pixels stored in place. The
//! im2col path ([`super::im2col`]) writes the columns of a whole tile, which the GEMM then
//! copies again into its own packed layout, and recomputes whole 16-row tiles of outputs;
//! here each input value is copied once, into a buffer that stays in L1/L2, and the output
//! rows computed are the layer's own (rounded up to a panel of 8–14, not to 16).
//!
//! Layers with stride 1 and no padding whose output rows hold whole halves of a block (8
//! pixels) need no copy at all on AVX2: each half's columns for a tap are 8 consecutive
//! input values, which the micro-kernel reads in place ([`multiply_taps`]).

use super::im2col::valid_range;
use super::ConvForward;
use crate::kernels::microkernel::{
    has_avx512, multiply_block, multiply_taps, PackedRows, TapOffsets, HALF, NR,
};
use crate::kernels::{Element, Geometry};

/// One output row's share of a block of pixels: output row `oh`, columns `ow..ow + len`,
/// at offset `at` within the block.
#[derive(Clone, Copy, Debug, Default)]
struct Segment {
    oh: usize,
    ow: usize,
    len: usize,
    at: usize,
}

/// The row segments of the pixels `first..first + n` (row-major over `oh × ow`).
fn segments(g: &Geometry, first: usize, n: usize) -> ([Segment; NR], usize) {
    let mut out = [Segment::default(); NR];
    let (mut count, mut at) = (0, 0);
    while at < n {
        let pixel = first + at;
        let (oh, ow) = (pixel / g.ow, pixel % g.ow);
        let len = (g.ow - ow).min(n - at);
        out[count] = Segment { oh, ow, len, at };
        count += 1;
        at += len;
    }
    (out, count)
}

/// For each kernel column `kj`, the output columns `lo..hi` whose tap lands inside the
/// input row (the others read padding): worked out once per layer, not per block.
pub fn column_ranges(g: &Geometry) -> Vec<(usize, usize)> {
    (0..g.kernel.1)
        .map(|kj| {
            let iw_off = (kj * g.dilation.1) as isize - g.padding.1 as isize;
            valid_range(iw_off, g.stride.1, g.w, g.ow)
        })
        .collect()
}

/// `b[kk·NR + j]` = the input value tap `kk` of pixel `first + j` sees (0 in the padding),
/// for `j < n`, and 0 for `n ≤ j < NR`: the block's columns of `im2col(x)`. `ranges` is
/// [`column_ranges`]`(g)`.
#[inline(always)]
pub fn gather_columns<T: Element>(
    x: &[T],
    g: &Geometry,
    ranges: &[(usize, usize)],
    first: usize,
    n: usize,
    b: &mut [T],
) {
    let (segs, count) = segments(g, first, n);
    let segs = &segs[..count];
    let (kh, kw) = g.kernel;
    let zero = T::zero();
    let pointwise = g.kernel == (1, 1) && g.stride == (1, 1) && g.padding == (0, 0);
    let rows_fit = g.dilation == (1, 1) && (NR - 1) * g.stride.1 + kw <= PADDED_ROW;
    if !pointwise && rows_fit {
        return gather_kernel_rows(x, g, segs, n, b);
    }
    let mut rows = b.chunks_exact_mut(NR);
    for plane in x.chunks_exact(g.h * g.w).take(g.c) {
        for ki in 0..kh {
            let ih_off = (ki * g.dilation.0) as isize - g.padding.0 as isize;
            for (kj, &(lo, hi)) in ranges[..kw].iter().enumerate() {
                let dst = rows.next().expect("k rows of NR");
                if n < NR {
                    dst[n..].fill(zero);
                }
                if pointwise {
                    // The columns are the input plane itself.
                    copy_short(&mut dst[..n], &plane[first..]);
                    continue;
                }
                let iw_off = (kj * g.dilation.1) as isize - g.padding.1 as isize;
                gather_row(plane, g, segs, (ih_off, iw_off), (lo, hi), dst);
            }
        }
    }
}

/// Input columns a block's segment may span in [`gather_kernel_rows`] (its padded copy
/// lives on the stack): 16 pixels at stride 2 with a 7-wide kernel.
const PADDED_ROW: usize = 40;

/// [`gather_columns`] without dilation: the `kw` taps of a kernel row read one input row
/// at `kw` consecutive offsets, so they are copied together with no per-tap bounds,
/// straight from the row where the segment's taps stay inside it (LeNet's layers, blocks
/// away from a padded edge), else from a copy of the row's stretch with its padding zeros
/// (cifar-cnn's conv1: every block of its 32-pixel rows touches an edge). Strided layers
/// (resnet's downsampling 3×3/2) read every `stride`-th column of the stretch.
#[inline(always)]
fn gather_kernel_rows<T: Element>(x: &[T], g: &Geometry, segs: &[Segment], n: usize, b: &mut [T]) {
    let (kh, kw) = g.kernel;
    let (ph, pw) = g.padding;
    let zero = T::zero();
    let (sh, sw) = g.stride;
    let mut padded = [zero; PADDED_ROW];
    let mut kernel_rows = b.chunks_exact_mut(kw * NR);
    for plane in x.chunks_exact(g.h * g.w).take(g.c) {
        for ki in 0..kh {
            let rows = kernel_rows.next().expect("k rows of NR");
            if n < NR {
                for row in rows.chunks_exact_mut(NR) {
                    row[n..].fill(zero);
                }
            }
            for s in segs {
                let ih = (s.oh * sh + ki) as isize - ph as isize;
                if ih < 0 || ih >= g.h as isize {
                    for row in rows.chunks_exact_mut(NR) {
                        row[s.at..s.at + s.len].fill(zero);
                    }
                    continue;
                }
                let line = &plane[ih as usize * g.w..][..g.w];
                // Input columns s.ow − pw .. s.ow − pw + len + kw − 1.
                let start = (s.ow * sw) as isize - pw as isize;
                let span = (s.len - 1) * sw + kw;
                let src = if start >= 0 && start as usize + span <= g.w {
                    &line[start as usize..]
                } else {
                    for (i, v) in padded[..span].iter_mut().enumerate() {
                        let col = start + i as isize;
                        *v = if col >= 0 && (col as usize) < g.w {
                            line[col as usize]
                        } else {
                            zero
                        };
                    }
                    &padded[..]
                };
                for (kj, row) in rows.chunks_exact_mut(NR).enumerate() {
                    let out = &mut row[s.at..s.at + s.len];
                    if sw == 1 {
                        copy_short(out, &src[kj..]);
                    } else {
                        for (j, v) in out.iter_mut().enumerate() {
                            *v = src[kj + j * sw];
                        }
                    }
                }
            }
        }
    }
}

/// One tap's row of the block: for each segment, the input row it reads (or zeros), its
/// columns `lo..hi` copied and the rest zero.
#[inline(always)]
fn gather_row<T: Element>(
    plane: &[T],
    g: &Geometry,
    segs: &[Segment],
    (ih_off, iw_off): (isize, isize),
    (lo, hi): (usize, usize),
    dst: &mut [T],
) {
    let zero = T::zero();
    for s in segs {
        let out = &mut dst[s.at..s.at + s.len];
        let ih = (s.oh * g.stride.0) as isize + ih_off;
        if ih < 0 || ih >= g.h as isize {
            out.fill(zero);
            continue;
        }
        let src = &plane[ih as usize * g.w..][..g.w];
        // Output columns s.ow.. of this row; those outside lo..hi read padding.
        let (a, z) = (lo.clamp(s.ow, s.ow + s.len), hi.clamp(s.ow, s.ow + s.len));
        if a > s.ow || z < s.ow + s.len {
            out[..a - s.ow].fill(zero);
            out[z - s.ow..].fill(zero);
        }
        if a < z {
            let first_in = (a * g.stride.1) as isize + iw_off;
            let inside = &mut out[a - s.ow..z - s.ow];
            if g.stride.1 == 1 {
                copy_short(inside, &src[first_in as usize..]);
            } else {
                for (j, v) in inside.iter_mut().enumerate() {
                    *v = src[first_in as usize + j * g.stride.1];
                }
            }
        }
    }
}
/// `dst.copy_from_slice(&src[..dst.len()])` for the at most [`NR`] elements of a block's
/// row: the full widths as fixed-size moves, not calls to `memcpy` (which took 10% of a
/// LeNet inference for copies of 8 floats).
#[inline(always)]
fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    fn fixed<T: Copy, const L: usize>(dst: &mut [T], src: &[T]) {
        let (d, s): (&mut [T; L], &[T; L]) = (
            dst.try_into().expect("L elements"),
            src[..L].try_into().expect("L elements"),
        );
        *d = *s;
    }
    match dst.len() {
        16 => fixed::<T, 16>(dst, src),
        8 => fixed::<T, 8>(dst, src),
        len => {
            for (d, s) in dst.iter_mut().zip(&src[..len]) {
                *d = *s;
            }
        }
    }
}

/// The forward pass by implicit GEMM: weights packed once, columns gathered per block of
/// [`NR`] pixels, products stored straight into the output.
pub struct ImplicitGemmForward<T> {
    geometry: Geometry,
    weights: PackedRows<T>,
    ranges: Vec<(usize, usize)>,
    /// Where each tap reads the image, when the blocks read their columns in place.
    taps: Option<TapOffsets>,
}

/// Whether each half block of a layer's output pixels (8 in a row) reads every tap's
/// columns as 8 consecutive input values: stride 1, no padding or dilation, and output
/// rows a whole number of halves (or a 1×1 layer, whose pixels are the input's, with a
/// whole number of halves in all).
pub fn reads_in_place(g: &Geometry) -> bool {
    let plain = g.stride == (1, 1) && g.padding == (0, 0) && g.dilation == (1, 1);
    plain && (g.ow.is_multiple_of(HALF) || (g.kernel == (1, 1) && g.p().is_multiple_of(HALF)))
}

impl<T: Element> ImplicitGemmForward<T> {
    /// Prepares the `o × c × kh × kw` weights `w` of a layer of geometry `g`. Layers that
    /// [`reads_in_place`] read their columns from the image on CPUs without AVX-512
    /// (whose kernel takes 16 consecutive columns in one register): LeNet's conv2 spent
    /// 14% of an inference on AMD Zen 3 copying them (2.81 → 2.06 ms a batch of 64).
    ///
    /// Except where the image's channels lie a multiple of 1 KiB apart: then a block's
    /// columns all fall in 4 of the L1 cache's 64 sets, the same 4 as its output rows
    /// (also a plane apart), whose stores evict them. mobilenet-v2's 16→96 1×1 layer on
    /// 16×16 took 2.30 ms gathered and 2.90 in place; its layers on 8×8 and 4×4 took
    /// 5.0 ms gathered and 4.3 in place.
    pub fn new(g: &Geometry, o: usize, w: &[T]) -> Self {
        Self::with_path(g, o, w, Self::reads_in_place_here(g))
    }

    /// Whether [`ImplicitGemmForward::new`] reads the columns of a layer of geometry `g`
    /// in place on this CPU (see there).
    pub fn reads_in_place_here(g: &Geometry) -> bool {
        let plane_bytes = g.h * g.w * std::mem::size_of::<T>();
        reads_in_place(g) && !plane_bytes.is_multiple_of(1024) && !has_avx512()
    }

    /// [`ImplicitGemmForward::new`] with the columns read in place or gathered: in place
    /// only where the geometry [`reads_in_place`].
    pub fn with_path(g: &Geometry, o: usize, w: &[T], in_place: bool) -> Self {
        let k = g.k();
        let taps = (in_place && reads_in_place(g)).then(|| {
            let (kh, kw) = g.kernel;
            let offsets = (0..g.c)
                .flat_map(|c| (0..kh).flat_map(move |ki| (0..kw).map(move |kj| (c, ki, kj))))
                .map(|(c, ki, kj)| c * g.h * g.w + ki * g.w + kj)
                .collect();
            TapOffsets::new(offsets)
        });
        ImplicitGemmForward {
            geometry: *g,
            weights: PackedRows::new(w, (o, k), (k, 1)),
            ranges: column_ranges(g),
            taps,
        }
    }

    /// Whether the blocks read their columns in place (no gathered copy).
    pub fn in_place(&self) -> bool {
        self.taps.is_some()
    }
}

impl<T: Element> ConvForward<T> for ImplicitGemmForward<T> {
    fn workspace(&self) -> usize {
        if self.in_place() {
            0
        } else {
            self.geometry.k() * NR
        }
    }

    /// Each block of columns is stored whole: bias plus products.
    fn writes_every_output(&self) -> bool {
        true
    }

    fn forward(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], workspace: &mut [T]) {
        if let Some(taps) = &self.taps {
            return self.forward_in_place(taps, x, bias, y);
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { self.forward_avx2(x, bias, y, workspace) };
        }
        self.forward_body(x, bias, y, workspace)
    }
}

impl<T: Element> ImplicitGemmForward<T> {
    /// [`ConvForward::forward`] with each block's columns read in place: a pixel's taps
    /// read the image at its own input pixel plus the tap's offset.
    fn forward_in_place(&self, taps: &TapOffsets, x: &[T], bias: Option<&[T]>, y: &mut [T]) {
        let g = &self.geometry;
        let (o, p) = (self.weights.dims().0, g.p());
        // Stride 1, no padding: output pixel (i, j) reads from input pixel (i, j) on.
        let start = |pixel: usize| pixel / g.ow * g.w + pixel % g.ow;
        for (x_i, y_i) in x.chunks_exact(g.chw()).zip(y.chunks_exact_mut(o * p)) {
            for first in (0..p).step_by(NR) {
                let n = (p - first).min(NR);
                // A last block of one half reads its first half twice (and stores it once).
                let second = if n > HALF { first + HALF } else { first };
                let starts = (start(first), start(second));
                multiply_taps(
                    &self.weights,
                    (x_i, taps, starts),
                    n,
                    bias,
                    &mut y_i[first..],
                    p,
                );
            }
        }
    }

    /// [`ConvForward::forward`] compiled for AVX2: the gathers copy 8 floats per move.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn forward_avx2(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], workspace: &mut [T]) {
        self.forward_body(x, bias, y, workspace)
    }

    #[inline(always)]
    fn forward_body(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], workspace: &mut [T]) {
        let g = &self.geometry;
        let (o, p) = (self.weights.dims().0, g.p());
        for (x_i, y_i) in x.chunks_exact(g.chw()).zip(y.chunks_exact_mut(o * p)) {
            for first in (0..p).step_by(NR) {
                let n = (p - first).min(NR);
                gather_columns(x_i, g, &self.ranges, first, n, workspace);
                multiply_block(
                    &self.weights,
                    (workspace, NR),
                    n,
                    bias,
                    &mut y_i[first..],
                    p,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::direct;
    use super::*;

    /// Two images, weights and biases for `o` outputs of a layer of geometry `g`.
    fn layer_values<T: Element>(g: &Geometry, o: usize) -> (Vec<T>, Vec<T>, Vec<T>) {
        let x = (0..2 * g.chw())
            .map(|i| T::from_f64(((i * 7919) % 101) as f64 / 13.0 - 3.0))
            .collect();
        let wt = (0..o * g.k())
            .map(|i| T::from_f64(((i * 104729) % 97) as f64 / 29.0 - 1.5))
            .collect();
        let bias = (0..o).map(|i| T::from_f64(i as f64 / 3.0 - 1.0)).collect();
        (x, wt, bias)
    }

    /// Against the direct convolution: padding, strides not dividing the size, dilation,
    /// 1×1 layers, rows shorter and longer than a block, batch of two.
    #[test]
    fn implicit_gemm_matches_the_direct_convolution() {
        let cases = [
            // (c, o, h, w, k, stride, pad, dilation)
            (1, 20, 28, 28, 5, 1, 0, 1),
            (20, 50, 12, 12, 5, 1, 0, 1),
            (3, 7, 9, 11, 3, 2, 1, 1),
            (4, 9, 10, 7, 3, 3, 2, 2),
            (16, 24, 5, 5, 1, 1, 0, 1),
            (8, 5, 6, 6, 1, 2, 0, 1),
            (2, 3, 33, 3, 3, 1, 1, 1),
            // Blocks at the padded edges and one between them (ow = 40).
            (3, 5, 6, 40, 3, 1, 1, 1),
            (2, 4, 7, 21, 5, 1, 2, 1),
            // In place: rows of 16 and 24 (halves of one block in two rows), a last block
            // of one half (24 pixels), a 1×1 layer whose halves cross its rows of 6.
            (2, 5, 4, 18, 3, 1, 0, 1),
            (3, 7, 5, 28, 5, 1, 0, 1),
            (3, 6, 7, 12, 5, 1, 0, 1),
            (5, 7, 4, 6, 1, 1, 0, 1),
        ];
        let mut in_place_cases = 0;
        for ((c, o, h, w, k, s, p, d), in_place) in cases
            .into_iter()
            .flat_map(|case| [(case, false), (case, true)])
        {
            let g = Geometry::new(c, (h, w), (k, k), (s, s), (p, p), (d, d)).unwrap();
            let (x, wt, bias) = layer_values::<f64>(&g, o);
            let fast = ImplicitGemmForward::with_path(&g, o, &wt, in_place);
            in_place_cases += usize::from(fast.in_place());
            let mut y = vec![f64::NAN; 2 * o * g.p()];
            let mut ws = vec![f64::NAN; fast.workspace()];
            fast.forward(&x, Some(&bias), &mut y, &mut ws);
            for (i, y_i) in y.chunks_exact(o * g.p()).enumerate() {
                let mut want = vec![0.0; o * g.p()];
                direct::forward(
                    &x[i * g.chw()..(i + 1) * g.chw()],
                    &wt,
                    Some(&bias),
                    &g,
                    o,
                    &mut want,
                );
                for (a, b) in y_i.iter().zip(&want) {
                    assert!(
                        (a - b).abs() <= 1e-11 * (1.0 + b.abs()),
                        "{c}→{o} {h}×{w} k{k}/{s} p{p} d{d}, in place {in_place}: {a} vs {b}"
                    );
                }
            }
        }
        // LeNet's conv1 and conv2 (24 and 8 pixels a row) and the four cases above.
        assert_eq!(in_place_cases, 6, "layers read in place");
    }

    /// The vector kernel (f32) reads the columns in place as the plain loops do (f64):
    /// LeNet's conv2 and a 1×1 layer, against the gathered columns.
    #[test]
    fn in_place_columns_match_the_gathered_ones_in_f32() {
        for (c, o, h, w, k) in [(20, 50, 12, 12, 5), (24, 40, 6, 4, 1), (3, 9, 7, 12, 5)] {
            let g = Geometry::new(c, (h, w), (k, k), (1, 1), (0, 0), (1, 1)).unwrap();
            let (x, wt, bias) = layer_values::<f32>(&g, o);
            let run = |in_place: bool| {
                let conv = ImplicitGemmForward::with_path(&g, o, &wt, in_place);
                assert_eq!(conv.in_place(), in_place);
                let mut y = vec![f32::NAN; 2 * o * g.p()];
                let mut ws = vec![f32::NAN; conv.workspace()];
                conv.forward(&x, Some(&bias), &mut y, &mut ws);
                y
            };
            // The same products in the same order: equal to the last bit.
            assert_eq!(run(true), run(false), "{c}→{o} {h}×{w} k{k}");
        }
    }
}
