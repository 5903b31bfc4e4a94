//! `openexpert train`: LoRA fine-tuning of a model on a JSONL file, written as a PEFT adapter.
//!
//! The output directory receives `adapter_config.json` + `adapter_model.safetensors` (loadable
//! by the real `peft` library), `train_report.json` and `train_config.json`; checkpoints go to
//! `OUTPUT/checkpoints/` (at the end, and every `--checkpoint-every` steps) and `--resume`
//! continues from the newest one.

use std::path::{Path, PathBuf};

use crate::cli::args::model::ModelArgs;
use crate::cli::args::trainer::TrainerFlags;
use anyhow::{Context, bail};
use atomic_fs::write_atomic;
use clap::Args;
use lm_core::device::device_from_name;
use lm_core::model::LanguageModel;
use lm_core::train::LoraTrainer;
use openexpert::training_data::read_training_jsonl;

/// Arguments of `train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The decoder.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training JSONL (prompt/response, question/answer[/rationale], Alpaca, ShareGPT or chat).
    #[arg(long)]
    pub data: PathBuf,
    /// Held-out JSONL for the evaluation loss.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Output directory (PEFT adapter + reports + checkpoints).
    #[arg(long)]
    pub output: PathBuf,
    /// Continue from the newest checkpoint in OUTPUT/checkpoints.
    #[arg(long)]
    pub resume: bool,
    /// LoRA and optimisation settings.
    #[command(flatten)]
    pub trainer: TrainerFlags,
}

/// Runs `train`.
pub fn run(args: TrainArgs, device: &str) -> anyhow::Result<()> {
    let checkpoints = args.output.join("checkpoints");
    if !args.resume && !lm_core::train::checkpoint::list(&checkpoints)?.is_empty() {
        bail!(
            "{} holds checkpoints of an earlier run: pass --resume to continue it, or choose another --output",
            checkpoints.display()
        );
    }
    let train = read_training_jsonl(&args.data)?;
    let eval = match &args.eval {
        Some(p) => read_training_jsonl(p)?,
        None => Vec::new(),
    };
    let device = device_from_name(device)?;
    let model = LanguageModel::load(&args.model.model, &device)?;
    let config = args.trainer.config();
    let format = args.trainer.prompt_format();
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let outcome = LoraTrainer::new(&model, config.clone())
        .with_format(format)
        .with_checkpoints(&checkpoints, args.resume)
        .with_progress(true)
        .fit(&train, &eval)?;
    let adapter = lora_zoo::adapter_from_trained(&outcome.weights, Some(&args.model.model))?;
    let reports = [
        (
            "train_report.json",
            serde_json::to_string_pretty(&outcome.report)? + "\n",
        ),
        (
            "train_config.json",
            serde_json::to_string_pretty(&config)? + "\n",
        ),
    ];
    save_run_dir(&adapter, &reports, &args.output)?;
    let r = &outcome.report;
    eprintln!(
        "trained {} steps ({} examples kept of {}), loss {:.4} -> {:.4}{}, {:.0} tokens/s; adapter in {}",
        r.steps,
        r.train_data.kept,
        r.train_data.examples,
        r.losses.first().copied().unwrap_or(f64::NAN),
        r.final_train_loss,
        match (r.base_eval_loss, r.eval_losses.last()) {
            (Some(b), Some((_, e))) => format!(", held-out {b:.4} -> {e:.4}"),
            (None, Some((_, e))) => format!(", held-out {e:.4}"),
            _ => String::new(),
        },
        r.tokens_per_second,
        args.output.display()
    );
    Ok(())
}

/// Replaces `dir` as a whole with the PEFT adapter files and the reports, keeping the training
/// checkpoints (moved into the new directory before the swap), so a crash leaves either the old
/// directory or the new one, never a new config beside old weights.
fn save_run_dir(
    adapter: &lora_zoo::LoraAdapter,
    reports: &[(&str, String)],
    dir: &Path,
) -> anyhow::Result<()> {
    let staged = atomic_fs::StagedDir::replacing(dir)?;
    adapter.save(staged.path())?;
    for (name, text) in reports {
        write_atomic(&staged.path().join(name), text.as_bytes())?;
    }
    let checkpoints = dir.join("checkpoints");
    if checkpoints.is_dir() {
        std::fs::rename(&checkpoints, staged.path().join("checkpoints"))
            .with_context(|| format!("moving {} into the new output", checkpoints.display()))?;
    }
    staged.commit()?;
    Ok(())
}
