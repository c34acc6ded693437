//! A register-blocked GEMM micro-kernel over a left operand packed once: `C = bias + A·B`
//! for a block of [`NR`] columns of `B`, one panel of `mr` rows of `A` at a time.
//!
//! matrixmultiply packs both operands again on every call and computes whole 16×16 tiles,
//! so a convolution with few output channels pays twice: LeNet's conv1 (20 outputs) and
//! conv2 (50) repacked their weights for every image and computed 32 and 64 rows. Here the
//! left operand (a layer's weights) is packed once per call in panels of `mr` rows, `mr`
//! chosen per matrix to waste as few rows as the registers allow ([`choose_mr`]), and the
//! right operand is whatever the caller packed into a `k × NR` block (the implicit GEMM of
//! `conv::implicit` fills it straight from the image: no im2col matrix in between).
//!
//! The f32 kernels (`x86.rs`, AVX-512 or AVX2 + FMA, chosen at run time) hold an
//! `mr × NR` accumulator in vector registers and do one rank-1 update per step of `k`: a
//! vector load of `B`'s row, `mr` broadcasts of `A`'s column and `mr` fused multiply-adds.
//! (Written as generic loops, LLVM vectorised them across the panel's rows with gathers,
//! at 1.6 GFLOP/s.) f64 and other CPUs take the same loops in plain Rust;
//! [`multiply_reference`] is the three loops all are tested against.

use crate::kernels::Element;

#[cfg(target_arch = "x86_64")]
mod x86;

/// Columns of `B` per block: one 16-float AVX-512 vector, two AVX2 vectors.
pub const NR: usize = 16;

/// The instruction set the kernel is compiled for, detected at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    /// 32 vector registers of 16 floats: up to 14 accumulator rows.
    Avx512,
    /// 16 registers of 8 floats: up to 6 accumulator rows (12 registers).
    Avx2,
    /// Anything else: the same code without explicit vector width.
    Portable,
}

fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// Whether the CPU has AVX-512F, the 32 registers of 16 floats the conv kernels that keep
/// many accumulators (such as [`crate::kernels::conv::direct_rows`]) are written for.
pub fn has_avx512() -> bool {
    isa() == Isa::Avx512
}

/// Whether the CPU has AVX2 and FMA (every AVX-512 CPU has them too): 16 registers of 8
/// floats, for the kernels written for CPUs without AVX-512.
pub fn has_avx2() -> bool {
    matches!(isa(), Isa::Avx512 | Isa::Avx2)
}

/// Panel heights the kernel is compiled for, per instruction set, largest first.
fn panel_heights(isa: Isa) -> &'static [usize] {
    match isa {
        Isa::Avx512 => &[14, 12, 10, 8],
        Isa::Avx2 => &[6, 5, 4],
        Isa::Portable => &[4],
    }
}

/// The panel height for an `m`-row left operand: the one that pads `m` the least (ties to
/// the taller panel). 20 rows take panels of 10 on AVX-512, 50 take 10, 64 take 8.
pub fn choose_mr(m: usize) -> usize {
    let heights = panel_heights(isa());
    let padded = |mr: usize| m.div_ceil(mr) * mr;
    heights
        .iter()
        .copied()
        .min_by_key(|&mr| (padded(mr), usize::MAX - mr))
        .expect("at least one panel height")
}

/// An `m × k` matrix packed in panels of `mr` rows: element `(i, kk)` is at
/// `(q·k + kk)·mr + r` for `i = q·mr + r`; rows past `m` are zero.
#[derive(Clone, Debug)]
pub struct PackedRows<T> {
    data: Vec<T>,
    m: usize,
    k: usize,
    mr: usize,
}

impl<T: Element> PackedRows<T> {
    /// Packs the `m × k` matrix whose element `(i, kk)` is `a[i·rs + kk·cs]`, in panels
    /// of [`choose_mr`]`(m)` rows.
    pub fn new(a: &[T], (m, k): (usize, usize), (rs, cs): (usize, usize)) -> Self {
        Self::with_mr(a, (m, k), (rs, cs), choose_mr(m))
    }

