//! Image decoding (PNG, JPEG) under the loader's limits, then the conversion to pixels.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tensorgrad::data::parse::{decode_image_bytes, to_pixels};

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = decode_image_bytes(Path::new("fuzz-input"), data) {
        let mut pixels = Vec::new();
        to_pixels(&img, [3, 8, 8], &mut pixels);
        assert_eq!(pixels.len(), 3 * 8 * 8);
    }
});
