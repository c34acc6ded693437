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

    fn forward_relu(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        x.conv2d_relu(&self.weight, self.bias.as_ref(), self.config)
    }

    fn fused_relu_kind(&self) -> Option<&'static str> {
        Some("conv2d+relu")
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
    use crate::nn::Sequential;
    use crate::ops::conv::ConvAlgorithm;

    #[test]
    fn sequential_fuses_conv_and_relu_with_the_same_results() {
        let mut rng = StdRng::seed_from_u64(7);
        let same = Conv2dConfig::new(1, 1, 1);
        let mut model = Sequential::<f32>::new()
            .push("conv1", Conv2d::new(3, 16, 3, same, true, &mut rng))
            .push("relu1", Relu)
            .push("conv2", Conv2d::new(16, 16, 3, same, true, &mut rng))
            .push("relu2", Relu)
            .push("pool", MaxPool2d(Pool2dConfig::square(2)));
        assert_eq!(
            same.algorithm_for(&[2, 16, 6, 6], &[16, 16, 3, 3]).unwrap(),
            ConvAlgorithm::Winograd
        );
        let x = crate::testing::rand_input(&[2, 3, 6, 6], 8).cast::<f32>();
        let y = model.forward(&x).unwrap();
        let ops: Vec<_> = y.graph().nodes.iter().filter_map(|n| n.op).collect();
        assert_eq!(ops, ["conv2d+relu", "conv2d+relu", "max_pool2d"]);
        // The same layers one at a time.
        let params: Vec<Tensor<f32>> = model.parameters().into_iter().map(|(_, t)| t).collect();
        let h = x.conv2d(&params[0], Some(&params[1]), same).unwrap().relu();
        let h = h.conv2d(&params[2], Some(&params[3]), same).unwrap().relu();
        let unfused = h.max_pool2d(Pool2dConfig::square(2)).unwrap();
        assert_eq!(y.to_vec(), unfused.to_vec());
        let (g, e) = (
            y.sum_all().backward().unwrap(),
            unfused.sum_all().backward().unwrap(),
        );
        for p in &params {
            assert!(g.get(p).unwrap().to_vec() == e.get(p).unwrap().to_vec());
        }
        // A prefix that ends between a conv and its ReLU does not fuse them.
        let pre = model.forward_prefix(&x, 1).unwrap();
        assert!(pre.to_vec().iter().any(|&v| v < 0.0));
    }

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
