//! A model written outside the library, trained by the library's run machinery: a small
//! residual CNN (one torchvision-style `BasicBlock`) implements `nn::Architecture`, and
//! `train::train_model_until` gives it what the built-in models get — a run directory,
//! per-epoch checkpoints, resume, evaluation, the audit and the plots.
//! Run with `cargo run --release --example residual_cnn` (about a minute on 2 cores).

use rand::{rngs::StdRng, SeedableRng};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use tensorgrad::nn::{
    Architecture, BatchNorm2d, Conv2d, GlobalAvgPool, Linear, MaxPool2d, Module, Relu, Residual,
    Sequential,
};
use tensorgrad::ops::conv::Conv2dConfig;
use tensorgrad::ops::pool::Pool2dConfig;
use tensorgrad::train::{train_model_until, Event, SavedRun, TrainConfig};

/// conv 3×3 (c→16) + BN + ReLU, max-pool 2, one residual block (16 channels, identity
/// shortcut), a second block that halves the resolution (projection shortcut to 32
/// channels), global average pooling, linear (32→K).
struct TinyResNet;

impl Architecture for TinyResNet {
    fn name(&self) -> String {
        "tiny-resnet".into()
    }

    fn build(
        &self,
        [c, _, _]: [usize; 3],
        outputs: usize,
        seed: u64,
    ) -> tensorgrad::Result<Box<dyn Module<f32>>> {
        let mut rng = StdRng::seed_from_u64(seed);
        let (same, down) = (Conv2dConfig::new(1, 1, 1), Conv2dConfig::new(2, 1, 1));
        let mut block = |c_in: usize, c_out: usize, stride: Conv2dConfig| {
            let body = Sequential::new()
                .push(
                    "conv1",
                    Conv2d::new(c_in, c_out, 3, stride, false, &mut rng),
                )
                .push("bn1", BatchNorm2d::new(c_out))
                .push("relu", Relu)
                .push("conv2", Conv2d::new(c_out, c_out, 3, same, false, &mut rng))
                .push("bn2", BatchNorm2d::new(c_out));
            let block = Residual::new(body).with_relu();
            if c_in == c_out {
                block
            } else {
                let projection = Sequential::new()
                    .push(
                        "0",
                        Conv2d::new(c_in, c_out, 1, Conv2dConfig::new(2, 0, 1), false, &mut rng),
                    )
                    .push("1", BatchNorm2d::new(c_out));
                block.with_shortcut("downsample", projection)
            }
        };
        let (layer1, layer2) = (block(16, 16, same), block(16, 32, down));
        Ok(Box::new(
            Sequential::new()
                .push("conv1", Conv2d::new(c, 16, 3, same, false, &mut rng))
                .push("bn1", BatchNorm2d::new(16))
                .push("relu", Relu)
                .push("pool", MaxPool2d(Pool2dConfig::square(2)))
                .push("layer1", layer1)
                .push("layer2", layer2)
                .push("avgpool", GlobalAvgPool)
                .push("fc", Linear::new(32, outputs, true, &mut rng)),
        ))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::temp_dir().join("tensorgrad-residual-cnn");
    let config = TrainConfig {
        epochs: 2,
        lr: 0.05,
        train_limit: Some(6000),
        test_limit: Some(2000),
        data_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/mnist")),
        out: Some(out.clone()),
        overwrite: true,
        ..TrainConfig::default()
    };
    let stop = AtomicBool::new(false);
    // Train one epoch and stop, as a Ctrl-C would; then resume to the end.
    let first = TrainConfig {
        stop_after: Some(1),
        ..config.clone()
    };
    let mut report = |e: &Event| match e {
        Event::Started { parameters, .. } => println!("tiny-resnet: {parameters} parameters"),
        Event::Epoch { record, test, .. } => println!(
            "epoch {}: train loss {:.4}, test accuracy {:.2}%",
            record.epoch,
            record.train_loss,
            100.0 * test.accuracy
        ),
        _ => {}
    };
    train_model_until(&first, &TinyResNet, &stop, &mut report)?;
    let resumed = TrainConfig {
        resume: Some(out.clone()),
        ..config
    };
    let summary = train_model_until(&resumed, &TinyResNet, &stop, &mut report)?;
    println!(
        "finished: test accuracy {:.2}%",
        100.0 * summary.test.accuracy
    );

    // Reopen the saved run (checkpoint + config) and evaluate it again.
    let mut saved = SavedRun::open_with(&out, None, &TinyResNet)?;
    let again = saved.evaluate()?;
    assert_eq!(again.accuracy, summary.test.accuracy);
    println!("reopened from {}: the same accuracy", out.display());
    Ok(())
}
