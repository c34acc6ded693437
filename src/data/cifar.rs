//! CIFAR-10 and CIFAR-100 binary formats: fixed-size records of label byte(s) followed by
//! 3072 pixel bytes (1024 red, 1024 green, 1024 blue: already CHW).

use super::{numbered_classes, DataError, Dataset, Split};
use std::path::Path;

const PIXELS: usize = 3 * 32 * 32;

/// Reads records of `label_bytes + 3072` bytes; the label used is the last label byte
/// (CIFAR-100's fine label), checked against `classes`.
fn read_records(
    path: &Path,
    label_bytes: usize,
    classes: usize,
    out: &mut Dataset,
) -> Result<(), DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    parse_records(path, &bytes, label_bytes, classes, out)
}

/// Appends the records in `bytes` (read from `path`, named in errors) to `out`: whole
/// records of `label_bytes` (1 or 2) label bytes and 3072 pixels, labels below `classes`.
pub fn parse_records(
    path: &Path,
    bytes: &[u8],
    label_bytes: usize,
    classes: usize,
    out: &mut Dataset,
) -> Result<(), DataError> {
    if !(1..=2).contains(&label_bytes) {
        return Err(DataError::inconsistent(
            path,
            format!("{label_bytes} label bytes per record (CIFAR has 1 or 2)"),
        ));
    }
    let record = label_bytes + PIXELS;
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        return Err(DataError::inconsistent(
            path,
            format!(
                "{} bytes is not a whole number of {record}-byte records",
                bytes.len()
            ),
        ));
    }
    for (i, r) in bytes.chunks(record).enumerate() {
        let label = r[label_bytes - 1] as usize;
        if label >= classes {
            return Err(DataError::inconsistent(
                path,
                format!("record {i}: label {label} ≥ {classes} classes"),
            ));
        }
        out.labels.push(label);
        out.pixels.extend_from_slice(&r[label_bytes..]);
    }
    Ok(())
}

/// An empty CIFAR data set of `classes` classes (3×32×32 images).
pub fn empty(classes: usize) -> Dataset {
    Dataset {
        pixels: Vec::new(),
        labels: Vec::new(),
        shape: [3, 32, 32],
        classes,
        class_names: numbered_classes(classes),
    }
}

/// CIFAR-10 from `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin` in `dir`
/// (the training batches present are used; at least one is required).
pub fn load_cifar10(dir: &Path) -> Result<Split, DataError> {
    let mut train = empty(10);
    let mut found = 0;
    for i in 1..=5 {
        let p = dir.join(format!("data_batch_{i}.bin"));
        if p.exists() {
            read_records(&p, 1, 10, &mut train)?;
            found += 1;
        }
    }
    if found == 0 {
        return Err(DataError::io(
            &dir.join("data_batch_1.bin"),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no CIFAR-10 training batch found",
            ),
        ));
    }
    let mut test = empty(10);
    read_records(&dir.join("test_batch.bin"), 1, 10, &mut test)?;
    Ok(Split { train, test })
}

/// CIFAR-100 from `train.bin` and `test.bin` in `dir`, with the 100 fine labels.
pub fn load_cifar100(dir: &Path) -> Result<Split, DataError> {
    let mut train = empty(100);
    read_records(&dir.join("train.bin"), 2, 100, &mut train)?;
    let mut test = empty(100);
    read_records(&dir.join("test.bin"), 2, 100, &mut test)?;
    Ok(Split { train, test })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(labels: &[&[u8]]) -> Vec<u8> {
        let mut b = Vec::new();
        for (i, l) in labels.iter().enumerate() {
            b.extend_from_slice(l);
            b.extend(std::iter::repeat_n(i as u8, PIXELS));
        }
        b
    }

    #[test]
    fn cifar10_reads_batches_and_rejects_partial_records() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data_batch_1.bin"), records(&[&[3], &[9]])).unwrap();
        std::fs::write(dir.path().join("data_batch_2.bin"), records(&[&[0]])).unwrap();
        std::fs::write(dir.path().join("test_batch.bin"), records(&[&[5]])).unwrap();
        let s = load_cifar10(dir.path()).unwrap();
        assert_eq!(s.train.labels, vec![3, 9, 0]);
        assert_eq!(s.train.pixels[PIXELS], 1);
        assert_eq!(s.test.labels, vec![5]);
        let mut short = records(&[&[1]]);
        short.pop();
        std::fs::write(dir.path().join("test_batch.bin"), short).unwrap();
        let e = load_cifar10(dir.path()).unwrap_err().to_string();
        assert!(e.contains("test_batch.bin") && e.contains("records"), "{e}");
        std::fs::write(dir.path().join("test_batch.bin"), records(&[&[10]])).unwrap();
        assert!(load_cifar10(dir.path())
            .unwrap_err()
            .to_string()
            .contains("label 10"));
    }

    #[test]
    fn cifar100_uses_fine_labels() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.bin"), records(&[&[3, 77], &[1, 12]])).unwrap();
        std::fs::write(dir.path().join("test.bin"), records(&[&[0, 99]])).unwrap();
        let s = load_cifar100(dir.path()).unwrap();
        assert_eq!(
            (
                s.train.labels.clone(),
                s.test.labels.clone(),
                s.train.classes
            ),
            (vec![77, 12], vec![99], 100)
        );
        assert!(load_cifar100(&dir.path().join("nope")).is_err());
    }
}
