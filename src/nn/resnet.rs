//! The CIFAR ResNets of He et al. 2016 (§4.2): a 3×3 stem of 16 channels, three stages of
//! `n` basic blocks at 16, 32 and 64 channels (the first block of stages 2 and 3 halves
//! the resolution), global average pooling and a linear head — depth `6n + 2`
//! (`resnet20`: n = 3, `resnet32`: 5, `resnet56`: 9).
//!
//! The stride-2 shortcuts are the paper's option A: the identity on every second pixel
//! with the new channels zero ([`ZeroPadShortcut`]), which adds no parameters — the
//! option the paper's CIFAR results use, and the one that gives the published 0.27 M /
//! 0.46 M / 0.85 M parameters. Names follow the common PyTorch definition of these
//! networks (`conv1`, `bn1`, `layer1.0.conv1`, …, `linear`), so a state dict loads into it.

use super::{
    init, BatchNorm2d, Conv2d, ConvBn, GlobalAvgPool, Linear, Module, Residual, Sequential,
};
use crate::error::{Result, TensorError};
use crate::ops::conv::Conv2dConfig;
use crate::ops::pool::Pool2dConfig;
use crate::tensor::{Element, Tensor};
use rand::rngs::StdRng;

/// He et al.'s option-A shortcut: `x` subsampled with stride 2 (every second row and
/// column) and `pad` zero channels added on each side, so a block that halves the
/// resolution and doubles the channels can add it to its output. No parameters.
pub struct ZeroPadShortcut {
    /// Zero channels added before and after the input's.
    pub pad: usize,
}

impl<T: Element> Module<T> for ZeroPadShortcut {
    fn kind(&self) -> &'static str {
        "zero_pad_shortcut"
    }

    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        x.subsample_pad_channels(self.pad)
    }
}

/// A conv layer with torchvision's initialisation: Kaiming-normal, fan-out mode, no bias.
pub(crate) fn kaiming_conv<T: Element>(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    config: Conv2dConfig,
    rng: &mut StdRng,
) -> Conv2d<T> {
    let mut layer = Conv2d::new(c_in, c_out, kernel, config, false, rng);
    let fan_out = c_out * kernel * kernel / config.groups;
    layer.weight = init::kaiming_normal(layer.weight.shape(), fan_out, rng).with_grad();
    layer
}

/// Options of the residual networks' construction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResnetOptions {
    /// Start each basic block's last batch norm at `γ = 0`, so every block begins as the
    /// identity (torchvision's `zero_init_residual`; Goyal et al. 2017).
    pub zero_init_residual: bool,
}

/// How a basic block that changes the shape gets its shortcut.
#[derive(Clone, Copy)]
enum Shortcut {
    /// He et al.'s option A ([`ZeroPadShortcut`], named `shortcut`): no parameters.
    ZeroPad,
    /// torchvision's `downsample`: 1×1 conv (stride) + BN.
    Projection,
}

/// A basic block: conv 3×3 (stride) – BN – ReLU – conv 3×3 – BN, plus the identity or,
/// where the shape changes, the `kind` of shortcut; then ReLU. Each conv and its batch
/// norm are one [`ConvBn`] (the ReLU fused into the first batch norm; folded in eval mode).
fn basic_block<T: Element>(
    c_in: usize,
    c_out: usize,
    stride: usize,
    (kind, options): (Shortcut, ResnetOptions),
    rng: &mut StdRng,
) -> Residual<T> {
    let mut bn2 = BatchNorm2d::new(c_out);
    if options.zero_init_residual {
        bn2.weight = Tensor::zeros(&[c_out]).with_grad();
    }
    let body = Sequential::new()
        .push_unprefixed(ConvBn::new(
            "conv1",
            kaiming_conv(c_in, c_out, 3, Conv2dConfig::new(stride, 1, 1), rng),
            "bn1",
            BatchNorm2d::new(c_out).with_relu(),
        ))
        .push_unprefixed(ConvBn::new(
            "conv2",
            kaiming_conv(c_out, c_out, 3, Conv2dConfig::new(1, 1, 1), rng),
            "bn2",
            bn2,
        ));
    let block = Residual::new(body).with_relu();
    if stride == 1 && c_in == c_out {
        return block;
    }
    match kind {
        Shortcut::ZeroPad => block.with_shortcut(
            "shortcut",
            ZeroPadShortcut {
                pad: (c_out - c_in) / 2,
            },
        ),
        Shortcut::Projection => {
            let projection = ConvBn::new(
                "0",
                kaiming_conv(c_in, c_out, 1, Conv2dConfig::new(stride, 0, 1), rng),
                "1",
                BatchNorm2d::new(c_out),
            );
            block.with_shortcut("downsample", projection)
        }
    }
}

