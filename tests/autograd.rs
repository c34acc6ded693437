//! Integration tests of the autodiff engine: graph shapes (diamonds, long chains,
//! broadcasting), analytic gradients, grad modes, graph lifetime, and gradcheck itself.

use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tensorgrad::autograd::CustomOp;
use tensorgrad::{
    gradcheck, gradcheck_fast, no_grad, GradcheckError, GradcheckOptions, Result, Tensor,
};

fn input(shape: &[usize], seed: u64) -> Tensor<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    Tensor::uniform(shape, -1.5, 1.5, &mut rng).with_grad()
}

fn check(f: impl Fn(&[Tensor<f64>]) -> Result<Tensor<f64>>, inputs: &[Tensor<f64>]) {
    if let Err(e) = gradcheck(f, inputs, &GradcheckOptions::default()) {
        panic!("{e}");
    }
}

#[test]
fn diamond_graph_accumulates_both_paths() {
    // a is used by two branches that meet again: d/dx must add both contributions.
    let x = input(&[2, 3], 1);
    check(
        |t| {
            let a = t[0].tanh();
            let b = a.exp();
            let c = a.mul(&a)?;
            b.add(&c)?.sum(&[1], false)
        },
        std::slice::from_ref(&x),
    );
    // Analytic: f = Σ (x + x) has gradient 2 everywhere.
    let g = x.add(&x).unwrap().sum_all().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec(), vec![2.0; 6]);
}

#[test]
fn chain_of_more_than_ten_ops() {
    let x = input(&[3, 4], 2);
    let w = input(&[4, 2], 3);
    check(
        |t| {
            let h = t[0].matmul(&t[1])?; // 1
            let h = h.mul_scalar(0.7).add_scalar(0.1); // 2, 3
            let h = h.tanh().sigmoid(); // 4, 5
            let h = h.softplus().sqrt(); // 6, 7
            let h = h.powf(1.5).log(); // 8, 9
            let h = h.exp().mul(&h)?; // 10, 11
            let h = h.transpose(0, 1)?.reshape(&[6])?; // 12, 13
            Ok(h.logsumexp(&[0], false)?.neg()) // 14, 15
        },
        &[x, w],
    );
}

#[test]
fn broadcasting_reused_operand() {
    // b is broadcast in one use and used elementwise in another.
    let m = input(&[2, 3], 4);
    let b = input(&[3], 5);
    check(
        |t| {
            let y = t[0].mul(&t[1])?.add(&t[1].square())?;
            y.div(&t[1].abs().add_scalar(1.0))
        },
        &[m, b],
    );
}

#[test]
fn analytic_gradient_of_sum_of_squares_is_2x() {
    let x = input(&[4, 5], 6);
    let g = x.square().sum_all().backward().unwrap();
    let want: Vec<f64> = x.to_vec().iter().map(|v| 2.0 * v).collect();
    assert_eq!(g.get(&x).unwrap().to_vec(), want);
}

#[test]
fn analytic_softmax_cross_entropy_gradient_is_softmax_minus_one_hot() {
    let (b, k) = (4, 5);
    let z = input(&[b, k], 7);
    let labels = [3, 0, 4, 0];
    let y = Tensor::<f64>::one_hot(&labels, k).unwrap();
    let loss = z
        .log_softmax(1)
        .unwrap()
        .mul(&y)
        .unwrap()
        .sum_all()
        .neg()
        .mul_scalar(1.0 / b as f64);
    let g = loss.backward().unwrap();
    let p = z.softmax(1).unwrap().to_vec();
    let yv = y.to_vec();
    let want: Vec<f64> = p.iter().zip(&yv).map(|(p, y)| (p - y) / b as f64).collect();
    for (a, w) in g.get(&z).unwrap().to_vec().iter().zip(&want) {
        assert!((a - w).abs() < 1e-15, "{a} vs {w}");
    }
}

#[test]
fn no_grad_and_detach_stop_recording() {
    let x = input(&[3], 8);
    let y = no_grad(|| x.exp());
    assert!(!y.requires_grad() && y.grad_fn().is_none());
    {
        let _outer = tensorgrad::NoGradGuard::new();
        let _inner = tensorgrad::NoGradGuard::new();
        drop(_inner);
        assert!(
            !x.exp().requires_grad(),
            "inner guard must restore the outer mode"
        );
    }
    assert!(x.exp().requires_grad());
    // Gradient does not flow through a detached branch.
    let g = x.mul(&x.detach()).unwrap().sum_all().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec(), x.to_vec());
    assert!(x.detach().sum_all().backward().is_err());
}

