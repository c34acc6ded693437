//! A convolution's configuration, its shape checks and geometry, and the choice of the
//! algorithm that computes it (each behind the kernels' per-image interface).

use crate::error::{Result, TensorError};
use crate::kernels::conv::depthwise::Depthwise;
use crate::kernels::conv::direct::Direct;
use crate::kernels::conv::direct_rows::{self, DirectRowsBackward, DirectRowsForward};
use crate::kernels::conv::grouped::{
    group_geometry, group_weights, GroupedBackward, GroupedForward,
};
use crate::kernels::conv::im2col::{Im2colBackward, Im2colForward, BACKWARD_GROUP_MAX_PIXELS};
use crate::kernels::conv::implicit::ImplicitGemmForward;
use crate::kernels::conv::implicit_backward::ImplicitGemmBackward;
use crate::kernels::conv::winograd::{
    self, Winograd4Forward, Winograd4SmallForward, WinogradBackward, WinogradForward,
};
use crate::kernels::conv::TransposedInputGrad;
use crate::kernels::conv::{ConvBackward, ConvForward};
use crate::kernels::microkernel::NR;
use crate::kernels::microkernel::{has_avx2, has_avx512};
use crate::kernels::{Element, Geometry};
use std::borrow::Cow;

/// Stride, padding and dilation of a convolution (vertical, horizontal), its channel
/// groups, and the algorithm that computes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    /// Step between output pixels.
    pub stride: (usize, usize),
    /// Zeros added on each side.
    pub padding: (usize, usize),
    /// Spacing between kernel taps.
    pub dilation: (usize, usize),
    /// Channel groups: input and output channels split into this many equal parts, each
    /// output group convolving only its input group (weights `o × c/groups × kh × kw`).
    /// 1 is a dense convolution; `groups = c_in` a depthwise one.
    pub groups: usize,
    /// How the convolution is computed.
    pub algorithm: ConvAlgorithm,
}

/// How a convolution is computed; every algorithm gives the same result up to rounding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// For f32: Winograd where it applies and pays
    /// ([`ConvAlgorithm::auto_prefers_winograd`]), the rows kernels for other layers and
    /// Winograd's with few channels on AVX-512 CPUs, for first and strided layers on AVX2
    /// ones ([`ConvAlgorithm::auto_prefers_rows`]; there a first layer whose columns the
    /// implicit GEMM reads in place runs forward by it, see
    /// [`Conv2dConfig::forward_algorithm_for`]), otherwise the implicit GEMM for maps of
    /// at least 16 output pixels and im2col for smaller ones (whose images share one
    /// product). For f64: im2col, whose GEMM (matrixmultiply's dgemm) has vector code for
    /// f64, which the micro-kernel under Winograd and the implicit GEMM lacks (on a
    /// LeNet-sized layer im2col took 26 ms where the implicit GEMM took 60). Depthwise
    /// convolutions by the depthwise kernel, in both.
    #[default]
    Auto,
    /// im2col + GEMM: any kernel, stride, padding and dilation.
    Im2col,
    /// Forward by implicit GEMM ([`kernels::conv::implicit`](crate::kernels::conv::implicit):
    /// columns gathered per block of 16 pixels, weights packed once), backward by im2col for dW and the
    /// micro-kernel for dX (with `Wᵀ` packed once): any geometry.
    ImplicitGemm,
    /// Undilated layers summed directly in registers
    /// ([`kernels::conv::direct_rows`](crate::kernels::conv::direct_rows): the output's
    /// rows laid end to end, 8 channels × 32 or 48 pixels at a time on AVX-512, 4 × 16 or
    /// 24 on AVX2, from copies of the image shifted by each tap column), any kernel,
    /// stride, channel count and map size (an error for dilated layers). `Auto` takes it
    /// on AVX-512 CPUs for layers outside Winograd's reach (first layers, LeNet's 5×5
    /// conv2, resnet20's stride-2 3×3 layers) and for Winograd's layers with few channels
    /// on large maps, on AVX2 CPUs for first and strided layers
    /// ([`ConvAlgorithm::auto_prefers_rows`]). Backward:
    /// first layers by the rows kernels (dW as dot products over the pixels, dX as the
    /// transposed layer's rows forward, or the implicit GEMM's for strided layers); deeper
    /// stride-1 3×3 layers dX the same, dW by Winograd; others as
    /// [`ConvAlgorithm::ImplicitGemm`].
    DirectRows,
    /// Winograd F(4×4, 3×3) for 3×3 kernels, stride 1, no dilation, padding ≤ 2 (an error
    /// for other geometries): forward, dX and dW with 2.25 multiplications per output.
    /// Its f32 error is about 5× F(2×2)'s (1–2e-6 of the largest output on resnet's
    /// layers, against 2–4e-7): [`ConvAlgorithm::WinogradF2`] when that matters.
    Winograd,
    /// Winograd F(2×2, 3×3): the same geometries as [`ConvAlgorithm::Winograd`], 4
    /// multiplications per output, the smaller rounding error.
    WinogradF2,
    /// The definition in plain loops ([`kernels::conv::direct`](crate::kernels::conv::direct)):
    /// any geometry, slow; the reference the others are tested against.
    Direct,
    /// Depthwise convolutions (`groups = c_in = c_out`) by sliding each channel's filter
    /// over its plane ([`kernels::conv::depthwise`](crate::kernels::conv::depthwise)); an
    /// error for other convolutions.
    Depthwise,
}

