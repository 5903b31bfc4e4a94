//! `openexpert bench-train` (cargo feature `bench`): LoRA training throughput on the workload of the PyTorch + PEFT
//! anchor (`benches/compare/train/anchor_train.py`): SmolLM2, LoRA r = 8 / alpha 16 / dropout 0
//! on q_proj + v_proj, batches of 4 × 128 deterministic token ids with a loss on every
//! next-token target, AdamW lr 1e-4; warm-up steps discarded, then the median step time.

use std::path::PathBuf;

use crate::cli::args::model::{ModelArgs, PrecisionArgs};
use clap::Args;
use lm_core::device::device_from_name;
use lm_core::train::{LoraTrainConfig, LoraTrainer, PromptFormat, TrainConfig, TrainExample};

/// Arguments of `bench-train`.
#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// Where to write the JSON results.
    #[arg(long)]
    pub json: PathBuf,
    /// Decoder to train.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Precision of the decoder's frozen weights and activations.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Warm-up steps (not timed).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Tokens per row.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`), if known.
pub(crate) fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs `bench-train`.
pub fn run(args: BenchTrainArgs, device: &str) -> anyhow::Result<()> {
    let device = device_from_name(device)?;
    let model = args.precision.load(&args.model.model, &device)?;
    let vocab = model.config().vocab_size as u64;
    let steps = args.warmup + args.steps.max(1);
    // The anchor's ids: ids[b][t] = ((b * 128 + t) * 7919 + 13) % vocab, the same batch each step.
    let example = |b: usize| {
        let ids: Vec<u32> = (0..args.seq_len)
            .map(|t| (((b * args.seq_len + t) as u64 * 7919 + 13) % vocab) as u32)
            .collect();
        let mut loss_mask = vec![true; ids.len()];
        loss_mask[0] = false;
        TrainExample::Tokens { ids, loss_mask }
    };
    let data: Vec<TrainExample> = (0..args.batch).map(example).collect();
    let lora = LoraTrainConfig::new()
        .with_r(8)
        .with_alpha(16.0)
        .with_dropout(0.0)
        .with_target_modules(vec!["q_proj".into(), "v_proj".into()]);
    let config = TrainConfig::new(lora)
        .with_max_steps(Some(steps))
        .with_batch_size(args.batch)
        .with_lr(1e-4)
        .with_warmup_ratio(0.0)
        .with_max_grad_norm(None)
        .with_max_len(args.seq_len);
    let mut step_seconds = Vec::new();
    let mut losses = Vec::new();
    LoraTrainer::new(&model, config)
        .with_format(PromptFormat::raw())
        .with_observer(|log| {
            eprintln!(
                "step {}: {:.3} s, loss {:.4}",
                log.step, log.seconds, log.loss
            );
            step_seconds.push(log.seconds);
            losses.push(log.loss);
        })
        .fit(&data, &[])?;
    let mut timed = step_seconds[args.warmup..].to_vec();
    timed.sort_by(f64::total_cmp);
    let median = timed[timed.len() / 2];
    let tokens_per_s = (args.batch * args.seq_len) as f64 / median;
    let result = serde_json::json!({
        "impl": "openexpert (burn)",
        "device": format!("{device:?}"),
        "dtype": args.precision.precision.name(),
        "threads": rayon::current_num_threads(),
        "batch": args.batch,
        "seq_len": args.seq_len,
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targets": ["q_proj", "v_proj"]},
        "tokens_per_s": tokens_per_s,
        "median_step_s": median,
        "step_seconds": step_seconds,
        "losses": losses,
        "peak_rss_mb": peak_rss_mb(),
    });
    atomic_fs::write_atomic(
        &args.json,
        serde_json::to_string_pretty(&result)?.as_bytes(),
    )?;
    eprintln!("{tokens_per_s:.1} tokens/s (median step {median:.3} s)");
    Ok(())
}
