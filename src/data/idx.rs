//! The IDX format of MNIST (and Fashion-MNIST, KMNIST): big-endian header, magic
//! `0x0000_08NN` for unsigned bytes with `NN` dimensions, then the sizes, then the data.
//! Files may be gzip-compressed (`.gz`); checksums in `SHA256SUMS.uncompressed` beside
//! them are verified when present.

use super::{numbered_classes, DataError, Dataset, Split};
use flate2::read::MultiGzDecoder;
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
    /// SHA-256 of the whole (decompressed) file, as `SHA256SUMS.uncompressed` records it.
    pub sha256: [u8; 32],
}

/// The most a deflate stream can expand (its format caps the ratio near 1032:1): a gzip
/// file whose header promises more than this many bytes per compressed byte is refused
/// before anything is allocated.
const GZIP_MAX_EXPANSION: u64 = 1100;

/// Reads an IDX file of unsigned bytes (plain or gzip), checking that the data is exactly
/// as long as the dimensions say. The header is never trusted: the promised size must fit
/// in what the file on disk can hold, and the data is read incrementally, stopping at the
/// promised size, so a forged header or a gzip bomb costs no more memory than the file's
/// real contents.
pub fn read_idx(path: &Path) -> Result<IdxFile, DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let on_disk = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    let mut peek = std::io::BufReader::new(file);
    let gzip = {
        use std::io::BufRead;
        let buf = peek.fill_buf().map_err(|e| DataError::io(path, e))?;
        buf.len() >= 2 && buf[..2] == [0x1f, 0x8b]
    };
    if gzip {
        let capacity = Capacity::Gzip(on_disk.saturating_mul(GZIP_MAX_EXPANSION));
        // Every member, as gunzip reads them: a corrupt later member is found, not ignored.
        read_idx_from(path, MultiGzDecoder::new(peek), capacity)
    } else {
        read_idx_from(path, peek, Capacity::Plain(on_disk))
    }
}

/// How many bytes a source can deliver at most.
#[derive(Clone, Copy, Debug)]
pub enum Capacity {
    /// Exactly this many (an uncompressed file).
    Plain(u64),
    /// At most this many (the largest expansion of a compressed file).
    Gzip(u64),
}

