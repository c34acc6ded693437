//! The checkpoint (safetensors) reader on arbitrary bytes: whatever it accepts is a
//! checkpoint exactly as tensorgrad writes it (re-encoding gives the same bytes back), and
//! it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tensorgrad::train::checkpoint::{decode_checkpoint, encode_checkpoint};

fuzz_target!(|data: &[u8]| {
    if let Ok(ck) = decode_checkpoint(data) {
        assert_eq!(encode_checkpoint(&ck), data, "an accepted file is canonical");
    }
});
