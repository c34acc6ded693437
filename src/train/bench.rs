//! Throughput of a training step or of inference, for comparisons with other frameworks:
//! random data, SGD with momentum, images per second over a timed loop after a warm-up,
//! and optionally the time per op of one profiled step.

use super::{with_threads, Assembly, TrainError, Trainer};
use crate::autograd::no_grad;
use crate::autograd::profile::{self, LayerRow, ProfileRow};
use crate::loss::Sml;
use crate::nn::models::ModelKind;
use crate::nn::Module;
use crate::optim::{LrSchedule, OptimizerKind, OptimizerSettings, Schedule};
use crate::tensor::Tensor;
use crate::text::keyword_enum;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

keyword_enum! {
    /// What a benchmark measures.
    pub enum BenchMode {
        /// Forward, loss, backward and the SGD update.
        TrainStep = "train-step",
        /// The forward pass in eval mode without gradients.
        Infer = "infer",
    }
}

/// A benchmark to run.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchConfig {
    /// Train step or inference.
    pub mode: BenchMode,
    /// The model (inputs 1×28×28 for lenet and linear, 3×32×32 for cifar-cnn; 10 classes).
    pub model: ModelKind,
    /// Images per step.
    pub batch_size: usize,
    /// Worker threads (`None`: one per core).
    pub threads: Option<usize>,
    /// Length of the timed loop, after the warm-up.
    pub seconds: f64,
    /// Also profile one step.
    pub profile: bool,
}

/// What a benchmark measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    /// `train-step` or `infer`.
    pub mode: String,
    /// The model.
    pub model: String,
    /// Images per step.
    pub batch_size: usize,
    /// Worker threads used.
    pub threads: usize,
    /// Throughput of the timed loop.
    pub images_per_sec: f64,
    /// Steps in the timed loop.
    pub steps: usize,
    /// Length of the timed loop.
    pub seconds: f64,
    /// Time per op of one step, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<ProfileRow>>,
    /// Time and GFLOP/s per layer and pass of the profiled step, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<LayerRow>>,
    /// With the profile: the rate of a square 512³ f32 GEMM (`Tensor::matmul`) on the same
    /// threads, measured in the same run, the limit the layers' rates are read against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sgemm_gflops: Option<f64>,
}

/// GFLOP/s of a square `n³` f32 matrix product through [`Tensor::matmul`] on the current
/// threads: the median of at least 5 runs over about a quarter of a second.
pub fn square_sgemm_gflops(n: usize) -> Result<f64, TrainError> {
    let mut rng = StdRng::seed_from_u64(1);
    let a = Tensor::<f32>::uniform(&[n, n], -1.0, 1.0, &mut rng);
    let b = Tensor::<f32>::uniform(&[n, n], -1.0, 1.0, &mut rng);
    std::hint::black_box(a.matmul(&b)?);
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed() < Duration::from_millis(250) && times.len() < 100) {
        let t = Instant::now();
        std::hint::black_box(a.matmul(&b)?);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(2.0 * (n * n * n) as f64 / times[times.len() / 2] / 1e9)
}

/// The trainer every benchmark measures: `model` for its [`ModelKind::native_input`] and 10 classes,
/// softmax cross-entropy, SGD with momentum 0.9 and weight decay 5e-4, constant lr 0.01.
pub fn bench_trainer(model: ModelKind) -> Result<Trainer, TrainError> {
    let assembly = Assembly {
        model: Box::new(model.build::<f32>(model.native_input(), 10, 0)?),
        loss: Box::new(Sml::default()),
        optimizer: OptimizerSettings {
            kind: OptimizerKind::Sgd,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 5e-4,
        }
        .build(),
    };
    let schedule = LrSchedule {
        base: 0.01,
        schedule: Schedule::Constant,
        warmup_steps: 0,
        steps_per_epoch: 1,
        total_steps: 1,
    };
    Ok(Trainer::new(assembly, schedule))
}

/// Runs the benchmark on its own thread pool (subnormals flushed, as in training).
pub fn run_bench(config: &BenchConfig) -> Result<BenchResult, TrainError> {
    if config.batch_size == 0 || !(config.seconds.is_finite() && config.seconds > 0.0) {
        return Err(TrainError::Invalid(
            "a benchmark needs a batch size ≥ 1 and a positive, finite length".into(),
        ));
    }
    with_threads(config.threads, || bench_here(config))?
}

