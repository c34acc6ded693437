//! Elementwise maps over slices, split across the rayon pool for large inputs, and
//! vectors built chunk by chunk by the threads that fill them.
//!
//! Every function here is elementwise, so its result is the same on any thread count; the
//! reference each is tested against is the plain serial loop.

use super::Element;

/// Elements from which elementwise maps are split across threads: below it, handing the
/// work to rayon costs more than the loop.
pub const PARALLEL_ELEMENTS: usize = 1 << 16;

/// A vector of `len` elements built in parallel, chunk by chunk: `f(i, chunk)` fills chunk
/// `i` (`chunk` elements, the last one shorter), which it receives zeroed, and its results
/// are returned in chunk order. The thread that fills a chunk zeroes it just before, so
/// in cache; `vec![0; len]` zeroed every conv output up front on one thread (a serial
/// memset, 3–4% of a cifar-cnn step).
pub fn par_chunks_zeroed<T: Element, R: Send>(
    len: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [T]) -> R + Sync + Send,
) -> (Vec<T>, Vec<R>) {
    use rayon::prelude::*;
    use std::mem::MaybeUninit;
    let mut out: Vec<T> = crate::memory::take(len);
    let results = out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .map(|(i, piece)| {
            piece.fill(MaybeUninit::new(T::zero()));
            // SAFETY: every element of `piece` was initialised just above, and
            // `MaybeUninit<T>` has the size, alignment and layout of `T`.
            let piece = unsafe { &mut *(piece as *mut [MaybeUninit<T>] as *mut [T]) };
            f(i, piece)
        })
        .collect();
    // SAFETY: the chunks cover the first `len` elements of the capacity, and each was
    // initialised by the task that received it (a panic in `f` propagates before this).
    unsafe { out.set_len(len) };
    (out, results)
}

/// As [`par_chunks_zeroed`], for an `f` that writes every element of its chunk: the chunks
/// hold whatever a reused buffer held ([`crate::memory::take_stale`]) and are not zeroed
/// first (the zeroing was 5% of a resnet20 inference, its convolutions overwriting it).
pub fn par_chunks_overwritten<T: Element, R: Send>(
    len: usize,
    chunk: usize,
    f: impl Fn(usize, &mut [T]) -> R + Sync + Send,
) -> (Vec<T>, Vec<R>) {
    use rayon::prelude::*;
    let mut out: Vec<T> = crate::memory::take_stale(len);
    let results = out
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .map(|(i, piece)| f(i, piece))
        .collect();
    (out, results)
}

/// `f` of every element of `a`, on the rayon pool in pieces of [`PARALLEL_ELEMENTS`] for
/// large inputs (elementwise, so the same on any thread count). Each piece is one plain
/// slice loop, compiled for AVX2 where the CPU has it; rayon's collecting iterator wrote
/// element by element, which kept the loop from vectorising (two floats per SSE operation:
/// resnet20's joins and gradient sums took 8% of its training step).
pub fn map_elements<T: Element>(a: &[T], f: impl Fn(T) -> T + Sync + Send) -> Vec<T> {
    let g = |x, _| f(x);
    zip_elements(a, a, g)
}

/// `f` of every pair of elements of `a` and `b` (equal lengths), as [`map_elements`].
pub fn zip_elements<T: Element>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync + Send) -> Vec<T> {
    assert_eq!(
        a.len(),
        b.len(),
        "zip_elements over slices of different lengths"
    );
    if a.len() < 2 * PARALLEL_ELEMENTS {
        let mut out = crate::memory::take_stale(a.len());
        zip_slice(a, b, &mut out, &f);
        return out;
    }
    let (out, _) = par_chunks_overwritten(a.len(), PARALLEL_ELEMENTS, |i, out| {
        let at = i * PARALLEL_ELEMENTS..i * PARALLEL_ELEMENTS + out.len();
        zip_slice(&a[at.clone()], &b[at], out, &f)
    });
    out
}

/// `acc[i] = f(acc[i], b[i])` in place (equal lengths): gradient sums without a new
/// buffer, split as [`zip_elements`].
pub fn zip_in_place<T: Element>(acc: &mut [T], b: &[T], f: impl Fn(T, T) -> T + Sync + Send) {
    use rayon::prelude::*;
    assert_eq!(
        acc.len(),
        b.len(),
        "zip_in_place over slices of different lengths"
    );
    let update = |acc: &mut [T], b: &[T]| in_place_slice(acc, b, &f);
    if acc.len() < 2 * PARALLEL_ELEMENTS {
        return update(acc, b);
    }
    acc.par_chunks_mut(PARALLEL_ELEMENTS)
        .zip(b.par_chunks(PARALLEL_ELEMENTS))
        .for_each(|(acc, b)| update(acc, b));
}

/// `out[i] = f(a[i], b[i])` over one piece, compiled for AVX2 where the CPU has it (the
/// crate targets baseline x86-64; same operations in the same order, so bitwise the same
/// results either way).
#[inline]
fn zip_slice<T: Element>(a: &[T], b: &[T], out: &mut [T], f: &impl Fn(T, T) -> T) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { zip_slice_avx2(a, b, out, f) };
    }
    zip_slice_body(a, b, out, f)
}

