//! The residual block: `y = body(x) + shortcut(x)`, optionally followed by a ReLU.

use super::{Module, TensorKind};
use crate::error::Result;
use crate::tensor::{Element, Tensor};

/// `y = body(x) + shortcut(x)` (the shortcut is the identity unless one is given), with an
/// optional ReLU after the sum — torchvision's `BasicBlock`/`Bottleneck` with
/// [`Residual::with_relu`], MobileNet-v2's `InvertedResidual` without.
///
/// Tensor names line up with PyTorch's state dicts: the body's tensors keep their own
/// names (`conv1.weight`, `bn1.running_mean`, as torchvision's `BasicBlock` attributes)
/// unless [`Residual::body_named`] gives them a prefix (MobileNet-v2's `conv.0.0.weight`),
/// and the shortcut's carry the name it was given (`downsample.0.weight`).
///
/// ```
/// use rand::{rngs::StdRng, SeedableRng};
/// use tensorgrad::nn::{BatchNorm2d, Conv2d, Module, Residual, Sequential};
/// use tensorgrad::ops::conv::Conv2dConfig;
/// use tensorgrad::Tensor;
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let (same, down) = (Conv2dConfig::new(1, 1, 1), Conv2dConfig::new(2, 1, 1));
/// // A torchvision BasicBlock that halves the resolution and doubles the channels.
/// let body = Sequential::<f32>::new()
///     .push("conv1", Conv2d::new(4, 8, 3, down, false, &mut rng))
///     .push("bn1", BatchNorm2d::new(8))
///     .push("relu", tensorgrad::nn::Relu)
///     .push("conv2", Conv2d::new(8, 8, 3, same, false, &mut rng))
///     .push("bn2", BatchNorm2d::new(8));
/// let projection = Sequential::new()
///     .push("0", Conv2d::new(4, 8, 1, Conv2dConfig::new(2, 0, 1), false, &mut rng))
///     .push("1", BatchNorm2d::new(8));
/// let mut block = Residual::new(body).with_shortcut("downsample", projection).with_relu();
/// let names: Vec<String> = block.parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names[0], "conv1.weight");
/// assert_eq!(names.last().unwrap(), "downsample.1.bias");
/// assert_eq!(block.forward(&Tensor::zeros(&[2, 4, 9, 9]))?.shape(), &[2, 8, 5, 5]);
/// # Ok::<(), tensorgrad::TensorError>(())
/// ```
pub struct Residual<T: Element> {
    body: Box<dyn Module<T>>,
    body_prefix: Option<String>,
    shortcut: Option<(String, Box<dyn Module<T>>)>,
    relu: bool,
    training: bool,
}

impl<T: Element> Residual<T> {
    /// `body(x) + x`: an identity shortcut and no activation after the sum.
    pub fn new(body: impl Module<T> + 'static) -> Self {
        Residual {
            body: Box::new(body),
            body_prefix: None,
            shortcut: None,
            relu: false,
            training: true,
        }
    }

    /// Prefixes the body's tensor names with `name.` (e.g. `conv` for MobileNet-v2).
    pub fn body_named(mut self, name: &str) -> Self {
        self.body_prefix = Some(name.to_string());
        self
    }

    /// Replaces the identity shortcut by `shortcut` (a projection when the body changes
    /// the shape), its tensors named `name.…`.
    pub fn with_shortcut(mut self, name: &str, shortcut: impl Module<T> + 'static) -> Self {
        self.shortcut = Some((name.to_string(), Box::new(shortcut)));
        self
    }

    /// Applies a ReLU after the sum.
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }

    fn body_name(&self, name: String) -> String {
        match &self.body_prefix {
            Some(prefix) => format!("{prefix}.{name}"),
            None => name,
        }
    }
}

/// An error unless a residual block's body output (`out`) and shortcut (`skip`) have one
/// shape: equal shapes, not broadcasting; a body that changes the shape needs a projection.
pub(crate) fn check_join(out: &[usize], skip: &[usize]) -> Result<()> {
    if out == skip {
        return Ok(());
    }
    Err(crate::TensorError::InvalidShape {
        op: "residual",
        shape: out.to_vec(),
        reason: format!(
            "the body's output does not match the shortcut's {skip:?} (add a projection shortcut)"
        ),
    })
}

/// `y + skip`, rectified if `relu`: the join computed after the body, as one op each
/// (shapes checked by [`check_join`]).
pub(crate) fn join<T: Element>(y: &Tensor<T>, skip: &Tensor<T>, relu: bool) -> Result<Tensor<T>> {
    check_join(y.shape(), skip.shape())?;
    if relu {
        y.add_relu(skip)
    } else {
        y.add(skip)
    }
}