/// Input channels from which [`ConvAlgorithm::Auto`] picks Winograd. Its GEMMs have the
/// channels as inner dimension; with 3 (an RGB first layer) they are too thin to pay for
/// the transforms. Measured on cifar-cnn's conv1 (batch 128, 1 thread, same run, 3
/// rounds): forward 9.2–10.0 ms by Winograd against 6.5–7.0 ms by im2col, forward + dW
/// 21.5–30.3 against 14.1–16.1 ms.
const WINOGRAD_MIN_CHANNELS: usize = 16;

/// Layers Winograd computes go by the rows kernels instead (on AVX-512 CPUs) when the map
/// has at least [`ROWS_MIN_PIXELS_OVER_WINOGRAD`] pixels and `c_in · c_out · pixels` is at
/// most this: 16 × 16 channels on 32 × 32 maps. Winograd's transforms cost per channel and
/// its 36 products are as deep as the channels, so with few channels its time goes to the
/// transforms. Measured forward / backward, batch 128, 1 thread, same run (ms for all of a
/// network's layers of that shape, rows against F(4×4)): resnet20's 16→16 on 32×32
/// 29.5–30.2 / 75.9–78.7 against 29.9–31.6 / 89.0–90.1 (Intel Xeon, 2026-12-07).
/// Winograd keeps resnet20's 32→32 on 16×16, which went by rows until Winograd's
/// small-map kernels grew faster: 18.1–18.5 / 50.5–51.4 against rows' 22.9–23.3 /
/// 53.2–60.8 (2 threads: 9.6–11.2 / 27.3–27.9 against 11.7–16.8 / 27.8–38.2); and
/// cifar-cnn's 32→32 on 32×32 and the deeper layers on smaller maps.
const ROWS_MAX_CHANNELS_BY_PIXELS: usize = 16 * 16 * 32 * 32;

/// See [`ROWS_MAX_CHANNELS_BY_PIXELS`].
const ROWS_MIN_PIXELS_OVER_WINOGRAD: usize = 32 * 32;

impl ConvAlgorithm {
    /// Whether `Auto` runs a convolution of geometry `g` with `c_out` outputs by Winograd:
    /// when Winograd supports it and both channel counts reach 16.
    pub fn auto_prefers_winograd(g: &Geometry, c_out: usize) -> bool {
        winograd::supports(g) && g.c >= WINOGRAD_MIN_CHANNELS && c_out >= WINOGRAD_MIN_CHANNELS
    }

