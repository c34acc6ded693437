//! Batch normalisation over the channel axis of NCHW.
//!
//! Training mode runs as one fused op ([`Tensor::batch_norm2d_train`]): per channel the
//! batch mean `μ` and biased variance `σ²`, `x̂ = (x − μ)/√(σ² + ε)`, `y = γx̂ + β`, with the
//! closed-form backward over the `N` values of a channel:
//! `dβ = Σ dy`, `dγ = Σ dy·x̂`, `dx = γ/√(σ² + ε) · (dy − Σdy/N − x̂·Σ(dy·x̂)/N)`.
//! The same function composed from primitives, whose gradient autodiff derives,
//! is [`Tensor::batch_norm2d_train_reference`]: the readable version and the tests' oracle.
//! (The composite took 17% of a resnet20 step forward and its `powf` another 11% backward.)
//!
//! The ReLU (or ReLU6) that follows a batch norm in a block fuses into it
//! ([`Tensor::batch_norm2d_train_with`]): the output is `act(γx̂ + β)`, and backward
//! recomputes the activation's mask from `x̂`, `γ` and `β` instead of keeping the output,
//! so the pair keeps one buffer for backward instead of two and makes one pass less.
//! That buffer is the input `x` itself, not `x̂`: backward recomputes `x̂ = (x − μ)·inv_std`
//! where it reads it, so the forward writes only `y` (resnet20's and mobilenet-v2's train
//! steps spent 5–10% in batch norm's forward, most of it memory traffic).

use crate::autograd::CustomOp;
use crate::error::{Result, TensorError};
use crate::kernels::batch_norm::{
    backward_batch, inv_std, normalise_batch, ChannelAffine, NoAct, Planes, Relu6Act, ReluAct,
};
use crate::tensor::{Element, Tensor};
use std::sync::Arc;

/// The activation a fused batch norm applies to its output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BnActivation {
    /// None: `y = γx̂ + β`.
    #[default]
    Identity,
    /// `max(γx̂ + β, 0)`, derivative 1 where the value is > 0 (as [`Tensor::relu`]).
    Relu,
    /// `min(max(γx̂ + β, 0), 6)`, derivative 1 inside `[0, 6]` (as `clamp(0, 6)`).
    Relu6,
}

impl BnActivation {
    /// The suffix of the fused op's name.
    fn op_name(self) -> &'static str {
        match self {
            BnActivation::Identity => "batch_norm2d",
            BnActivation::Relu => "batch_norm2d+relu",
            BnActivation::Relu6 => "batch_norm2d+relu6",
        }
    }

    /// The same activation applied by the unfused primitives ([`Tensor::relu`],
    /// [`Tensor::clamp`]): the references' last step, and eval mode's.
    pub fn apply_tensor<T: Element>(self, y: Tensor<T>) -> Tensor<T> {
        match self {
            BnActivation::Identity => y,
            BnActivation::Relu => y.relu(),
            BnActivation::Relu6 => y.clamp(0.0, 6.0),
        }
    }
}

/// The fused training-mode record: keeps the input, and per channel its mean and
/// `1/√(σ² + ε)` (so `x̂` is recomputed where backward reads it, bitwise as the forward
/// computed it, instead of written and kept), and the values of `γ` and `β` (for `dx` and
/// to recompute the activation's mask).
struct BatchNormTrain<T: Element> {
    input: Tensor<T>,
    gamma: Tensor<T>,
    beta: Tensor<T>,
    mean: Vec<T>,
    inv_std: Vec<T>,
    scale: Vec<T>,
    shift: Vec<T>,
    activation: BnActivation,
}

/// Calls the generic `$f::<A, _>(args)` for the [`Act`] type of a [`BnActivation`].
macro_rules! for_activation {
    ($act:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $act {
            BnActivation::Identity => $f::<NoAct, _>($($arg),*),
            BnActivation::Relu => $f::<ReluAct, _>($($arg),*),
            BnActivation::Relu6 => $f::<Relu6Act, _>($($arg),*),
        }
    };
}

