//! 2-D convolution (NCHW, weight `[c_out, c_in, kh, kw]` as PyTorch) by im2col + GEMM,
//! or, for 3×3 stride-1 layers with enough channels, by Winograd F(2×2, 3×3)
//! ([`winograd`]; chosen per layer by [`ConvAlgorithm::Auto`]).
//!
//! Forward, per image: `Y = W·im2col(X) + b`. Backward, per image: `dW += dY·colsᵀ`,
//! `dX = col2im(Wᵀ·dY)`, and `db = Σ dY`. Each image is processed in tiles of output rows
//! (about 256 pixels) so that a tile's columns are still in cache when the GEMM reads them;
//! images with fewer output pixels share one forward GEMM, their columns side by side, so
//! the weights are packed once per group. Parallelism is rayon over images (forward) or
//! over contiguous chunks of the batch (backward, one partial `dW` per chunk); every GEMM
//! inside runs single-threaded, and column buffers come from per-thread workspaces reused
//! across calls.
//!
//! [`Tensor::conv2d_relu`] is the same op followed by a fused ReLU (applied to each image's
//! output in cache; backward masks each image's gradient where it is read).
//!
//! The backward pass recomputes the columns rather than keeping them from the forward
//! pass: kept columns would cost `k·p` floats per image (151 MB for `cifar-cnn`'s second
//! conv at batch 128), while im2col is a copy, cheap next to the GEMMs that read it.

mod im2col;
pub mod winograd;

pub use crate::ops::window::Geometry;
pub use im2col::{col2im, im2col, im2col_strided};

use super::gemm::{gemm, MatMut, MatRef};
use crate::autograd::CustomOp;
use crate::error::{Result, TensorError};
use crate::tensor::{transpose, Element, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::Arc;

/// Stride, padding and dilation of a convolution (vertical, horizontal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Step between output pixels.
    pub stride: (usize, usize),
    /// Zeros added on each side.
    pub padding: (usize, usize),
    /// Spacing between kernel taps.
    pub dilation: (usize, usize),
    /// How the convolution is computed.
    pub algorithm: ConvAlgorithm,
}

/// How a convolution is computed; every algorithm gives the same result up to rounding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// Winograd where it applies and pays ([`ConvAlgorithm::auto_prefers_winograd`]),
    /// im2col otherwise.
    #[default]
    Auto,
    /// im2col + GEMM: any kernel, stride, padding and dilation.
    Im2col,
    /// Winograd F(2×2, 3×3): 3×3 kernels, stride 1, no dilation, padding ≤ 2; an error
    /// for other geometries.
    Winograd,
}

/// Input channels from which [`ConvAlgorithm::Auto`] picks Winograd. Its GEMMs have the
/// channels as inner dimension; with 3 (an RGB first layer) they are too thin to pay for
/// the transforms. Measured on cifar-cnn's conv1 (batch 128, 1 thread, same run, 3
/// rounds): forward 9.2–10.0 ms by Winograd against 6.5–7.0 ms by im2col, forward + dW
/// 21.5–30.3 against 14.1–16.1 ms.
const WINOGRAD_MIN_CHANNELS: usize = 16;

impl ConvAlgorithm {
    /// Whether `Auto` runs a convolution of geometry `g` with `c_out` outputs by Winograd:
    /// when Winograd supports it and both channel counts reach 16.
    pub fn auto_prefers_winograd(g: &Geometry, c_out: usize) -> bool {
        winograd::supports(g) && g.c >= WINOGRAD_MIN_CHANNELS && c_out >= WINOGRAD_MIN_CHANNELS
    }

