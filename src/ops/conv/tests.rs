//! conv2d by every algorithm against the direct convolution (the reference), and gradcheck
//! over a parameter sweep.

use super::{Conv2dConfig, ConvAlgorithm};
use crate::testing::*;
use crate::{gradcheck, GradcheckOptions, Tensor};

/// The output of the direct convolution (`kernels::conv::direct`, the reference).
fn reference(
    x: &Tensor<f64>,
    w: &Tensor<f64>,
    b: Option<&Tensor<f64>>,
    cfg: Conv2dConfig,
) -> Vec<f64> {
    let direct = cfg.with_algorithm(ConvAlgorithm::Direct);
    x.detach()
        .conv2d(&w.detach(), b.map(Tensor::detach).as_ref(), direct)
        .unwrap()
        .to_vec()
}

/// `(dX, dW, db)` of `Σ conv2d(x) ⊙ r` by the direct convolution.
fn reference_grads(
    x: &Tensor<f64>,
    w: &Tensor<f64>,
    b: &Tensor<f64>,
    r: &Tensor<f64>,
    cfg: Conv2dConfig,
) -> [Vec<f64>; 3] {
    let (x, w, b) = (
        x.detach().with_grad(),
        w.detach().with_grad(),
        b.detach().with_grad(),
    );
    let direct = cfg.with_algorithm(ConvAlgorithm::Direct);
    let y = x.conv2d(&w, Some(&b), direct).unwrap();
    let g = y.mul(r).unwrap().sum_all().backward().unwrap();
    [&x, &w, &b].map(|t| g.get(t).unwrap().to_vec())
}

/// Every combination of the sweep that fits the input: (batch, c_in, kernel, stride, pad, dil, bias).
fn sweep() -> Vec<(usize, usize, usize, usize, usize, usize, bool)> {
    let mut cases = vec![];
    for batch in [1, 3] {
        for c_in in [1, 2] {
            for kernel in [1, 3, 5] {
                for stride in [1, 2, 3] {
                    for pad in [0, 1, 2] {
                        for dil in [1, 2] {
                            for bias in [false, true] {
                                cases.push((batch, c_in, kernel, stride, pad, dil, bias));
                            }
                        }
                    }
                }
            }
        }
    }
    cases
}

// Input 7×5: neither side is divisible by stride 2 or 3; non-square.
const H: usize = 7;
const W: usize = 5;

#[test]
fn forward_matches_direct_convolution() {
    let mut checked = 0;
    for (i, (batch, c_in, k, s, p, d, bias)) in sweep().into_iter().enumerate() {
        let cfg = Conv2dConfig::new(s, p, d);
        let x = rand_input(&[batch, c_in, H, W], i as u64);
        let w = rand_input(&[3, c_in, k, k], 1000 + i as u64);
        let b = rand_input(&[3], 2000 + i as u64);
        let b = bias.then_some(&b);
        match x.conv2d(&w, b, cfg) {
            Ok(y) => {
                let want = reference(&x, &w, b, cfg);
                let got = y.to_vec();
                assert_eq!(got.len(), want.len());
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(worst <= 1e-10, "case {i}: deviation {worst}");
                checked += 1;
            }
            Err(e) => assert!(d * (k - 1) + 1 > W + 2 * p, "case {i} should fit: {e}"),
        }
    }
    assert!(checked > 250, "only {checked} cases fit");
}

/// `cfg`'s output and its gradients for `x`, `w` and `b` (against a random output
/// gradient seeded by `seed`) equal the direct convolution's within 1e-12.
fn assert_values_and_gradients_match_direct(
    x: &Tensor<f64>,
    w: &Tensor<f64>,
    b: &Tensor<f64>,
    cfg: Conv2dConfig,
    seed: u64,
) {
    let y = x.conv2d(w, Some(b), cfg).unwrap();
    let r = rand_input(y.shape(), 3000 + seed).detach();
    let g = y.mul(&r).unwrap().sum_all().backward().unwrap();
    let want = reference_grads(x, w, b, &r, cfg);
    let direct = cfg.with_algorithm(ConvAlgorithm::Direct);
    let want_y = x.conv2d(w, Some(b), direct).unwrap().to_vec();
    assert_close(&y.to_vec(), &want_y, 1e-12);
    for (t, want) in [x, w, b].iter().zip(&want) {
        assert_close(&g.get(t).unwrap().to_vec(), want, 1e-12);
    }
}

/// im2col, and the implicit GEMM (its forward; dX on the micro-kernel, dW im2col's), in
/// values and gradients.
#[test]
fn im2col_gradients_match_direct_convolution_over_the_sweep() {
    let mut checked = 0;
    let algorithms = [ConvAlgorithm::Im2col, ConvAlgorithm::ImplicitGemm];
    for (i, (batch, c_in, k, s, p, d, _)) in sweep().into_iter().enumerate() {
        if d * (k - 1) + 1 > W + 2 * p {
            continue;
        }
        let algorithm = algorithms[i % 2];
        let cfg = Conv2dConfig::new(s, p, d).with_algorithm(algorithm);
        let x = rand_input(&[batch, c_in, H, W], i as u64);
        let w = rand_input(&[3, c_in, k, k], 1000 + i as u64);
        let b = rand_input(&[3], 2000 + i as u64);
        assert_values_and_gradients_match_direct(&x, &w, &b, cfg, i as u64);
        checked += 1;
    }
    assert!(checked > 250, "only {checked} cases checked");
}

/// The rows kernels on every case of the sweep they support (dilation 1, any stride), in
/// values and gradients against the definition, with a gradcheck on each third; dilated
/// layers are refused with an error.
#[test]
fn direct_rows_match_direct_convolution_over_the_sweep() {
    let (mut checked, mut refused) = (0, 0);
    for (i, (batch, c_in, k, s, p, d, bias)) in sweep().into_iter().enumerate() {
        if d * (k - 1) + 1 > W + 2 * p {
            continue;
        }
        let cfg = Conv2dConfig::new(s, p, d).with_algorithm(ConvAlgorithm::DirectRows);
        let x = rand_input(&[batch, c_in, H, W], i as u64);
        let w = rand_input(&[3, c_in, k, k], 1000 + i as u64);
        let b = rand_input(&[3], 2000 + i as u64);
        if d != 1 {
            assert!(x.conv2d(&w, Some(&b), cfg).is_err(), "case {i}");
            refused += 1;
            continue;
        }
        assert_values_and_gradients_match_direct(&x, &w, &b, cfg, i as u64);
        if i % 3 == 0 {
            let mut inputs = vec![x.detach().with_grad(), w.detach().with_grad()];
            if bias {
                inputs.push(b.detach().with_grad());
            }
            let r = gradcheck(
                |t| t[0].conv2d(&t[1], t.get(2), cfg),
                &inputs,
                &GradcheckOptions::default(),
            );
            assert!(r.is_ok(), "case {i}: {}", r.unwrap_err());
        }
        checked += 1;
    }
    assert!(
        checked > 40 && refused > 100,
        "{checked} checked, {refused} refused"
    );
}

