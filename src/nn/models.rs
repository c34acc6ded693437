//! The networks of the reproduction protocol (`docs/EXPERIMENTS.md`), for any class count and
//! input shape. Layer names match the equivalent PyTorch module's attributes.

use super::resnet::{resnet18_with, resnet_cifar_with, ResnetOptions};
use super::{Architecture, Conv2d, Flatten, Linear, MaxPool2d, Module, Relu, Sequential};
use crate::error::{Result, TensorError};
use crate::ops::conv::Conv2dConfig;
use crate::ops::pool::Pool2dConfig;
use crate::tensor::Element;
use crate::text::keyword_enum;
use rand::rngs::StdRng;
use rand::SeedableRng;

keyword_enum! {
    /// The models of the reproduction protocol.
    pub enum ModelKind {
        /// [`lenet`].
        Lenet = "lenet",
        /// [`cifar_cnn`].
        CifarCnn = "cifar-cnn",
        /// [`linear`].
        Linear = "linear",
        /// The CIFAR ResNet-20 ([`super::resnet::resnet_cifar`], 0.27 M parameters).
        Resnet20 = "resnet20",
        /// The CIFAR ResNet-32 (0.46 M parameters).
        Resnet32 = "resnet32",
        /// The CIFAR ResNet-56 (0.85 M parameters).
        Resnet56 = "resnet56",
        /// torchvision's ResNet-18 ([`super::resnet::resnet18`]).
        Resnet18 = "resnet18",
        /// torchvision's MobileNet-v2 ([`super::mobilenet::mobilenet_v2`]).
        MobilenetV2 = "mobilenet-v2",
    }
}

impl ModelKind {
    /// The images the model was designed for, `[c, h, w]` (what `tensorgrad bench` and
    /// `tensorgrad graph` feed it): 1×28×28 MNIST for LeNet and the linear model, 3×32×32
    /// CIFAR for the CIFAR CNN, the CIFAR ResNets and MobileNet-v2, 3×64×64 for ResNet-18.
    /// Training takes the data set's shape instead.
    pub fn native_input(self) -> [usize; 3] {
        match self {
            ModelKind::CifarCnn
            | ModelKind::Resnet20
            | ModelKind::Resnet32
            | ModelKind::Resnet56
            | ModelKind::MobilenetV2 => [3, 32, 32],
            ModelKind::Resnet18 => [3, 64, 64],
            ModelKind::Lenet | ModelKind::Linear => [1, 28, 28],
        }
    }

    /// Builds the model for inputs `[c, h, w]` and `classes` outputs, initialised from
    /// `seed`; an error when the input is too small for it.
    ///
    /// ```
    /// use tensorgrad::nn::{models::ModelKind, Module};
    /// use tensorgrad::Tensor;
    ///
    /// let mut lenet = ModelKind::Lenet.build::<f32>([1, 28, 28], 10, 0)?;
    /// assert_eq!(lenet.num_parameters(), 431_080);
    /// let logits = lenet.forward(&Tensor::zeros(&[2, 1, 28, 28]))?;
    /// assert_eq!(logits.shape(), &[2, 10]);
    /// assert!(ModelKind::Lenet.build::<f32>([1, 8, 8], 10, 0).is_err());
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn build<T: Element>(
        self,
        input: [usize; 3],
        classes: usize,
        seed: u64,
    ) -> Result<Sequential<T>> {
        self.build_with(input, classes, seed, ResnetOptions::default())
    }

    /// Whether the model is built of residual basic blocks (what [`ResnetOptions`] applies to).
    pub fn is_resnet(self) -> bool {
        matches!(
            self,
            ModelKind::Resnet20 | ModelKind::Resnet32 | ModelKind::Resnet56 | ModelKind::Resnet18
        )
    }