    /// Whether this choice runs geometry `g` by Winograd (an error if it cannot).
    fn uses_winograd(self, g: &Geometry, c_out: usize) -> Result<bool> {
        match self {
            ConvAlgorithm::Auto => Ok(Self::auto_prefers_winograd(g, c_out)),
            ConvAlgorithm::Im2col => Ok(false),
            ConvAlgorithm::Winograd if winograd::supports(g) => Ok(true),
            ConvAlgorithm::Winograd => Err(TensorError::InvalidArgument {
                op: "conv2d",
                reason: format!(
                    "Winograd F(2×2, 3×3) needs a 3×3 kernel, stride 1, dilation 1 and padding ≤ 2, not kernel {:?}, stride {:?}, dilation {:?}, padding {:?}",
                    g.kernel, g.stride, g.dilation, g.padding
                ),
            }),
        }
    }
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            algorithm: ConvAlgorithm::Auto,
        }
    }
}

impl Conv2dConfig {
    /// Square stride, padding and dilation.
    pub fn new(stride: usize, padding: usize, dilation: usize) -> Self {
        Conv2dConfig {
            stride: (stride, stride),
            padding: (padding, padding),
            dilation: (dilation, dilation),
            algorithm: ConvAlgorithm::Auto,
        }
    }

    /// The same configuration computed by `algorithm`.
    pub fn with_algorithm(self, algorithm: ConvAlgorithm) -> Self {
        Conv2dConfig { algorithm, ..self }
    }

    /// The algorithm a convolution of an `input` (NCHW) with a `weight` shape runs by under
    /// this configuration: [`ConvAlgorithm::Im2col`] or [`ConvAlgorithm::Winograd`].
    /// ```
    /// use tensorgrad::ops::conv::{ConvAlgorithm, Conv2dConfig};
    ///
    /// let same = Conv2dConfig::new(1, 1, 1);
    /// assert_eq!(same.algorithm_for(&[8, 32, 16, 16], &[64, 32, 3, 3])?, ConvAlgorithm::Winograd);
    /// // An RGB first layer: too few input channels for Winograd to pay.
    /// assert_eq!(same.algorithm_for(&[8, 3, 32, 32], &[32, 3, 3, 3])?, ConvAlgorithm::Im2col);
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn algorithm_for(&self, input: &[usize], weight: &[usize]) -> Result<ConvAlgorithm> {
        let g = conv_geometry(input, weight, None, *self)?;
        Ok(if self.algorithm.uses_winograd(&g, weight[0])? {
            ConvAlgorithm::Winograd
        } else {
            ConvAlgorithm::Im2col
        })
    }
}

/// Chunks of a batch whose partial weight gradients backward sums, in order. Fixed (not
/// the thread count) so results are bitwise the same on any number of threads; 4 keeps
/// the extra partial sums within noise (train-step A/B: 16 chunks cost 4–7% on LeNet)
/// and still feeds 4 threads — more threads would idle in this loop.
const BACKWARD_CHUNKS: usize = 4;

/// Output pixels per GEMM tile. Measured with single-threaded sgemm on this machine:
/// 32×288×1024 (cifar-cnn conv2, whole image) runs at 42 GFLOP/s, 32×288×256 at 66: a
/// tile's columns stay in cache between im2col and the GEMM that packs them.
const TILE_PIXELS: usize = 256;

/// Tiles of whole output rows, each about [`TILE_PIXELS`] pixels: `(first row, end row)`.
fn row_tiles(g: &Geometry) -> impl Iterator<Item = (usize, usize)> {
    let rows = (TILE_PIXELS / g.ow.max(1)).max(1);
    let oh = g.oh;
    (0..oh)
        .step_by(rows)
        .map(move |r0| (r0, (r0 + rows).min(oh)))
}

/// The largest tile's pixel count (sizes the column workspace).
fn max_tile_pixels(g: &Geometry) -> usize {
    row_tiles(g).map(|(a, b)| (b - a) * g.ow).max().unwrap_or(0)
}

/// Images whose im2col columns share one forward GEMM: as many as fit in [`TILE_PIXELS`]
/// when an image has at most half that many output pixels (LeNet's conv2: 64 pixels, so 4
/// images and a 256-column product), otherwise 1. Per-image products that narrow pack the
/// whole weight matrix again for every image (LeNet's conv2: 25,000 weights for 64 columns).
fn images_per_gemm(g: &Geometry) -> usize {
    let p = g.p();
    if p == 0 || 2 * p > TILE_PIXELS {
        1
    } else {
        TILE_PIXELS / p
    }
}