#[test]
fn gradcheck_parameter_sweep() {
    let opts = GradcheckOptions::default();
    let mut checked = 0;
    for (i, (batch, c_in, k, s, p, d, bias)) in sweep().into_iter().enumerate() {
        if d * (k - 1) + 1 > W + 2 * p {
            continue;
        }
        let cfg = Conv2dConfig::new(s, p, d);
        let mut inputs = vec![
            rand_input(&[batch, c_in, H, W], i as u64),
            rand_input(&[2, c_in, k, k], 1000 + i as u64),
        ];
        if bias {
            inputs.push(rand_input(&[2], 2000 + i as u64));
        }
        // The fast path Auto picks, and the direct reference itself.
        for cfg in [cfg, cfg.with_algorithm(ConvAlgorithm::Direct)] {
            let r = gradcheck(|t| t[0].conv2d(&t[1], t.get(2), cfg), &inputs, &opts);
            assert!(
                r.is_ok(),
                "case {i} {:?} {:?}: {}",
                (batch, c_in, k, s, p, d, bias),
                cfg.algorithm,
                r.unwrap_err()
            );
        }
        checked += 1;
    }
    assert!(checked > 250, "only {checked} cases checked");
}

#[test]
fn gradcheck_rectangular_kernel_and_mixed_stride() {
    let cfg = Conv2dConfig {
        stride: (2, 1),
        padding: (1, 0),
        dilation: (1, 2),
        groups: 1,
        algorithm: ConvAlgorithm::Auto,
    };
    let inputs = [
        rand_input(&[2, 3, 6, 7], 1),
        rand_input(&[4, 3, 3, 2], 2),
        rand_input(&[4], 3),
    ];
    assert_gradcheck(|t| t[0].conv2d(&t[1], Some(&t[2]), cfg), &inputs);
}

#[test]
fn gradient_only_for_what_requires_it() {
    // The first layer of a network: the input needs no gradient.
    let x = rand_input(&[2, 1, 5, 5], 4).detach();
    let w = rand_input(&[3, 1, 3, 3], 5);
    let g = x
        .conv2d(&w, None, Conv2dConfig::default())
        .unwrap()
        .sum_all()
        .backward()
        .unwrap();
    assert!(g.get(&x).is_none() && g.get(&w).is_some());
}

#[test]
fn bad_shapes_are_errors_naming_both_shapes() {
    let x = Tensor::<f32>::zeros(&[1, 3, 8, 8]);
    let w = Tensor::<f32>::zeros(&[4, 2, 3, 3]);
    let e = x
        .conv2d(&w, None, Conv2dConfig::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("conv2d") && e.contains("[1, 3, 8, 8]") && e.contains("[4, 2, 3, 3]"),
        "{e}"
    );
    let w = Tensor::<f32>::zeros(&[4, 3, 9, 9]);
    assert!(x.conv2d(&w, None, Conv2dConfig::default()).is_err());
    let w = Tensor::<f32>::zeros(&[4, 3, 3, 3]);
    let b = Tensor::<f32>::zeros(&[5]);
    assert!(x.conv2d(&w, Some(&b), Conv2dConfig::default()).is_err());
    assert!(x.conv2d(&w, None, Conv2dConfig::new(0, 0, 1)).is_err());
}

#[test]
fn wide_images_split_into_several_row_tiles() {
    // 130 and 100 output columns: one and two output rows per tile, last tile ragged.
    let opts = GradcheckOptions::default();
    for (i, (w, stride)) in [(130, 1), (200, 2)].into_iter().enumerate() {
        let cfg = Conv2dConfig::new(stride, 1, 1);
        let x = rand_input(&[2, 2, 6, w], 300 + i as u64);
        let wt = rand_input(&[3, 2, 3, 3], 310 + i as u64);
        let b = rand_input(&[3], 320 + i as u64);
        let got = x.conv2d(&wt, Some(&b), cfg).unwrap().to_vec();
        let want = reference(&x, &wt, Some(&b), cfg);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1e-10, "deviation {worst}");
        for seed in 0..3 {
            crate::gradcheck_fast(
                |t| t[0].conv2d(&t[1], Some(&t[2]), cfg),
                &[x.clone(), wt.clone(), b.clone()],
                &opts,
                seed,
            )
            .unwrap();
        }
    }
}

#[test]
fn stride_one_input_gradient_matches_the_direct_convolution() {
    // dX against the definition for square and rectangular kernels, paddings up to
    // kernel − 1, batch 1 and 3, in f64 (tight) and f32 (1e-4 relative). (A transposed-
    // convolution dX path was tried against this test and dropped: 1.2–5× slower per layer,
    // see BENCHMARKS.md.)
    for (batch, c, o, (kh, kw), (ph, pw)) in [
        (1, 3, 4, (3, 3), (1, 1)),
        (3, 4, 5, (3, 3), (0, 0)),
        (2, 2, 3, (5, 5), (2, 2)),
        (1, 3, 2, (3, 5), (1, 2)),
        (2, 1, 3, (5, 3), (4, 0)),
    ] {
        let cfg = Conv2dConfig {
            stride: (1, 1),
            padding: (ph, pw),
            dilation: (1, 1),
            groups: 1,
            algorithm: ConvAlgorithm::Im2col,
        };
        let x = rand_input(&[batch, c, H, W], 11);
        let w = rand_input(&[o, c, kh, kw], 12).detach();
        let y = x.conv2d(&w, None, cfg).unwrap();
        let r = rand_input(y.shape(), 13).detach();
        let [want, _, _] = reference_grads(&x, &w, &Tensor::zeros(&[o]), &r, cfg);
        let grads = y.mul(&r).unwrap().sum_all().backward().unwrap();
        let got = grads.get(&x).unwrap().to_vec();
        assert_close(&got, &want, 1e-12);

        let x32 = x.detach().cast::<f32>().with_grad();
        let y32 = x32.conv2d(&w.cast::<f32>(), None, cfg).unwrap();
        let g32 = y32
            .mul(&r.cast::<f32>())
            .unwrap()
            .sum_all()
            .backward()
            .unwrap();
        let got32: Vec<f64> = g32
            .get(&x32)
            .unwrap()
            .to_vec()
            .iter()
            .map(|&v| v as f64)
            .collect();
        assert_close(&got32, &want, 1e-4);
    }
}

