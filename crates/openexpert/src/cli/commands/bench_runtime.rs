//! `openexpert bench-runtime` (cargo feature `bench`): the Rust side of `benches/compare/` (see
//! its README).
//!
//! Measures, on the default models and the anchor's inputs (`benches/compare/inputs.json`):
//! scoring throughput (batch 8 × 256 tokens, teacher-forced log-probs), greedy decoding (batch 1,
//! 32-token prompt, 64 new tokens with the KV cache; `--decode-batch N` decodes N rows together)
//! and MiniLM embedding throughput (256 sentences in batches of 64, tokenisation included;
//! `--skip-embed` leaves it out). Medians over repeated runs
//! after a warm-up, written as JSON with the same keys as the PyTorch anchor.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use lm_core::assets::DEFAULT_ENCODER;
use lm_core::device::device_from_name;
use lm_core::generate::{GenerationConfig, generate};
use lm_core::model::{ExpertMix, SentenceEncoder};
use lm_core::score::{ScoreOptions, ScoreRequest, score};

use crate::cli::args::model::{ModelArgs, PrecisionArgs, WeightsArgs};
use atomic_fs::write_atomic;

/// Arguments of `bench-runtime`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Where to write the JSON results.
    #[arg(long)]
    pub json: PathBuf,
    /// Decoder to measure.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Precision of the decoder's frozen weights and activations.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// Weights the decoding benchmark multiplies by (scoring stays f32).
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// Sentence encoder to measure.
    #[arg(long, default_value = DEFAULT_ENCODER)]
    pub encoder: String,
    /// Timed runs of the scoring benchmark.
    #[arg(long, default_value_t = 5)]
    pub score_runs: usize,
    /// Timed runs of the decoding and embedding benchmarks.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The anchor's inputs (`benches/compare/inputs.json`: score ids, decode prompt, sentences),
    /// so both sides measure the same work.
    #[arg(long, default_value = "benches/compare/inputs.json")]
    pub inputs: PathBuf,
    /// Rows decoded together (each row the anchor's prompt rotated by its row index, so rows
    /// differ but have the same length). 1 is the anchor's workload.
    #[arg(long, default_value_t = 1)]
    pub decode_batch: usize,
    /// Leave out the embedding benchmark (and the sentence encoder it loads).
    #[arg(long)]
    pub skip_embed: bool,
}

/// The work measured, shared with the PyTorch anchor.
#[derive(Debug, serde::Deserialize)]
struct BenchInputs {
    score_ids: Vec<Vec<u32>>,
    decode_prompt_ids: Vec<u32>,
    decode_new_tokens: usize,
    embed_sentences: Vec<String>,
    embed_batch: usize,
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
    let text = std::fs::read_to_string(&args.inputs).map_err(|e| {
        anyhow::anyhow!(
            "reading {}: {e}; run from the repository root or pass --inputs benches/compare/inputs.json",
            args.inputs.display()
        )
    })?;
    let inputs: BenchInputs = serde_json::from_str(&text)?;
    let mut model = args.precision.load(&args.model.model, &device)?;
    args.weights.apply(&mut model)?;

    // (a) Scoring: 8 × 256.
    let requests: Vec<ScoreRequest> = inputs
        .score_ids
        .iter()
        .map(|ids| ScoreRequest::text(ids.clone()))
        .collect();
    let (score_rows, score_len) = (requests.len(), requests[0].target.len());
    let options = ScoreOptions {
        batch_size: score_rows,
        keep_last_logits: false,
        ..Default::default()
    };
    score(&model, &requests, &options, &ExpertMix::Base)?; // warm-up
    let mut score_times = Vec::new();
    for _ in 0..args.score_runs.max(1) {
        let (t, _) = time(|| Ok(score(&model, &requests, &options, &ExpertMix::Base)?))?;
        eprintln!("score {score_rows}x{score_len}: {t:.3} s");
        score_times.push(t);
    }

    // (b) Greedy decoding: the anchor's prompt (batch 1), or `decode_batch` rotations of it.
    let decode_batch = args.decode_batch.max(1);
    let prompt: Vec<Vec<u32>> = (0..decode_batch)
        .map(|r| {
            let mut ids = inputs.decode_prompt_ids.clone();
            let n = ids.len();
            ids.rotate_left(r % n.max(1));
            ids
        })
        .collect();
    let new_tokens = inputs.decode_new_tokens;
    let config = GenerationConfig {
        max_new_tokens: new_tokens,
        stop_at_eos: false,
        ..Default::default()
    };
    generate(&model, &prompt, &config, &ExpertMix::Base)?; // warm-up
    let mut decode_times = Vec::new();
    for _ in 0..args.runs.max(1) {
        let (t, out) = time(|| Ok(generate(&model, &prompt, &config, &ExpertMix::Base)?))?;
        anyhow::ensure!(
            out.iter().all(|o| o.token_ids.len() == new_tokens),
            "expected {new_tokens} new tokens in each of {decode_batch} rows"
        );
        eprintln!("decode {decode_batch} x {new_tokens} tokens: {t:.3} s");
        decode_times.push(t);
    }
    drop(model);

    // (c) Sentence embeddings: the anchor's sentences and batch size.
    let sentences = &inputs.embed_sentences;
    let batch = inputs.embed_batch;
    let mut embed_times = Vec::new();
    if !args.skip_embed {
        let encoder = SentenceEncoder::load(&args.encoder, &device)?;
        encoder.embed(sentences, batch)?; // warm-up
        for _ in 0..args.runs.max(1) {
            let (t, _) = time(|| Ok(encoder.embed(sentences, batch)?))?;
            eprintln!("embed {} sentences: {t:.3} s", sentences.len());
            embed_times.push(t);
        }
    }

    let seconds: std::collections::BTreeMap<String, Vec<f64>> = [
        ("score".to_string(), score_times),
        ("decode".to_string(), decode_times),
        ("embed".to_string(), embed_times),
    ]
    .into();
    let mut result = openexpert::bench::RuntimeResult::from_seconds(
        "openexpert",
        threads,
        seconds,
        score_rows * score_len,
        decode_batch * new_tokens,
        sentences.len(),
    );
    result
        .extra
        .insert("device".into(), format!("{device:?}").into());
    let embed_shape = if args.skip_embed {
        serde_json::Value::Null
    } else {
        serde_json::json!({"sentences": sentences.len(), "batch": batch})
    };
    result
        .extra
        .insert("dtype".into(), args.precision.precision.name().into());
    result.extra.insert(
        "decode_weights".into(),
        args.weights.decode_weights.name().into(),
    );
    result.extra.insert(
        "shapes".into(),
        serde_json::json!({
            "score": [score_rows, score_len],
            "decode": {"prompt": inputs.decode_prompt_ids.len(), "new": new_tokens, "batch": decode_batch},
            "embed": embed_shape,
        }),
    );
    let json = serde_json::to_value(&result)?;
    write_atomic(&args.json, serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}
