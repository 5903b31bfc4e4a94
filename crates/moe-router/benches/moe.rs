//! Scoring cost of a 4-expert top-2 mixture against one plain LoRA (goal: at most 1.3x).
//!
//! The decoder has SmolLM2-135M's block shape (width 576, SwiGLU 1536, 9 heads / 3 KV heads of
//! 64) with random weights, 4 blocks instead of 30 and a 2048-token vocabulary, so the bench
//! measures the adapted layers rather than the 49k-row output head, and fits a loaded 2-core
//! machine. Experts: rank 16 on q_proj and v_proj (Rocket's bank LoRAs). Batch 8 x 256 tokens.
//! Set `MOE_BENCH_LAYERS` to change the depth (30 = the full model's).

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use lm_core::burn::tensor::{Int, Tensor, TensorData};
use lm_core::model::loader::build_decoder;
use lm_core::model::random::TensorMap;
use lm_core::model::{Decoder, DecoderConfig, ExpertMix};
use lora_zoo::apply::attach_adapters;
use lora_zoo::{AdapterConfig, LoraAdapter, LoraModule};
use moe_router::{ExpertSpec, Moe, MoeConfig, decoder_spec};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn config() -> DecoderConfig {
    let layers = std::env::var("MOE_BENCH_LAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    DecoderConfig {
        vocab_size: 2048,
        hidden_size: 576,
        intermediate_size: 1536,
        num_layers: layers,
        num_heads: 9,
        num_kv_heads: 3,
        head_dim: 64,
        max_position_embeddings: 512,
        ..DecoderConfig::tiny(2048)
    }
}

fn adapter(decoder: &Decoder, seed: u64) -> LoraAdapter {
    let mut rng = StdRng::seed_from_u64(seed);
    let modules = decoder_spec(decoder)
        .modules
        .into_iter()
        .filter(|(n, _)| n.ends_with("q_proj") || n.ends_with("v_proj"))
        .map(|(n, (d_in, d_out))| {
            let a = Array2::from_shape_fn((16, d_in), |_| rng.random_range(-0.05f32..0.05));
            let b = Array2::from_shape_fn((d_out, 16), |_| rng.random_range(-0.05f32..0.05));
            (n, LoraModule::new(a, b, 16.0, 1.0).unwrap())
        })
        .collect();
    LoraAdapter {
        config: AdapterConfig::default(),
        modules,
    }
}

fn bench(c: &mut Criterion) {
    let device = lm_core::device::device_from_name("cpu").unwrap();
    let cfg = config();
    let base = build_decoder(&cfg, &TensorMap::random_decoder(&cfg, 1), &device).unwrap();
    let experts: Vec<LoraAdapter> = (0..4).map(|s| adapter(&base, s)).collect();
    let mut lora = base.clone();
    attach_adapters(&mut lora, &[&experts[0]]).unwrap();
    let mut moe_dec = base.clone();
    let specs = (0..4)
        .map(|i| ExpertSpec {
            name: format!("e{i}"),
            path: format!("e{i}").into(),
        })
        .collect();
    let moe = Moe::build(&mut moe_dec, MoeConfig::new(specs), &experts).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let ids: Vec<i64> = (0..8 * 256).map(|_| rng.random_range(0..2048)).collect();
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [8, 256]), &device);
    let run = |d: &Decoder, mix: &ExpertMix| {
        let out = d.forward(tokens.clone(), mix);
        let _ = out.narrow(2, 0, 1).into_data();
    };
    let lora_mix = ExpertMix::Static(vec![1.0]);
    let moe_mix = moe.mix();
    let dense_mix = ExpertMix::Routed { top_k: None };
    // A direct ratio first (median of 5), then criterion's measurements.
    let median = |d: &Decoder, mix: &ExpertMix| {
        run(d, mix);
        let mut t: Vec<f64> = (0..5)
            .map(|_| {
                let s = Instant::now();
                run(d, mix);
                s.elapsed().as_secs_f64()
            })
            .collect();
        t.sort_by(f64::total_cmp);
        t[2]
    };
    let (tb, tl, tm, td) = (
        median(&base, &ExpertMix::Base),
        median(&lora, &lora_mix),
        median(&moe_dec, &moe_mix),
        median(&moe_dec, &dense_mix),
    );
    eprintln!(
        "8x256 tokens, {} layers: base {:.3}s, one LoRA {:.3}s, MoE top-2/4 {:.3}s ({:.2}x LoRA), \
         MoE dense 4/4 {:.3}s ({:.2}x LoRA)",
        cfg.num_layers,
        tb,
        tl,
        tm,
        tm / tl,
        td,
        td / tl
    );
    let mut g = c.benchmark_group("score_8x256");
    g.sample_size(10);
    g.bench_function("one_lora", |b| b.iter(|| run(&lora, &lora_mix)));
    g.bench_function("moe_top2_of_4", |b| b.iter(|| run(&moe_dec, &moe_mix)));
    g.bench_function("moe_dense_4", |b| b.iter(|| run(&moe_dec, &dense_mix)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
