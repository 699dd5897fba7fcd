//! Micro-benchmarks of the CPU work around each model call: decoding and encoding v2 JSON,
//! decoding the binary tensor data extension, and stacking requests into a batch and splitting
//! the answer back.
//!
//! `cargo bench --bench codec` (criterion; add a filter such as `-- json_decode` to run a group).

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pinserve::{
    batch::assemble::{concat, split},
    model::{DataType, Dim, Signature, Tensor, TensorData, TensorSpec},
    protocol::{binary, v2},
};
use serde_json::json;

/// compute_mlp's signature: 512 features in, 256 out, dynamic batch.
fn wide_signature() -> Signature {
    let batch = || Dim::Dynamic(Some("batch".to_owned()));
    Signature {
        inputs: vec![TensorSpec::new(
            "x",
            DataType::Fp32,
            vec![batch(), Dim::Fixed(512)],
        )],
        outputs: vec![TensorSpec::new(
            "y",
            DataType::Fp32,
            vec![batch(), Dim::Fixed(256)],
        )],
    }
}

/// Deterministic, varied floats (every digit of a float costs in JSON).
fn floats(count: usize) -> Vec<f32> {
    (0..count)
        .map(|index| ((index * 7919) % 1000) as f32 / 997.0 - 0.5)
        .collect()
}

fn json_request(rows: usize) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"inputs": [{"name": "x", "shape": [rows, 512], "datatype": "FP32",
        "data": floats(rows * 512)}]}),
    )
    .unwrap()
}

fn binary_request(rows: usize) -> (Vec<u8>, usize) {
    let header = json!({"inputs": [{"name": "x", "shape": [rows, 512], "datatype": "FP32",
        "parameters": {"binary_data_size": rows * 512 * 4}}]});
    let mut body = serde_json::to_vec(&header).unwrap();
    let length = body.len();
    binary::encode(&TensorData::Fp32(floats(rows * 512)), &mut body);
    (body, length)
}

const ROWS: [usize; 3] = [1, 8, 64];

fn decode(c: &mut Criterion) {
    let signature = wide_signature();
    let mut group = c.benchmark_group("v2_decode");
    for rows in ROWS {
        group.throughput(Throughput::Elements(rows as u64));
        let body = json_request(rows);
        group.bench_with_input(BenchmarkId::new("json", rows), &body, |b, body| {
            b.iter(|| v2::decode_request(black_box(body), None, &signature).unwrap())
        });
        let (body, length) = binary_request(rows);
        group.bench_with_input(BenchmarkId::new("binary", rows), &body, |b, body| {
            b.iter(|| v2::decode_request(black_box(body), Some(length), &signature).unwrap())
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let signature = wide_signature();
    let mut group = c.benchmark_group("v2_encode");
    for rows in ROWS {
        group.throughput(Throughput::Elements(rows as u64));
        let outputs =
            vec![Tensor::new(vec![rows, 256], TensorData::Fp32(floats(rows * 256))).unwrap()];
        for (name, as_binary) in [("json", false), ("binary", true)] {
            let request = v2::InferRequest {
                id: Some("bench".to_owned()),
                inputs: Vec::new(),
                outputs: vec![0],
                binary_outputs: vec![as_binary],
                classification: vec![None],
            };
            group.bench_with_input(BenchmarkId::new(name, rows), &outputs, |b, outputs| {
                b.iter(|| {
                    v2::encode_response(
                        ("compute_mlp", "1"),
                        &request,
                        &signature,
                        black_box(outputs),
                    )
                })
            });
        }
    }
    group.finish();
}

/// Stacking 1-row requests into one batch and splitting the answer, as the worker does.
fn assemble(c: &mut Criterion) {
    let mut group = c.benchmark_group("assemble");
    for requests in [8, 64] {
        group.throughput(Throughput::Elements(requests as u64));
        let inputs: Vec<Vec<Tensor>> = (0..requests)
            .map(|_| vec![Tensor::new(vec![1, 512], TensorData::Fp32(floats(512))).unwrap()])
            .collect();
        let slices: Vec<&[Tensor]> = inputs.iter().map(Vec::as_slice).collect();
        group.bench_with_input(
            BenchmarkId::new("concat", requests),
            &slices,
            |b, slices| b.iter(|| concat(black_box(slices))),
        );
        let rows = vec![1; requests];
        let output = Tensor::new(
            vec![requests, 256],
            TensorData::Fp32(floats(requests * 256)),
        )
        .unwrap();
        group.bench_with_input(BenchmarkId::new("split", requests), &output, |b, output| {
            b.iter_batched(
                || vec![output.clone()],
                |outputs| split(outputs, &rows).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode, assemble);
criterion_main!(benches);
