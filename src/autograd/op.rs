//! The record an op leaves on its output so that backward can differentiate it.

use crate::error::Result;
use crate::tensor::{Element, Tensor};
use std::sync::Arc;

/// What the derivative of a unary function reads, and so what its op record keeps for
/// backward (dfdx's `DF_USES_FX`): the graph holds no buffer that no rule will read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saved {
    /// `df` is a function of the input `x` (log, abs, clamp, powf, softplus).
    Input,
    /// `df` is a function of the output `y = f(x)` (exp, sigmoid, tanh, sqrt, relu).
    Output,
    /// `df` is a constant (neg, affine).
    Nothing,
}

/// A scalar function applied elementwise, with its derivative (dfdx's `f`/`df` pair).
pub trait UnaryFn<T: Element>: Send + Sync {
    /// Name used in errors and graph dumps.
    fn name(&self) -> &'static str;
    /// The function.
    fn f(&self, x: T) -> T;
    /// What `df` is a function of.
    fn saves(&self) -> Saved;
    /// The derivative, as a function of `x` or of `y = f(x)` as [`UnaryFn::saves`] says
    /// (of nothing, for [`Saved::Nothing`]: the argument is then zero).
    fn df(&self, v: T) -> T;

    /// `g · df(v)` over whole slices (`v` empty for [`Saved::Nothing`]): one dynamic call
    /// per tensor, then a loop the compiler specialises for each op (it is monomorphised
    /// per implementation).
    fn backward_slice(&self, v: &[T], g: &[T]) -> Vec<T> {
        if self.saves() == Saved::Nothing {
            let d = self.df(T::zero());
            return crate::kernels::elementwise::map_elements(g, |g| g * d);
        }
        crate::kernels::elementwise::zip_elements(v, g, |v, g| g * self.df(v))
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
    /// Gradients with respect to each input, given the output's gradient. A rule that
    /// needs the output's values keeps them itself: the engine does not.
    fn backward(&self, grad: &Tensor<T>) -> Result<Vec<Option<Tensor<T>>>>;

    /// `(address, bytes)` of the buffers the record keeps for backward besides its inputs
    /// (a fused ReLU's output, max pooling's argmax), so that the graph view counts them.
    fn kept_buffers(&self) -> Vec<(usize, usize)> {
        Vec::new()
    }
}

/// How a tensor was computed; the derivative rules are in `autograd/backward.rs`.
pub enum Op<T: Element> {
    /// Elementwise `f(input)`.
    Unary {
        /// Operand (a graph handle unless `f` saves the input).
        input: Tensor<T>,
        /// The function and its derivative.
        f: Arc<dyn UnaryFn<T>>,
        /// The output's values, when `f` saves the output.
        output: Option<crate::memory::SharedBuffer<T>>,
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
    /// The same values copied into a row-major buffer (a strided view made contiguous).
    Contiguous {
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
            | Op::Contiguous { input }
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
            Op::Contiguous { .. } => "contiguous",
            Op::Permute { .. } => "permute",
            Op::BroadcastTo { .. } => "broadcast_to",
            Op::Narrow { .. } => "narrow",
            Op::Concat { .. } => "concat",
            Op::Take { .. } => "take",
            Op::Custom(c) => c.name(),
        }
    }
}