    /// [`PackedRows::new`] with a given panel height (one of the compiled ones).
    fn with_mr(a: &[T], (m, k): (usize, usize), (rs, cs): (usize, usize), mr: usize) -> Self {
        let panels = m.div_ceil(mr);
        let mut data = vec![T::zero(); panels * k * mr];
        // Row by row: each row's values go `mr` apart into its panel (none without columns).
        let rows = if k == 0 { 0 } else { m };
        for i in 0..rows {
            let (q, r) = (i / mr, i % mr);
            let panel = data[q * k * mr..][..k * mr][r..].iter_mut().step_by(mr);
            if cs == 1 {
                for (value, &v) in panel.zip(&a[i * rs..][..k]) {
                    *value = v;
                }
            } else {
                for (kk, value) in panel.enumerate() {
                    *value = a[i * rs + kk * cs];
                }
            }
        }
        PackedRows { data, m, k, mr }
    }

    /// Rows and columns of the matrix.
    pub fn dims(&self) -> (usize, usize) {
        (self.m, self.k)
    }
}

/// `c[i·ldc + j] = bias[i] + Σ_kk A[i][kk]·b[kk·ldb + j]` for every row `i < m` of `a`
/// and column `j < n` (`n ≤ NR`; `b` has `k` rows of at least [`NR`] values, `ldb` apart:
/// `ldb = NR` for a packed block, or the row length of a matrix read in place; columns
/// past `n` are read but ignored).
///
/// # Panics
/// If `b` cannot hold `k` rows of `NR`, `n > NR`, or `c` cannot hold the rows.
pub fn multiply_block<T: Element>(
    a: &PackedRows<T>,
    (b, ldb): (&[T], usize),
    n: usize,
    bias: Option<&[T]>,
    c: &mut [T],
    ldc: usize,
) {
    strided(a, (b, ldb), n, bias, false, c, ldc)
}

/// [`multiply_block`] adding the products to `c`: `c[i·ldc + j] += Σ_kk A(i, kk)·b[kk·ldb +
/// j]`, the sum over `kk` started from `c`'s value (a weight gradient summed image by
/// image).
///
/// # Panics
/// As [`multiply_block`].
pub fn add_block<T: Element>(
    a: &PackedRows<T>,
    (b, ldb): (&[T], usize),
    n: usize,
    c: &mut [T],
    ldc: usize,
) {
    strided(a, (b, ldb), n, None, true, c, ldc)
}

/// Half a block: the columns of `B` one AVX2 register holds.
pub const HALF: usize = NR / 2;

/// Where the rows of a block's right operand `B` are in the slice it is read from.
pub(crate) trait RowStarts: Copy {
    /// Where row `kk`'s first [`HALF`] values and its last [`HALF`] start.
    fn at(&self, kk: usize) -> (usize, usize);

    /// `Some(ldb)` when every row is [`NR`] contiguous values, `ldb` after the one before.
    fn ldb(&self) -> Option<usize>;
}

/// Rows of [`NR`] contiguous values, `ldb` apart: a packed block, or a matrix read in place.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Strided(usize);

impl RowStarts for Strided {
    #[inline(always)]
    fn at(&self, kk: usize) -> (usize, usize) {
        (kk * self.0, kk * self.0 + HALF)
    }

    fn ldb(&self) -> Option<usize> {
        Some(self.0)
    }
}

/// Where each tap of a convolution reads an image, for [`multiply_taps`]: row `kk` of a
/// block's `B` is read in place at `offsets[kk]` past where its pixels start.
#[derive(Clone, Debug)]
pub struct TapOffsets {
    offsets: Vec<usize>,
    max: usize,
}

impl TapOffsets {
    /// The taps' offsets, one per row of `B` (per column of the left operand).
    pub fn new(offsets: Vec<usize>) -> Self {
        let max = offsets.iter().copied().max().unwrap_or(0);
        TapOffsets { offsets, max }
    }
}

/// Rows of [`TapOffsets`] from two starting points, one per half of the block.
#[derive(Clone, Copy, Debug)]
struct TapRows<'a> {
    offsets: &'a [usize],
    starts: (usize, usize),
}

impl RowStarts for TapRows<'_> {
    #[inline(always)]
    fn at(&self, kk: usize) -> (usize, usize) {
        let offset = self.offsets[kk];
        (offset + self.starts.0, offset + self.starts.1)
    }

    fn ldb(&self) -> Option<usize> {
        None
    }
}

