//! Batch normalisation's passes over NCHW data: per-channel statistics, the normalising
//! map, and the backward's sums and input gradient.
//!
//! **Statistics by slabs.** A channel's values are `N` planes of `hw` elements, `c·hw`
//! apart. Summing each plane in turn ([`channel_sums_reference`], the readable version)
//! vectorises only within a plane: mobilenet-v2's last blocks have 4×4, 2×2 and 1×1
//! planes, where that is a scalar chain per element (13% of its training step went to the
//! backward's sums alone). [`channel_sums`] walks the images instead: for a block of
//! channels, image after image, it adds the block's contiguous slab (`channels × hw`
//! values) into as many partial sums, one per (channel, pixel), so the inner loop is
//! contiguous and vectorises for every plane size. Each channel's total is then its
//! partial sums added in a fixed order: the result depends on the shape alone, not on the
//! block size or the thread count, and differs from the reference only by rounding.
//!
//! **Compiled for AVX2 when the CPU has it.** The crate targets baseline x86-64 (SSE2), so
//! without this the loops run four floats wide and spill the partial sums; the AVX2
//! versions are the same code (same operations in the same order: bitwise the same
//! results), chosen at run time.

mod fused;

pub use fused::{backward_batch, normalise_batch};

use super::elementwise::par_chunks_zeroed;
use super::reduce;
use super::Element;
use rayon::prelude::*;

/// The activation fused after a batch norm, as a type: the loops are compiled once per
/// activation with its gate inlined (a per-element `match` made resnet20's step 10–20%
/// slower).
pub trait Act: Send + Sync {
    /// The activation of a pre-activation value `z`.
    fn apply<T: Element>(z: T) -> T;
    /// `g` where the gradient passes at `z`, else 0.
    fn gate<T: Element>(g: T, z: T) -> T;
}

/// No activation: `y = z`.
pub struct NoAct;
/// ReLU: `max(z, 0)`; the gradient passes where `z > 0`.
pub struct ReluAct;
/// ReLU6: `min(max(z, 0), 6)`; the gradient passes where `0 ≤ z ≤ 6`.
pub struct Relu6Act;

impl Act for NoAct {
    #[inline(always)]
    fn apply<T: Element>(z: T) -> T {
        z
    }
    #[inline(always)]
    fn gate<T: Element>(g: T, _: T) -> T {
        g
    }
}

impl Act for ReluAct {
    #[inline(always)]
    fn apply<T: Element>(z: T) -> T {
        if z > T::zero() {
            z
        } else {
            T::zero()
        }
    }
    #[inline(always)]
    fn gate<T: Element>(g: T, z: T) -> T {
        if z > T::zero() {
            g
        } else {
            T::zero()
        }
    }
}

impl Act for Relu6Act {
    #[inline(always)]
    fn apply<T: Element>(z: T) -> T {
        z.max(T::zero()).min(T::from_f64(6.0))
    }
    #[inline(always)]
    fn gate<T: Element>(g: T, z: T) -> T {
        // `&` rather than `&&`: no branch, so the loop stays vectorised.
        if (z >= T::zero()) & (z <= T::from_f64(6.0)) {
            g
        } else {
            T::zero()
        }
    }
}

/// Per-channel statistics and affine map of a forward pass: `x̂ = (x − mean)·inv_std`,
/// `z = γx̂ + β` (each slice holds one value per channel).
pub struct ChannelAffine<'a, T> {
    /// Batch mean per channel.
    pub mean: &'a [T],
    /// `1/√(σ² + ε)` per channel.
    pub inv_std: &'a [T],
    /// Scale `γ` per channel.
    pub gamma: &'a [T],
    /// Shift `β` per channel.
    pub beta: &'a [T],
}

/// NCHW sizes: `c` channels of `hw` elements per image.
#[derive(Clone, Copy, Debug)]
pub struct Planes {
    /// Channels.
    pub c: usize,
    /// Elements per plane (`h·w`).
    pub hw: usize,
}

impl Planes {
    fn image(self) -> usize {
        self.c * self.hw
    }
}

/// Values per slab (a block's channels × `hw`) in the slab walk: its partial sums and
/// expanded parameters stay in L1, and a block of a 128-image batch (512 KiB in f32) in
/// L2 for the variance's second pass.
const SLAB_ELEMENTS: usize = 1024;

/// Up to four per-channel parameters, expanded to one value per element of a slab.
type Expanded<T> = [Vec<T>; 4];