impl<T: Element> Tensor<T> {
    /// 2-D convolution of an NCHW input with `weight` `[c_out, c_in, kh, kw]` and an
    /// optional `bias` `[c_out]` (cross-correlation, as PyTorch's `conv2d`).
    /// ```
    /// use tensorgrad::ops::conv::Conv2dConfig;
    /// use tensorgrad::Tensor;
    ///
    /// // A 1×1×4×4 image, a 2×2 kernel of ones, stride 2: sums of 2×2 blocks.
    /// let x = Tensor::<f64>::arange(16).reshape(&[1, 1, 4, 4])?;
    /// let w = Tensor::<f64>::ones(&[1, 1, 2, 2]).with_grad();
    /// let y = x.conv2d(&w, None, Conv2dConfig::new(2, 0, 1))?;
    /// assert_eq!(y.to_vec(), vec![10.0, 18.0, 42.0, 50.0]);
    /// // dL/dW for L = Σy: for each tap, the sum of the pixels it saw (tap (0,0): 0+2+8+10).
    /// let grads = y.sum_all().backward()?;
    /// assert_eq!(grads.get(&w).unwrap().to_vec(), vec![20.0, 24.0, 36.0, 40.0]);
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn conv2d(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        cfg: Conv2dConfig,
    ) -> Result<Tensor<T>> {
        self.conv2d_then(weight, bias, cfg, false)
    }

    /// `relu(conv2d(x))` as one op: the rectifier is applied to each image's output while
    /// it is still in cache, and backward masks each image's incoming gradient on the fly
    /// instead of writing a ReLU gradient tensor. Values and gradients equal those of
    /// `conv2d` followed by `relu` ([`Sequential`](crate::nn::Sequential) runs a `Conv2d`
    /// followed by a `Relu` this way).
    /// ```
    /// use tensorgrad::ops::conv::Conv2dConfig;
    /// use tensorgrad::Tensor;
    ///
    /// let x = Tensor::<f64>::from_vec(vec![1.0, -2.0, 3.0, -4.0], &[1, 1, 2, 2])?.with_grad();
    /// let w = Tensor::<f64>::from_vec(vec![1.0], &[1, 1, 1, 1])?.with_grad();
    /// let y = x.conv2d_relu(&w, None, Conv2dConfig::default())?;
    /// assert_eq!(y.to_vec(), vec![1.0, 0.0, 3.0, 0.0]);
    /// let grads = y.sum_all().backward()?;
    /// // The gradient flows only where the output is positive.
    /// assert_eq!(grads.get(&x).unwrap().to_vec(), vec![1.0, 0.0, 1.0, 0.0]);
    /// assert_eq!(grads.get(&w).unwrap().to_vec(), vec![4.0]);
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn conv2d_relu(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        cfg: Conv2dConfig,
    ) -> Result<Tensor<T>> {
        self.conv2d_then(weight, bias, cfg, true)
    }

