//! What the run machinery needs of a model: a name to record and a way to build it.

use super::Module;
use crate::error::Result;

/// A network the run machinery ([`crate::train::train_model_until`], [`crate::train::SavedRun`])
/// can train, checkpoint, resume and evaluate: a stable name, recorded in the run's
/// `config.json` and checked when the run is resumed or reopened, and a builder that makes
/// the model, freshly initialised from `seed`, for images `[c, h, w]` and `outputs` logits.
///
/// The built-in [`ModelKind`](super::models::ModelKind)s implement it; so can any model
/// written by hand (see `examples/residual_cnn.rs`).
///
/// ```
/// use rand::{rngs::StdRng, SeedableRng};
/// use tensorgrad::nn::{Architecture, Flatten, Linear, Module, Sequential};
///
/// struct Softmax;
/// impl Architecture for Softmax {
///     fn name(&self) -> String {
///         "softmax-regression".into()
///     }
///     fn build(&self, [c, h, w]: [usize; 3], outputs: usize, seed: u64)
///         -> tensorgrad::Result<Box<dyn Module<f32>>> {
///         let mut rng = StdRng::seed_from_u64(seed);
///         Ok(Box::new(Sequential::new()
///             .push("flatten", Flatten)
///             .push("fc", Linear::new(c * h * w, outputs, true, &mut rng))))
///     }
/// }
/// assert_eq!(Softmax.build([1, 28, 28], 10, 0)?.num_parameters(), 7850);
/// # Ok::<(), tensorgrad::TensorError>(())
/// ```
pub trait Architecture: Send + Sync {
    /// The name recorded in the run directory (`lenet`, `resnet20`, `my-residual-cnn`).
    fn name(&self) -> String;

    /// The model for images `[c, h, w]` with `outputs` logits, initialised from `seed`; an
    /// error when the input does not suit it.
    fn build(&self, input: [usize; 3], outputs: usize, seed: u64) -> Result<Box<dyn Module<f32>>>;
}