/// The CIFAR ResNet of depth `6n + 2` for images `[c, h, w]` and `classes` outputs. Any
/// size works that survives two halvings (global average pooling makes the head
/// size-agnostic): 32×32 CIFAR, 28×28 MNIST.
pub fn resnet_cifar<T: Element>(
    depth: usize,
    input: [usize; 3],
    classes: usize,
    rng: &mut StdRng,
) -> Result<Sequential<T>> {
    resnet_cifar_with(depth, input, classes, ResnetOptions::default(), rng)
}

/// [`resnet_cifar`] with construction options.
pub fn resnet_cifar_with<T: Element>(
    depth: usize,
    input: [usize; 3],
    classes: usize,
    options: ResnetOptions,
    rng: &mut StdRng,
) -> Result<Sequential<T>> {
    let [c, h, w] = input;
    if depth < 8 || !(depth - 2).is_multiple_of(6) {
        return Err(TensorError::InvalidArgument {
            op: "resnet",
            reason: format!("depth {depth} is not 6n + 2"),
        });
    }
    if h < 4 || w < 4 {
        return Err(TensorError::InvalidShape {
            op: "model",
            shape: input.to_vec(),
            reason: format!("input too small for resnet{depth} (it halves the resolution twice)"),
        });
    }
    let n = (depth - 2) / 6;
    let mut model = Sequential::new().push_unprefixed(ConvBn::new(
        "conv1",
        kaiming_conv(c, 16, 3, Conv2dConfig::new(1, 1, 1), rng),
        "bn1",
        BatchNorm2d::new(16).with_relu(),
    ));
    let mut c_in = 16;
    for (stage, c_out) in [16, 32, 64].into_iter().enumerate() {
        let mut layer = Sequential::new();
        for i in 0..n {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            layer = layer.push(
                &i.to_string(),
                basic_block(c_in, c_out, stride, (Shortcut::ZeroPad, options), rng),
            );
            c_in = c_out;
        }
        model = model.push(&format!("layer{}", stage + 1), layer);
    }
    Ok(model
        .push("avgpool", GlobalAvgPool)
        .push("linear", Linear::new(64, classes, true, rng)))
}

/// torchvision's `resnet18` for images `[c, h, w]` and `classes` outputs: a 7×7/2 stem
/// (64 channels), BN, ReLU, 3×3/2 max-pool, four stages of two basic blocks (64, 128,
/// 256, 512 channels; stages 2–4 start with stride 2 and a 1×1 projection), global
/// average pooling and `fc`. Names and shapes are torchvision's (11,689,512 parameters
/// at 1000 classes).
pub fn resnet18<T: Element>(
    input: [usize; 3],
    classes: usize,
    rng: &mut StdRng,
) -> Result<Sequential<T>> {
    resnet18_with(input, classes, ResnetOptions::default(), rng)
}

