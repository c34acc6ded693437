//! Memory reuse for training: the framework's own cache of freed tensor buffers.
//!
//! A training step allocates the same large buffers every time (activations, their
//! gradients, batch-norm statistics: 16.8 MB for one `cifar-cnn` activation at batch 128).
//! glibc serves blocks above its mmap threshold (128 KiB to start) with fresh `mmap`s and
//! returns them to the kernel on free, and unmaps a per-thread arena's 64 MiB sub-heap as
//! soon as it is wholly free, so left alone every step page-faults and zero-fills all of
//! them again (387,000 page faults in 3 s of `cifar-cnn` at 1 thread). Earlier versions
//! asked the program to change glibc's policy process-wide (`mallopt`: no mmap below
//! 32 MiB, no trimming, one arena), which the command line did and a library user did not
//! know to do: a plain library program ran 20% slower. Now the framework keeps what it
//! frees ([`pool`]): a tensor whose storage is released gives its buffer back, and the
//! next op of that size takes it, on any allocator, with no set-up.
//!
//! Ops allocate their outputs with [`take`] (to be filled), [`take_stale`] (to be
//! overwritten) or [`take_zeroed`] (to be accumulated into); storage comes back by itself when the last tensor or op record
//! holding it is dropped.

pub mod pool;

pub use pool::{pool_stats, set_pool_budget, PoolStats, DEFAULT_POOL_BUDGET, MIN_POOLED_BYTES};

use crate::kernels::Element;

/// An empty vector with room for `len` elements, reusing an idle tensor buffer of that
/// size class when there is one ([`pool`]). For outputs that are filled by pushing,
/// extending or `collect_into_vec`.
pub fn take<T: Element>(len: usize) -> Vec<T> {
    T::buffer_pool().take(len)
}

/// A vector of `len` elements with unspecified values (a reused buffer's old contents,
/// zeros past them): for outputs whose every element is written, which need not be
/// zeroed first.
pub fn take_stale<T: Element>(len: usize) -> Vec<T> {
    T::buffer_pool().take_stale(len, T::zero())
}

/// [`take`], filled with `len` zeros: for outputs that are accumulated into.
pub fn take_zeroed<T: Element>(len: usize) -> Vec<T> {
    let mut v = take(len);
    v.resize(len, T::zero());
    v
}

/// Gives a buffer back for reuse (a tensor's storage comes back by itself when the tensor
/// is dropped); small buffers, and any beyond the budget, are freed.
pub fn give<T: Element>(v: Vec<T>) {
    T::buffer_pool().give(v)
}

/// A buffer an op's record shares with the tensor it computed (a saved output):
/// whichever of the two lets go last gives it back for reuse.
pub struct SharedBuffer<T: Element>(Option<std::sync::Arc<Vec<T>>>);

impl<T: Element> SharedBuffer<T> {
    /// Shares `data` (its other holder is a tensor's storage, or nobody).
    pub(crate) fn new(data: &std::sync::Arc<Vec<T>>) -> Self {
        SharedBuffer(Some(std::sync::Arc::clone(data)))
    }
}

impl<T: Element> std::ops::Deref for SharedBuffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl<T: Element> Drop for SharedBuffer<T> {
    fn drop(&mut self) {
        if let Some(Ok(data)) = self.0.take().map(std::sync::Arc::try_unwrap) {
            give(data);
        }
    }
}

/// Frees every idle buffer the framework keeps (say, between a training run and another
/// phase of the program); returns the bytes freed.
pub fn release_pooled() -> usize {
    f32::buffer_pool().clear() + f64::buffer_pool().clear()
}
