//! Combining adapters on SmolLM2-135M shapes: TIES (materialised ΔW per module, then truncated SVD)
//! and exact SVD re-factorisation from the factors.
#![allow(missing_docs)]

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use lora_zoo::combine::{CombineMethod, CombineOptions, combine};
use lora_zoo::{AdapterConfig, LoraAdapter, LoraModule};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `n` rank-`rank` adapters on the 7 linear layers of `layers` SmolLM2 blocks.
fn adapters(n: usize, rank: usize, layers: usize) -> Vec<LoraAdapter> {
    let mut rng = StdRng::seed_from_u64(3);
    let shapes = [
        ("self_attn.q_proj", 576, 576),
        ("self_attn.k_proj", 576, 192),
        ("self_attn.v_proj", 576, 192),
        ("self_attn.o_proj", 576, 576),
        ("mlp.gate_proj", 576, 1536),
        ("mlp.up_proj", 576, 1536),
        ("mlp.down_proj", 1536, 576),
    ];
    (0..n)
        .map(|_| {
            let mut modules = BTreeMap::new();
            for l in 0..layers {
                for (m, d_in, d_out) in shapes {
                    let a = Array2::from_shape_fn((rank, d_in), |_| rng.random::<f32>() - 0.5);
                    let b =
                        Array2::from_shape_fn((d_out, rank), |_| 0.1 * (rng.random::<f32>() - 0.5));
                    modules.insert(
                        format!("model.layers.{l}.{m}"),
                        LoraModule::new(a, b, rank as f64, 1.0).unwrap(),
                    );
                }
            }
            LoraAdapter {
                config: AdapterConfig::default(),
                modules,
            }
            .with_describing_config()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let ads = adapters(8, 8, 1);
    let refs: Vec<&LoraAdapter> = ads.iter().collect();
    let mut g = c.benchmark_group("combine_8x_r8_smollm2_one_layer");
    g.sample_size(10);
    let mut ties = CombineOptions::new(CombineMethod::Ties, vec![0.125; 8]);
    ties.density = 0.5;
    ties.rank = Some(8);
    g.bench_function("ties_rank8", |b| b.iter(|| combine(&refs, &ties).unwrap()));
    let mut svd = CombineOptions::new(CombineMethod::Svd, vec![0.125; 8]);
    svd.rank = Some(8);
    g.bench_function("svd_rank8_from_factors", |b| {
        b.iter(|| combine(&refs, &svd).unwrap())
    });
    let linear = CombineOptions::new(CombineMethod::Linear, vec![0.125; 8]);
    g.bench_function("linear_exact", |b| {
        b.iter(|| combine(&refs, &linear).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
