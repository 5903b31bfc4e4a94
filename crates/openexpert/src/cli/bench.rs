//! `openexpert bench-runtime`: the Rust side of `benches/compare/` (see its README).
//!
//! Measures, on the default models: scoring throughput (batch 8 × 256 tokens, teacher-forced
//! log-probs), greedy decoding (batch 1, 32-token prompt, 64 new tokens with the KV cache) and
//! MiniLM embedding throughput (256 sentences in batches of 64). Medians over repeated runs
//! after a warm-up, written as JSON with the same keys as the PyTorch anchor.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use lm_core::device::device_from_name;
use lm_core::generate::{GenerationConfig, generate};
use lm_core::model::{ExpertMix, LanguageModel, SentenceEncoder};
use lm_core::score::{ScoreOptions, ScoreRequest, score};

use super::jsonl::write_atomic;

/// Arguments of `bench-runtime`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Where to write the JSON results.
    #[arg(long)]
    pub json: PathBuf,
    /// Decoder to measure.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    pub model: String,
    /// Sentence encoder to measure.
    #[arg(long, default_value = "minilm-l6-v2")]
    pub encoder: String,
    /// Timed runs of the scoring benchmark.
    #[arg(long, default_value_t = 5)]
    pub score_runs: usize,
    /// Timed runs of the decoding and embedding benchmarks.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// Deterministic token ids in `1..vocab` (a 64-bit LCG), the same scheme as the anchor script.
pub fn bench_ids(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (1 + (x >> 33) % (vocab as u64 - 1)) as u32
        })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(f64, T)> {
    let t = Instant::now();
    let out = f()?;
    Ok((t.elapsed().as_secs_f64(), out))
}

/// Runs `bench-runtime`.
pub fn run(args: BenchArgs, device: &str) -> anyhow::Result<()> {
    let device = device_from_name(device)?;
    let threads = rayon::current_num_threads();
    let model = LanguageModel::load(&args.model, &device)?;
    let vocab = model.config().vocab_size;

    // (a) Scoring: 8 × 256.
    let requests: Vec<ScoreRequest> = (0..8)
        .map(|r| ScoreRequest::text(bench_ids(256, vocab, 1000 + r)))
        .collect();
    let options = ScoreOptions {
        batch_size: 8,
        keep_last_logits: false,
    };
    score(&model, &requests, &options, &ExpertMix::Base)?; // warm-up
    let mut score_times = Vec::new();
    for _ in 0..args.score_runs.max(1) {
        let (t, _) = time(|| Ok(score(&model, &requests, &options, &ExpertMix::Base)?))?;
        eprintln!("score 8x256: {t:.3} s");
        score_times.push(t);
    }
    let score_tps = 8.0 * 256.0 / median(&mut score_times.clone());

    // (b) Greedy decoding: batch 1, 32-token prompt, 64 new tokens.
    let prompt = vec![bench_ids(32, vocab, 7)];
    let config = GenerationConfig {
        max_new_tokens: 64,
        stop_at_eos: false,
        ..Default::default()
    };
    generate(&model, &prompt, &config, &ExpertMix::Base)?; // warm-up
    let mut decode_times = Vec::new();
    for _ in 0..args.runs.max(1) {
        let (t, out) = time(|| Ok(generate(&model, &prompt, &config, &ExpertMix::Base)?))?;
        anyhow::ensure!(out[0].token_ids.len() == 64, "expected 64 new tokens");
        eprintln!("decode 64 tokens: {t:.3} s");
        decode_times.push(t);
    }
    let decode_tps = 64.0 / median(&mut decode_times.clone());
    drop(model);

    // (c) Sentence embeddings: 256 sentences of about 32 tokens, batches of 64.
    let encoder = SentenceEncoder::load(&args.encoder, &device)?;
    let sentences: Vec<String> = (0..256)
        .map(|i| {
            format!(
                "Sentence number {i} talks about how a small model can learn a new task from a handful of labelled examples and open data."
            )
        })
        .collect();
    encoder.embed(&sentences, 64)?; // warm-up
    let mut embed_times = Vec::new();
    for _ in 0..args.runs.max(1) {
        let (t, _) = time(|| Ok(encoder.embed(&sentences, 64)?))?;
        eprintln!("embed 256 sentences: {t:.3} s");
        embed_times.push(t);
    }
    let embed_sps = 256.0 / median(&mut embed_times.clone());

    let json = serde_json::json!({
        "implementation": "openexpert",
        "device": format!("{device:?}"),
        "threads": threads,
        "score_tokens_per_s": score_tps,
        "decode_tokens_per_s": decode_tps,
        "embed_sentences_per_s": embed_sps,
        "runs": {"score_s": score_times, "decode_s": decode_times, "embed_s": embed_times},
        "shapes": {"score": [8, 256], "decode": {"prompt": 32, "new": 64, "batch": 1}, "embed": {"sentences": 256, "batch": 64}},
    });
    write_atomic(&args.json, serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}
