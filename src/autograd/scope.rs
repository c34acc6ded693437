//! Which layer made which graph nodes: while [`record`] runs, every layer a
//! [`crate::nn::Sequential`] runs opens a scope — its dotted path (`layer1.0`) and the
//! range of tensor ids made during its forward — so that a graph can be summed per block
//! ([`crate::autograd::graph::Graph::kept_by_scope`]). Off (one thread-local check per
//! layer) unless recording.
//!
//! ```
//! use tensorgrad::autograd::scope;
//! use tensorgrad::nn::{Module, Relu, Sequential};
//! use tensorgrad::Tensor;
//!
//! let mut net = Sequential::new().push("act", Relu);
//! let x = Tensor::<f32>::ones(&[2, 3]).with_grad();
//! let (y, scopes) = scope::record(|| net.forward(&x));
//! let y = y?;
//! assert_eq!(scopes[0].path, "act");
//! assert!(scopes[0].ids.contains(&y.id()));
//! # Ok::<(), tensorgrad::TensorError>(())
//! ```

use crate::tensor::TensorId;
use std::cell::RefCell;
use std::ops::Range;

/// One layer's forward: where it sits and which tensor ids it made.
#[derive(Clone, Debug, PartialEq)]
pub struct Scope {
    /// Dotted path of names from the outermost layer (unnamed layers add no component).
    pub path: String,
    /// Number of components in `path`.
    pub depth: usize,
    /// The layer's [`crate::nn::Module::kind`].
    pub kind: &'static str,
    /// Ids of the tensors made during its forward.
    pub ids: Range<TensorId>,
}

#[derive(Default)]
struct Recorder {
    stack: Vec<String>,
    scopes: Vec<Scope>,
}

thread_local! {
    static RECORDER: RefCell<Option<Recorder>> = const { RefCell::new(None) };
}

/// Runs `f`, recording the scope of every layer run on this thread, in the order the
/// layers start (outer before inner).
pub fn record<R>(f: impl FnOnce() -> R) -> (R, Vec<Scope>) {
    let previous = RECORDER.with(|r| r.replace(Some(Recorder::default())));
    let out = f();
    let recorder = RECORDER.with(|r| r.replace(previous)).unwrap_or_default();
    let mut scopes = recorder.scopes;
    scopes.sort_by_key(|s| (s.ids.start, s.depth));
    (out, scopes)
}

/// Runs the forward `f` of a layer named `name` of `kind`, as a scope when recording. An
/// unnamed layer (pushed without a prefix) adds a scope only at the top, named by its kind;
/// inside a named layer its nodes are that layer's.
pub(crate) fn within<R>(name: &str, kind: &'static str, f: impl FnOnce() -> R) -> R {
    let recording = RECORDER.with(|r| {
        let mut r = r.borrow_mut();
        let Some(rec) = r.as_mut() else {
            return false;
        };
        // An unnamed layer inside a named one belongs to it; at the top it is its own.
        if name.is_empty() && !rec.stack.is_empty() {
            return false;
        }
        if !name.is_empty() {
            rec.stack.push(name.to_string());
        }
        true
    });
    if !recording {
        return f();
    }
    let start = TensorId::next();
    let out = f();
    let end = TensorId::next();
    RECORDER.with(|r| {
        if let Some(rec) = r.borrow_mut().as_mut() {
            let path = rec.stack.join(".");
            if !name.is_empty() {
                rec.stack.pop();
            }
            let depth = rec.stack.len() + usize::from(!name.is_empty());
            rec.scopes.push(Scope {
                path,
                depth,
                kind,
                ids: start..end,
            });
        }
    });
    out
}