    /// Whether `Auto` runs a dense convolution of geometry `g` with `c_out` outputs by the
    /// rows kernels: an undilated layer ([`direct_rows::supports`]) with a kernel larger
    /// than 1×1 and at least 16 output pixels, and
    /// - on an AVX-512 CPU, unless Winograd takes it
    ///   ([`ConvAlgorithm::auto_prefers_winograd`]) and has the channels to pay for its
    ///   transforms: more than 16 × 16 of them on 32 × 32 maps, or a map under 32 × 32
    ///   pixels;
    /// - on an AVX2 CPU (4 channels × 24 pixels of accumulators, not 8 × 48), only
    ///   outside Winograd's reach, and there for first layers (at most
    ///   [`direct_rows::DOT_GRAD_MAX_TAPS`] taps) and strided layers. Measured against the
    ///   implicit GEMM (AMD EPYC, batch 128 or 64, 1 thread, forward / backward ms): resnet20's
    ///   3→16 3.2 / 2.0 against 3.8 / 7.8, its 16→32/2 6.5 / 14.2 against 8.6 / 16.5 and
    ///   32→64/2 5.4 / 11.7 against 6.1 / 11.8, LeNet's conv1 1.0 / 0.6 against 0.9 / 1.9;
    ///   LeNet's conv2 keeps the implicit GEMM (3.1 / 7.2 against 2.8 / 7.3) and resnet20's
    ///   16→16 and 32→32 Winograd (9.5 / 19.5 against 8.3 / 16.7, 8.8 / 14.9 against
    ///   6.1 / 11.6).
    pub fn auto_prefers_rows(g: &Geometry, c_out: usize) -> bool {
        if g.kernel == (1, 1) || g.p() < NR || !direct_rows::supports(g) {
            return false;
        }
        if has_avx512() {
            let rows_over_winograd = g.p() >= ROWS_MIN_PIXELS_OVER_WINOGRAD
                && g.c * c_out * g.p() <= ROWS_MAX_CHANNELS_BY_PIXELS;
            return rows_over_winograd || !Self::auto_prefers_winograd(g, c_out);
        }
        has_avx2()
            && !Self::auto_prefers_winograd(g, c_out)
            && (g.k() <= direct_rows::DOT_GRAD_MAX_TAPS || g.stride != (1, 1))
    }

    /// The algorithms of the forward and the backward pass of a layer of geometry `g`
    /// with `c_out` outputs in `groups` groups: both [`ConvAlgorithm::resolve`]'s, except
    /// that `Auto`'s rows layers whose columns the implicit GEMM reads in place on this CPU
    /// (stride 1, no padding, output rows of whole 8-pixel halves, no AVX-512: LeNet's
    /// conv1) run forward by the implicit GEMM and backward by rows. Measured on LeNet's
    /// conv1 (AMD EPYC Zen 3, batch 64, 1 thread, same run): forward 1.02 ms by rows
    /// against 0.55 by the implicit GEMM in place (0.9 gathered); backward 0.6 by rows
    /// against 1.9 by the implicit GEMM's.
    pub(super) fn resolve_passes(
        self,
        g: &Geometry,
        c_out: usize,
        groups: usize,
        vector_kernels: bool,
    ) -> Result<(ConvAlgorithm, ConvAlgorithm)> {
        let backward = self.resolve(g, c_out, groups, vector_kernels)?;
        let forward = if self == ConvAlgorithm::Auto
            && backward == ConvAlgorithm::DirectRows
            && ImplicitGemmForward::<f32>::reads_in_place_here(g)
        {
            ConvAlgorithm::ImplicitGemm
        } else {
            backward
        };
        Ok((forward, backward))
    }

