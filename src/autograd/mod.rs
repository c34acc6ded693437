//! Reverse-mode automatic differentiation.
//!
//! Every op that has an input requiring gradients records an [`Op`] on its output.
//! [`Tensor::backward`](crate::Tensor::backward) walks the recorded graph in reverse
//! topological order, applies each op's derivative rule (all of them are in
//! `autograd/backward.rs`) and accumulates with `+=` into the gradient of every input.

mod backward;
mod gradcheck;
pub mod graph;
mod op;
pub mod profile;
pub mod scope;

pub(crate) use backward::binary_operands_read;
pub use backward::Gradients;
pub use gradcheck::{
    gradcheck, gradcheck_fast, GradcheckError, GradcheckFailure, GradcheckOptions,
};
pub use op::{BinaryOp, CustomOp, Op, Saved, UnaryFn};

use std::cell::Cell;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread currently record the graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Disables graph recording on this thread until dropped (restores the previous mode).
#[must_use = "grad mode is restored as soon as the guard is dropped"]
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    /// Turns recording off.
    pub fn new() -> Self {
        let previous = GRAD_ENABLED.with(|g| g.replace(false));
        NoGradGuard { previous }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Runs `f` with graph recording off (evaluation, optimizer updates).
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}
