//! The differentiable operations, as methods on [`Tensor`](crate::Tensor).
//!
//! Primitives record an [`Op`](crate::autograd::Op) whose derivative rule lives in
//! `autograd/backward.rs`; composites (mean, logsumexp, softmax, …) are written in terms of
//! primitives and get their gradients for free.

pub mod add_relu;
pub mod batch_norm;
pub mod binary;
pub mod compare;
pub mod conv;
pub mod dropout;
pub mod indexing;
pub mod matmul;
pub mod movement;
pub mod pool;
pub mod reduce;
pub mod shortcut;
pub mod softmax;
pub mod unary;
