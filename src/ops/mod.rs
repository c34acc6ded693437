//! The differentiable operations, as methods on [`Tensor`](crate::Tensor).
//!
//! Primitives record an [`Op`](crate::autograd::Op) whose derivative rule lives in
//! `autograd/backward.rs`; composites (mean, logsumexp, softmax, …) are written in terms of
//! primitives and get their gradients for free.

pub mod batch_norm;
pub mod binary;
pub mod compare;
pub mod conv;
pub mod dropout;
pub mod gemm;
pub mod indexing;
pub mod matmul;
pub mod movement;
pub mod pool;
pub mod reduce;
pub mod softmax;
pub mod unary;
pub mod window;

/// Elements from which elementwise maps are split across threads: below it, handing the
/// work to rayon costs more than the loop.
const PARALLEL_ELEMENTS: usize = 1 << 16;

/// `f` of every element of `a`, on the rayon pool in pieces of at least
/// [`PARALLEL_ELEMENTS`] for large inputs (elementwise, so the same on any thread count).
pub(crate) fn map_elements<T: crate::Element>(a: &[T], f: impl Fn(T) -> T + Sync + Send) -> Vec<T> {
    use rayon::prelude::*;
    if a.len() < 2 * PARALLEL_ELEMENTS {
        return a.iter().map(|&x| f(x)).collect();
    }
    let mut out = Vec::with_capacity(a.len());
    a.par_iter()
        .with_min_len(PARALLEL_ELEMENTS)
        .map(|&x| f(x))
        .collect_into_vec(&mut out);
    out
}

/// `f` of every pair of elements of `a` and `b` (equal lengths), as [`map_elements`].
pub(crate) fn zip_elements<T: crate::Element>(
    a: &[T],
    b: &[T],
    f: impl Fn(T, T) -> T + Sync + Send,
) -> Vec<T> {
    use rayon::prelude::*;
    if a.len() < 2 * PARALLEL_ELEMENTS {
        return a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    }
    let mut out = Vec::with_capacity(a.len());
    a.par_iter()
        .zip(b.par_iter())
        .with_min_len(PARALLEL_ELEMENTS)
        .map(|(&x, &y)| f(x, y))
        .collect_into_vec(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let (map, zip) = crate::train::with_threads(Some(threads), || {
                (
                    map_elements(&a, |x| x.max(0.0) * 3.0),
                    zip_elements(&a, &b, |x, y| x * y - y),
                )
            })
            .unwrap();
            assert!(map == want_map && zip == want_zip, "{threads} threads");
        }
    }
}