#[test]
fn gradients_are_per_backward_and_only_for_leaves() {
    let x = input(&[2], 9);
    let w = input(&[2], 10);
    let h = x.mul(&w).unwrap();
    let mut g = h.sum_all().backward().unwrap();
    assert_eq!(g.len(), 2, "only leaves keep gradients");
    assert!(g.get(&h).is_none());
    assert_eq!(g.get(&x).unwrap().to_vec(), w.to_vec());
    g.clear();
    assert!(g.is_empty());
    // A second step starts from zero: gradients do not leak across backward calls.
    let g2 = x.mul(&w).unwrap().sum_all().backward().unwrap();
    assert_eq!(g2.get(&x).unwrap().to_vec(), w.to_vec());
}

struct CountDrops {
    input: Tensor<f64>,
    drops: Arc<AtomicUsize>,
    /// Multiplier applied to the true gradient: 1 is correct, anything else is a bug.
    grad_scale: f64,
}

impl CustomOp<f64> for CountDrops {
    fn name(&self) -> &'static str {
        "count_drops"
    }
    fn inputs(&self) -> Vec<&Tensor<f64>> {
        vec![&self.input]
    }
    fn backward(&self, grad: &Tensor<f64>) -> Result<Vec<Option<Tensor<f64>>>> {
        // out = x³, so dx = 3x²·g (times grad_scale).
        let d = self
            .input
            .square()
            .mul_scalar(3.0 * self.grad_scale)
            .mul(grad)?;
        Ok(vec![Some(d)])
    }
}

impl Drop for CountDrops {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

fn cube(x: &Tensor<f64>, drops: &Arc<AtomicUsize>, grad_scale: f64) -> Tensor<f64> {
    let values: Vec<f64> = x.to_vec().iter().map(|v| v * v * v).collect();
    let op = CountDrops {
        input: x.clone(),
        drops: Arc::clone(drops),
        grad_scale,
    };
    Tensor::from_custom_op(values, x.shape(), Box::new(op)).unwrap()
}

#[test]
fn backward_frees_the_graph_and_refuses_a_second_pass() {
    let drops = Arc::new(AtomicUsize::new(0));
    let x = input(&[3], 11);
    let y = cube(&x, &drops, 1.0);
    let loss = y.sum_all();
    assert_eq!(loss.grad_fn(), Some("sum"));
    let g = loss.backward().unwrap();
    // The op record (holding its inputs) is gone although `y` and `loss` are alive.
    assert_eq!(drops.load(Ordering::SeqCst), 1);
    assert!(loss.grad_fn().is_none() && y.grad_fn().is_none());
    let want: Vec<f64> = x.to_vec().iter().map(|v| 3.0 * v * v).collect();
    for (a, w) in g.get(&x).unwrap().to_vec().iter().zip(&want) {
        assert!((a - w).abs() < 1e-14, "{a} vs {w}");
    }
    let e = loss.backward().unwrap_err().to_string();
    assert!(e.contains("freed"), "{e}");
}

#[test]
fn memory_does_not_grow_across_steps() {
    // Every step's graph is released: all op records are dropped, step after step.
    let drops = Arc::new(AtomicUsize::new(0));
    let x = input(&[8], 12);
    for step in 1..=50 {
        let loss = cube(&x, &drops, 1.0).exp().sum_all();
        loss.backward().unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), step);
    }
}

