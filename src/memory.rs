//! The process's allocator policy for training: keep freed blocks for reuse.
//!
//! A training step allocates the same large buffers every time (activations, their
//! gradients, column workspaces: 16.8 MB for one `cifar-cnn` activation at batch 128).
//! glibc serves blocks above its mmap threshold (128 KiB to start) with fresh `mmap`s and
//! returns them to the kernel on free, so every step page-faults and zero-fills all of
//! them again: measured here, a LeNet step at 2 threads ran at 5,300 images/s that way and
//! 8,400 with freed memory kept (cifar-cnn, 1 thread: 550 → 630). Raising the mmap
//! threshold to its maximum (32 MiB on 64-bit) and the trim threshold keeps those blocks in
//! the heap, where the next step reuses them.
//!
//! The trim threshold governs only the main heap. Rayon's worker threads allocate from
//! glibc's per-thread arenas, whose 64 MiB sub-heaps are unmapped as soon as one is wholly
//! free, whatever the thresholds: with the Winograd convolutions' buffer sizes that
//! happened every `cifar-cnn` step (387,000 page faults in 3 s at 1 thread, ReLU forward
//! 2.9 → 15 ms). One arena (`M_ARENA_MAX` = 1) keeps every block in the main heap:
//! 34,000 faults, 702 → 872 images/s (1 thread) and 1,077 → 1,419 (2 threads). The
//! allocations a step makes are few and large, so sharing one arena costs no contention
//! that shows.

/// Keeps freed blocks up to 32 MiB in the heap for reuse instead of returning them to the
/// kernel, with every thread allocating from the main heap (glibc on Linux; elsewhere it
/// does nothing and returns `false`). Call it once at the start of a training process,
/// before the thread pool exists; it changes the whole process's allocator.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's largest allowed mmap threshold on 64-bit: 4 MiB · sizeof(long).
        const MMAP_THRESHOLD_MAX: libc::c_int = 32 << 20;
        // SAFETY: mallopt only changes allocator parameters; both values are in the range
        // glibc documents, and it is called before the buffers it concerns exist.
        let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) };
        // SAFETY: as above.
        let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) };
        // SAFETY: as above; threads created later share the main arena.
        let arenas = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        mmap == 1 && trim == 1 && arenas == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn applies_on_glibc_and_can_be_repeated() {
        let first = super::retain_freed_memory();
        assert_eq!(first, super::retain_freed_memory());
        assert_eq!(first, cfg!(all(target_os = "linux", target_env = "gnu")));
        // Large blocks still allocate and free normally afterwards.
        let v = vec![1u8; 40 << 20];
        assert_eq!(v.iter().map(|&b| b as usize).sum::<usize>(), 40 << 20);
    }
}