    /// [`Tensor::conv2d`], followed by a fused ReLU if `relu`.
    fn conv2d_then(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        cfg: Conv2dConfig,
        relu: bool,
    ) -> Result<Tensor<T>> {
        let g = conv_geometry(self.shape(), weight.shape(), bias.map(|b| b.shape()), cfg)?;
        let (n, o, k, p) = (self.shape()[0], weight.shape()[0], g.k(), g.p());
        let x = self.values();
        let w = weight.values();
        let b = bias.map(|b| b.values());
        let winograd = cfg.algorithm.uses_winograd(&g, o)?;
        let u = winograd
            .then(|| winograd::transform_weights(&w, o, g.c, winograd::WeightLayout::ByInput));
        // im2col's GEMMs take W (o × k) as their left operand, which matrixmultiply packs
        // with contiguous loads only when stored by column: transposed once per call here,
        // not gathered again by every GEMM (LeNet's conv2: 25,000 weights per product).
        let w_by_column = if winograd {
            Vec::new()
        } else {
            let mut t = vec![T::zero(); o * k];
            transpose(&w, (o, k, k), &mut t, o);
            t
        };
        let tile = max_tile_pixels(&g);
        // Several images per GEMM: `y` (`imgs × o × p`) from `x_imgs`, through one product
        // into a workspace, each column block then copied (plus bias) to its image.
        let images = |x_imgs: &[T], y: &mut [T]| {
            let imgs = y.len() / (o * p);
            let cols_len = imgs * p;
            T::with_workspace((k + o) * cols_len, |ws| {
                let (cols, product) = ws.split_at_mut(k * cols_len);
                for (i, x_i) in x_imgs.chunks_exact(g.chw()).enumerate() {
                    im2col_strided(x_i, &g, (0, g.oh), &mut cols[i * p..], cols_len);
                }
                // product[o × imgs·p] = W[o×k] · cols[k × imgs·p]
                gemm(
                    MatRef::new(&w_by_column, 0, (o, k), (1, o)),
                    MatRef::new(cols, 0, (k, cols_len), (cols_len, 1)),
                    T::zero(),
                    MatMut::new(product, (o, cols_len), cols_len),
                );
                for (i, y_i) in y.chunks_exact_mut(o * p).enumerate() {
                    for (oc, row) in y_i.chunks_exact_mut(p).enumerate() {
                        let from = &product[oc * cols_len + i * p..][..p];
                        match &b {
                            // The same sum as the one-image path's `W·cols + 1·bias`.
                            Some(b) => {
                                for (out, &v) in row.iter_mut().zip(from) {
                                    *out = v + b[oc];
                                }
                            }
                            None => row.copy_from_slice(from),
                        }
                    }
                }
            });
        };
        // One image: `y` (`o × p`, zeroed) from `x_i`.
        let image = |x_i: &[T], y: &mut [T]| {
            if let Some(u) = &u {
                T::with_workspace(winograd::forward_workspace(&g, o), |ws| {
                    winograd::forward_image(x_i, &g, u, o, b.as_deref(), y, ws)
                });
                return;
            }
            let beta = match &b {
                Some(b) => {
                    for (row, &bv) in y.chunks_mut(p).zip(b.iter()) {
                        row.fill(bv);
                    }
                    T::one()
                }
                None => T::zero(),
            };
            T::with_workspace(k * tile, |cols| {
                for (r0, r1) in row_tiles(&g) {
                    let pt = (r1 - r0) * g.ow;
                    im2col(x_i, &g, (r0, r1), cols);
                    // Y[:, tile] (=|+=) W[o×k] · cols[k×pt]
                    gemm(
                        MatRef::new(&w_by_column, 0, (o, k), (1, o)),
                        MatRef::new(cols, 0, (k, pt), (pt, 1)),
                        beta,
                        MatMut::new(&mut y[r0 * g.ow..], (o, pt), p),
                    );
                }
            });
        };
        let per_gemm = if winograd { 1 } else { images_per_gemm(&g) };
        let (out, _) = crate::ops::par_chunks_zeroed(n * o * p, per_gemm * o * p, |i, y| {
            let first = i * per_gemm;
            let x_chunk = &x[first * g.chw()..(first + y.len() / (o * p)) * g.chw()];
            if per_gemm == 1 {
                image(x_chunk, y);
            } else {
                images(x_chunk, y);
            }
            if relu {
                relu_in_place(y);
            }
        });
        let out = Arc::new(out);
        let op = Conv2dBackward {
            // dW reads X and dX reads W: keep each only if the other needs a gradient.
            input: self.kept_if(weight.requires_grad()),
            weight: weight.kept_if(self.requires_grad()),
            bias: bias.map(Tensor::graph_handle),
            geometry: g,
            winograd,
            output: relu.then(|| Arc::clone(&out)),
        };
        Tensor::from_custom_op_storage(out, &[n, o, g.oh, g.ow], Box::new(op))
    }
}