/// [`multiply_block`] with `B` read in place from an image `x` instead of a packed block:
/// value `j` of row `kk` is `x[taps[kk] + starts.0 + j]` for `j <` [`HALF`] and
/// `x[taps[kk] + starts.1 + j − HALF]` after. A convolution with stride 1 and no padding
/// reads its 16 pixels' columns this way when each half lies within one output row: no
/// gathered copy of the columns.
///
/// # Panics
/// If `taps` has not one offset per column of `a`, a row would read past `x`, `n > NR`,
/// or `c` cannot hold the rows.
pub fn multiply_taps<T: Element>(
    a: &PackedRows<T>,
    (x, taps, starts): (&[T], &TapOffsets, (usize, usize)),
    n: usize,
    bias: Option<&[T]>,
    c: &mut [T],
    ldc: usize,
) {
    assert_eq!(taps.offsets.len(), a.k, "one offset per tap");
    assert!(
        a.k == 0 || taps.max + starts.0.max(starts.1) + HALF <= x.len(),
        "taps read past the image"
    );
    let rows = TapRows {
        offsets: &taps.offsets,
        starts,
    };
    block(a, (x, rows), n, bias, false, c, ldc)
}

/// [`multiply_block`] or [`add_block`]: checks that `b` holds `k` rows of [`NR`] values
/// `ldb` apart, then [`block`].
fn strided<T: Element>(
    a: &PackedRows<T>,
    (b, ldb): (&[T], usize),
    n: usize,
    bias: Option<&[T]>,
    accumulate: bool,
    c: &mut [T],
    ldc: usize,
) {
    assert!(
        n <= NR && ldb >= NR && (a.k == 0 || (a.k - 1) * ldb + NR <= b.len()),
        "block of {n} columns, rows {ldb} apart"
    );
    block(a, (b, Strided(ldb)), n, bias, accumulate, c, ldc)
}

