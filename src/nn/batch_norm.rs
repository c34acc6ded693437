//! 2-D batch normalisation layer with running statistics (PyTorch's conventions).

use super::{Module, TensorKind};
use crate::error::Result;
use crate::ops::batch_norm::BnActivation;
use crate::tensor::{Element, Tensor};

/// Batch norm over the channels of NCHW input: learnable `weight` (scale) and `bias`
/// (shift); running mean and unbiased variance updated with `momentum` in training mode.
pub struct BatchNorm2d<T: Element> {
    /// Scale `γ`, initialised to 1.
    pub weight: Tensor<T>,
    /// Shift `β`, initialised to 0.
    pub bias: Tensor<T>,
    /// Running mean, initialised to 0.
    pub running_mean: Tensor<T>,
    /// Running (unbiased) variance, initialised to 1.
    pub running_var: Tensor<T>,
    /// Training-mode batches seen (a 0-d tensor, PyTorch's `num_batches_tracked`, kept so
    /// that state dicts carry every key PyTorch's module has; the running averages use
    /// `momentum`, not this count).
    pub num_batches_tracked: Tensor<T>,
    /// Weight of the newest batch in the running averages (PyTorch's default 0.1).
    pub momentum: f64,
    /// Added to the variance before the square root.
    pub eps: f64,
    /// The activation applied to the output, fused into the op ([`BatchNorm2d::with_relu`]).
    pub activation: BnActivation,
    training: bool,
}

impl<T: Element> BatchNorm2d<T> {
    /// A layer for `channels` channels with PyTorch's defaults (momentum 0.1, eps 1e-5).
    pub fn new(channels: usize) -> Self {
        BatchNorm2d {
            weight: Tensor::ones(&[channels]).with_grad(),
            bias: Tensor::zeros(&[channels]).with_grad(),
            running_mean: Tensor::zeros(&[channels]),
            running_var: Tensor::ones(&[channels]),
            num_batches_tracked: Tensor::zeros(&[]),
            momentum: 0.1,
            eps: 1e-5,
            activation: BnActivation::Identity,
            training: true,
        }
    }

    /// The same layer followed by a ReLU, fused into one op in training mode
    /// (`batch_norm2d+relu`: one pass less, and backward keeps `x̂` alone instead of `x̂`
    /// and the ReLU's output). The result equals batch norm followed by [`super::Relu`].
    ///
    /// ```
    /// use tensorgrad::nn::{BatchNorm2d, Module};
    /// use tensorgrad::Tensor;
    /// let x = Tensor::<f64>::from_vec(vec![1.0, 10.0, 3.0, 20.0], &[2, 2, 1, 1])?;
    /// let mut bn = BatchNorm2d::new(2).with_relu();
    /// assert_eq!(Module::<f64>::kind(&bn), "batch_norm2d+relu");
    /// let y = bn.forward(&x)?.to_vec();
    /// assert!((y[2] - 1.0).abs() < 1e-4 && y[0] == 0.0); // normalised, then rectified
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn with_relu(mut self) -> Self {
        self.activation = BnActivation::Relu;
        self
    }

    /// The same layer followed by ReLU6 (`min(max(x, 0), 6)`), fused as in
    /// [`BatchNorm2d::with_relu`]; equals batch norm followed by [`super::Relu6`].
    pub fn with_relu6(mut self) -> Self {
        self.activation = BnActivation::Relu6;
        self
    }
}

impl<T: Element> Module<T> for BatchNorm2d<T> {
    fn kind(&self) -> &'static str {
        match self.activation {
            BnActivation::Identity => "batch_norm2d",
            BnActivation::Relu => "batch_norm2d+relu",
            BnActivation::Relu6 => "batch_norm2d+relu6",
        }
    }

    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        if !self.training {
            let y = x.batch_norm2d_eval(
                &self.weight,
                &self.bias,
                &self.running_mean,
                &self.running_var,
                self.eps,
            )?;
            return Ok(self.activation.apply_tensor(y));
        }
        let (y, stats) =
            x.batch_norm2d_train_with(&self.weight, &self.bias, self.eps, self.activation)?;
        let m = T::from_f64(self.momentum);
        let keep = T::one() - m;
        self.running_mean.update_data(|r| {
            for (r, &b) in r.iter_mut().zip(&stats.mean) {
                *r = keep * *r + m * b;
            }
        });
        self.running_var.update_data(|r| {
            for (r, &b) in r.iter_mut().zip(&stats.var_unbiased) {
                *r = keep * *r + m * b;
            }
        });
        self.num_batches_tracked.update_data(|n| n[0] += T::one());
        Ok(y)
    }

    fn named_tensors(&self) -> Vec<(String, TensorKind, Tensor<T>)> {
        vec![
            ("weight".into(), TensorKind::Parameter, self.weight.clone()),
            ("bias".into(), TensorKind::Parameter, self.bias.clone()),
            (
                "running_mean".into(),
                TensorKind::Buffer,
                self.running_mean.clone(),
            ),
            (
                "running_var".into(),
                TensorKind::Buffer,
                self.running_var.clone(),
            ),
            (
                "num_batches_tracked".into(),
                TensorKind::Buffer,
                self.num_batches_tracked.clone(),
            ),
        ]
    }

    fn named_tensors_mut(&mut self) -> Vec<(String, TensorKind, &mut Tensor<T>)> {
        vec![
            ("weight".into(), TensorKind::Parameter, &mut self.weight),
            ("bias".into(), TensorKind::Parameter, &mut self.bias),
            (
                "running_mean".into(),
                TensorKind::Buffer,
                &mut self.running_mean,
            ),
            (
                "running_var".into(),
                TensorKind::Buffer,
                &mut self.running_var,
            ),
            (
                "num_batches_tracked".into(),
                TensorKind::Buffer,
                &mut self.num_batches_tracked,
            ),
        ]
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
    }

    fn is_training(&self) -> bool {
        self.training
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    #[test]
    fn running_statistics_follow_pytorch() {
        let mut bn = BatchNorm2d::<f64>::new(2);
        let x = rand_input(&[3, 2, 2, 2], 95).detach();
        let (_, stats) = x.batch_norm2d_train(&bn.weight, &bn.bias, bn.eps).unwrap();
        bn.forward(&x).unwrap();
        let want_mean: Vec<f64> = stats.mean.iter().map(|m| 0.1 * m).collect();
        let want_var: Vec<f64> = stats.var_unbiased.iter().map(|v| 0.9 + 0.1 * v).collect();
        assert_close(&bn.running_mean.to_vec(), &want_mean, 1e-15);
        assert_close(&bn.running_var.to_vec(), &want_var, 1e-15);
        // Eval mode uses the running statistics and leaves them alone.
        bn.set_training(false);
        let y = bn.forward(&x).unwrap().to_vec();
        let xv = x.to_vec();
        let expect0 = (xv[0] - want_mean[0]) / (want_var[0] + 1e-5).sqrt();
        assert!((y[0] - expect0).abs() < 1e-12);
        assert_close(&bn.running_mean.to_vec(), &want_mean, 1e-15);
        let names: Vec<String> = bn.named_tensors().into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(
            names,
            [
                "weight",
                "bias",
                "running_mean",
                "running_var",
                "num_batches_tracked"
            ]
        );
        // One training batch counted, none in eval mode; a 0-d tensor as PyTorch's.
        assert_eq!(bn.num_batches_tracked.shape(), &[] as &[usize]);
        assert_eq!(bn.num_batches_tracked.to_vec(), [1.0]);
    }
}
