//! The model zoo trained, not only built: `resnet18` (64×64), `mobilenet-v2`, `resnet20`,
//! `resnet32` and `resnet56` (32×32) each train one epoch on a small image folder generated here — two
//! classes, a horizontal or a vertical bar at a random place on noise — and learn (the
//! loss of the last steps is below that of the first); then the command line evaluates,
//! audits, graphs and benchmarks each, as a user would.

use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::Command;
use tensorgrad::loss::{LossKind, LossOptions};
use tensorgrad::nn::models::ModelKind;
use tensorgrad::train::{train, DatasetKind, Event, ImageSize, TrainConfig};

const BIN: &str = env!("CARGO_BIN_EXE_tensorgrad");

/// `per_class` images of each class in `root/{train,test}/{horizontal,vertical}`.
fn bars_folder(root: &Path, side: u32, per_class: [usize; 2], seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for (split, n) in ["train", "test"].into_iter().zip(per_class) {
        for class in ["horizontal", "vertical"] {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let at = rng.random_range(side / 8..side - side / 4);
                let width = side / 8;
                let tint: [u8; 3] = [
                    rng.random_range(150..=255),
                    200,
                    rng.random_range(150..=255),
                ];
                let noise: Vec<u8> = (0..side * side * 3)
                    .map(|_| rng.random_range(0..90))
                    .collect();
                let img = RgbImage::from_fn(side, side, |x, y| {
                    let along = if class == "horizontal" { y } else { x };
                    let on = (at..at + width).contains(&along);
                    let k = ((y * side + x) * 3) as usize;
                    Rgb(std::array::from_fn(
                        |c| {
                            if on {
                                tint[c]
                            } else {
                                noise[k + c]
                            }
                        },
                    ))
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tensorgrad {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_residual_network_learns_in_one_epoch_and_runs_every_command() {
    let dir = tempfile::tempdir().unwrap();
    for (model, side) in [
        (ModelKind::Resnet18, 64),
        (ModelKind::MobilenetV2, 32),
        (ModelKind::Resnet20, 32),
        (ModelKind::Resnet32, 32),
        (ModelKind::Resnet56, 32),
    ] {
        let data = dir.path().join(format!("bars{side}"));
        if !data.exists() {
            bars_folder(&data, side, [64, 16], 7);
        }
        let out = dir.path().join(model.as_str());
        let config = TrainConfig {
            dataset: DatasetKind::Folder,
            data_dir: Some(data.clone()),
            image_size: ImageSize {
                height: side as usize,
                width: side as usize,
            },
            channels: 3,
            model,
            loss: LossOptions::new(LossKind::all().find(|k| k.name() == "sml").unwrap()),
            epochs: 1,
            batch_size: 16,
            lr: 0.05,
            threads: Some(2),
            out: Some(out.clone()),
            ..TrainConfig::default()
        };
        let mut losses = Vec::new();
        train(&config, &mut |e| {
            if let Event::Step(s) = e {
                losses.push(s.loss);
            }
        })
        .unwrap();
        assert_eq!(losses.len(), 8, "{model}: 128 images in batches of 16");
        let first = losses[..3].iter().sum::<f64>() / 3.0;
        let last = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
        assert!(
            last < first,
            "{model} did not learn: first steps {first:.4}, last steps {last:.4} ({losses:?})"
        );
        println!("{model}: mean loss of the first 3 steps {first:.4}, of the last 3 {last:.4}");
        let run = out.to_str().unwrap();
        let eval = cli(&["eval", "--checkpoint", run]);
        assert!(eval.contains("accuracy"), "{model}: {eval}");
        let audit = cli(&["audit", "--checkpoint", run]);
        assert!(out.join("audit.json").exists(), "{model}: {audit}");
        let graph = cli(&["graph", "--model", model.as_str(), "--batch-size", "2"]);
        assert!(graph.contains("kept for backward, by layer"), "{model}");
    }
    // Every model benchmarks: a train step and inference, one JSON line each.
    for model in ModelKind::ALL {
        for mode in ["train-step", "infer"] {
            let line = cli(&[
                "bench",
                mode,
                "--model",
                model.as_str(),
                "--batch-size",
                "2",
                "--seconds",
                "0.05",
            ]);
            let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
            assert!(
                v["images_per_sec"].as_f64().unwrap() > 0.0,
                "{model} {mode}"
            );
        }
    }
}
