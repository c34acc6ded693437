//! Grouped convolution: the channels split into `groups` equal parts, output group `k`
//! the dense convolution of input group `k` alone. Any per-image kernel computes one
//! group; [`GroupedForward`] and [`GroupedBackward`] run one per group on the image's
//! channel slices (channels are whole planes in NCHW, so a group is a contiguous run).
//! With the direct kernel inside, this *is* the definition of a grouped convolution,
//! the reference the depthwise kernel is tested against.

use super::{ConvBackward, ConvForward};
use crate::kernels::{Element, Geometry};

/// The geometry of one group of a convolution over `g.c` channels in `groups` groups.
pub fn group_geometry(g: &Geometry, groups: usize) -> Geometry {
    Geometry {
        c: g.c / groups,
        ..*g
    }
}

/// The weights of group `k` of `o × (c/groups) × kh × kw` weights (empty stays empty).
pub fn group_weights<T>(w: &[T], groups: usize, k: usize) -> &[T] {
    if w.is_empty() {
        return w;
    }
    let per = w.len() / groups;
    &w[k * per..(k + 1) * per]
}

/// A forward pass by one kernel per group.
pub struct GroupedForward<'a, T> {
    parts: Vec<Box<dyn ConvForward<T> + 'a>>,
    /// Elements of one group's input (`c/groups × h × w`) and output (`o/groups × oh × ow`).
    x_len: usize,
    y_len: usize,
    outputs_per_group: usize,
}

impl<'a, T: Element> GroupedForward<'a, T> {
    /// Group `k` of geometry `g` (all `g.c` channels) with `o` outputs is computed by
    /// `part(k)`, a kernel built for [`group_geometry`] and `o / groups` outputs.
    pub fn new(
        g: &Geometry,
        o: usize,
        groups: usize,
        part: impl Fn(usize) -> Box<dyn ConvForward<T> + 'a>,
    ) -> Self {
        let gg = group_geometry(g, groups);
        GroupedForward {
            parts: (0..groups).map(part).collect(),
            x_len: gg.chw(),
            y_len: o / groups * g.p(),
            outputs_per_group: o / groups,
        }
    }
}

impl<T: Element> ConvForward<T> for GroupedForward<'_, T> {
    fn workspace(&self) -> usize {
        self.parts.iter().map(|p| p.workspace()).max().unwrap_or(0)
    }

    fn forward(&self, x: &[T], bias: Option<&[T]>, y: &mut [T], workspace: &mut [T]) {
        let groups = self.parts.len();
        let (x_img, y_img) = (groups * self.x_len, groups * self.y_len);
        for (x_i, y_i) in x.chunks_exact(x_img).zip(y.chunks_exact_mut(y_img)) {
            for (k, part) in self.parts.iter().enumerate() {
                let opg = self.outputs_per_group;
                part.forward(
                    &x_i[k * self.x_len..(k + 1) * self.x_len],
                    bias.map(|b| &b[k * opg..(k + 1) * opg]),
                    &mut y_i[k * self.y_len..(k + 1) * self.y_len],
                    workspace,
                );
            }
        }
    }
}

/// A backward pass by one kernel per group.
pub struct GroupedBackward<'a, T> {
    parts: Vec<Box<dyn ConvBackward<T> + 'a>>,
    x_len: usize,
    y_len: usize,
}

impl<'a, T: Element> GroupedBackward<'a, T> {
    /// As [`GroupedForward::new`], for the backward kernels.
    pub fn new(
        g: &Geometry,
        o: usize,
        groups: usize,
        part: impl Fn(usize) -> Box<dyn ConvBackward<T> + 'a>,
    ) -> Self {
        let gg = group_geometry(g, groups);
        GroupedBackward {
            parts: (0..groups).map(part).collect(),
            x_len: gg.chw(),
            y_len: o / groups * g.p(),
        }
    }
}

impl<T: Element> ConvBackward<T> for GroupedBackward<'_, T> {
    fn workspace(&self) -> usize {
        self.parts.iter().map(|p| p.workspace()).max().unwrap_or(0)
    }

    fn weight_grad_len(&self) -> usize {
        self.parts.iter().map(|p| p.weight_grad_len()).sum()
    }

    fn backward_image(
        &self,
        dy: &[T],
        x: &[T],
        mut dx: Option<&mut [T]>,
        mut dw: Option<&mut [T]>,
        workspace: &mut [T],
    ) {
        let mut dw_at = 0;
        for (k, part) in self.parts.iter().enumerate() {
            let dw_len = part.weight_grad_len();
            let x_k = if x.is_empty() {
                x
            } else {
                &x[k * self.x_len..(k + 1) * self.x_len]
            };
            part.backward_image(
                &dy[k * self.y_len..(k + 1) * self.y_len],
                x_k,
                dx.as_deref_mut()
                    .map(|d| &mut d[k * self.x_len..(k + 1) * self.x_len]),
                dw.as_deref_mut().map(|d| &mut d[dw_at..dw_at + dw_len]),
                workspace,
            );
            dw_at += dw_len;
        }
    }

    fn finish_weight_grad(&self, summed: Vec<T>) -> Vec<T> {
        let mut out = Vec::with_capacity(summed.len());
        let mut at = 0;
        for part in &self.parts {
            let len = part.weight_grad_len();
            out.extend(part.finish_weight_grad(summed[at..at + len].to_vec()));
            at += len;
        }
        out
    }
}
