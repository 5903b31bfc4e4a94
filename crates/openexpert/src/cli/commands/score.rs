//! `openexpert score`: per-row log-prob, token count and perplexity of a JSONL file.
//!
//! Each input line is `{"text": ...}` (every token with a predecessor is scored) or
//! `{"prompt": ..., "target": ...}` (target tokens scored given the prompt; the two are
//! tokenised separately and joined). Output lines repeat the input fields and add `logprob`,
//! `n_tokens` and `ppl`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use lm_core::device::device_from_name;
use lm_core::model::LanguageModel;
use lm_core::score::{ScoreOptions, ScoreRequest, score_with_progress};

use crate::cli::args::adapters::AdapterArgs;
use crate::cli::args::model::{ModelArgs, PrecisionArgs};
use crate::cli::jsonl::read_objects;
use atomic_fs::write_atomic;

/// Arguments of `score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// The decoder.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Precision of the decoder's frozen weights and activations.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// PEFT adapters to apply.
    #[command(flatten)]
    pub adapter: AdapterArgs,
    /// Input JSONL.
    #[arg(long)]
    pub input: PathBuf,
    /// Output JSONL.
    #[arg(long)]
    pub output: PathBuf,
    /// Also write the last-position logits of every row (tensor `logits`, `[rows, vocab]`, f32;
    /// the header's metadata names the model and `--dtype`).
    #[arg(long)]
    pub dump_logits: Option<PathBuf>,
    /// Rows per forward pass.
    #[arg(long, default_value_t = ScoreOptions::default().batch_size)]
    pub batch_size: usize,
}

/// Runs `score`.
pub fn run(args: ScoreArgs, device: &str) -> anyhow::Result<()> {
    let rows = read_objects(&args.input)?;
    let device = device_from_name(device)?;
    let mut model = args.precision.load(&args.model.model, &device)?;
    let mix = args.adapter.apply(&mut model)?;
    let requests = rows
        .iter()
        .enumerate()
        .map(|(i, row)| {
            request_for(&model, row)
                .with_context(|| format!("{}: row {}", args.input.display(), i + 1))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = ScoreOptions {
        batch_size: args.batch_size,
        keep_last_logits: args.dump_logits.is_some(),
        ..Default::default()
    };
    let bar = lm_core::progress::bar(requests.len() as u64, "scoring", "rows");
    let scores = score_with_progress(&model, &requests, &options, &mix, &mut |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    let mut out = String::new();
    for (row, s) in rows.iter().zip(&scores) {
        let mut row = row.clone();
        row.insert("logprob".into(), serde_json::json!(s.logprob));
        row.insert("n_tokens".into(), serde_json::json!(s.n_tokens));
        row.insert("ppl".into(), serde_json::json!(s.ppl()));
        out.push_str(&serde_json::Value::Object(row).to_string());
        out.push('\n');
    }
    write_atomic(&args.output, out.as_bytes())?;
    // A NaN log-prob is written as `null`: say so, with the likely cause.
    let bad: Vec<usize> = (0..scores.len())
        .filter(|&i| !scores[i].logprob.is_finite())
        .collect();
    if !bad.is_empty() {
        eprintln!(
            "warning: {} of {} rows scored a non-finite log-prob (written as null; first row {}){}",
            bad.len(),
            scores.len(),
            bad[0] + 1,
            if args.precision.precision == lm_core::model::Precision::F16 {
                "; f16's range (±65504) may be exceeded: try `--dtype bf16`"
            } else {
                ""
            }
        );
    }
    if let Some(path) = &args.dump_logits {
        let vocab = model.config().vocab_size;
        let mut bytes = Vec::with_capacity(scores.len() * vocab * 4);
        for s in &scores {
            for v in s.last_logits.as_deref().expect("asked for last logits") {
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            vec![scores.len(), vocab],
            &bytes,
        )?;
        // The header says what produced the logits (they are f32 whatever `--dtype` was).
        let metadata = std::collections::HashMap::from([
            ("model".to_string(), args.model.model.clone()),
            ("dtype".to_string(), args.precision.precision.to_string()),
        ]);
        let data = safetensors::serialize([("logits", view)], Some(metadata))?;
        write_atomic(path, &data)?;
    }
    Ok(())
}

fn request_for(
    model: &LanguageModel,
    row: &serde_json::Map<String, serde_json::Value>,
) -> anyhow::Result<ScoreRequest> {
    let field = |k: &str| row.get(k).and_then(|v| v.as_str());
    match (field("text"), field("prompt"), field("target")) {
        (Some(text), None, None) => Ok(ScoreRequest::text(model.encode(text)?)),
        (None, Some(prompt), Some(target)) => {
            let target_ids = model.encode_continuation(target)?;
            if target_ids.is_empty() {
                bail!("`target` is empty after tokenisation: nothing to score");
            }
            Ok(ScoreRequest {
                prompt: model.encode(prompt)?,
                target: target_ids,
            })
        }
        _ => bail!(
            "expected a string `text` field, or string `prompt` and `target` fields; found keys {:?}",
            row.keys().collect::<Vec<_>>()
        ),
    }
}
