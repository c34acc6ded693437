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

use super::im2col::valid_range;
use super::ConvForward;
use crate::kernels::microkernel::{multiply_block, PackedRows, NR};
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
}

impl<T: Element> ImplicitGemmForward<T> {
    /// Prepares the `o × c × kh × kw` weights `w` of a layer of geometry `g`.
    pub fn new(g: &Geometry, o: usize, w: &[T]) -> Self {
        let k = g.k();
        ImplicitGemmForward {
            geometry: *g,
            weights: PackedRows::new(w, (o, k), (k, 1)),
            ranges: column_ranges(g),
        }
    }
}

impl<T: Element> ConvForward<T> for ImplicitGemmForward<T> {
    fn workspace(&self) -> usize {
        self.geometry.k() * NR
    }

    /// Each block of columns is stored whole: bias plus products.
    fn writes_every_output(&self) -> bool {
        true
    }

    fn forward(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], workspace: &mut [T]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { self.forward_avx2(x, bias, y, workspace) };
        }
        self.forward_body(x, bias, y, workspace)
    }
}

impl<T: Element> ImplicitGemmForward<T> {
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
        ];
        for (c, o, h, w, k, s, p, d) in cases {
            let g = Geometry::new(c, (h, w), (k, k), (s, s), (p, p), (d, d)).unwrap();
            let x: Vec<f64> = (0..2 * g.chw())
                .map(|i| ((i * 7919) % 101) as f64 / 13.0 - 3.0)
                .collect();
            let wt: Vec<f64> = (0..o * g.k())
                .map(|i| ((i * 104729) % 97) as f64 / 29.0 - 1.5)
                .collect();
            let bias: Vec<f64> = (0..o).map(|i| i as f64 / 3.0 - 1.0).collect();
            let fast = ImplicitGemmForward::new(&g, o, &wt);
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
                        "{c}→{o} {h}×{w} k{k}/{s} p{p} d{d}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
