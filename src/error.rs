//! Typed errors for everything that can fail on input the caller controls.

use thiserror::Error;

/// Errors from tensor construction, shape checking and autodiff.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum TensorError {
    /// Two operands whose shapes do not fit together.
    #[error("{op}: shape mismatch between {lhs:?} and {rhs:?}")]
    ShapeMismatch {
        /// The operation that was attempted.
        op: &'static str,
        /// Shape of the left (or first) operand.
        lhs: Vec<usize>,
        /// Shape of the right (or second) operand, or the requested shape.
        rhs: Vec<usize>,
    },
    /// A shape that the operation cannot accept, with the reason.
    #[error("{op}: invalid shape {shape:?}: {reason}")]
    InvalidShape {
        /// The operation that was attempted.
        op: &'static str,
        /// The offending shape.
        shape: Vec<usize>,
        /// Why it is invalid.
        reason: String,
    },
    /// A data buffer whose length does not match the shape.
    #[error("{op}: shape {shape:?} needs {expected} elements, got {got}")]
    LengthMismatch {
        /// The operation that was attempted.
        op: &'static str,
        /// The requested shape.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements supplied.
        got: usize,
    },
    /// An axis outside `-ndim..ndim`.
    #[error("{op}: axis {axis} out of range for a tensor of {ndim} dimensions")]
    AxisOutOfRange {
        /// The operation that was attempted.
        op: &'static str,
        /// The axis as given.
        axis: isize,
        /// Number of dimensions of the tensor.
        ndim: usize,
    },
    /// An index (label, gather index, slice bound) outside its range.
    #[error("{op}: index {index} out of range for size {size}")]
    IndexOutOfRange {
        /// The operation that was attempted.
        op: &'static str,
        /// The offending index.
        index: usize,
        /// The size it must stay below.
        size: usize,
    },
    /// An invalid argument value other than a shape or index.
    #[error("{op}: {reason}")]
    InvalidArgument {
        /// The operation that was attempted.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A misuse of the autodiff engine (non-scalar root, freed graph, …).
    #[error("backward: {0}")]
    Backward(String),
}

/// Result type of fallible tensor operations.
pub type Result<T> = std::result::Result<T, TensorError>;
