//! Losses against golden values, and the stationarity audit on convex problems.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use tensorgrad::loss::weights::ClassWeighting;
use tensorgrad::loss::{audit, Lgl, LglInr, LglWeights, Loss, Sml};
use tensorgrad::nn::{Linear, Module};
use tensorgrad::optim::{Optimizer, Sgd, SgdConfig};
use tensorgrad::{no_grad, Tensor};

#[test]
fn lgl_inr_matches_golden_values() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/lgl_inr_vectors.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows: Vec<Vec<f64>> = serde_json::from_value(v["logits"].clone()).unwrap();
    let labels: Vec<usize> = serde_json::from_value(v["labels"].clone()).unwrap();
    let k = v["num_classes"].as_u64().unwrap() as usize;
    let eps = v["eps"].as_f64().unwrap();
    let flat: Vec<f64> = rows.concat();
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6, "β ∈ {{0, 1, 5}} × detach on/off");
    let mut worst: f64 = 0.0;
    for case in cases {
        let loss = LglInr {
            beta: case["beta"].as_f64().unwrap(),
            detach_weight: case["detach_weight"].as_bool().unwrap(),
            eps,
        };
        let z = Tensor::<f64>::from_vec(flat.clone(), &[rows.len(), k])
            .unwrap()
            .with_grad();
        let l = loss.forward(&z, &labels).unwrap();
        let want_loss = case["loss"].as_f64().unwrap();
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-300);
        worst = worst.max(rel(l.item(), want_loss));
        let g = l.backward().unwrap().get(&z).unwrap().to_vec();
        let want_grad: Vec<Vec<f64>> = serde_json::from_value(case["grad_logits"].clone()).unwrap();
        for (a, b) in g.iter().zip(want_grad.concat()) {
            // Relative to the gradient's scale, so entries near 0 do not blow up.
            worst = worst.max((a - b).abs() / b.abs().max(1e-3));
        }
    }
    eprintln!("largest relative deviation from the golden LGL-INR values: {worst:.3e}");
    assert!(worst <= 1e-6, "deviation {worst}");
}

/// Three overlapping Gaussian blobs in 2-D with the given class sizes.
fn blobs(sizes: &[usize], seed: u64) -> (Tensor<f64>, Vec<usize>) {
    let means = [(0.0, 0.0), (1.5, 0.5), (0.5, 1.5)];
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for (c, &n) in sizes.iter().enumerate() {
        for _ in 0..n {
            let (a, b): (f64, f64) = (
                StandardNormal.sample(&mut rng),
                StandardNormal.sample(&mut rng),
            );
            x.extend([means[c].0 + a, means[c].1 + b]);
            y.push(c);
        }
    }
    (Tensor::from_vec(x, &[y.len(), 2]).unwrap(), y)
}

/// Full-batch gradient descent (Nesterov momentum) on a linear model until the gradient
/// norm is below `tol`; returns the probabilities on the training set.
fn train_to_stationarity(
    loss: &dyn Loss<f64>,
    x: &Tensor<f64>,
    y: &[usize],
    outputs: usize,
    tol: f64,
) -> Vec<f64> {
    let mut model = Linear::<f64>::new(2, outputs, true, &mut StdRng::seed_from_u64(1));
    let mut opt = Sgd::new(SgdConfig {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 0.0,
    });
    for step in 0..200_000 {
        let grads = loss
            .forward(&model.forward(x).unwrap(), y)
            .unwrap()
            .backward()
            .unwrap();
        let norm: f64 = model
            .parameters()
            .iter()
            .map(|(_, p)| {
                grads
                    .get(p)
                    .unwrap()
                    .to_vec()
                    .iter()
                    .map(|g| g * g)
                    .sum::<f64>()
            })
            .sum::<f64>()
            .sqrt();
        if norm < tol {
            eprintln!(
                "{}: gradient norm {norm:.2e} after {step} steps",
                loss.name()
            );
            return no_grad(|| {
                loss.probabilities(&model.forward(x).unwrap())
                    .unwrap()
                    .to_vec()
            });
        }
        opt.step(model.parameters_mut(), &grads, 0.5).unwrap();
    }
    panic!("{} did not reach gradient norm {tol}", loss.name());
}

#[test]
fn audit_residuals_vanish_at_a_convex_stationary_point() {
    let (x, y) = blobs(&[600, 150, 30], 3);
    let counts = [600, 150, 30];
    let inverse = ClassWeighting::Inverse.weights(&counts);
    let cases: Vec<(&str, Box<dyn Loss<f64>>)> = vec![
        ("sml", Box::new(Sml::default())),
        (
            "sml inverse",
            Box::new(Sml {
                weights: inverse.clone(),
                ..Default::default()
            }),
        ),
        ("lgl", Box::new(Lgl::default())),
        (
            "lgl inverse per-sample",
            Box::new(Lgl {
                weights: LglWeights::PerSample(inverse.clone().unwrap()),
                ..Default::default()
            }),
        ),
        (
            "lgl-inr detached",
            Box::new(LglInr {
                beta: 1.0,
                detach_weight: true,
                eps: 1e-7,
            }),
        ),
    ];
    for (name, loss) in cases {
        let probs = train_to_stationarity(loss.as_ref(), &x, &y, 3, 1e-9);
        let a = audit(&loss.audit_spec().unwrap(), &probs, 3, &y).unwrap();
        eprintln!("{name}:\n{a}");
        assert_eq!(a.rows.len(), 3);
        assert!(a.max_residual <= 1e-6, "{name}: {}", a.max_residual);
    }
}

#[test]
fn binary_weighted_lgl_condition_holds() {
    // 600 negatives (label 0), 30 positives (label 1).
    let (x, y) = blobs(&[600, 30], 4);
    let w = ClassWeighting::Inverse.weights(&[600, 30]).unwrap();
    let loss = Lgl {
        weights: LglWeights::PerSample(w.clone()),
        ..Default::default()
    };
    let probs = train_to_stationarity(&loss, &x, &y, 1, 1e-9);
    let a = audit(&Loss::<f64>::audit_spec(&loss).unwrap(), &probs, 1, &y).unwrap();
    eprintln!("binary weighted lgl:\n{a}");
    assert!(a.max_residual <= 1e-6, "{}", a.max_residual);
    // Inverse frequency: 1 − p̄_1 = p̄_0.
    assert!(((1.0 - a.p_bar[1][0]) - a.p_bar[0][0]).abs() < 1e-6);
}
