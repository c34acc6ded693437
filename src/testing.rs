//! Helpers shared by the unit tests of the ops.

use crate::autograd::{gradcheck, GradcheckOptions};
use crate::error::Result;
use crate::tensor::Tensor;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// A seeded f64 tensor with entries in `[-2, 2)` that requires grad.
pub fn rand_input(shape: &[usize], seed: u64) -> Tensor<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::uniform(shape, -2.0, 2.0, &mut rng).with_grad()
}

/// Like [`rand_input`] but with every entry at least `gap` away from zero (for kinks at 0).
pub fn rand_input_away_from_zero(shape: &[usize], seed: u64, gap: f64) -> Tensor<f64> {
    let v: Vec<f64> = rand_input(shape, seed)
        .to_vec()
        .into_iter()
        .map(|x| {
            if x.abs() < gap {
                x.signum() * gap + x
            } else {
                x
            }
        })
        .collect();
    Tensor::from_vec(v, shape).unwrap().with_grad()
}

/// Runs gradcheck with the default tolerances and panics with its report on failure.
pub fn assert_gradcheck(f: impl Fn(&[Tensor<f64>]) -> Result<Tensor<f64>>, inputs: &[Tensor<f64>]) {
    if let Err(e) = gradcheck(f, inputs, &GradcheckOptions::default()) {
        panic!("{e}");
    }
}

/// Asserts two slices agree elementwise to `tol` (absolute plus relative).
pub fn assert_close(actual: &[f64], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tol * (1.0 + e.abs()),
            "element {i}: {a} vs expected {e}"
        );
    }
}

/// Whether the graph rooted at `keep` still holds the storage of the dropped `t`.
pub fn storage_outlives_its_tensor(
    t: Tensor<f64>,
    make: impl Fn(&Tensor<f64>) -> Tensor<f64>,
) -> bool {
    let weak = std::sync::Arc::downgrade(t.storage());
    let y = make(&t);
    drop(t);
    let alive = weak.upgrade().is_some();
    // The gradient still flows through the graph handle.
    let grads = y.sum_all().backward().unwrap();
    assert!(!grads.is_empty());
    alive
}