/// Winograd cases: (batch, c_in, c_out, h, w, padding), covering odd and even outputs,
/// a single output pixel, batch 1, every padding Winograd takes, and an image wide
/// enough to split into several blocks of tile rows.
const WINOGRAD_CASES: [(usize, usize, usize, usize, usize, usize); 13] = [
    // F(4×4) for the forward and for dX (rows of 4 tiles, the last column of tiles cut).
    (2, 3, 2, 16, 15, 1),
    // F(4×4) for dX only (8 tiles a row of the 18×31 input), padding 2.
    (1, 2, 3, 18, 31, 2),
    // 11 channels and 10 columns: the 8-lane tile kernels and 8×8 transposes of the
    // backward pass with their remainders, padding 2.
    (2, 11, 3, 6, 10, 2),
    // The same for 11 output channels (the tile-major gradient transform), with an odd
    // output height and width.
    (2, 3, 11, 7, 9, 1),
    (1, 1, 1, 3, 3, 0),
    (1, 2, 3, 1, 1, 1),
    (3, 3, 2, 7, 5, 1),
    (2, 2, 3, 6, 8, 0),
    (1, 3, 2, 5, 6, 2),
    (2, 4, 5, 8, 7, 1),
    (1, 2, 2, 2, 2, 2),
    (2, 2, 3, 40, 37, 1),
    (1, 1, 2, 4, 300, 1),
];

/// Both Winograd algorithms: F(4×4, 3×3) and F(2×2, 3×3).
const WINOGRADS: [ConvAlgorithm; 2] = [ConvAlgorithm::Winograd, ConvAlgorithm::WinogradF2];

fn winograd_config(padding: usize, algorithm: ConvAlgorithm) -> Conv2dConfig {
    Conv2dConfig::new(1, padding, 1).with_algorithm(algorithm)
}

#[test]
fn winograd_forward_and_gradients_match_the_direct_convolution() {
    for (i, &(batch, c, o, h, w, p)) in WINOGRAD_CASES.iter().enumerate() {
        for algorithm in WINOGRADS {
            let seed = 500 + 10 * i as u64;
            let cfg = winograd_config(p, algorithm);
            let x = rand_input(&[batch, c, h, w], seed);
            let wt = rand_input(&[o, c, 3, 3], seed + 1);
            let b = rand_input(&[o], seed + 2);
            let y = x.conv2d(&wt, Some(&b), cfg).unwrap();
            let plain = Conv2dConfig::new(1, p, 1);
            assert_close(&y.to_vec(), &reference(&x, &wt, Some(&b), plain), 1e-12);

            let r = rand_input(y.shape(), seed + 3).detach();
            let grads = y.mul(&r).unwrap().sum_all().backward().unwrap();
            let want = reference_grads(&x, &wt, &b, &r, plain);
            for (t, want) in [&x, &wt, &b].iter().zip(&want) {
                assert_close(&grads.get(t).unwrap().to_vec(), want, 1e-12);
            }
            // db by hand: the sum of r over each output channel's pixels.
            let rv = r.to_vec();
            let want_db: Vec<f64> = (0..o)
                .map(|oc| {
                    rv.chunks(y.shape()[2] * y.shape()[3])
                        .skip(oc)
                        .step_by(o)
                        .flatten()
                        .sum()
                })
                .collect();
            assert_close(&grads.get(&b).unwrap().to_vec(), &want_db, 1e-12);
        }
    }
}

#[test]
fn winograd_gradcheck() {
    let opts = GradcheckOptions::default();
    for (i, &(batch, c, o, h, w, p)) in WINOGRAD_CASES.iter().take(9).enumerate() {
        for algorithm in WINOGRADS {
            let seed = 700 + 10 * i as u64;
            let cfg = winograd_config(p, algorithm);
            let inputs = [
                rand_input(&[batch, c, h, w], seed),
                rand_input(&[o, c, 3, 3], seed + 1),
                rand_input(&[o], seed + 2),
            ];
            let r = gradcheck(|t| t[0].conv2d(&t[1], Some(&t[2]), cfg), &inputs, &opts);
            assert!(r.is_ok(), "case {i}, {algorithm:?}: {}", r.unwrap_err());
        }
    }
    // A diamond: the input feeds two Winograd convolutions whose outputs are added, and
    // the same weight is used twice.
    let inputs = [
        rand_input(&[1, 2, 5, 4], 790),
        rand_input(&[2, 2, 3, 3], 791),
    ];
    for algorithm in WINOGRADS {
        assert_gradcheck(
            |t| {
                let a = t[0].conv2d(&t[1], None, winograd_config(1, algorithm))?;
                let b = t[0]
                    .conv2d(&t[1], None, winograd_config(1, algorithm))?
                    .mul(&a)?;
                a.add(&b)
            },
            &inputs,
        );
    }
}

#[test]
fn winograd_and_rows_f32_match_im2col_on_cifar_sized_layers() {
    // f32 rounding of the transforms stays within 1e-4 of im2col, relative to the largest
    // output, on the layer shapes Auto sends to Winograd or to the rows kernels (in f32 on
    // AVX-512 CPUs: dX by the transposed layer's rows forward, dW by Winograd's).
    for (i, (c, o, side)) in [
        (32, 32, 32),
        (32, 64, 16),
        (64, 64, 16),
        (16, 16, 32),
        (32, 32, 16),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 900 + 10 * i as u64;
        let x = rand_input(&[2, c, side, side], seed)
            .detach()
            .cast::<f32>()
            .with_grad();
        let w = rand_input(&[o, c, 3, 3], seed + 1)
            .cast::<f32>()
            .with_grad();
        let b = rand_input(&[o], seed + 2).cast::<f32>().with_grad();
        let r = rand_input(&[2, o, side, side], seed + 3).cast::<f32>();
        let run = |algorithm| {
            let cfg = Conv2dConfig::new(1, 1, 1).with_algorithm(algorithm);
            let y = x.conv2d(&w, Some(&b), cfg).unwrap();
            let g = y.mul(&r).unwrap().sum_all().backward().unwrap();
            [
                y.to_vec(),
                g.get(&x).unwrap().to_vec(),
                g.get(&w).unwrap().to_vec(),
                g.get(&b).unwrap().to_vec(),
            ]
        };
        let slow = run(ConvAlgorithm::Im2col);
        for algorithm in WINOGRADS.into_iter().chain([ConvAlgorithm::DirectRows]) {
            let fast = run(algorithm);
            for (what, (a, e)) in ["y", "dX", "dW", "db"].iter().zip(fast.iter().zip(&slow)) {
                let scale = e.iter().fold(0f32, |m, v| m.max(v.abs()));
                let worst = a.iter().zip(e).fold(0f32, |m, (a, e)| m.max((a - e).abs()));
                assert!(
                    worst <= 1e-4 * scale,
                    "layer {i} {what} by {algorithm:?}: {worst} of {scale}"
                );
            }
        }
    }
}

