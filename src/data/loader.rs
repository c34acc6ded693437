//! Turning a [`Dataset`] into normalised, optionally augmented, seeded mini-batches.

use super::Dataset;
use crate::tensor::Tensor;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Per-channel mean and standard deviation of pixel values scaled to `[0, 1]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Standard deviation per channel (1 for a constant channel: centred, not scaled).
    pub std: Vec<f32>,
    /// Channels constant over the training set (standard deviation below
    /// [`MIN_CHANNEL_STD`]): dividing by their deviation would multiply every other
    /// image's differences by a million, so they are only centred. A run warns about them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constant_channels: Vec<usize>,
}

/// The smallest per-channel standard deviation (of pixels scaled to `[0, 1]`) a training
/// set may have and still be scaled by it: a quarter of one grey level of 255.
pub const MIN_CHANNEL_STD: f64 = 0.25 / 255.0;

impl Normalization {
    /// The statistics of a (training) set.
    pub fn of(data: &Dataset) -> Self {
        let [c, h, w] = data.shape;
        let plane = h * w;
        let mut sum = vec![0f64; c];
        let mut sq = vec![0f64; c];
        for img in data.pixels.chunks(c * plane) {
            for ch in 0..c {
                for &p in &img[ch * plane..(ch + 1) * plane] {
                    let v = p as f64 / 255.0;
                    sum[ch] += v;
                    sq[ch] += v * v;
                }
            }
        }
        let n = (data.len() * plane).max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let std: Vec<f64> = sq
            .iter()
            .zip(&mean)
            .map(|(s, m)| (s / n - m * m).max(0.0).sqrt())
            .collect();
        let constant_channels: Vec<usize> =
            (0..c).filter(|&ch| std[ch] < MIN_CHANNEL_STD).collect();
        Normalization {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std: std
                .iter()
                .map(|&s| if s < MIN_CHANNEL_STD { 1.0 } else { s as f32 })
                .collect(),
            constant_channels,
        }
    }

    /// A sentence for each constant channel, for a run's warnings (none when there are none).
    pub fn warnings(&self) -> Vec<String> {
        self.constant_channels
            .iter()
            .map(|&ch| {
                format!(
                    "channel {ch} of the training images is constant (value {:.4}, standard \
                     deviation below {MIN_CHANNEL_STD:.2e}): it is centred but not scaled, and \
                     carries no information to learn from",
                    self.mean[ch]
                )
            })
            .collect()
    }
}

/// Training-time augmentation: random crop after zero padding, random horizontal flip.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Augment {
    /// Zero padding on each side before a random crop back to the original size (0: none).
    pub crop_padding: usize,
    /// Flip horizontally with probability 1/2.
    pub hflip: bool,
}

/// The mini-batches of one epoch: a seeded permutation (or the natural order), cut into
/// batches of `batch_size` (the last one may be smaller).
pub struct Batches<'a> {
    data: &'a Dataset,
    order: Vec<usize>,
    batch_size: usize,
    next: usize,
    norm: &'a Normalization,
    augment: Augment,
    rng: StdRng,
}

impl<'a> Batches<'a> {
    /// Batches of `data` for `epoch`; `shuffle_seed` seeds the permutation and the
    /// augmentation of that epoch (so a resumed run sees the same batches).
    pub fn new(
        data: &'a Dataset,
        batch_size: usize,
        shuffle_seed: Option<u64>,
        epoch: usize,
        norm: &'a Normalization,
        augment: Augment,
    ) -> Self {
        let mut order: Vec<usize> = (0..data.len()).collect();
        let seed = shuffle_seed.unwrap_or(0) ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = StdRng::seed_from_u64(seed);
        if shuffle_seed.is_some() {
            order.shuffle(&mut rng);
        }
        Batches {
            data,
            order,
            batch_size: batch_size.max(1),
            next: 0,
            norm,
            augment,
            rng,
        }
    }

    /// Number of batches in the epoch.
    pub fn len(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    /// Whether the epoch has no batches.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Writes image `i`, normalised and augmented, into `out` (`c·h·w` floats).
    fn write_image(&mut self, i: usize, out: &mut [f32]) {
        let [c, h, w] = self.data.shape;
        let img = &self.data.pixels[i * c * h * w..(i + 1) * c * h * w];
        let pad = self.augment.crop_padding as isize;
        let (dy, dx) = if pad > 0 {
            (
                self.rng.random_range(-pad as i64..=pad as i64) as isize,
                self.rng.random_range(-pad as i64..=pad as i64) as isize,
            )
        } else {
            (0, 0)
        };
        let flip = self.augment.hflip && self.rng.random::<bool>();
        for ch in 0..c {
            let (m, s) = (self.norm.mean[ch], 1.0 / self.norm.std[ch]);
            // Padding is black in pixel space, as torchvision's RandomCrop.
            let zero = (0.0 - m) * s;
            for y in 0..h {
                let sy = y as isize + dy;
                let row = &mut out[(ch * h + y) * w..(ch * h + y + 1) * w];
                if sy < 0 || sy >= h as isize {
                    row.fill(zero);
                    continue;
                }
                let src = &img[(ch * h + sy as usize) * w..(ch * h + sy as usize + 1) * w];
                for (x, o) in row.iter_mut().enumerate() {
                    let xx = if flip { w - 1 - x } else { x } as isize + dx;
                    *o = if xx < 0 || xx >= w as isize {
                        zero
                    } else {
                        (src[xx as usize] as f32 / 255.0 - m) * s
                    };
                }
            }
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = (Tensor<f32>, Vec<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let idx: Vec<usize> = self.order[self.next..end].to_vec();
        self.next = end;
        let size = self.data.image_size();
        let mut x = vec![0f32; idx.len() * size];
        for (slot, &i) in x.chunks_mut(size).zip(&idx) {
            self.write_image(i, slot);
        }
        let [c, h, w] = self.data.shape;
        let labels = idx.iter().map(|&i| self.data.labels[i]).collect();
        let x = Tensor::from_vec(x, &[idx.len(), c, h, w]).expect("sized to the batch");
        Some((x, labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> Dataset {
        Dataset {
            pixels: (0..n * 4).map(|i| (i % 256) as u8).collect(),
            labels: (0..n).map(|i| i % 3).collect(),
            shape: [1, 2, 2],
            classes: 3,
            class_names: super::super::numbered_classes(3),
        }
    }

    #[test]
    fn epochs_are_seeded_permutations_covering_everything() {
        let d = toy(10);
        let norm = Normalization {
            mean: vec![0.0],
            std: vec![1.0],
            constant_channels: vec![],
        };
        let a: Vec<usize> = Batches::new(&d, 4, Some(1), 0, &norm, Augment::default())
            .flat_map(|b| b.1)
            .collect();
        let b: Vec<usize> = Batches::new(&d, 4, Some(1), 0, &norm, Augment::default())
            .flat_map(|b| b.1)
            .collect();
        assert_eq!(a, b);
        let firsts = |e| {
            Batches::new(&d, 4, Some(1), e, &norm, Augment::default())
                .next()
                .unwrap()
                .0
                .to_vec()
        };
        assert_ne!(firsts(0), firsts(1), "each epoch has its own order");
        let sizes: Vec<usize> = Batches::new(&d, 4, Some(1), 0, &norm, Augment::default())
            .map(|b| b.1.len())
            .collect();
        assert_eq!(sizes, vec![4, 4, 2]);
        let mut counts = [0; 3];
        a.iter().for_each(|&l| counts[l] += 1);
        assert_eq!(counts, [4, 3, 3]);
    }

    #[test]
    fn a_constant_channel_is_centred_not_scaled_by_a_million() {
        // Channel 0 constant (grey 100), channel 1 varies.
        let d = Dataset {
            pixels: vec![100, 100, 100, 100, 0, 255, 0, 255],
            labels: vec![0],
            shape: [2, 2, 2],
            classes: 1,
            class_names: vec!["a".into()],
        };
        let norm = Normalization::of(&d);
        assert_eq!(norm.constant_channels, vec![0]);
        assert_eq!(norm.std[0], 1.0);
        assert!((norm.std[1] - 0.5).abs() < 1e-6);
        let warnings = norm.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("channel 0 of the training images is constant"));
        // A test image one grey level away is one grey level away, not 10⁶/255.
        let other = Dataset {
            pixels: vec![101, 101, 101, 101, 0, 255, 0, 255],
            ..d.clone()
        };
        let x = Batches::new(&other, 1, None, 0, &norm, Augment::default())
            .next()
            .unwrap()
            .0
            .to_vec();
        assert!((x[0] - 1.0 / 255.0).abs() < 1e-6, "{x:?}");
        assert_eq!(Normalization::of(&other).warnings().len(), 1);
        // Round trip through JSON; a record without the field reads as none.
        let json = serde_json::to_string(&norm).unwrap();
        assert_eq!(serde_json::from_str::<Normalization>(&json).unwrap(), norm);
        let old: Normalization = serde_json::from_str(r#"{"mean":[0.5],"std":[0.5]}"#).unwrap();
        assert!(old.constant_channels.is_empty());
    }

    #[test]
    fn normalisation_and_flip() {
        let d = Dataset {
            pixels: vec![0, 255, 0, 255],
            labels: vec![0],
            shape: [1, 2, 2],
            classes: 1,
            class_names: vec!["a".into()],
        };
        let norm = Normalization::of(&d);
        assert!((norm.mean[0] - 0.5).abs() < 1e-6 && (norm.std[0] - 0.5).abs() < 1e-6);
        let x = Batches::new(&d, 1, None, 0, &norm, Augment::default())
            .next()
            .unwrap()
            .0
            .to_vec();
        assert_eq!(x, vec![-1.0, 1.0, -1.0, 1.0]);
        // With flips on, some epoch flips the image.
        let aug = Augment {
            crop_padding: 0,
            hflip: true,
        };
        let flipped = (0..20).any(|e| {
            Batches::new(&d, 1, Some(3), e, &norm, aug)
                .next()
                .unwrap()
                .0
                .to_vec()
                == vec![1.0, -1.0, 1.0, -1.0]
        });
        assert!(flipped);
        // Crops shift the image by at most the padding and fill with black.
        let aug = Augment {
            crop_padding: 1,
            hflip: false,
        };
        for e in 0..10 {
            let v = Batches::new(&d, 1, Some(5), e, &norm, aug)
                .next()
                .unwrap()
                .0
                .to_vec();
            assert!(v.iter().all(|&p| p == -1.0 || p == 1.0));
        }
    }
}