/// Per channel, `(Σ f(a, b, p).0, Σ f(a, b, p).1)` over every image and pixel, where `p`
/// holds the channel's values of `params` (unused ones may be empty): the slab walk.
pub fn channel_sums<T: Element>(
    a: &[T],
    b: &[T],
    dims: Planes,
    params: [&[T]; 4],
    f: impl Fn(T, T, [T; 4]) -> (T, T) + Sync,
) -> Vec<(T, T)> {
    assert_eq!(
        a.len(),
        b.len(),
        "channel_sums over slices of different lengths"
    );
    blocks(dims)
        .into_par_iter()
        .flat_map_iter(|(c0, c1)| {
            let e = expand(&params, c0, c1, dims.hw);
            block_sums(a, b, dims, (c0, c1), &e, &f)
        })
        .collect()
}

/// Per channel, the mean and the biased variance, in two passes per block of channels
/// (the mean, then the squared deviations from it: no cancellation); the block is read
/// again from cache.
pub fn channel_mean_var<T: Element>(x: &[T], dims: Planes) -> Vec<(T, T)> {
    blocks(dims)
        .into_par_iter()
        .flat_map_iter(|block| block_mean_var(x, dims, block))
        .collect()
}

/// [`channel_mean_var`] of channels `c0..c1`.
fn block_mean_var<T: Element>(x: &[T], dims: Planes, (c0, c1): (usize, usize)) -> Vec<(T, T)> {
    let count = T::from_f64((x.len() / dims.c.max(1)) as f64);
    let no_params = expand(&[&[]; 4], c0, c1, dims.hw);
    let sums = block_sums(x, x, dims, (c0, c1), &no_params, &|v, _, _| (v, v));
    let mean: Vec<T> = sums.iter().map(|s| s.0 / count).collect();
    let mut e = no_params;
    e[0] = repeat_each(&mean, dims.hw);
    let sq = block_sums(x, x, dims, (c0, c1), &e, &|v, _, p| {
        let d = v - p[0];
        (d * d, T::zero())
    });
    mean.into_iter()
        .zip(sq)
        .map(|(m, (s, _))| (m, s / count))
        .collect()
}

/// `(g, g·x̂)` with `g = gate(dy, γx̂ + β)`: what the backward sums.
#[inline(always)]
fn gated<A: Act, T: Element>(g: T, v: T, [m, is, ga, be]: [T; 4]) -> (T, T) {
    let xh = (v - m) * is;
    let g = A::gate(g, ga * xh + be);
    (g, g * xh)
}

/// Each of `values` repeated `hw` times.
fn repeat_each<T: Element>(values: &[T], hw: usize) -> Vec<T> {
    values
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v, hw))
        .collect()
}

/// Per channel, `(Σ g, Σ g·x̂)` with `g = gate(dy, γx̂ + β)`: batch norm backward's sums.
pub fn gated_sums<A: Act, T: Element>(
    dy: &[T],
    x: &[T],
    p: &ChannelAffine<T>,
    dims: Planes,
) -> Vec<(T, T)> {
    let params = [p.mean, p.inv_std, p.gamma, p.beta];
    channel_sums(dy, x, dims, params, gated::<A, T>)
}

/// The channel blocks `[c0, c1)` of the slab walk: about [`SLAB_ELEMENTS`] values per
/// slab, and at least four blocks where there are channels enough (two threads' work).
fn blocks(dims: Planes) -> Vec<(usize, usize)> {
    let c = dims.c.max(1);
    let per_block = (SLAB_ELEMENTS / dims.hw.max(1)).clamp(1, c.div_ceil(4));
    (0..c)
        .step_by(per_block)
        .map(|c0| (c0, (c0 + per_block).min(c)))
        .collect()
}

/// `params` of channels `c0..c1`, each repeated `hw` times (empty ones stay empty).
fn expand<T: Element>(params: &[&[T]; 4], c0: usize, c1: usize, hw: usize) -> Expanded<T> {
    params.map(|p| {
        if p.is_empty() {
            Vec::new()
        } else {
            (c0..c1)
                .flat_map(|ch| std::iter::repeat_n(p[ch], hw))
                .collect()
        }
    })
}