/// Checks the shapes of a convolution and works out its geometry.
fn conv_geometry(
    x: &[usize],
    w: &[usize],
    b: Option<&[usize]>,
    cfg: Conv2dConfig,
) -> Result<Geometry> {
    let mismatch = |rhs: &[usize]| TensorError::ShapeMismatch {
        op: "conv2d",
        lhs: x.to_vec(),
        rhs: rhs.to_vec(),
    };
    if x.len() != 4 || w.len() != 4 || x[1] != w[1] {
        return Err(mismatch(w));
    }
    if let Some(b) = b {
        if b != [w[0]] {
            return Err(mismatch(b));
        }
    }
    let positive = [
        cfg.stride.0,
        cfg.stride.1,
        cfg.dilation.0,
        cfg.dilation.1,
        w[0],
        w[1],
        w[2],
        w[3],
    ];
    if positive.contains(&0) {
        return Err(TensorError::InvalidArgument {
            op: "conv2d",
            reason: format!("stride, dilation, channels and kernel size must be positive: {cfg:?}, kernel {w:?}"),
        });
    }
    let oh = Geometry::out_size(x[2], w[2], cfg.stride.0, cfg.padding.0, cfg.dilation.0);
    let ow = Geometry::out_size(x[3], w[3], cfg.stride.1, cfg.padding.1, cfg.dilation.1);
    let (Some(oh), Some(ow)) = (oh, ow) else {
        return Err(TensorError::InvalidShape {
            op: "conv2d",
            shape: x.to_vec(),
            reason: format!("kernel {:?} with {cfg:?} does not fit the input", &w[2..]),
        });
    };
    Ok(Geometry {
        c: x[1],
        h: x[2],
        w: x[3],
        kernel: (w[2], w[3]),
        stride: cfg.stride,
        padding: cfg.padding,
        dilation: cfg.dilation,
        oh,
        ow,
    })
}

/// `max(v, 0)` for every element of an image's output, while it is still in cache.
fn relu_in_place<T: Element>(y: &mut [T]) {
    for v in y {
        // As `Tensor::relu`, whose values the fused op reproduces exactly.
        *v = if *v > T::zero() { *v } else { T::zero() };
    }
}

/// An image's output gradient masked by the fused ReLU: `dy` where `y > 0`, else 0.
fn mask_relu_grad<T: Element>(y: &[T], dy: &[T], masked: &mut [T]) {
    for ((m, &y), &g) in masked.iter_mut().zip(y).zip(dy) {
        *m = if y > T::zero() { g } else { T::zero() };
    }
}

