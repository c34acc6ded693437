//! The IDX format of MNIST (and Fashion-MNIST, KMNIST): big-endian header, magic
//! `0x0000_08NN` for unsigned bytes with `NN` dimensions, then the sizes, then the data.
//! Files may be gzip-compressed (`.gz`); checksums in `SHA256SUMS.uncompressed` beside
//! them are verified when present.

use super::{numbered_classes, DataError, Dataset, Split};
use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The contents of an IDX file.
#[derive(Debug)]
pub struct IdxFile {
    /// Size of every dimension.
    pub dims: Vec<usize>,
    /// The data after the header.
    pub data: Vec<u8>,
    /// The whole (decompressed) file, as checksummed.
    pub raw: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes, checking that the data is exactly as long as the
/// dimensions say.
pub fn read_idx(path: &Path) -> Result<IdxFile, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::io(path, e))?;
        out
    } else {
        raw
    };
    let (dims, data) = parse_idx(path, &bytes)?;
    let data = data.to_vec();
    Ok(IdxFile {
        dims,
        data,
        raw: bytes,
    })
}

fn parse_idx<'a>(path: &Path, bytes: &'a [u8]) -> Result<(Vec<usize>, &'a [u8]), DataError> {
    let truncated = |expected: u64| DataError::Truncated {
        path: path.to_path_buf(),
        expected,
        found: bytes.len() as u64,
    };
    if bytes.len() < 4 {
        return Err(truncated(4));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let ndim = (magic & 0xff) as usize;
    if magic & 0xffff_ff00 != 0x0000_0800 || ndim == 0 {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found: magic,
            expected: "0x000008NN (unsigned bytes, NN dimensions)".into(),
        });
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(truncated(header as u64));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| {
            let o = 4 + 4 * d;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let size = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let Some(size) = size else {
        return Err(DataError::inconsistent(
            path,
            format!("dimensions {dims:?} overflow"),
        ));
    };
    let expected = header as u64 + size;
    let found = bytes.len() as u64;
    if found < expected {
        return Err(truncated(expected));
    }
    if found > expected {
        return Err(DataError::inconsistent(
            path,
            format!("dimensions {dims:?} need {expected} bytes but the file has {found}"),
        ));
    }
    Ok((dims, &bytes[header..]))
}

/// Recorded SHA-256 sums (`<hex>  <name>` lines), if the directory has the file.
fn checksums(dir: &Path) -> Result<Option<HashMap<String, String>>, DataError> {
    let path = dir.join("SHA256SUMS.uncompressed");
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
    let map = text
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((
                it.nth(1)?.to_string(),
                l.split_whitespace().next()?.to_lowercase(),
            ))
        })
        .collect();
    Ok(Some(map))
}

/// `name` or `name.gz` in `dir`.
fn find(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    for candidate in [dir.join(name), dir.join(format!("{name}.gz"))] {
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(DataError::io(
        &dir.join(name),
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file (also tried .gz)",
        ),
    ))
}

fn load_part(
    dir: &Path,
    sums: &Option<HashMap<String, String>>,
    prefix: &str,
) -> Result<Dataset, DataError> {
    let read = |name: String| -> Result<(PathBuf, Vec<usize>, Vec<u8>), DataError> {
        let path = find(dir, &name)?;
        let IdxFile { dims, data, raw } = read_idx(&path)?;
        if let Some(expected) = sums.as_ref().and_then(|s| s.get(&name)) {
            let found: String = Sha256::digest(&raw)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if &found != expected {
                return Err(DataError::Checksum {
                    path,
                    expected: expected.clone(),
                    found,
                });
            }
        }
        Ok((path, dims, data))
    };
    let (ipath, idims, pixels) = read(format!("{prefix}-images-idx3-ubyte"))?;
    let (lpath, ldims, labels) = read(format!("{prefix}-labels-idx1-ubyte"))?;
    if idims.len() != 3 {
        return Err(DataError::inconsistent(
            &ipath,
            format!("images need 3 dimensions, found {idims:?}"),
        ));
    }
    if ldims.len() != 1 || ldims[0] != idims[0] {
        return Err(DataError::inconsistent(
            &lpath,
            format!(
                "{:?} labels for {} images in {}",
                ldims,
                idims[0],
                ipath.display()
            ),
        ));
    }
    let labels: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let classes = labels.iter().max().map_or(0, |m| m + 1).max(10);
    Ok(Dataset {
        pixels,
        labels,
        shape: [1, idims[1], idims[2]],
        classes,
        class_names: numbered_classes(classes),
    })
}

