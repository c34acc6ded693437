//! Neural-network layers as [`Module`]s with named parameters, and the models of the paper.
//!
//! Parameter names follow the equivalent PyTorch module's `state_dict()` keys
//! (`conv1.weight`, `fc2.bias`, `bn1.running_mean`), so checkpoints map one to one.
//!
//! Blocks compose: a [`Sequential`] of layers, a [`Residual`] around any body, pooling to a
//! vector with [`GlobalAvgPool`]. Fusion is chosen where the model is written, never
//! guessed by a container: [`Conv2d::with_relu`] makes one layer of a convolution and its
//! ReLU (one op, one pass over memory). Anything that implements [`Architecture`] trains,
//! checkpoints, resumes and evaluates through [`crate::train`] like the built-in models.

mod architecture;
mod batch_norm;
mod conv_bn;
pub mod init;
mod layers;
mod linear;
pub mod mobilenet;
pub mod models;
mod residual;
pub mod resnet;

pub use architecture::Architecture;
pub use batch_norm::BatchNorm2d;
pub use conv_bn::ConvBn;
pub use layers::{AvgPool2d, Conv2d, Dropout, Flatten, GlobalAvgPool, MaxPool2d, Relu, Relu6};
pub use linear::Linear;
pub use residual::Residual;

use crate::error::Result;
use crate::tensor::{Element, Tensor};

/// Whether a named tensor is trained or only tracked (like PyTorch's buffers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// Learned by the optimizer; requires grad.
    Parameter,
    /// State updated by the forward pass (batch-norm running statistics).
    Buffer,
}

/// A layer or a model: a forward pass, named tensors in a stable order, and a mode.
pub trait Module<T: Element>: Send {
    /// Applies the module (may update buffers in training mode).
    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>>;

    /// Every parameter and buffer with its name, in a stable order.
    fn named_tensors(&self) -> Vec<(String, TensorKind, Tensor<T>)> {
        Vec::new()
    }

    /// Mutable access to every parameter and buffer, in the order of `named_tensors`.
    fn named_tensors_mut(&mut self) -> Vec<(String, TensorKind, &mut Tensor<T>)> {
        Vec::new()
    }

    /// Switches between training (`true`) and evaluation mode.
    fn set_training(&mut self, _training: bool) {}

    /// `forward(x) + residual`, rectified if `relu`: the join of a residual block whose
    /// body is this module ([`Residual`] calls it). A module may compute it in one pass
    /// where that is faster and gives the same values ([`ConvBn`] in evaluation mode adds
    /// the residual to its convolution's output in cache); the default adds after
    /// `forward`. An error if the output's shape is not `residual`'s.
    fn forward_add(
        &mut self,
        x: &Tensor<T>,
        residual: &Tensor<T>,
        relu: bool,
    ) -> Result<Tensor<T>> {
        residual::join(&self.forward(x)?, residual, relu)
    }

    /// What kind of layer this is, for profiles (`conv2d`, `linear`, …).
    fn kind(&self) -> &'static str {
        "module"
    }

    /// Whether the module is in training mode. Layers that behave the same in both modes
    /// keep the default, `true`; containers and mode-dependent layers track their mode.
    fn is_training(&self) -> bool {
        true
    }

    /// The parameters with their names.
    fn parameters(&self) -> Vec<(String, Tensor<T>)> {
        self.named_tensors()
            .into_iter()
            .filter(|(_, k, _)| *k == TensorKind::Parameter)
            .map(|(n, _, t)| (n, t))
            .collect()
    }

    /// Mutable parameters with their names (what an optimizer updates).
    fn parameters_mut(&mut self) -> Vec<(String, &mut Tensor<T>)> {
        self.named_tensors_mut()
            .into_iter()
            .filter(|(_, k, _)| *k == TensorKind::Parameter)
            .map(|(n, _, t)| (n, t))
            .collect()
    }

    /// Total number of trainable scalars.
    fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|(_, t)| t.numel()).sum()
    }
}

/// A boxed module is a module (so models of any type can be held, passed and nested alike).
impl<T: Element> Module<T> for Box<dyn Module<T>> {
    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        self.as_mut().forward(x)
    }
    fn forward_add(
        &mut self,
        x: &Tensor<T>,
        residual: &Tensor<T>,
        relu: bool,
    ) -> Result<Tensor<T>> {
        self.as_mut().forward_add(x, residual, relu)
    }
    fn named_tensors(&self) -> Vec<(String, TensorKind, Tensor<T>)> {
        self.as_ref().named_tensors()
    }
    fn named_tensors_mut(&mut self) -> Vec<(String, TensorKind, &mut Tensor<T>)> {
        self.as_mut().named_tensors_mut()
    }
    fn set_training(&mut self, training: bool) {
        self.as_mut().set_training(training)
    }
    fn kind(&self) -> &'static str {
        self.as_ref().kind()
    }
    fn is_training(&self) -> bool {
        self.as_ref().is_training()
    }
}

/// The named tensors of a layer with a `weight` and an optional `bias`.
pub(crate) fn weight_and_bias<T: Element>(
    weight: &Tensor<T>,
    bias: &Option<Tensor<T>>,
) -> Vec<(String, TensorKind, Tensor<T>)> {
    let mut v = vec![("weight".into(), TensorKind::Parameter, weight.clone())];
    v.extend(
        bias.iter()
            .map(|b| ("bias".into(), TensorKind::Parameter, b.clone())),
    );
    v
}