/// Reads IDX bytes from `reader`, which can deliver at most `capacity` bytes.
pub fn read_idx_from(
    path: &Path,
    mut reader: impl Read,
    capacity: Capacity,
) -> Result<IdxFile, DataError> {
    let mut hasher = Sha256::new();
    let gzip = matches!(capacity, Capacity::Gzip(_));
    // A decoder's complaint about its input is corruption of the compressed file, not an
    // I/O failure.
    let failed = |e: std::io::Error| -> DataError {
        let corrupt = matches!(
            e.kind(),
            std::io::ErrorKind::InvalidData
                | std::io::ErrorKind::InvalidInput
                | std::io::ErrorKind::UnexpectedEof
        );
        if gzip && corrupt {
            DataError::inconsistent(path, format!("corrupt or truncated gzip data: {e}"))
        } else {
            DataError::io(path, e)
        }
    };
    let mut read_exact = |buf: &mut [u8], so_far: u64| -> Result<(), DataError> {
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(DataError::Truncated {
                        path: path.to_path_buf(),
                        expected: so_far + buf.len() as u64,
                        found: so_far + filled as u64,
                    })
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(failed(e)),
            }
        }
        Ok(())
    };
    let mut magic = [0u8; 4];
    read_exact(&mut magic, 0)?;
    let magic_value = u32::from_be_bytes(magic);
    let ndim = (magic_value & 0xff) as usize;
    if magic_value & 0xffff_ff00 != 0x0000_0800 || ndim == 0 {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found: magic_value,
            expected: "0x000008NN (unsigned bytes, NN dimensions)".into(),
        });
    }
    let mut dim_bytes = vec![0u8; 4 * ndim];
    read_exact(&mut dim_bytes, 4)?;
    let dims: Vec<usize> = dim_bytes
        .chunks(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let header = 4 + 4 * ndim as u64;
    let size = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .and_then(|s| s.checked_add(header));
    let Some(expected) = size else {
        return Err(DataError::inconsistent(
            path,
            format!("dimensions {dims:?} overflow"),
        ));
    };
    match capacity {
        Capacity::Plain(len) if expected > len => {
            return Err(DataError::Truncated {
                path: path.to_path_buf(),
                expected,
                found: len,
            })
        }
        Capacity::Gzip(max) if expected > max => {
            return Err(DataError::inconsistent(
                path,
                format!(
                    "dimensions {dims:?} need {expected} bytes, more than this gzip file can expand to ({max})"
                ),
            ))
        }
        _ => {}
    }
    hasher.update(magic);
    hasher.update(&dim_bytes);
    // Read in chunks, growing the buffer only as data arrives.
    let body = (expected - header) as usize;
    let mut data = Vec::with_capacity(body.min(1 << 20));
    let mut chunk = vec![0u8; 1 << 16];
    while data.len() < body {
        let want = chunk.len().min(body - data.len());
        read_exact(&mut chunk[..want], header + data.len() as u64)?;
        data.extend_from_slice(&chunk[..want]);
    }
    hasher.update(&data);
    let mut extra = [0u8; 1];
    match reader.read(&mut extra) {
        Ok(0) => {}
        Ok(_) => {
            // A compressed stream that goes on may be a corrupt one: decode the rest (at
            // most what the file can expand to) so that its checksum speaks first.
            if gzip {
                let limit = match capacity {
                    Capacity::Gzip(max) | Capacity::Plain(max) => max,
                };
                std::io::copy(&mut reader.by_ref().take(limit), &mut std::io::sink())
                    .map_err(failed)?;
            }
            return Err(DataError::inconsistent(
                path,
                format!("dimensions {dims:?} need {expected} bytes but the file has more"),
            ));
        }
        Err(e) => return Err(failed(e)),
    }
    Ok(IdxFile {
        dims,
        data,
        sha256: hasher.finalize().into(),
    })
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
) -> Result<(PathBuf, Dataset), DataError> {
    let read = |name: String| -> Result<(PathBuf, Vec<usize>, Vec<u8>), DataError> {
        let path = find(dir, &name)?;
        let IdxFile { dims, data, sha256 } = read_idx(&path)?;
        if let Some(expected) = sums.as_ref().and_then(|s| s.get(&name)) {
            let found: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
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
    super::check_image_shape(&ipath, [1, idims[1], idims[2]])?;
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
    Ok((
        lpath,
        Dataset {
            pixels,
            labels,
            shape: [1, idims[1], idims[2]],
            classes,
            class_names: numbered_classes(classes),
        },
    ))
}

/// Loads `train-*` and `t10k-*` IDX files from `dir` (plain or `.gz`), verifying them
/// against `SHA256SUMS.uncompressed` when the directory has one.
pub fn load_idx_dir(dir: &Path) -> Result<Split, DataError> {
    let sums = checksums(dir)?;
    let (train_labels, mut train) = load_part(dir, &sums, "train")?;
    let (_, mut test) = load_part(dir, &sums, "t10k")?;
    let classes = train.classes.max(test.classes);
    for d in [&mut train, &mut test] {
        d.classes = classes;
        d.class_names = numbered_classes(classes);
    }
    // Fewer than ten classes may be absent (a subset of the digits); beyond ten, every
    // class must be present, or a stray label would silently create empty classes.
    if classes > 10 {
        super::check_classes_present(&train_labels, &train)?;
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
    fn corrupt_gzip_is_reported_as_corruption_in_every_member() {
        let dir = tempfile::tempdir().unwrap();
        let gz = |bytes: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        };
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7 % 256) as u8).collect();
        let bytes = idx_bytes(&[200], &data);
        // Two members (as `cat a.gz b.gz` makes) are one file, as gunzip reads it.
        let (head, tail) = bytes.split_at(100);
        let mut two = gz(head);
        two.extend(gz(tail));
        let p = write(dir.path(), "two.gz", &two);
        assert_eq!(read_idx(&p).unwrap().data, data);
        // A corrupt second member (its checksum flipped, then its data) is corruption.
        let first = gz(head).len();
        let second_crc = two.len() - 8;
        for at in [second_crc, first + 12] {
            let mut bad = two.clone();
            bad[at] ^= 0x55;
            let p = write(dir.path(), "bad.gz", &bad);
            let e = read_idx(&p).unwrap_err();
            assert!(e.to_string().contains("gzip data"), "byte {at}: {e}");
        }
        // Garbage after a complete member, and a member whose data decodes to more bytes
        // than the header needs with a wrong checksum: corruption, not "has more".
        let one = gz(&bytes);
        let mut trailing = one.clone();
        trailing.extend([0x1f, 0x8b, 8, 0, 1, 2, 3]);
        let p = write(dir.path(), "trailing.gz", &trailing);
        let e = read_idx(&p).unwrap_err();
        assert!(e.to_string().contains("gzip data"), "{e}");
        let mut longer = gz(&[&bytes[..], &[9; 50]].concat());
        let crc = longer.len() - 8;
        longer[crc] ^= 1;
        let p = write(dir.path(), "longer.gz", &longer);
        let e = read_idx(&p).unwrap_err();
        assert!(e.to_string().contains("gzip data"), "{e}");
        // A valid stream that holds more than the header needs is still "has more".
        let p = write(dir.path(), "more.gz", &gz(&[&bytes[..], &[9; 50]].concat()));
        let e = read_idx(&p).unwrap_err();
        assert!(e.to_string().contains("has more"), "{e}");
        // A flipped byte of a one-member file is an error, or (where deflate's encoding has
        // slack, e.g. a code length of an unused symbol) the very same data: the checksum
        // never lets other data through.
        let mut errors = 0;
        for at in 10..one.len() {
            let mut bad = one.clone();
            bad[at] ^= 0x20;
            let p = write(dir.path(), "flip.gz", &bad);
            match read_idx(&p) {
                Ok(f) => assert_eq!(f.data, data, "byte {at} flipped"),
                Err(e) => {
                    errors += 1;
                    assert!(!e.to_string().contains("has more"), "byte {at}: {e}")
                }
            }
        }
        assert!(errors > (one.len() - 10) / 2, "{errors} errors");
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
    fn forged_headers_and_gzip_bombs_cost_no_memory() {
        let dir = tempfile::tempdir().unwrap();
        // A header promising 2³¹ bytes in a 20-byte file: refused before any allocation.
        let p = write(
            dir.path(),
            "huge",
            &idx_bytes(&[1 << 16, 1 << 15], &[1, 2, 3, 4]),
        );
        assert!(matches!(
            read_idx(&p).unwrap_err(),
            DataError::Truncated { expected, .. } if expected == 12 + (1u64 << 31)
        ));
        let gz = |bytes: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        };
        let p = write(
            dir.path(),
            "huge.gz",
            &gz(&idx_bytes(&[1 << 16, 1 << 15], &[0; 64])),
        );
        let e = read_idx(&p).unwrap_err().to_string();
        assert!(e.contains("more than this gzip file can expand to"), "{e}");
        // 64 MiB of zeros behind a header promising 10 data bytes: reading stops after 19.
        let mut bomb = idx_bytes(&[10], &[0; 10]);
        bomb.resize(64 << 20, 0);
        let p = write(dir.path(), "bomb.gz", &gz(&bomb));
        assert!(std::fs::metadata(&p).unwrap().len() < 200_000);
        let e = read_idx(&p).unwrap_err().to_string();
        assert!(e.contains("need 18 bytes but the file has more"), "{e}");
    }

    #[test]
    fn zero_sized_images_and_stray_labels_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), 3);
        write(
            dir.path(),
            "train-images-idx3-ubyte",
            &idx_bytes(&[3, 0, 2], &[]),
        );
        let e = load_idx_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("image shape [1, 0, 2] is not supported"), "{e}");
        write_split(dir.path(), 3);
        write(
            dir.path(),
            "train-labels-idx1-ubyte",
            &idx_bytes(&[3], &[1, 200, 2]),
        );
        let e = load_idx_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("class 0 (0) has no training image"), "{e}");
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