/// The sums of channels `c0..c1`: every image's slab added into one partial sum per
/// (channel, pixel), then each channel's partial sums added.
fn block_sums<T: Element>(
    a: &[T],
    b: &[T],
    dims: Planes,
    (c0, c1): (usize, usize),
    e: &Expanded<T>,
    f: &(impl Fn(T, T, [T; 4]) -> (T, T) + Sync),
) -> Vec<(T, T)> {
    let (hw, image) = (dims.hw, dims.image());
    let len = (c1 - c0) * hw;
    let (mut s0, mut s1) = (vec![T::zero(); len], vec![T::zero(); len]);
    // Unused parameters read zeros (the closure ignores them; the loads are optimised out);
    // the zeros are allocated only when some parameter is unused.
    let zeros = if e.iter().any(Vec::is_empty) {
        vec![T::zero(); len]
    } else {
        Vec::new()
    };
    let param = |k: usize| {
        if e[k].is_empty() {
            &zeros[..]
        } else {
            &e[k][..]
        }
    };
    let p = [param(0), param(1), param(2), param(3)];
    for img in 0..a.len() / image.max(1) {
        let at = img * image + c0 * hw..img * image + c1 * hw;
        accumulate(&a[at.clone()], &b[at], p, (&mut s0, &mut s1), f);
    }
    (0..c1 - c0)
        .map(|k| {
            let at = k * hw..(k + 1) * hw;
            (reduce::sum(&s0[at.clone()]), reduce::sum(&s1[at]))
        })
        .collect()
}

/// `s0[i] += f(a[i], b[i], p[i]).0` and `s1[i] += … .1`, AVX2-compiled where available.
#[inline]
fn accumulate<T: Element>(
    a: &[T],
    b: &[T],
    p: [&[T]; 4],
    s: (&mut [T], &mut [T]),
    f: &impl Fn(T, T, [T; 4]) -> (T, T),
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { accumulate_avx2(a, b, p, s, f) };
    }
    accumulate_body(a, b, p, s, f)
}

/// [`accumulate`] compiled for AVX2: eight floats per operation.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn accumulate_avx2<T: Element>(
    a: &[T],
    b: &[T],
    p: [&[T]; 4],
    s: (&mut [T], &mut [T]),
    f: &impl Fn(T, T, [T; 4]) -> (T, T),
) {
    accumulate_body(a, b, p, s, f)
}

#[inline(always)]
fn accumulate_body<T: Element>(
    a: &[T],
    b: &[T],
    p: [&[T]; 4],
    (s0, s1): (&mut [T], &mut [T]),
    f: &impl Fn(T, T, [T; 4]) -> (T, T),
) {
    let n = a.len();
    let (b, s0, s1) = (&b[..n], &mut s0[..n], &mut s1[..n]);
    let (p0, p1, p2, p3) = (&p[0][..n], &p[1][..n], &p[2][..n], &p[3][..n]);
    for i in 0..n {
        let (u, v) = f(a[i], b[i], [p0[i], p1[i], p2[i], p3[i]]);
        s0[i] += u;
        s1[i] += v;
    }
}

/// [`channel_sums`] the plain way: per channel, plane after plane, one serial chain each.
pub fn channel_sums_reference<T: Element>(
    a: &[T],
    b: &[T],
    dims: Planes,
    params: [&[T]; 4],
    f: impl Fn(T, T, [T; 4]) -> (T, T),
) -> Vec<(T, T)> {
    let planes = a.len() / dims.hw.max(1);
    (0..dims.c)
        .map(|ch| {
            let p = params.map(|p| p.get(ch).copied().unwrap_or(T::zero()));
            let (mut s0, mut s1) = (T::zero(), T::zero());
            for plane in (ch..planes).step_by(dims.c) {
                let at = plane * dims.hw..(plane + 1) * dims.hw;
                for (&u, &v) in a[at.clone()].iter().zip(&b[at]) {
                    let (x, y) = f(u, v, p);
                    s0 += x;
                    s1 += y;
                }
            }
            (s0, s1)
        })
        .collect()
}

/// `y = act(γx̂ + β)` with `x̂ = (x − μ)·inv_std`.
pub fn normalise<A: Act, T: Element>(x: &[T], p: &ChannelAffine<T>, dims: Planes) -> Vec<T> {
    let params = [p.mean, p.inv_std, p.gamma, p.beta];
    map_channels(x, x, dims, params, |v, _, [m, s, g, b]| {
        A::apply(g * ((v - m) * s) + b)
    })
}

