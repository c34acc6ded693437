//! Where the AVX-512 rows kernels read their taps: from the shifted copies, or from the
//! image itself.
//!
//! In a stride-1 layer whose output rows are as wide as its input rows ("same" padding,
//! `ow = w`), output pixel `p = oh·w + ox` reads tap `(ki, kj)` at element `p + (ki −
//! ph)·w + kj − pw` of its channel: one offset for every pixel, as in a shifted copy. Only
//! the taps that fall in the padding differ, and there a copy holds zeros. A masked load
//! reads zeros in the lanes it leaves out and touches no memory there, so with the lanes
//! of every vector of pixels whose tap lies inside the image ([`InPlaceMasks`]) the kernels
//! read the image where it is, and the copies (memmove and `ShiftedImage::fill`, 10–18% of
//! a resnet20 step in perf) are not made. Strided layers and layers whose output rows
//! differ from the input's keep the copies.

#[cfg(target_arch = "x86_64")]
use super::ShiftedImage;
use super::LANES;
use crate::kernels::Geometry;

/// For a stride-1 layer with `ow = w`: which lanes of each vector of 16 output pixels
/// read a tap inside the image.
#[derive(Clone, Debug)]
pub(super) struct InPlaceMasks {
    g: Geometry,
    /// `masks[(v·kh + ki)·kw + kj]`: bit `i` set if pixel `16v + i` is an output pixel
    /// (`< p`) and its tap `(ki, kj)` lies inside the image.
    masks: Vec<u16>,
}

impl InPlaceMasks {
    /// The masks of layer `g`, or `None` if its taps cannot be read in place: strided or
    /// dilated layers, or output rows of another width than the input's.
    pub(super) fn new(g: &Geometry) -> Option<Self> {
        if g.stride != (1, 1) || g.dilation != (1, 1) || g.ow != g.w {
            return None;
        }
        let ((kh, kw), (ph, pw)) = (g.kernel, g.padding);
        let mut masks = vec![0u16; g.p().div_ceil(LANES) * kh * kw];
        for q in 0..g.p() {
            let (oh, ox) = (q / g.w, q % g.w);
            for ki in 0..kh {
                for kj in 0..kw {
                    let row = (oh + ki).checked_sub(ph).is_some_and(|r| r < g.h);
                    let column = (ox + kj).checked_sub(pw).is_some_and(|x| x < g.w);
                    if row && column {
                        masks[(q / LANES * kh + ki) * kw + kj] |= 1 << (q % LANES);
                    }
                }
            }
        }
        Some(InPlaceMasks { g: *g, masks })
    }

    /// The lanes of vector `v` (pixels `16v..16v + 16`) that read tap `(ki, kj)`: none
    /// past the last vector.
    #[inline(always)]
    fn mask(&self, v: usize, ki: usize, kj: usize) -> u16 {
        let (kh, kw) = self.g.kernel;
        self.masks
            .get((v * kh + ki) * kw + kj)
            .copied()
            .unwrap_or(0)
    }
}

/// Where the vector loads of tap `(ki, kj)` start and which of their lanes are read: what
/// the AVX-512 kernels need to know of their input.
#[cfg(target_arch = "x86_64")]
pub(super) trait Taps {
    /// Tap `(ki, kj)` of output pixel 0 in channel 0. It may lie outside the input: only
    /// the lanes of [`Taps::mask`] are read.
    fn origin(&self, ki: usize, kj: usize) -> *const f32;
    /// The distance from a channel's taps to the next channel's.
    fn channel_stride(&self) -> usize;
    /// The distance from tap column `kj` to `kj + 1`.
    fn column_stride(&self) -> usize;
    /// The lanes of vector `v` (pixels `16v..16v + 16`) read at tap `(ki, kj)`.
    fn mask(&self, v: usize, ki: usize, kj: usize) -> u16;
}

/// Taps read from the shifted copies of one image: every lane, the copies' slack
/// covering the last block.
#[cfg(target_arch = "x86_64")]
pub(super) struct ShiftedTaps<'a> {
    image: ShiftedImage,
    shifted: &'a [f32],
}