#[test]
fn gradcheck_catches_a_wrong_gradient_and_names_the_element() {
    let drops = Arc::new(AtomicUsize::new(0));
    let x = input(&[2, 2], 13);
    let opts = GradcheckOptions::default();
    assert!(gradcheck(
        |t| Ok(cube(&t[0], &drops, 1.0)),
        std::slice::from_ref(&x),
        &opts
    )
    .is_ok());
    let err = gradcheck(
        |t| Ok(cube(&t[0], &drops, 1.01)),
        std::slice::from_ref(&x),
        &opts,
    )
    .unwrap_err();
    match &err {
        GradcheckError::Mismatch(m) => {
            assert_eq!(
                (m.input, m.element.as_slice(), m.output.as_slice()),
                (0, &[0, 0][..], &[0, 0][..])
            );
            assert!((m.analytic / m.numeric - 1.01).abs() < 1e-6);
            assert_eq!(m.failures, 4);
        }
        other => panic!("expected a mismatch, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("input 0") && msg.contains("element [0, 0]"),
        "{msg}"
    );
    // The fast mode catches it too, and passes the correct op.
    assert!(gradcheck_fast(
        |t| Ok(cube(&t[0], &drops, 1.0)),
        std::slice::from_ref(&x),
        &opts,
        1
    )
    .is_ok());
    assert!(gradcheck_fast(|t| Ok(cube(&t[0], &drops, 1.01)), &[x], &opts, 1).is_err());
}

#[test]
fn gradcheck_refuses_inputs_of_which_none_requires_grad() {
    let x = input(&[2, 2], 13).detach();
    let opts = GradcheckOptions::default();
    let f = |t: &[Tensor<f64>]| Ok(t[0].exp());
    assert!(matches!(
        gradcheck(f, std::slice::from_ref(&x), &opts),
        Err(GradcheckError::NothingToCheck)
    ));
    assert!(matches!(
        gradcheck_fast(f, &[x], &opts, 0),
        Err(GradcheckError::NothingToCheck)
    ));
}

#[test]
fn fast_gradcheck_on_a_composite() {
    let x = input(&[4, 6], 14);
    let w = input(&[6, 3], 15);
    let opts = GradcheckOptions::default();
    let f = |t: &[Tensor<f64>]| Ok(t[0].matmul(&t[1])?.relu().softmax(1)?.log());
    for seed in 0..3 {
        gradcheck_fast(f, &[x.clone(), w.clone()], &opts, seed).unwrap();
    }
}

#[test]
fn f32_and_f64_share_one_implementation() {
    let x32 = Tensor::<f32>::from_vec(vec![0.5, -1.0, 2.0], &[3])
        .unwrap()
        .with_grad();
    let g32 = x32.sigmoid().sum_all().backward().unwrap();
    let x64 = x32.cast::<f64>().with_grad();
    let g64 = x64.sigmoid().sum_all().backward().unwrap();
    for (a, b) in g32
        .get(&x32)
        .unwrap()
        .to_vec()
        .iter()
        .zip(g64.get(&x64).unwrap().to_vec())
    {
        assert!((*a as f64 - b).abs() < 1e-7);
    }
}

#[test]
fn gradients_when_only_one_operand_requires_grad() {
    // Op records keep an operand's values only when the other operand's rule reads them:
    // check every op whose record depends on which operands need a gradient.
    let a = input(&[3, 4], 40);
    let b = input(&[3, 4], 41)
        .abs()
        .add_scalar(0.5)
        .detach()
        .with_grad();
    let m = input(&[4, 2], 42);
    type Binary = fn(&Tensor<f64>, &Tensor<f64>) -> Result<Tensor<f64>>;
    let ops: [(&str, Binary); 6] = [
        ("add", |x, y| x.add(y)),
        ("sub", |x, y| x.sub(y)),
        ("mul", |x, y| x.mul(y)),
        ("div", |x, y| x.div(y)),
        ("maximum", |x, y| x.maximum(y)),
        ("minimum", |x, y| x.minimum(y)),
    ];
    for (name, op) in ops {
        for (x, y) in [(a.clone(), b.detach()), (a.detach(), b.clone())] {
            let f = |t: &[Tensor<f64>]| op(&t[0], &t[1]);
            if let Err(e) = gradcheck(f, &[x, y], &GradcheckOptions::default()) {
                panic!("{name}: {e}");
            }
        }
    }
    check(|t| t[0].matmul(&t[1]), &[a.clone(), m.detach()]);
    check(|t| t[0].matmul(&t[1]), &[a.detach(), m.clone()]);
    // Batched by shared matrix, with only the shared matrix requiring grad.
    let batched = input(&[2, 3, 4], 43).detach();
    check(|t| t[0].matmul(&t[1]), &[batched, m]);
}
