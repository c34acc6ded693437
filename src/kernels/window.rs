//! The geometry of a sliding window over an image, shared by convolution and pooling: input and output sizes, kernel, stride, padding, dilation.

/// Sizes of one image's convolution (or pooling) problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Kernel height and width.
    pub kernel: (usize, usize),
    /// Stride (vertical, horizontal).
    pub stride: (usize, usize),
    /// Zero padding (vertical, horizontal).
    pub padding: (usize, usize),
    /// Dilation (vertical, horizontal).
    pub dilation: (usize, usize),
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl Geometry {
    /// The geometry of a window of `kernel` over `c` channels of `h × w`, or `None` if
    /// the (dilated) kernel does not fit the padded input. Sizes must be positive.
    pub fn new(
        c: usize,
        (h, w): (usize, usize),
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        dilation: (usize, usize),
    ) -> Option<Self> {
        Some(Geometry {
            c,
            h,
            w,
            kernel,
            stride,
            padding,
            dilation,
            oh: Self::out_size(h, kernel.0, stride.0, padding.0, dilation.0)?,
            ow: Self::out_size(w, kernel.1, stride.1, padding.1, dilation.1)?,
        })
    }

    /// Output size along one axis, or `None` if the (dilated) kernel does not fit.
    pub fn out_size(
        input: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        dil: usize,
    ) -> Option<usize> {
        let span = dil * (kernel - 1) + 1;
        (input + 2 * pad >= span).then(|| (input + 2 * pad - span) / stride + 1)
    }

    /// Rows of the column matrix: `c·kh·kw`.
    pub fn k(&self) -> usize {
        self.c * self.kernel.0 * self.kernel.1
    }

    /// Columns of the column matrix: output pixels `oh·ow`.
    pub fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Elements of one input image.
    pub fn chw(&self) -> usize {
        self.c * self.h * self.w
    }
}

#[cfg(test)]
mod tests {
    use super::Geometry;

    #[test]
    fn output_sizes_with_stride_padding_and_dilation() {
        // PyTorch: floor((n + 2p − d(k−1) − 1)/s) + 1.
        assert_eq!(Geometry::out_size(28, 5, 1, 0, 1), Some(24));
        assert_eq!(Geometry::out_size(7, 3, 2, 1, 1), Some(4));
        assert_eq!(Geometry::out_size(8, 3, 3, 0, 1), Some(2));
        assert_eq!(Geometry::out_size(9, 3, 1, 0, 2), Some(5));
        assert_eq!(Geometry::out_size(2, 5, 1, 1, 1), None);
    }
}
