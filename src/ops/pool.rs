//! Pooling over NCHW planes: max (the argmax of each window kept as a 32-bit index into its
//! plane; the derivative scatters into each plane in parallel), average (count includes
//! padding, PyTorch's default) and global average.

use crate::autograd::CustomOp;
use crate::error::{Result, TensorError};
use crate::kernels::{pool, Geometry};
use crate::tensor::{Element, Tensor};
use rayon::prelude::*;

/// Window size, stride and padding of a pooling layer (square).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dConfig {
    /// Window side.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    /// Implicit padding on each side (at most `kernel / 2`, as PyTorch).
    pub padding: usize,
}

impl Pool2dConfig {
    /// A window of `kernel` with stride `kernel` and no padding (the usual 2×2/2 pool).
    pub fn square(kernel: usize) -> Self {
        Pool2dConfig {
            kernel,
            stride: kernel,
            padding: 0,
        }
    }
}

/// Checks an NCHW input against a pooling config; the geometry of one plane (`c = 1`).
pub(crate) fn pool_geometry(
    op: &'static str,
    shape: &[usize],
    cfg: Pool2dConfig,
) -> Result<Geometry> {
    if shape.len() != 4 {
        return Err(TensorError::InvalidShape {
            op,
            shape: shape.to_vec(),
            reason: "expected an NCHW tensor".into(),
        });
    }
    if cfg.kernel == 0 || cfg.stride == 0 || cfg.padding > cfg.kernel / 2 {
        return Err(TensorError::InvalidArgument {
            op,
            reason: format!(
                "{cfg:?}: kernel and stride must be positive and padding at most kernel/2"
            ),
        });
    }
    let size = |n| Geometry::out_size(n, cfg.kernel, cfg.stride, cfg.padding, 1);
    let (Some(oh), Some(ow)) = (size(shape[2]), size(shape[3])) else {
        return Err(TensorError::InvalidShape {
            op,
            shape: shape.to_vec(),
            reason: format!("window {} does not fit", cfg.kernel),
        });
    };
    Ok(Geometry {
        c: 1,
        h: shape[2],
        w: shape[3],
        kernel: (cfg.kernel, cfg.kernel),
        stride: (cfg.stride, cfg.stride),
        padding: (cfg.padding, cfg.padding),
        dilation: (1, 1),
        oh,
        ow,
    })
}

impl<T: Element> Tensor<T> {
    /// Max pooling; the gradient goes to the first maximum of each window.
    /// ```
    /// use tensorgrad::ops::pool::Pool2dConfig;
    /// use tensorgrad::Tensor;
    ///
    /// let x = Tensor::<f64>::arange(16).reshape(&[1, 1, 4, 4])?;
    /// assert_eq!(x.max_pool2d(Pool2dConfig::square(2))?.to_vec(), vec![5.0, 7.0, 13.0, 15.0]);
    /// assert_eq!(x.avg_pool2d(Pool2dConfig::square(2))?.to_vec(), vec![2.5, 4.5, 10.5, 12.5]);
    /// assert_eq!(x.global_avg_pool2d()?.shape(), &[1, 1]);
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn max_pool2d(&self, cfg: Pool2dConfig) -> Result<Tensor<T>> {
        let g = pool_geometry("max_pool2d", self.shape(), cfg)?;
        let planes = self.shape()[0] * self.shape()[1];
        let (hw, p) = (g.h * g.w, g.p());
        if u32::try_from(hw).is_err() {
            return Err(TensorError::InvalidShape {
                op: "max_pool2d",
                shape: self.shape().to_vec(),
                reason: "a plane has more than 2³² pixels".into(),
            });
        }
        let x = self.values();
        // Every window writes its output: no zeroing first.
        let mut out = crate::memory::take_stale(planes * p);
        let shape = [self.shape()[0], self.shape()[1], g.oh, g.ow];
        if !(crate::autograd::is_grad_enabled() && self.requires_grad()) {
            // No graph: the positions of the maxima would never be read.
            out.par_chunks_mut(p.max(1))
                .enumerate()
                .for_each(|(plane, out)| {
                    pool::max_pool_values(&x[plane * hw..(plane + 1) * hw], &g, out);
                });
            return Tensor::from_vec(out, &shape);
        }
        let mut argmax = vec![0u32; planes * p];
        out.par_chunks_mut(p.max(1))
            .zip(argmax.par_chunks_mut(p.max(1)))
            .enumerate()
            .for_each(|(plane, (out, pos))| {
                pool::max_pool_plane(&x[plane * hw..(plane + 1) * hw], &g, out, pos);
            });
        let op = MaxPoolBackward {
            input: self.graph_handle(),
            argmax,
            plane: hw,
        };
        Tensor::from_custom_op(out, &shape, Box::new(op))
    }

