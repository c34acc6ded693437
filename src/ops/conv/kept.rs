//! A layer's forward kernel, kept between the calls that record no gradient.
//!
//! Building a forward kernel prepares the weights: im2col's transposed copy, the implicit
//! GEMM's packed panels, Winograd's transformed tiles, the depthwise weights by tap. That is
//! serial work on the calling thread between two parallel sections, and the pool's other
//! workers fall asleep during it and must be woken for the next layer. In inference the
//! weights are the same from one call to the next, so a layer ([`crate::nn::Conv2d`], and
//! [`crate::nn::ConvBn`] with its folded weights) keeps the kernel it built. The key is the
//! weights' identity and in-place version (as for `ConvBn`'s fold) and everything else
//! the kernel was built for: the input's geometry, the outputs, the groups and the algorithm.
//! Weights trained, loaded or replaced, or an input of another size, give a new key, so
//! nothing goes stale. Where a gradient is recorded (training) nothing is kept: the weights
//! change every step.

use crate::kernels::conv::ConvForward;
use crate::kernels::Geometry;
use crate::tensor::{Element, TensorId};

use super::ConvAlgorithm;

/// What a kept kernel was built for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct KernelKey {
    /// The weights' identity and in-place version.
    pub weight: (TensorId, u64),
    pub geometry: Geometry,
    pub outputs: usize,
    pub groups: usize,
    pub algorithm: ConvAlgorithm,
}

/// A convolution layer's last forward kernel built without recording a gradient, and its
/// key (empty until then, and emptied when a call records one).
pub(crate) struct KeptKernel<T: Element> {
    kept: Option<(KernelKey, Box<dyn ConvForward<T>>)>,
    /// Kernels built (for the tests: a hit builds none).
    #[cfg(test)]
    builds: u64,
}

impl<T: Element> Default for KeptKernel<T> {
    fn default() -> Self {
        KeptKernel {
            kept: None,
            #[cfg(test)]
            builds: 0,
        }
    }
}

impl<T: Element> KeptKernel<T> {
    /// The kernel for `key`: the kept one if it was built for the same key, otherwise
    /// `build()`, kept in its place.
    pub(crate) fn get_or_build(
        &mut self,
        key: KernelKey,
        build: impl FnOnce() -> Box<dyn ConvForward<T>>,
    ) -> &dyn ConvForward<T> {
        if self.kept.as_ref().is_none_or(|(k, _)| *k != key) {
            // The old kernel goes first: its prepared weights need not outlive the key.
            self.kept = None;
            self.kept = Some((key, build()));
            #[cfg(test)]
            {
                self.builds += 1;
            }
        }
        &*self.kept.as_ref().expect("kept just above").1
    }

    /// Drops the kept kernel (its prepared weights' memory with it).
    pub(crate) fn clear(&mut self) {
        self.kept = None;
    }

    /// Whether a kernel is kept.
    #[cfg(test)]
    pub(crate) fn is_kept(&self) -> bool {
        self.kept.is_some()
    }

