//! Data-parallel training across processes: what a communicator must provide
//! ([`Collective`]), the single-process one ([`Local`]), and (with the `mpi` feature)
//! the MPI one in `train/mpi.rs`.
//!
//! Every rank draws the same seeded global batch, trains on its own contiguous shard of
//! it, and the ranks sum their gradients — each scaled by its share of the batch — with
//! one all-reduce over one flat buffer per step, so every rank applies the same update.

use crate::autograd::Gradients;
use crate::nn::Module;

/// The collective operations data-parallel training uses. Every method is collective:
/// all ranks call it, in the same order, or the job hangs — which is why training code
/// decides what to do on an error only after agreeing on it with [`Collective::any`].
pub trait Collective: Send + Sync {
    /// This process's rank, from 0.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Element-wise sum over all ranks, in place.
    fn all_reduce_sum(&self, buf: &mut [f64]);
    /// Element-wise sum over all ranks, in place, in f32 (gradients: half the bytes).
    fn all_reduce_sum_f32(&self, buf: &mut [f32]);
    /// Rank 0's bytes, on every rank.
    fn broadcast(&self, bytes: &mut Vec<u8>);
    /// Every rank's `local` values, concatenated in rank order, on every rank.
    fn all_gather(&self, local: &[f64]) -> Vec<f64>;

    /// Whether `flag` holds on any rank.
    fn any(&self, flag: bool) -> bool {
        let mut v = [f64::from(u8::from(flag))];
        self.all_reduce_sum(&mut v);
        v[0] > 0.0
    }

    /// Whether this is rank 0, which alone writes files and reports progress.
    fn is_root(&self) -> bool {
        self.rank() == 0
    }
}

/// One process: every collective is the identity.
#[derive(Clone, Copy, Debug, Default)]
pub struct Local;

impl Collective for Local {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _buf: &mut [f64]) {}
    fn all_reduce_sum_f32(&self, _buf: &mut [f32]) {}
    fn broadcast(&self, _bytes: &mut Vec<u8>) {}
    fn all_gather(&self, local: &[f64]) -> Vec<f64> {
        local.to_vec()
    }
}

/// Rows `lo..lo + len` of a global batch of `n` that rank `rank` of `size` trains on:
/// contiguous, sizes differing by at most one.
pub fn shard(n: usize, rank: usize, size: usize) -> (usize, usize) {
    let (base, extra) = (n / size, n % size);
    let lo = rank * base + rank.min(extra);
    (lo, base + usize::from(rank < extra))
}

/// Replaces every parameter's gradient with the sum over ranks of `weight ×` its
/// gradient (zero for a parameter without one), through one all-reduce of one flat
/// buffer in parameter order.
pub fn all_reduce_gradients(
    comm: &dyn Collective,
    model: &dyn Module<f32>,
    grads: &mut Gradients<f32>,
    weight: f64,
) -> crate::error::Result<()> {
    let params = model.parameters();
    let total: usize = params.iter().map(|(_, p)| p.numel()).sum();
    let mut flat: Vec<f32> = Vec::with_capacity(total);
    let weight = weight as f32;
    for (_, p) in &params {
        match grads.get(p) {
            Some(g) => flat.extend(g.values().iter().map(|&v| weight * v)),
            None => flat.resize(flat.len() + p.numel(), 0.0),
        }
    }
    comm.all_reduce_sum_f32(&mut flat);
    let mut at = 0;
    for (_, p) in &params {
        let n = p.numel();
        grads.set(
            p,
            crate::Tensor::from_vec(flat[at..at + n].to_vec(), p.shape())?,
        );
        at += n;
    }
    Ok(())
}

/// `result` if every rank succeeded; otherwise an error on every rank.
pub fn agree_on<T>(
    comm: &dyn Collective,
    result: Result<T, crate::train::TrainError>,
) -> Result<T, crate::train::TrainError> {
    if comm.size() == 1 {
        return result;
    }
    if comm.any(result.is_err()) {
        result?;
        return Err(crate::train::TrainError::Invalid(
            "another rank failed; see its error".into(),
        ));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_once() {
        for (n, size) in [(64, 2), (65, 2), (7, 3), (1, 2), (0, 3)] {
            let mut next = 0;
            for rank in 0..size {
                let (lo, len) = shard(n, rank, size);
                assert_eq!(lo, next);
                next += len;
            }
            assert_eq!(next, n);
        }
    }
}
