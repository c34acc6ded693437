//! GFLOP/s of every conv layer of `lenet` (batch 64) and `cifar-cnn` (batch 128): forward,
//! dX and dW timed separately, next to the rate of a square f32 GEMM (matrixmultiply
//! through `Tensor::matmul`), on 1 and 2 threads. Prints a markdown table (BENCHMARKS.md).
//! Rates count the multiply-adds of a direct convolution (`2·outputs·c_in·k²`), whatever
//! the algorithm; layers that run by Winograd (F(4×4)) are also timed by F(2×2) and im2col,
//! in the same run.
//!
//! `cargo run --release --example conv_gflops`

use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::Instant;
use tensorgrad::ops::conv::{Conv2dConfig, ConvAlgorithm};
use tensorgrad::train::bench::square_sgemm_gflops;
use tensorgrad::train::with_threads;
use tensorgrad::Tensor;

/// (name, input NCHW, c_out, kernel, padding, whether dX is needed in training)
type Layer = (&'static str, [usize; 4], usize, usize, usize, bool);

const LAYERS: [Layer; 6] = [
    ("lenet conv1", [64, 1, 28, 28], 20, 5, 0, false),
    ("lenet conv2", [64, 20, 12, 12], 50, 5, 0, true),
    ("cifar conv1", [128, 3, 32, 32], 32, 3, 1, false),
    ("cifar conv2", [128, 32, 32, 32], 32, 3, 1, true),
    ("cifar conv3", [128, 32, 16, 16], 64, 3, 1, true),
    ("cifar conv4", [128, 64, 16, 16], 64, 3, 1, true),
];

/// Median seconds of `f` over enough repetitions to fill about half a second.
fn median_seconds(mut f: impl FnMut()) -> f64 {
    f();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 5 || (start.elapsed().as_secs_f64() < 0.5 && times.len() < 200) {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

fn main() {
    let mut rng = StdRng::seed_from_u64(0);
    for threads in [1, 2] {
        with_threads(Some(threads), || {
            let n = 512;
            let square = square_sgemm_gflops(n).unwrap();
            println!("\n{threads} thread(s): square {n}³ sgemm {square:.1} GFLOP/s\n");
            println!("| layer | algorithm | GFLOP per pass | forward | dX | dW | dX + dW | forward/sgemm | dX/sgemm | dW/sgemm |");
            println!("|---|---|---|---|---|---|---|---|---|---|");
            let runs = LAYERS.iter().flat_map(|&(name, shape, o, k, pad, has_dx)| {
                let auto = Conv2dConfig::new(1, pad, 1);
                let chosen = auto.algorithm_for(&shape, &[o, shape[1], k, k]).unwrap();
                let mut cfgs = vec![(chosen, auto)];
                if chosen == ConvAlgorithm::Winograd {
                    cfgs.push((ConvAlgorithm::WinogradF2, auto.with_algorithm(ConvAlgorithm::WinogradF2)));
                    cfgs.push((ConvAlgorithm::Im2col, auto.with_algorithm(ConvAlgorithm::Im2col)));
                }
                cfgs.into_iter().map(move |(algorithm, cfg)| (name, algorithm, cfg, shape, o, k, has_dx))
            });
            for (name, algorithm, cfg, shape, o, k, has_dx) in runs {
                let x = Tensor::<f32>::uniform(&shape, -1.0, 1.0, &mut rng);
                let w = Tensor::<f32>::uniform(&[o, shape[1], k, k], -0.1, 0.1, &mut rng);
                let y = x.conv2d(&w, None, cfg).unwrap();
                let flops = 2.0 * (y.numel() * shape[1] * k * k) as f64;
                let dy = Tensor::<f32>::uniform(y.shape(), -1.0, 1.0, &mut rng);
                let forward = median_seconds(|| {
                    std::hint::black_box(x.conv2d(&w, None, cfg).unwrap());
                });
                // dX alone: only the input requires a gradient; dW alone: only the weight.
                let xg = x.detach().with_grad();
                let dx = median_seconds(|| {
                    let y = xg.conv2d(&w, None, cfg).unwrap();
                    std::hint::black_box(y.backward_with(&dy).unwrap());
                }) - forward;
                let wg = w.detach().with_grad();
                let dw = median_seconds(|| {
                    let y = x.conv2d(&wg, None, cfg).unwrap();
                    std::hint::black_box(y.backward_with(&dy).unwrap());
                }) - forward;
                // Both, as in training (one backward pass computes them together).
                let both = median_seconds(|| {
                    let y = xg.conv2d(&wg, None, cfg).unwrap();
                    std::hint::black_box(y.backward_with(&dy).unwrap());
                }) - forward;
                let rate = |s: f64| flops / s / 1e9;
                let dx_cell = if has_dx { format!("{:.1}", rate(dx)) } else { format!("({:.1})", rate(dx)) };
                // dX + dW, counted as two passes' flops.
                let both_cell = if has_dx { format!("{:.1}", 2.0 * rate(both)) } else { "–".into() };
                println!(
                    "| {name} | {algorithm:?} | {:.2} | {:.1} | {dx_cell} | {:.1} | {both_cell} | {:.2} | {:.2} | {:.2} |",
                    flops / 1e9,
                    rate(forward),
                    rate(dw),
                    rate(forward) / square,
                    rate(dx) / square,
                    rate(dw) / square
                );
            }
        })
        .unwrap();
    }
}