    /// The algorithm this choice runs geometry `g` (all input channels) with `c_out`
    /// outputs in `groups` groups by — never `Auto`; an error if Winograd or the depthwise
    /// kernel was asked for a convolution it cannot compute. `Auto` runs depthwise
    /// convolutions by the depthwise kernel, other grouped ones by im2col per group, and
    /// every other one by im2col unless `vector_kernels` (the element type is f32, which
    /// the micro-kernel has vector code for).
    pub(super) fn resolve(
        self,
        g: &Geometry,
        c_out: usize,
        groups: usize,
        vector_kernels: bool,
    ) -> Result<ConvAlgorithm> {
        let depthwise = groups > 1 && groups == g.c && c_out == g.c;
        match self {
            ConvAlgorithm::Auto if depthwise => Ok(ConvAlgorithm::Depthwise),
            ConvAlgorithm::Auto if !vector_kernels => Ok(ConvAlgorithm::Im2col),
            ConvAlgorithm::Auto if groups == 1 && Self::auto_prefers_rows(g, c_out) => {
                Ok(ConvAlgorithm::DirectRows)
            }
            ConvAlgorithm::Auto if groups == 1 && Self::auto_prefers_winograd(g, c_out) => {
                Ok(ConvAlgorithm::Winograd)
            }
            ConvAlgorithm::Auto if g.p() >= NR => Ok(ConvAlgorithm::ImplicitGemm),
            ConvAlgorithm::DirectRows if direct_rows::supports(g) => Ok(self),
            ConvAlgorithm::DirectRows => Err(TensorError::InvalidArgument {
                op: "conv2d",
                reason: format!(
                    "the rows kernels need dilation 1, not {:?}",
                    g.dilation
                ),
            }),
            ConvAlgorithm::Auto => Ok(ConvAlgorithm::Im2col),
            ConvAlgorithm::Depthwise if depthwise => Ok(ConvAlgorithm::Depthwise),
            ConvAlgorithm::Depthwise => Err(TensorError::InvalidArgument {
                op: "conv2d",
                reason: format!(
                    "the depthwise kernel needs groups = input channels = output channels, not groups {groups} with {} inputs and {c_out} outputs",
                    g.c
                ),
            }),
            ConvAlgorithm::Winograd | ConvAlgorithm::WinogradF2 if groups > 1 => {
                Err(TensorError::InvalidArgument {
                    op: "conv2d",
                    reason: format!(
                        "Winograd computes dense convolutions only, not {groups} groups"
                    ),
                })
            }
            ConvAlgorithm::Winograd | ConvAlgorithm::WinogradF2 if winograd::supports(g) => {
                Ok(self)
            }
            ConvAlgorithm::Winograd | ConvAlgorithm::WinogradF2 => Err(TensorError::InvalidArgument {
                op: "conv2d",
                reason: format!(
                    "Winograd needs a 3×3 kernel, stride 1, dilation 1 and padding ≤ 2, not kernel {:?}, stride {:?}, dilation {:?}, padding {:?}",
                    g.kernel, g.stride, g.dilation, g.padding
                ),
            }),
            other => Ok(other),
        }
    }
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
            algorithm: ConvAlgorithm::Auto,
        }
    }
}

impl Conv2dConfig {
    /// Square stride, padding and dilation.
    pub fn new(stride: usize, padding: usize, dilation: usize) -> Self {
        Conv2dConfig {
            stride: (stride, stride),
            padding: (padding, padding),
            dilation: (dilation, dilation),
            groups: 1,
            algorithm: ConvAlgorithm::Auto,
        }
    }

    /// The same configuration with the channels in `groups` groups (`groups = c_in`:
    /// depthwise).
    ///
    /// ```
    /// use tensorgrad::ops::conv::{ConvAlgorithm, Conv2dConfig};
    /// use tensorgrad::Tensor;
    ///
    /// let depthwise = Conv2dConfig::new(1, 1, 1).with_groups(4);
    /// // Weights `o × c/groups × kh × kw`: one 3×3 filter per channel.
    /// let w = Tensor::<f32>::ones(&[4, 1, 3, 3]);
    /// let y = Tensor::<f32>::ones(&[2, 4, 5, 5]).conv2d(&w, None, depthwise)?;
    /// assert_eq!(y.shape(), &[2, 4, 5, 5]);
    /// assert_eq!(y.to_vec()[6], 9.0); // an inner pixel sums its 3×3 window
    /// assert_eq!(depthwise.algorithm_for(&[2, 4, 5, 5], &[4, 1, 3, 3])?, ConvAlgorithm::Depthwise);
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn with_groups(self, groups: usize) -> Self {
        Conv2dConfig { groups, ..self }
    }

    /// The same configuration computed by `algorithm`.
    pub fn with_algorithm(self, algorithm: ConvAlgorithm) -> Self {
        Conv2dConfig { algorithm, ..self }
    }

