//! Thin module wrappers around the ops: Conv2d, pooling, ReLU, Flatten, Dropout.

use super::{init, weight_and_bias, weight_and_bias_mut, Module, TensorKind};
use crate::error::Result;
use crate::ops::conv::kept::KeptKernel;
use crate::ops::conv::{Conv2dConfig, Then};
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
    /// Whether the layer applies a ReLU to its output, fused into the convolution.
    pub relu: bool,
    /// The forward kernel (prepared weights) kept between calls that record no gradient
    /// (`ops::conv::kept`); also [`super::ConvBn`]'s, for its folded weights.
    pub(super) kept: KeptKernel<T>,
}

impl<T: Element> Conv2d<T> {
    /// A square-kernel convolution with PyTorch's default initialisation; with
    /// `config.groups > 1` a grouped one (weights `c_out × c_in/groups × k × k`).
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        config: Conv2dConfig,
        bias: bool,
        rng: &mut impl Rng,
    ) -> Self {
        // Grouped (`config.groups`): each output sees `c_in / groups` input channels.
        let per_group = c_in / config.groups.max(1);
        let fan_in = per_group * kernel * kernel;
        let weight = init::kaiming_uniform(
            &[c_out, per_group, kernel, kernel],
            fan_in,
            5f64.sqrt(),
            rng,
        )
        .with_grad();
        let bias = bias.then(|| init::default_bias(&[c_out], fan_in, rng).with_grad());
        Conv2d {
            weight,
            bias,
            config,
            relu: false,
            kept: KeptKernel::default(),
        }
    }

    /// The same layer followed by a ReLU, run as one fused op (`conv2d+relu`): the ReLU
    /// then costs no pass of its own over memory, forward or backward. The result equals
    /// the convolution followed by [`Relu`], bit for bit.
    ///
    /// ```
    /// use rand::{rngs::StdRng, SeedableRng};
    /// use tensorgrad::nn::{Conv2d, Module};
    /// use tensorgrad::ops::conv::Conv2dConfig;
    /// use tensorgrad::Tensor;
    ///
    /// let mut rng = StdRng::seed_from_u64(0);
    /// let mut conv = Conv2d::<f32>::new(1, 4, 3, Conv2dConfig::new(1, 1, 1), true, &mut rng);
    /// let x = Tensor::from_vec((0..16).map(|v| v as f32 - 8.0).collect(), &[1, 1, 4, 4])?;
    /// let plain = conv.forward(&x)?.relu().to_vec();
    /// let mut fused = conv.with_relu();
    /// assert_eq!(Module::<f32>::kind(&fused), "conv2d+relu");
    /// assert_eq!(fused.forward(&x)?.to_vec(), plain);
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }
}

impl<T: Element> Module<T> for Conv2d<T> {
    fn kind(&self) -> &'static str {
        if self.relu {
            "conv2d+relu"
        } else {
            "conv2d"
        }
    }

    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        let then = if self.relu { Then::Relu } else { Then::Nothing };
        let kept = Some(&mut self.kept);
        x.conv2d_layer(&self.weight, self.bias.as_ref(), self.config, then, kept)
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

/// Global average pooling: `[N, C, H, W]` → `[N, C]`, the mean of each channel's plane
/// (PyTorch's `AdaptiveAvgPool2d(1)` followed by `flatten(1)`). Built from the `mean`
/// reduction, so its gradient is the reduction's: `∂/∂x = g / (H·W)` at every pixel.
///
/// ```
/// use tensorgrad::nn::{GlobalAvgPool, Module};
/// use tensorgrad::Tensor;
///
/// let x = Tensor::<f32>::from_vec((0..8).map(|v| v as f32).collect(), &[1, 2, 2, 2])?;
/// assert_eq!(GlobalAvgPool.forward(&x)?.to_vec(), [1.5, 5.5]);
/// # Ok::<(), tensorgrad::TensorError>(())
/// ```
pub struct GlobalAvgPool;

impl<T: Element> Module<T> for GlobalAvgPool {
    fn kind(&self) -> &'static str {
        "global_avg_pool"
    }

    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        if x.ndim() != 4 {
            return Err(crate::TensorError::InvalidShape {
                op: "global_avg_pool",
                shape: x.shape().to_vec(),
                reason: "expected [N, C, H, W]".into(),
            });
        }
        x.mean(&[2, 3], false)
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

