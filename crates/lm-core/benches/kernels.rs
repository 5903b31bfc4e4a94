//! The fused CPU kernels against the burn compositions they replace, at scoring shapes
//! (8 × 256 tokens of SmolLM2: d_model 576, d_ff 1536, 9 heads of 64) and batch-1 decoding
//! shapes (one token), and the vectorised loops at each SIMD level of this CPU.
//!
//! Run: `cargo bench -p lm-core --bench kernels`.

use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lm_core::kernels::{gelu, norm, rope, swiglu, vecmath};
use lm_core::model::layers::Rope;

fn bench(c: &mut Criterion) {
    let dev = Device::flex();
    for (label, tokens) in [("8x256", 2048usize), ("1x1", 1)] {
        let mut group = c.benchmark_group(format!("kernels_{label}"));
        group.sample_size(20);
        let gate = Tensor::<3>::random([1, tokens, 1536], Distribution::Normal(0.0, 2.0), &dev);
        let up = Tensor::<3>::random([1, tokens, 1536], Distribution::Normal(0.0, 1.0), &dev);
        group.throughput(Throughput::Elements((tokens * 1536) as u64));
        group.bench_function("swiglu/fused", |b| {
            b.iter(|| swiglu::swiglu(gate.clone(), up.clone()).into_data())
        });
        group.bench_function("swiglu/burn", |b| {
            b.iter(|| swiglu::reference(gate.clone(), up.clone()).into_data())
        });
        group.bench_function("gelu_erf/fused", |b| {
            b.iter(|| gelu::gelu_erf(gate.clone()).into_data())
        });
        group.bench_function("gelu_erf/burn", |b| {
            b.iter(|| burn::tensor::activation::gelu(gate.clone()).into_data())
        });
        let x = Tensor::<3>::random([1, tokens, 576], Distribution::Normal(0.0, 1.0), &dev);
        let g = Tensor::<1>::random([576], Distribution::Normal(1.0, 0.1), &dev);
        let be = Tensor::<1>::random([576], Distribution::Normal(0.0, 0.1), &dev);
        group.throughput(Throughput::Elements((tokens * 576) as u64));
        group.bench_function("rms_norm/fused", |b| {
            b.iter(|| norm::rms_norm(x.clone(), g.clone(), 1e-5, false).into_data())
        });
        group.bench_function("rms_norm/burn", |b| {
            b.iter(|| norm::rms_norm_reference(x.clone(), g.clone(), 1e-5, false).into_data())
        });
        group.bench_function("layer_norm/fused", |b| {
            b.iter(|| norm::layer_norm(x.clone(), g.clone(), be.clone(), 1e-12).into_data())
        });
        group.bench_function("layer_norm/burn", |b| {
            b.iter(|| {
                norm::layer_norm_reference(x.clone(), g.clone(), be.clone(), 1e-12).into_data()
            })
        });
        let tables = Rope::new(64, 100_000.0, 4096, &dev);
        let q = Tensor::<4>::random([1, tokens, 9, 64], Distribution::Normal(0.0, 1.0), &dev);
        let pos: Vec<i64> = (0..tokens as i64).collect();
        let positions = Tensor::<2, Int>::from_data(TensorData::new(pos, [1, tokens]), &dev);
        group.bench_function("rope/fused", |b| {
            b.iter(|| rope::rope_bshd(q.clone(), &tables.cos, &tables.sin, &positions).into_data())
        });
        group.bench_function("rope/burn", |b| {
            b.iter(|| {
                rope::rope_bshd_reference(q.clone(), &tables.cos, &tables.sin, &positions)
                    .into_data()
            })
        });
        group.finish();
    }

    // The bare loops, one thread, at each level this CPU has.
    let n = 1 << 16;
    let g: Vec<f32> = (0..n).map(|i| ((i % 211) as f32 - 105.0) / 13.0).collect();
    let u: Vec<f32> = (0..n).map(|i| ((i % 17) as f32 - 8.0) / 5.0).collect();
    let mut out = vec![0f32; n];
    let mut group = c.benchmark_group("vecmath_64k");
    group.throughput(Throughput::Elements(n as u64));
    for level in [
        vecmath::SimdLevel::Baseline,
        vecmath::SimdLevel::Avx2,
        vecmath::SimdLevel::Avx512,
    ] {
        if level > vecmath::detected() {
            continue;
        }
        group.bench_function(format!("silu_mul/{level:?}"), |b| {
            b.iter(|| vecmath::silu_mul_at(level, &g, &u, &mut out))
        });
        group.bench_function(format!("exp/{level:?}"), |b| {
            b.iter(|| vecmath::exp_slice_at(level, &g, &mut out))
        });
    }
    group.bench_function("silu_mul/std_exp", |b| {
        b.iter(|| {
            for ((o, &x), &y) in out.iter_mut().zip(&g).zip(&u) {
                *o = x / (1.0 + (-x).exp()) * y;
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