    /// The algorithm a convolution of an f32 `input` (NCHW) with a `weight` shape runs by
    /// under this configuration: `Auto` resolved to [`ConvAlgorithm::Winograd`],
    /// [`ConvAlgorithm::DirectRows`], [`ConvAlgorithm::ImplicitGemm`], [`ConvAlgorithm::Im2col`] or
    /// [`ConvAlgorithm::Depthwise`], any other choice as given (f64 tensors run `Auto`'s
    /// dense choices by im2col: see [`ConvAlgorithm::Auto`]).
    /// ```
    /// use tensorgrad::ops::conv::{ConvAlgorithm, Conv2dConfig};
    ///
    /// let same = Conv2dConfig::new(1, 1, 1);
    /// assert_eq!(same.algorithm_for(&[8, 32, 16, 16], &[64, 32, 3, 3])?, ConvAlgorithm::Winograd);
    /// // An RGB first layer: too few input channels for Winograd to pay; summed by rows
    /// // where the CPU has AVX-512, by the implicit GEMM elsewhere.
    /// let first = same.algorithm_for(&[8, 3, 32, 32], &[32, 3, 3, 3])?;
    /// assert!(matches!(first, ConvAlgorithm::DirectRows | ConvAlgorithm::ImplicitGemm));
    /// // A strided layer: by rows on AVX-512 CPUs too, by the implicit GEMM elsewhere.
    /// let strided = Conv2dConfig::new(2, 1, 1).algorithm_for(&[8, 16, 32, 32], &[32, 16, 3, 3])?;
    /// assert!(matches!(strided, ConvAlgorithm::DirectRows | ConvAlgorithm::ImplicitGemm));
    /// // A dilated one: the implicit GEMM.
    /// let dilated = Conv2dConfig::new(1, 2, 2);
    /// assert_eq!(dilated.algorithm_for(&[8, 16, 32, 32], &[32, 16, 3, 3])?, ConvAlgorithm::ImplicitGemm);
    /// // A 1×1 layer on a 2×2 map: its images share one im2col product.
    /// assert_eq!(Conv2dConfig::default().algorithm_for(&[8, 64, 2, 2], &[96, 64, 1, 1])?, ConvAlgorithm::Im2col);
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn algorithm_for(&self, input: &[usize], weight: &[usize]) -> Result<ConvAlgorithm> {
        let g = conv_geometry(input, weight, None, *self)?;
        self.algorithm.resolve(&g, weight[0], self.groups, true)
    }

    /// The algorithm the forward pass of such a convolution runs by: the one
    /// [`Conv2dConfig::algorithm_for`] gives, which the backward pass runs by, except that
    /// `Auto` runs a first layer whose columns the implicit GEMM reads in place (stride 1,
    /// no padding, output rows a multiple of 8 pixels) forward by it on CPUs without
    /// AVX-512, and backward by rows.
    /// ```
    /// use tensorgrad::ops::conv::{ConvAlgorithm, Conv2dConfig};
    ///
    /// // LeNet's conv1: 24×24 outputs, three 8-pixel halves a row.
    /// let lenet = Conv2dConfig::default();
    /// let forward = lenet.forward_algorithm_for(&[64, 1, 28, 28], &[20, 1, 5, 5])?;
    /// let backward = lenet.algorithm_for(&[64, 1, 28, 28], &[20, 1, 5, 5])?;
    /// assert!(forward == backward || forward == ConvAlgorithm::ImplicitGemm);
    /// // Chosen algorithms run both passes.
    /// let rows = lenet.with_algorithm(ConvAlgorithm::DirectRows);
    /// assert_eq!(rows.forward_algorithm_for(&[64, 1, 28, 28], &[20, 1, 5, 5])?, ConvAlgorithm::DirectRows);
    /// # Ok::<(), tensorgrad::TensorError>(())
    /// ```
    pub fn forward_algorithm_for(
        &self,
        input: &[usize],
        weight: &[usize],
    ) -> Result<ConvAlgorithm> {
        let g = conv_geometry(input, weight, None, *self)?;
        Ok(self
            .algorithm
            .resolve_passes(&g, weight[0], self.groups, true)?
            .0)
    }
}