/// `min(max(x, 0), 6)`: MobileNet's bounded rectifier (PyTorch's `ReLU6`).
pub struct Relu6;

impl<T: Element> Module<T> for Relu6 {
    fn kind(&self) -> &'static str {
        "relu6"
    }

    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        Ok(x.clamp(0.0, 6.0))
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
    fn conv_with_relu_is_one_fused_op_with_the_same_results() {
        let mut rng = StdRng::seed_from_u64(7);
        let same = Conv2dConfig::new(1, 1, 1);
        let mut model = Sequential::<f32>::new()
            .push(
                "conv1",
                Conv2d::new(3, 16, 3, same, true, &mut rng).with_relu(),
            )
            .push(
                "conv2",
                Conv2d::new(16, 16, 3, same, true, &mut rng).with_relu(),
            )
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
        // A plain convolution stays plain: no container fuses behind the builder's back.
        let mut plain = Sequential::<f32>::new()
            .push("conv1", Conv2d::new(3, 4, 3, same, true, &mut rng))
            .push("relu1", Relu);
        let y = plain.forward(&x).unwrap();
        let ops: Vec<_> = y.graph().nodes.iter().filter_map(|n| n.op).collect();
        assert_eq!(ops, ["conv2d", "relu"]);
        assert!(plain
            .forward_prefix(&x, 1)
            .unwrap()
            .to_vec()
            .iter()
            .any(|&v| v < 0.0));
    }

    /// Inference keeps the layer's kernel between calls; an optimizer's in-place step, a
    /// replaced weight or a training call in between still give what a fresh layer gives.
    #[test]
    fn conv_inference_follows_its_weights_between_calls() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut layer =
            Conv2d::<f64>::new(3, 4, 3, Conv2dConfig::new(1, 1, 1), true, &mut rng).with_relu();
        let x = crate::testing::rand_input(&[2, 3, 6, 6], 6);
        let fresh = |l: &Conv2d<f64>| {
            crate::autograd::no_grad(|| x.conv2d_relu(&l.weight, l.bias.as_ref(), l.config))
                .unwrap()
                .to_vec()
        };
        let infer =
            |l: &mut Conv2d<f64>| crate::autograd::no_grad(|| l.forward(&x)).unwrap().to_vec();
        let first = infer(&mut layer);
        assert_eq!(first, fresh(&layer));
        assert_eq!(infer(&mut layer), first);
        assert!(layer.kept.is_kept());
        layer
            .weight
            .update_data(|w| w.iter_mut().for_each(|v| *v *= -1.0));
        let stepped = infer(&mut layer);
        assert!(stepped != first);
        assert_eq!(stepped, fresh(&layer));
        layer.weight = crate::testing::rand_input(&[4, 3, 3, 3], 7).with_grad();
        assert_eq!(infer(&mut layer), fresh(&layer));
        layer.forward(&x).unwrap(); // recorded: the kept kernel is dropped
        assert!(!layer.kept.is_kept());
        assert_eq!(infer(&mut layer), fresh(&layer));
    }

    #[test]
    fn global_avg_pool_gradcheck_and_closed_form() {
        use crate::testing::{assert_close, assert_gradcheck, rand_input};
        // Batch 1 and an odd plane; the gradient is 1/(H·W) everywhere for a sum.
        let x = rand_input(&[1, 3, 3, 5], 4);
        assert_gradcheck(|t| GlobalAvgPool.forward(&t[0]), std::slice::from_ref(&x));
        let y = GlobalAvgPool.forward(&x).unwrap();
        assert_eq!(y.shape(), &[1, 3]);
        let g = y.sum_all().backward().unwrap();
        assert_close(&g.get(&x).unwrap().to_vec(), &[1.0 / 15.0; 45], 1e-15);
        let x2 = rand_input(&[2, 2, 4, 4], 5);
        assert_gradcheck(|t| GlobalAvgPool.forward(&t[0]), &[x2]);
        assert!(Module::<f64>::forward(&mut GlobalAvgPool, &rand_input(&[2, 3], 1)).is_err());
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
