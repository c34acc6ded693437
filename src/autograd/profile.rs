//! A switchable profiler for one training step: wall time per layer kind in the forward
//! pass (recorded by `nn::Sequential`; the loss by the trainer), per op in the backward pass
//! (recorded by the engine around each derivative rule), and the optimizer's update. Off by default; when off, recording is one atomic
//! load. Process-wide: profile one step at a time.
//!
//! ```
//! use tensorgrad::autograd::profile::{self, Phase};
//! use tensorgrad::Tensor;
//!
//! let x = Tensor::<f32>::ones(&[64, 64]).with_grad();
//! profile::start();
//! x.matmul(&x)?.relu().sum_all().backward()?;
//! let rows = profile::finish();
//! assert!(rows.iter().any(|r| r.phase == Phase::Backward && r.op == "matmul"));
//! assert!(profile::finish().is_empty()); // finish() stops and clears
//! # Ok::<(), tensorgrad::TensorError>(())
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Which pass a time was spent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The forward pass (per layer kind).
    Forward,
    /// The backward pass (per op).
    Backward,
    /// The optimizer's update.
    Update,
}

/// Time spent in one op or layer kind during the profiled work.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ProfileRow {
    /// Forward or backward.
    pub phase: Phase,
    /// The layer kind (forward) or op (backward).
    pub op: &'static str,
    /// How many times it ran.
    pub calls: usize,
    /// Total wall time, in milliseconds.
    pub ms: f64,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Calls and total time per (phase, op).
type Times = HashMap<(Phase, &'static str), (usize, Duration)>;

static TIMES: Mutex<Option<Times>> = Mutex::new(None);

/// Starts recording (clearing anything recorded before).
pub fn start() {
    *TIMES.lock().expect("profile lock") = Some(HashMap::new());
    ENABLED.store(true, Ordering::SeqCst);
}

/// Whether recording is on.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Adds `elapsed` to `op` in `phase` (when recording).
pub fn record(phase: Phase, op: &'static str, elapsed: Duration) {
    if !is_enabled() {
        return;
    }
    if let Some(map) = TIMES.lock().expect("profile lock").as_mut() {
        let e = map.entry((phase, op)).or_insert((0, Duration::ZERO));
        e.0 += 1;
        e.1 += elapsed;
    }
}

/// Runs `f`, recording its wall time under `op` in `phase` when recording is on.
pub fn time<R>(phase: Phase, op: &'static str, f: impl FnOnce() -> R) -> R {
    if !is_enabled() {
        return f();
    }
    let t0 = std::time::Instant::now();
    let r = f();
    record(phase, op, t0.elapsed());
    r
}

/// Stops recording and returns the rows, forward first, each phase by time descending.
pub fn finish() -> Vec<ProfileRow> {
    ENABLED.store(false, Ordering::SeqCst);
    let map = TIMES
        .lock()
        .expect("profile lock")
        .take()
        .unwrap_or_default();
    let mut rows: Vec<ProfileRow> = map
        .into_iter()
        .map(|((phase, op), (calls, d))| ProfileRow {
            phase,
            op,
            calls,
            ms: d.as_secs_f64() * 1e3,
        })
        .collect();
    rows.sort_by(|a, b| a.phase.cmp(&b.phase).then(b.ms.total_cmp(&a.ms)));
    rows
}
