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
//! - [`direct_rows`]: undilated layers summed in registers from shifted copies of the
//!   image (one per tap column), the output's rows laid end to end.
//! - [`implicit`]: the same product without the column matrix: each block of 16 output
//!   pixels gathers its columns and runs the micro-kernel over weights packed once.
//! - [`winograd`]: for 3×3 stride-1 layers, F(4×4, 3×3) (36 GEMMs over transformed 4×4
//!   tiles) and F(2×2, 3×3) (16 GEMMs over 2×2 tiles, the smaller rounding error).

#[cfg(target_arch = "x86_64")]
mod col2im_x86;
pub mod depthwise;
mod depthwise_flat;
mod depthwise_taps;
#[cfg(target_arch = "x86_64")]
mod depthwise_x86;
pub mod direct;
pub mod direct_rows;
pub mod grouped;
pub mod im2col;
mod im2col_forward;
pub mod implicit;
pub mod implicit_backward;
mod phases;
pub mod winograd;

use crate::kernels::{Element, Geometry};

/// A backward pass put together from two kernels: dW by `weight_grad` (built without
/// weights, so that it computes no dX), dX by `input_grad`, the forward pass of the
/// transposed layer ([`transposed_layer`]) by whichever kernel computes that layer best.
pub struct TransposedInputGrad<'a, T> {
    /// The kernel whose weight gradient this pass takes.
    pub weight_grad: Box<dyn ConvBackward<T> + 'a>,
    /// The transposed layer's forward pass: `dX = forward(dY)`.
    pub input_grad: Box<dyn ConvForward<T> + 'a>,
}

impl<T: Element> ConvBackward<T> for TransposedInputGrad<'_, T> {
    fn workspace(&self) -> usize {
        self.weight_grad
            .workspace()
            .max(self.input_grad.workspace())
    }

    fn weight_grad_len(&self) -> usize {
        self.weight_grad.weight_grad_len()
    }

    fn writes_every_input_grad(&self) -> bool {
        self.input_grad.writes_every_output()
    }

    fn images_per_call(&self) -> usize {
        self.weight_grad.images_per_call()
    }

    fn backward_images(
        &self,
        imgs: usize,
        dy: &[T],
        x: &[T],
        dx: Option<&mut [T]>,
        dw: Option<&mut [T]>,
        workspace: &mut [T],
    ) {
        if dw.is_some() {
            let wg = &self.weight_grad;
            wg.backward_images(imgs, dy, x, None, dw, workspace);
        }
        if let Some(dx) = dx {
            self.input_grad.forward(dy, None, dx, workspace);
        }
    }

    fn backward_image(
        &self,
        dy: &[T],
        x: &[T],
        dx: Option<&mut [T]>,
        dw: Option<&mut [T]>,
        workspace: &mut [T],
    ) {
        self.backward_images(1, dy, x, dx, dw, workspace)
    }

    fn finish_weight_grad(&self, summed: Vec<T>) -> Vec<T> {
        self.weight_grad.finish_weight_grad(summed)
    }
}

/// The layer whose forward pass is the input gradient of a stride-1, undilated layer `g`
/// with weights `w` (`o × c × kh × kw`): dY (`o × oh × ow`) correlated with the weights
/// flipped and transposed, `w'[ci][oc][r][s] = w[oc][ci][kh − 1 − r][kw − 1 − s]`, under
/// padding `k − 1 − p`; it gives `c × h × w`. `None` for other layers and where that
/// padding would be negative.
pub fn transposed_layer<T: Element>(g: &Geometry, o: usize, w: &[T]) -> Option<(Geometry, Vec<T>)> {
    if g.stride != (1, 1) || g.dilation != (1, 1) {
        return None;
    }
    let ((kh, kw), (ph, pw)) = (g.kernel, g.padding);
    let padding = (kh.checked_sub(ph + 1)?, kw.checked_sub(pw + 1)?);
    let gx = Geometry::new(o, (g.oh, g.ow), (kh, kw), (1, 1), padding, (1, 1))?;
    debug_assert_eq!((gx.oh, gx.ow), (g.h, g.w), "a stride-1 layer's transpose");
    let (c, taps) = (g.c, kh * kw);
    let mut flipped = vec![T::zero(); w.len()];
    for oc in 0..o {
        for ci in 0..c {
            let from = &w[(oc * c + ci) * taps..][..taps];
            let to = &mut flipped[(ci * o + oc) * taps..][..taps];
            for (to, &from) in to.iter_mut().zip(from.iter().rev()) {
                *to = from;
            }
        }
    }
    Some((gx, flipped))
}

