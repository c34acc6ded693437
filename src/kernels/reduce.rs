//! Sums over slices in interleaved partial sums.
//!
//! A plain `for v in a { s += f(v) }` over floats is one dependent add per element: the
//! compiler may not reorder float additions, so it cannot vectorise the loop, and each add
//! waits for the previous one (about 4 cycles). Summing into [`LANES`] independent partial
//! sums, element `i` into lane `i mod LANES`, and adding the lanes at the end lets the
//! loop run as a few vector adds per cycle. The order is fixed by the data alone, so the
//! result is the same on any thread count; it differs from the serial loop's only by
//! rounding (and is usually closer to the exact sum: each lane adds `len / LANES` terms).
//!
//! The serial loops beside each ([`sum_by_reference`], [`sum2_by_reference`]) are what the
//! fast paths compute up to that rounding, and what the tests compare them against.

use super::Element;

/// Partial sums per reduction: four 8-wide (AVX) or two 16-wide (AVX-512) f32 vectors, so
/// that consecutive vector adds do not wait on each other.
pub const LANES: usize = 32;

/// `Σ f(v)` over `a`, in [`LANES`] interleaved partial sums.
#[inline]
pub fn sum_by<T: Element>(a: &[T], f: impl Fn(T) -> T) -> T {
    let mut lanes = [T::zero(); LANES];
    let chunks = a.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    let mut s = fold_lanes(&lanes);
    for &v in rest {
        s += f(v);
    }
    s
}

/// `Σ a`, in [`LANES`] interleaved partial sums.
#[inline]
pub fn sum<T: Element>(a: &[T]) -> T {
    sum_by(a, |v| v)
}

/// `(Σ f(a_i, b_i).0, Σ f(a_i, b_i).1)` over two slices of equal length, in [`LANES`]
/// interleaved partial sums each: two sums in one pass over the data.
#[inline]
pub fn sum2_by<T: Element>(a: &[T], b: &[T], f: impl Fn(T, T) -> (T, T)) -> (T, T) {
    assert_eq!(a.len(), b.len(), "sum2_by over slices of different lengths");
    let mut first = [T::zero(); LANES];
    let mut second = [T::zero(); LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for i in 0..LANES {
            let (u, v) = f(xa[i], xb[i]);
            first[i] += u;
            second[i] += v;
        }
    }
    let (mut s, mut t) = (fold_lanes(&first), fold_lanes(&second));
    for (&x, &y) in ra.iter().zip(rb) {
        let (u, v) = f(x, y);
        s += u;
        t += v;
    }
    (s, t)
}

/// The lanes added pairwise (a fixed tree, so the same on every call).
#[inline]
fn fold_lanes<T: Element>(lanes: &[T; LANES]) -> T {
    let mut v = *lanes;
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            v[i] += v[i + width];
        }
    }
    v[0]
}

/// `Σ f(v)` in one serial chain: the readable version of [`sum_by`].
pub fn sum_by_reference<T: Element>(a: &[T], f: impl Fn(T) -> T) -> T {
    let mut s = T::zero();
    for &v in a {
        s += f(v);
    }
    s
}

/// Both sums of [`sum2_by`] in one serial chain each.
pub fn sum2_by_reference<T: Element>(a: &[T], b: &[T], f: impl Fn(T, T) -> (T, T)) -> (T, T) {
    let (mut s, mut t) = (T::zero(), T::zero());
    for (&x, &y) in a.iter().zip(b) {
        let (u, v) = f(x, y);
        s += u;
        t += v;
    }
    (s, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lengths around the lane count and its multiples, with a remainder and without.
    const LENGTHS: [usize; 9] = [0, 1, 7, 31, 32, 33, 64, 100, 1027];

    fn data(len: usize, seed: u64) -> Vec<f64> {
        // Deterministic values of mixed sign and magnitude.
        (0..len)
            .map(|i| (((i as u64 * 2654435761 + seed) % 1000) as f64 - 500.0) / 37.0)
            .collect()
    }

    #[test]
    fn lane_sums_equal_the_serial_sums() {
        for len in LENGTHS {
            let (a, b) = (data(len, 1), data(len, 2));
            let close = |x: f64, y: f64| (x - y).abs() <= 1e-9 * (1.0 + y.abs());
            let fast = sum_by(&a, |v| v * v - 1.0);
            assert!(
                close(fast, sum_by_reference(&a, |v| v * v - 1.0)),
                "len {len}"
            );
            assert!(close(sum(&a), a.iter().sum()), "len {len}");
            let pair = |x: f64, y: f64| (x + y, x * y);
            let (s, t) = sum2_by(&a, &b, pair);
            let (rs, rt) = sum2_by_reference(&a, &b, pair);
            assert!(
                close(s, rs) && close(t, rt),
                "len {len}: {s} {t} vs {rs} {rt}"
            );
        }
    }

    #[test]
    fn lane_sums_are_exact_on_integers_and_f32() {
        // Small integers are exact in every order, so the sums must agree exactly.
        let a: Vec<f32> = (0..1000).map(|i| (i % 17) as f32 - 8.0).collect();
        let exact: f32 = a.iter().sum();
        assert_eq!(sum(&a), exact);
        assert_eq!(sum_by(&a, |v| 2.0 * v), 2.0 * exact);
    }

    #[test]
    #[should_panic(expected = "different lengths")]
    fn sum2_by_refuses_slices_of_different_lengths() {
        sum2_by(&[1.0f32, 2.0], &[1.0], |x, y| (x, y));
    }
}
