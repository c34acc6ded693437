//! tensorgrad: a from-scratch deep-learning framework for CPU training, and the reference
//! implementation of the losses of *On the Learning Property of Logistic and Softmax Losses
//! for Deep Neural Networks* (Li et al., AAAI 2020).
//!
//! # A tour, bottom up
//!
//! - [`kernels`]: the floor. Pure functions over slices that know neither tensors nor
//!   graphs — the checked GEMM views, blocked transposes, parallel elementwise maps,
//!   pooling windows, im2col and Winograd — each fast path beside a readable reference
//!   (the direct convolution, a per-tile Winograd with its matrices as constants) that the
//!   tests compare it with. All of the crate's `unsafe` lives here, apart from FFI.
//! - [`tensor`]: the [`Tensor`] type, generic over [`Element`] (`f32` for training, `f64`
//!   for gradient checks): reference-counted storage seen through a [`tensor::Layout`]
//!   (shape, strides, offset), zero-copy views.
//! - [`autograd`]: reverse-mode autodiff. Ops record an [`autograd::Op`] on their output;
//!   [`Tensor::backward`] walks the graph in reverse topological order and accumulates into
//!   a [`Gradients`] store keyed by tensor id; [`no_grad`]; [`gradcheck`] by central
//!   differences; [`Tensor::graph`] to look at a recorded graph. Tensor and autograd form
//!   one layer (a tensor *is* a graph node), see `ARCHITECTURE.md`.
//! - [`ops`]: every differentiable operation, one file per op or family — elementwise
//!   unary (`f`/`df` pairs) and broadcasting binary ops, reductions, movement, indexing,
//!   matmul, convolution with interchangeable algorithms ([`ops::conv::ConvAlgorithm`]),
//!   pooling, softmax. Ops check shapes, record themselves and hold the derivative rules of
//!   their custom kernels; the arithmetic is in [`kernels`].
//! - [`nn`]: layers and blocks as [`nn::Module`]s with PyTorch-named parameters
//!   ([`nn::Sequential`], [`nn::Residual`], [`nn::GlobalAvgPool`]), the models of the
//!   reproduction ([`nn::models::ModelKind`]) and [`nn::Architecture`], through which any
//!   model trains like them.
//! - [`loss`]: the paper's losses (SML, LGL, LGL-INR) and more, the loss registry
//!   ([`loss::build_loss`]) and the stationarity audit.
//! - [`optim`]: SGD, Adam, AdamW, learning-rate schedules, L-BFGS and its linear algebra.
//! - [`data`]: IDX/MNIST, CIFAR and image-folder loaders with checksums, normalisation,
//!   augmentation, imbalance profiles, seeded batching.
//! - [`train`]: typed run configuration, [`train::Trainer`] and
//!   [`train::Trainer::fit_epoch`], whole runs ([`train::train`],
//!   [`train::train_model_until`]), checkpoints, evaluation, audit of saved runs.
//! - [`reproduce`]: the paper's experiments as one command — the protocol, training and
//!   analysis queues, the last-layer refit, the report and its verdict rules.
//! - [`memory`]: the framework's cache of freed tensor buffers (reuse without set-up).
//! - [`text`]: how typed options are spelled on the command line and in `config.json`.
//! - [`error`]: [`TensorError`], the typed error of every fallible tensor operation.
//!
//! Dependencies point down. One rule covers the core: `autograd` imports nothing from
//! `ops`; its derivative rules call methods of [`Tensor`] (which `ops` defines), and that
//! is the only way the core reaches an op.
//!
//! The specifications the code cites are in `docs/` (`LOSSES.md`, `EXPERIMENTS.md`).
//!
//! # Example: one gradient step by hand
//!
//! ```
//! use tensorgrad::loss::{Loss, Sml};
//! use tensorgrad::Tensor;
//!
//! // A linear classifier z = x·W on 4 samples of 3 features, 2 classes.
//! let x = Tensor::<f64>::from_vec(
//!     vec![1.0, 0.0, 2.0, 0.5, 1.0, 0.0, -1.0, 2.0, 1.0, 0.0, 0.0, 1.0],
//!     &[4, 3],
//! )?;
//! let w = Tensor::<f64>::zeros(&[3, 2]).with_grad();
//! let labels = [0, 1, 0, 1];
//! let loss = Sml::default().forward(&x.matmul(&w)?, &labels)?;
//! assert!((loss.item() - 2f64.ln()).abs() < 1e-12); // uniform predictions
//! let grads = loss.backward()?;
//! let dw = grads.get(&w).expect("w took part");
//! assert_eq!(dw.shape(), &[3, 2]);
//! // Softmax cross-entropy: every row of dW sums to zero.
//! let g = dw.to_vec();
//! assert!(g.chunks(2).all(|row| (row[0] + row[1]).abs() < 1e-12));
//! # Ok::<(), tensorgrad::TensorError>(())
//! ```

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
// `unsafe` is allowed only in the kernels floor and the FFI modules
// (`train/denormals.rs`, `train/mpi.rs`), each of which says so with an `allow`.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod autograd;
pub mod data;
pub mod error;
#[allow(unsafe_code)]
pub mod kernels;
pub mod loss;
pub mod memory;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod reproduce;
pub mod tensor;
pub mod text;
pub mod train;

#[cfg(test)]
pub(crate) mod testing;

pub use autograd::{
    gradcheck, gradcheck_fast, no_grad, GradcheckError, GradcheckOptions, Gradients, NoGradGuard,
};
pub use error::{Result, TensorError};
pub use tensor::{Element, Tensor, TensorId};