/// `dx = γ·inv_std · (g − Σg/N − x̂·Σ(g·x̂)/N)`, with `g` gated as in [`gated_sums`] and
/// `sums` what it returned.
pub fn input_grad<A: Act, T: Element>(
    dy: &[T],
    x: &[T],
    p: &ChannelAffine<T>,
    sums: &[(T, T)],
    dims: Planes,
) -> Vec<T> {
    let count = T::from_f64((dy.len() / dims.c.max(1)) as f64);
    let mean_dy: Vec<T> = sums.iter().map(|s| s.0 / count).collect();
    let mean_dyx: Vec<T> = sums.iter().map(|s| s.1 / count).collect();
    let params = [p.mean, p.inv_std, p.gamma, p.beta, &mean_dy, &mean_dyx];
    map_channels(dy, x, dims, params, |g, v, [m, is, ga, be, mdy, mdyx]| {
        let xh = (v - m) * is;
        let g = A::gate(g, ga * xh + be);
        (ga * is) * (g - mdy - xh * mdyx)
    })
}

/// Planes of fewer elements than this are mapped by whole images with expanded parameters
/// (one value per element) rather than plane by plane: a loop over a 1×1, 2×2 or 4×4
/// plane is mostly set-up and scalar remainder.
const SMALL_PLANE: usize = 32;

/// Elements per task of the elementwise passes: a task zeroes its chunks and then writes
/// them, so they should stay in L1 (two outputs of 8 KiB in f32). With 64 KiB chunks the
/// resnet20 step was 4% slower (1 and 2 threads, same run, 2 rounds).
const TASK_ELEMENTS: usize = 2048;

/// `f` reading its parameters at element `i` of slices with one value per element, as
/// [`map_slice`] calls it.
fn at_element<const K: usize, T: Element>(
    f: &impl Fn(T, T, [T; K]) -> T,
) -> impl Fn(T, T, &[&[T]; K], usize) -> T + '_ {
    move |u, v, e, i| {
        // A loop, not `e.map(..)`: that was a call per element, not inlined.
        let mut q = [T::zero(); K];
        for k in 0..K {
            q[k] = e[k][i];
        }
        f(u, v, q)
    }
}

/// `1/√(σ² + ε)`: what the normalising map multiplies by, computed in one place so that
/// the forward pass and the saved statistics the backward reads agree bitwise.
pub fn inv_std<T: Element>(var: T, eps: T) -> T {
    T::one() / (var + eps).sqrt()
}

/// `out[i] = f(a[i], b[i], p)` over NCHW data, `p` the values of `params` at element `i`'s
/// channel.
fn map_channels<const K: usize, T: Element>(
    a: &[T],
    b: &[T],
    dims: Planes,
    params: [&[T]; K],
    f: impl Fn(T, T, [T; K]) -> T + Sync,
) -> Vec<T> {
    assert_eq!(
        a.len(),
        b.len(),
        "map_channels over slices of different lengths"
    );
    let (c, hw) = (dims.c.max(1), dims.hw.max(1));
    if hw >= SMALL_PLANE {
        // Plane by plane: each plane's loop is long enough to vectorise.
        let per_task = (TASK_ELEMENTS / hw).max(1);
        let (out, _) = par_chunks_zeroed(a.len(), per_task * hw, |task, out| {
            for (k, out) in out.chunks_mut(hw).enumerate() {
                let plane = task * per_task + k;
                let q = params.map(|p| p[plane % c]);
                let at = plane * hw..(plane + 1) * hw;
                let f = |u, v, _: &[&[T]; 0], _| f(u, v, q);
                map_slice(&a[at.clone()], &b[at], out, &[], &f);
            }
        });
        return out;
    }
    // Image by image, with every parameter repeated `hw` times: one contiguous loop.
    let image = c * hw;
    let expanded: [Vec<T>; K] = params.map(|p| {
        (0..c)
            .flat_map(|ch| std::iter::repeat_n(p[ch], hw))
            .collect()
    });
    let e: [&[T]; K] = std::array::from_fn(|k| &expanded[k][..]);
    let per_task = (TASK_ELEMENTS / image).max(1);
    let (out, _) = par_chunks_zeroed(a.len(), per_task * image, |task, out| {
        for (k, out) in out.chunks_mut(image).enumerate() {
            let at = (task * per_task + k) * image..(task * per_task + k + 1) * image;
            map_slice(&a[at.clone()], &b[at], out, &e, &at_element(&f));
        }
    });
    out
}

