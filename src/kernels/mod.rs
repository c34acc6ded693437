//! The kernels floor: pure functions over slices, below the tensor and the graph.
//!
//! Nothing here knows [`Tensor`](crate::Tensor), layouts or autograd: a kernel takes
//! slices (and sizes) in and writes slices out. Every fast path has, beside it, the plain
//! version a learner reads first and the tests compare it against:
//!
//! | kernel | fast path | readable reference |
//! |---|---|---|
//! | [`gemm`] | matrixmultiply's packed sgemm/dgemm behind checked [`gemm::MatRef`]/[`gemm::MatMut`] views | [`gemm::gemm_reference`] (three loops) |
//! | [`microkernel`] | `mr × 16` register tiles over a left operand packed once (AVX-512 / AVX2 + FMA chosen at run time) | [`microkernel::multiply_reference`] (three loops) |
//! | [`transpose`] | 8×8 blocks (8×4 and 4×8 at the edges), AVX in-register shuffles for f32 | [`transpose::transpose_reference`] |
//! | [`elementwise`] | maps split over the rayon pool, chunks zeroed by their filling thread | the serial loop (same results, tested) |
//! | [`batch_norm`] | per-channel sums by slabs of whole images (one partial sum per channel and pixel), AVX2-compiled passes | [`batch_norm::channel_sums_reference`], [`batch_norm::normalise_reference`], [`batch_norm::input_grad_reference`] (plane by plane, element by element) |
//! | [`conv`] | implicit GEMM, im2col + GEMM, Winograd F(2×2, 3×3) and F(4×4, 3×3), the rows kernels and the depthwise kernel (reading "same" stride-1 layers in place on AVX-512, with masked loads) | [`conv::direct`] (seven loops), [`conv::winograd::reference`] (one tile, `Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A`) |
//! | [`pool`] | 2×2/2 max-pool unrolled, tiled windows | [`pool::max_pool_reference`] |
//! | [`reduce`] | sums in 32 interleaved lanes (vectorised) | [`reduce::sum_by_reference`] (one serial chain) |
//!
//! **`unsafe` lives here and nowhere else** (apart from the FFI calls of `memory.rs`,
//! `train/denormals.rs` and `train/mpi.rs`): the crate denies `unsafe_code` and allows it
//! only for these modules, and `clippy::undocumented_unsafe_blocks` makes every block carry
//! its `// SAFETY:` argument.

pub mod batch_norm;
pub mod conv;
pub mod element;
pub mod elementwise;
pub mod gemm;
pub mod microkernel;
pub mod pool;
pub mod reduce;
pub mod transpose;
pub mod window;

pub use element::Element;
pub use window::Geometry;
