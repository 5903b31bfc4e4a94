//! `openexpert train`: LoRA fine-tuning of a model on a JSONL file, written as a PEFT adapter.
//!
//! The output directory receives `adapter_config.json` + `adapter_model.safetensors` (loadable
//! by the real `peft` library), `train_report.json` and `train_config.json`; checkpoints go to
//! `OUTPUT/checkpoints/` (at the end, and every `--checkpoint-every` steps) and `--resume`
//! continues from the newest one.

use std::path::PathBuf;

use crate::cli::args::model::{ModelArgs, PrecisionArgs};
use crate::cli::args::trainer::TrainerFlags;
use crate::cli::run_dir;
use atomic_fs::write_atomic;
use clap::Args;
use lm_core::device::device_from_name;
use lm_core::train::LoraTrainer;

/// Arguments of `train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The decoder.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Precision of the decoder's frozen weights and activations.
    #[command(flatten)]
    pub precision: PrecisionArgs,
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
    let inputs = run_dir::prepare(&args.output, args.resume, &args.data, args.eval.as_deref())?;
    let (checkpoints, train, eval) = (inputs.checkpoints, inputs.train, inputs.eval);
    let device = device_from_name(device)?;
    let model = args.precision.load(&args.model.model, &device)?;
    let config = args.trainer.config();
    let format = args.trainer.prompt_format();
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
    run_dir::commit(&args.output, |dir| {
        adapter.save(dir)?;
        for (name, text) in &reports {
            write_atomic(&dir.join(name), text.as_bytes())?;
        }
        Ok(())
    })?;
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