/// What a forward pass applies to its outputs (after the bias) as it stores them, where
/// the kernel can ([`ConvForward::forward_fused`]): saves a pass over the output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Epilogue<'a, T> {
    /// `relu(y)`: `y` where `y > 0`, else 0 (NaN too), as `Tensor::relu`.
    Relu,
    /// `y + residual`, the residual as many values as the output, in its layout.
    Add(&'a [T]),
    /// `relu(y + residual)`.
    AddRelu(&'a [T]),
    /// `clamp(y, 0, 6)` (mobilenet-v2's activation), NaN staying NaN, as `Tensor::clamp`.
    Relu6,
}

impl<'a, T: Element> Epilogue<'a, T> {
    /// The epilogue of outputs `at..at + len`: its residual's values there.
    pub fn part(&self, at: usize, len: usize) -> Epilogue<'a, T> {
        match *self {
            Epilogue::Relu => Epilogue::Relu,
            Epilogue::Relu6 => Epilogue::Relu6,
            Epilogue::Add(r) => Epilogue::Add(&r[at..][..len]),
            Epilogue::AddRelu(r) => Epilogue::AddRelu(&r[at..][..len]),
        }
    }

    /// The epilogue on `y`, outputs `at..` of the residual's layout: the plain pass the
    /// fused kernels are tested against.
    pub fn apply(&self, y: &mut [T], at: usize) {
        // As `Tensor::relu`'s rule: NaN and −0 give +0.
        let relu = |v: T| if v > T::zero() { v } else { T::zero() };
        match *self {
            Epilogue::Relu => y.iter_mut().for_each(|v| *v = relu(*v)),
            Epilogue::Relu6 => y.iter_mut().for_each(|v| *v = relu6(*v)),
            Epilogue::Add(r) => y.iter_mut().zip(&r[at..]).for_each(|(v, &r)| *v += r),
            Epilogue::AddRelu(r) => y
                .iter_mut()
                .zip(&r[at..])
                .for_each(|(v, &r)| *v = relu(*v + r)),
        }
    }
}

/// `clamp(v, 0, 6)` as `Tensor::clamp` computes it: two compare-and-selects, so NaN stays
/// NaN (and the loop vectorises).
pub fn relu6<T: Element>(v: T) -> T {
    let six = T::from_f64(6.0);
    let v = if v < T::zero() { T::zero() } else { v };
    if v > six {
        six
    } else {
        v
    }
}

/// The forward pass of one convolution layer with its weights prepared (`Send`, so a
/// layer can keep one between calls).
pub trait ConvForward<T>: Send + Sync {
    /// Images one [`ConvForward::forward`] call computes (im2col shares one GEMM between
    /// images with few output pixels); the last call of a batch may get fewer.
    fn images_per_call(&self) -> usize {
        1
    }

    /// Workspace elements one call needs.
    fn workspace(&self) -> usize;

    /// `y` (`imgs × o × oh × ow`, zeroed unless [`ConvForward::writes_every_output`])
    /// from `x` (`imgs × c × h × w`) and the bias.
    fn forward(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], workspace: &mut [T]);

    /// Whether [`ConvForward::forward`] writes every element of `y` whatever it held, so
    /// that `y` need not be zeroed first.
    fn writes_every_output(&self) -> bool {
        false
    }

    /// [`ConvForward::forward`] with `epilogue` applied to every output as it is stored,
    /// every output written (whatever `y` held); or `false`, having done nothing, where the
    /// kernel does not fuse it (the default): the caller then runs `forward` and a pass of
    /// its own. Fused, the values are bitwise those of that pass.
    fn forward_fused(
        &self,
        _x: &[T],
        _bias: Option<&[T]>,
        _epilogue: Epilogue<'_, T>,
        _y: &mut [T],
        _workspace: &mut [T],
    ) -> bool {
        false
    }
}

/// The backward pass of one convolution layer with its weights prepared.
pub trait ConvBackward<T>: Sync {
    /// Workspace elements one [`ConvBackward::backward_image`] call needs.
    fn workspace(&self) -> usize;

    /// Elements of the weight-gradient accumulator `backward_image` adds into.
    fn weight_grad_len(&self) -> usize;

    /// Whether [`ConvBackward::backward_image`] writes every element of `dx` whatever it
    /// held, so that `dx` need not be zeroed first.
    fn writes_every_input_grad(&self) -> bool {
        false
    }

    /// Images one [`ConvBackward::backward_images`] call takes at most (im2col shares its
    /// products between images with few output pixels, as in the forward pass).
    fn images_per_call(&self) -> usize {
        1
    }

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

    /// [`ConvBackward::backward_image`] for `imgs` consecutive images (at most
    /// [`ConvBackward::images_per_call`]): `dy`, `x` and `dx` hold all of theirs (`x` empty
    /// without `dw`). By default one image after the other.
    fn backward_images(
        &self,
        imgs: usize,
        dy: &[T],
        x: &[T],
        mut dx: Option<&mut [T]>,
        mut dw: Option<&mut [T]>,
        workspace: &mut [T],
    ) {
        let per = |len: usize| len / imgs.max(1);
        let (dy_len, x_len) = (per(dy.len()), per(x.len()));
        let dx_len = dx.as_ref().map_or(0, |d| per(d.len()));
        for i in 0..imgs {
            let dx_i = dx
                .as_deref_mut()
                .map(|d| &mut d[i * dx_len..(i + 1) * dx_len]);
            let x_i = &x[i * x_len..(i + 1) * x_len];
            let dy_i = &dy[i * dy_len..(i + 1) * dy_len];
            self.backward_image(dy_i, x_i, dx_i, dw.as_deref_mut(), workspace);
        }
    }

    /// The weight gradient `o × c × kh × kw` from the accumulator summed over the batch
    /// (Winograd accumulates in its transformed domain; the others already hold `dW`).
    fn finish_weight_grad(&self, summed: Vec<T>) -> Vec<T> {
        summed
    }
}
