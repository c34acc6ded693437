//! The derivative of a convolution: per image, through the same algorithm the forward
//! pass ran by, over fixed chunks of the batch so that results do not depend on the
//! thread count.

use super::ConvAlgorithm;
use crate::autograd::profile::{self, Phase};
use crate::autograd::CustomOp;
use crate::error::Result;
use crate::kernels::elementwise::{par_chunks_overwritten, par_chunks_zeroed};
use crate::kernels::{Element, Geometry};
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::borrow::Cow;

/// Chunks of a batch whose partial weight gradients backward sums, in order. Fixed (not
/// the thread count) so results are bitwise the same on any number of threads; 4 keeps
/// the extra partial sums within noise (train-step A/B: 16 chunks cost 4–7% on LeNet)
/// and still feeds 4 threads — more threads would idle in this loop.
const BACKWARD_CHUNKS: usize = 4;

/// An image's output gradient masked by the fused ReLU: `dy` where `y > 0`, else 0.
fn mask_relu_grad<T: Element>(y: &[T], dy: &[T], masked: &mut [T]) {
    for ((m, &y), &g) in masked.iter_mut().zip(y).zip(dy) {
        *m = if y > T::zero() { g } else { T::zero() };
    }
}

/// The record of a convolution, with its derivative.
pub(super) struct Conv2dBackward<T: Element> {
    pub(super) input: Tensor<T>,
    pub(super) weight: Tensor<T>,
    pub(super) bias: Option<Tensor<T>>,
    pub(super) geometry: Geometry,
    /// Channel groups.
    pub(super) groups: usize,
    /// The algorithm the backward pass runs by (resolved; the forward pass's too, except
    /// for `Auto`'s layers in [`ConvAlgorithm::resolve_passes`]).
    pub(super) algorithm: ConvAlgorithm,
    /// With a fused ReLU, its output (the op's output), whose sign masks the gradient.
    pub(super) output: Option<crate::memory::SharedBuffer<T>>,
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
        let (n, o) = (self.input.shape()[0], self.weight.shape()[0]);
        // dX and dW each cost what the forward pass did.
        let passes = [self.input.requires_grad(), self.weight.requires_grad()]
            .iter()
            .filter(|&&b| b)
            .count();
        let flops = passes as f64 * super::layer_flops(&g, n, o, self.groups);
        let name = || super::layer_name(&g, o, self.groups, self.algorithm);
        profile::time_layer(Phase::Backward, name, flops, || self.gradients(grad))
    }
}

impl<T: Element> Conv2dBackward<T> {
    /// dX, dW and db (each where wanted).
    fn gradients(&self, grad: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>> {
        let g = self.geometry;
        let n = self.input.shape()[0];
        let o = self.weight.shape()[0];
        let (p, chw) = (g.p(), g.chw());
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

        // The kernel reads the weights for dX only (Winograd transforms them first).
        let kernel = self.algorithm.backward_kernel(&g, o, self.groups, &w);
        let dw_len = if need_dw { kernel.weight_grad_len() } else { 0 };
        let workspace = kernel.workspace();
        // Images per kernel call (im2col shares its products between small images).
        let per_call = kernel.images_per_call().max(1);
        // A fused ReLU's masked gradient of one call's images, built where it is read.
        let mask_len = if self.output.is_some() {
            per_call * o * p
        } else {
            0
        };
        // Chunks of images fixed by the batch size alone, not by the thread count: each
        // chunk's partial dW and db are summed in chunk order, so results are bitwise the
        // same on any number of threads.
        let per_task = n.div_ceil(BACKWARD_CHUNKS).max(1);
        // Task `t`: the chunk's images, writing their dX into `dx_chunk` (zeroed) if wanted.
        let task = |t: usize, mut dx_chunk: Option<&mut [T]>| {
            let mut part = ChunkGrads {
                weight: crate::memory::take_zeroed(dw_len),
                bias: vec![T::zero(); if need_db { o } else { 0 }],
            };
            T::with_workspace(workspace + mask_len, |ws| {
                let (ws, masked) = ws.split_at_mut(workspace);
                let (start, end) = (t * per_task, n.min((t + 1) * per_task));
                for first in (start..end).step_by(per_call) {
                    let last = (first + per_call).min(end);
                    let at = first * o * p..last * o * p;
                    let dy_g = match &self.output {
                        Some(y) => {
                            let masked = &mut masked[..at.len()];
                            mask_relu_grad(&y[at.clone()], &dy[at], masked);
                            &masked[..]
                        }
                        None => &dy[at],
                    };
                    if need_db {
                        for dy_i in dy_g.chunks_exact((o * p).max(1)) {
                            for (s, row) in part.bias.iter_mut().zip(dy_i.chunks(p.max(1))) {
                                *s += crate::kernels::reduce::sum(row);
                            }
                        }
                    }
                    let x_g = if need_dw {
                        &x[first * chw..last * chw]
                    } else {
                        &[][..]
                    };
                    let dx_g = dx_chunk
                        .as_deref_mut()
                        .map(|d| &mut d[(first - start) * chw..(last - start) * chw]);
                    let dw = need_dw.then_some(&mut part.weight[..]);
                    kernel.backward_images(last - first, dy_g, x_g, dx_g, dw, ws);
                }
            });
            part
        };
        let (dx, partials): (Vec<T>, Vec<ChunkGrads<T>>) = if need_dx {
            let task = |t: usize, d: &mut [T]| task(t, Some(d));
            if kernel.writes_every_input_grad() {
                par_chunks_overwritten(n * chw, per_task * chw, task)
            } else {
                par_chunks_zeroed(n * chw, per_task * chw, task)
            }
        } else {
            let tasks = n.div_ceil(per_task);
            let parts = (0..tasks).into_par_iter().map(|t| task(t, None)).collect();
            (Vec::new(), parts)
        };

        // Partial sums in chunk order.
        let sum_parts = |len: usize, part: fn(&ChunkGrads<T>) -> &[T]| {
            let mut total = crate::memory::take_zeroed(len);
            for p in &partials {
                for (t, &v) in total.iter_mut().zip(part(p)) {
                    *t += v;
                }
            }
            total
        };
        let dw = need_dw.then(|| {
            let total = kernel.finish_weight_grad(sum_parts(dw_len, |p| &p.weight));
            Tensor::from_contiguous(total, self.weight.shape())
        });
        let db = self
            .bias
            .as_ref()
            .filter(|_| need_db)
            .map(|b| Tensor::from_contiguous(sum_parts(o, |p| &p.bias), b.shape()));
        for part in partials {
            crate::memory::give(part.weight);
        }
        let dx = need_dx.then(|| Tensor::from_contiguous(dx, self.input.shape()));
        let mut grads = vec![dx, dw];
        if self.bias.is_some() {
            grads.push(db);
        }
        Ok(grads)
    }
}