    /// [`ModelKind::build`] with the residual networks' construction options; an error when
    /// an option is set for a model it does not apply to.
    ///
    /// ```
    /// use tensorgrad::nn::{models::ModelKind, resnet::ResnetOptions, Module};
    /// let zero = ResnetOptions { zero_init_residual: true };
    /// let m = ModelKind::Resnet20.build_with::<f32>([3, 32, 32], 10, 0, zero)?;
    /// let bn2 = m.named_tensors().into_iter().find(|(n, _, _)| n == "layer1.0.bn2.weight");
    /// assert!(bn2.unwrap().2.to_vec().iter().all(|&g| g == 0.0));
    /// assert!(ModelKind::Lenet.build_with::<f32>([1, 28, 28], 10, 0, zero).is_err());
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn build_with<T: Element>(
        self,
        input: [usize; 3],
        classes: usize,
        seed: u64,
        options: ResnetOptions,
    ) -> Result<Sequential<T>> {
        if options != ResnetOptions::default() && !self.is_resnet() {
            return Err(TensorError::InvalidArgument {
                op: "model",
                reason: format!("zero_init_residual applies to the ResNets, not to {self}"),
            });
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let cifar =
            |depth, rng: &mut StdRng| resnet_cifar_with(depth, input, classes, options, rng);
        match self {
            ModelKind::Lenet => lenet(input, classes, &mut rng),
            ModelKind::CifarCnn => cifar_cnn(input, classes, &mut rng),
            ModelKind::Linear => linear(input, classes, &mut rng),
            ModelKind::Resnet20 => cifar(20, &mut rng),
            ModelKind::Resnet32 => cifar(32, &mut rng),
            ModelKind::Resnet56 => cifar(56, &mut rng),
            ModelKind::Resnet18 => resnet18_with(input, classes, options, &mut rng),
            ModelKind::MobilenetV2 => {
                super::mobilenet::mobilenet_v2(input, classes, seed, &mut rng)
            }
        }
    }
}

/// A built-in model with its construction options, as the run machinery builds it (the
/// name recorded is the model's own).
#[derive(Clone, Copy, Debug)]
pub struct ModelSpec {
    /// The model.
    pub kind: ModelKind,
    /// Its options.
    pub options: ResnetOptions,
}

impl Architecture for ModelSpec {
    fn name(&self) -> String {
        self.kind.to_string()
    }

    fn build(&self, input: [usize; 3], outputs: usize, seed: u64) -> Result<Box<dyn Module<f32>>> {
        Ok(Box::new(self.kind.build_with::<f32>(
            input,
            outputs,
            seed,
            self.options,
        )?))
    }
}

impl Architecture for ModelKind {
    fn name(&self) -> String {
        self.to_string()
    }

