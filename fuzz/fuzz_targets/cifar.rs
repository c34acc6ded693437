//! The CIFAR record parser on arbitrary bytes, with 1 and 2 label bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tensorgrad::data::parse::{empty_cifar, parse_cifar_records};

fuzz_target!(|data: &[u8]| {
    for (label_bytes, classes) in [(1, 10), (2, 100)] {
        let mut out = empty_cifar(classes);
        if parse_cifar_records(Path::new("fuzz-input"), data, label_bytes, classes, &mut out)
            .is_ok()
        {
            assert_eq!(out.pixels.len(), out.labels.len() * 3072);
            assert!(out.labels.iter().all(|&l| l < classes));
        }
    }
});
