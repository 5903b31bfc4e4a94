//! The merge kernel on SmolLM2-135M shapes: per module, the combined dense update of 8 rank-8
//! adapters (`combined_delta`: TIES at full rank, or the exact linear sum), added to an f32 base
//! weight and encoded for the checkpoint (f32 / bf16), for the 7 linear layers of one block.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use lm_core::export::ExportDtype;
use lora_zoo::combine::{CombineMethod, CombineOptions, combined_delta};
use lora_zoo::{AdapterConfig, LoraAdapter, LoraModule};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SHAPES: [(&str, usize, usize); 7] = [
    ("self_attn.q_proj", 576, 576),
    ("self_attn.k_proj", 576, 192),
    ("self_attn.v_proj", 576, 192),
    ("self_attn.o_proj", 576, 576),
    ("mlp.gate_proj", 576, 1536),
    ("mlp.up_proj", 576, 1536),
    ("mlp.down_proj", 1536, 576),
];

fn adapters(n: usize, rank: usize) -> Vec<LoraAdapter> {
    let mut rng = StdRng::seed_from_u64(5);
    (0..n)
        .map(|_| {
            let mut modules = BTreeMap::new();
            for (m, d_in, d_out) in SHAPES {
                let a = Array2::from_shape_fn((rank, d_in), |_| rng.random::<f32>() - 0.5);
                let b = Array2::from_shape_fn((d_out, rank), |_| 0.1 * (rng.random::<f32>() - 0.5));
                modules.insert(
                    format!("model.layers.0.{m}"),
                    LoraModule::new(a, b, rank as f64, 1.0).unwrap(),
                );
            }
            LoraAdapter {
                config: AdapterConfig::default(),
                modules,
            }
            .with_describing_config()
        })
        .collect()
}

/// Merges every module of the block into `bases` and encodes them; returns the bytes written.
fn merge_block(
    refs: &[&LoraAdapter],
    opts: &CombineOptions,
    bases: &[Vec<f32>],
    dtype: ExportDtype,
) -> usize {
    let mut written = 0;
    for ((m, _, _), base) in SHAPES.iter().zip(bases) {
        let mut w = base.clone();
        let d = combined_delta(refs, opts, &format!("model.layers.0.{m}"))
            .unwrap()
            .unwrap();
        for (x, y) in w.iter_mut().zip(d.as_slice().unwrap()) {
            *x += *y;
        }
        let mut bytes = Vec::new();
        dtype.encode_into(&w, &mut bytes);
        written += bytes.len();
    }
    written
}

fn bench(c: &mut Criterion) {
    let ads = adapters(8, 8);
    let refs: Vec<&LoraAdapter> = ads.iter().collect();
    let mut rng = StdRng::seed_from_u64(9);
    let bases: Vec<Vec<f32>> = SHAPES
        .iter()
        .map(|(_, d_in, d_out)| {
            (0..d_in * d_out)
                .map(|_| rng.random::<f32>() - 0.5)
                .collect()
        })
        .collect();
    let mut g = c.benchmark_group("merge_8x_r8_smollm2_one_block");
    g.sample_size(10);
    let mut ties = CombineOptions::new(CombineMethod::Ties, vec![1.0; 8]);
    ties.density = 0.5;
    g.bench_function("ties_full_rank_f32", |b| {
        b.iter(|| merge_block(&refs, &ties, &bases, ExportDtype::F32))
    });
    let linear = CombineOptions::new(CombineMethod::Linear, vec![0.125; 8]);
    g.bench_function("linear_f32", |b| {
        b.iter(|| merge_block(&refs, &linear, &bases, ExportDtype::F32))
    });
    g.bench_function("linear_bf16", |b| {
        b.iter(|| merge_block(&refs, &linear, &bases, ExportDtype::Bf16))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