/// `out[i] = f(a[i], b[i], e, i)` (`e` per-element parameters, read by `f`) for every
/// element of `out`, AVX2-compiled where available.
#[inline]
fn map_slice<const K: usize, T: Element>(
    a: &[T],
    b: &[T],
    out: &mut [T],
    e: &[&[T]; K],
    f: &impl Fn(T, T, &[&[T]; K], usize) -> T,
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { map_slice_avx2(a, b, out, e, f) };
    }
    map_slice_body(a, b, out, e, f)
}

/// [`map_slice`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn map_slice_avx2<const K: usize, T: Element>(
    a: &[T],
    b: &[T],
    out: &mut [T],
    e: &[&[T]; K],
    f: &impl Fn(T, T, &[&[T]; K], usize) -> T,
) {
    map_slice_body(a, b, out, e, f)
}

#[inline(always)]
fn map_slice_body<const K: usize, T: Element>(
    a: &[T],
    b: &[T],
    out: &mut [T],
    e: &[&[T]; K],
    f: &impl Fn(T, T, &[&[T]; K], usize) -> T,
) {
    let n = out.len();
    let (a, b) = (&a[..n], &b[..n]);
    // Parameters cut to the slice's length, so the loop below has no bounds checks.
    let e: [&[T]; K] = e.map(|p| &p[..n]);
    for i in 0..n {
        out[i] = f(a[i], b[i], &e, i);
    }
}

/// [`normalise`] the plain way: one element at a time, its channel from its index.
pub fn normalise_reference<A: Act, T: Element>(
    x: &[T],
    p: &ChannelAffine<T>,
    dims: Planes,
) -> Vec<T> {
    let hw = dims.hw.max(1);
    (0..x.len())
        .map(|i| {
            let ch = (i / hw) % dims.c;
            let x_hat = (x[i] - p.mean[ch]) * p.inv_std[ch];
            A::apply(p.gamma[ch] * x_hat + p.beta[ch])
        })
        .collect()
}

