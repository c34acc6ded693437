//! Data sets (IDX/MNIST, CIFAR binary, image folders), normalisation, augmentation,
//! imbalance builders and seeded batching.

mod cifar;
mod folder;
mod idx;
pub mod imbalance;
mod loader;

pub use cifar::{load_cifar10, load_cifar100};
/// Byte-level entry points of the readers (used by the fuzz targets in `fuzz/`).
pub mod parse {
    pub use super::cifar::{empty as empty_cifar, parse_records as parse_cifar_records};
    pub use super::folder::{decode_image_bytes, to_pixels};
    pub use super::idx::{read_idx_from, Capacity};
}
pub use folder::load_image_folder;
pub use idx::{load_idx_dir, read_idx, IdxFile};
pub use loader::{Augment, Batches, Normalization, MIN_CHANNEL_STD};

use std::path::{Path, PathBuf};
use thiserror::Error;

/// Largest height or width of an image any loader accepts (a limit checked before any
/// pixel is decoded or allocated).
pub const MAX_IMAGE_SIDE: usize = 4096;

/// Checks an image shape `[c, h, w]` read from `path`: no zero dimension, at most 4
/// channels, sides within [`MAX_IMAGE_SIDE`].
pub(crate) fn check_image_shape(path: &Path, shape: [usize; 3]) -> Result<(), DataError> {
    let [c, h, w] = shape;
    if c == 0 || h == 0 || w == 0 || c > 4 || h > MAX_IMAGE_SIDE || w > MAX_IMAGE_SIDE {
        return Err(DataError::inconsistent(
            path,
            format!(
                "image shape {shape:?} is not supported (every size ≥ 1, at most 4 channels and {MAX_IMAGE_SIDE} pixels a side)"
            ),
        ));
    }
    Ok(())
}

/// Checks that every class `0..classes` has at least one training image: labels are
/// class indices, and a gap (a label of 200 among ten digits) is an error rather than a
/// silently larger problem.
pub(crate) fn check_classes_present(path: &Path, train: &Dataset) -> Result<(), DataError> {
    let counts = train.class_counts();
    if let Some(empty) = counts.iter().position(|&n| n == 0) {
        return Err(DataError::inconsistent(
            path,
            format!(
                "class {empty} ({}) has no training image; labels must be 0..{} with every class present",
                train.class_names[empty],
                train.classes
            ),
        ));
    }
    Ok(())
}

/// Why a data set could not be loaded; every variant names the file.
#[derive(Debug, Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The header does not start with the expected magic number.
    #[error("{path}: bad magic number {found:#010x} (expected {expected})")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// What was read.
        found: u32,
        /// What was expected, in words.
        expected: String,
    },
    /// Fewer bytes than the header or the record size promise.
    #[error("{path}: truncated: expected {expected} bytes, found {found}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header promises.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// Sizes that disagree (image and label counts, extra bytes, record multiples).
    #[error("{path}: {reason}")]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// What disagrees.
        reason: String,
    },
    /// A bundled file whose SHA-256 does not match its recorded checksum.
    #[error("{path}: checksum mismatch: expected {expected}, got {found}")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The recorded SHA-256.
        expected: String,
        /// The SHA-256 of the file's (decompressed) contents.
        found: String,
    },
    /// An imbalance profile that does not fit the data set.
    #[error("imbalance profile {0}")]
    Imbalance(String),
    /// A data set that needs a directory was given none.
    #[error("data set {0}: no data directory given")]
    NoDirectory(String),
    /// A training or test set left with no image, or a class left with no training image,
    /// by the files or by the run's options (`--train-limit` after an imbalance profile).
    #[error("{0}")]
    Empty(String),
    /// An image that cannot be decoded.
    #[error("{path}: {reason}")]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's complaint.
        reason: String,
    },
}

impl DataError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn inconsistent(path: &Path, reason: impl Into<String>) -> Self {
        DataError::Inconsistent {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// A labelled image data set held as 8-bit pixels, NCHW, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Pixels of all images, `len · c · h · w` bytes.
    pub pixels: Vec<u8>,
    /// Label of every image.
    pub labels: Vec<usize>,
    /// Image shape `[c, h, w]`.
    pub shape: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// Class names, in label order.
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn image_size(&self) -> usize {
        self.shape.iter().product()
    }

    /// Images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let size = self.image_size();
        let mut pixels = Vec::with_capacity(indices.len() * size);
        for &i in indices {
            pixels.extend_from_slice(&self.pixels[i * size..(i + 1) * size]);
        }
        Dataset {
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            ..self.clone_meta()
        }
    }

    /// An empty data set with this one's shape and classes.
    fn clone_meta(&self) -> Dataset {
        Dataset {
            pixels: Vec::new(),
            labels: Vec::new(),
            shape: self.shape,
            classes: self.classes,
            class_names: self.class_names.clone(),
        }
    }
}

/// A training and a test set.
#[derive(Clone, Debug)]
pub struct Split {
    /// Training images.
    pub train: Dataset,
    /// Test images.
    pub test: Dataset,
}

/// Default class names `"0"`, `"1"`, ….
pub(crate) fn numbered_classes(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}
