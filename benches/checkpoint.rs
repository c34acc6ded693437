//! The cost of checkpoint integrity: a cifar-cnn checkpoint (model tensors and SGD
//! momentum, as a run saves it) encoded with its SHA-256 digests, decoded with
//! verification, and decoded without (`decode_unverified`, the reader without digests),
//! with the bare SHA-256 of all its bytes beside them. Throughput counts bytes.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::hint::black_box;
use tensorgrad::nn::{models::ModelKind, Module};
use tensorgrad::train::checkpoint::{
    decode_checkpoint, decode_unverified, encode_checkpoint, OPTIMIZER_PREFIX,
};
use tensorgrad::train::Checkpoint;

fn cifar_cnn_checkpoint() -> Checkpoint {
    let model = ModelKind::CifarCnn
        .build::<f32>([3, 32, 32], 10, 0)
        .expect("cifar-cnn builds");
    let mut tensors = Vec::new();
    for (name, _, t) in model.named_tensors() {
        let values = t.to_vec();
        tensors.push((
            format!("{OPTIMIZER_PREFIX}momentum_buffer.{name}"),
            t.shape().to_vec(),
            values.iter().map(|v| v * 0.5).collect(),
        ));
        tensors.push((name, t.shape().to_vec(), values));
    }
    let mut metadata = BTreeMap::new();
    metadata.insert("epoch".into(), "3".into());
    metadata.insert("step".into(), "2346".into());
    Checkpoint { tensors, metadata }
}

fn bench_checkpoint(c: &mut Criterion) {
    let ck = cifar_cnn_checkpoint();
    let bytes = encode_checkpoint(&ck);
    let mut group = c.benchmark_group("checkpoint_cifar_cnn");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode_with_digests", |b| {
        b.iter(|| black_box(encode_checkpoint(black_box(&ck))))
    });
    group.bench_function("decode_verified", |b| {
        b.iter(|| black_box(decode_checkpoint(black_box(&bytes)).unwrap()))
    });
    group.bench_function("decode_unverified", |b| {
        b.iter(|| black_box(decode_unverified(black_box(&bytes)).unwrap()))
    });
    group.bench_function("sha256_of_all_bytes", |b| {
        b.iter(|| black_box(Sha256::digest(black_box(&bytes))))
    });
    group.finish();
}

criterion_group!(benches, bench_checkpoint);
criterion_main!(benches);
