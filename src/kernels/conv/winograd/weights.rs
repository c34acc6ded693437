//! The weight transforms: `U = G g Gᵀ` before the products, `dW = Gᵀ W̃ G` after them.

use super::reference::G4;
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

/// F(4×4)'s weight transform: `U[ξ][oc][ci] = (G g Gᵀ)[ξ]` (its `G`, 36 positions, `U[ξ]` at `ξ·o·c`) for every
/// 3×3 kernel `g` of the `o × c × 3 × 3` weights `w`, computed in f64 and rounded once.
/// [`transform_kernels_f4`] does it for 8 kernels at a time, vectorised across them: one
/// kernel at a time ([`sandwich`](super::reference::sandwich), the reference) was 2.5% of
/// a resnet20 inference.
pub(super) fn transform_weights_f4<T: Element>(w: &[T], o: usize, c: usize) -> Vec<T> {
    const L: usize = 8;
    let kernels = o * c;
    let mut u = vec![T::zero(); 36 * kernels];
    for first in (0..kernels).step_by(L) {
        let n = L.min(kernels - first);
        let mut taps = [[[0.0; L]; 3]; 3];
        for (l, k) in w[9 * first..9 * (first + n)].chunks_exact(9).enumerate() {
            for (t, v) in k.iter().enumerate() {
                taps[t / 3][t % 3][l] = v.as_f64();
            }
        }
        for (xi, lanes) in transform_kernels_f4(&taps).iter().flatten().enumerate() {
            for (to, v) in u[xi * kernels + first..][..n].iter_mut().zip(lanes) {
                *to = T::from_f64(*v);
            }
        }
    }
    u
}

/// `G g Gᵀ` for `L` kernels at once (`g[i][j][l]`: tap `(i, j)` of kernel `l`), each sum
/// in [`sandwich`](super::reference::sandwich)'s order, so bitwise its result.
#[inline(always)]
fn transform_kernels_f4<const L: usize>(g: &[[[f64; L]; 3]; 3]) -> [[[f64; L]; 6]; 6] {
    let mut gg = [[[0.0; L]; 3]; 6];
    for (a, row) in gg.iter_mut().enumerate() {
        for (j, out) in row.iter_mut().enumerate() {
            for l in 0..L {
                out[l] = G4[a][0] * g[0][j][l] + G4[a][1] * g[1][j][l] + G4[a][2] * g[2][j][l];
            }
        }
    }
    let mut t = [[[0.0; L]; 6]; 6];
    for (a, row) in t.iter_mut().enumerate() {
        for (b, out) in row.iter_mut().enumerate() {
            for l in 0..L {
                out[l] = gg[a][0][l] * G4[b][0] + gg[a][1][l] * G4[b][1] + gg[a][2][l] * G4[b][2];
            }
        }
    }
    t
}
