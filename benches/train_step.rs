//! One full training step (forward, softmax cross-entropy, backward, SGD momentum update) through
//! `Trainer::train_step`, as `tensorgrad train` runs it,
//! of `lenet` at batch 64 on MNIST and `cifar-cnn` at batch 128 on 3×32×32 noise.
//! Throughput counts images. Each model is measured on a one-thread pool and on the
//! default pool (RAYON_NUM_THREADS or all cores), in the same run, with subnormals flushed
//! to zero as in `tensorgrad train`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use tensorgrad::data::{load_idx_dir, Augment, Batches, Normalization};
use tensorgrad::nn::models::ModelKind;
use tensorgrad::train::bench::bench_trainer;
use tensorgrad::train::denormals::flush_denormals_on_this_thread;
use tensorgrad::Tensor;

fn bench_train_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("train_step_f32");
    group.sample_size(10);
    // Pools like the trainer's: subnormals flushed to zero on every worker.
    let pool = |n: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .start_handler(|_| flush_denormals_on_this_thread())
            .build()
            .unwrap()
    };
    let (single, all) = (pool(1), pool(0));
    let threads = all.current_num_threads();
    for (name, batch, input) in [
        ("lenet_b64", 64, [1, 28, 28]),
        ("cifar-cnn_b128", 128, [3, 32, 32]),
    ] {
        let mut rng = StdRng::seed_from_u64(0);
        // LeNet trains on a real MNIST batch (activations and gradients as in a real run);
        // no CIFAR data ships with the project, so cifar-cnn sees N(0, 1) noise.
        let (x, labels) = if input[0] == 1 {
            let mnist = load_idx_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/mnist"))
                .unwrap();
            let norm = Normalization::of(&mnist.train);
            Batches::new(&mnist.train, batch, Some(0), 0, &norm, Augment::default())
                .next()
                .unwrap()
        } else {
            let x =
                Tensor::<f32>::normal(&[batch, input[0], input[1], input[2]], 0.0, 1.0, &mut rng);
            (x, (0..batch).map(|_| rng.random_range(0..10)).collect())
        };
        let model: ModelKind = name.split('_').next().unwrap().parse().unwrap();
        let mut t = bench_trainer(model).unwrap();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new("1thread", name), |b| {
            single.install(|| b.iter(|| t.train_step(&x, &labels).unwrap()))
        });
        group.bench_function(BenchmarkId::new(format!("{threads}threads"), name), |b| {
            all.install(|| b.iter(|| t.train_step(&x, &labels).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_train_step);
criterion_main!(benches);
