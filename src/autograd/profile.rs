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

/// Time and arithmetic of one layer (an op of one shape, e.g. one convolution) in one
/// pass, over every call during the profiled work.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LayerRow {
    /// Forward or backward.
    pub phase: Phase,
    /// The layer, by op, shape and algorithm (e.g. `conv 16→32 3×3/2 g1 32×32 Im2col`).
    pub layer: String,
    /// How many times it ran.
    pub calls: usize,
    /// Total wall time, in milliseconds.
    pub ms: f64,
    /// Floating-point operations of all calls, in units of 10⁹, counted as the layer's
    /// definition does them (a convolution: `2 · outputs · c_in/groups · kh · kw` per pass),
    /// whatever the algorithm.
    pub gflop: f64,
}

impl LayerRow {
    /// The rate, GFLOP/s.
    pub fn gflops(&self) -> f64 {
        self.gflop / (self.ms * 1e-3).max(f64::MIN_POSITIVE)
    }
}

/// Layer rows in the order their layers first ran.
static LAYERS: Mutex<Vec<LayerRow>> = Mutex::new(Vec::new());

/// Starts recording (clearing anything recorded before, layers included).
pub fn start() {
    *TIMES.lock().expect("profile lock") = Some(HashMap::new());
    LAYERS.lock().expect("profile lock").clear();
    ENABLED.store(true, Ordering::SeqCst);
}

/// Runs `f`, recording its wall time and `flops` under the layer `name()` in `phase` when
/// recording is on (`name` is not called otherwise).
pub fn time_layer<R>(
    phase: Phase,
    name: impl FnOnce() -> String,
    flops: f64,
    f: impl FnOnce() -> R,
) -> R {
    if !is_enabled() {
        return f();
    }
    let t0 = std::time::Instant::now();
    let r = f();
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let layer = name();
    let mut rows = LAYERS.lock().expect("profile lock");
    match rows
        .iter_mut()
        .find(|r| r.phase == phase && r.layer == layer)
    {
        Some(row) => {
            row.calls += 1;
            row.ms += ms;
            row.gflop += flops * 1e-9;
        }
        None => rows.push(LayerRow {
            phase,
            layer,
            calls: 1,
            ms,
            gflop: flops * 1e-9,
        }),
    }
    r
}

/// The layer rows recorded since [`start`] (forward rows first, each pass in the order
/// its layers first ran), clearing them. Call after [`finish`] or before: it does not stop
/// recording.
///
/// ```
/// use tensorgrad::autograd::profile::{self, Phase};
/// use tensorgrad::ops::conv::Conv2dConfig;
/// use tensorgrad::Tensor;
///
/// let x = Tensor::<f32>::ones(&[2, 3, 8, 8]).with_grad();
/// let w = Tensor::<f32>::ones(&[4, 3, 3, 3]).with_grad();
/// profile::start();
/// x.conv2d(&w, None, Conv2dConfig::new(1, 1, 1))?.sum_all().backward()?;
/// profile::finish();
/// let layers = profile::finish_layers();
/// assert_eq!(layers.len(), 2); // its forward and its backward
/// // 2 images × 4 × 8 × 8 outputs × 3 × 3 × 3 taps × 2 flops; backward does dX and dW.
/// assert_eq!(layers[0].gflop, 27_648e-9);
/// assert_eq!(layers[1].phase, Phase::Backward);
/// assert_eq!(layers[1].gflop, 2.0 * 27_648e-9);
/// # Ok::<(), tensorgrad::TensorError>(())
/// ```
pub fn finish_layers() -> Vec<LayerRow> {
    let mut rows = std::mem::take(&mut *LAYERS.lock().expect("profile lock"));
    rows.sort_by_key(|r| r.phase); // stable: first-run order within a pass
    rows
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