/// [`zip_slice`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn zip_slice_avx2<T: Element>(a: &[T], b: &[T], out: &mut [T], f: &impl Fn(T, T) -> T) {
    zip_slice_body(a, b, out, f)
}

#[inline(always)]
fn zip_slice_body<T: Element>(a: &[T], b: &[T], out: &mut [T], f: &impl Fn(T, T) -> T) {
    let n = out.len();
    // Cut to one length, so the loop has no bounds checks and vectorises.
    let (a, b) = (&a[..n], &b[..n]);
    for i in 0..n {
        out[i] = f(a[i], b[i]);
    }
}

/// `acc[i] = f(acc[i], b[i])` over one piece, AVX2-compiled as [`zip_slice`].
#[inline]
fn in_place_slice<T: Element>(acc: &mut [T], b: &[T], f: &impl Fn(T, T) -> T) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { in_place_slice_avx2(acc, b, f) };
    }
    in_place_slice_body(acc, b, f)
}

/// [`in_place_slice`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn in_place_slice_avx2<T: Element>(acc: &mut [T], b: &[T], f: &impl Fn(T, T) -> T) {
    in_place_slice_body(acc, b, f)
}

#[inline(always)]
fn in_place_slice_body<T: Element>(acc: &mut [T], b: &[T], f: &impl Fn(T, T) -> T) {
    let n = acc.len();
    let b = &b[..n];
    for i in 0..n {
        acc[i] = f(acc[i], b[i]);
    }
}

/// `dst.copy_from_slice(src)` (equal lengths) for short rows, in copies of 8 and then of
/// single elements whose sizes the compiler knows: `copy_from_slice` makes a `memmove`
/// call per row, and an 8-pixel row of LeNet's conv2 in im2col cost a call each (10% of
/// the layer's backward; its dW alone went from 4.5 to 4.3 ms at batch 64, 1 thread).
#[inline(always)]
pub fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    assert_eq!(
        dst.len(),
        src.len(),
        "copy_short between slices of different lengths"
    );
    let mut to = dst.chunks_exact_mut(8);
    let mut from = src.chunks_exact(8);
    for (d, s) in (&mut to).zip(&mut from) {
        let s: [T; 8] = std::array::from_fn(|i| s[i]);
        d.copy_from_slice(&s);
    }
    for (d, &s) in to.into_remainder().iter_mut().zip(from.remainder()) {
        *d = s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_copies_equal_copy_from_slice() {
        // Whole chunks of 8, remainders, and both.
        for len in 0..40 {
            let src: Vec<f32> = (0..len).map(|i| i as f32 + 0.5).collect();
            let mut dst = vec![-1.0f32; len + 3];
            copy_short(&mut dst[..len], &src);
            assert_eq!(dst[..len], src[..], "length {len}");
            assert!(dst[len..].iter().all(|&v| v == -1.0), "past length {len}");
        }
    }

    #[test]
    fn zeroed_chunks_cover_the_vector_in_order() {
        for threads in [1, 2, 3] {
            let (v, firsts) = crate::train::with_threads(Some(threads), || {
                par_chunks_zeroed::<f64, _>(10, 4, |i, chunk| {
                    // Each chunk arrives zeroed; the last is the ragged remainder.
                    assert!(chunk.iter().all(|&x| x == 0.0));
                    assert_eq!(chunk.len(), if i == 2 { 2 } else { 4 });
                    for (j, x) in chunk.iter_mut().enumerate() {
                        *x = (4 * i + j) as f64;
                    }
                    4 * i
                })
            })
            .unwrap();
            assert_eq!(v, (0..10).map(f64::from).collect::<Vec<_>>());
            assert_eq!(firsts, [0, 4, 8]);
        }
        let (empty, none) = par_chunks_zeroed::<f32, ()>(0, 0, |_, _| unreachable!());
        assert!(empty.is_empty() && none.is_empty());
    }

    #[test]
    fn parallel_maps_equal_the_serial_loop_on_any_thread_count() {
        // Long enough to split; odd so the last piece is ragged.
        let a: Vec<f32> = (0..5 * PARALLEL_ELEMENTS + 3)
            .map(|i| (i as f32).sin())
            .collect();
        let b: Vec<f32> = a.iter().map(|x| x.cos()).collect();
        let want_map: Vec<f32> = a.iter().map(|&x| x.max(0.0) * 3.0).collect();
        let want_zip: Vec<f32> = a.iter().zip(&b).map(|(&x, &y)| x * y - y).collect();
        for threads in [1, 2, 3] {
            let (map, zip, in_place) = crate::train::with_threads(Some(threads), || {
                let mut in_place = a.clone();
                zip_in_place(&mut in_place, &b, |x, y| x * y - y);
                (
                    map_elements(&a, |x| x.max(0.0) * 3.0),
                    zip_elements(&a, &b, |x, y| x * y - y),
                    in_place,
                )
            })
            .unwrap();
            assert!(map == want_map && zip == want_zip, "{threads} threads");
            assert!(in_place == want_zip, "in place, {threads} threads");
        }
    }
}
