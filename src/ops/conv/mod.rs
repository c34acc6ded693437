//! 2-D convolution (NCHW, weight `[c_out, c_in, kh, kw]` as PyTorch): one op whose
//! algorithm is chosen per layer ([`ConvAlgorithm`]) — im2col + GEMM, the implicit GEMM,
//! Winograd F(4×4, 3×3) (or F(2×2, 3×3)) for 3×3 stride-1 layers with enough channels, the
//! depthwise kernel, or the direct definition.
//!
//! This module checks shapes, runs the images of a batch in parallel through the chosen
//! algorithm's per-image kernel (`kernels::conv`) and records the derivative
//! (`backward.rs`); the configuration and the choice of algorithm are in `config.rs`.
//! Parallelism is rayon over images (forward) or over contiguous chunks of the batch
//! (backward, one partial `dW` per chunk); every GEMM inside runs single-threaded, and
//! workspaces are per thread and reused across calls. The layers keep their forward
//! kernel (the prepared weights) between calls that record no gradient (`kept.rs`).
//!
//! [`Tensor::conv2d_relu`] is the same op followed by a fused ReLU (applied to each image's
//! output in cache; backward masks each image's gradient where it is read). Where no
//! gradient is recorded, [`Tensor::conv2d_relu6`] clamps and [`Tensor::conv2d_add`] adds a
//! residual (and rectifies) the same way.

mod backward;
mod config;
pub(crate) mod kept;

pub use crate::kernels::conv::im2col::{col2im, im2col, im2col_strided};
pub use crate::kernels::conv::winograd;
pub use crate::kernels::Geometry;
pub use config::{Conv2dConfig, ConvAlgorithm};

