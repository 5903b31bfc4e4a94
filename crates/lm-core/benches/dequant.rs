//! Dequantisation throughput over a 4M-element tensor (about one 2048 x 2048 matrix).
//!
//! Run: `cargo bench -p lm-core --bench dequant`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lm_core::io::dequant::{GgmlType, dequantize_into};

const N: usize = 4 << 20;

/// Random but valid blocks: random bytes with a sane f16 scale in every f16 field.
fn blocks(ty: GgmlType) -> Vec<u8> {
    let n_bytes = ty.bytes_for(N as u64).unwrap() as usize;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut data: Vec<u8> = (0..n_bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect();
    let scale = half::f16::from_f32(0.01).to_bits().to_le_bytes();
    let fields: &[usize] = match ty {
        GgmlType::Q6_K => &[208],
        GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        _ => &[0],
    };
    for block in data.chunks_mut(ty.type_size()) {
        for &f in fields {
            block[f..f + 2].copy_from_slice(&scale);
        }
    }
    data
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("dequantize_4M");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(20);
    let mut out = vec![0f32; N];
    for ty in [
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ] {
        let data = blocks(ty);
        group.bench_function(ty.name(), |b| {
            b.iter(|| dequantize_into(ty, std::hint::black_box(&data), &mut out).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
