//! The loss registry: every loss is declared once, in its own file, as a [`LossEntry`]
//! (its name, the options it accepts and its builder), and listed in [`LOSSES`]. Options
//! arrive typed, as [`LossOptions`]; this module checks that each option given applies to
//! the chosen loss and that its value is in range, then calls the loss's builder.
//!
//! ```
//! use tensorgrad::loss::{build_loss, Loss, LossOptions};
//!
//! let mut options = LossOptions::new("lgl".parse()?);
//! options.class_weights = Some("inverse".parse()?);
//! let loss: Box<dyn Loss<f32>> = build_loss(&options, &[900, 100])?;
//! assert_eq!(loss.name(), "lgl");
//!
//! // An option the loss does not take is an error, not silently ignored.
//! options.beta = Some(2.0);
//! let Err(e) = build_loss(&options, &[900, 100]) else { panic!("beta is not an LGL option") };
//! assert_eq!(e.to_string(), "loss option beta: does not apply to lgl (only to lgl-inr)");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::weights::ClassWeighting;
use super::{Loss, Reduction, LOSSES};
use crate::text::{keyword_enum, serde_as_text, ParseError};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

keyword_enum! {
    /// An option of a loss, named as the command line spells it (without dashes).
    pub enum LossParam {
        /// [`LossOptions::class_weights`].
        ClassWeights = "class-weights",
        /// [`LossOptions::weight_form`].
        WeightForm = "weight-form",
        /// [`LossOptions::beta`].
        Beta = "beta",
        /// [`LossOptions::detach_weight`].
        DetachWeight = "detach-weight",
        /// [`LossOptions::gamma`].
        Gamma = "gamma",
        /// [`LossOptions::alpha`].
        Alpha = "alpha",
        /// [`LossOptions::label_smoothing`].
        LabelSmoothing = "label-smoothing",
        /// [`LossOptions::logit_adjust`].
        LogitAdjust = "logit-adjust",
        /// [`LossOptions::reduction`].
        Reduction = "reduction",
    }
}

keyword_enum! {
    /// LGL's weighted form (`docs/LOSSES.md`): per sample or per binary problem.
    pub enum WeightForm {
        /// Every term of sample `i` is multiplied by `w[y_i]`.
        Sample = "sample",
        /// Problem `k` weighs its positives `w⁺_k` and its negatives `w⁻_k`.
        PosNeg = "pos-neg",
    }
}

/// A loss object usable in both precisions (every loss of the registry is).
pub trait AnyLoss: Loss<f32> + Loss<f64> {}

impl<L: Loss<f32> + Loss<f64>> AnyLoss for L {}

/// What a registry builder returns.
pub type BuildResult = Result<Box<dyn AnyLoss>, LossOptionError>;

/// A loss as the registry declares it.
pub struct LossEntry {
    /// Name, as `--loss` spells it.
    pub name: &'static str,
    /// One line for help texts.
    pub summary: &'static str,
    /// The options this loss accepts; any other option given is an error.
    pub params: &'static [LossParam],
    /// Builds the loss from options already checked against `params`, and the training
    /// set's class counts (for class weights and logit adjustment).
    pub build: fn(&LossOptions, &[usize]) -> BuildResult,
}

/// Which loss: a handle on its registry entry, spelled by the entry's name.
#[derive(Clone, Copy)]
pub struct LossKind(&'static LossEntry);

impl LossKind {
    /// The registry entry.
    pub fn entry(self) -> &'static LossEntry {
        self.0
    }

    /// The loss's name.
    pub fn name(self) -> &'static str {
        self.0.name
    }

    /// Every registered loss.
    pub fn all() -> impl Iterator<Item = LossKind> {
        LOSSES.iter().map(|&e| LossKind(e))
    }
}

impl Default for LossKind {
    /// The paper's loss, LGL-INR.
    fn default() -> Self {
        LossKind(&super::lgl_inr::ENTRY)
    }
}

impl PartialEq for LossKind {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl fmt::Debug for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LossKind({:?})", self.name())
    }
}

impl fmt::Display for LossKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LossKind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        LossKind::all().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = LOSSES.iter().map(|e| e.name).collect();
            ParseError::new(s, format!("expected one of {}", names.join(", ")))
        })
    }
}

