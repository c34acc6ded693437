//! Depthwise 3×3 convolutions of MobileNet-v2 at 32×32 inputs (batch 32): the depthwise
//! kernel against one im2col + GEMM per channel (`ConvAlgorithm::Im2col` with
//! `groups = c`), forward and forward + backward. Throughput counts images.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::hint::black_box;
use tensorgrad::ops::conv::{Conv2dConfig, ConvAlgorithm};
use tensorgrad::Tensor;

/// (name, input NCHW, stride).
const LAYERS: [(&str, [usize; 4], usize); 3] = [
    ("dw32_s1_32x32", [32, 32, 32, 32], 1),
    ("dw96_s2_32x32", [32, 96, 32, 32], 2),
    ("dw144_s1_8x8", [32, 144, 8, 8], 1),
];

fn bench_depthwise(c: &mut Criterion) {
    let mut group = c.benchmark_group("depthwise_f32");
    group.sample_size(20);
    let mut rng = StdRng::seed_from_u64(0);
    for (name, input, stride) in LAYERS {
        let ch = input[1];
        let x = Tensor::<f32>::uniform(&input, -1.0, 1.0, &mut rng).with_grad();
        let w = Tensor::<f32>::uniform(&[ch, 1, 3, 3], -0.3, 0.3, &mut rng).with_grad();
        let cfg = Conv2dConfig::new(stride, 1, 1).with_groups(ch);
        group.throughput(Throughput::Elements(input[0] as u64));
        for algorithm in [ConvAlgorithm::Depthwise, ConvAlgorithm::Im2col] {
            let cfg = cfg.with_algorithm(algorithm);
            let id = format!("{name}/{algorithm:?}");
            group.bench_function(BenchmarkId::new("forward", &id), |b| {
                b.iter(|| black_box(x.conv2d(&w, None, cfg).unwrap()))
            });
            group.bench_function(BenchmarkId::new("forward_backward", &id), |b| {
                b.iter(|| {
                    let y = x.conv2d(&w, None, cfg).unwrap();
                    black_box(y.sum_all().backward().unwrap())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_depthwise);
criterion_main!(benches);
