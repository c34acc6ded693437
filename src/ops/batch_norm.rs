//! Batch normalisation over the channel axis of NCHW, composed from primitives so that
//! autodiff supplies the (training-mode) gradient through the batch statistics.

use crate::error::{Result, TensorError};
use crate::tensor::{Element, Tensor};

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
    pub fn batch_norm2d_train(
        &self,
        gamma: &Tensor<T>,
        beta: &Tensor<T>,
        eps: f64,
    ) -> Result<(Tensor<T>, BatchStats<T>)> {
        let c = self.check_bn(gamma, beta)?;
        let count = self.numel() / c.max(1);
        if count < 2 {
            return Err(TensorError::InvalidShape {
                op: "batch_norm2d",
                shape: self.shape().to_vec(),
                reason: "training mode needs more than one value per channel".into(),
            });
        }
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
        let rm = rand_input(&[2], 85).detach();
        let rv = rand_input(&[2], 86).abs().add_scalar(0.5).detach();
        assert_gradcheck(
            |t| t[0].batch_norm2d_eval(&t[1], &t[2], &rm, &rv, 1e-5),
            &[x, gamma, beta],
        );
    }
}
