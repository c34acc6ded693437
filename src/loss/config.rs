//! The single place that maps loss options, as the CLI spells them, to a loss object.

use super::weights::ClassWeighting;
use super::{AlphaLoss, Focal, FocalSigmoid, Lgl, LglInr, LglWeights, Loss, Reduction, Sml};
use crate::error::OptionError;
use crate::tensor::Element;

/// Names accepted by `--loss`.
pub const LOSS_NAMES: [&str; 6] = [
    "sml",
    "lgl",
    "lgl-inr",
    "focal",
    "focal-sigmoid",
    "alpha-loss",
];

/// Loss options as given by the user; `None` means "not given" (so that an option given
/// to a loss it does not apply to is an error rather than silently ignored).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize, clap::Args)]
pub struct LossOptions {
    /// Loss: sml, lgl, lgl-inr, focal, focal-sigmoid or alpha-loss.
    #[arg(long = "loss", default_value = "lgl-inr")]
    pub loss: String,
    /// Class weights: none, inverse or effective:BETA (not for lgl-inr).
    #[arg(long)]
    pub class_weights: Option<String>,
    /// LGL's weighted form: sample (per-sample w[y_i]) or pos-neg (per-problem w⁺/w⁻).
    #[arg(long)]
    pub weight_form: Option<String>,
    /// LGL-INR's inverse temperature β ≥ 0 [default: 1].
    #[arg(long)]
    pub beta: Option<f64>,
    /// LGL-INR: treat the weights ω as constants in backward.
    #[arg(long)]
    pub detach_weight: bool,
    /// Focal losses' focusing parameter γ ≥ 0 [default: 2].
    #[arg(long)]
    pub gamma: Option<f64>,
    /// focal: scale α > 0; focal-sigmoid: balance α ∈ [0, 1]; alpha-loss: α ∈ (0, inf].
    #[arg(long)]
    pub alpha: Option<f64>,
    /// SML label smoothing ε ∈ [0, 1).
    #[arg(long)]
    pub label_smoothing: Option<f64>,
    /// SML logit adjustment τ: adds τ·log(class prior) to the logits.
    #[arg(long)]
    pub logit_adjust: Option<f64>,
    /// Reduction: mean (over the total sample weight) or sum [default: mean].
    #[arg(long)]
    pub reduction: Option<String>,
}

impl LossOptions {
    /// Options for `loss` with everything else at its default.
    pub fn named(loss: &str) -> Self {
        LossOptions {
            loss: loss.to_string(),
            ..Default::default()
        }
    }
}

fn only_for(option: &str, given: bool, loss: &str, allowed: &[&str]) -> Result<(), OptionError> {
    if given && !allowed.contains(&loss) {
        return Err(OptionError::new(
            option,
            format!(
                "does not apply to --loss {loss} (only to {})",
                allowed.join(", ")
            ),
        ));
    }
    Ok(())
}

fn finite_in(option: &str, v: f64, ok: bool, expected: &str) -> Result<f64, OptionError> {
    if v.is_nan() || !ok {
        return Err(OptionError::new(option, format!("{v} is not {expected}")));
    }
    Ok(v)
}