impl<T: Element> CustomOp<T> for BatchNormTrain<T> {
    fn name(&self) -> &'static str {
        self.activation.op_name()
    }

    fn inputs(&self) -> Vec<&Tensor<T>> {
        vec![&self.input, &self.gamma, &self.beta]
    }

    fn backward(&self, grad: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>> {
        let shape = self.input.shape();
        let (c, hw) = (shape[1], shape[2] * shape[3]);
        let dims = Planes { c, hw };
        let dy = grad.values();
        let x = self.input.values();
        let p = ChannelAffine {
            mean: &self.mean,
            inv_std: &self.inv_std,
            gamma: &self.scale,
            beta: &self.shift,
        };
        // Σ g and Σ g·x̂ per channel, g = dy through the activation, and dX, in one walk.
        let want_dx = self.input.requires_grad();
        let (dx, sums) =
            for_activation!(self.activation, backward_batch(&dy, &x, &p, dims, want_dx));
        let db = self
            .beta
            .requires_grad()
            .then(|| Tensor::from_contiguous(sums.iter().map(|s| s.0).collect(), &[c]));
        let dg = self
            .gamma
            .requires_grad()
            .then(|| Tensor::from_contiguous(sums.iter().map(|s| s.1).collect(), &[c]));
        let dx = dx.map(|dx| Tensor::from_contiguous(dx, shape));
        Ok(vec![dx, dg, db])
    }
}

/// Per-channel statistics of one training-mode batch.
pub struct BatchStats<T: Element> {
    /// Batch mean per channel.
    pub mean: Vec<T>,
    /// Unbiased batch variance per channel (what running statistics track, as PyTorch).
    pub var_unbiased: Vec<T>,
}

impl<T: Element> Tensor<T> {
    fn check_bn(&self, gamma: &Tensor<T>, beta: &Tensor<T>) -> Result<usize> {
        let c = *self.shape().get(1).unwrap_or(&0);
        if self.ndim() != 4 || gamma.shape() != [c] || beta.shape() != [c] {
            return Err(TensorError::ShapeMismatch {
                op: "batch_norm2d",
                lhs: self.shape().to_vec(),
                rhs: gamma.shape().to_vec(),
            });
        }
        Ok(c)
    }

    /// Training mode: normalise with the batch mean and biased variance, scale by `gamma`
    /// and shift by `beta` (each `[C]`); also returns the statistics for running averages.
    /// One fused op with a closed-form backward (see the module documentation).
    ///
    /// ```
    /// use tensorgrad::Tensor;
    /// // Two images of two 1×1 channels: channel 0 holds {1, 3}, channel 1 {10, 20}.
    /// let x = Tensor::<f64>::from_vec(vec![1.0, 10.0, 3.0, 20.0], &[2, 2, 1, 1])?;
    /// let (y, stats) = x.batch_norm2d_train(&Tensor::ones(&[2]), &Tensor::zeros(&[2]), 0.0)?;
    /// assert_eq!(y.to_vec(), [-1.0, -1.0, 1.0, 1.0]); // each channel to mean 0, variance 1
    /// assert_eq!(stats.mean, [2.0, 15.0]);
    /// assert_eq!(stats.var_unbiased, [2.0, 50.0]);
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn batch_norm2d_train(
        &self,
        gamma: &Tensor<T>,
        beta: &Tensor<T>,
        eps: f64,
    ) -> Result<(Tensor<T>, BatchStats<T>)> {
        self.batch_norm2d_train_with(gamma, beta, eps, BnActivation::Identity)
    }

