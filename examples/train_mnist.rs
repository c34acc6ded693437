//! The whole training loop against the library API: data, model, loss, optimizer, epochs,
//! evaluation. Run with `cargo run --release --example train_mnist`.

use std::path::Path;
use tensorgrad::data::{load_idx_dir, Augment, Batches, Normalization};
use tensorgrad::loss::{LglInr, Loss};
use tensorgrad::nn::{models, Module};
use tensorgrad::optim::{LrSchedule, Optimizer, Schedule, Sgd, SgdConfig};
use tensorgrad::train::evaluate;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Data: the bundled MNIST, verified against its checksums, normalised by train stats.
    let split = load_idx_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/mnist"))?;
    let norm = Normalization::of(&split.train);

    // Model and loss: LeNet with the paper's LGL-INR (β = 1).
    let mut model = models::build::<f32>("lenet", split.train.shape, 10, 0)?;
    let loss = LglInr::default();

    // Optimizer and schedule: SGD with momentum, cosine decay of lr 0.01 over 2 epochs.
    let (epochs, batch_size) = (2, 64);
    let steps_per_epoch = split.train.len().div_ceil(batch_size);
    let schedule = LrSchedule {
        base: 0.01,
        schedule: Schedule::Cosine,
        warmup_steps: 0,
        steps_per_epoch,
        total_steps: epochs * steps_per_epoch,
    };
    let mut opt = Sgd::new(SgdConfig {
        momentum: 0.9,
        nesterov: false,
        weight_decay: 5e-4,
    });

    let mut step = 0;
    for epoch in 0..epochs {
        let mut total = 0.0;
        // A seeded shuffle per epoch.
        for (x, y) in Batches::new(
            &split.train,
            batch_size,
            Some(0),
            epoch,
            &norm,
            Augment::default(),
        ) {
            let l = loss.forward(&model.forward(&x)?, &y)?;
            total += l.item() as f64;
            let grads = l.backward()?;
            opt.step(model.parameters_mut(), &grads, schedule.lr(step))?;
            step += 1;
        }
        let (test, _) = evaluate(&mut model, &loss, &split.test, &norm, 500)?;
        println!(
            "epoch {}: train loss {:.4}, test accuracy {:.2}%",
            epoch + 1,
            total / steps_per_epoch as f64,
            100.0 * test.accuracy
        );
    }
    Ok(())
}