    fn build(&self, input: [usize; 3], outputs: usize, seed: u64) -> Result<Box<dyn Module<f32>>> {
        Ok(Box::new(ModelKind::build::<f32>(
            *self, input, outputs, seed,
        )?))
    }
}

fn too_small(model: &str, input: [usize; 3]) -> TensorError {
    TensorError::InvalidShape {
        op: "model",
        shape: input.to_vec(),
        reason: format!("input too small for {model}"),
    }
}

/// conv 5×5 (c→20), ReLU, max-pool 2, conv 5×5 (20→50), ReLU, max-pool 2,
/// linear (→500), ReLU, linear (500→K).
pub fn lenet<T: Element>(
    input: [usize; 3],
    classes: usize,
    rng: &mut StdRng,
) -> Result<Sequential<T>> {
    let [c, h, w] = input;
    let side = |n: usize| {
        n.checked_sub(4)
            .map(|n| n / 2)
            .and_then(|n| n.checked_sub(4))
            .map(|n| n / 2)
            .filter(|&n| n > 0)
    };
    let (Some(fh), Some(fw)) = (side(h), side(w)) else {
        return Err(too_small("lenet", input));
    };
    let conv = Conv2dConfig::default();
    Ok(Sequential::new()
        .push("conv1", Conv2d::new(c, 20, 5, conv, true, rng).with_relu())
        .push("pool1", MaxPool2d(Pool2dConfig::square(2)))
        .push("conv2", Conv2d::new(20, 50, 5, conv, true, rng).with_relu())
        .push("pool2", MaxPool2d(Pool2dConfig::square(2)))
        .push("flatten", Flatten)
        .push("fc1", Linear::new(50 * fh * fw, 500, true, rng))
        .push("relu3", Relu)
        .push("fc2", Linear::new(500, classes, true, rng)))
}

/// Two blocks of (conv 3×3 p1, ReLU) × 2 + max-pool 2 (32 then 64 channels),
/// linear (→256), ReLU, linear (256→K).
pub fn cifar_cnn<T: Element>(
    input: [usize; 3],
    classes: usize,
    rng: &mut StdRng,
) -> Result<Sequential<T>> {
    let [c, h, w] = input;
    let (fh, fw) = (h / 4, w / 4);
    if fh == 0 || fw == 0 {
        return Err(too_small("cifar-cnn", input));
    }
    let same = Conv2dConfig::new(1, 1, 1);
    Ok(Sequential::new()
        .push("conv1", Conv2d::new(c, 32, 3, same, true, rng).with_relu())
        .push("conv2", Conv2d::new(32, 32, 3, same, true, rng).with_relu())
        .push("pool1", MaxPool2d(Pool2dConfig::square(2)))
        .push("conv3", Conv2d::new(32, 64, 3, same, true, rng).with_relu())
        .push("conv4", Conv2d::new(64, 64, 3, same, true, rng).with_relu())
        .push("pool2", MaxPool2d(Pool2dConfig::square(2)))
        .push("flatten", Flatten)
        .push("fc1", Linear::new(64 * fh * fw, 256, true, rng))
        .push("relu5", Relu)
        .push("fc2", Linear::new(256, classes, true, rng)))
}

/// One linear layer on the flattened pixels (multinomial or one-vs-all logistic regression).
pub fn linear<T: Element>(
    input: [usize; 3],
    classes: usize,
    rng: &mut StdRng,
) -> Result<Sequential<T>> {
    let [c, h, w] = input;
    Ok(Sequential::new()
        .push("flatten", Flatten)
        .push("fc", Linear::new(c * h * w, classes, true, rng)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Module;
    use crate::testing::*;
    use crate::{gradcheck_fast, GradcheckOptions, Tensor};

    #[test]
    fn parameter_names_match_pytorch_state_dict() {
        let m = ModelKind::Lenet.build::<f32>([1, 28, 28], 10, 0).unwrap();
        let names: Vec<(String, Vec<usize>)> = m
            .parameters()
            .into_iter()
            .map(|(n, t)| (n, t.shape().to_vec()))
            .collect();
        let want: Vec<(String, Vec<usize>)> = [
            ("conv1.weight", vec![20, 1, 5, 5]),
            ("conv1.bias", vec![20]),
            ("conv2.weight", vec![50, 20, 5, 5]),
            ("conv2.bias", vec![50]),
            ("fc1.weight", vec![500, 800]),
            ("fc1.bias", vec![500]),
            ("fc2.weight", vec![10, 500]),
            ("fc2.bias", vec![10]),
        ]
        .into_iter()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
        assert_eq!(names, want);
        assert_eq!(m.num_parameters(), 431_080);
        let c = ModelKind::CifarCnn
            .build::<f32>([3, 32, 32], 10, 0)
            .unwrap();
        assert_eq!(c.parameters()[8].0, "fc1.weight");
        assert_eq!(c.parameters()[8].1.shape(), &[256, 4096]);
        assert!("resnet".parse::<ModelKind>().is_err());
        assert_eq!(
            "resnet20".parse::<ModelKind>().unwrap(),
            ModelKind::Resnet20
        );
        assert!(ModelKind::Lenet.build::<f32>([1, 8, 8], 10, 0).is_err());
    }

    #[test]
    fn forward_shapes_for_other_inputs_and_classes() {
        for (name, input) in [
            (ModelKind::Lenet, [3, 32, 32]),
            (ModelKind::CifarCnn, [1, 28, 28]),
            (ModelKind::Linear, [2, 5, 7]),
        ] {
            let mut m = name.build::<f32>(input, 7, 1).unwrap();
            let x = Tensor::zeros(&[2, input[0], input[1], input[2]]);
            assert_eq!(m.forward(&x).unwrap().shape(), &[2, 7], "{name}");
        }
    }

    #[test]
    fn seeded_builds_are_identical() {
        let a = ModelKind::Lenet.build::<f32>([1, 28, 28], 10, 5).unwrap();
        let b = ModelKind::Lenet.build::<f32>([1, 28, 28], 10, 5).unwrap();
        for ((_, x), (_, y)) in a.parameters().iter().zip(b.parameters().iter()) {
            assert_eq!(x.to_vec(), y.to_vec());
        }
    }

    #[test]
    fn whole_lenet_gradcheck_on_a_tiny_input() {
        // Every parameter and the input, f64, batch 2 of 1×16×16 (the smallest LeNet input).
        let model = ModelKind::Lenet.build::<f64>([1, 16, 16], 3, 2).unwrap();
        let names: Vec<String> = model.parameters().into_iter().map(|(n, _)| n).collect();
        let mut inputs = vec![rand_input(&[2, 1, 16, 16], 97)];
        inputs.extend(model.parameters().into_iter().map(|(_, t)| t));
        let f = |t: &[Tensor<f64>]| {
            let mut m = ModelKind::Lenet.build::<f64>([1, 16, 16], 3, 2)?;
            for ((_, p), v) in m.parameters_mut().into_iter().zip(&t[1..]) {
                *p = v.clone();
            }
            m.forward(&t[0])
        };
        assert_eq!(names.len(), 8);
        // Full Jacobian on the input and the small tensors; projections for all of them.
        let opts = GradcheckOptions::default();
        for seed in 0..3 {
            gradcheck_fast(f, &inputs, &opts, seed).unwrap();
        }
        let small: Vec<Tensor<f64>> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if [0, 1, 2, 4, 8].contains(&i) {
                    t.clone()
                } else {
                    t.detach()
                }
            })
            .collect();
        assert_gradcheck(f, &small);
    }
}