/// `Auto` on LeNet's conv1 (stride 1, no padding, rows of 24 = three 8-pixel halves): on
/// AVX2 CPUs without AVX-512 forward by the implicit GEMM (columns read in place) and
/// backward by rows, so its output is bitwise the implicit GEMM's and its gradients the
/// rows kernels'; elsewhere both passes by the algorithm `algorithm_for` names.
#[test]
fn auto_runs_lenets_conv1_forward_and_backward_by_their_own_algorithms() {
    use crate::kernels::microkernel::{has_avx2, has_avx512};
    let (xs, ws) = ([3, 1, 28, 28], [20, 1, 5, 5]);
    let cfg = Conv2dConfig::default();
    let forward = cfg.forward_algorithm_for(&xs, &ws).unwrap();
    let backward = cfg.algorithm_for(&xs, &ws).unwrap();
    if has_avx2() && !has_avx512() {
        assert_eq!(
            (forward, backward),
            (ConvAlgorithm::ImplicitGemm, ConvAlgorithm::DirectRows)
        );
    } else {
        assert_eq!(forward, backward);
    }
    // With padding the columns are not read in place: one algorithm for both passes.
    let padded = Conv2dConfig::new(1, 2, 1);
    assert_eq!(
        padded.forward_algorithm_for(&xs, &ws).unwrap(),
        padded.algorithm_for(&xs, &ws).unwrap()
    );
    let x = rand_input(&xs, 960).cast::<f32>().with_grad();
    let w = rand_input(&ws, 961).cast::<f32>().with_grad();
    let b = rand_input(&[20], 962).cast::<f32>().with_grad();
    let r = rand_input(&[3, 20, 24, 24], 963).cast::<f32>();
    let run = |algorithm| {
        let y = x
            .conv2d_relu(&w, Some(&b), cfg.with_algorithm(algorithm))
            .unwrap();
        let g = y.mul(&r).unwrap().sum_all().backward().unwrap();
        let grads = [&x, &w, &b].map(|t| g.get(t).unwrap().to_vec());
        (y.to_vec(), grads)
    };
    let (y, grads) = run(ConvAlgorithm::Auto);
    assert_eq!(y, run(forward).0);
    assert_eq!(grads, run(backward).1);
    let (slow_y, slow_grads) = run(ConvAlgorithm::Im2col);
    for (a, e) in std::iter::once((&y, &slow_y)).chain(grads.iter().zip(&slow_grads)) {
        let scale = e.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a.iter().zip(e).fold(0f32, |m, (a, e)| m.max((a - e).abs()));
        assert!(worst <= 1e-5 * scale, "{worst} of {scale}");
    }
}

#[test]
fn winograd_is_deterministic_for_any_thread_count() {
    let x = rand_input(&[6, 16, 12, 10], 950).cast::<f32>().with_grad();
    let w = rand_input(&[16, 16, 3, 3], 951).cast::<f32>().with_grad();
    let b = rand_input(&[16], 952).cast::<f32>().with_grad();
    let run = |threads| {
        crate::train::with_threads(Some(threads), || {
            let cfg = Conv2dConfig::new(1, 1, 1);
            let y = x.conv2d(&w, Some(&b), cfg).unwrap();
            let fused = x.conv2d_relu(&w, Some(&b), cfg).unwrap();
            let g = y
                .square()
                .add(&fused)
                .unwrap()
                .sum_all()
                .backward()
                .unwrap();
            [
                y.to_vec(),
                fused.to_vec(),
                g.get(&x).unwrap().to_vec(),
                g.get(&w).unwrap().to_vec(),
                g.get(&b).unwrap().to_vec(),
            ]
        })
        .unwrap()
    };
    let one = run(1);
    assert!(ConvAlgorithm::auto_prefers_winograd(
        &super::config::conv_geometry(
            &[6, 16, 12, 10],
            &[16, 16, 3, 3],
            None,
            Conv2dConfig::new(1, 1, 1)
        )
        .unwrap(),
        16
    ));
    for threads in [2, 3] {
        assert!(run(threads) == one, "{threads} threads differ from 1");
    }
}

/// Backward groups of small images and the batch norm after them (lane sums, tasks of
/// many small planes) give bitwise the same values and gradients on 1, 2 and 3 threads.
#[test]
fn small_maps_and_batch_norm_are_deterministic_for_any_thread_count() {
    use crate::ops::batch_norm::BnActivation;
    let x = rand_input(&[75, 12, 2, 2], 960).cast::<f32>().with_grad();
    let w = rand_input(&[16, 12, 1, 1], 961).cast::<f32>().with_grad();
    let gamma = rand_input(&[16], 962).cast::<f32>().with_grad();
    let beta = rand_input(&[16], 963).cast::<f32>().with_grad();
    let run = |threads| {
        crate::train::with_threads(Some(threads), || {
            let z = x.conv2d(&w, None, Conv2dConfig::default()).unwrap();
            let (y, _) = z
                .batch_norm2d_train_with(&gamma, &beta, 1e-5, BnActivation::Relu6)
                .unwrap();
            let g = y.square().sum_all().backward().unwrap();
            [&x, &w, &gamma, &beta]
                .map(|t| g.get(t).unwrap().to_vec())
                .into_iter()
                .chain([y.to_vec()])
                .map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        })
        .unwrap()
    };
    let one = run(1);
    for threads in [2, 3] {
        assert!(run(threads) == one, "{threads} threads differ from 1");
    }
}

#[test]
fn winograd_refuses_geometries_it_cannot_compute() {
    let x = Tensor::<f32>::zeros(&[1, 2, 8, 8]);
    for (k, stride, pad, dil) in [(5, 1, 1, 1), (3, 2, 1, 1), (3, 1, 1, 2), (3, 1, 3, 1)] {
        let w = Tensor::<f32>::zeros(&[2, 2, k, k]);
        for algorithm in WINOGRADS {
            let cfg = Conv2dConfig::new(stride, pad, dil).with_algorithm(algorithm);
            let e = x.conv2d(&w, None, cfg).unwrap_err().to_string();
            assert!(e.contains("Winograd"), "{e}");
        }
        let auto = Conv2dConfig::new(stride, pad, dil);
        assert!(x.conv2d(&w, None, auto).is_ok());
    }
}