/// Loads `train-*` and `t10k-*` IDX files from `dir` (plain or `.gz`), verifying them
/// against `SHA256SUMS.uncompressed` when the directory has one.
pub fn load_idx_dir(dir: &Path) -> Result<Split, DataError> {
    let sums = checksums(dir)?;
    let mut train = load_part(dir, &sums, "train")?;
    let mut test = load_part(dir, &sums, "t10k")?;
    let classes = train.classes.max(test.classes);
    for d in [&mut train, &mut test] {
        d.classes = classes;
        d.class_names = numbered_classes(classes);
    }
    Ok(Split { train, test })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b.extend(data);
        b
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    #[test]
    fn reads_plain_and_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = idx_bytes(&[2, 2, 3], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let p = write(dir.path(), "a", &bytes);
        let f = read_idx(&p).unwrap();
        assert_eq!((f.dims, f.data.len()), (vec![2, 2, 3], 12));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        let p = write(dir.path(), "a.gz", &gz.finish().unwrap());
        assert_eq!(read_idx(&p).unwrap().data[11], 12);
    }

    #[test]
    fn wrong_magic_truncation_and_extra_bytes_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = idx_bytes(&[2], &[1, 2]);
        bad[2] = 9;
        let p = write(dir.path(), "magic", &bad);
        let e = read_idx(&p).unwrap_err();
        assert!(
            matches!(e, DataError::BadMagic { .. }) && e.to_string().contains("magic"),
            "{e}"
        );
        let p = write(dir.path(), "short", &idx_bytes(&[5, 2], &[1, 2, 3]));
        let e = read_idx(&p).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::Truncated {
                    expected: 22,
                    found: 15,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("short"));
        let p = write(dir.path(), "long", &idx_bytes(&[1], &[1, 2]));
        assert!(matches!(
            read_idx(&p).unwrap_err(),
            DataError::Inconsistent { .. }
        ));
        let p = write(dir.path(), "tiny", &[0, 0]);
        assert!(matches!(
            read_idx(&p).unwrap_err(),
            DataError::Truncated { .. }
        ));
        assert!(matches!(
            read_idx(&dir.path().join("missing")).unwrap_err(),
            DataError::Io { .. }
        ));
    }

    fn write_split(dir: &Path, n_train_labels: u32) {
        write(
            dir,
            "train-images-idx3-ubyte",
            &idx_bytes(&[3, 2, 2], &[0; 12]),
        );
        write(
            dir,
            "train-labels-idx1-ubyte",
            &idx_bytes(&[n_train_labels], &vec![1; n_train_labels as usize]),
        );
        write(
            dir,
            "t10k-images-idx3-ubyte",
            &idx_bytes(&[1, 2, 2], &[9; 4]),
        );
        write(dir, "t10k-labels-idx1-ubyte", &idx_bytes(&[1], &[7]));
    }

    #[test]
    fn directory_counts_must_agree_and_checksums_must_match() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), 3);
        let s = load_idx_dir(dir.path()).unwrap();
        assert_eq!(
            (s.train.len(), s.test.len(), s.train.shape),
            (3, 1, [1, 2, 2])
        );
        write_split(dir.path(), 2);
        let e = load_idx_dir(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("train-labels-idx1-ubyte") && e.contains("3 images"),
            "{e}"
        );
        write_split(dir.path(), 3);
        let sums = "0000000000000000000000000000000000000000000000000000000000000000  t10k-labels-idx1-ubyte\n";
        write(dir.path(), "SHA256SUMS.uncompressed", sums.as_bytes());
        let e = load_idx_dir(dir.path()).unwrap_err();
        assert!(
            matches!(e, DataError::Checksum { .. }) && e.to_string().contains("t10k-labels"),
            "{e}"
        );
    }

    #[test]
    fn bundled_mnist_verifies() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/mnist");
        let s = load_idx_dir(&dir).unwrap();
        assert_eq!(
            (s.train.len(), s.test.len(), s.train.shape),
            (60000, 10000, [1, 28, 28])
        );
        assert_eq!(
            s.train.class_counts(),
            vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
        );
        assert_eq!(
            s.test.class_counts(),
            vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
        );
    }
}
