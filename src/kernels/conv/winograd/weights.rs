//! The weight transforms: `U = G g Gᵀ` before the products, `dW = Gᵀ W̃ G` after them.

use super::POSITIONS;
use crate::kernels::Element;

/// How each transformed position's `o × c` weight matrix is stored. The drivers take
/// [`WeightLayout::ByOutput`] and pack `U[ξ]` (forward) or `U[ξ]ᵀ` (dX) for the
/// micro-kernel from it, once per call; `ByInput` was the forward's layout while
/// matrixmultiply packed `U[ξ]` for every product, and is kept for callers of
/// [`transform_weights`].
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
/// transformed gradient `wt` summed over the batch ([`super::WinogradBackward`]).
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