#[test]
fn fused_relu_equals_conv_then_relu_exactly() {
    // (input, weight, config): im2col with stride 2 on a side it does not divide, padding
    // and batch 1; Winograd with padding, odd output sides and a batch of 3.
    let cases = [
        ([1, 2, 7, 6], [3, 2, 3, 3], Conv2dConfig::new(2, 1, 1)),
        (
            [3, 16, 7, 5],
            [16, 16, 3, 3],
            Conv2dConfig::new(1, 1, 1).with_algorithm(ConvAlgorithm::Winograd),
        ),
        (
            [3, 16, 7, 5],
            [16, 16, 3, 3],
            Conv2dConfig::new(1, 1, 1).with_algorithm(ConvAlgorithm::WinogradF2),
        ),
    ];
    for (i, (xs, ws, cfg)) in cases.into_iter().enumerate() {
        let seed = 1100 + 10 * i as u64;
        let x = rand_input(&xs, seed).cast::<f32>().with_grad();
        let w = rand_input(&ws, seed + 1).cast::<f32>().with_grad();
        let b = rand_input(&[ws[0]], seed + 2).cast::<f32>().with_grad();
        let y = x.conv2d(&w, Some(&b), cfg).unwrap();
        let r = rand_input(y.shape(), seed + 3).cast::<f32>();
        let run = |fused: bool| {
            let y = if fused {
                x.conv2d_relu(&w, Some(&b), cfg).unwrap()
            } else {
                x.conv2d(&w, Some(&b), cfg).unwrap().relu()
            };
            let g = y.mul(&r).unwrap().sum_all().backward().unwrap();
            [&x, &w, &b].map(|t| g.get(t).unwrap().to_vec())
        };
        let (fused, composed) = (run(true), run(false));
        let zeros = x.conv2d_relu(&w, Some(&b), cfg).unwrap().to_vec();
        // Both signs occur, so the mask is exercised.
        assert!(zeros.contains(&0.0) && zeros.iter().any(|&v| v > 0.0));
        assert_eq!(zeros, y.relu().to_vec(), "case {i}: values");
        for (what, (a, e)) in ["dX", "dW", "db"].iter().zip(fused.iter().zip(&composed)) {
            assert!(a == e, "case {i}: {what} differs");
        }
    }
}

#[test]
fn fused_relu_gradcheck() {
    let opts = GradcheckOptions::default();
    // (input, weight, config): stride 2 not dividing the side, padding 2, batch 1; Winograd.
    let cases = [
        ([1, 2, 7, 6], [3, 2, 3, 3], Conv2dConfig::new(2, 2, 1)),
        ([2, 3, 6, 5], [2, 3, 2, 2], Conv2dConfig::new(1, 0, 2)),
        (
            [2, 2, 5, 4],
            [3, 2, 3, 3],
            Conv2dConfig::new(1, 1, 1).with_algorithm(ConvAlgorithm::Winograd),
        ),
    ];
    for (i, (xs, ws, cfg)) in cases.into_iter().enumerate() {
        let seed = 1200 + 10 * i as u64;
        let inputs = [
            rand_input(&xs, seed),
            rand_input(&ws, seed + 1),
            rand_input(&[ws[0]], seed + 2),
        ];
        let r = gradcheck(
            |t| t[0].conv2d_relu(&t[1], Some(&t[2]), cfg),
            &inputs,
            &opts,
        );
        assert!(r.is_ok(), "case {i}: {}", r.unwrap_err());
    }
    // A diamond: the input and weight feed two fused convolutions whose outputs multiply.
    let inputs = [
        rand_input(&[1, 2, 5, 5], 1290),
        rand_input(&[2, 2, 3, 3], 1291),
    ];
    assert_gradcheck(
        |t| {
            let a = t[0].conv2d_relu(&t[1], None, Conv2dConfig::new(1, 1, 1))?;
            let b = t[0].conv2d_relu(&t[1], None, Conv2dConfig::new(2, 1, 1))?;
            a.sum_all().mul(&b.sum_all())
        },
        &inputs,
    );
}

/// Small outputs share one forward GEMM between several images (`images_per_gemm`):
/// each image's output, bias and fused ReLU included, is bitwise what it is alone, for a
/// batch that is not a multiple of the group, and matches the definition.
#[test]
fn images_sharing_a_forward_gemm_match_each_image_alone() {
    // 4×4 outputs: 16 images per product; 4×5 with stride 2: 12 per product.
    for (batch, h, w, stride, padding) in [(37, 6, 6, 1, 0), (13, 7, 9, 2, 1)] {
        let cfg = Conv2dConfig::new(stride, padding, 1);
        let x = rand_input(&[batch, 3, h, w], 900 + batch as u64);
        let wt = rand_input(&[5, 3, 3, 3], 901);
        let b = rand_input(&[5], 902);
        let x32 =
            Tensor::<f32>::from_vec(x.to_vec().iter().map(|&v| v as f32).collect(), x.shape())
                .unwrap();
        let w32 =
            Tensor::<f32>::from_vec(wt.to_vec().iter().map(|&v| v as f32).collect(), wt.shape())
                .unwrap();
        let b32 =
            Tensor::<f32>::from_vec(b.to_vec().iter().map(|&v| v as f32).collect(), &[5]).unwrap();
        for relu in [false, true] {
            let conv = |x: &Tensor<f32>| {
                if relu {
                    x.conv2d_relu(&w32, Some(&b32), cfg).unwrap()
                } else {
                    x.conv2d(&w32, Some(&b32), cfg).unwrap()
                }
            };
            let all = conv(&x32).to_vec();
            let per_image = all.len() / batch;
            for i in [0, 1, batch / 2, batch - 1] {
                let alone = conv(&x32.narrow(0, i, 1).unwrap().contiguous()).to_vec();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&all[i * per_image..(i + 1) * per_image]),
                    bits(&alone),
                    "image {i} of {batch}, relu {relu}"
                );
            }
        }
        let y = x.conv2d(&wt, Some(&b), cfg).unwrap();
        assert_close(&y.to_vec(), &reference(&x, &wt, Some(&b), cfg), 1e-12);
    }
    // Images of 1, 2 and 4 pixels under a 1×1 kernel: one product per pixel over the
    // whole batch, read and written in place (more input channels than one block of the
    // GEMM's depth).
    let cfg = Conv2dConfig::default().with_algorithm(ConvAlgorithm::Im2col);
    for (h, w) in [(1, 1), (1, 2), (2, 2)] {
        let (batch, c, o) = (37, 300, 20);
        let x = rand_input(&[batch, c, h, w], 903 + h as u64);
        let wt = rand_input(&[o, c, 1, 1], 904);
        let b = rand_input(&[o], 905);
        let f = |t: &Tensor<f64>| {
            Tensor::<f32>::from_vec(t.to_vec().iter().map(|&v| v as f32).collect(), t.shape())
                .unwrap()
        };
        let (x32, w32, b32) = (f(&x), f(&wt), f(&b));
        let out = o * h * w;
        for bias in [None, Some(&b32)] {
            let all = x32.conv2d(&w32, bias, cfg).unwrap().to_vec();
            for i in [0, 1, batch / 2, batch - 1] {
                let one = x32.narrow(0, i, 1).unwrap().contiguous();
                let alone = one.conv2d(&w32, bias, cfg).unwrap().to_vec();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let got = &all[i * out..(i + 1) * out];
                assert_eq!(bits(got), bits(&alone), "image {i}, {h}×{w}");
            }
        }
        let y = x.conv2d(&wt, Some(&b), cfg).unwrap();
        assert_close(&y.to_vec(), &reference(&x, &wt, Some(&b), cfg), 1e-12);
    }
}