    /// How many kernels were built into this slot.
    #[cfg(test)]
    pub(crate) fn builds(&self) -> u64 {
        self.builds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autograd::no_grad;
    use crate::ops::conv::{Conv2dConfig, Then};
    use crate::Tensor;
    use rand::{rngs::StdRng, SeedableRng};

    fn normal(shape: &[usize], seed: u64) -> Tensor<f32> {
        Tensor::normal(shape, 0.0, 1.0, &mut StdRng::seed_from_u64(seed))
    }

    fn bits(t: &Tensor<f32>) -> Vec<u32> {
        t.to_vec().iter().map(|v| v.to_bits()).collect()
    }

    /// The layer `x ⋆ w + b`, then `then`, through `kept` (or through a fresh kernel).
    fn layer(
        (x, w, b): (&Tensor<f32>, &Tensor<f32>, &Tensor<f32>),
        cfg: Conv2dConfig,
        then: Then<'_, f32>,
        kept: Option<&mut KeptKernel<f32>>,
    ) -> crate::Result<Tensor<f32>> {
        x.conv2d_layer(w, Some(b), cfg, then, kept)
    }

    /// Every algorithm (grouped and depthwise layers too), each activation: through a kept
    /// kernel the values are bitwise those of a kernel built for the call, the first call
    /// builds the kernel and the next ones build none.
    #[test]
    fn a_kept_kernel_computes_what_a_fresh_one_does() {
        let mut checked = 0;
        for (c, o, k, stride, pad, groups, size) in [
            (3, 8, 3, 1, 1, 1, 9),
            (8, 16, 3, 1, 1, 1, 12),
            (8, 8, 3, 2, 1, 1, 9),
            (6, 10, 1, 1, 0, 1, 2),
            (4, 6, 5, 1, 0, 1, 11),
            (8, 8, 3, 1, 1, 8, 10),
            (8, 8, 3, 2, 1, 8, 7),
            (8, 12, 3, 1, 1, 4, 6),
        ] {
            let cfg = Conv2dConfig::new(stride, pad, 1).with_groups(groups);
            let seed = 10 * checked;
            let x = normal(&[3, c, size, size], seed);
            let w = normal(&[o, c / groups, k, k], seed + 1);
            let b = normal(&[o], seed + 2);
            let oh = (size + 2 * pad - k) / stride + 1;
            let skip = normal(&[3, o, oh, oh], seed + 3);
            for algorithm in [
                ConvAlgorithm::Auto,
                ConvAlgorithm::Im2col,
                ConvAlgorithm::ImplicitGemm,
                ConvAlgorithm::Direct,
                ConvAlgorithm::DirectRows,
                ConvAlgorithm::Winograd,
                ConvAlgorithm::WinogradF2,
                ConvAlgorithm::Depthwise,
            ] {
                let cfg = cfg.with_algorithm(algorithm);
                for then in [
                    Then::Nothing,
                    Then::Relu,
                    Then::Relu6,
                    Then::Add {
                        residual: &skip,
                        relu: true,
                    },
                ] {
                    let fresh = no_grad(|| layer((&x, &w, &b), cfg, then, None));
                    let Ok(fresh) = fresh else {
                        continue; // an algorithm that refuses this layer
                    };
                    let mut kept = KeptKernel::default();
                    for call in 1..=3 {
                        let got = no_grad(|| layer((&x, &w, &b), cfg, then, Some(&mut kept)));
                        assert_eq!(bits(&got.unwrap()), bits(&fresh), "{cfg:?}, call {call}");
                        assert_eq!(kept.builds(), 1, "{cfg:?}, call {call}");
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked >= 80, "only {checked} layers ran");
    }

    /// Weights changed in place or replaced, an input of another size, another algorithm:
    /// each builds a new kernel, whose values are those of a fresh one.
    #[test]
    fn the_kept_kernel_follows_the_weights_the_input_and_the_algorithm() {
        let mut w = normal(&[6, 4, 3, 3], 1);
        let b = normal(&[6], 2);
        let x = normal(&[2, 4, 8, 8], 3);
        let cfg = Conv2dConfig::new(1, 1, 1);
        let mut kept = KeptKernel::default();
        let mut call = |x: &Tensor<f32>, w: &Tensor<f32>, cfg: Conv2dConfig, builds: u64| {
            let got = no_grad(|| layer((x, w, &b), cfg, Then::Relu, Some(&mut kept))).unwrap();
            let fresh = no_grad(|| layer((x, w, &b), cfg, Then::Relu, None)).unwrap();
            assert_eq!(bits(&got), bits(&fresh));
            assert_eq!(kept.builds(), builds);
            bits(&got)
        };
        let first = call(&x, &w, cfg, 1);
        assert_eq!(call(&x, &w, cfg, 1), first);
        w.update_data(|v| v[0] += 1.0); // an optimizer's step: same tensor, new version
        let stepped = call(&x, &w, cfg, 2);
        assert_ne!(stepped, first);
        let replaced = normal(&[6, 4, 3, 3], 4); // a checkpoint loaded: another tensor
        assert_ne!(call(&x, &replaced, cfg, 3), stepped);
        let larger = normal(&[2, 4, 10, 10], 5);
        call(&larger, &replaced, cfg, 4);
        let implicit = cfg.with_algorithm(ConvAlgorithm::ImplicitGemm);
        call(&larger, &replaced, implicit, 5);
        call(&larger, &replaced, implicit, 5);
    }

    /// A call that records a gradient neither uses nor keeps a kernel, and drops the one
    /// kept before it; its gradient is the convolution's.
    #[test]
    fn a_call_that_records_a_gradient_keeps_nothing() {
        let w = normal(&[4, 3, 3, 3], 1).with_grad();
        let b = normal(&[4], 2);
        let x = normal(&[2, 3, 6, 6], 3);
        let cfg = Conv2dConfig::new(1, 1, 1);
        let mut kept = KeptKernel::default();
        no_grad(|| layer((&x, &w, &b), cfg, Then::Relu6, Some(&mut kept))).unwrap();
        assert!(kept.is_kept());
        let y = layer((&x, &w, &b), cfg, Then::Relu6, Some(&mut kept)).unwrap();
        assert!(!kept.is_kept());
        let want = x.conv2d(&w, Some(&b), cfg).unwrap().clamp(0.0, 6.0);
        assert_eq!(bits(&y), bits(&want));
        let g = y.sum_all().backward().unwrap();
        let g_want = want.sum_all().backward().unwrap();
        assert_eq!(bits(g.get(&w).unwrap()), bits(g_want.get(&w).unwrap()));
        assert_eq!(kept.builds(), 1);
    }
}
