//! Mutations of a real checkpoint: the input is a list of (position, xor mask) pairs
//! applied to a valid checkpoint's bytes. Any file that differs from the original in any
//! byte (tensor data, metadata, tensor table, padding, length) must be refused: the
//! digests and the canonical-header check leave no byte unverified.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use tensorgrad::train::checkpoint::{decode_checkpoint, encode_checkpoint};
use tensorgrad::train::Checkpoint;

/// A checkpoint shaped like a run's: model tensors, optimizer state, run metadata.
fn original() -> &'static Vec<u8> {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let values = |n: usize, seed: f32| (0..n).map(|i| (i as f32 * seed).sin()).collect();
        let mut metadata = BTreeMap::new();
        metadata.insert("epoch".to_string(), "3".to_string());
        metadata.insert("step".to_string(), "282".to_string());
        metadata.insert("config".to_string(), r#"{"lr":0.01,"loss":"lgl-inr"}"#.to_string());
        encode_checkpoint(&Checkpoint {
            tensors: vec![
                ("conv1.weight".into(), vec![6, 1, 5, 5], values(150, 0.37)),
                ("conv1.bias".into(), vec![6], values(6, 1.3)),
                ("fc.weight".into(), vec![10, 16], values(160, 0.11)),
                ("bn.num_batches_tracked".into(), vec![], vec![12.0]),
                ("optimizer.momentum_buffer.fc.weight".into(), vec![10, 16], values(160, 0.7)),
            ],
            metadata,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let good = original();
    let mut bytes = good.clone();
    for pair in data.chunks_exact(3) {
        let at = u16::from_le_bytes([pair[0], pair[1]]) as usize % bytes.len();
        bytes[at] ^= pair[2];
    }
    // A tail: bytes appended or the file cut, chosen by a length of data not a multiple of 3.
    match data.len() % 3 {
        1 => bytes.push(data[data.len() - 1]),
        2 => {
            let cut = data[data.len() - 1] as usize % bytes.len();
            bytes.truncate(cut);
        }
        _ => {}
    }
    let result = decode_checkpoint(&bytes);
    if bytes != *good {
        assert!(result.is_err(), "a mutated checkpoint was accepted");
    } else {
        assert!(result.is_ok(), "the original checkpoint was refused");
    }
});