/// Builds the loss described by `o`; `class_counts` (training-set counts per class) feed
/// class weights and logit adjustment.
pub fn build_loss<T: Element>(
    o: &LossOptions,
    class_counts: &[usize],
) -> Result<Box<dyn Loss<T>>, OptionError> {
    let name = o.loss.as_str();
    if !LOSS_NAMES.contains(&name) {
        return Err(OptionError::new(
            "loss",
            format!(
                "unknown loss {name:?}; expected one of {}",
                LOSS_NAMES.join(", ")
            ),
        ));
    }
    only_for("beta", o.beta.is_some(), name, &["lgl-inr"])?;
    only_for("detach-weight", o.detach_weight, name, &["lgl-inr"])?;
    only_for(
        "gamma",
        o.gamma.is_some(),
        name,
        &["focal", "focal-sigmoid"],
    )?;
    only_for(
        "alpha",
        o.alpha.is_some(),
        name,
        &["focal", "focal-sigmoid", "alpha-loss"],
    )?;
    only_for(
        "label-smoothing",
        o.label_smoothing.is_some(),
        name,
        &["sml"],
    )?;
    only_for("logit-adjust", o.logit_adjust.is_some(), name, &["sml"])?;
    only_for("weight-form", o.weight_form.is_some(), name, &["lgl"])?;
    let not_inr = ["sml", "lgl", "focal", "focal-sigmoid", "alpha-loss"];
    only_for("class-weights", o.class_weights.is_some(), name, &not_inr)?;
    only_for("reduction", o.reduction.is_some(), name, &not_inr)?;

    let weighting = match &o.class_weights {
        Some(spec) => ClassWeighting::parse(spec)?,
        None => ClassWeighting::None,
    };
    let weights = weighting.weights(class_counts);
    let reduction = match o.reduction.as_deref() {
        None | Some("mean") => Reduction::Mean,
        Some("sum") => Reduction::Sum,
        Some(other) => {
            return Err(OptionError::new(
                "reduction",
                format!("{other:?}: expected mean or sum"),
            ))
        }
    };
    let gamma = match o.gamma {
        Some(g) => finite_in("gamma", g, g.is_finite() && g >= 0.0, "a number ≥ 0")?,
        None => 2.0,
    };
    Ok(match name {
        "sml" => {
            let label_smoothing = match o.label_smoothing {
                Some(e) => finite_in("label-smoothing", e, (0.0..1.0).contains(&e), "in [0, 1)")?,
                None => 0.0,
            };
            let logit_offsets = match o.logit_adjust {
                Some(tau) => Some(Sml::logit_adjustment(
                    finite_in("logit-adjust", tau, tau.is_finite(), "finite")?,
                    class_counts,
                )),
                None => None,
            };
            Box::new(Sml {
                weights,
                reduction,
                label_smoothing,
                logit_offsets,
            })
        }
        "lgl" => {
            let form = match (o.weight_form.as_deref().unwrap_or("sample"), weighting) {
                (_, ClassWeighting::None) => LglWeights::None,
                ("sample", _) => LglWeights::PerSample(weights.unwrap_or_default()),
                ("pos-neg", w) => {
                    let (pos, neg) = w.pos_neg_weights(class_counts).unwrap_or_default();
                    LglWeights::PosNeg { pos, neg }
                }
                (other, _) => {
                    return Err(OptionError::new(
                        "weight-form",
                        format!("{other:?}: expected sample or pos-neg"),
                    ))
                }
            };
            Box::new(Lgl {
                weights: form,
                reduction,
            })
        }
        "lgl-inr" => {
            let beta = match o.beta {
                Some(b) => finite_in("beta", b, b.is_finite() && b >= 0.0, "a number ≥ 0")?,
                None => 1.0,
            };
            Box::new(LglInr {
                beta,
                detach_weight: o.detach_weight,
                eps: 1e-7,
            })
        }
        "focal" => {
            let alpha = match o.alpha {
                Some(a) => finite_in("alpha", a, a.is_finite() && a > 0.0, "a number > 0")?,
                None => 1.0,
            };
            Box::new(Focal {
                gamma,
                alpha,
                weights,
                reduction,
            })
        }
        "focal-sigmoid" => {
            let alpha = match o.alpha {
                Some(a) => Some(finite_in(
                    "alpha",
                    a,
                    (0.0..=1.0).contains(&a),
                    "in [0, 1]",
                )?),
                None => None,
            };
            Box::new(FocalSigmoid {
                gamma,
                alpha,
                weights,
                reduction,
            })
        }
        "alpha-loss" => {
            let Some(alpha) = o.alpha else {
                return Err(OptionError::new(
                    "alpha",
                    "alpha-loss needs --alpha (in (0, inf]; 1 is the logistic loss)",
                ));
            };
            let alpha = finite_in("alpha", alpha, alpha > 0.0, "in (0, inf]")?;
            Box::new(AlphaLoss {
                alpha,
                weights,
                reduction,
            })
        }
        _ => unreachable!("checked against LOSS_NAMES"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(o: &LossOptions) -> Result<Box<dyn Loss<f64>>, OptionError> {
        build_loss::<f64>(o, &[50, 30, 20])
    }

    #[test]
    fn every_loss_builds_with_defaults() {
        for name in LOSS_NAMES {
            let mut o = LossOptions::named(name);
            if name == "alpha-loss" {
                o.alpha = Some(2.0);
            }
            assert_eq!(build(&o).unwrap().name(), name);
        }
    }

    #[test]
    fn options_map_to_the_right_fields() {
        let o = LossOptions {
            class_weights: Some("inverse".into()),
            label_smoothing: Some(0.1),
            logit_adjust: Some(1.0),
            reduction: Some("sum".into()),
            ..LossOptions::named("sml")
        };
        assert!(build(&o).is_ok());
        let o = LossOptions {
            beta: Some(5.0),
            detach_weight: true,
            ..LossOptions::named("lgl-inr")
        };
        assert!(build(&o).is_ok());
        let o = LossOptions {
            class_weights: Some("effective:0.9999".into()),
            weight_form: Some("pos-neg".into()),
            ..LossOptions::named("lgl")
        };
        assert!(build(&o).is_ok());
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let cases: Vec<(LossOptions, &str)> = vec![
            (LossOptions::named("softmax"), "--loss"),
            (
                LossOptions {
                    beta: Some(1.0),
                    ..LossOptions::named("sml")
                },
                "--beta",
            ),
            (
                LossOptions {
                    beta: Some(-1.0),
                    ..LossOptions::named("lgl-inr")
                },
                "--beta",
            ),
            (
                LossOptions {
                    gamma: Some(-2.0),
                    ..LossOptions::named("focal")
                },
                "--gamma",
            ),
            (
                LossOptions {
                    label_smoothing: Some(1.0),
                    ..LossOptions::named("sml")
                },
                "--label-smoothing",
            ),
            (
                LossOptions {
                    label_smoothing: Some(0.1),
                    ..LossOptions::named("lgl")
                },
                "--label-smoothing",
            ),
            (
                LossOptions {
                    class_weights: Some("inverse".into()),
                    ..LossOptions::named("lgl-inr")
                },
                "--class-weights",
            ),
            (
                LossOptions {
                    class_weights: Some("effective:2".into()),
                    ..LossOptions::named("sml")
                },
                "--class-weights",
            ),
            (LossOptions::named("alpha-loss"), "--alpha"),
            (
                LossOptions {
                    alpha: Some(0.0),
                    ..LossOptions::named("alpha-loss")
                },
                "--alpha",
            ),
            (
                LossOptions {
                    alpha: Some(1.5),
                    ..LossOptions::named("focal-sigmoid")
                },
                "--alpha",
            ),
            (
                LossOptions {
                    detach_weight: true,
                    ..LossOptions::named("lgl")
                },
                "--detach-weight",
            ),
            (
                LossOptions {
                    reduction: Some("avg".into()),
                    ..LossOptions::named("lgl")
                },
                "--reduction",
            ),
        ];
        for (o, flag) in cases {
            let e = build(&o)
                .err()
                .unwrap_or_else(|| panic!("{o:?} should fail"))
                .to_string();
            assert!(e.starts_with(flag), "{e}");
        }
    }
}