serde_as_text!(LossKind);

/// Options of a loss; `None` means "not given", so that an option given to a loss it does
/// not apply to is an error rather than silently ignored.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LossOptions {
    /// Which loss.
    pub loss: LossKind,
    /// Class weights (not for lgl-inr).
    pub class_weights: Option<ClassWeighting>,
    /// LGL's weighted form [default: sample].
    pub weight_form: Option<WeightForm>,
    /// LGL-INR's inverse temperature β ≥ 0 [default: 1].
    #[serde(default, with = "crate::text::option_f64")]
    pub beta: Option<f64>,
    /// LGL-INR: treat the weights ω as constants in backward.
    #[serde(default)]
    pub detach_weight: bool,
    /// Focal losses' focusing parameter γ ≥ 0 [default: 2].
    #[serde(default, with = "crate::text::option_f64")]
    pub gamma: Option<f64>,
    /// focal: scale α > 0; focal-sigmoid: balance α ∈ [0, 1]; alpha-loss: α ∈ (0, ∞].
    #[serde(default, with = "crate::text::option_f64")]
    pub alpha: Option<f64>,
    /// SML label smoothing ε ∈ [0, 1).
    #[serde(default, with = "crate::text::option_f64")]
    pub label_smoothing: Option<f64>,
    /// SML logit adjustment τ: adds τ·log(class prior) to the logits.
    #[serde(default, with = "crate::text::option_f64")]
    pub logit_adjust: Option<f64>,
    /// Mean (over the total sample weight) or sum [default: mean].
    pub reduction: Option<Reduction>,
}

impl LossOptions {
    /// Options for `loss` with everything else at its default.
    pub fn new(loss: LossKind) -> Self {
        LossOptions {
            loss,
            class_weights: None,
            weight_form: None,
            beta: None,
            detach_weight: false,
            gamma: None,
            alpha: None,
            label_smoothing: None,
            logit_adjust: None,
            reduction: None,
        }
    }

    /// Whether `param` was given.
    pub fn is_given(&self, param: LossParam) -> bool {
        match param {
            LossParam::ClassWeights => self.class_weights.is_some(),
            LossParam::WeightForm => self.weight_form.is_some(),
            LossParam::Beta => self.beta.is_some(),
            LossParam::DetachWeight => self.detach_weight,
            LossParam::Gamma => self.gamma.is_some(),
            LossParam::Alpha => self.alpha.is_some(),
            LossParam::LabelSmoothing => self.label_smoothing.is_some(),
            LossParam::LogitAdjust => self.logit_adjust.is_some(),
            LossParam::Reduction => self.reduction.is_some(),
        }
    }