/// Backward shares its products between small images too (`Im2colBackward::images`):
/// dX, dW and db over batches split into groups (a last group shorter, chunks of several
/// groups) equal the direct convolution's, for pointwise layers on 1×1, 2×2 and 1×2 maps
/// (one product per pixel over the images; a batch of 1 too) and on 2×3 maps, a
/// strided 1×1, a padded strided 3×3 and a 3×3 without padding (75 images: chunks of 19,
/// groups of 16 and 3); with the fused ReLU too.
#[test]
fn images_sharing_backward_gemms_match_the_definition() {
    // (batch, c_in, h, w, kernel, stride, padding)
    let cases = [
        (45, 7, 1, 1, 1, 1, 0),
        (41, 6, 2, 2, 1, 1, 0),
        (1, 4, 2, 2, 1, 1, 0),
        (23, 5, 1, 2, 1, 1, 0),
        (37, 6, 2, 3, 1, 1, 0),
        (29, 4, 5, 5, 1, 2, 0),
        (33, 3, 7, 7, 3, 2, 1),
        (75, 3, 6, 6, 3, 1, 0),
    ];
    for (i, (batch, c, h, w, k, stride, pad)) in cases.into_iter().enumerate() {
        let cfg = Conv2dConfig::new(stride, pad, 1).with_algorithm(ConvAlgorithm::Im2col);
        let seed = 700 + 10 * i as u64;
        let x = rand_input(&[batch, c, h, w], seed);
        let wt = rand_input(&[5, c, k, k], seed + 1);
        let b = rand_input(&[5], seed + 2);
        let y = x.conv2d(&wt, Some(&b), cfg).unwrap();
        let r = rand_input(y.shape(), seed + 3).detach();
        let g = y.mul(&r).unwrap().sum_all().backward().unwrap();
        let want = reference_grads(&x, &wt, &b, &r, cfg);
        for (t, want) in [&x, &wt, &b].iter().zip(&want) {
            assert_close(&g.get(t).unwrap().to_vec(), want, 1e-12);
        }
        // Fused ReLU: the gradient of Σ relu(conv) ⊙ r, against direct conv then relu.
        let fused = x.conv2d_relu(&wt, Some(&b), cfg).unwrap();
        let g = fused.mul(&r).unwrap().sum_all().backward().unwrap();
        let (xd, wd, bd) = (
            x.detach().with_grad(),
            wt.detach().with_grad(),
            b.detach().with_grad(),
        );
        let direct = cfg.with_algorithm(ConvAlgorithm::Direct);
        let unfused = xd.conv2d(&wd, Some(&bd), direct).unwrap().relu();
        let gd = unfused.mul(&r).unwrap().sum_all().backward().unwrap();
        for (t, d) in [(&x, &xd), (&wt, &wd), (&b, &bd)] {
            assert_close(
                &g.get(t).unwrap().to_vec(),
                &gd.get(d).unwrap().to_vec(),
                1e-12,
            );
        }
    }
}

/// ReLU6 fused where no gradient is recorded gives bitwise the values of conv2d then
/// clamp(0, 6); where one is recorded, it is that pair, gradient included.
#[test]
fn relu6_fused_in_inference_equals_conv_then_clamp() {
    let to32 = |t: &Tensor<f64>| {
        Tensor::<f32>::from_vec(
            t.to_vec().iter().map(|&v| 8.0 * v as f32).collect(),
            t.shape(),
        )
        .unwrap()
    };
    let x = to32(&rand_input(&[9, 4, 5, 5], 41));
    let w = to32(&rand_input(&[6, 4, 3, 3], 42));
    let b = to32(&rand_input(&[6], 43));
    let bits = |t: &Tensor<f32>| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for cfg in [Conv2dConfig::new(1, 1, 1), Conv2dConfig::new(2, 0, 1)] {
        let want = x.conv2d(&w, Some(&b), cfg).unwrap().clamp(0.0, 6.0);
        let fused = crate::autograd::no_grad(|| x.conv2d_relu6(&w, Some(&b), cfg)).unwrap();
        assert_eq!(bits(&fused), bits(&want));
        // Some outputs on each side of the clamp, so the test can tell.
        let v = want.to_vec();
        assert!(v.contains(&0.0) && v.contains(&6.0) && v.iter().any(|&y| y > 0.0 && y < 6.0));
    }
    let xg = rand_input(&[2, 2, 4, 4], 44)
        .mul_scalar(4.0)
        .detach()
        .with_grad();
    let wg = rand_input(&[3, 2, 3, 3], 45).detach().with_grad();
    let cfg = Conv2dConfig::new(1, 1, 1);
    let g = xg
        .conv2d_relu6(&wg, None, cfg)
        .unwrap()
        .sum_all()
        .backward()
        .unwrap();
    let (xd, wd) = (xg.detach().with_grad(), wg.detach().with_grad());
    let gd = xd
        .conv2d(&wd, None, cfg)
        .unwrap()
        .clamp(0.0, 6.0)
        .sum_all()
        .backward()
        .unwrap();
    assert_eq!(g.get(&xg).unwrap().to_vec(), gd.get(&xd).unwrap().to_vec());
    assert_eq!(g.get(&wg).unwrap().to_vec(), gd.get(&wd).unwrap().to_vec());
}