impl ConvAlgorithm {
    /// The forward kernel of a resolved algorithm for a layer of geometry `g` with the
    /// `o × c × kh × kw` weights `w`: borrowed for one call, or owned (`'static`) for a
    /// kernel a layer keeps ([`super::kept`]).
    pub(super) fn forward_kernel<'a, T: Element>(
        self,
        g: &Geometry,
        o: usize,
        groups: usize,
        w: Cow<'a, [T]>,
    ) -> Box<dyn ConvForward<T> + 'a> {
        if self == ConvAlgorithm::Depthwise {
            return Box::new(Depthwise::new(g, w));
        }
        if groups > 1 {
            let gg = group_geometry(g, groups);
            return Box::new(GroupedForward::new(g, o, groups, |k| {
                let part = match &w {
                    Cow::Borrowed(w) => Cow::Borrowed(group_weights(w, groups, k)),
                    Cow::Owned(w) => Cow::Owned(group_weights(w, groups, k).to_vec()),
                };
                self.forward_kernel(&gg, o / groups, 1, part)
            }));
        }
        // Direct keeps the weights as given; the others prepare a copy of their own.
        match self {
            ConvAlgorithm::Direct => Box::new(Direct::new(g, o, w)),
            ConvAlgorithm::Winograd if winograd::f4::prefers(g) => {
                Box::new(Winograd4Forward::new(g, o, &w))
            }
            ConvAlgorithm::Winograd => Box::new(Winograd4SmallForward::new(g, o, &w)),
            ConvAlgorithm::WinogradF2 => Box::new(WinogradForward::new(g, o, &w)),
            ConvAlgorithm::ImplicitGemm => Box::new(ImplicitGemmForward::new(g, o, &w)),
            ConvAlgorithm::DirectRows => Box::new(DirectRowsForward::new(g, o, &w)),
            ConvAlgorithm::Im2col | ConvAlgorithm::Auto | ConvAlgorithm::Depthwise => {
                Box::new(Im2colForward::new(g, o, &w))
            }
        }
    }

    /// The backward kernel of a resolved algorithm; `w` is empty when no input gradient
    /// is wanted.
    pub(super) fn backward_kernel<'a, T: Element>(
        self,
        g: &Geometry,
        o: usize,
        groups: usize,
        w: &'a [T],
    ) -> Box<dyn ConvBackward<T> + 'a> {
        if self == ConvAlgorithm::Depthwise {
            return Box::new(Depthwise::new(g, w));
        }
        if groups > 1 {
            let gg = group_geometry(g, groups);
            return Box::new(GroupedBackward::new(g, o, groups, |k| {
                self.backward_kernel(&gg, o / groups, 1, group_weights(w, groups, k))
            }));
        }
        match self {
            ConvAlgorithm::Winograd => Box::new(WinogradBackward::new(g, o, w)),
            ConvAlgorithm::WinogradF2 => Box::new(WinogradBackward::f2(g, o, w)),
            ConvAlgorithm::Direct => Box::new(Direct::new(g, o, w)),
            ConvAlgorithm::DirectRows => rows_backward(g, o, w),
            // Small maps keep im2col's products shared between images.
            ConvAlgorithm::ImplicitGemm if g.p() > BACKWARD_GROUP_MAX_PIXELS => {
                Box::new(ImplicitGemmBackward::new(g, o, w))
            }
            ConvAlgorithm::Im2col
            | ConvAlgorithm::ImplicitGemm
            | ConvAlgorithm::Auto
            | ConvAlgorithm::Depthwise => Box::new(Im2colBackward::new(g, o, w)),
        }
    }
}

