//! Matmul throughput: square 64/256/1024 and LeNet's conv2 im2col shape for a batch of 64
//! (M=64 output channels, K=20·5·5=800, N=64·24·24=36864). Throughput is counted in
//! FLOPs (2·M·N·K), so criterion's "elem/s" reads as FLOP/s.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::hint::black_box;
use tensorgrad::Tensor;

fn bench_matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul_f32");
    group.sample_size(10);
    let mut rng = StdRng::seed_from_u64(0);
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    let shapes = [
        ("square64", 64, 64, 64),
        ("square256", 256, 256, 256),
        ("square1024", 1024, 1024, 1024),
        ("im2col_64x800x36864", 64, 800, 36864),
    ];
    for (name, m, k, n) in shapes {
        let a = Tensor::<f32>::uniform(&[m, k], -1.0, 1.0, &mut rng);
        let b = Tensor::<f32>::uniform(&[k, n], -1.0, 1.0, &mut rng);
        group.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        // The same product on a one-thread pool: the in-run baseline for the tiling speed-up.
        group.bench_with_input(
            BenchmarkId::new("1thread", name),
            &(&a, &b),
            |bench, (a, b)| single.install(|| bench.iter(|| black_box(a.matmul(b).unwrap()))),
        );
        group.bench_with_input(
            BenchmarkId::new("all_threads", name),
            &(&a, &b),
            |bench, (a, b)| bench.iter(|| black_box(a.matmul(b).unwrap())),
        );
    }
    group.finish();
}

criterion_group!(benches, bench_matmul);
criterion_main!(benches);