/// `conv2d_add` where no gradient is recorded (the residual added, and rectified, to each
/// image's output in cache) is bitwise `conv2d` then `add` or `add_relu`, for algorithms
/// that write their outputs differently and a batch that does not split evenly into
/// threads; with a gradient recorded it is that pair, gradients included (the residual's
/// too); another residual shape is an error.
#[test]
fn conv2d_add_equals_conv_then_add() {
    let to32 = |t: &Tensor<f64>| {
        Tensor::<f32>::from_vec(
            t.to_vec().iter().map(|&v| 4.0 * v as f32).collect(),
            t.shape(),
        )
        .unwrap()
    };
    let x = to32(&rand_input(&[9, 16, 8, 8], 51));
    let w = to32(&rand_input(&[16, 16, 3, 3], 52));
    let b = to32(&rand_input(&[16], 53));
    let skip = to32(&rand_input(&[9, 16, 8, 8], 54));
    let bits = |t: &Tensor<f32>| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for algorithm in [
        ConvAlgorithm::Auto,
        ConvAlgorithm::DirectRows,
        ConvAlgorithm::Winograd,
        ConvAlgorithm::Im2col,
        ConvAlgorithm::ImplicitGemm,
    ] {
        let cfg = Conv2dConfig::new(1, 1, 1).with_algorithm(algorithm);
        let y = x.conv2d(&w, Some(&b), cfg).unwrap();
        for relu in [false, true] {
            let want = if relu {
                y.add_relu(&skip).unwrap()
            } else {
                y.add(&skip).unwrap()
            };
            let fused =
                crate::autograd::no_grad(|| x.conv2d_add(&w, Some(&b), cfg, &skip, relu)).unwrap();
            assert_eq!(bits(&fused), bits(&want), "{algorithm:?} relu {relu}");
            let v = want.to_vec();
            assert!(v.iter().any(|&y| y > 0.0));
            assert_eq!(v.contains(&0.0), relu, "the rectifier shows only with relu");
        }
    }
    let cfg = Conv2dConfig::new(2, 1, 1);
    let bad = rand_input(&[2, 3, 4, 4], 55);
    let xg = rand_input(&[2, 2, 4, 4], 56).detach().with_grad();
    let wg = rand_input(&[3, 2, 3, 3], 57).detach().with_grad();
    assert!(xg.conv2d_add(&wg, None, cfg, &bad, true).is_err());
    let sg = rand_input(&[2, 3, 2, 2], 58).detach().with_grad();
    let r = rand_input(&[2, 3, 2, 2], 59).detach();
    let g = xg
        .conv2d_add(&wg, None, cfg, &sg, true)
        .unwrap()
        .mul(&r)
        .unwrap()
        .sum_all()
        .backward()
        .unwrap();
    let (xd, wd, sd) = (
        xg.detach().with_grad(),
        wg.detach().with_grad(),
        sg.detach().with_grad(),
    );
    let gd = xd
        .conv2d(&wd, None, cfg)
        .unwrap()
        .add_relu(&sd)
        .unwrap()
        .mul(&r)
        .unwrap()
        .sum_all()
        .backward()
        .unwrap();
    for (a, b) in [(&xg, &xd), (&wg, &wd), (&sg, &sd)] {
        assert_eq!(g.get(a).unwrap().to_vec(), gd.get(b).unwrap().to_vec());
    }
}

#[test]
fn convolution_keeps_its_input_only_for_the_weight_gradient() {
    let x = || rand_input(&[1, 2, 5, 5], 8).mul_scalar(1.0);
    let conv = |w: Tensor<f64>| {
        move |x: &Tensor<f64>| x.conv2d(&w, None, Conv2dConfig::default()).unwrap()
    };
    let w = rand_input(&[3, 2, 3, 3], 9);
    assert!(storage_outlives_its_tensor(x(), conv(w.clone())));
    assert!(!storage_outlives_its_tensor(x(), conv(w.detach())));
}

/// A grouped convolution by its definition through tensor ops alone: each output group
/// is the dense convolution of its input group (narrow, conv2d with groups 1, concat).
fn grouped_by_slices(
    x: &Tensor<f64>,
    w: &Tensor<f64>,
    b: Option<&Tensor<f64>>,
    cfg: Conv2dConfig,
) -> Tensor<f64> {
    let groups = cfg.groups;
    let (cpg, opg) = (x.shape()[1] / groups, w.shape()[0] / groups);
    let dense = Conv2dConfig { groups: 1, ..cfg }.with_algorithm(ConvAlgorithm::Direct);
    let parts: Vec<Tensor<f64>> = (0..groups)
        .map(|k| {
            let xk = x.narrow(1, k * cpg, cpg).unwrap();
            let wk = w.narrow(0, k * opg, opg).unwrap();
            let bk = b.map(|b| b.narrow(0, k * opg, opg).unwrap());
            xk.conv2d(&wk, bk.as_ref(), dense).unwrap()
        })
        .collect();
    Tensor::concat(&parts, 1).unwrap()
}

