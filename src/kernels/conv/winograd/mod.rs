//! Winograd F(2×2, 3×3) for 3×3 stride-1 convolutions: forward, dX and dW as 16 GEMMs
//! over transformed tiles, 2.25× fewer multiplications than im2col; and F(4×4, 3×3), 4×
//! fewer: [`f4`] (forward on maps whose rows of tiles fill the transforms' lanes),
//! [`f4_small`] (forward on narrower maps, tile-major) and the weight gradient (`f4_grad`);
//! its dX is the forward of the flipped kernels ([`WinogradBackward::new`]).
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

mod driver;
pub mod f4;
mod f4_grad;
#[cfg(target_arch = "x86_64")]
mod f4_same_x86;
pub mod f4_small;
#[cfg(target_arch = "x86_64")]
mod f4_x86;
pub mod reference;
mod rows;
mod tile_major;
mod weights;

pub use driver::{WinogradBackward, WinogradForward};
pub use f4::Winograd4Forward;
pub use f4_small::Winograd4SmallForward;
pub use weights::{finish_weight_grad, transform_weights, WeightLayout};

use crate::kernels::gemm::{gemm, MatMut, MatRef};
use crate::kernels::{Element, Geometry};

/// Transformed positions per tile (4×4).
pub(crate) const POSITIONS: usize = 16;

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
pub(crate) struct Tiles {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

impl Tiles {
    pub(crate) fn of(g: &Geometry) -> Self {
        Tiles {
            rows: g.oh.div_ceil(2),
            cols: g.ow.div_ceil(2),
        }
    }

    /// Width of a padded input row covering every tile's 4 columns.
    pub(crate) fn padded_width(&self) -> usize {
        2 * self.cols + 2
    }

    /// Height of the padded input plane covering every tile's 4 rows.
    pub(crate) fn padded_height(&self) -> usize {
        2 * self.rows + 2
    }

    /// Blocks of whole tile rows, about [`BLOCK_TILES`] tiles each: `(first, end)`.
    pub(crate) fn blocks(&self) -> impl Iterator<Item = (usize, usize)> {
        let per = (BLOCK_TILES / self.cols).max(1);
        let rows = self.rows;
        (0..rows)
            .step_by(per)
            .map(move |r| (r, (r + per).min(rows)))
    }

    /// Tiles in the largest block.
    pub(crate) fn block_capacity(&self) -> usize {
        (BLOCK_TILES / self.cols).max(1).min(self.rows) * self.cols
    }
}

/// Distance (elements) between the transformed positions' matrices of `len` elements
/// each in a block's workspace. The 16 matrices are written as 16 concurrent streams;
/// at a multiple of 4 KiB apart they would all fall into the same L1 sets (and alias for
/// store-to-load forwarding), so the stride is padded by one cache line.
pub(crate) fn position_stride(len: usize) -> usize {
    const LINE: usize = 16;
    let stride = len.div_ceil(LINE) * LINE;
    if stride.is_multiple_of(1024) {
        stride + LINE
    } else {
        stride
    }
}

/// `W̃[ξ] (o × c) += Ũ[ξ] (o × nt) · V[ξ] (nt × c)` for every position ξ < `positions`,
/// both operands stored tile-major (`Ũ[ξ]` at `ξ·u_stride` in `u`, `V[ξ]` at `ξ·v_stride`
/// in `v`) and `W̃[ξ]` at `ξ·o·c` in `wt`: the weight-gradient products of F(2×2) and
/// F(4×4).
pub(crate) fn add_weight_grad_products<T: Element>(
    positions: usize,
    (u, u_stride): (&[T], usize),
    (v, v_stride): (&[T], usize),
    (o, nt, c): (usize, usize, usize),
    wt: &mut [T],
) {
    for xi in 0..positions {
        gemm(
            MatRef::new(u, xi * u_stride, (o, nt), (1, o)),
            MatRef::new(v, xi * v_stride, (nt, c), (c, 1)),
            T::one(),
            MatMut::new(&mut wt[xi * o * c..], (o, c), c),
        );
    }
}

/// Elements of a transformed weight gradient.
pub fn weight_grad_len(o: usize, c: usize) -> usize {
    POSITIONS * o * c
}

/// Deterministic test values in [−2.8, 2.9): `n` of them from `seed`.
#[cfg(test)]
fn test_values(n: usize, seed: usize) -> Vec<f64> {
    (0..n)
        .map(|i| (((i + seed) * 7919) % 211) as f64 / 37.0 - 2.8)
        .collect()
}