use crate::autograd::profile::{self, Phase};
use crate::error::Result;
use crate::kernels::conv::ConvForward;
use crate::kernels::conv::Epilogue;
use crate::kernels::elementwise::{par_chunks_overwritten, par_chunks_zeroed};
use crate::tensor::{Element, Tensor};
use backward::Conv2dBackward;
use config::conv_geometry;
use kept::{KeptKernel, KernelKey};
use std::borrow::Cow;
use std::sync::Arc;

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
        self.conv2d_layer(weight, bias, cfg, Then::Nothing, None)
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
        self.conv2d_layer(weight, bias, cfg, Then::Relu, None)
    }

    /// `clamp(conv2d(x), 0, 6)` (MobileNet's ReLU6). When no gradient is recorded
    /// (inference: under [`no_grad`](crate::autograd::no_grad), or nothing requires one) the
    /// clamp is applied to each image's output in cache, as [`Tensor::conv2d_relu`] does;
    /// otherwise it is the separate [`Tensor::clamp`], whose gradient is recorded. The
    /// values are the same either way.
    /// ```
    /// use tensorgrad::autograd::no_grad;
    /// use tensorgrad::ops::conv::Conv2dConfig;
    /// use tensorgrad::Tensor;
    ///
    /// let x = Tensor::<f32>::from_vec(vec![-1.0, 2.0, 7.0, 6.5], &[1, 1, 2, 2])?;
    /// let w = Tensor::<f32>::ones(&[1, 1, 1, 1]);
    /// let y = no_grad(|| x.conv2d_relu6(&w, None, Conv2dConfig::default()))?;
    /// assert_eq!(y.to_vec(), vec![0.0, 2.0, 6.0, 6.0]);
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn conv2d_relu6(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        cfg: Conv2dConfig,
    ) -> Result<Tensor<T>> {
        self.conv2d_layer(weight, bias, cfg, Then::Relu6, None)
    }

    /// `conv2d(x) + residual`, rectified if `relu`: the join of a residual block whose body
    /// ends in this convolution. When no gradient is recorded (inference) the sum (and the
    /// rectifier) are applied to each image's output while it is in cache, instead of a
    /// separate pass over the batch that reads the convolution's output back; otherwise it
    /// is [`Tensor::conv2d`] followed by [`Tensor::add`] or [`Tensor::add_relu`], whose
    /// gradients are recorded. The values are bitwise the same either way; an error if
    /// `residual` has another shape than the output.
    /// ```
    /// use tensorgrad::autograd::no_grad;
    /// use tensorgrad::ops::conv::Conv2dConfig;
    /// use tensorgrad::Tensor;
    ///
    /// let x = Tensor::<f32>::from_vec(vec![1.0, -2.0, 3.0, -4.0], &[1, 1, 2, 2])?;
    /// let w = Tensor::<f32>::from_vec(vec![2.0], &[1, 1, 1, 1])?;
    /// let skip = Tensor::<f32>::from_vec(vec![1.0, 1.0, 1.0, 1.0], &[1, 1, 2, 2])?;
    /// let y = no_grad(|| x.conv2d_add(&w, None, Conv2dConfig::default(), &skip, true))?;
    /// assert_eq!(y.to_vec(), vec![3.0, 0.0, 7.0, 0.0]);
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn conv2d_add(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        cfg: Conv2dConfig,
        residual: &Tensor<T>,
        relu: bool,
    ) -> Result<Tensor<T>> {
        self.conv2d_layer(weight, bias, cfg, Then::Add { residual, relu }, None)
    }

    /// The convolution followed by `then`: the one entry point of the four above, and of
    /// the layers ([`crate::nn::Conv2d`], [`crate::nn::ConvBn`]), which pass the slot
    /// `kept` where their forward kernel is kept between the calls that record no
    /// gradient ([`kept`]). A call that records one empties the slot.
    pub(crate) fn conv2d_layer(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        cfg: Conv2dConfig,
        then: Then<'_, T>,
        mut kept: Option<&mut KeptKernel<T>>,
    ) -> Result<Tensor<T>> {
        let recorded = crate::autograd::is_grad_enabled()
            && (self.requires_grad()
                || weight.requires_grad()
                || bias.is_some_and(Tensor::requires_grad)
                || matches!(then, Then::Add { residual, .. } if residual.requires_grad()));
        if recorded {
            if let Some(kept) = kept.take() {
                kept.clear();
            }
        }
        match then {
            Then::Nothing => self.conv2d_fused(weight, bias, cfg, Fused::None, None, kept),
            Then::Relu => self.conv2d_fused(weight, bias, cfg, Fused::Relu, None, kept),
            Then::Relu6 if recorded => Ok(self.conv2d(weight, bias, cfg)?.clamp(0.0, 6.0)),
            // Nothing records a gradient: clamped image by image, while in cache.
            Then::Relu6 => self.conv2d_fused(weight, bias, cfg, Fused::Relu6, None, kept),
            Then::Add { residual, relu } => {
                let g = conv_geometry(self.shape(), weight.shape(), bias.map(|b| b.shape()), cfg)?;
                let out = [self.shape()[0], weight.shape()[0], g.oh, g.ow];
                if residual.shape() != out {
                    return Err(crate::TensorError::ShapeMismatch {
                        op: "conv2d_add",
                        lhs: out.to_vec(),
                        rhs: residual.shape().to_vec(),
                    });
                }
                if recorded {
                    let y = self.conv2d(weight, bias, cfg)?;
                    return if relu {
                        y.add_relu(residual)
                    } else {
                        y.add(residual)
                    };
                }
                let act = if relu { Fused::AddRelu } else { Fused::Add };
                let skip = residual.values();
                self.conv2d_fused(weight, bias, cfg, act, Some(&skip), kept)
            }
        }
    }

    /// [`Tensor::conv2d`], followed by the fused `act`, which adds `residual` (as many
    /// values as the output) for [`Fused::Add`] and [`Fused::AddRelu`].
    fn conv2d_fused(
        &self,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        cfg: Conv2dConfig,
        act: Fused,
        residual: Option<&[T]>,
        kept: Option<&mut KeptKernel<T>>,
    ) -> Result<Tensor<T>> {
        let g = conv_geometry(self.shape(), weight.shape(), bias.map(|b| b.shape()), cfg)?;
        let (n, o, p) = (self.shape()[0], weight.shape()[0], g.p());
        let x = self.values();
        let w = weight.values();
        let b = bias.map(|b| b.values());
        let (forward, backward) =
            cfg.algorithm
                .resolve_passes(&g, o, cfg.groups, T::DTYPE == "f32")?;
        let built;
        let kernel: &dyn ConvForward<T> = match kept {
            Some(kept) => {
                let key = KernelKey {
                    weight: weight.values_key(),
                    geometry: g,
                    outputs: o,
                    groups: cfg.groups,
                    algorithm: forward,
                };
                kept.get_or_build(key, || {
                    forward.forward_kernel(&g, o, cfg.groups, Cow::Owned(w.to_vec()))
                })
            }
            None => {
                built = forward.forward_kernel(&g, o, cfg.groups, Cow::Borrowed(&*w));
                &*built
            }
        };
        // Small maps share one product between images, but at most a thread's share of the
        // batch: mobilenet-v2's 1×1 layers on 1×1 maps put all 128 images into one product,
        // which ran on one thread. A group's images are bitwise what they are alone
        // (tested), so the split, unlike backward's, may follow the thread count.
        let per_call = kernel
            .images_per_call()
            .clamp(1, n.div_ceil(rayon::current_num_threads()).max(1));
        let workspace = kernel.workspace();
        let flops = layer_flops(&g, n, o, cfg.groups);
        let name = || layer_name(&g, o, cfg.groups, forward);
        let images = |i: usize, y: &mut [T]| {
            let first = i * per_call;
            let x_chunk = &x[first * g.chw()..(first + y.len() / (o * p)) * g.chw()];
            // The residual's values of these images.
            let len = y.len();
            let skip = || &residual.expect("a residual for the fused add")[first * o * p..][..len];
            // Applied in the kernel's stores where it can (F(4×4) Winograd, im2col's
            // grouped products); else a pass over the images' outputs while in cache.
            let epilogue = match act {
                Fused::Relu => Some(Epilogue::Relu),
                Fused::Relu6 => Some(Epilogue::Relu6),
                Fused::Add => Some(Epilogue::Add(skip())),
                Fused::AddRelu => Some(Epilogue::AddRelu(skip())),
                Fused::None => None,
            };
            let fused = T::with_workspace(workspace, |ws| match epilogue {
                Some(e) => kernel.forward_fused(x_chunk, b.as_deref(), e, y, ws),
                None => false,
            });
            if fused {
                return;
            }
            T::with_workspace(workspace, |ws| kernel.forward(x_chunk, b.as_deref(), y, ws));
            // The same rule the fused stores are tested against (the residual is already
            // these images').
            if let Some(epilogue) = epilogue {
                epilogue.apply(y, 0);
            }
        };
        let (out, _) = profile::time_layer(Phase::Forward, name, flops, || {
            if kernel.writes_every_output() {
                par_chunks_overwritten(n * o * p, per_call * o * p, images)
            } else {
                par_chunks_zeroed(n * o * p, per_call * o * p, images)
            }
        });
        let out = Arc::new(out);
        let op = Conv2dBackward {
            // dW reads X and dX reads W: keep each only if the other needs a gradient.
            input: self.kept_if(weight.requires_grad()),
            weight: weight.kept_if(self.requires_grad()),
            bias: bias.map(Tensor::graph_handle),
            geometry: g,
            groups: cfg.groups,
            algorithm: backward,
            output: (act == Fused::Relu).then(|| crate::memory::SharedBuffer::new(&out)),
        };
        Tensor::from_custom_op_storage(out, &[n, o, g.oh, g.ow], Box::new(op))
    }
}