    /// [`Tensor::batch_norm2d_train`] followed by `activation`, as one op: the output is
    /// `act(γx̂ + β)`; backward recomputes `x̂` and the activation's mask from the input,
    /// so the op keeps only the input (the unfused pair keeps it and the activation's
    /// output).
    ///
    /// ```
    /// use tensorgrad::ops::batch_norm::BnActivation;
    /// use tensorgrad::Tensor;
    /// let x = Tensor::<f64>::from_vec(vec![1.0, 10.0, 3.0, 20.0], &[2, 2, 1, 1])?;
    /// let (g, b) = (Tensor::ones(&[2]), Tensor::zeros(&[2]));
    /// let (y, _) = x.batch_norm2d_train_with(&g, &b, 0.0, BnActivation::Relu)?;
    /// assert_eq!(y.to_vec(), [0.0, 0.0, 1.0, 1.0]);
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn batch_norm2d_train_with(
        &self,
        gamma: &Tensor<T>,
        beta: &Tensor<T>,
        eps: f64,
        activation: BnActivation,
    ) -> Result<(Tensor<T>, BatchStats<T>)> {
        let c = self.check_bn(gamma, beta)?;
        let count = self.check_train_count(c)?;
        let hw = self.shape()[2] * self.shape()[3];
        let x = self.values();
        let dims = Planes { c, hw };
        let eps = T::from_f64(eps);
        let (g, b) = (gamma.values(), beta.values());
        let (y, stats) = for_activation!(activation, normalise_batch(&x, (&g, &b, eps), dims));
        let (mean, var): (Vec<T>, Vec<T>) = stats.into_iter().unzip();
        let inv_std: Vec<T> = var.iter().map(|&v| inv_std(v, eps)).collect();
        let unbias = T::from_f64(count as f64 / (count - 1) as f64);
        let stats = BatchStats {
            var_unbiased: var.iter().map(|&v| v * unbias).collect(),
            mean: mean.clone(),
        };
        let op = BatchNormTrain {
            input: self.clone(),
            gamma: gamma.graph_handle(),
            beta: beta.graph_handle(),
            mean,
            inv_std,
            scale: g.to_vec(),
            shift: b.to_vec(),
            activation,
        };
        let y = Tensor::from_custom_op_storage(Arc::new(y), self.shape(), Box::new(op))?;
        Ok((y, stats))
    }

    /// An error unless training mode has more than one value per channel; the count.
    fn check_train_count(&self, c: usize) -> Result<usize> {
        let count = self.numel() / c.max(1);
        if count < 2 {
            return Err(TensorError::InvalidShape {
                op: "batch_norm2d",
                shape: self.shape().to_vec(),
                reason: "training mode needs more than one value per channel".into(),
            });
        }
        Ok(count)
    }

    /// [`Tensor::batch_norm2d_train`] composed from primitives (mean, subtract, square,
    /// divide by the square root), whose gradient autodiff derives: the readable reference
    /// the fused op is tested against.
    pub fn batch_norm2d_train_reference(
        &self,
        gamma: &Tensor<T>,
        beta: &Tensor<T>,
        eps: f64,
    ) -> Result<(Tensor<T>, BatchStats<T>)> {
        let c = self.check_bn(gamma, beta)?;
        let count = self.check_train_count(c)?;
        let mean = self.mean(&[0, 2, 3], true)?;
        let centred = self.sub(&mean)?;
        let var = centred.square().mean(&[0, 2, 3], true)?;
        let x_hat = centred.div(&var.add_scalar(eps).sqrt())?;
        let y = x_hat
            .mul(&gamma.reshape(&[1, c, 1, 1])?)?
            .add(&beta.reshape(&[1, c, 1, 1])?)?;
        let unbias = T::from_f64(count as f64 / (count - 1) as f64);
        let stats = BatchStats {
            mean: mean.to_vec(),
            var_unbiased: var.values().iter().map(|&v| v * unbias).collect(),
        };
        Ok((y, stats))
    }