/// The block product, `B`'s rows where `rows` says (already checked to lie inside `b`).
fn block<T: Element, R: RowStarts>(
    a: &PackedRows<T>,
    (b, rows): (&[T], R),
    n: usize,
    bias: Option<&[T]>,
    accumulate: bool,
    c: &mut [T],
    ldc: usize,
) {
    assert!(n <= NR, "block of {n} columns");
    assert!(
        a.m == 0 || n == 0 || (a.m - 1) * ldc + n <= c.len(),
        "output too short"
    );
    assert!(bias.is_none_or(|bias| bias.len() >= a.m), "bias too short");
    if a.k == 0 {
        // No inner dimension, no panel to walk: every output is its bias (or unchanged).
        if !accumulate {
            for i in 0..a.m {
                c[i * ldc..][..n].fill(bias.map_or(T::zero(), |bias| bias[i]));
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(f32s) = x86::F32Block::of(a, (b, rows), bias, accumulate, c) {
        match (isa(), rows.ldb()) {
            (Isa::Avx512, Some(ldb)) => {
                // SAFETY: the CPU has AVX-512F (checked by `isa`); shapes checked above.
                return unsafe { x86::block_avx512(f32s.strided(ldb), n, ldc) };
            }
            // Rows in two halves take the AVX2 kernel on every CPU that has it.
            // SAFETY: the CPU has AVX2 and FMA (every AVX-512 CPU too); shapes checked.
            (Isa::Avx512 | Isa::Avx2, _) => return unsafe { x86::block_avx2(f32s, n, ldc) },
            (Isa::Portable, _) => {}
        }
    }
    portable_block(a, (b, rows), n, bias, accumulate, c, ldc)
}

/// [`multiply_block`] in plain loops over an `mr × NR` accumulator (f64, and CPUs without
/// AVX2): the same panels and the same order of sums as the vector kernels.
fn portable_block<T: Element, R: RowStarts>(
    a: &PackedRows<T>,
    (b, b_rows): (&[T], R),
    n: usize,
    bias: Option<&[T]>,
    accumulate: bool,
    c: &mut [T],
    ldc: usize,
) {
    let (k, mr) = (a.k, a.mr);
    for (q, panel) in a.data.chunks_exact(k * mr).enumerate() {
        let rows = (a.m - q * mr).min(mr);
        for r in 0..rows {
            let mut acc = [bias.map_or(T::zero(), |bias| bias[q * mr + r]); NR];
            if accumulate {
                acc[..n].copy_from_slice(&c[(q * mr + r) * ldc..][..n]);
            }
            for (kk, ak) in panel.chunks_exact(mr).enumerate() {
                let (lo, hi) = b_rows.at(kk);
                let bk = b[lo..][..HALF].iter().chain(&b[hi..][..HALF]);
                for (acc, &bv) in acc.iter_mut().zip(bk) {
                    *acc += ak[r] * bv;
                }
            }
            c[(q * mr + r) * ldc..][..n].copy_from_slice(&acc[..n]);
        }
    }
}

/// The three loops [`multiply_block`] computes: `c[i·ldc + j] = bias[i] + Σ_kk
/// a[i·k + kk]·b[kk·NR + j]` for an unpacked row-major `m × k` matrix `a`.
pub fn multiply_reference<T: Element>(
    a: &[T],
    (m, k): (usize, usize),
    b: &[T],
    n: usize,
    bias: Option<&[T]>,
    c: &mut [T],
    ldc: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mut sum = bias.map_or(T::zero(), |bias| bias[i]);
            for kk in 0..k {
                sum += a[i * k + kk] * b[kk * NR + j];
            }
            c[i * ldc + j] = sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: usize) -> Vec<f64> {
        (0..len)
            .map(|i| (((i + seed) * 7919) % 211) as f64 / 37.0 - 2.5)
            .collect()
    }

    /// Every compiled panel height, rows that fill panels and rows that do not, full and
    /// partial blocks, with and without bias, in f64 (plain loops) and in f32 (the vector
    /// kernels on this CPU), against the three loops in f64.
    #[test]
    fn every_panel_height_matches_the_reference() {
        for &isa in &[Isa::Avx512, Isa::Avx2, Isa::Portable] {
            for &mr in panel_heights(isa) {
                for (m, k, n) in [
                    (1, 1, 16),
                    (mr, 7, 16),
                    (2 * mr + 3, 25, 9),
                    (50, 500, 16),
                    (3, 0, 5),
                ] {
                    let a = values(m * k, 1);
                    let b = values(k * NR, 2);
                    let bias = values(m, 3);
                    let ldc = n + 3;
                    for with_bias in [false, true] {
                        let bias = with_bias.then_some(&bias[..]);
                        let mut want = vec![f64::NAN; m * ldc];
                        multiply_reference(&a, (m, k), &b, n, bias, &mut want, ldc);
                        let mut f64s = vec![f64::NAN; m * ldc];
                        multiply_block(
                            &PackedRows::with_mr(&a, (m, k), (k, 1), mr),
                            (&b, NR),
                            n,
                            bias,
                            &mut f64s,
                            ldc,
                        );
                        let single = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
                        let mut f32s = vec![f32::NAN; m * ldc];
                        let bias32 = bias.map(single);
                        multiply_block(
                            &PackedRows::with_mr(&single(&a), (m, k), (k, 1), mr),
                            (&single(&b), NR),
                            n,
                            bias32.as_deref(),
                            &mut f32s,
                            ldc,
                        );
                        for (i, ((x, y), z)) in f64s.iter().zip(&f32s).zip(&want).enumerate() {
                            if i % ldc < n {
                                assert!(
                                    (x - z).abs() <= 1e-12 * (1.0 + z.abs()),
                                    "f64, mr {mr}, m {m}, k {k}: {x} vs {z}"
                                );
                                let scale = 1.0 + (k as f64).sqrt() * 4.0;
                                assert!(
                                    (*y as f64 - z).abs() <= 1e-5 * scale,
                                    "f32, mr {mr}, m {m}, k {k}: {y} vs {z}"
                                );
                            } else {
                                assert!(x.is_nan() && y.is_nan(), "wrote past the block's columns");
                            }
                        }
                    }
                }
            }
        }
    }

    /// `add_block` adds to what `c` holds (full and partial blocks, several panels, an empty
    /// inner dimension), in f64 and in f32 (this CPU's vector kernel).
    #[test]
    fn add_block_adds_the_product_to_c() {
        for (m, k, n) in [(50, 64, 16), (7, 3, 5), (21, 40, 16), (3, 0, 9)] {
            let (a, b, c0) = (values(m * k, 7), values(k * NR, 8), values(m * NR, 9));
            let mut product = vec![0.0; m * NR];
            multiply_reference(&a, (m, k), &b, n, None, &mut product, NR);
            let single = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
            let mut c = c0.clone();
            add_block(
                &PackedRows::new(&a, (m, k), (k, 1)),
                (&b, NR),
                n,
                &mut c,
                NR,
            );
            let mut c32 = single(&c0);
            let (a32, b32) = (single(&a), single(&b));
            add_block(
                &PackedRows::new(&a32, (m, k), (k, 1)),
                (&b32, NR),
                n,
                &mut c32,
                NR,
            );
            for i in 0..m * NR {
                let want = if i % NR < n {
                    c0[i] + product[i]
                } else {
                    c0[i]
                };
                assert!((c[i] - want).abs() <= 1e-12 * (1.0 + want.abs()), "f64 {i}");
                let tol = 1e-5 * (1.0 + want.abs() + (k as f64).sqrt() * 4.0);
                assert!(
                    (c32[i] as f64 - want).abs() <= tol,
                    "f32 {i}: {} vs {want}",
                    c32[i]
                );
            }
        }
    }

    /// The panels waste as few rows as the compiled heights allow.
    #[test]
    fn panel_height_pads_least() {
        for m in 1..200 {
            let mr = choose_mr(m);
            let heights = panel_heights(isa());
            assert!(heights.contains(&mr));
            let best = heights.iter().map(|&h| m.div_ceil(h) * h).min().unwrap();
            assert_eq!(m.div_ceil(mr) * mr, best, "m {m}");
        }
    }

    /// Transposed storage of `A` (column stride 1 is not required), and `B` read in place
    /// from a wider matrix (rows `ldb > NR` apart), in f64 and f32: the same results.
    #[test]
    fn packs_strided_matrices_and_reads_strided_blocks() {
        let (m, k) = (11, 5);
        let a = values(m * k, 4);
        let mut at = vec![0.0; m * k];
        for i in 0..m {
            for kk in 0..k {
                at[kk * m + i] = a[i * k + kk];
            }
        }
        let b = values(k * NR, 5);
        let ldb = NR + 5;
        let mut wide = vec![f64::NAN; (k - 1) * ldb + NR];
        for kk in 0..k {
            wide[kk * ldb..kk * ldb + NR].copy_from_slice(&b[kk * NR..(kk + 1) * NR]);
        }
        let run = |a: &[f64], (rs, cs), (b, ldb): (&[f64], usize)| {
            let mut c = vec![0.0; m * NR];
            multiply_block(
                &PackedRows::new(a, (m, k), (rs, cs)),
                (b, ldb),
                NR,
                None,
                &mut c,
                NR,
            );
            let single = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
            let mut c32 = vec![0.0f32; m * NR];
            let (a32, b32) = (single(a), single(b));
            multiply_block(
                &PackedRows::new(&a32, (m, k), (rs, cs)),
                (&b32, ldb),
                NR,
                None,
                &mut c32,
                NR,
            );
            (c, c32)
        };
        let want = run(&a, (k, 1), (&b, NR));
        assert_eq!(run(&at, (1, m), (&b, NR)), want);
        assert_eq!(run(&a, (k, 1), (&wide, ldb)), want);
    }

    /// The AVX2 kernel is tested on AVX-512 machines too (where `multiply_block` would pick
    /// the AVX-512 one): every panel height, full and partial blocks, against the loops.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_kernel_matches_the_reference_wherever_it_can_run() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            return;
        }
        for mr in [4, 5, 6, 8, 10, 12, 14] {
            for (m, k, n) in [(mr, 7, 16), (2 * mr + 3, 25, 9)] {
                let single = |v: Vec<f64>| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
                let (a, b, bias) = (values(m * k, 1), values(k * NR, 2), values(m, 3));
                let mut want = vec![0.0; m * NR];
                multiply_reference(&a, (m, k), &b, n, Some(&bias), &mut want, NR);
                let packed = PackedRows::with_mr(&single(a), (m, k), (k, 1), mr);
                let (b, bias) = (single(b), single(bias));
                let mut c = vec![f32::NAN; m * NR];
                let block =
                    x86::F32Block::of(&packed, (&b, Strided(NR)), Some(&bias), false, &mut c)
                        .expect("f32");
                // SAFETY: AVX2 and FMA were detected above; the shapes are those
                // `multiply_block` checks (k rows of NR in `b`, m rows of NR in `c`).
                unsafe { x86::block_avx2(block, n, NR) };
                for (i, (x, y)) in c.iter().zip(&want).enumerate() {
                    if i % NR < n {
                        assert!(
                            (*x as f64 - y).abs() <= 1e-4 * (1.0 + y.abs()),
                            "mr {mr}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }
}
