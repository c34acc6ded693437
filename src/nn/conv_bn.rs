//! A convolution and the batch norm after it, as one layer: in training mode the two run
//! in turn (the batch norm with its activation fused); in evaluation mode the batch norm
//! is folded into the convolution, so inference runs one conv with a bias and no batch
//! norm pass at all.
//!
//! Folding: eval-mode batch norm is the affine map `y = s·(z − μ) + β` per output channel
//! with `s = γ/√(σ²_running + ε)`. With `z = W ⋆ x + b` that is `(s·W) ⋆ x + (β + s·(b − μ))`:
//! a convolution with weights scaled per output channel and a new bias. The fold is
//! differentiable in `W`, `γ` and `β` like any composite of primitives, and recomputed
//! from the current parameters at every eval forward that records gradients. Without
//! gradients (inference) it is kept, keyed by the identity and in-place version of every
//! tensor it reads and by `ε`: parameters loaded, replaced or trained after the switch to
//! eval mode give a new key, so nothing goes stale. (Folding every call was 5% of a
//! mobilenet-v2 inference, on one thread.)

use super::{prefixed, BatchNorm2d, Conv2d, Module, TensorKind};
use crate::error::Result;
use crate::ops::batch_norm::BnActivation;
use crate::ops::conv::Then;
use crate::tensor::{Element, Tensor};

/// A [`Conv2d`] followed by a [`BatchNorm2d`] (and the batch norm's activation), whose
/// tensors keep their own names in the enclosing module — `conv1.weight`, `bn1.weight`,
/// as if the two were separate layers — so a checkpoint maps to PyTorch's two modules.
/// Push it with [`super::Sequential::push_unprefixed`].
///
/// ```
/// use rand::{rngs::StdRng, SeedableRng};
/// use tensorgrad::nn::{BatchNorm2d, Conv2d, ConvBn, Module, Sequential};
/// use tensorgrad::ops::conv::Conv2dConfig;
/// use tensorgrad::Tensor;
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let conv = Conv2d::new(3, 8, 3, Conv2dConfig::new(1, 1, 1), false, &mut rng);
/// let mut block = Sequential::new()
///     .push_unprefixed(ConvBn::new("conv1", conv, "bn1", BatchNorm2d::new(8).with_relu()));
/// let names: Vec<String> = block.named_tensors().into_iter().map(|(n, _, _)| n).collect();
/// assert_eq!(names[..3], ["conv1.weight", "bn1.weight", "bn1.bias"]);
/// let x = Tensor::<f32>::normal(&[2, 3, 6, 6], 0.0, 1.0, &mut rng);
/// let trained = block.forward(&x)?; // conv, then batch norm + ReLU on batch statistics
/// block.set_training(false);
/// let folded = block.forward(&x)?; // one conv with folded weights and bias, then ReLU
/// assert_eq!(folded.shape(), trained.shape());
/// # Ok::<(), tensorgrad::TensorError>(())
/// ```
pub struct ConvBn<T: Element> {
    /// The convolution (its own fused ReLU must be off: the activation is the batch
    /// norm's, after normalisation).
    pub conv: Conv2d<T>,
    /// The batch norm after it, with its activation.
    pub bn: BatchNorm2d<T>,
    conv_name: String,
    bn_name: String,
    /// The last fold made without gradients, and what it was made from.
    folded: Option<Fold<T>>,
}

/// Folded weights and bias, with the key of the values they were made from.
struct Fold<T: Element> {
    key: Vec<(crate::tensor::TensorId, u64)>,
    eps: u64,
    weight: Tensor<T>,
    bias: Tensor<T>,
}

impl<T: Element> ConvBn<T> {
    /// The pair, its tensors under `conv_name.*` and `bn_name.*`.
    pub fn new(conv_name: &str, mut conv: Conv2d<T>, bn_name: &str, bn: BatchNorm2d<T>) -> Self {
        // A ReLU between the conv and the batch norm is not what this layer computes.
        debug_assert!(
            !conv.relu,
            "ConvBn: the activation belongs to the batch norm"
        );
        conv.relu = false;
        ConvBn {
            conv,
            bn,
            conv_name: conv_name.to_string(),
            bn_name: bn_name.to_string(),
            folded: None,
        }
    }

    /// The eval-mode convolution weights and bias with the batch norm folded in.
    pub fn folded(&self) -> Result<(Tensor<T>, Tensor<T>)> {
        let bn = &self.bn;
        let c = bn.weight.numel();
        let std = bn.running_var.detach().add_scalar(bn.eps).sqrt();
        let scale = bn.weight.div(&std)?;
        let weight = self.conv.weight.mul(&scale.reshape(&[c, 1, 1, 1])?)?;
        let centred = match &self.conv.bias {
            Some(b) => b.sub(&bn.running_mean.detach())?,
            None => bn.running_mean.detach().neg(),
        };
        let bias = bn.bias.add(&centred.mul(&scale)?)?;
        Ok((weight, bias))
    }
}

