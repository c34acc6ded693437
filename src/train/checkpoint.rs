//! Checkpoints as safetensors files: model tensors under their PyTorch names and layouts
//! (f32), optimizer state under `optimizer.…`, run position in the metadata. Written
//! atomically: temporary file, fsync, rename, fsync of the directory.

use super::TrainError;
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Prefix of optimizer-state entries (PyTorch users drop them before `load_state_dict`).
pub const OPTIMIZER_PREFIX: &str = "optimizer.";

/// The contents of a checkpoint file.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// `(name, shape, values)` of every tensor, in file order (sorted by name).
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// String metadata (format, epoch, step, the run's configuration and epoch records).
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&(String, Vec<usize>, Vec<f32>)> {
        self.tensors.iter().find(|(n, _, _)| n == name)
    }
}

/// The safetensors encoding of `checkpoint`, byte for byte the same for the same contents:
/// the header's keys are sorted (the `safetensors` crate writes its metadata map in hash
/// order, so two identical runs would differ), tensors are laid out in name order, and the
/// header is padded with spaces to a multiple of 8 bytes, as the format recommends.
pub fn encode_checkpoint(checkpoint: &Checkpoint) -> Vec<u8> {
    let mut order: Vec<&(String, Vec<usize>, Vec<f32>)> = checkpoint.tensors.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header = serde_json::Map::new();
    if !checkpoint.metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(&checkpoint.metadata).expect("strings serialise"),
        );
    }
    let mut offset = 0usize;
    for (name, shape, values) in &order {
        let end = offset + 4 * values.len();
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut json = serde_json::to_string(&header).expect("header serialises");
    while !json.len().is_multiple_of(8) {
        json.push(' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend((json.len() as u64).to_le_bytes());
    out.extend(json.as_bytes());
    for (_, _, values) in &order {
        out.extend(values.iter().flat_map(|x| x.to_le_bytes()));
    }
    out
}

/// Writes `checkpoint` to `path` atomically: readers see the old file or the new one,
/// never a partial one, even if the process dies mid-write.
pub fn save_checkpoint(path: &Path, checkpoint: &Checkpoint) -> Result<(), TrainError> {
    for (name, shape, values) in &checkpoint.tensors {
        if shape.iter().product::<usize>() != values.len() {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                reason: format!(
                    "{name}: shape {shape:?} does not hold {} values",
                    values.len()
                ),
            });
        }
    }
    write_atomically(path, &encode_checkpoint(checkpoint))
}

/// Replaces `path` with `data` via a synced temporary file in the same directory.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<(), TrainError> {
    let io = |e| TrainError::io(path, e);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(data).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a checkpoint written by [`save_checkpoint`] (or any f32 safetensors file).
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    decode_checkpoint(&bytes).map_err(|reason| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses checkpoint bytes; every header field is checked by the `safetensors` reader
/// against the bytes actually present before any tensor is copied.
pub fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, String> {
    let bad = |reason: String| reason;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let mut tensors = Vec::new();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    for name in names {
        let view = st.tensor(&name).map_err(|e| bad(e.to_string()))?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "{name}: dtype {:?}, expected F32",
                view.dtype()
            )));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        tensors.push((name, view.shape().to_vec(), values));
    }
    Ok(Checkpoint {
        tensors,
        metadata: meta
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_bitwise_identical() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let ck = Checkpoint {
            tensors: vec![
                (
                    "conv1.bias".into(),
                    vec![3],
                    vec![0.1, -0.0, f32::MIN_POSITIVE],
                ),
                (
                    "conv1.weight".into(),
                    vec![1, 1, 2, 2],
                    vec![1.0, 2.5, -3.25, 1e-30],
                ),
                (
                    "optimizer.momentum_buffer.conv1.weight".into(),
                    vec![4],
                    vec![0.5; 4],
                ),
            ],
            metadata: [("epoch".to_string(), "3".to_string())]
                .into_iter()
                .collect(),
        };
        save_checkpoint(&path, &ck).unwrap();
        let back = load_checkpoint(&path).unwrap();
        assert_eq!(back.tensors.len(), 3);
        for ((n1, s1, v1), (n2, s2, v2)) in ck.tensors.iter().zip(&back.tensors) {
            assert_eq!((n1, s1), (n2, s2));
            let b1: Vec<u32> = v1.iter().map(|x| x.to_bits()).collect();
            let b2: Vec<u32> = v2.iter().map(|x| x.to_bits()).collect();
            assert_eq!(b1, b2);
        }
        assert_eq!(back.metadata["epoch"], "3");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, b"\x08\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
        let e = load_checkpoint(&path).unwrap_err().to_string();
        assert!(e.contains("bad.safetensors"), "{e}");
        assert!(load_checkpoint(&dir.path().join("missing")).is_err());
    }
}
