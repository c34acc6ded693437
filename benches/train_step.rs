//! One full training step (forward, softmax cross-entropy, backward, SGD momentum update)
//! of `lenet` at batch 64 on MNIST and `cifar-cnn` at batch 128 on 3×32×32 noise.
//! Throughput counts images. Each model is measured on a one-thread pool and on the
//! default pool (RAYON_NUM_THREADS or all cores), in the same run, with subnormals flushed
//! to zero as in `tensorgrad train`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use tensorgrad::data::{load_idx_dir, Augment, Batches, Normalization};
use tensorgrad::nn::{models, Module, Sequential};
use tensorgrad::optim::{Optimizer, Sgd, SgdConfig};
use tensorgrad::train::denormals::flush_denormals_on_this_thread;
use tensorgrad::Tensor;

fn cross_entropy(logits: &Tensor<f32>, labels: &[usize]) -> tensorgrad::Result<Tensor<f32>> {
    let picked = logits
        .log_softmax(1)?
        .gather(1, labels, &[labels.len(), 1])?;
    Ok(picked.mean_all().neg())
}

fn step(model: &mut Sequential<f32>, opt: &mut Sgd<f32>, x: &Tensor<f32>, labels: &[usize]) {
    let loss = cross_entropy(&model.forward(x).unwrap(), labels).unwrap();
    let grads = loss.backward().unwrap();
    opt.step(model.parameters_mut(), &grads, 0.01).unwrap();
}

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
        let model_name = name.split('_').next().unwrap();
        let mut model = models::build::<f32>(model_name, input, 10, 0).unwrap();
        let mut opt = Sgd::new(SgdConfig {
            momentum: 0.9,
            weight_decay: 5e-4,
            ..Default::default()
        });
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::new("1thread", name), |b| {
            single.install(|| b.iter(|| step(&mut model, &mut opt, &x, &labels)))
        });
        group.bench_function(BenchmarkId::new(format!("{threads}threads"), name), |b| {
            all.install(|| b.iter(|| step(&mut model, &mut opt, &x, &labels)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_train_step);
criterion_main!(benches);