impl<T: Element> Module<T> for Residual<T> {
    fn kind(&self) -> &'static str {
        "residual"
    }

    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        let skip = match &mut self.shortcut {
            Some((_, shortcut)) => shortcut.forward(x)?,
            None => x.clone(),
        };
        // The body adds the shortcut (and rectifies): in one pass where it can.
        self.body.forward_add(x, &skip, self.relu)
    }

    fn named_tensors(&self) -> Vec<(String, TensorKind, Tensor<T>)> {
        let mut v: Vec<_> = self
            .body
            .named_tensors()
            .into_iter()
            .map(|(n, k, t)| (self.body_name(n), k, t))
            .collect();
        if let Some((name, shortcut)) = &self.shortcut {
            v.extend(
                shortcut
                    .named_tensors()
                    .into_iter()
                    .map(|(n, k, t)| (format!("{name}.{n}"), k, t)),
            );
        }
        v
    }

    fn named_tensors_mut(&mut self) -> Vec<(String, TensorKind, &mut Tensor<T>)> {
        let prefix = self.body_prefix.clone();
        let rename = move |n: String| match &prefix {
            Some(p) => format!("{p}.{n}"),
            None => n,
        };
        let mut v: Vec<_> = self
            .body
            .named_tensors_mut()
            .into_iter()
            .map(|(n, k, t)| (rename(n), k, t))
            .collect();
        if let Some((name, shortcut)) = &mut self.shortcut {
            let name = name.clone();
            v.extend(
                shortcut
                    .named_tensors_mut()
                    .into_iter()
                    .map(|(n, k, t)| (format!("{name}.{n}"), k, t)),
            );
        }
        v
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
        self.body.set_training(training);
        if let Some((_, shortcut)) = &mut self.shortcut {
            shortcut.set_training(training);
        }
    }

    fn is_training(&self) -> bool {
        self.training
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{Conv2d, Linear, Relu, Sequential};
    use crate::ops::conv::Conv2dConfig;
    use crate::testing::*;
    use rand::{rngs::StdRng, SeedableRng};

    /// `x` feeds both the body and the identity shortcut (a diamond in the graph): the
    /// gradient is `1 + ∂body/∂x`, and the block passes gradcheck with and without ReLU,
    /// with an identity and with a projection shortcut.
    #[test]
    fn residual_gradients_through_both_paths() {
        let same = Conv2dConfig::new(1, 1, 1);
        for (relu, project) in [(false, false), (true, false), (false, true), (true, true)] {
            let f = move |t: &[Tensor<f64>]| {
                let mut rng = StdRng::seed_from_u64(3);
                let mut conv = Conv2d::<f64>::new(2, 2, 3, same, true, &mut rng);
                conv.weight = t[1].clone();
                let mut block = Residual::new(Sequential::new().push("conv", conv));
                if project {
                    let mut p =
                        Conv2d::<f64>::new(2, 2, 1, Conv2dConfig::default(), false, &mut rng);
                    p.weight = t[2].clone();
                    block = block.with_shortcut("downsample", p);
                }
                if relu {
                    block = block.with_relu();
                }
                block.forward(&t[0])
            };
            let inputs = [
                rand_input(&[1, 2, 3, 3], 1),
                rand_input(&[2, 2, 3, 3], 2),
                rand_input(&[2, 2, 1, 1], 3),
            ];
            assert_gradcheck(f, &inputs);
        }
        // Closed form: a zero body makes the block the identity, so dL/dx = 1 for a sum.
        let mut rng = StdRng::seed_from_u64(0);
        let mut zero = Linear::<f64>::new(3, 3, false, &mut rng);
        zero.weight = Tensor::zeros(&[3, 3]);
        let mut block = Residual::new(zero);
        let x = rand_input(&[2, 3], 4).with_grad();
        let y = block.forward(&x).unwrap();
        assert_eq!(y.to_vec(), x.to_vec());
        let g = y.sum_all().backward().unwrap();
        assert_eq!(g.get(&x).unwrap().to_vec(), vec![1.0; 6]);
    }

    #[test]
    fn names_follow_torchvision_and_modes_reach_every_child() {
        let mut rng = StdRng::seed_from_u64(0);
        let body = || {
            Sequential::<f32>::new()
                .push(
                    "conv1",
                    Conv2d::new(
                        2,
                        2,
                        3,
                        Conv2dConfig::new(1, 1, 1),
                        false,
                        &mut StdRng::seed_from_u64(1),
                    ),
                )
                .push("relu", Relu)
        };
        let plain = Residual::new(body());
        let names: Vec<String> = plain
            .named_tensors()
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        assert_eq!(names, ["conv1.weight"]);
        let mut named = Residual::new(body()).body_named("conv").with_shortcut(
            "downsample",
            Sequential::new().push("0", Linear::new(2, 2, true, &mut rng)),
        );
        let names: Vec<String> = named
            .named_tensors_mut()
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "conv.conv1.weight",
                "downsample.0.weight",
                "downsample.0.bias"
            ]
        );
        named.set_training(false);
        assert!(!named.is_training());
        // A body whose output shape differs from x without a projection is a shape error.
        let mut bad = Residual::new(Linear::<f32>::new(2, 3, true, &mut rng));
        assert!(bad.forward(&Tensor::zeros(&[1, 2])).is_err());
    }
}
