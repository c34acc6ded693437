//! He et al.'s option-A shortcut as one op: every second row and column of each channel,
//! between `pad` zero channels on each side. Composed, it was a 1×1 average pool with
//! stride 2, a tensor of zeros and a concatenation: three outputs written and the middle
//! one copied again, on one thread (resnet20's two shortcuts, about 3% of an inference at
//! 2 threads). Here each image's output is written once, images in parallel, each plane by
//! the pool's own kernel. The composition is the readable reference the tests compare
//! against, bitwise.

use crate::autograd::CustomOp;
use crate::error::{Result, TensorError};
use crate::kernels::elementwise::{par_chunks_overwritten, par_chunks_zeroed};
use crate::kernels::pool::{avg_pool_plane, avg_pool_plane_backward};
use crate::kernels::Geometry;
use crate::ops::pool::{pool_geometry, Pool2dConfig};
use crate::tensor::{Element, Tensor};

/// The shapes of one image: `c` input planes subsampled by a 1×1 window with stride 2
/// (`g`), `pad` zero planes on each side of the output.
#[derive(Clone, Copy, Debug)]
struct Shapes {
    c: usize,
    pad: usize,
    g: Geometry,
}

impl Shapes {
    fn input_len(&self) -> usize {
        self.c * self.g.h * self.g.w
    }

    fn output_len(&self) -> usize {
        (self.c + 2 * self.pad) * self.g.p()
    }
}

/// One image: `y[pad + ci]` = plane `ci` pooled by the 1×1 window with stride 2 (every
/// second row and column), the pad channels zero.
fn subsample_pad<T: Element>(x: &[T], s: &Shapes, y: &mut [T]) {
    let plane = s.g.p();
    let (before, rest) = y.split_at_mut(s.pad * plane);
    let (middle, after) = rest.split_at_mut(s.c * plane);
    before.fill(T::zero());
    after.fill(T::zero());
    for (x_c, y_c) in x
        .chunks_exact(s.g.h * s.g.w)
        .zip(middle.chunks_exact_mut(plane))
    {
        avg_pool_plane(x_c, &s.g, y_c);
    }
}

/// The adjoint for one image, into a zeroed `dx`: the pool's gradient of the middle
/// channels' `dy` (the pad channels' gradient goes nowhere).
fn subsample_pad_grad<T: Element>(dy: &[T], s: &Shapes, dx: &mut [T]) {
    let plane = s.g.p();
    let middle = &dy[s.pad * plane..][..s.c * plane];
    for (dx_c, dy_c) in dx
        .chunks_exact_mut(s.g.h * s.g.w)
        .zip(middle.chunks_exact(plane))
    {
        avg_pool_plane_backward(dy_c, &s.g, dx_c);
    }
}

/// The record of a shortcut: the input's graph handle and the shapes.
struct SubsamplePad<T: Element> {
    input: Tensor<T>,
    shapes: Shapes,
}

impl<T: Element> CustomOp<T> for SubsamplePad<T> {
    fn name(&self) -> &'static str {
        "subsample_pad"
    }

    fn inputs(&self) -> Vec<&Tensor<T>> {
        vec![&self.input]
    }

    fn backward(&self, grad: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>> {
        let s = self.shapes;
        let dy = grad.values();
        let n = self.input.shape()[0];
        let (dx, _) = par_chunks_zeroed(n * s.input_len(), s.input_len(), |i, dx| {
            subsample_pad_grad(&dy[i * s.output_len()..][..s.output_len()], &s, dx)
        });
        Ok(vec![Some(Tensor::from_contiguous(dx, self.input.shape()))])
    }
}

