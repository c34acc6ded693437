//! torchvision's MobileNet-v2 (width multiplier 1.0): a 3×3/2 stem, 17 inverted residual
//! blocks — 1×1 expansion (factor t), 3×3 depthwise (stride s), 1×1 linear projection,
//! each conv followed by batch norm and all but the projection by ReLU6, with the identity
//! added where stride is 1 and the channels are unchanged — a 1×1 conv to 1280 channels,
//! global average pooling, dropout 0.2 and the classifier. Names, shapes and strides are
//! torchvision's (`features.0.0.weight`, `features.2.conv.1.0.weight`, `classifier.1.weight`;
//! 3,504,872 parameters at 1000 classes); at 32×32 the last feature map is 1×1.

use super::resnet::kaiming_conv;
use super::{BatchNorm2d, ConvBn, Dropout, GlobalAvgPool, Linear, Module, Residual, Sequential};
use crate::error::Result;
use crate::ops::conv::Conv2dConfig;
use crate::tensor::{Element, Tensor};
use rand::rngs::StdRng;

/// torchvision's `Conv2dNormActivation`: conv (no bias) `0`, batch norm `1`, ReLU6 `2`
/// (no tensors), as one [`ConvBn`] with the ReLU6 fused into the batch norm.
fn conv_bn_relu6<T: Element>(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    groups: usize,
    rng: &mut StdRng,
) -> ConvBn<T> {
    let cfg = Conv2dConfig::new(stride, (kernel - 1) / 2, 1).with_groups(groups);
    ConvBn::new(
        "0",
        kaiming_conv(c_in, c_out, kernel, cfg, rng),
        "1",
        BatchNorm2d::new(c_out).with_relu6(),
    )
}

/// One inverted residual block, its layers under `conv` as torchvision names them.
fn inverted_residual<T: Element>(
    c_in: usize,
    c_out: usize,
    stride: usize,
    expand: usize,
    rng: &mut StdRng,
) -> Box<dyn Module<T>> {
    let hidden = c_in * expand;
    let mut conv = Sequential::new();
    let mut i = 0;
    if expand != 1 {
        conv = conv.push("0", conv_bn_relu6(c_in, hidden, 1, 1, 1, rng));
        i = 1;
    }
    // The linear projection: conv `i + 1` and batch norm `i + 2`, no activation.
    conv = conv
        .push(
            &i.to_string(),
            conv_bn_relu6(hidden, hidden, 3, stride, hidden, rng),
        )
        .push_unprefixed(ConvBn::new(
            &(i + 1).to_string(),
            kaiming_conv(hidden, c_out, 1, Conv2dConfig::default(), rng),
            &(i + 2).to_string(),
            BatchNorm2d::new(c_out),
        ));
    if stride == 1 && c_in == c_out {
        Box::new(Residual::new(conv).body_named("conv"))
    } else {
        // No shortcut: the block is its `conv` alone, under the same names.
        Box::new(Sequential::new().push("conv", conv))
    }
}

/// MobileNet-v2 for images `[c, h, w]` and `classes` outputs, dropout masks seeded from
/// `seed`. Any input of at least one pixel fits (every stride pads).
pub fn mobilenet_v2<T: Element>(
    input: [usize; 3],
    classes: usize,
    seed: u64,
    rng: &mut StdRng,
) -> Result<Sequential<T>> {
    // (expansion t, channels c, repeats n, first stride s), torchvision's table.
    const SETTINGS: [(usize, usize, usize, usize); 7] = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    let mut features = Sequential::new().push("0", conv_bn_relu6(input[0], 32, 3, 2, 1, rng));
    let (mut c_in, mut index) = (32, 1);
    for (t, c, n, s) in SETTINGS {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            features = features.push(
                &index.to_string(),
                inverted_residual(c_in, c, stride, t, rng),
            );
            c_in = c;
            index += 1;
        }
    }
    features = features.push(&index.to_string(), conv_bn_relu6(c_in, 1280, 1, 1, 1, rng));
    // torchvision: the classifier's weight N(0, 0.01), its bias 0.
    let mut fc = Linear::new(1280, classes, true, rng);
    fc.weight = Tensor::normal(&[classes, 1280], 0.0, 0.01, rng).with_grad();
    fc.bias = Some(Tensor::zeros(&[classes]).with_grad());
    let classifier = Sequential::new()
        .push("0", Dropout::new(0.2, seed))
        .push("1", fc);
    Ok(Sequential::new()
        .push("features", features)
        .push("avgpool", GlobalAvgPool)
        .push("classifier", classifier))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use rand::SeedableRng;

    #[test]
    fn mobilenet_v2_is_torchvisions() {
        let m = mobilenet_v2::<f32>([3, 32, 32], 1000, 0, &mut StdRng::seed_from_u64(0)).unwrap();
        assert_eq!(m.num_parameters(), 3_504_872);
        let names: Vec<String> = m.named_tensors().into_iter().map(|(n, _, _)| n).collect();
        for want in [
            "features.0.0.weight",
            "features.0.1.running_mean",
            "features.1.conv.0.0.weight",
            "features.1.conv.1.weight",
            "features.1.conv.2.bias",
            "features.2.conv.0.0.weight",
            "features.2.conv.1.0.weight",
            "features.2.conv.2.weight",
            "features.3.conv.3.running_var",
            "features.18.0.weight",
            "classifier.1.weight",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing");
        }
        // Depthwise layers: one 3×3 filter per channel.
        let dw = m
            .named_tensors()
            .into_iter()
            .find(|(n, _, _)| n == "features.2.conv.1.0.weight")
            .unwrap();
        assert_eq!(dw.2.shape(), &[96, 1, 3, 3]);
    }

    /// 32×32 down to a 1×1 feature map, MNIST-sized inputs too; the whole network in f64
    /// passes gradcheck projections on a tiny input (eval mode: no dropout draw).
    #[test]
    fn mobilenet_v2_runs_on_small_inputs_and_its_gradients_check() {
        let mut m = mobilenet_v2::<f32>([1, 28, 28], 10, 0, &mut StdRng::seed_from_u64(1)).unwrap();
        assert_eq!(
            m.forward(&Tensor::zeros(&[2, 1, 28, 28])).unwrap().shape(),
            &[2, 10]
        );
        let f = |t: &[Tensor<f64>]| {
            let mut m = mobilenet_v2::<f64>([2, 8, 8], 3, 0, &mut StdRng::seed_from_u64(2))?;
            m.set_training(false);
            m.forward(&t[0])
        };
        let opts = crate::GradcheckOptions::default();
        for seed in 0..2 {
            crate::gradcheck_fast(f, &[rand_input(&[2, 2, 8, 8], 5)], &opts, seed).unwrap();
        }
    }
}