/// `Σ row` in eight interleaved partial sums: vectorisable (a plain float sum is one
/// dependent add per element), in a fixed order, so the same on any thread count.
fn lane_sum<T: Element>(row: &[T]) -> T {
    let mut lanes = [T::zero(); 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().copied().sum::<T>() + rest.iter().copied().sum::<T>()
}

/// The record of a convolution, with its derivative.
struct Conv2dBackward<T: Element> {
    input: Tensor<T>,
    weight: Tensor<T>,
    bias: Option<Tensor<T>>,
    geometry: Geometry,
    /// Whether the forward pass (and so the backward pass) ran by Winograd.
    winograd: bool,
    /// With a fused ReLU, its output (the op's output), whose sign masks the gradient.
    output: Option<Arc<Vec<T>>>,
}

/// One chunk of images' share of the parameter gradients.
struct ChunkGrads<T> {
    /// Partial `dW` (transformed, for Winograd); empty if not wanted.
    weight: Vec<T>,
    /// Partial `db`; empty if not wanted.
    bias: Vec<T>,
}

impl<T: Element> CustomOp<T> for Conv2dBackward<T> {
    fn name(&self) -> &'static str {
        if self.output.is_some() {
            "conv2d+relu"
        } else {
            "conv2d"
        }
    }

    fn inputs(&self) -> Vec<&Tensor<T>> {
        let mut v = vec![&self.input, &self.weight];
        v.extend(self.bias.as_ref());
        v
    }

    fn kept_buffers(&self) -> Vec<(usize, usize)> {
        self.output
            .iter()
            .map(|y| (y.as_ptr() as usize, std::mem::size_of_val(&y[..])))
            .collect()
    }

    fn backward(&self, grad: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>> {
        let g = self.geometry;
        let n = self.input.shape()[0];
        let o = self.weight.shape()[0];
        let (k, p, chw) = (g.k(), g.p(), g.chw());
        let dy = grad.values();
        let need_dx = self.input.requires_grad();
        let need_dw = self.weight.requires_grad();
        let need_db = self.bias.as_ref().is_some_and(|b| b.requires_grad());
        // X is kept (and read) only for dW, W only for dX.
        let x = if need_dw {
            self.input.values()
        } else {
            Cow::Borrowed(&[][..])
        };
        let w = if need_dx {
            self.weight.values()
        } else {
            Cow::Borrowed(&[][..])
        };

        // Winograd's backward reads the transformed weights for dX only.
        let winograd_weights = self.winograd.then(|| {
            if need_dx {
                winograd::transform_weights(&w, o, g.c, winograd::WeightLayout::ByOutput)
            } else {
                Vec::new()
            }
        });
        let dw_len = match (need_dw, self.winograd) {
            (false, _) => 0,
            (true, true) => winograd::weight_grad_len(o, g.c),
            (true, false) => o * k,
        };
        let workspace = match &winograd_weights {
            Some(_) => winograd::backward_workspace(&g, o),
            None => im2col_backward_workspace(&g, o),
        };
        // A fused ReLU's masked gradient of one image, built where it is read.
        let mask_len = if self.output.is_some() { o * p } else { 0 };
        // Chunks of images fixed by the batch size alone, not by the thread count: each
        // chunk's partial dW and db are summed in chunk order, so results are bitwise the
        // same on any number of threads.
        let per_task = n.div_ceil(BACKWARD_CHUNKS).max(1);
        // Task `t`: the chunk's images, writing their dX into `dx_chunk` (zeroed) if wanted.
        let task = |t: usize, mut dx_chunk: Option<&mut [T]>| {
            let mut part = ChunkGrads {
                weight: vec![T::zero(); dw_len],
                bias: vec![T::zero(); if need_db { o } else { 0 }],
            };
            T::with_workspace(workspace + mask_len, |ws| {
                let (ws, masked) = ws.split_at_mut(workspace);
                for i in t * per_task..n.min((t + 1) * per_task) {
                    let local = i - t * per_task;
                    let dy_i = match &self.output {
                        Some(y) => {
                            let at = i * o * p..(i + 1) * o * p;
                            mask_relu_grad(&y[at.clone()], &dy[at], masked);
                            &masked[..]
                        }
                        None => &dy[i * o * p..(i + 1) * o * p],
                    };
                    if need_db {
                        for (s, row) in part.bias.iter_mut().zip(dy_i.chunks(p.max(1))) {
                            *s += lane_sum(row);
                        }
                    }
                    let x_i = if need_dw {
                        &x[i * chw..(i + 1) * chw]
                    } else {
                        &[][..]
                    };
                    let dx_i = dx_chunk
                        .as_deref_mut()
                        .map(|d| &mut d[local * chw..(local + 1) * chw]);
                    let dw = need_dw.then_some(&mut part.weight[..]);
                    match &winograd_weights {
                        Some(u) => winograd::backward_image(dy_i, &g, o, u, x_i, dx_i, dw, ws),
                        None => im2col_backward_image(dy_i, &g, o, &w, x_i, dx_i, dw, ws),
                    }
                }
            });
            part
        };
        let (dx, partials): (Vec<T>, Vec<ChunkGrads<T>>) = if need_dx {
            crate::ops::par_chunks_zeroed(n * chw, per_task * chw, |t, d| task(t, Some(d)))
        } else {
            let tasks = n.div_ceil(per_task);
            let parts = (0..tasks).into_par_iter().map(|t| task(t, None)).collect();
            (Vec::new(), parts)
        };

        // Partial sums in chunk order.
        let sum_parts = |len: usize, part: fn(&ChunkGrads<T>) -> &[T]| {
            let mut total = vec![T::zero(); len];
            for p in &partials {
                for (t, &v) in total.iter_mut().zip(part(p)) {
                    *t += v;
                }
            }
            total
        };
        let dw = need_dw.then(|| {
            let mut total = sum_parts(dw_len, |p| &p.weight);
            if self.winograd {
                total = winograd::finish_weight_grad(&total, o, g.c);
            }
            Tensor::from_contiguous(total, self.weight.shape())
        });
        let db = self
            .bias
            .as_ref()
            .filter(|_| need_db)
            .map(|b| Tensor::from_contiguous(sum_parts(o, |p| &p.bias), b.shape()));
        let dx = need_dx.then(|| Tensor::from_contiguous(dx, self.input.shape()));
        let mut grads = vec![dx, dw];
        if self.bias.is_some() {
            grads.push(db);
        }
        Ok(grads)
    }
}

/// Workspace (elements) for [`im2col_backward_image`]: one tile's columns, its column
/// gradient (or its columns transposed), and its output gradient transposed.
fn im2col_backward_workspace(g: &Geometry, o: usize) -> usize {
    (2 * g.k() + o) * max_tile_pixels(g)
}

/// One image's backward pass by im2col: adds its `dW` (`o × k`) into `dw` and writes its
/// `dX` (`c × h × w`) into `dx`, each if wanted; `ws` holds [`im2col_backward_workspace`]
/// elements.
#[allow(clippy::too_many_arguments)]
fn im2col_backward_image<T: Element>(
    dy: &[T],
    g: &Geometry,
    o: usize,
    w: &[T],
    x: &[T],
    mut dx: Option<&mut [T]>,
    mut dw: Option<&mut [T]>,
    ws: &mut [T],
) {
    let (k, p, tile) = (g.k(), g.p(), max_tile_pixels(g));
    let (cols, rest) = ws.split_at_mut(k * tile);
    let (dcols, rest) = rest.split_at_mut(k * tile);
    let dy_t = &mut rest[..o * tile];
    for (r0, r1) in row_tiles(g) {
        let (p0, pt) = (r0 * g.ow, (r1 - r0) * g.ow);
        if let Some(dw) = dw.as_deref_mut() {
            im2col(x, g, (r0, r1), cols);
            let cols_t = &mut dcols[..pt * k];
            transpose(cols, (k, pt, pt), cols_t, k);
            transpose(&dy[p0..], (o, pt, p), dy_t, o);
            // dW[o×k] += dY[:, tile][o×pt] · cols[k×pt]ᵀ. The product runs over pixels, so
            // matrixmultiply packs its operands with contiguous loads only if they are
            // stored pixel-major: both are transposed first (8×8 blocks; with the AVX
            // kernel this is cheaper than the gathered packing, measured: LeNet conv2 dW
            // 73.6 -> 82.0 GFLOP/s, before that kernel it was slower).
            gemm(
                MatRef::new(dy_t, 0, (o, pt), (1, o)),
                MatRef::new(cols_t, 0, (pt, k), (k, 1)),
                T::one(),
                MatMut::new(dw, (o, k), k),
            );
        }
        if let Some(dx) = dx.as_deref_mut() {
            // dcols[k×pt] = W[o×k]ᵀ · dY[:, tile][o×pt]
            gemm(
                MatRef::new(w, 0, (k, o), (1, k)),
                MatRef::new(dy, p0, (o, pt), (p, 1)),
                T::zero(),
                MatMut::new(dcols, (k, pt), pt),
            );
            col2im(dcols, g, (r0, r1), dx);
        }
    }
}

#[cfg(test)]
mod tests;