    /// Evaluation mode: normalise with the given running mean and variance (`[C]` each).
    pub fn batch_norm2d_eval(
        &self,
        gamma: &Tensor<T>,
        beta: &Tensor<T>,
        running_mean: &Tensor<T>,
        running_var: &Tensor<T>,
        eps: f64,
    ) -> Result<Tensor<T>> {
        let c = self.check_bn(gamma, beta)?;
        let shape = [1, c, 1, 1];
        let std = running_var.reshape(&shape)?.add_scalar(eps).sqrt();
        self.sub(&running_mean.reshape(&shape)?.detach())?
            .div(&std.detach())?
            .mul(&gamma.reshape(&shape)?)?
            .add(&beta.reshape(&shape)?)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use crate::Tensor;

    #[test]
    fn train_mode_normalises_each_channel() {
        let x = rand_input(&[4, 3, 2, 5], 80);
        let (y, stats) = x
            .batch_norm2d_train(&Tensor::ones(&[3]), &Tensor::zeros(&[3]), 0.0)
            .unwrap();
        let m = y.mean(&[0, 2, 3], false).unwrap().to_vec();
        let v = y.square().mean(&[0, 2, 3], false).unwrap().to_vec();
        assert_close(&m, &[0.0; 3], 1e-12);
        assert_close(&v, &[1.0; 3], 1e-12);
        // Unbiased variance of channel 0, by hand.
        let xv = x.to_vec();
        let ch0: Vec<f64> = (0..4)
            .flat_map(|n| xv[n * 30..n * 30 + 10].to_vec())
            .collect();
        let mu = ch0.iter().sum::<f64>() / 40.0;
        let var = ch0.iter().map(|a| (a - mu).powi(2)).sum::<f64>() / 39.0;
        assert_close(&[stats.mean[0], stats.var_unbiased[0]], &[mu, var], 1e-12);
    }

    /// The fused op equals the composite reference: values, statistics and the gradients
    /// of x, γ and β, for batch 1 and more, odd planes, and with only some inputs needing
    /// gradients.
    #[test]
    fn fused_train_mode_equals_the_composite_reference() {
        for (shape, seed) in [([4, 3, 2, 5], 1), ([1, 2, 3, 3], 2), ([3, 5, 1, 7], 3)] {
            let c = shape[1];
            let x = rand_input(&shape, seed).detach().with_grad();
            let gamma = rand_input(&[c], seed + 10).detach().with_grad();
            let beta = rand_input(&[c], seed + 20).detach().with_grad();
            let r = rand_input(&shape, seed + 30);
            let (yf, sf) = x.batch_norm2d_train(&gamma, &beta, 1e-5).unwrap();
            let (yr, sr) = x.batch_norm2d_train_reference(&gamma, &beta, 1e-5).unwrap();
            assert_close(&yf.to_vec(), &yr.to_vec(), 1e-12);
            assert_close(&sf.mean, &sr.mean, 1e-12);
            assert_close(&sf.var_unbiased, &sr.var_unbiased, 1e-12);
            let gf = yf.mul(&r).unwrap().sum_all().backward().unwrap();
            let gr = yr.mul(&r).unwrap().sum_all().backward().unwrap();
            for t in [&x, &gamma, &beta] {
                assert_close(
                    &gf.get(t).unwrap().to_vec(),
                    &gr.get(t).unwrap().to_vec(),
                    1e-10,
                );
            }
        }
        // Only the input needs a gradient (a frozen layer): no γ/β gradient is made.
        let x = rand_input(&[2, 2, 2, 2], 9).detach().with_grad();
        let (y, _) = x
            .batch_norm2d_train(&Tensor::ones(&[2]), &Tensor::zeros(&[2]), 1e-5)
            .unwrap();
        let g = y
            .mul(&rand_input(&[2, 2, 2, 2], 10))
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        assert!(g.get(&x).is_some());
    }

    /// Batch norm fused with the ReLU or ReLU6 after it equals the composite reference
    /// followed by the unfused activation: values and the gradients of x, γ and β, with
    /// β large enough that a good share of each channel is cut off (and for ReLU6 some
    /// values above 6), batch 1 included.
    #[test]
    fn fused_activation_equals_the_reference_then_the_activation() {
        use super::BnActivation;
        for act in [BnActivation::Relu, BnActivation::Relu6] {
            for (shape, seed) in [([4, 3, 2, 5], 41), ([1, 2, 3, 3], 42)] {
                let c = shape[1];
                let x = rand_input(&shape, seed).detach().with_grad();
                let gamma = rand_input(&[c], seed + 10)
                    .mul_scalar(4.0)
                    .detach()
                    .with_grad();
                let beta = rand_input(&[c], seed + 20)
                    .add_scalar(2.0)
                    .detach()
                    .with_grad();
                let r = rand_input(&shape, seed + 30);
                let (yf, _) = x.batch_norm2d_train_with(&gamma, &beta, 1e-5, act).unwrap();
                let (yr, _) = x.batch_norm2d_train_reference(&gamma, &beta, 1e-5).unwrap();
                let yr = act.apply_tensor(yr);
                let v = yf.to_vec();
                assert!(v.contains(&0.0) && v.iter().any(|&a| a > 0.0));
                assert_close(&v, &yr.to_vec(), 1e-12);
                let gf = yf.mul(&r).unwrap().sum_all().backward().unwrap();
                let gr = yr.mul(&r).unwrap().sum_all().backward().unwrap();
                for t in [&x, &gamma, &beta] {
                    assert_close(
                        &gf.get(t).unwrap().to_vec(),
                        &gr.get(t).unwrap().to_vec(),
                        1e-10,
                    );
                }
            }
            assert_gradcheck(
                |t| Ok(t[0].batch_norm2d_train_with(&t[1], &t[2], 1e-5, act)?.0),
                &[
                    rand_input(&[3, 2, 3, 2], 51),
                    rand_input(&[2], 52).mul_scalar(3.0),
                    rand_input(&[2], 53),
                ],
            );
        }
        // Diamond: the fused output used twice accumulates both paths.
        let x = rand_input(&[2, 2, 2, 3], 61);
        assert_gradcheck(
            |t| {
                let (y, _) =
                    t[0].batch_norm2d_train_with(&t[1], &t[2], 1e-5, BnActivation::Relu)?;
                y.mul(&y)?.add(&y)
            },
            &[x, rand_input(&[2], 62), rand_input(&[2], 63)],
        );
    }

    /// The fused pair keeps one activation-sized buffer for backward (its input); batch
    /// norm then a separate ReLU keeps two (the input and the ReLU's output).
    #[test]
    fn fused_activation_keeps_one_buffer_instead_of_two() {
        use super::BnActivation;
        let x = rand_input(&[2, 4, 8, 8], 3).detach().with_grad();
        let (g, b) = (
            Tensor::ones(&[4]).with_grad(),
            Tensor::zeros(&[4]).with_grad(),
        );
        let (fused, _) = x
            .batch_norm2d_train_with(&g, &b, 1e-5, BnActivation::Relu)
            .unwrap();
        let (plain, _) = x.batch_norm2d_train(&g, &b, 1e-5).unwrap();
        let plain = plain.relu();
        let act_bytes = 2 * 4 * 8 * 8 * 8;
        assert_eq!(fused.graph().total_saved_bytes, act_bytes);
        assert_eq!(plain.graph().total_saved_bytes, 2 * act_bytes);
    }

    #[test]
    fn gradcheck_train_and_eval_modes() {
        let x = rand_input(&[3, 2, 3, 2], 81);
        let gamma = rand_input(&[2], 82);
        let beta = rand_input(&[2], 83);
        assert_gradcheck(
            |t| Ok(t[0].batch_norm2d_train(&t[1], &t[2], 1e-5)?.0),
            &[x.clone(), gamma.clone(), beta.clone()],
        );
        // Batch of one: statistics over the spatial positions only.
        assert_gradcheck(
            |t| Ok(t[0].batch_norm2d_train(&t[1], &t[2], 1e-5)?.0),
            &[rand_input(&[1, 2, 3, 3], 84), gamma.clone(), beta.clone()],
        );
        // The reference too: the oracle is itself checked.
        assert_gradcheck(
            |t| Ok(t[0].batch_norm2d_train_reference(&t[1], &t[2], 1e-5)?.0),
            &[rand_input(&[2, 2, 3, 1], 87), gamma.clone(), beta.clone()],
        );
        let rm = rand_input(&[2], 85).detach();
        let rv = rand_input(&[2], 86).abs().add_scalar(0.5).detach();
        assert_gradcheck(
            |t| t[0].batch_norm2d_eval(&t[1], &t[2], &rm, &rv, 1e-5),
            &[x, gamma, beta],
        );
    }
}
