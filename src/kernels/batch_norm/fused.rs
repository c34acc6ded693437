//! Batch normalisation's training passes in one walk each: per block of channels, the
//! statistics (forward) or the sums (backward), then the elementwise map of the same
//! block while it is still in L2. Separate walks read the activations from memory twice:
//! resnet20's batch norm backward went from 36.5–39.9 to 29.9–35.3 ms per step (1
//! thread, 3 alternating pairs). Each result is bitwise what the separate walks give
//! ([`super::normalise`], [`super::gated_sums`], [`super::input_grad`]), tested.

use super::{at_element, block_mean_var, block_sums, blocks, expand, gated, inv_std};
use super::{map_slice, repeat_each, Act, ChannelAffine, Element, Planes};
use rayon::prelude::*;

/// Training mode's forward pass in one walk: per block of channels, the batch mean and
/// biased variance (as [`channel_mean_var`](super::channel_mean_var)), then
/// `y = act(γx̂ + β)` with [`inv_std`] (bitwise as
/// [`normalise`](super::normalise)), while the block is still in L2. Returns `y` and
/// `(mean, variance)` per channel.
pub fn normalise_batch<A: Act, T: Element>(
    x: &[T],
    (gamma, beta, eps): (&[T], &[T], T),
    dims: Planes,
) -> (Vec<T>, Vec<(T, T)>) {
    let mut y: Vec<T> = crate::memory::take_stale(x.len());
    let out = BlockOutput(y.as_mut_ptr(), y.len());
    let stats = blocks(dims)
        .into_par_iter()
        .flat_map_iter(|(c0, c1)| {
            let stats = block_mean_var(x, dims, (c0, c1));
            let (mean, inv_std): (Vec<T>, Vec<T>) =
                stats.iter().map(|&(m, v)| (m, inv_std(v, eps))).unzip();
            let e = [&mean[..], &inv_std, &gamma[c0..c1], &beta[c0..c1]]
                .map(|p| repeat_each(p, dims.hw));
            map_block(x, x, dims, (c0, c1), &e, &out, &|v, _, [m, s, g, b]| {
                A::apply(g * ((v - m) * s) + b)
            });
            stats
        })
        .collect();
    (y, stats)
}

/// Training mode's backward pass in one walk: per block of channels, the sums of
/// [`gated_sums`](super::gated_sums), then (with `input_grad`) dX bitwise as
/// [`input_grad`](super::input_grad) computes it, while the block's dY and x are still in
/// L2. Returns dX (if asked for) and the sums.
pub fn backward_batch<A: Act, T: Element>(
    dy: &[T],
    x: &[T],
    p: &ChannelAffine<T>,
    dims: Planes,
    input_grad: bool,
) -> (Option<Vec<T>>, Vec<(T, T)>) {
    let count = T::from_f64((dy.len() / dims.c.max(1)) as f64);
    let mut dx: Vec<T> = if input_grad {
        crate::memory::take_stale(dy.len())
    } else {
        Vec::new()
    };
    let out = BlockOutput(dx.as_mut_ptr(), dx.len());
    let sums = blocks(dims)
        .into_par_iter()
        .flat_map_iter(|(c0, c1)| {
            let params = [p.mean, p.inv_std, p.gamma, p.beta];
            let e = expand(&params, c0, c1, dims.hw);
            let sums = block_sums(dy, x, dims, (c0, c1), &e, &gated::<A, T>);
            if input_grad {
                let [m, is, ga, be] = e;
                let mdy: Vec<T> = sums.iter().map(|s| s.0 / count).collect();
                let mdyx: Vec<T> = sums.iter().map(|s| s.1 / count).collect();
                let (mdy, mdyx) = (repeat_each(&mdy, dims.hw), repeat_each(&mdyx, dims.hw));
                let e = [m, is, ga, be, mdy, mdyx];
                map_block(
                    dy,
                    x,
                    dims,
                    (c0, c1),
                    &e,
                    &out,
                    &|g, v, [m, is, ga, be, mdy, mdyx]| {
                        let xh = (v - m) * is;
                        let g = A::gate(g, ga * xh + be);
                        (ga * is) * (g - mdy - xh * mdyx)
                    },
                );
            }
            sums
        })
        .collect();
    (input_grad.then_some(dx), sums)
}

/// An output the blocks of one walk write in parallel, each only its own channels.
struct BlockOutput<T>(*mut T, usize);

// SAFETY: the blocks of a walk write disjoint elements (their channels of each image);
// nothing reads the output until the walk has ended.
unsafe impl<T: Send> Sync for BlockOutput<T> {}

/// `out = f(a, b, e)` on the slabs of channels `c0..c1` of every image, `e` the block's
/// parameters repeated per element (as `expand` makes them).
fn map_block<const K: usize, T: Element>(
    a: &[T],
    b: &[T],
    dims: Planes,
    (c0, c1): (usize, usize),
    e: &[Vec<T>; K],
    out: &BlockOutput<T>,
    f: &(impl Fn(T, T, [T; K]) -> T + Sync),
) {
    let (hw, image) = (dims.hw, dims.image());
    let e: [&[T]; K] = std::array::from_fn(|k| &e[k][..]);
    let g = at_element(f);
    for img in 0..a.len() / image.max(1) {
        let at = img * image + c0 * hw..img * image + c1 * hw;
        assert!(
            at.end <= out.1 && at.end <= a.len().min(b.len()),
            "block outside the data"
        );
        // SAFETY: `at` is in bounds (checked above) and holds channels c0..c1 of this
        // image, which no other block of the walk writes or reads through `out`.
        let slab = unsafe { std::slice::from_raw_parts_mut(out.0.add(at.start), at.len()) };
        map_slice(&a[at.clone()], &b[at], slab, &e, &g);
    }
}