#[cfg(target_arch = "x86_64")]
impl<'a> ShiftedTaps<'a> {
    /// The copies `shifted` of an image of `image`'s layer.
    ///
    /// # Panics
    /// If `shifted` is shorter than the copies.
    pub(super) fn new(image: ShiftedImage, shifted: &'a [f32]) -> Self {
        assert!(shifted.len() >= image.len(), "shifted copies too short");
        ShiftedTaps { image, shifted }
    }
}

#[cfg(target_arch = "x86_64")]
impl Taps for ShiftedTaps<'_> {
    #[inline(always)]
    fn origin(&self, ki: usize, kj: usize) -> *const f32 {
        self.shifted[self.image.offset(0, ki, kj)..].as_ptr()
    }

    #[inline(always)]
    fn channel_stride(&self) -> usize {
        self.image.offset(1, 0, 0)
    }

    #[inline(always)]
    fn column_stride(&self) -> usize {
        self.image.offset(0, 0, 1) - self.image.offset(0, 0, 0)
    }

    #[inline(always)]
    fn mask(&self, _v: usize, _ki: usize, _kj: usize) -> u16 {
        u16::MAX
    }
}

/// Taps read from one image in place (`c·h·w` values), the padding's lanes masked off.
#[cfg(target_arch = "x86_64")]
pub(super) struct InPlaceTaps<'a> {
    masks: &'a InPlaceMasks,
    x: &'a [f32],
}

#[cfg(target_arch = "x86_64")]
impl<'a> InPlaceTaps<'a> {
    /// One image `x` of the masks' layer.
    ///
    /// # Panics
    /// If `x` is shorter than an image.
    pub(super) fn new(masks: &'a InPlaceMasks, x: &'a [f32]) -> Self {
        assert!(x.len() >= masks.g.chw(), "image too short");
        InPlaceTaps { masks, x }
    }
}

#[cfg(target_arch = "x86_64")]
impl Taps for InPlaceTaps<'_> {
    #[inline(always)]
    fn origin(&self, ki: usize, kj: usize) -> *const f32 {
        let g = &self.masks.g;
        // Wrapping: before the image's start for the top rows' and left columns' taps,
        // whose lanes there are masked off.
        self.x
            .as_ptr()
            .wrapping_add(ki * g.w + kj)
            .wrapping_sub(g.padding.0 * g.w + g.padding.1)
    }

    #[inline(always)]
    fn channel_stride(&self) -> usize {
        self.masks.g.h * self.masks.g.w
    }

    #[inline(always)]
    fn column_stride(&self) -> usize {
        1
    }

    #[inline(always)]
    fn mask(&self, v: usize, ki: usize, kj: usize) -> u16 {
        self.masks.mask(v, ki, kj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The masks against the definition of a tap inside the image, for a 3×3 "same"
    /// layer on 5 × 7 pixels (35: two full vectors and a partial one).
    #[test]
    fn masks_keep_the_taps_inside_the_image() {
        let g = Geometry::new(2, (5, 7), (3, 3), (1, 1), (1, 1), (1, 1)).unwrap();
        let m = InPlaceMasks::new(&g).expect("a same layer reads in place");
        for v in 0..4 {
            for (ki, kj) in (0..3).flat_map(|ki| (0..3).map(move |kj| (ki, kj))) {
                for lane in 0..LANES {
                    let q = v * LANES + lane;
                    let (r, x) = ((q / 7 + ki) as isize - 1, (q % 7 + kj) as isize - 1);
                    let inside = q < 35 && (0..5).contains(&r) && (0..7).contains(&x);
                    assert_eq!(m.mask(v, ki, kj) >> lane & 1 == 1, inside, "{v} {ki} {kj}");
                }
            }
        }
        let strided = Geometry::new(2, (5, 7), (3, 3), (2, 2), (1, 1), (1, 1)).unwrap();
        let valid = Geometry::new(2, (5, 7), (3, 3), (1, 1), (0, 0), (1, 1)).unwrap();
        assert!(InPlaceMasks::new(&strided).is_none() && InPlaceMasks::new(&valid).is_none());
    }
}
