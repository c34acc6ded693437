//! Peak heap memory of one LeNet training step (batch 64, LGL-INR, SGD momentum), measured
//! with a counting global allocator: how much the forward graph keeps for backward.
//! Run with `cargo run --release --example step_memory`.

use rand::SeedableRng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use tensorgrad::loss::{LglInr, Loss};
use tensorgrad::nn::{models::ModelKind, Module};
use tensorgrad::optim::{Optimizer, Sgd, SgdConfig};
use tensorgrad::Tensor;

/// The system allocator, counting live bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` above with this `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The buffer cache off: the allocator then sees exactly what the step holds (with it
    // on, the step's buffers stay allocated between steps, idle, for the next one).
    tensorgrad::memory::set_pool_budget(0);
    // One thread, so per-thread workspaces do not depend on the core count.
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()?;
    let mut model = ModelKind::Lenet.build::<f32>([1, 28, 28], 10, 0)?;
    let loss = LglInr::default();
    let mut opt = Sgd::new(SgdConfig {
        momentum: 0.9,
        nesterov: false,
        weight_decay: 5e-4,
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let x = Tensor::<f32>::uniform(&[64, 1, 28, 28], -1.0, 1.0, &mut rng);
    let y: Vec<usize> = (0..64).map(|i| i % 10).collect();
    let mut step =
        |model: &mut tensorgrad::nn::Sequential<f32>| -> Result<(), Box<dyn std::error::Error>> {
            let l = loss.forward(&model.forward(&x)?, &y)?;
            let grads = l.backward()?;
            opt.step(model.parameters_mut(), &grads, 0.01)?;
            Ok(())
        };
    // Two warm-up steps: optimizer state and per-thread workspaces reach their size.
    step(&mut model)?;
    step(&mut model)?;
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    step(&mut model)?;
    let peak = PEAK.load(Ordering::Relaxed);
    println!(
        "{{\"model\":\"lenet\",\"batch_size\":64,\"resident_bytes\":{base},\"step_peak_bytes\":{peak},\"step_extra_bytes\":{}}}",
        peak - base
    );
    Ok(())
}
