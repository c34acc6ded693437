//! The library path at full speed: a program that builds a trainer (model, loss, optimizer)
//! and calls `Trainer::train_step` in a loop, with no process set-up of any kind (no
//! allocator switch, no thread pool of its own: rayon's global pool, sized by
//! `RAYON_NUM_THREADS`). It prints one JSON line in the form of `tensorgrad bench`, so the
//! comparison runner measures it beside the command line.
//!
//! ```sh
//! RAYON_NUM_THREADS=1 cargo run --release --example library_speed -- cifar-cnn 128 4
//! ```

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use tensorgrad::nn::models::ModelKind;
use tensorgrad::train::bench::bench_trainer;
use tensorgrad::Tensor;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model: ModelKind = args.first().map_or("lenet", String::as_str).parse()?;
    let batch: usize = args.get(1).map_or(Ok(64), |s| s.parse())?;
    let seconds: f64 = args.get(2).map_or(Ok(4.0), |s| s.parse())?;

    // The model for its input, softmax cross-entropy, SGD with momentum 0.9 and weight
    // decay 5e-4, constant lr 0.01: the trainer `tensorgrad bench` measures, built by the
    // library function a user would call.
    let input = model.native_input();
    let mut trainer = bench_trainer(model)?;

    let mut rng = StdRng::seed_from_u64(0);
    let [c, h, w] = input;
    let x = Tensor::<f32>::normal(&[batch, c, h, w], 0.0, 1.0, &mut rng);
    let y: Vec<usize> = (0..batch).map(|_| rng.random_range(0..10)).collect();

    // The same warm-up and timed loop as `tensorgrad bench`.
    let warm = Instant::now();
    let mut warm_steps = 0;
    while warm_steps < 2 || warm.elapsed() < Duration::from_millis(500) {
        trainer.train_step(&x, &y)?;
        warm_steps += 1;
    }
    let t0 = Instant::now();
    let mut steps = 0;
    while steps == 0 || t0.elapsed().as_secs_f64() < seconds {
        trainer.train_step(&x, &y)?;
        steps += 1;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    // How the framework's buffer cache served the run (misses after the warm-up mean
    // fresh allocations every step).
    let pool = tensorgrad::memory::pool_stats();
    println!(
        "{{\"mode\":\"train-step\",\"model\":\"{model}\",\"batch_size\":{batch},\"threads\":{},\"images_per_sec\":{},\"steps\":{steps},\"seconds\":{elapsed},\"pool_hits\":{},\"pool_misses\":{},\"pool_idle_bytes\":{}}}",
        rayon::current_num_threads(),
        (steps * batch) as f64 / elapsed,
        pool.hits,
        pool.misses,
        pool.idle_bytes
    );
    Ok(())
}
