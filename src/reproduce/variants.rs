//! The loss variants of the protocol (docs/EXPERIMENTS.md): each with its folder key,
//! table label, loss options, and where its learning rate comes from.

use super::choices::ChosenLrs;
use super::protocol::{COMMON_LR, E1_BETAS};
use super::VariantKey;
use crate::loss::weights::ClassWeighting;
use crate::loss::{LossKind, LossOptions, WeightForm};
use std::str::FromStr;

/// Where a variant's learning rate comes from.
#[derive(Clone, Debug)]
pub(crate) enum LrSource {
    /// The rate the sweep chose for this sweep family.
    Swept(VariantKey),
    /// A fixed rate.
    Fixed(f64),
}

/// A loss variant of the protocol: folder key, table label, options, learning rate.
pub(crate) struct Variant {
    pub(crate) key: VariantKey,
    pub(crate) label: String,
    pub(crate) options: LossOptions,
    pub(crate) lr: LrSource,
}

fn loss(name: &str) -> LossOptions {
    LossOptions::new(LossKind::from_str(name).expect("registered loss"))
}

/// A variant whose rate is its sweep family's (`family`).
fn variant(
    key: VariantKey,
    label: &str,
    name: &str,
    family: VariantKey,
    edit: impl FnOnce(&mut LossOptions),
) -> Variant {
    let mut options = loss(name);
    edit(&mut options);
    Variant {
        key,
        label: label.to_string(),
        options,
        lr: LrSource::Swept(family),
    }
}

fn sml() -> Variant {
    variant(VariantKey::SML, "SML", "sml", VariantKey::SML, |_| {})
}

fn lgl() -> Variant {
    variant(VariantKey::LGL, "LGL", "lgl", VariantKey::LGL, |_| {})
}

fn lgl_inr(beta: f64) -> Variant {
    let key = VariantKey::lgl_inr(beta);
    variant(
        key.clone(),
        &format!("LGL-INR β={beta}"),
        "lgl-inr",
        key,
        |o| o.beta = Some(beta),
    )
}

fn sml_inv() -> Variant {
    variant(
        VariantKey::SML_INV,
        "SML inv.",
        "sml",
        VariantKey::SML,
        |o| o.class_weights = Some(ClassWeighting::Inverse),
    )
}

fn sml_la() -> Variant {
    variant(
        VariantKey::SML_LA,
        "SML LA τ=1",
        "sml",
        VariantKey::SML,
        |o| o.logit_adjust = Some(1.0),
    )
}

fn focal() -> Variant {
    variant(
        VariantKey::FOCAL,
        "focal γ=2",
        "focal",
        VariantKey::FOCAL,
        |o| o.gamma = Some(2.0),
    )
}

fn lgl_inv() -> Variant {
    variant(
        VariantKey::LGL_INV,
        "LGL inv.",
        "lgl",
        VariantKey::LGL,
        |o| o.class_weights = Some(ClassWeighting::Inverse),
    )
}

/// The sweep's families: each trained variant takes the rate of one of them. Weighted and
/// logit-adjusted softmax take SML's and weighted LGL takes LGL's (on the balanced sweep
/// data their weights are near uniform, so a sweep of their own would repeat their base
/// loss's); every LGL-INR β has its own, since β changes how its gradient is spread.
pub(crate) fn sweep_variants() -> Vec<Variant> {
    let mut v = vec![sml(), focal(), lgl()];
    v.extend(E1_BETAS.iter().map(|&b| lgl_inr(b)));
    v
}

/// E1: SML, LGL, LGL-INR at every β of [`E1_BETAS`].
pub(crate) fn e1_variants() -> Vec<Variant> {
    let mut v = vec![sml(), lgl()];
    v.extend(E1_BETAS.iter().map(|&b| lgl_inr(b)));
    v
}

/// E2: unweighted LGL and inverse-frequency LGL in both weighted forms (one output), and
/// the softmax contrast: SML with two outputs, unweighted and inverse-frequency.
pub(crate) fn e2_variants() -> Vec<Variant> {
    vec![
        lgl(),
        variant(
            VariantKey::LGL_INV_SAMPLE,
            "LGL inv. (sample)",
            "lgl",
            VariantKey::LGL,
            |o| {
                o.class_weights = Some(ClassWeighting::Inverse);
                o.weight_form = Some(WeightForm::Sample);
            },
        ),
        variant(
            VariantKey::LGL_INV_POSNEG,
            "LGL inv. (pos-neg)",
            "lgl",
            VariantKey::LGL,
            |o| {
                o.class_weights = Some(ClassWeighting::Inverse);
                o.weight_form = Some(WeightForm::PosNeg);
            },
        ),
        sml(),
        sml_inv(),
    ]
}

/// E3/E4: the long-tail baselines and the paper's losses, with LGL-INR at β = 1 and at
/// E1's best β (each at its own rate), and at β = 1 with the common rate.
pub(crate) fn e3_variants(best_beta: f64, lrs: &ChosenLrs) -> Vec<Variant> {
    let mut v = vec![
        sml(),
        sml_inv(),
        variant(
            VariantKey::new("sml-cb"),
            "SML CB β=0.9999",
            "sml",
            VariantKey::SML,
            |o| o.class_weights = Some(ClassWeighting::Effective(0.9999)),
        ),
        sml_la(),
        focal(),
        lgl(),
        lgl_inv(),
        lgl_inr(1.0),
    ];
    if best_beta != 1.0 {
        v.push(lgl_inr(best_beta));
    }
    // At the common rate only when the sweep chose another: else it is the same run.
    if lrs.get(&VariantKey::lgl_inr(1.0)) != Some(COMMON_LR) {
        let mut common = lgl_inr(1.0);
        common.key = VariantKey::LGL_INR_B1_COMMON_LR;
        common.label = format!("LGL-INR β=1 (lr {COMMON_LR})");
        common.lr = LrSource::Fixed(COMMON_LR);
        v.push(common);
    }
    v
}

/// E5: SML, logit-adjusted SML, LGL, inverse-frequency LGL and LGL-INR at E1's best β.
pub(crate) fn e5_variants(best_beta: f64) -> Vec<Variant> {
    vec![sml(), sml_la(), lgl(), lgl_inv(), lgl_inr(best_beta)]
}
