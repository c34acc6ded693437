//! The whole training loop against the library API that `tensorgrad train` itself uses:
//! data, model + loss + optimizer from a typed configuration, `Trainer::fit_epoch` with a
//! per-step callback, evaluation. Run with `cargo run --release --example train_mnist`.

use std::path::Path;
use tensorgrad::data::Normalization;
use tensorgrad::train::{assemble, evaluate, load_data, TrainConfig, Trainer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The default run (LeNet, LGL-INR with β = 1, SGD momentum 0.9, lr 0.01 cosine, batch
    // 64), for 2 epochs, on the bundled MNIST, verified against its checksums.
    let config = TrainConfig {
        epochs: 2,
        data_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/mnist")),
        ..TrainConfig::default()
    };
    let split = load_data(&config)?;
    let norm = Normalization::of(&split.train);

    // Model, loss and optimizer, assembled as for `tensorgrad train`.
    let assembly = assemble(&config, &split.train)?;
    let mut trainer = Trainer::new(assembly, config.lr_schedule(split.train.len()));

    for epoch in 0..config.epochs {
        // A seeded shuffle per epoch.
        let batches = config.epoch_batches(&split.train, &norm, epoch);
        let stats = trainer.fit_epoch(batches, epoch, |step| {
            if step.batch % 200 == 0 {
                println!("  step {:>4}: loss {:.4}", step.batch, step.loss);
            }
        })?;
        let (test, _) = evaluate(
            &mut trainer.model,
            trainer.loss.as_ref(),
            &split.test,
            &norm,
            500,
        )?;
        println!(
            "epoch {}: train loss {:.4}, test accuracy {:.2}%",
            epoch + 1,
            stats.mean_loss,
            100.0 * test.accuracy
        );
    }
    Ok(())
}