    /// Average pooling; padded positions count as zeros in the average (PyTorch's default).
    pub fn avg_pool2d(&self, cfg: Pool2dConfig) -> Result<Tensor<T>> {
        let g = pool_geometry("avg_pool2d", self.shape(), cfg)?;
        let planes = self.shape()[0] * self.shape()[1];
        let (hw, p) = (g.h * g.w, g.p());
        let x = self.values();
        // Every window writes its output: no zeroing first.
        let mut out = crate::memory::take_stale(planes * p);
        out.par_chunks_mut(p.max(1))
            .enumerate()
            .for_each(|(plane, out)| {
                pool::avg_pool_plane(&x[plane * hw..(plane + 1) * hw], &g, out);
            });
        let shape = [self.shape()[0], self.shape()[1], g.oh, g.ow];
        let op = AvgPoolBackward {
            input: self.graph_handle(),
            geometry: g,
        };
        Tensor::from_custom_op(out, &shape, Box::new(op))
    }

    /// Mean over the spatial dims: NCHW → NC.
    pub fn global_avg_pool2d(&self) -> Result<Tensor<T>> {
        if self.ndim() != 4 {
            return Err(TensorError::InvalidShape {
                op: "global_avg_pool2d",
                shape: self.shape().to_vec(),
                reason: "expected an NCHW tensor".into(),
            });
        }
        self.mean(&[2, 3], false)
    }
}

/// Derivative of max pooling: each output's gradient goes to its window's first maximum.
struct MaxPoolBackward<T: Element> {
    input: Tensor<T>,
    /// Index of each output's maximum in its plane.
    argmax: Vec<u32>,
    /// Pixels per input plane.
    plane: usize,
}

impl<T: Element> CustomOp<T> for MaxPoolBackward<T> {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }

    fn inputs(&self) -> Vec<&Tensor<T>> {
        vec![&self.input]
    }

    fn backward(&self, grad: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>> {
        let dy = grad.values();
        let planes = self.input.numel() / self.plane.max(1);
        let p = self.argmax.len() / planes.max(1);
        // Plane by plane on the rayon pool, each zeroed in cache by the thread that
        // scatters into it; the sum order within a plane is fixed.
        let (dx, _) = crate::kernels::elementwise::par_chunks_zeroed(
            self.input.numel(),
            self.plane,
            |i, dxp| {
                let at = i * p..(i + 1) * p;
                pool::max_pool_plane_backward(&self.argmax[at.clone()], &dy[at], dxp);
            },
        );
        Ok(vec![Some(Tensor::from_contiguous(dx, self.input.shape()))])
    }

    fn kept_buffers(&self) -> Vec<(usize, usize)> {
        vec![(
            self.argmax.as_ptr() as usize,
            std::mem::size_of_val(&self.argmax[..]),
        )]
    }
}

/// Derivative of average pooling: each output's gradient, spread evenly over its window.
struct AvgPoolBackward<T: Element> {
    input: Tensor<T>,
    geometry: Geometry,
}

