//! Pairwise similarity of a bank: 64 adapters, rank 8, SmolLM2-135M-shaped q_proj and v_proj on 30
//! layers (the target: delta mode under a second).
#![allow(missing_docs)]

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use lora_zoo::similarity::{SimilarityMode, similarity_matrix};
use lora_zoo::{AdapterConfig, LoraAdapter, LoraModule};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub fn bank(n: usize, rank: usize, seed: u64) -> Vec<LoraAdapter> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut modules = BTreeMap::new();
            for l in 0..30 {
                for (m, d_out) in [("q_proj", 576), ("v_proj", 192)] {
                    let a = Array2::from_shape_fn((rank, 576), |_| rng.random::<f32>() - 0.5);
                    let b = Array2::from_shape_fn((d_out, rank), |_| rng.random::<f32>() - 0.5);
                    modules.insert(
                        format!("model.layers.{l}.self_attn.{m}"),
                        LoraModule::new(a, b, 2.0 * rank as f64, 2.0).unwrap(),
                    );
                }
            }
            LoraAdapter {
                config: AdapterConfig::default(),
                modules,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let ads = bank(64, 8, 1);
    let refs: Vec<&LoraAdapter> = ads.iter().collect();
    let mut g = c.benchmark_group("similarity_64x_r8_smollm2_qv");
    g.sample_size(10);
    g.bench_function("delta", |b| {
        b.iter(|| similarity_matrix(&refs, SimilarityMode::Delta))
    });
    g.bench_function("rocket", |b| {
        b.iter(|| similarity_matrix(&refs, SimilarityMode::Rocket))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
