//! Convolution kernels (NCHW images, `o × c × kh × kw` weights), one image at a time.
//!
//! Three algorithms stand behind the same per-image interface — [`ConvForward`] and
//! [`ConvBackward`]: what workspace a call needs, the forward of one image (or of a small
//! group of images), and one image's input and weight gradients. The op in `ops/conv`
//! checks shapes, picks the algorithm, runs images in parallel and records the derivative;
//! it never needs to know which algorithm it drives.
//!
//! - [`direct`]: the definition in seven loops; the reference every other algorithm is
//!   tested against.
//! - [`im2col`]: columns of input taps, then one GEMM per tile of output rows.
//! - [`winograd`]: F(2×2, 3×3) for 3×3 stride-1 layers, 16 GEMMs over transformed tiles.

pub mod depthwise;
pub mod direct;
pub mod grouped;
pub mod im2col;
pub mod winograd;

/// The forward pass of one convolution layer with its weights prepared.
pub trait ConvForward<T>: Sync {
    /// Images one [`ConvForward::forward`] call computes (im2col shares one GEMM between
    /// images with few output pixels); the last call of a batch may get fewer.
    fn images_per_call(&self) -> usize {
        1
    }

    /// Workspace elements one call needs.
    fn workspace(&self) -> usize;

    /// `y` (`imgs × o × oh × ow`, zeroed) from `x` (`imgs × c × h × w`) and the bias.
    fn forward(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], workspace: &mut [T]);
}

/// The backward pass of one convolution layer with its weights prepared.
pub trait ConvBackward<T>: Sync {
    /// Workspace elements one [`ConvBackward::backward_image`] call needs.
    fn workspace(&self) -> usize;

    /// Elements of the weight-gradient accumulator `backward_image` adds into.
    fn weight_grad_len(&self) -> usize;

    /// One image: with `dx` (`c × h × w`, zeroed), writes its input gradient; with `dw`
    /// ([`ConvBackward::weight_grad_len`] elements), adds its weight gradient, read from
    /// the image's input `x`.
    fn backward_image(
        &self,
        dy: &[T],
        x: &[T],
        dx: Option<&mut [T]>,
        dw: Option<&mut [T]>,
        workspace: &mut [T],
    );

    /// The weight gradient `o × c × kh × kw` from the accumulator summed over the batch
    /// (Winograd accumulates in its transformed domain; the others already hold `dW`).
    fn finish_weight_grad(&self, summed: Vec<T>) -> Vec<T> {
        summed
    }
}