impl<T: Element> ConvBn<T> {
    /// [`ConvBn::folded`], kept between calls made without gradients while the tensors it
    /// reads keep their values.
    fn folded_for_forward(&mut self) -> Result<(Tensor<T>, Tensor<T>)> {
        if crate::autograd::is_grad_enabled() {
            self.folded = None;
            return self.folded();
        }
        let (conv, bn) = (&self.conv, &self.bn);
        let inputs = [Some(&conv.weight), conv.bias.as_ref(), Some(&bn.weight)];
        let stats = [
            Some(&bn.bias),
            Some(&bn.running_mean),
            Some(&bn.running_var),
        ];
        let key: Vec<_> = inputs
            .into_iter()
            .chain(stats)
            .map(|t| t.map_or((crate::tensor::TensorId::NONE, 0), Tensor::values_key))
            .collect();
        let eps = bn.eps.to_bits();
        if let Some(f) = self
            .folded
            .as_ref()
            .filter(|f| f.key == key && f.eps == eps)
        {
            return Ok((f.weight.clone(), f.bias.clone()));
        }
        let (weight, bias) = self.folded()?;
        self.folded = Some(Fold {
            key,
            eps,
            weight: weight.clone(),
            bias: bias.clone(),
        });
        Ok((weight, bias))
    }
}

