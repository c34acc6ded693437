//! conv2d against a direct-convolution reference, and gradcheck over a parameter sweep.

use super::Conv2dConfig;
use crate::testing::*;
use crate::{gradcheck, GradcheckOptions, Tensor};

/// Direct convolution by definition, in f64.
fn reference(
    x: &Tensor<f64>,
    w: &Tensor<f64>,
    b: Option<&Tensor<f64>>,
    cfg: Conv2dConfig,
) -> Vec<f64> {
    let (xs, ws) = (x.shape(), w.shape());
    let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (o, kh, kw) = (ws[0], ws[2], ws[3]);
    let (sh, sw) = cfg.stride;
    let (ph, pw) = cfg.padding;
    let (dh, dw) = cfg.dilation;
    let oh = (h + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
    let ow = (wd + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
    let (xv, wv) = (x.to_vec(), w.to_vec());
    let bv = b.map(|b| b.to_vec());
    let mut out = Vec::new();
    for ni in 0..n {
        for oc in 0..o {
            for y in 0..oh {
                for z in 0..ow {
                    let mut acc = bv.as_ref().map_or(0.0, |b| b[oc]);
                    for ci in 0..c {
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy = (y * sh + i * dh) as isize - ph as isize;
                                let ix = (z * sw + j * dw) as isize - pw as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    acc += xv[((ni * c + ci) * h + iy as usize) * wd + ix as usize]
                                        * wv[((oc * c + ci) * kh + i) * kw + j];
                                }
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
    }
    out
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
        let r = gradcheck(|t| t[0].conv2d(&t[1], t.get(2), cfg), &inputs, &opts);
        assert!(
            r.is_ok(),
            "case {i} {:?}: {}",
            (batch, c_in, k, s, p, d, bias),
            r.unwrap_err()
        );
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

/// `dX` of `Σ y ⊙ r` by definition (scatter every output's weight back to its inputs).
fn reference_dx(x_shape: &[usize], w: &Tensor<f64>, r: &[f64], cfg: Conv2dConfig) -> Vec<f64> {
    let (n, c, h, wd) = (x_shape[0], x_shape[1], x_shape[2], x_shape[3]);
    let ws = w.shape();
    let (o, kh, kw) = (ws[0], ws[2], ws[3]);
    let (ph, pw) = cfg.padding;
    let oh = h + 2 * ph - kh + 1;
    let ow = wd + 2 * pw - kw + 1;
    let wv = w.to_vec();
    let mut dx = vec![0.0; n * c * h * wd];
    for ni in 0..n {
        for oc in 0..o {
            for y in 0..oh {
                for z in 0..ow {
                    let g = r[((ni * o + oc) * oh + y) * ow + z];
                    for ci in 0..c {
                        for i in 0..kh {
                            for j in 0..kw {
                                let iy = (y + i) as isize - ph as isize;
                                let ix = (z + j) as isize - pw as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    dx[((ni * c + ci) * h + iy as usize) * wd + ix as usize] +=
                                        g * wv[((oc * c + ci) * kh + i) * kw + j];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    dx
}

#[test]
fn stride_one_input_gradient_matches_the_definition() {
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
        };
        let x = rand_input(&[batch, c, H, W], 11);
        let w = rand_input(&[o, c, kh, kw], 12).detach();
        let y = x.conv2d(&w, None, cfg).unwrap();
        let r = rand_input(y.shape(), 13).detach();
        let want = reference_dx(x.shape(), &w, &r.to_vec(), cfg);
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
