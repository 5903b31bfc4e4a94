//! Runtime kernels: teacher-forced scoring and greedy decoding, on the real SmolLM2 when it has
//! been fetched (`openexpert fetch`) and on a tiny random model otherwise.
//!
//! Run: `cargo bench -p openexpert-benches --bench runtime`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use openexpert::lm_core::testing::tiny_language_model;
use openexpert::prelude::*;

fn model() -> (LanguageModel, &'static str) {
    let device = device_from_name("cpu").expect("cpu device");
    match LanguageModel::load(openexpert::lm_core::assets::DEFAULT_MODEL, &device) {
        Ok(m) => (m, "smollm2"),
        Err(_) => (tiny_language_model(0, &device), "tiny"),
    }
}

fn ids(n: usize, vocab: usize, seed: usize) -> Vec<u32> {
    (0..n)
        .map(|t| (((seed * n + t) * 7919 + 13) % vocab) as u32)
        .collect()
}

fn runtime(c: &mut Criterion) {
    let (m, name) = model();
    let vocab = m.config().vocab_size;
    let mut group = c.benchmark_group(format!("runtime-{name}"));
    group.sample_size(10);

    let (rows, len) = (8, 128);
    let requests: Vec<ScoreRequest> = (0..rows)
        .map(|r| ScoreRequest::text(ids(len, vocab, r)))
        .collect();
    let options = ScoreOptions {
        batch_size: rows,
        keep_last_logits: false,
        ..Default::default()
    };
    group.throughput(Throughput::Elements((rows * len) as u64));
    group.bench_function("score 8x128", |b| {
        b.iter(|| score(&m, &requests, &options, &ExpertMix::Base).unwrap())
    });

    let prompt = vec![ids(32, vocab, 99)];
    let config = GenerationConfig {
        max_new_tokens: 16,
        stop_at_eos: false,
        ..Default::default()
    };
    group.throughput(Throughput::Elements(16));
    group.bench_function("greedy decode 16 tokens", |b| {
        b.iter(|| generate(&m, &prompt, &config, &ExpertMix::Base).unwrap())
    });
    // A batch of rows decoding together: exercises the in-place KV cache and the batched head.
    let prompts: Vec<Vec<u32>> = (0..16).map(|r| ids(32 + r % 4, vocab, 200 + r)).collect();
    group.throughput(Throughput::Elements(16 * 16));
    group.bench_function("greedy decode 16 rows x 16 tokens", |b| {
        b.iter(|| generate(&m, &prompts, &config, &ExpertMix::Base).unwrap())
    });
    group.finish();
}

criterion_group!(benches, runtime);
criterion_main!(benches);
