//! The [`Collective`] of an MPI job (Open MPI through rsmpi; the `mpi` feature).

use super::collective::Collective;
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Count;

/// The world communicator of an MPI job, initialised for calls from one thread at a time
/// (training runs on a worker of its thread pool, not on the thread that started MPI).
pub struct MpiWorld {
    // Dropped last: finalises MPI.
    world: SimpleCommunicator,
    _universe: mpi::environment::Universe,
}

// SAFETY: MPI is initialised with MPI_THREAD_SERIALIZED (checked in `init`), which allows
// calls from any thread as long as no two are concurrent; training makes every call from
// one thread at a time (the caller blocks while the pool runs), so sharing is sound.
unsafe impl Send for MpiWorld {}
// SAFETY: as above — `&MpiWorld` is only used by one thread at a time.
unsafe impl Sync for MpiWorld {}

impl MpiWorld {
    /// Initialises MPI; `None` when it cannot be (already initialised, or no serialized
    /// thread support).
    pub fn init() -> Option<Self> {
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Serialized)?;
        if threading < mpi::Threading::Serialized {
            return None;
        }
        Some(MpiWorld {
            world: universe.world(),
            _universe: universe,
        })
    }

    /// Ends every rank of the job at once (a failure no rank can recover from).
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_sum(&self, buf: &mut [f64]) {
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
    }

    fn all_reduce_sum_f32(&self, buf: &mut [f32]) {
        let send = buf.to_vec();
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
    }

    fn broadcast(&self, bytes: &mut Vec<u8>) {
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        root.broadcast_into(&mut bytes[..]);
    }

    fn all_gather(&self, local: &[f64]) -> Vec<f64> {
        let size = self.size();
        let mut counts = vec![0 as Count; size];
        self.world
            .all_gather_into(&(local.len() as Count), &mut counts[..]);
        let displs: Vec<Count> = counts
            .iter()
            .scan(0, |acc, &c| {
                let at = *acc;
                *acc += c;
                Some(at)
            })
            .collect();
        let total: Count = counts.iter().sum();
        let mut out = vec![0.0; total as usize];
        {
            let mut partition = PartitionMut::new(&mut out[..], counts, &displs[..]);
            self.world.all_gather_varcount_into(local, &mut partition);
        }
        out
    }
}