impl<T: Element> Module<T> for ConvBn<T> {
    fn kind(&self) -> &'static str {
        match (self.bn.is_training(), self.bn.activation) {
            (true, BnActivation::Identity) => "conv2d→batch_norm2d",
            (true, BnActivation::Relu) => "conv2d→batch_norm2d+relu",
            (true, BnActivation::Relu6) => "conv2d→batch_norm2d+relu6",
            (false, BnActivation::Identity) => "conv2d(bn folded)",
            (false, BnActivation::Relu) => "conv2d(bn folded)+relu",
            (false, BnActivation::Relu6) => "conv2d(bn folded)+relu6",
        }
    }

    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        if self.bn.is_training() {
            let z = self.conv.forward(x)?;
            return self.bn.forward(&z);
        }
        let (weight, bias) = self.folded_for_forward()?;
        let then = match self.bn.activation {
            BnActivation::Relu => Then::Relu,
            BnActivation::Relu6 => Then::Relu6,
            BnActivation::Identity => Then::Nothing,
        };
        // The folded weights keep their identity while the fold is kept, so the kernel
        // built from them is kept too.
        let kept = Some(&mut self.conv.kept);
        x.conv2d_layer(&weight, Some(&bias), self.conv.config, then, kept)
    }

    /// In evaluation mode, with no activation of its own: the folded convolution with the
    /// residual added (and rectified) to each image's output in cache
    /// ([`Tensor::conv2d_add`]); otherwise `forward`, then the sum.
    fn forward_add(
        &mut self,
        x: &Tensor<T>,
        residual: &Tensor<T>,
        relu: bool,
    ) -> Result<Tensor<T>> {
        if self.bn.is_training() || self.bn.activation != BnActivation::Identity {
            return super::residual::join(&self.forward(x)?, residual, relu);
        }
        let (weight, bias) = self.folded_for_forward()?;
        let then = Then::Add { residual, relu };
        let kept = Some(&mut self.conv.kept);
        x.conv2d_layer(&weight, Some(&bias), self.conv.config, then, kept)
    }

    fn named_tensors(&self) -> Vec<(String, TensorKind, Tensor<T>)> {
        let conv = self
            .conv
            .named_tensors()
            .into_iter()
            .map(|t| (&self.conv_name, t));
        let bn = self
            .bn
            .named_tensors()
            .into_iter()
            .map(|t| (&self.bn_name, t));
        conv.chain(bn)
            .map(|(prefix, (n, k, t))| (prefixed(prefix, &n), k, t))
            .collect()
    }

    fn named_tensors_mut(&mut self) -> Vec<(String, TensorKind, &mut Tensor<T>)> {
        let conv = self
            .conv
            .named_tensors_mut()
            .into_iter()
            .map(|t| (&self.conv_name, t));
        let bn = self
            .bn
            .named_tensors_mut()
            .into_iter()
            .map(|t| (&self.bn_name, t));
        conv.chain(bn)
            .map(|(prefix, (n, k, t))| (prefixed(prefix, &n), k, t))
            .collect()
    }

    fn set_training(&mut self, training: bool) {
        if training {
            self.folded = None;
        }
        self.conv.set_training(training);
        self.bn.set_training(training);
    }

    fn is_training(&self) -> bool {
        self.bn.is_training()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Relu6;
    use crate::ops::conv::Conv2dConfig;
    use crate::testing::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// A pair with non-trivial running statistics and parameters (f64).
    fn pair(bias: bool, act: BnActivation, config: Conv2dConfig, seed: u64) -> ConvBn<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let conv = Conv2d::new(4, 6, 3, config, bias, &mut rng);
        let mut bn = BatchNorm2d::new(6);
        bn.activation = act;
        bn.weight = rand_input(&[6], seed + 1)
            .mul_scalar(2.0)
            .detach()
            .with_grad();
        bn.bias = rand_input(&[6], seed + 2).detach().with_grad();
        bn.running_mean = rand_input(&[6], seed + 3).detach();
        bn.running_var = rand_input(&[6], seed + 4).abs().add_scalar(0.2).detach();
        ConvBn::new("conv", conv, "bn", bn)
    }

    /// In evaluation mode the residual join is added in the convolution's epilogue
    /// (`forward_add`): bitwise `forward` then `add` or `add_relu`, with and without
    /// gradients, for the layer alone and as the body of a [`Residual`] block with a
    /// projection shortcut; a residual of another shape is an error.
    #[test]
    fn residual_join_in_the_epilogue_equals_forward_then_add() {
        use crate::nn::{Conv2d, Residual, Sequential};
        let same = Conv2dConfig::new(1, 1, 1);
        let x = rand_input(&[3, 4, 6, 6], 60);
        let skip = rand_input(&[3, 6, 6, 6], 61);
        let bits = |t: &Tensor<f64>| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (relu, grad) in [(false, false), (true, false), (true, true)] {
            let mut layer = pair(true, BnActivation::Identity, same, 62);
            layer.set_training(false);
            let y = layer.forward(&x).unwrap();
            let want = if relu {
                y.add_relu(&skip)
            } else {
                y.add(&skip)
            }
            .unwrap();
            let run = |layer: &mut ConvBn<f64>| layer.forward_add(&x, &skip, relu);
            let got = if grad {
                run(&mut layer)
            } else {
                crate::autograd::no_grad(|| run(&mut layer))
            }
            .unwrap();
            assert_eq!(bits(&got), bits(&want), "relu {relu}, grad {grad}");
            assert!(layer.forward_add(&x, &x, relu).is_err());
        }
        let block = || {
            let mut rng = StdRng::seed_from_u64(63);
            let projection = Conv2d::new(4, 6, 1, Conv2dConfig::default(), false, &mut rng);
            let body =
                Sequential::new().push_unprefixed(pair(true, BnActivation::Identity, same, 64));
            let mut block = Residual::new(body)
                .with_shortcut("downsample", projection)
                .with_relu();
            block.set_training(false);
            block
        };
        let got = crate::autograd::no_grad(|| block().forward(&x)).unwrap();
        let mut body = pair(true, BnActivation::Identity, same, 64);
        body.set_training(false);
        let mut rng = StdRng::seed_from_u64(63);
        let mut projection = Conv2d::new(4, 6, 1, Conv2dConfig::default(), false, &mut rng);
        let want = body
            .forward(&x)
            .unwrap()
            .add_relu(&projection.forward(&x).unwrap())
            .unwrap();
        assert_eq!(bits(&got), bits(&want));
        assert!(want.to_vec().contains(&0.0) && want.to_vec().iter().any(|&v| v > 0.0));
    }

    /// The fold kept between inference calls follows every way the parameters change: in
    /// place (an optimizer step, running statistics), replaced, `ε` changed, and through
    /// a round of training; with gradients recorded it is made afresh.
    #[test]
    fn kept_fold_follows_the_parameters() {
        let mut layer = pair(true, BnActivation::Relu, Conv2dConfig::new(1, 1, 1), 50);
        layer.set_training(false);
        let x = rand_input(&[2, 4, 6, 6], 8);
        // What the layer computes now, folded from scratch with gradients on.
        let fresh = |layer: &mut ConvBn<f64>| layer.forward(&x).unwrap().to_vec();
        let kept = |layer: &mut ConvBn<f64>| {
            crate::autograd::no_grad(|| layer.forward(&x).unwrap().to_vec())
        };
        let first = kept(&mut layer);
        assert_close(&first, &fresh(&mut layer), 1e-12);
        assert_eq!(kept(&mut layer), first);
        type Change = dyn Fn(&mut ConvBn<f64>);
        let changes: [&Change; 6] = [
            &|l| l.conv.weight.update_data(|w| w[0] += 0.5),
            &|l| l.conv.bias.as_mut().unwrap().update_data(|b| b[1] -= 0.25),
            &|l| l.bn.running_mean.update_data(|m| m[2] += 1.0),
            &|l| l.bn.running_var = l.bn.running_var.mul_scalar(3.0).detach(),
            &|l| l.bn.eps = 0.5,
            &|l| {
                l.set_training(true);
                l.forward(&rand_input(&[3, 4, 6, 6], 9)).unwrap();
                l.set_training(false);
            },
        ];
        for (i, change) in changes.into_iter().enumerate() {
            let before = kept(&mut layer);
            change(&mut layer);
            let after = kept(&mut layer);
            assert!(after != before, "change {i} did not reach the output");
            assert_close(&after, &fresh(&mut layer), 1e-12);
        }
    }

    /// Eval mode: the folded conv equals conv then eval batch norm then the activation,
    /// with and without a conv bias, for every activation, stride 2 on an odd size,
    /// padding, groups and batch 1.
    #[test]
    fn folded_eval_equals_conv_then_batch_norm() {
        let configs = [
            Conv2dConfig::new(1, 1, 1),
            Conv2dConfig::new(2, 1, 1),
            Conv2dConfig::new(2, 0, 1).with_groups(2),
        ];
        for (i, config) in configs.into_iter().enumerate() {
            for act in [
                BnActivation::Identity,
                BnActivation::Relu,
                BnActivation::Relu6,
            ] {
                for (bias, batch) in [(false, 1), (true, 3)] {
                    let mut layer = pair(bias, act, config, 10 + i as u64);
                    layer.set_training(false);
                    let x = rand_input(&[batch, 4, 7, 7], 5).mul_scalar(3.0);
                    let got = layer.forward(&x).unwrap();
                    let z = layer.conv.forward(&x).unwrap();
                    let want = layer.bn.forward(&z).unwrap();
                    assert_close(&got.to_vec(), &want.to_vec(), 1e-12);
                }
            }
        }
        // ReLU6 unfused from a separate module agrees too (the activation convention).
        let mut layer = pair(false, BnActivation::Relu6, Conv2dConfig::new(1, 1, 1), 30);
        layer.set_training(false);
        let x = rand_input(&[2, 4, 5, 5], 6).mul_scalar(4.0);
        let z = layer.conv.forward(&x).unwrap();
        layer.bn.activation = BnActivation::Identity;
        let want = Relu6.forward(&layer.bn.forward(&z).unwrap()).unwrap();
        layer.bn.activation = BnActivation::Relu6;
        assert_close(&layer.forward(&x).unwrap().to_vec(), &want.to_vec(), 1e-12);
    }

    /// The fold is differentiable: gradcheck in eval mode through the folded weights, with
    /// respect to the input, the conv weight and bias, and the batch norm's γ and β.
    #[test]
    fn gradcheck_through_the_fold() {
        let x = rand_input(&[2, 4, 5, 5], 7);
        let base = pair(true, BnActivation::Relu, Conv2dConfig::new(2, 1, 1), 40);
        let inputs = [
            x,
            base.conv.weight.detach(),
            base.conv.bias.clone().unwrap().detach(),
            base.bn.weight.detach(),
            base.bn.bias.detach(),
        ];
        assert_gradcheck(
            |t| {
                let mut layer = pair(true, BnActivation::Relu, Conv2dConfig::new(2, 1, 1), 40);
                layer.conv.weight = t[1].clone();
                layer.conv.bias = Some(t[2].clone());
                layer.bn.weight = t[3].clone();
                layer.bn.bias = t[4].clone();
                layer.set_training(false);
                layer.forward(&t[0])
            },
            &inputs,
        );
    }

    /// Training mode is conv then batch norm (batch statistics, running averages updated),
    /// and the names are the two layers' own.
    #[test]
    fn training_mode_runs_conv_then_batch_norm_under_their_names() {
        let mut layer = pair(false, BnActivation::Relu, Conv2dConfig::new(1, 1, 1), 50);
        let x = rand_input(&[3, 4, 6, 6], 8);
        let z = layer.conv.forward(&x).unwrap();
        let (want, _) = z
            .batch_norm2d_train_with(&layer.bn.weight, &layer.bn.bias, 1e-5, BnActivation::Relu)
            .unwrap();
        let before = layer.bn.running_mean.to_vec();
        let got = layer.forward(&x).unwrap();
        assert_close(&got.to_vec(), &want.to_vec(), 0.0);
        assert_ne!(layer.bn.running_mean.to_vec(), before);
        let names: Vec<String> = layer
            .named_tensors()
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "conv.weight",
                "bn.weight",
                "bn.bias",
                "bn.running_mean",
                "bn.running_var",
                "bn.num_batches_tracked"
            ]
        );
        assert_eq!(layer.named_tensors_mut().len(), names.len());
    }
}