/// The backward kernel of a layer whose forward pass runs by rows (`w` empty when no
/// input gradient is wanted): first layers (at most [`direct_rows::DOT_GRAD_MAX_TAPS`]
/// input taps) and layers with few channels (at most
/// [`direct_rows::DOT_GRAD_MAX_CHANNEL_PAIRS`]) entirely by the rows kernels; other 3×3
/// layers with dX by the rows forward of the transposed layer and dW by Winograd's
/// F(4×4) transforms; the rest by the implicit GEMM's backward. Measured (batch 128 or 64,
/// 1 thread, same run): the rows kernels' dW took 58.8 ms on cifar-cnn's 64→64 against
/// Winograd's 31.3 and 11.4 on LeNet's conv2 against the implicit GEMM's 7.1 (before
/// their chunks, below); LeNet's conv2 with dX by the transposed layer's rows forward and
/// dW by the implicit GEMM took 9.2–10.1 ms against the implicit GEMM's 7.0–7.1 for both.
/// With dW summed by chunks of 512 pixels, resnet20's 16→16 backward took 86–80 ms
/// against 88–90 with Winograd's dW, its 16→32/2 15.4–15.8 against the implicit GEMM's
/// 16.4–19.2, but its 32→64/2 15.0 against 11.4–11.9.
fn rows_backward<'a, T: Element>(
    g: &Geometry,
    o: usize,
    w: &'a [T],
) -> Box<dyn ConvBackward<T> + 'a> {
    if g.k() <= direct_rows::DOT_GRAD_MAX_TAPS || g.c * o <= direct_rows::DOT_GRAD_MAX_CHANNEL_PAIRS
    {
        return Box::new(DirectRowsBackward::new(g, o, w));
    }
    if !winograd::supports(g) {
        return if g.p() > BACKWARD_GROUP_MAX_PIXELS {
            Box::new(ImplicitGemmBackward::new(g, o, w))
        } else {
            Box::new(Im2colBackward::new(g, o, w))
        };
    }
    match DirectRowsForward::transposed(g, o, w) {
        Some(f) => Box::new(TransposedInputGrad {
            weight_grad: Box::new(WinogradBackward::new(g, o, &[])),
            input_grad: Box::new(f),
        }),
        None => Box::new(WinogradBackward::new(g, o, w)),
    }
}

/// Checks the shapes of a convolution and works out its geometry.
pub(super) fn conv_geometry(
    x: &[usize],
    w: &[usize],
    b: Option<&[usize]>,
    cfg: Conv2dConfig,
) -> Result<Geometry> {
    let mismatch = |rhs: &[usize]| TensorError::ShapeMismatch {
        op: "conv2d",
        lhs: x.to_vec(),
        rhs: rhs.to_vec(),
    };
    if cfg.groups == 0 {
        return Err(TensorError::InvalidArgument {
            op: "conv2d",
            reason: "groups must be at least 1".into(),
        });
    }
    // Weights `o × c/groups × kh × kw`, and `o` a multiple of the groups too.
    if x.len() != 4 || w.len() != 4 || x[1] != w[1] * cfg.groups || !w[0].is_multiple_of(cfg.groups)
    {
        return Err(mismatch(w));
    }
    if let Some(b) = b {
        if b != [w[0]] {
            return Err(mismatch(b));
        }
    }
    let positive = [
        cfg.stride.0,
        cfg.stride.1,
        cfg.dilation.0,
        cfg.dilation.1,
        w[0],
        w[1],
        w[2],
        w[3],
    ];
    if positive.contains(&0) {
        return Err(TensorError::InvalidArgument {
            op: "conv2d",
            reason: format!("stride, dilation, channels and kernel size must be positive: {cfg:?}, kernel {w:?}"),
        });
    }
    let oh = Geometry::out_size(x[2], w[2], cfg.stride.0, cfg.padding.0, cfg.dilation.0);
    let ow = Geometry::out_size(x[3], w[3], cfg.stride.1, cfg.padding.1, cfg.dilation.1);
    let (Some(oh), Some(ow)) = (oh, ow) else {
        return Err(TensorError::InvalidShape {
            op: "conv2d",
            shape: x.to_vec(),
            reason: format!("kernel {:?} with {cfg:?} does not fit the input", &w[2..]),
        });
    };
    Ok(Geometry {
        c: x[1],
        h: x[2],
        w: x[3],
        kernel: (w[2], w[3]),
        stride: cfg.stride,
        padding: cfg.padding,
        dilation: cfg.dilation,
        oh,
        ow,
    })
}