fn bench_here(config: &BenchConfig) -> Result<BenchResult, TrainError> {
    let input = config.model.native_input();
    let mut rng = StdRng::seed_from_u64(0);
    let [c, h, w] = input;
    let x = Tensor::<f32>::normal(&[config.batch_size, c, h, w], 0.0, 1.0, &mut rng);
    let y: Vec<usize> = (0..config.batch_size)
        .map(|_| rng.random_range(0..10))
        .collect();
    let mut trainer = bench_trainer(config.model)?;
    let mode = config.mode;
    let step = |t: &mut Trainer| -> Result<(), TrainError> {
        match mode {
            BenchMode::TrainStep => t.train_step(&x, &y).map(|_| ()),
            BenchMode::Infer => no_grad(|| {
                let z = t.model.forward(&x)?;
                t.loss.probabilities(&z).map(|_| ())
            })
            .map_err(TrainError::from),
        }
    };
    if mode == BenchMode::Infer {
        trainer.model.set_training(false);
    }
    // Warm-up: buffers, workspaces and caches reach their steady state.
    let warm = Instant::now();
    let mut warm_steps = 0;
    while warm_steps < 2 || warm.elapsed() < Duration::from_millis(500) {
        step(&mut trainer)?;
        warm_steps += 1;
    }
    let t0 = Instant::now();
    let mut steps = 0;
    while steps == 0 || t0.elapsed().as_secs_f64() < config.seconds {
        step(&mut trainer)?;
        steps += 1;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let (profile, layers, sgemm_gflops) = if config.profile {
        profile::start();
        let r = step(&mut trainer);
        let rows = profile::finish();
        let layers = profile::finish_layers();
        r?;
        (Some(rows), Some(layers), Some(square_sgemm_gflops(512)?))
    } else {
        (None, None, None)
    };
    Ok(BenchResult {
        mode: config.mode.to_string(),
        model: config.model.to_string(),
        batch_size: config.batch_size,
        threads: rayon::current_num_threads(),
        images_per_sec: (steps * config.batch_size) as f64 / seconds,
        steps,
        seconds,
        profile,
        layers,
        sgemm_gflops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_benchmark_measures_and_profiles_a_step() {
        let r = run_bench(&BenchConfig {
            mode: BenchMode::TrainStep,
            model: ModelKind::Lenet,
            batch_size: 8,
            threads: Some(1),
            seconds: 0.05,
            profile: true,
        })
        .unwrap();
        assert!(r.steps >= 1 && r.images_per_sec > 0.0);
        assert_eq!(r.threads, 1);
        let rows = r.profile.unwrap();
        let has = |phase, op: &str| rows.iter().any(|row| row.phase == phase && row.op == op);
        use crate::autograd::profile::Phase;
        assert!(has(Phase::Forward, "conv2d+relu") && has(Phase::Forward, "loss"));
        assert!(has(Phase::Backward, "conv2d+relu") && has(Phase::Backward, "matmul"));
        assert!(has(Phase::Update, "optimizer"));
        // LeNet's two convolutions, forward and backward, with their arithmetic:
        // conv2 is 8 images × 50 × 8 × 8 outputs × 20 × 5 × 5 taps × 2 flops per pass.
        let layers = r.layers.unwrap();
        let conv2 = |phase| {
            layers
                .iter()
                .find(|l| l.phase == phase && l.layer.starts_with("conv 20→50 5×5/1 g1 12×12"))
                .unwrap_or_else(|| panic!("no {phase:?} conv2 in {layers:?}"))
        };
        // (Per call: the profiler is process-wide, and other tests may run LeNet meanwhile.)
        let per_call = |l: &LayerRow| l.gflop / l.calls as f64;
        assert!((per_call(conv2(Phase::Forward)) - 0.0256).abs() < 1e-12);
        assert!((per_call(conv2(Phase::Backward)) - 0.0512).abs() < 1e-12);
        assert!(conv2(Phase::Backward).gflops() > 0.0 && r.sgemm_gflops.unwrap() > 0.0);
        let infer = run_bench(&BenchConfig {
            mode: BenchMode::Infer,
            profile: false,
            ..BenchConfig {
                mode: BenchMode::Infer,
                model: ModelKind::Linear,
                batch_size: 4,
                threads: Some(1),
                seconds: 0.02,
                profile: false,
            }
        })
        .unwrap();
        assert!(infer.profile.is_none() && infer.mode == "infer");
    }
}
