//! The checkpoint (safetensors) reader on arbitrary bytes; whatever it accepts must
//! encode and decode back to the same checkpoint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorgrad::train::checkpoint::{decode_checkpoint, encode_checkpoint};

fuzz_target!(|data: &[u8]| {
    if let Ok(ck) = decode_checkpoint(data) {
        let again = decode_checkpoint(&encode_checkpoint(&ck)).expect("re-encoded checkpoint");
        let bits = |c: &tensorgrad::train::Checkpoint| -> Vec<(String, Vec<usize>, Vec<u32>)> {
            c.tensors
                .iter()
                .map(|(n, s, v)| (n.clone(), s.clone(), v.iter().map(|x| x.to_bits()).collect()))
                .collect()
        };
        assert_eq!(bits(&ck), bits(&again));
        assert_eq!(ck.metadata, again.metadata);
    }
});