    /// An error for the first option given that the chosen loss does not accept.
    pub fn check_applicable(&self) -> Result<(), LossOptionError> {
        let entry = self.loss.entry();
        for &param in LossParam::ALL {
            if self.is_given(param) && !entry.params.contains(&param) {
                let takers: Vec<&str> = LOSSES
                    .iter()
                    .filter(|e| e.params.contains(&param))
                    .map(|e| e.name)
                    .collect();
                return Err(LossOptionError::new(
                    param,
                    format!(
                        "does not apply to {} (only to {})",
                        entry.name,
                        takers.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every check [`build_loss`] makes that does not depend on the data: each option
    /// given applies to the loss and is in its range. Runs call it before the options are
    /// recorded or sent anywhere, so a bad value is refused naming its flag.
    pub fn validate(&self) -> Result<(), LossOptionError> {
        // The builders hold the range rules; the class counts only feed class weights and
        // logit adjustment, which any positive counts accept.
        build_loss(self, &[1, 1, 1]).map(drop)
    }

    /// The class weighting given, or none.
    pub(crate) fn weighting(&self) -> ClassWeighting {
        self.class_weights.unwrap_or(ClassWeighting::None)
    }

    /// Per-class weights from `counts`, or `None` when unweighted.
    pub(crate) fn weights(&self, counts: &[usize]) -> Option<Vec<f64>> {
        self.weighting().weights(counts)
    }

    /// The reduction given, or the mean.
    pub(crate) fn reduction_or_mean(&self) -> Reduction {
        self.reduction.unwrap_or(Reduction::Mean)
    }

    /// The focusing parameter γ given (finite, ≥ 0), or 2.
    pub(crate) fn gamma_or_default(&self) -> Result<f64, LossOptionError> {
        self.gamma.map_or(Ok(2.0), |g| {
            finite_in(LossParam::Gamma, g, g >= 0.0, "a finite number ≥ 0")
        })
    }
}

/// A loss option whose value is out of range, or that does not apply to the chosen loss.
#[derive(Clone, Debug, PartialEq, Error)]
#[error("loss option {param}: {reason}")]
pub struct LossOptionError {
    /// The option.
    pub param: LossParam,
    /// What is wrong with it.
    pub reason: String,
}

impl LossOptionError {
    /// An error about `param`.
    pub fn new(param: LossParam, reason: impl Into<String>) -> Self {
        LossOptionError {
            param,
            reason: reason.into(),
        }
    }
}

/// `v` when it is finite and `ok`; otherwise an error saying it is not `expected`.
pub(crate) fn finite_in(
    param: LossParam,
    v: f64,
    ok: bool,
    expected: &str,
) -> Result<f64, LossOptionError> {
    if v.is_finite() && ok {
        Ok(v)
    } else {
        Err(LossOptionError::new(
            param,
            format!("{v} is not {expected}"),
        ))
    }
}

/// Builds the loss described by `options`; `class_counts` (training-set counts per class)
/// feed class weights and logit adjustment. The result converts to `Box<dyn Loss<f32>>` or
/// `Box<dyn Loss<f64>>`.
pub fn build_loss(
    options: &LossOptions,
    class_counts: &[usize],
) -> Result<Box<dyn AnyLoss>, LossOptionError> {
    options.check_applicable()?;
    (options.loss.entry().build)(options, class_counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::{Lgl, LglInr, LglWeights, Sml};
    use crate::tensor::Tensor;

    fn kind(name: &str) -> LossKind {
        name.parse().unwrap()
    }

    fn build(o: &LossOptions) -> Result<Box<dyn Loss<f64>>, LossOptionError> {
        Ok(build_loss(o, &[50, 30, 20])?)
    }

    /// The loss value of `loss` on a fixed batch, to compare with a directly built loss.
    fn value(loss: &dyn Loss<f64>, k: usize) -> f64 {
        let z = Tensor::<f64>::from_f64s(
            &(0..4 * k)
                .map(|i| (i as f64 * 0.37).sin())
                .collect::<Vec<_>>(),
            &[4, k],
        )
        .unwrap();
        loss.forward(&z, &[0, 1, 2, 1]).unwrap().item()
    }

    #[test]
    fn every_registered_loss_builds_with_defaults_under_its_name() {
        assert_eq!(LOSSES.len(), 6);
        for k in LossKind::all() {
            let mut o = LossOptions::new(k);
            if k.name() == "alpha-loss" {
                o.alpha = Some(2.0);
            }
            assert_eq!(build(&o).unwrap().name(), k.name());
            assert_eq!(k.to_string().parse::<LossKind>().unwrap(), k);
        }
        assert!("softmax".parse::<LossKind>().is_err());
    }

    #[test]
    fn options_map_to_the_right_fields() {
        // Each built loss computes the same value as the loss constructed by hand.
        let counts = [50, 30, 20];
        let o = LossOptions {
            class_weights: Some(ClassWeighting::Inverse),
            label_smoothing: Some(0.1),
            logit_adjust: Some(1.0),
            reduction: Some(Reduction::Sum),
            ..LossOptions::new(kind("sml"))
        };
        let direct = Sml {
            weights: ClassWeighting::Inverse.weights(&counts),
            reduction: Reduction::Sum,
            label_smoothing: 0.1,
            logit_offsets: Some(Sml::logit_adjustment(1.0, &counts)),
        };
        assert_eq!(value(build(&o).unwrap().as_ref(), 3), value(&direct, 3));
        let o = LossOptions {
            beta: Some(5.0),
            detach_weight: true,
            ..LossOptions::new(kind("lgl-inr"))
        };
        let direct = LglInr {
            beta: 5.0,
            detach_weight: true,
            eps: 1e-7,
        };
        assert_eq!(value(build(&o).unwrap().as_ref(), 3), value(&direct, 3));
        assert_ne!(value(&direct, 3), value(&LglInr::default(), 3));
        let weighting = ClassWeighting::Effective(0.9999);
        let o = LossOptions {
            class_weights: Some(weighting),
            weight_form: Some(WeightForm::PosNeg),
            ..LossOptions::new(kind("lgl"))
        };
        let (pos, neg) = weighting.pos_neg_weights(&counts).unwrap();
        let direct = Lgl {
            weights: LglWeights::PosNeg { pos, neg },
            reduction: Reduction::Mean,
        };
        assert_eq!(value(build(&o).unwrap().as_ref(), 3), value(&direct, 3));
        assert_ne!(value(&direct, 3), value(&Lgl::default(), 3));
    }

    #[test]
    fn bad_values_are_clear_errors_naming_the_option() {
        let with = |name: &str, f: &dyn Fn(&mut LossOptions)| {
            let mut o = LossOptions::new(kind(name));
            f(&mut o);
            o
        };
        let cases: Vec<(LossOptions, LossParam)> = vec![
            (with("sml", &|o| o.beta = Some(1.0)), LossParam::Beta),
            (with("lgl-inr", &|o| o.beta = Some(-1.0)), LossParam::Beta),
            (
                with("lgl-inr", &|o| o.beta = Some(f64::INFINITY)),
                LossParam::Beta,
            ),
            (
                with("lgl-inr", &|o| o.beta = Some(f64::NAN)),
                LossParam::Beta,
            ),
            (with("focal", &|o| o.gamma = Some(-2.0)), LossParam::Gamma),
            (
                with("focal", &|o| o.gamma = Some(f64::INFINITY)),
                LossParam::Gamma,
            ),
            (
                with("focal", &|o| o.alpha = Some(f64::INFINITY)),
                LossParam::Alpha,
            ),
            (
                with("sml", &|o| o.label_smoothing = Some(1.0)),
                LossParam::LabelSmoothing,
            ),
            (
                with("lgl", &|o| o.label_smoothing = Some(0.1)),
                LossParam::LabelSmoothing,
            ),
            (
                with("sml", &|o| o.logit_adjust = Some(f64::INFINITY)),
                LossParam::LogitAdjust,
            ),
            (
                with("lgl-inr", &|o| {
                    o.class_weights = Some(ClassWeighting::Inverse)
                }),
                LossParam::ClassWeights,
            ),
            (with("alpha-loss", &|_| ()), LossParam::Alpha),
            (
                with("alpha-loss", &|o| o.alpha = Some(0.0)),
                LossParam::Alpha,
            ),
            (
                with("focal-sigmoid", &|o| o.alpha = Some(1.5)),
                LossParam::Alpha,
            ),
            (
                with("lgl", &|o| o.detach_weight = true),
                LossParam::DetachWeight,
            ),
            (
                with("lgl-inr", &|o| o.reduction = Some(Reduction::Sum)),
                LossParam::Reduction,
            ),
        ];
        for (o, param) in cases {
            let e = build(&o)
                .err()
                .unwrap_or_else(|| panic!("{o:?} should fail"));
            assert_eq!(e.param, param, "{e}");
            assert!(e.to_string().starts_with(&format!("loss option {param}: ")));
        }
        // α = ∞ is the 0-1 limit of the alpha-loss, which the spec allows.
        let o = with("alpha-loss", &|o| o.alpha = Some(f64::INFINITY));
        assert_eq!(build(&o).unwrap().name(), "alpha-loss");
    }

    #[test]
    fn options_serialise_as_in_config_json() {
        let o = LossOptions {
            class_weights: Some(ClassWeighting::Effective(0.9999)),
            weight_form: Some(WeightForm::PosNeg),
            ..LossOptions::new(kind("lgl"))
        };
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["loss"], "lgl");
        assert_eq!(v["class_weights"], "effective:0.9999");
        assert_eq!(v["weight_form"], "pos-neg");
        assert_eq!(v["beta"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<LossOptions>(v).unwrap(), o);
    }
}
