//! The LoRA trainer's flags, shared by `train` and `select evolve`.
//!
//! Every default is [`TrainConfig`]'s own (`TrainConfig::new(LoraTrainConfig::new())`), shown in
//! `--help` and never restated here.

use std::sync::LazyLock;

use clap::{Args, ValueEnum};
use lm_core::train::{LoraTrainConfig, OverflowPolicy, TrainConfig};

use super::format::FormatArg;

/// The library's defaults, the single source of every default below.
static DEFAULTS: LazyLock<TrainConfig> = LazyLock::new(|| TrainConfig::new(LoraTrainConfig::new()));

/// What to do with over-long examples ([`OverflowPolicy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OverflowArg {
    /// Keep the first --max-len tokens.
    Truncate,
    /// Drop the example.
    Skip,
}

impl From<OverflowPolicy> for OverflowArg {
    fn from(p: OverflowPolicy) -> Self {
        match p {
            OverflowPolicy::Truncate => OverflowArg::Truncate,
            OverflowPolicy::Skip => OverflowArg::Skip,
        }
    }
}

impl From<OverflowArg> for OverflowPolicy {
    fn from(a: OverflowArg) -> Self {
        match a {
            OverflowArg::Truncate => OverflowPolicy::Truncate,
            OverflowArg::Skip => OverflowPolicy::Skip,
        }
    }
}

/// The LoRA shape of a new adapter (`train`, `select evolve`; not `moe train`, whose experts keep
/// their own shapes).
#[derive(Debug, Clone, Args)]
pub struct LoraShapeFlags {
    /// LoRA rank.
    #[arg(long, default_value_t = DEFAULTS.lora.r)]
    pub lora_r: usize,
    /// LoRA alpha.
    #[arg(long, default_value_t = DEFAULTS.lora.alpha)]
    pub lora_alpha: f64,
    /// LoRA dropout.
    #[arg(long, default_value_t = DEFAULTS.lora.dropout)]
    pub lora_dropout: f64,
    /// rsLoRA scaling (alpha / sqrt(r)).
    #[arg(long)]
    pub rslora: bool,
    /// Target module suffixes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULTS.lora.target_modules.clone())]
    pub targets: Vec<String>,
    /// Only these layers, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
}

impl LoraShapeFlags {
    /// The LoRA config these flags describe.
    pub fn config(&self) -> LoraTrainConfig {
        LoraTrainConfig::new()
            .with_r(self.lora_r)
            .with_alpha(self.lora_alpha)
            .with_dropout(self.lora_dropout)
            .with_use_rslora(self.rslora)
            .with_target_modules(self.targets.clone())
            .with_layers(self.layers.clone())
    }
}

/// Optimisation, data and checkpoint settings, shared by every command that trains.
#[derive(Debug, Clone, Args)]
pub struct OptimFlags {
    /// Passes over the data.
    #[arg(long, default_value_t = DEFAULTS.epochs)]
    pub epochs: usize,
    /// Stop after this many optimiser steps instead.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Peak learning rate.
    #[arg(long, default_value_t = DEFAULTS.lr)]
    pub lr: f64,
    /// Examples per micro-batch.
    #[arg(long, default_value_t = DEFAULTS.batch_size)]
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    #[arg(long, default_value_t = DEFAULTS.grad_accum_steps)]
    pub grad_accum: usize,
    /// Warm-up fraction of the steps.
    #[arg(long, default_value_t = DEFAULTS.warmup_ratio)]
    pub warmup_ratio: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = DEFAULTS.weight_decay)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    #[arg(long, default_value_t = DEFAULTS.max_grad_norm.unwrap_or(0.0))]
    pub max_grad_norm: f64,
    /// Longest sequence in tokens.
    #[arg(long, default_value_t = DEFAULTS.max_len)]
    pub max_len: usize,
    /// What to do with longer examples.
    #[arg(long, value_enum, default_value_t = DEFAULTS.overflow.into())]
    pub overflow: OverflowArg,
    /// Pack short examples into rows of --max-len tokens.
    #[arg(long)]
    pub packing: bool,
    /// Seed of initialisation, shuffling and dropout.
    #[arg(long, default_value_t = DEFAULTS.seed)]
    pub seed: u64,
    /// Held-out loss every N steps (0 = only at the end).
    #[arg(long, default_value_t = DEFAULTS.eval_every)]
    pub eval_every: usize,
    /// Checkpoint every N steps (0 = only at the end), where the command keeps checkpoints.
    #[arg(long, default_value_t = DEFAULTS.checkpoint_every)]
    pub checkpoint_every: usize,
    /// How examples become text, the same as in `eval`.
    #[arg(long, value_enum, default_value_t = FormatArg::default())]
    pub format: FormatArg,
}

impl OptimFlags {
    /// The trainer config these flags describe around a LoRA config (the library's defaults
    /// elsewhere).
    pub fn config(&self, lora: LoraTrainConfig) -> TrainConfig {
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
            .with_overflow(self.overflow.into())
            .with_packing(self.packing)
            .with_seed(self.seed)
            .with_eval_every(self.eval_every)
            .with_checkpoint_every(self.checkpoint_every)
    }

    /// How examples become text.
    pub fn prompt_format(&self) -> lm_core::train::PromptFormat {
        self.format.prompt_format()
    }
}

/// LoRA shape and optimisation settings (`train`, `select evolve`).
#[derive(Debug, Clone, Args)]
pub struct TrainerFlags {
    /// The new adapter's shape.
    #[command(flatten)]
    pub lora: LoraShapeFlags,
    /// Optimisation settings.
    #[command(flatten)]
    pub optim: OptimFlags,
}

impl TrainerFlags {
    /// The trainer config these flags describe (the library's defaults elsewhere).
    pub fn config(&self) -> TrainConfig {
        self.optim.config(self.lora.config())
    }

    /// How examples become text.
    pub fn prompt_format(&self) -> lm_core::train::PromptFormat {
        self.optim.prompt_format()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Top {
        #[command(flatten)]
        trainer: TrainerFlags,
    }

    /// No flag given: exactly the library's config.
    #[test]
    fn defaults_are_the_library_defaults() {
        let t = Top::try_parse_from(["x"]).unwrap();
        let ours = serde_json::to_value(t.trainer.config()).unwrap();
        let lib = serde_json::to_value(TrainConfig::new(LoraTrainConfig::new())).unwrap();
        assert_eq!(ours, lib);
        assert_eq!(t.trainer.optim.format, FormatArg::Chat);
    }

    #[test]
    fn flags_override_and_raw_is_plain() {
        let t = Top::try_parse_from([
            "x",
            "--lora-r",
            "4",
            "--targets",
            "q_proj,k_proj,v_proj",
            "--max-grad-norm",
            "0",
            "--checkpoint-every",
            "7",
            "--format",
            "raw",
        ])
        .unwrap();
        let c = t.trainer.config();
        assert_eq!(c.lora.r, 4);
        assert_eq!(c.lora.target_modules, ["q_proj", "k_proj", "v_proj"]);
        assert_eq!(c.max_grad_norm, None);
        assert_eq!(c.checkpoint_every, 7);
        assert_eq!(t.trainer.optim.format, FormatArg::Raw);
        assert_eq!(
            t.trainer.prompt_format(),
            lm_core::train::PromptFormat::raw()
        );
    }
}
