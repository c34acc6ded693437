//! The IDX reader on arbitrary bytes, plain and as a gzip stream: errors, never a panic,
//! a hang or an allocation beyond what the bytes justify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tensorgrad::data::parse::{read_idx_from, Capacity};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz-input");
    let len = data.len() as u64;
    if let Ok(f) = read_idx_from(path, data, Capacity::Plain(len)) {
        assert_eq!(f.data.len() as u64, f.dims.iter().map(|&d| d as u64).product::<u64>());
    }
    let gz = flate2::read::GzDecoder::new(data);
    let _ = read_idx_from(path, gz, Capacity::Gzip(len.saturating_mul(1100)));
});
