//! The record an op leaves on its output so that backward can differentiate it.

use crate::error::Result;
use crate::tensor::{Element, Tensor};
use std::sync::Arc;

/// A scalar function applied elementwise, with its derivative (dfdx's `f`/`df` pair).
pub trait UnaryFn<T: Element>: Send + Sync {
    /// Name used in errors and graph dumps.
    fn name(&self) -> &'static str;
    /// The function.
    fn f(&self, x: T) -> T;
    /// Its derivative at `x`, given also `y = f(x)` (cheaper for exp, sigmoid, tanh, sqrt).
    fn df(&self, x: T, y: T) -> T;

    /// `g · df(x, y)` over whole slices: one dynamic call per tensor, then a loop that the
    /// compiler specialises for each op (it is monomorphised per implementation).
    fn backward_slice(&self, x: &[T], y: &[T], g: &[T]) -> Vec<T> {
        x.iter()
            .zip(y)
            .zip(g)
            .map(|((&x, &y), &g)| g * self.df(x, y))
            .collect()
    }
}

/// Elementwise binary ops; operands are already broadcast to one shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// `max(a, b)`; at ties the gradient is split evenly (as PyTorch).
    Maximum,
    /// `min(a, b)`; at ties the gradient is split evenly (as PyTorch).
    Minimum,
}

impl BinaryOp {
    /// The forward scalar function.
    #[inline]
    pub fn apply<T: Element>(self, a: T, b: T) -> T {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Maximum => {
                if a >= b {
                    a
                } else {
                    b
                }
            }
            BinaryOp::Minimum => {
                if a <= b {
                    a
                } else {
                    b
                }
            }
        }
    }

    /// Name used in errors.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
        }
    }
}

/// An op implemented outside the core (convolution, pooling, fused kernels) with its own rule.
pub trait CustomOp<T: Element>: Send + Sync {
    /// Name used in errors.
    fn name(&self) -> &'static str;
    /// The tensors the output was computed from, in the order `backward` answers for them.
    fn inputs(&self) -> Vec<&Tensor<T>>;
    /// Gradients with respect to each input, given the output and its gradient.
    fn backward(&self, output: &Tensor<T>, grad: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>>;
}

/// How a tensor was computed; the derivative rules are in `autograd/backward.rs`.
pub enum Op<T: Element> {
    /// Elementwise `f(input)`.
    Unary {
        /// Operand.
        input: Tensor<T>,
        /// The function and its derivative.
        f: Arc<dyn UnaryFn<T>>,
    },
    /// Elementwise `op(lhs, rhs)` on operands of equal shape.
    Binary {
        /// Left operand.
        lhs: Tensor<T>,
        /// Right operand.
        rhs: Tensor<T>,
        /// Which op.
        op: BinaryOp,
    },
    /// Sum over `axes`.
    Sum {
        /// Operand.
        input: Tensor<T>,
        /// Reduced axes (normalised, sorted).
        axes: Vec<usize>,
    },
    /// Matrix product (2-D, batched 3-D, or 3-D by 2-D).
    Matmul {
        /// Left operand.
        lhs: Tensor<T>,
        /// Right operand.
        rhs: Tensor<T>,
    },
    /// Same elements, new shape.
    Reshape {
        /// Operand.
        input: Tensor<T>,
    },
    /// Dimensions reordered.
    Permute {
        /// Operand.
        input: Tensor<T>,
        /// `out.dim(i) = input.dim(perm[i])`.
        perm: Vec<usize>,
    },
    /// Broadcast view to a larger shape.
    BroadcastTo {
        /// Operand.
        input: Tensor<T>,
    },
    /// `input[.., start..start+len, ..]` along `axis`.
    Narrow {
        /// Operand.
        input: Tensor<T>,
        /// The sliced axis.
        axis: usize,
        /// First index kept.
        start: usize,
    },
    /// Inputs joined along `axis`.
    Concat {
        /// Operands, in order.
        inputs: Vec<Tensor<T>>,
        /// The joined axis.
        axis: usize,
    },
    /// `out.flat[p] = input.flat[positions[p]]` (row-major): the common form of
    /// index_select, gather and max, whose derivative is a scatter-add.
    Take {
        /// Operand.
        input: Tensor<T>,
        /// Row-major input index read by every output element.
        positions: Arc<Vec<usize>>,
    },
    /// Any other op, bringing its own derivative.
    Custom(Box<dyn CustomOp<T>>),
}

impl<T: Element> Op<T> {
    /// The tensors this op read.
    pub fn inputs(&self) -> Vec<&Tensor<T>> {
        match self {
            Op::Unary { input, .. }
            | Op::Sum { input, .. }
            | Op::Reshape { input }
            | Op::Permute { input, .. }
            | Op::BroadcastTo { input }
            | Op::Narrow { input, .. }
            | Op::Take { input, .. } => vec![input],
            Op::Binary { lhs, rhs, .. } | Op::Matmul { lhs, rhs } => vec![lhs, rhs],
            Op::Concat { inputs, .. } => inputs.iter().collect(),
            Op::Custom(c) => c.inputs(),
        }
    }

    /// Name of the op, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Unary { f, .. } => f.name(),
            Op::Binary { op, .. } => op.name(),
            Op::Sum { .. } => "sum",
            Op::Matmul { .. } => "matmul",
            Op::Reshape { .. } => "reshape",
            Op::Permute { .. } => "permute",
            Op::BroadcastTo { .. } => "broadcast_to",
            Op::Narrow { .. } => "narrow",
            Op::Concat { .. } => "concat",
            Op::Take { .. } => "take",
            Op::Custom(c) => c.name(),
        }
    }
}