/// Groups 1, 2 and c_in (depthwise, and c_out = 2·c_in), strides 1 and 2 on 7×6 inputs
/// they do not divide, padding, dilation, batch 1 and 2: every algorithm that computes the
/// case equals the definition by slices, values and all three gradients.
#[test]
fn grouped_and_depthwise_convolutions_match_their_definition() {
    let mut checked = 0;
    for (batch, c_in, c_out, groups) in [(1, 4, 4, 1), (2, 4, 6, 2), (1, 4, 4, 4), (2, 4, 8, 4)] {
        for (k, s, p, d) in [
            (3, 1, 1, 1),
            (3, 2, 1, 1),
            (3, 2, 0, 1),
            (1, 2, 0, 1),
            (3, 1, 2, 2),
            (5, 2, 2, 1),
        ] {
            let cfg = Conv2dConfig::new(s, p, d).with_groups(groups);
            let seed = checked as u64;
            let x = rand_input(&[batch, c_in, 7, 6], seed);
            let w = rand_input(&[c_out, c_in / groups, k, k], 100 + seed);
            let b = rand_input(&[c_out], 200 + seed);
            let want = grouped_by_slices(&x, &w, Some(&b), cfg);
            let r = rand_input(want.shape(), 300 + seed);
            let (xg, wg, bg) = (
                x.detach().with_grad(),
                w.detach().with_grad(),
                b.detach().with_grad(),
            );
            let g = want_grads(&xg, &wg, &bg, &r, |x, w, b| {
                grouped_by_slices(x, w, Some(b), cfg)
            });
            let depthwise = groups == c_in && c_out == c_in && groups > 1;
            let mut algorithms = vec![
                ConvAlgorithm::Auto,
                ConvAlgorithm::Im2col,
                ConvAlgorithm::ImplicitGemm,
                ConvAlgorithm::Direct,
            ];
            if depthwise {
                algorithms.push(ConvAlgorithm::Depthwise);
                assert_eq!(
                    cfg.algorithm_for(x.shape(), w.shape()).unwrap(),
                    ConvAlgorithm::Depthwise
                );
            }
            for algorithm in algorithms {
                let cfg = cfg.with_algorithm(algorithm);
                let y = x.conv2d(&w, Some(&b), cfg).unwrap();
                let case = format!(
                    "{:?} {algorithm:?}",
                    (batch, c_in, c_out, groups, k, s, p, d)
                );
                assert_eq!(y.shape(), want.shape(), "{case}");
                assert_close(&y.to_vec(), &want.to_vec(), 1e-12);
                let got = want_grads(&xg, &wg, &bg, &r, |x, w, b| {
                    x.conv2d(w, Some(b), cfg).unwrap()
                });
                for (a, e) in got.iter().zip(&g) {
                    assert_close(a, e, 1e-12);
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 24);
}

/// `(dX, dW, db)` of `Σ f(x, w, b) ⊙ r`.
fn want_grads(
    x: &Tensor<f64>,
    w: &Tensor<f64>,
    b: &Tensor<f64>,
    r: &Tensor<f64>,
    f: impl Fn(&Tensor<f64>, &Tensor<f64>, &Tensor<f64>) -> Tensor<f64>,
) -> [Vec<f64>; 3] {
    let g = f(x, w, b).mul(r).unwrap().sum_all().backward().unwrap();
    [x, w, b].map(|t| g.get(t).unwrap().to_vec())
}

#[test]
fn grouped_and_depthwise_gradcheck() {
    let opts = GradcheckOptions::default();
    for (c_out, groups, s, p) in [
        (4, 2, 1, 1),
        (4, 2, 2, 0),
        (4, 4, 1, 1),
        (4, 4, 2, 1),
        (8, 4, 2, 1),
    ] {
        let cfg = Conv2dConfig::new(s, p, 1).with_groups(groups);
        let inputs = [
            rand_input(&[1, 4, 5, 4], 7),
            rand_input(&[c_out, 4 / groups, 3, 3], 8),
            rand_input(&[c_out], 9),
        ];
        let r = gradcheck(|t| t[0].conv2d(&t[1], Some(&t[2]), cfg), &inputs, &opts);
        assert!(r.is_ok(), "groups {groups} stride {s}: {}", r.unwrap_err());
        // The fused ReLU path too (inputs away from the kink come from the random draw).
        let r = gradcheck(
            |t| t[0].conv2d_relu(&t[1], Some(&t[2]), cfg),
            &inputs,
            &opts,
        );
        assert!(
            r.is_ok(),
            "relu, groups {groups} stride {s}: {}",
            r.unwrap_err()
        );
    }
}

#[test]
fn bad_groups_are_errors_that_say_why() {
    let x = Tensor::<f64>::zeros(&[1, 4, 5, 5]);
    let err = |w: &[usize], cfg: Conv2dConfig| {
        x.conv2d(&Tensor::zeros(w), None, cfg)
            .unwrap_err()
            .to_string()
    };
    let g2 = Conv2dConfig::new(1, 1, 1).with_groups(2);
    // Weights must be o × c/groups × k × k, and o a multiple of the groups.
    assert!(err(&[4, 4, 3, 3], g2).contains("[4, 4, 3, 3]"));
    assert!(err(&[3, 2, 3, 3], g2).contains("[3, 2, 3, 3]"));
    assert!(err(&[4, 2, 3, 3], g2.with_groups(0)).contains("groups must be at least 1"));
    assert!(
        err(&[4, 2, 3, 3], g2.with_algorithm(ConvAlgorithm::Winograd))
            .contains("dense convolutions only")
    );
    assert!(
        err(&[4, 2, 3, 3], g2.with_algorithm(ConvAlgorithm::Depthwise))
            .contains("depthwise kernel needs")
    );
}

/// `Auto` takes the rows kernels for Winograd's layers with few channels on large maps
/// (resnet20's 16→16 on 32×32) on AVX-512 CPUs, and keeps Winograd for more channels or
/// smaller maps (resnet20's 32→32 on 16×16); it takes them for first and strided layers on AVX2
/// CPUs too; the backward of such a layer matches the definition.
#[test]
fn auto_takes_rows_for_few_channels_on_large_maps() {
    let same = Conv2dConfig::new(1, 1, 1);
    let rows_or_winograd = if crate::kernels::microkernel::has_avx512() {
        ConvAlgorithm::DirectRows
    } else {
        ConvAlgorithm::Winograd
    };
    let algo = |x: &[usize], w: &[usize]| same.algorithm_for(x, w).unwrap();
    assert_eq!(algo(&[2, 16, 32, 32], &[16, 16, 3, 3]), rows_or_winograd);
    assert_eq!(
        algo(&[2, 32, 16, 16], &[32, 32, 3, 3]),
        ConvAlgorithm::Winograd
    );
    assert_eq!(
        algo(&[2, 32, 32, 32], &[32, 32, 3, 3]),
        ConvAlgorithm::Winograd
    );
    assert_eq!(
        algo(&[2, 32, 16, 16], &[64, 32, 3, 3]),
        ConvAlgorithm::Winograd
    );
    assert_eq!(
        algo(&[2, 64, 8, 8], &[64, 64, 3, 3]),
        ConvAlgorithm::Winograd
    );
    // First and strided layers by rows on AVX2 CPUs too; LeNet's conv2 only on AVX-512.
    let (avx2, avx512) = (
        crate::kernels::microkernel::has_avx2(),
        crate::kernels::microkernel::has_avx512(),
    );
    let rows_if = |yes: bool| {
        if yes {
            ConvAlgorithm::DirectRows
        } else {
            ConvAlgorithm::ImplicitGemm
        }
    };
    assert_eq!(algo(&[2, 1, 28, 28], &[20, 1, 5, 5]), rows_if(avx2));
    assert_eq!(algo(&[2, 3, 32, 32], &[16, 3, 3, 3]), rows_if(avx2));
    let strided =
        |x: &[usize], w: &[usize]| Conv2dConfig::new(2, 1, 1).algorithm_for(x, w).unwrap();
    assert_eq!(strided(&[2, 16, 32, 32], &[32, 16, 3, 3]), rows_if(avx2));
    assert_eq!(algo(&[2, 20, 12, 12], &[50, 20, 5, 5]), rows_if(avx512));
    // dX by the transposed layer's rows forward, dW by Winograd's transforms.
    let x = rand_input(&[2, 16, 16, 16], 7);
    let w = rand_input(&[16, 16, 3, 3], 8);
    let b = rand_input(&[16], 9);
    let cfg = same.with_algorithm(ConvAlgorithm::DirectRows);
    assert_values_and_gradients_match_direct(&x, &w, &b, cfg, 10);
}