/// [`input_grad`] the plain way: one element at a time, its channel from its index.
pub fn input_grad_reference<A: Act, T: Element>(
    dy: &[T],
    x: &[T],
    p: &ChannelAffine<T>,
    sums: &[(T, T)],
    dims: Planes,
) -> Vec<T> {
    let hw = dims.hw.max(1);
    let count = T::from_f64((dy.len() / dims.c.max(1)) as f64);
    (0..dy.len())
        .map(|i| {
            let ch = (i / hw) % dims.c;
            let x_hat = (x[i] - p.mean[ch]) * p.inv_std[ch];
            let g = A::gate(dy[i], p.gamma[ch] * x_hat + p.beta[ch]);
            let (mean_g, mean_gx) = (sums[ch].0 / count, sums[ch].1 / count);
            (p.gamma[ch] * p.inv_std[ch]) * (g - mean_g - x_hat * mean_gx)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plane sizes around the small-plane threshold and the lane count, and channel counts
    /// that leave a short last block.
    const SHAPES: [(usize, usize, usize); 9] = [
        (1, 1, 2),
        (5, 3, 1),
        (3, 40, 4),
        (2, 7, 16),
        (4, 5, 31),
        (2, 6, 32),
        (3, 3, 33),
        (2, 9, 64),
        (1, 2, 1030),
    ];

    fn data(len: usize, seed: u64) -> Vec<f64> {
        // Deterministic values of mixed sign, some exactly 0 (the ReLU's kink).
        (0..len)
            .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1001) as f64 - 500.0) / 97.0)
            .collect()
    }

    fn affine(c: usize) -> [Vec<f64>; 4] {
        let d = data(4 * c, 9);
        let at = |k: usize| d[k * c..(k + 1) * c].to_vec();
        let inv_std = at(1).iter().map(|v| 0.5 + v.abs()).collect();
        [at(0), inv_std, at(2), at(3)]
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-10 * (1.0 + b.abs())
    }

    /// The one-walk passes give bitwise what the separate walks give — y and the
    /// statistics forward, the sums and dX backward — for every activation, on one and
    /// two threads.
    #[test]
    fn one_walk_passes_equal_the_separate_walks() {
        fn check<A: Act>() {
            for (n, c, hw) in SHAPES {
                let dims = Planes { c, hw };
                let (x, dy) = (data(n * c * hw, 3), data(n * c * hw, 4));
                let [_, _, g, b] = affine(c);
                let eps = 1e-5;
                let (y, stats) = normalise_batch::<A, f64>(&x, (&g, &b, eps), dims);
                assert_eq!(stats, channel_mean_var(&x, dims), "{n}×{c}×{hw}");
                let (mean, inv_std): (Vec<f64>, Vec<f64>) = stats
                    .iter()
                    .map(|&(m, v)| (m, 1.0 / (v + eps).sqrt()))
                    .unzip();
                let p = ChannelAffine {
                    mean: &mean,
                    inv_std: &inv_std,
                    gamma: &g,
                    beta: &b,
                };
                assert_eq!(y, normalise::<A, f64>(&x, &p, dims), "{n}×{c}×{hw}");
                let (dx, sums) = backward_batch::<A, f64>(&dy, &x, &p, dims, true);
                assert_eq!(sums, gated_sums::<A, f64>(&dy, &x, &p, dims));
                let want = input_grad::<A, f64>(&dy, &x, &p, &sums, dims);
                assert_eq!(dx, Some(want), "{n}×{c}×{hw}");
                let (none, again) = backward_batch::<A, f64>(&dy, &x, &p, dims, false);
                assert!(none.is_none() && again == sums);
            }
        }
        for threads in [1, 2] {
            crate::train::with_threads(Some(threads), || {
                check::<NoAct>();
                check::<ReluAct>();
                check::<Relu6Act>();
            })
            .expect("a pool of that size");
        }
    }

    #[test]
    fn slab_sums_equal_the_plane_by_plane_sums() {
        for (n, c, hw) in SHAPES {
            let dims = Planes { c, hw };
            let (a, b) = (data(n * c * hw, 1), data(n * c * hw, 2));
            let [m, s, g, be] = affine(c);
            let params = [&m[..], &s[..], &g[..], &be[..]];
            let f = |u: f64, v: f64, p: [f64; 4]| (u * p[0] + v, (u - p[1]) * (v + p[3]));
            let fast = channel_sums(&a, &b, dims, params, f);
            let slow = channel_sums_reference(&a, &b, dims, params, f);
            assert_eq!(fast.len(), c);
            for (x, y) in fast.iter().zip(&slow) {
                assert!(
                    close(x.0, y.0) && close(x.1, y.1),
                    "{n}×{c}×{hw}: {x:?} vs {y:?}"
                );
            }
            // Mean and variance against the two plain passes.
            let stats = channel_mean_var(&a, dims);
            let count = (n * hw) as f64;
            let sums = channel_sums_reference(&a, &a, dims, [&[]; 4], |u, _, _| (u, 0.0));
            for ch in 0..c {
                let mean = sums[ch].0 / count;
                let dev = channel_sums_reference(&a, &a, dims, [&[]; 4], |u, _, _| {
                    ((u - mean) * (u - mean), 0.0)
                });
                assert!(close(stats[ch].0, mean), "{n}×{c}×{hw} mean");
                assert!(close(stats[ch].1, dev[ch].0 / count), "{n}×{c}×{hw} var");
            }
        }
    }

    fn elementwise_passes_equal_their_references<A: Act>() {
        for (n, c, hw) in SHAPES {
            let dims = Planes { c, hw };
            let (dy, x) = (data(n * c * hw, 3), data(n * c * hw, 4));
            let [m, s, g, be] = affine(c);
            let p = ChannelAffine {
                mean: &m,
                inv_std: &s,
                gamma: &g,
                beta: &be,
            };
            // Bitwise: the same operations in the same order, element by element.
            assert_eq!(
                normalise::<A, _>(&x, &p, dims),
                normalise_reference::<A, _>(&x, &p, dims),
                "{n}×{c}×{hw}"
            );
            let sums = gated_sums::<A, _>(&dy, &x, &p, dims);
            assert_eq!(
                input_grad::<A, _>(&dy, &x, &p, &sums, dims),
                input_grad_reference::<A, _>(&dy, &x, &p, &sums, dims),
                "{n}×{c}×{hw}"
            );
        }
    }

    #[test]
    fn normalise_and_input_grad_equal_their_references() {
        elementwise_passes_equal_their_references::<NoAct>();
        elementwise_passes_equal_their_references::<ReluAct>();
        elementwise_passes_equal_their_references::<Relu6Act>();
    }

    #[test]
    fn sums_are_the_same_on_any_thread_count() {
        let (n, c, hw) = (6, 24, 4);
        let dims = Planes { c, hw };
        let x: Vec<f32> = data(n * c * hw, 5).iter().map(|&v| v as f32).collect();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| channel_mean_var(&x, dims))
        };
        assert_eq!(run(1), run(2));
        assert_eq!(run(1), run(3));
    }
}
