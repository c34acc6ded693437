//! Thin module wrappers around the ops: Conv2d, pooling, ReLU, Flatten, Dropout.

use super::{init, weight_and_bias, weight_and_bias_mut, Module, TensorKind};
use crate::error::Result;
use crate::ops::conv::Conv2dConfig;
use crate::ops::pool::Pool2dConfig;
use crate::tensor::{Element, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// 2-D convolution layer, weight `[c_out, c_in, kh, kw]` and bias `[c_out]` as PyTorch.
pub struct Conv2d<T: Element> {
    /// Weight `[c_out, c_in, kh, kw]`.
    pub weight: Tensor<T>,
    /// Bias `[c_out]`, if any.
    pub bias: Option<Tensor<T>>,
    /// Stride, padding and dilation.
    pub config: Conv2dConfig,
}

impl<T: Element> Conv2d<T> {
    /// A square-kernel convolution with PyTorch's default initialisation.
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        config: Conv2dConfig,
        bias: bool,
        rng: &mut impl Rng,
    ) -> Self {
        let fan_in = c_in * kernel * kernel;
        let weight =
            init::kaiming_uniform(&[c_out, c_in, kernel, kernel], fan_in, 5f64.sqrt(), rng)
                .with_grad();
        let bias = bias.then(|| init::default_bias(&[c_out], fan_in, rng).with_grad());
        Conv2d {
            weight,
            bias,
            config,
        }
    }
}

impl<T: Element> Module<T> for Conv2d<T> {
    fn kind(&self) -> &'static str {
        "conv2d"
    }

    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        x.conv2d(&self.weight, self.bias.as_ref(), self.config)
    }

    fn named_tensors(&self) -> Vec<(String, TensorKind, Tensor<T>)> {
        weight_and_bias(&self.weight, &self.bias)
    }

    fn named_tensors_mut(&mut self) -> Vec<(String, TensorKind, &mut Tensor<T>)> {
        weight_and_bias_mut(&mut self.weight, &mut self.bias)
    }
}

/// Max pooling layer.
pub struct MaxPool2d(pub Pool2dConfig);

impl<T: Element> Module<T> for MaxPool2d {
    fn kind(&self) -> &'static str {
        "max_pool2d"
    }

    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        x.max_pool2d(self.0)
    }
}

/// Average pooling layer.
pub struct AvgPool2d(pub Pool2dConfig);

impl<T: Element> Module<T> for AvgPool2d {
    fn kind(&self) -> &'static str {
        "avg_pool2d"
    }

    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        x.avg_pool2d(self.0)
    }
}

/// Rectified linear unit.
pub struct Relu;

impl<T: Element> Module<T> for Relu {
    fn kind(&self) -> &'static str {
        "relu"
    }

    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        Ok(x.relu())
    }
}

/// Flattens everything after the batch dimension.
pub struct Flatten;

impl<T: Element> Module<T> for Flatten {
    fn kind(&self) -> &'static str {
        "flatten"
    }

    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        x.flatten(1)
    }
}

/// Inverted dropout with its own seeded generator; the identity in evaluation mode.
pub struct Dropout {
    /// Probability of zeroing an element.
    pub p: f64,
    training: bool,
    rng: StdRng,
}

impl Dropout {
    /// Dropout with probability `p`, masks drawn from a generator seeded with `seed`.
    pub fn new(p: f64, seed: u64) -> Self {
        Dropout {
            p,
            training: true,
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl<T: Element> Module<T> for Dropout {
    fn kind(&self) -> &'static str {
        "dropout"
    }

    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        if self.training && self.p > 0.0 {
            x.dropout(self.p, &mut self.rng)
        } else {
            Ok(x.clone())
        }
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

    #[test]
    fn dropout_is_identity_in_eval_mode_and_seeded_in_training() {
        let x = Tensor::<f32>::ones(&[100]);
        let mut d = Dropout::new(0.5, 3);
        let a = Module::<f32>::forward(&mut d, &x).unwrap().to_vec();
        assert!(a.contains(&0.0));
        let mut d2 = Dropout::new(0.5, 3);
        assert_eq!(Module::<f32>::forward(&mut d2, &x).unwrap().to_vec(), a);
        Module::<f32>::set_training(&mut d, false);
        assert_eq!(
            Module::<f32>::forward(&mut d, &x).unwrap().to_vec(),
            x.to_vec()
        );
    }
}