impl<T: Element> CustomOp<T> for AvgPoolBackward<T> {
    fn name(&self) -> &'static str {
        "avg_pool2d"
    }

    fn inputs(&self) -> Vec<&Tensor<T>> {
        vec![&self.input]
    }

    fn backward(&self, grad: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>> {
        let g = self.geometry;
        let (hw, p) = (g.h * g.w, g.p());
        let dy = grad.values();
        // Each plane zeroed in cache by the thread that adds into it (a zeroed buffer
        // first cost a second pass over memory: resnet20's stride-2 shortcuts, batch 128,
        // 1 thread, 3.2 ms a step).
        let (dx, _) =
            crate::kernels::elementwise::par_chunks_zeroed(self.input.numel(), hw, |plane, dxp| {
                pool::avg_pool_plane_backward(&dy[plane * p..(plane + 1) * p], &g, dxp);
            });
        Ok(vec![Some(Tensor::from_contiguous(dx, self.input.shape()))])
    }
}

#[cfg(test)]
mod tests {
    use super::Pool2dConfig;
    use crate::testing::*;
    use crate::Tensor;

    /// The outputs are written whole, not added into: over a reused buffer full of NaN
    /// (put back in the pool just before) pooling and matmul give the values of fresh
    /// tensors, with and without a graph.
    #[test]
    fn outputs_overwrite_a_reused_buffer() {
        let x = rand_input(&[4, 8, 32, 32], 5);
        let cfg = |kernel, stride| Pool2dConfig {
            kernel,
            stride,
            padding: 0,
        };
        // 8,192 f64 outputs (64 KiB, a pooled size) for each op.
        let fill = || crate::memory::give(vec![f64::NAN; 8192]);
        let m = x.reshape(&[32, 1024]).unwrap();
        let w = rand_input(&[1024, 256], 6);
        for graph in [true, false] {
            // All four outputs alive at once: none takes another's buffer back.
            let run = || {
                let x = if graph { x.clone() } else { x.detach() };
                [
                    x.max_pool2d(cfg(2, 2)).unwrap(),
                    x.avg_pool2d(cfg(2, 2)).unwrap(),
                    x.avg_pool2d(cfg(1, 2)).unwrap(),
                    m.matmul(&w).unwrap(),
                ]
            };
            crate::memory::release_pooled();
            let fresh = run();
            for _ in 0..4 {
                fill();
            }
            let reused = run();
            for (a, b) in fresh.iter().zip(&reused) {
                let (a, b) = (a.to_vec(), b.to_vec());
                assert_eq!(a.len(), 8192);
                assert!(a.iter().zip(&b).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }

    #[test]
    fn max_pool_values_and_first_index_ties() {
        #[rustfmt::skip]
        let x = Tensor::<f64>::from_vec(vec![
            1.0, 5.0, 5.0, 0.0,
            2.0, 3.0, 1.0, 1.0,
            7.0, 7.0, 0.0, 4.0,
            7.0, 7.0, 4.0, 2.0,
        ], &[1, 1, 4, 4]).unwrap().with_grad();
        let y = x.max_pool2d(Pool2dConfig::square(2)).unwrap();
        assert_eq!(y.to_vec(), vec![5.0, 5.0, 7.0, 4.0]);
        let g = y.sum_all().backward().unwrap();
        #[rustfmt::skip]
        let want = vec![
            0.0, 1.0, 1.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
            1.0, 0.0, 0.0, 1.0,
            0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(g.get(&x).unwrap().to_vec(), want);
    }

    #[test]
    fn avg_pool_counts_padding_as_zeros() {
        let x = Tensor::<f64>::ones(&[1, 1, 2, 2]);
        let cfg = Pool2dConfig {
            kernel: 2,
            stride: 1,
            padding: 1,
        };
        let y = x.avg_pool2d(cfg).unwrap();
        assert_eq!(y.shape(), &[1, 1, 3, 3]);
        assert_eq!(
            y.to_vec(),
            vec![0.25, 0.5, 0.25, 0.5, 1.0, 0.5, 0.25, 0.5, 0.25]
        );
    }

    #[test]
    fn a_nan_in_a_2x2_window_wins_and_takes_the_gradient() {
        let nan = f64::NAN;
        // Window 0 holds a NaN in its bottom row after a larger value; window 1 ties.
        let x =
            Tensor::<f64>::from_vec(vec![1.0, 5.0, 2.0, 2.0, nan, 3.0, 1.0, 2.0], &[1, 1, 2, 4])
                .unwrap()
                .with_grad();
        let y = x.max_pool2d(Pool2dConfig::square(2)).unwrap();
        let v = y.to_vec();
        assert!(v[0].is_nan() && v[1] == 2.0, "{v:?}");
        let grads = y
            .backward_with(&Tensor::from_vec(vec![1.0, 1.0], &[1, 1, 1, 2]).unwrap())
            .unwrap();
        // The NaN (row 1, column 0) and the first of the tied 2s (row 0, column 2).
        assert_eq!(
            grads.get(&x).unwrap().to_vec(),
            vec![0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
        );
    }

    #[test]
    fn max_pool_gradient_is_the_same_on_any_thread_count() {
        // Overlapping windows (stride < kernel): one input can collect several outputs'
        // gradients, summed in a fixed order within its plane.
        let x = rand_input(&[3, 5, 9, 8], 6).with_grad();
        let cfg = Pool2dConfig {
            kernel: 3,
            stride: 1,
            padding: 1,
        };
        let run = |threads| {
            crate::train::with_threads(Some(threads), || {
                let y = x.max_pool2d(cfg).unwrap();
                let g = y.square().sum_all().backward().unwrap();
                g.get(&x).unwrap().to_vec()
            })
            .unwrap()
        };
        let one = run(1);
        assert!(one.iter().any(|&g| g != 0.0));
        for threads in [2, 3] {
            assert!(run(threads) == one, "{threads} threads");
        }
    }

    #[test]
    fn non_overlapping_windows_match_a_naive_maximum() {
        // kernel = stride, no padding: the tiled path; ragged sizes drop the remainder.
        let x = rand_input(&[2, 3, 7, 8], 5);
        let v = x.to_vec();
        for k in [2, 3] {
            let cfg = Pool2dConfig {
                kernel: k,
                stride: k,
                padding: 0,
            };
            let y = x.max_pool2d(cfg).unwrap();
            let (oh, ow) = (7 / k, 8 / k);
            assert_eq!(y.shape(), &[2, 3, oh, ow]);
            let mut want = Vec::new();
            for plane in 0..6 {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut m = f64::NEG_INFINITY;
                        for dy in 0..k {
                            for dx in 0..k {
                                m = m.max(v[plane * 56 + (oy * k + dy) * 8 + ox * k + dx]);
                            }
                        }
                        want.push(m);
                    }
                }
            }
            assert_eq!(y.to_vec(), want);
        }
    }

    #[test]
    fn gradcheck_pools_with_stride_padding_and_ragged_sizes() {
        let cfgs = [
            Pool2dConfig::square(2),
            Pool2dConfig {
                kernel: 3,
                stride: 2,
                padding: 1,
            },
            Pool2dConfig {
                kernel: 3,
                stride: 3,
                padding: 0,
            },
            Pool2dConfig {
                kernel: 2,
                stride: 1,
                padding: 1,
            },
        ];
        for (i, cfg) in cfgs.into_iter().enumerate() {
            for batch in [1, 2] {
                // 7×5: not divisible by the strides; distinct values keep max unambiguous.
                let x = rand_input(&[batch, 2, 7, 5], 70 + i as u64);
                assert_gradcheck(|t| t[0].max_pool2d(cfg), std::slice::from_ref(&x));
                assert_gradcheck(|t| t[0].avg_pool2d(cfg), std::slice::from_ref(&x));
            }
        }
        assert_gradcheck(
            |t| t[0].global_avg_pool2d(),
            &[rand_input(&[2, 3, 4, 5], 79)],
        );
    }

    #[test]
    fn bad_configs_are_errors() {
        let x = Tensor::<f32>::zeros(&[1, 1, 4, 4]);
        assert!(x
            .max_pool2d(Pool2dConfig {
                kernel: 2,
                stride: 2,
                padding: 2
            })
            .is_err());
        assert!(x.max_pool2d(Pool2dConfig::square(5)).is_err());
        assert!(Tensor::<f32>::zeros(&[4, 4])
            .avg_pool2d(Pool2dConfig::square(2))
            .is_err());
    }
}
