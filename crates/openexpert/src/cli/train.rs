//! `openexpert train`: LoRA fine-tuning of a model on a JSONL file, written as a PEFT adapter.
//!
//! The output directory receives `adapter_config.json` + `adapter_model.safetensors` (loadable
//! by the real `peft` library), `train_report.json` and `train_config.json`; checkpoints go to
//! `OUTPUT/checkpoints/` and `--resume` continues from the newest one.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use lm_core::device::device_from_name;
use lm_core::model::LanguageModel;
use lm_core::train::{LoraTrainConfig, LoraTrainer, OverflowPolicy, PromptFormat, TrainConfig};
use openexpert::training_data::read_training_jsonl;

use super::jsonl::write_atomic;

/// How examples become text.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    /// The model's chat template.
    Chat,
    /// Prompt, response and EOS as plain text.
    Raw,
}

/// What to do with over-long examples.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OverflowArg {
    /// Keep the first --max-len tokens.
    Truncate,
    /// Drop the example.
    Skip,
}

/// Arguments of `train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// A GGUF file, an HF directory, or a default asset name.
    #[arg(long, default_value = "smollm2-135m-instruct")]
    pub model: String,
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

/// The trainer's flags, shared by `train` and `select evolve`.
#[derive(Debug, Args)]
pub struct TrainerFlags {
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    pub lora_r: usize,
    /// LoRA alpha.
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f64,
    /// LoRA dropout.
    #[arg(long, default_value_t = 0.05)]
    pub lora_dropout: f64,
    /// rsLoRA scaling (alpha / sqrt(r)).
    #[arg(long)]
    pub rslora: bool,
    /// Target module suffixes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "q_proj,v_proj")]
    pub targets: Vec<String>,
    /// Only these layers, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// Passes over the data.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Stop after this many optimiser steps instead.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Examples per micro-batch.
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Warm-up fraction of the steps.
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Longest sequence in tokens.
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// What to do with longer examples.
    #[arg(long, value_enum, default_value_t = OverflowArg::Truncate)]
    pub overflow: OverflowArg,
    /// Pack short examples into rows of --max-len tokens.
    #[arg(long)]
    pub packing: bool,
    /// Seed of initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Held-out loss every N steps (and at the end).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// Checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// How examples become text.
    #[arg(long, value_enum, default_value_t = FormatArg::Chat)]
    pub format: FormatArg,
}

impl TrainerFlags {
    /// The trainer config these flags describe.
    pub fn config(&self) -> TrainConfig {
        let lora = LoraTrainConfig::new()
            .with_r(self.lora_r)
            .with_alpha(self.lora_alpha)
            .with_dropout(self.lora_dropout)
            .with_use_rslora(self.rslora)
            .with_target_modules(self.targets.clone())
            .with_layers(self.layers.clone());
        TrainConfig::new(lora)
            .with_epochs(self.epochs)
            .with_max_steps(self.max_steps)
            .with_lr(self.lr)
            .with_batch_size(self.batch_size)
            .with_grad_accum_steps(self.grad_accum)
            .with_warmup_ratio(self.warmup_ratio)
            .with_weight_decay(self.weight_decay)
            .with_max_grad_norm((self.max_grad_norm > 0.0).then_some(self.max_grad_norm))
            .with_max_len(self.max_len)
            .with_overflow(match self.overflow {
                OverflowArg::Truncate => OverflowPolicy::Truncate,
                OverflowArg::Skip => OverflowPolicy::Skip,
            })
            .with_packing(self.packing)
            .with_seed(self.seed)
            .with_eval_every(self.eval_every)
            .with_checkpoint_every(self.checkpoint_every)
    }

    /// How examples become text.
    pub fn prompt_format(&self) -> PromptFormat {
        match self.format {
            FormatArg::Chat => PromptFormat::default(),
            FormatArg::Raw => PromptFormat::raw(),
        }
    }
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
    let model = LanguageModel::load(&args.model, &device)?;
    let config = args.trainer.config();
    let format = args.trainer.prompt_format();
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let outcome = LoraTrainer::new(&model, config.clone())
        .with_format(format)
        .with_checkpoints(&checkpoints, args.resume)
        .with_progress(true)
        .fit(&train, &eval)?;
    let adapter = lora_zoo::adapter_from_trained(&outcome.weights, Some(&args.model))?;
    save_adapter_atomically(&adapter, &args.output)?;
    let report = serde_json::to_string_pretty(&outcome.report)?;
    write_atomic(&args.output.join("train_report.json"), report.as_bytes())?;
    let config_json = serde_json::to_string_pretty(&config)?;
    write_atomic(
        &args.output.join("train_config.json"),
        config_json.as_bytes(),
    )?;
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

/// Writes the PEFT files into a temporary sibling directory, then renames them into place.
fn save_adapter_atomically(adapter: &lora_zoo::LoraAdapter, dir: &Path) -> anyhow::Result<()> {
    let tmp = dir.join(".adapter-tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    adapter.save(&tmp)?;
    for entry in std::fs::read_dir(&tmp)? {
        let entry = entry?;
        std::fs::rename(entry.path(), dir.join(entry.file_name()))?;
    }
    std::fs::remove_dir_all(&tmp)?;
    Ok(())
}