/// What follows a convolution ([`Tensor::conv2d_layer`]).
#[derive(Clone, Copy)]
pub(crate) enum Then<'r, T: Element> {
    Nothing,
    Relu,
    /// `clamp(·, 0, 6)`.
    Relu6,
    /// `+ residual`, rectified if `relu`.
    Add {
        residual: &'r Tensor<T>,
        relu: bool,
    },
}

/// The activation applied to a convolution's output in cache.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fused {
    None,
    /// Recorded: backward masks the gradient by the output's sign.
    Relu,
    /// Only where no gradient is recorded ([`Tensor::conv2d_relu6`]).
    Relu6,
    /// `+ residual`, only where no gradient is recorded ([`Tensor::conv2d_add`]).
    Add,
    /// `relu(· + residual)`, only where no gradient is recorded.
    AddRelu,
}

/// Floating-point operations of one pass of a convolution over `n` images, as its
/// definition counts them: a multiply and an add per output, input channel of its group
/// and tap (the profiler's measure of every algorithm, Winograd included).
fn layer_flops(g: &Geometry, n: usize, o: usize, groups: usize) -> f64 {
    2.0 * (n * o * g.p() * (g.c / groups) * g.kernel.0 * g.kernel.1) as f64
}

/// A convolution layer as the profiler names it: channels, kernel, stride, groups, input
/// size and algorithm.
fn layer_name(g: &Geometry, o: usize, groups: usize, algorithm: ConvAlgorithm) -> String {
    format!(
        "conv {}→{o} {}×{}/{} g{groups} {}×{} {algorithm:?}",
        g.c, g.kernel.0, g.kernel.1, g.stride.0, g.h, g.w
    )
}

#[cfg(test)]
mod tests;
