//! Checkpoints as safetensors files: model tensors under their PyTorch names and layouts
//! (f32), optimizer state under `optimizer.…`, run position in the metadata. Written
//! atomically: temporary file, fsync, rename, fsync of the directory.
//!
//! Neither safetensors nor `torch.save` stores a checksum, so a flipped bit would load
//! silently. Every checkpoint therefore carries, in the metadata entry [`INTEGRITY_KEY`],
//! the SHA-256 of every tensor's bytes and of the rest of the header (the other metadata
//! entries and the tensor table); [`decode_checkpoint`] verifies them all, and that the
//! header is byte for byte the one [`encode_checkpoint`] writes, before it returns
//! anything. The file stays a plain safetensors file (PyTorch's `safetensors` loads it;
//! the digests are one more string in its metadata).

use super::TrainError;
use safetensors::tensor::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// Prefix of optimizer-state entries (PyTorch users drop them before `load_state_dict`).
pub const OPTIMIZER_PREFIX: &str = "optimizer.";

/// The metadata entry holding the digests: `{"algorithm": "sha256", "header": HEX,
/// "tensors": {NAME: HEX, …}}`, as a JSON string.
pub const INTEGRITY_KEY: &str = "integrity";

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
/// order, so two identical runs would differ), tensors are laid out in name order, the
/// header is padded with spaces to a multiple of 8 bytes, as the format recommends, and
/// the metadata gains the digests of [`INTEGRITY_KEY`] (replacing any it held).
pub fn encode_checkpoint(checkpoint: &Checkpoint) -> Vec<u8> {
    let mut order: Vec<&(String, Vec<usize>, Vec<f32>)> = checkpoint.tensors.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let bytes: Vec<Vec<u8>> = order
        .iter()
        .map(|(_, _, values)| values.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let table: Vec<(&str, &[usize], usize)> = order
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| (name.as_str(), shape.as_slice(), b.len()))
        .collect();
    let mut metadata = checkpoint.metadata.clone();
    metadata.remove(INTEGRITY_KEY);
    let integrity = serde_json::json!({
        "algorithm": "sha256",
        "header": header_digest(&metadata, &table),
        "tensors": table
            .iter()
            .zip(&bytes)
            .map(|((name, _, _), b)| (name.to_string(), hex_sha256(b).into()))
            .collect::<serde_json::Map<String, serde_json::Value>>(),
    });
    metadata.insert(INTEGRITY_KEY.into(), integrity.to_string());
    let json = encode_header(&metadata, &table);
    let mut out = Vec::with_capacity(8 + json.len() + bytes.iter().map(Vec::len).sum::<usize>());
    out.extend((json.len() as u64).to_le_bytes());
    out.extend(json.as_bytes());
    for b in &bytes {
        out.extend(b);
    }
    out
}

/// The header JSON (padded with spaces to a multiple of 8 bytes) for `metadata` and the
/// tensor table `(name, shape, byte length)` in file order.
fn encode_header(metadata: &BTreeMap<String, String>, table: &[(&str, &[usize], usize)]) -> String {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert(
            "__metadata__".into(),
            serde_json::to_value(metadata).expect("strings serialise"),
        );
    }
    let mut offset = 0usize;
    for (name, shape, len) in table {
        header.insert(
            name.to_string(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len] }),
        );
        offset += len;
    }
    let mut json = serde_json::to_string(&header).expect("header serialises");
    while !json.len().is_multiple_of(8) {
        json.push(' ');
    }
    json
}

/// The digest of everything in the header but the digests: the metadata (without
/// [`INTEGRITY_KEY`]) and the tensor table, in the canonical encoding.
fn header_digest(metadata: &BTreeMap<String, String>, table: &[(&str, &[usize], usize)]) -> String {
    hex_sha256(encode_header(metadata, table).trim_end().as_bytes())
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

/// Reads and verifies a checkpoint written by [`save_checkpoint`] (see
/// [`decode_checkpoint`]).
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    decode_checkpoint(&bytes).map_err(|reason| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parses checkpoint bytes and verifies them: every header field is checked by the
/// `safetensors` reader against the bytes present, every tensor's bytes and the rest of
/// the header against the digests recorded at save time, and the header against its
/// canonical encoding. The error names the tensor (or the part of the header) that does
/// not match. The returned metadata does not include [`INTEGRITY_KEY`].
pub fn decode_checkpoint(bytes: &[u8]) -> Result<Checkpoint, String> {
    let mut checkpoint = decode_unverified(bytes)?;
    let Some(integrity) = checkpoint.metadata.remove(INTEGRITY_KEY) else {
        return Err(format!(
            "no {INTEGRITY_KEY} digests in the metadata: not a checkpoint of this version of \
             tensorgrad (an older one, or a file saved by another program), so its bytes \
             cannot be verified (`checkpoint::decode_unverified` reads it without checks)"
        ));
    };
    let integrity: serde_json::Value =
        serde_json::from_str(&integrity).map_err(|e| format!("metadata {INTEGRITY_KEY}: {e}"))?;
    if integrity["algorithm"] != "sha256" {
        return Err(format!(
            "metadata {INTEGRITY_KEY}: algorithm {}, expected \"sha256\"",
            integrity["algorithm"]
        ));
    }
    let digests = integrity["tensors"]
        .as_object()
        .ok_or_else(|| format!("metadata {INTEGRITY_KEY}: no tensor digests"))?;
    let bytes_of =
        |values: &[f32]| -> Vec<u8> { values.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let mut table = Vec::new();
    for (name, shape, values) in &checkpoint.tensors {
        let recorded = digests
            .get(name)
            .and_then(|d| d.as_str())
            .ok_or_else(|| format!("tensor {name}: no digest recorded for it"))?;
        let data = bytes_of(values);
        if hex_sha256(&data) != recorded {
            return Err(format!(
                "tensor {name}: its bytes do not match the SHA-256 recorded when it was saved \
                 (the file is corrupt)"
            ));
        }
        table.push((name.as_str(), shape.as_slice(), data.len()));
    }
    if let Some(stray) = digests.keys().find(|n| checkpoint.get(n).is_none()) {
        return Err(format!(
            "metadata {INTEGRITY_KEY}: a digest for tensor {stray}, which the file does not hold"
        ));
    }
    if integrity["header"].as_str() != Some(header_digest(&checkpoint.metadata, &table).as_str()) {
        return Err(
            "the metadata or the tensor table does not match the SHA-256 recorded when it \
             was saved (the file is corrupt)"
                .into(),
        );
    }
    // What the digests cannot see: the header's formatting (spacing, key order, how a
    // number is spelled). A checkpoint's header is exactly what encode_checkpoint writes.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let mut canonical = checkpoint.metadata.clone();
    canonical.insert(INTEGRITY_KEY.into(), integrity.to_string());
    if encode_header(&canonical, &table).as_bytes() != &bytes[8..8 + header_len] {
        return Err("the header is not in the form tensorgrad writes (it was edited)".into());
    }
    Ok(checkpoint)
}

/// Parses safetensors bytes (f32 tensors) without verifying digests: for files written
/// by other programs, which carry none. Every header field is still checked by the
/// `safetensors` reader against the bytes actually present before any tensor is copied.
pub fn decode_unverified(bytes: &[u8]) -> Result<Checkpoint, String> {
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    let mut tensors = Vec::new();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    for name in names {
        let view = st.tensor(&name).map_err(|e| e.to_string())?;
        if view.dtype() != Dtype::F32 {
            return Err(format!("{name}: dtype {:?}, expected F32", view.dtype()));
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