/// Mutable access to a layer's `weight` and optional `bias`.
pub(crate) fn weight_and_bias_mut<'a, T: Element>(
    weight: &'a mut Tensor<T>,
    bias: &'a mut Option<Tensor<T>>,
) -> Vec<(String, TensorKind, &'a mut Tensor<T>)> {
    let mut v = vec![("weight".into(), TensorKind::Parameter, weight)];
    v.extend(
        bias.iter_mut()
            .map(|b| ("bias".into(), TensorKind::Parameter, b)),
    );
    v
}

/// Modules applied in order; children's tensors are named `child.tensor`.
/// ```
/// use tensorgrad::nn::{Linear, Module, Relu, Sequential};
/// use rand::{rngs::StdRng, SeedableRng};
/// use tensorgrad::Tensor;
///
/// let mut rng = StdRng::seed_from_u64(0);
/// let mut mlp = Sequential::<f32>::new()
///     .push("fc1", Linear::new(4, 8, true, &mut rng))
///     .push("relu", Relu)
///     .push("fc2", Linear::new(8, 3, true, &mut rng));
/// let names: Vec<String> = mlp.parameters().into_iter().map(|(n, _)| n).collect();
/// assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
/// assert_eq!(mlp.forward(&Tensor::zeros(&[5, 4]))?.shape(), &[5, 3]);
/// # Ok::<(), tensorgrad::TensorError>(())
/// ```
pub struct Sequential<T: Element> {
    layers: Vec<(String, Box<dyn Module<T>>)>,
    training: bool,
}

impl<T: Element> Default for Sequential<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Element> Sequential<T> {
    /// An empty sequence.
    pub fn new() -> Self {
        Sequential {
            layers: Vec::new(),
            training: true,
        }
    }

    /// Appends a layer whose tensors keep the names it gives them, with no prefix: for
    /// a layer that stands for several named modules, such as [`ConvBn`].
    pub fn push_unprefixed(self, layer: impl Module<T> + 'static) -> Self {
        self.push("", layer)
    }

    /// Appends a layer under `name` (the prefix of its tensors' names).
    pub fn push(mut self, name: &str, layer: impl Module<T> + 'static) -> Self {
        self.layers.push((name.to_string(), Box::new(layer)));
        self
    }

    /// Names of the layers, in order.
    pub fn layer_names(&self) -> Vec<&str> {
        self.layers.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there is no layer.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Runs only the first `layers` layers: the features that layer `layers` sees (the
    /// penultimate features for `len() − 1`).
    pub fn forward_prefix(&mut self, x: &Tensor<T>, layers: usize) -> Result<Tensor<T>> {
        let layers = layers.min(self.layers.len());
        run_layers(&mut self.layers[..layers], x)
    }
}

/// `prefix.name`, or `name` alone for a layer pushed without a prefix.
pub(crate) fn prefixed(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Applies `layers` in order, each timed for the profile under its [`Module::kind`].
fn run_layers<T: Element>(
    layers: &mut [(String, Box<dyn Module<T>>)],
    x: &Tensor<T>,
) -> Result<Tensor<T>> {
    use crate::autograd::profile::{time, Phase};
    let mut h = x.clone();
    for (name, layer) in layers {
        let kind = layer.kind();
        h = crate::autograd::scope::within(name, kind, || {
            time(Phase::Forward, kind, || layer.forward(&h))
        })?;
    }
    Ok(h)
}

impl<T: Element> Module<T> for Sequential<T> {
    fn forward(&mut self, x: &Tensor<T>) -> Result<Tensor<T>> {
        run_layers(&mut self.layers, x)
    }

    /// The layers but the last, then the last layer's own `forward_add`.
    fn forward_add(
        &mut self,
        x: &Tensor<T>,
        residual: &Tensor<T>,
        relu: bool,
    ) -> Result<Tensor<T>> {
        use crate::autograd::profile::{time, Phase};
        let Some(((name, last), first)) = self.layers.split_last_mut() else {
            return residual::join(x, residual, relu);
        };
        let h = run_layers(first, x)?;
        let kind = last.kind();
        crate::autograd::scope::within(name, kind, || {
            time(Phase::Forward, kind, || {
                last.forward_add(&h, residual, relu)
            })
        })
    }

    fn named_tensors(&self) -> Vec<(String, TensorKind, Tensor<T>)> {
        self.layers
            .iter()
            .flat_map(|(prefix, l)| {
                l.named_tensors()
                    .into_iter()
                    .map(move |(n, k, t)| (prefixed(prefix, &n), k, t))
            })
            .collect()
    }

    fn named_tensors_mut(&mut self) -> Vec<(String, TensorKind, &mut Tensor<T>)> {
        self.layers
            .iter_mut()
            .flat_map(|(prefix, l)| {
                let prefix = prefix.clone();
                l.named_tensors_mut()
                    .into_iter()
                    .map(move |(n, k, t)| (prefixed(&prefix, &n), k, t))
            })
            .collect()
    }

    fn set_training(&mut self, training: bool) {
        self.training = training;
        for (_, l) in &mut self.layers {
            l.set_training(training);
        }
    }

    fn is_training(&self) -> bool {
        self.training
    }
}