/// [`resnet18`] with construction options.
pub fn resnet18_with<T: Element>(
    input: [usize; 3],
    classes: usize,
    options: ResnetOptions,
    rng: &mut StdRng,
) -> Result<Sequential<T>> {
    // Every stage pads enough that any input of at least one pixel fits (as in PyTorch).
    let c = input[0];
    let mut model = Sequential::new()
        .push_unprefixed(ConvBn::new(
            "conv1",
            kaiming_conv(c, 64, 7, Conv2dConfig::new(2, 3, 1), rng),
            "bn1",
            BatchNorm2d::new(64).with_relu(),
        ))
        .push(
            "maxpool",
            super::MaxPool2d(Pool2dConfig {
                kernel: 3,
                stride: 2,
                padding: 1,
            }),
        );
    let mut c_in = 64;
    for (stage, c_out) in [64, 128, 256, 512].into_iter().enumerate() {
        let stride = if stage == 0 { 1 } else { 2 };
        let layer = Sequential::new()
            .push(
                "0",
                basic_block(c_in, c_out, stride, (Shortcut::Projection, options), rng),
            )
            .push(
                "1",
                basic_block(c_out, c_out, 1, (Shortcut::Projection, options), rng),
            );
        model = model.push(&format!("layer{}", stage + 1), layer);
        c_in = c_out;
    }
    Ok(model
        .push("avgpool", GlobalAvgPool)
        .push("fc", Linear::new(512, classes, true, rng)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use rand::SeedableRng;

    /// The published sizes: 0.27 M, 0.46 M, 0.85 M parameters (10 classes).
    #[test]
    fn parameter_counts_and_names_are_the_published_ones() {
        let count = |depth| {
            resnet_cifar::<f32>(depth, [3, 32, 32], 10, &mut StdRng::seed_from_u64(0))
                .unwrap()
                .num_parameters()
        };
        // conv/bn/linear weights summed by hand for n blocks per stage (option A adds none).
        let by_hand = |n: usize| {
            let block = |ci: usize, co: usize| 9 * ci * co + 9 * co * co + 4 * co;
            let stem = 9 * 3 * 16 + 2 * 16;
            let stages = block(16, 16) * n
                + block(16, 32)
                + block(32, 32) * (n - 1)
                + block(32, 64)
                + block(64, 64) * (n - 1);
            stem + stages + 64 * 10 + 10
        };
        for (depth, n, published) in [(20, 3, 0.27e6), (32, 5, 0.46e6), (56, 9, 0.85e6)] {
            let got = count(depth);
            assert_eq!(got, by_hand(n), "resnet{depth}");
            assert!(
                (got as f64 / published - 1.0).abs() < 0.01,
                "resnet{depth}: {got}"
            );
        }
        let m = resnet_cifar::<f32>(20, [3, 32, 32], 10, &mut StdRng::seed_from_u64(0)).unwrap();
        let names: Vec<String> = m.named_tensors().into_iter().map(|(n, _, _)| n).collect();
        for want in [
            "conv1.weight",
            "bn1.running_var",
            "layer1.0.conv1.weight",
            "layer2.0.bn2.running_mean",
            "layer3.2.conv2.weight",
            "linear.bias",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing");
        }
        assert!(resnet_cifar::<f32>(21, [3, 32, 32], 10, &mut StdRng::seed_from_u64(0)).is_err());
    }

    /// With `zero_init_residual` every block's last batch norm starts at γ = 0, so a block
    /// starts as ReLU(shortcut(x)): the identity on its (non-negative) input; without it
    /// γ = 1. Either way no batch-norm parameter (nor any bias) is weight-decayed, and
    /// every conv and linear weight is.
    #[test]
    fn zero_init_residual_blocks_start_as_the_identity_and_norms_are_not_decayed() {
        let zero = ResnetOptions {
            zero_init_residual: true,
        };
        let mut rng = StdRng::seed_from_u64(3);
        let mut block = basic_block::<f64>(4, 4, 1, (Shortcut::ZeroPad, zero), &mut rng);
        let x = rand_input(&[2, 4, 5, 5], 9).relu();
        assert_close(&block.forward(&x).unwrap().to_vec(), &x.to_vec(), 0.0);
        for (options, gamma) in [(zero, 0.0), (ResnetOptions::default(), 1.0)] {
            for m in [
                resnet_cifar_with::<f32>(20, [3, 32, 32], 10, options, &mut rng).unwrap(),
                resnet18_with::<f32>([3, 64, 64], 10, options, &mut rng).unwrap(),
            ] {
                for (name, t) in m.parameters() {
                    if name.ends_with("bn2.weight") {
                        assert!(t.to_vec().iter().all(|&g| g == gamma), "{name}");
                    }
                    let is_norm_or_bias = name.contains("bn")
                        || name.contains("downsample.1")
                        || name.ends_with("bias");
                    assert_eq!(crate::optim::decays(&t), !is_norm_or_bias, "{name}");
                }
            }
        }
    }

    /// In eval mode every conv of the network runs with its batch norm folded in.
    #[test]
    fn eval_mode_folds_every_batch_norm_into_its_conv() {
        let mut m =
            resnet_cifar::<f32>(20, [3, 32, 32], 10, &mut StdRng::seed_from_u64(0)).unwrap();
        let x = Tensor::<f32>::normal(&[2, 3, 32, 32], 0.0, 1.0, &mut StdRng::seed_from_u64(1));
        m.forward(&x).unwrap();
        m.set_training(false);
        let y = m.forward(&x).unwrap();
        let text = y.graph().to_text();
        assert!(!text.contains("batch_norm2d"), "{text}");
        assert_eq!(text.matches("conv2d+relu").count(), 1 + 9, "{text}");
    }

    /// torchvision's count (`sum(p.numel() for p in resnet18().parameters())`) and key
    /// names; MNIST-sized inputs too.
    #[test]
    fn resnet18_is_torchvisions() {
        let m = resnet18::<f32>([3, 64, 64], 1000, &mut StdRng::seed_from_u64(0)).unwrap();
        assert_eq!(m.num_parameters(), 11_689_512);
        let names: Vec<String> = m.named_tensors().into_iter().map(|(n, _, _)| n).collect();
        for want in [
            "conv1.weight",
            "bn1.running_mean",
            "layer1.0.conv1.weight",
            "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.running_var",
            "layer4.1.bn2.bias",
            "fc.weight",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing");
        }
        let mut small = resnet18::<f32>([1, 28, 28], 10, &mut StdRng::seed_from_u64(0)).unwrap();
        let y = small.forward(&Tensor::zeros(&[2, 1, 28, 28])).unwrap();
        assert_eq!(y.shape(), &[2, 10]);
    }

    #[test]
    fn any_channel_count_and_size_that_survives_two_halvings() {
        let mut rng = StdRng::seed_from_u64(1);
        for input in [[1, 28, 28], [3, 32, 32], [2, 9, 7]] {
            let mut m = resnet_cifar::<f32>(20, input, 7, &mut rng).unwrap();
            let x = Tensor::zeros(&[2, input[0], input[1], input[2]]);
            assert_eq!(m.forward(&x).unwrap().shape(), &[2, 7], "{input:?}");
        }
        assert!(resnet_cifar::<f32>(20, [3, 3, 3], 10, &mut rng).is_err());
    }

    /// The option-A shortcut is x[:, :, ::2, ::2] with zero channels on both sides, and
    /// its gradient passes through (gradcheck, odd sizes, batch 1).
    #[test]
    fn zero_pad_shortcut_subsamples_pads_and_passes_gradients() {
        let x = Tensor::<f64>::from_vec((0..2 * 5 * 3).map(|v| v as f64).collect(), &[1, 2, 5, 3])
            .unwrap();
        let y = ZeroPadShortcut { pad: 1 }.forward(&x).unwrap();
        assert_eq!(y.shape(), &[1, 4, 3, 2]);
        let v = y.to_vec();
        assert!(v[..6].iter().chain(&v[18..]).all(|&z| z == 0.0));
        // Channel 0 of x at rows 0, 2, 4 and columns 0, 2.
        assert_eq!(&v[6..12], &[0.0, 2.0, 6.0, 8.0, 12.0, 14.0]);
        assert_gradcheck(
            |t| ZeroPadShortcut { pad: 2 }.forward(&t[0]),
            &[rand_input(&[1, 3, 5, 4], 3)],
        );
    }

    /// The whole network in f64: gradcheck on a tiny input (depth 8, one block per stage),
    /// through batch norm, both kinds of shortcut and the pooling head.
    #[test]
    fn resnet8_gradcheck_on_a_tiny_input() {
        let f = |t: &[Tensor<f64>]| {
            let mut m = resnet_cifar::<f64>(8, [1, 6, 6], 3, &mut StdRng::seed_from_u64(2))?;
            m.forward(&t[0])
        };
        assert_gradcheck(f, &[rand_input(&[2, 1, 6, 6], 4)]);
    }
}
