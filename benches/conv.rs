//! conv2d forward and backward for every conv layer of `lenet` (batch 64, 28×28 input)
//! and `cifar-cnn` (batch 128, 32×32 input), by the algorithm `Auto` picks and, for the
//! layers it sends to Winograd (F(4×4, 3×3)), by F(2×2, 3×3) and im2col as well. Throughput counts images.
//! Run with RAYON_NUM_THREADS=1 and =2 to see the scaling.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::hint::black_box;
use tensorgrad::ops::conv::{Conv2dConfig, ConvAlgorithm};
use tensorgrad::Tensor;

/// One conv layer as it runs in training.
struct Layer {
    name: &'static str,
    /// Input shape, NCHW.
    input: [usize; 4],
    c_out: usize,
    kernel: usize,
    padding: usize,
    /// False for a first layer, whose input needs no gradient.
    input_grad: bool,
}

const fn layer(
    name: &'static str,
    input: [usize; 4],
    c_out: usize,
    kernel: usize,
    padding: usize,
    input_grad: bool,
) -> Layer {
    Layer {
        name,
        input,
        c_out,
        kernel,
        padding,
        input_grad,
    }
}

const LAYERS: [Layer; 6] = [
    layer("lenet_conv1", [64, 1, 28, 28], 20, 5, 0, false),
    layer("lenet_conv2", [64, 20, 12, 12], 50, 5, 0, true),
    layer("cifar_conv1", [128, 3, 32, 32], 32, 3, 1, false),
    layer("cifar_conv2", [128, 32, 32, 32], 32, 3, 1, true),
    layer("cifar_conv3", [128, 32, 16, 16], 64, 3, 1, true),
    layer("cifar_conv4", [128, 64, 16, 16], 64, 3, 1, true),
];

fn bench_conv(c: &mut Criterion) {
    let mut group = c.benchmark_group("conv2d_f32");
    group.sample_size(20);
    let mut rng = StdRng::seed_from_u64(0);
    for l in LAYERS {
        let (name, n, ci, co, k) = (l.name, l.input[0], l.input[1], l.c_out, l.kernel);
        let mut x = Tensor::<f32>::uniform(&l.input, -1.0, 1.0, &mut rng);
        if l.input_grad {
            x = x.with_grad();
        }
        let wt = Tensor::<f32>::uniform(&[co, ci, k, k], -0.1, 0.1, &mut rng).with_grad();
        let b = Tensor::<f32>::uniform(&[co], -0.1, 0.1, &mut rng).with_grad();
        let auto = Conv2dConfig::new(1, l.padding, 1);
        let chosen = auto.algorithm_for(x.shape(), wt.shape()).unwrap();
        let mut algorithms = vec![chosen];
        if chosen == ConvAlgorithm::Winograd {
            algorithms.push(ConvAlgorithm::WinogradF2);
            algorithms.push(ConvAlgorithm::Im2col);
        }
        group.throughput(Throughput::Elements(n as u64));
        for algorithm in algorithms {
            let cfg = auto.with_algorithm(algorithm);
            let id = format!("{name}/{algorithm:?}");
            group.bench_function(BenchmarkId::new("forward", &id), |bench| {
                bench.iter(|| black_box(x.conv2d(&wt, Some(&b), cfg).unwrap()))
            });
            let y_shape = x.conv2d(&wt, Some(&b), cfg).unwrap().shape().to_vec();
            let dy = Tensor::<f32>::uniform(&y_shape, -1.0, 1.0, &mut rng);
            group.bench_function(BenchmarkId::new("backward", &id), |bench| {
                bench.iter_batched(
                    || x.conv2d(&wt, Some(&b), cfg).unwrap(),
                    |y| black_box(y.backward_with(&dy).unwrap()),
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_conv);
criterion_main!(benches);