impl<T: Element> Tensor<T> {
    /// He et al.'s option-A shortcut of a batch `n × c × h × w`: every second row and
    /// column (from the first), with `pad` zero channels before and after, so
    /// `n × (c + 2·pad) × ⌈h/2⌉ × ⌈w/2⌉`. Values and gradients are those of a 1×1 average
    /// pool with stride 2 concatenated between two zero tensors, computed as one op.
    ///
    /// ```
    /// use tensorgrad::Tensor;
    ///
    /// let x = Tensor::<f64>::from_vec((0..9).map(f64::from).collect(), &[1, 1, 3, 3])?;
    /// let y = x.subsample_pad_channels(1)?;
    /// assert_eq!(y.shape(), &[1, 3, 2, 2]);
    /// assert_eq!(y.to_vec()[4..8], [0.0, 2.0, 6.0, 8.0]);
    /// assert!(y.to_vec()[..4].iter().chain(&y.to_vec()[8..]).all(|&v| v == 0.0));
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn subsample_pad_channels(&self, pad: usize) -> Result<Tensor<T>> {
        let &[n, c, _, _] = self.shape() else {
            return Err(TensorError::InvalidArgument {
                op: "subsample_pad_channels",
                reason: format!("needs an n × c × h × w batch, not {:?}", self.shape()),
            });
        };
        // A 1×1 window with stride 2 is x[:, :, ::2, ::2].
        let cfg = Pool2dConfig {
            kernel: 1,
            stride: 2,
            padding: 0,
        };
        let s = Shapes {
            c,
            pad,
            g: pool_geometry("subsample_pad_channels", self.shape(), cfg)?,
        };
        let x = self.values();
        let (y, _) = par_chunks_overwritten(n * s.output_len(), s.output_len(), |i, y| {
            subsample_pad(&x[i * s.input_len()..][..s.input_len()], &s, y)
        });
        let op = SubsamplePad {
            input: self.graph_handle(),
            shapes: s,
        };
        Tensor::from_custom_op(y, &[n, c + 2 * pad, s.g.oh, s.g.ow], Box::new(op))
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::pool::Pool2dConfig;
    use crate::testing::*;
    use crate::Tensor;

    /// The composition the op replaces: a 1×1 pool with stride 2 between zero channels.
    fn composed(x: &Tensor<f64>, pad: usize) -> Tensor<f64> {
        let every_second = x
            .avg_pool2d(Pool2dConfig {
                kernel: 1,
                stride: 2,
                padding: 0,
            })
            .unwrap();
        let s = every_second.shape();
        let zeros = Tensor::zeros(&[s[0], pad, s[2], s[3]]);
        Tensor::concat(&[zeros.clone(), every_second, zeros], 1).unwrap()
    }

    fn bits(t: &Tensor<f64>) -> Vec<u64> {
        t.to_vec().iter().map(|v| v.to_bits()).collect()
    }

    /// Values and gradients bitwise those of the composition: even and odd sizes, no
    /// padding, batch 1, and the input used twice (a diamond).
    #[test]
    fn shortcut_equals_pool_and_concat_exactly() {
        for (shape, pad) in [
            ([2, 3, 6, 8], 2),
            ([1, 2, 5, 7], 1),
            ([3, 4, 4, 3], 0),
            ([1, 1, 1, 1], 3),
        ] {
            let x = rand_input(&shape, 7);
            let r = rand_input(composed(&x, pad).shape(), 8).detach();
            let fused = x.subsample_pad_channels(pad).unwrap();
            let plain = composed(&x, pad);
            assert_eq!(fused.shape(), plain.shape());
            assert_eq!(bits(&fused), bits(&plain), "{shape:?} pad {pad}");
            let loss = |y: Tensor<f64>| y.mul(&r).unwrap().sum_all();
            let gf = loss(fused).backward().unwrap();
            let gp = loss(plain).backward().unwrap();
            assert_eq!(bits(gf.get(&x).unwrap()), bits(gp.get(&x).unwrap()));
            let twice = x
                .subsample_pad_channels(pad)
                .unwrap()
                .add(&composed(&x, pad))
                .unwrap();
            let gt = loss(twice).backward().unwrap();
            let doubled: Vec<f64> = gp
                .get(&x)
                .unwrap()
                .to_vec()
                .iter()
                .map(|g| 2.0 * g)
                .collect();
            assert_eq!(gt.get(&x).unwrap().to_vec(), doubled);
        }
    }

    #[test]
    fn shortcut_gradcheck() {
        assert_gradcheck(
            |t| t[0].subsample_pad_channels(1),
            &[rand_input(&[2, 2, 5, 4], 3)],
        );
    }

    #[test]
    fn shortcut_refuses_other_ranks() {
        let e = Tensor::<f32>::ones(&[2, 3, 4])
            .subsample_pad_channels(1)
            .unwrap_err();
        assert!(e.to_string().contains("n × c × h × w"), "{e}");
    }
}
