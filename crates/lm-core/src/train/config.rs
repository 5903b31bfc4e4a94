//! Hyper-parameters of supervised LoRA fine-tuning ([`TrainConfig`], [`LoraTrainConfig`]).
//!
//! Defaults follow what PEFT + the HF `Trainer` do for a LoRA run unless stated otherwise, so a
//! config written for one reads naturally as the other.

use burn::config::Config;

/// What to do with an example longer than [`TrainConfig::max_len`].
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Keep the first `max_len` tokens (the example still counts if a response token survives).
    Truncate,
    /// Drop the example (reported in the dataset statistics).
    Skip,
}

/// The LoRA adapter being trained: `ΔW = s · B A` on each target module, `s = alpha / r`
/// (or `alpha / √r` with rsLoRA).
#[derive(Config, Debug, PartialEq)]
pub struct LoraTrainConfig {
    /// Rank `r` of every adapted module.
    #[config(default = 8)]
    pub r: usize,
    /// Scaling numerator `alpha`.
    #[config(default = 16.0)]
    pub alpha: f64,
    /// Dropout applied to the adapter's input during training (PEFT's `lora_dropout`).
    #[config(default = 0.05)]
    pub dropout: f64,
    /// rsLoRA scaling `alpha / √r` instead of `alpha / r`.
    #[config(default = false)]
    pub use_rslora: bool,
    /// Modules to adapt (`q_proj`, `v_proj`, `gate_proj`, ...), matched by PEFT's list rule
    /// (a name equal to an entry or ending with `.{entry}`) against the HF names
    /// `model.layers.{i}.self_attn.q_proj`.
    #[config(default = "vec![\"q_proj\".to_string(), \"v_proj\".to_string()]")]
    pub target_modules: Vec<String>,
    /// Only these layer indices (PEFT's `layers_to_transform`); all layers when `None`.
    pub layers: Option<Vec<usize>>,
}

impl LoraTrainConfig {
    /// The scale `s` applied to `B A` ([`lora_scale`](crate::model::lora_scale)).
    pub fn scale(&self) -> f32 {
        crate::model::lora_scale(self.r, self.alpha, self.use_rslora) as f32
    }

    /// The modules this config adapts: PEFT's list rule
    /// ([`TargetRule`](crate::model::TargetRule)) over `target_modules` and `layers`.
    pub fn target_rule(&self) -> crate::model::TargetRule<'_> {
        crate::model::TargetRule {
            targets: &self.target_modules,
            layers: self.layers.as_deref(),
        }
    }
}

/// Supervised fine-tuning: data, optimiser, schedule, checkpoints.
#[derive(Config, Debug)]
pub struct TrainConfig {
    /// The adapter to train.
    pub lora: LoraTrainConfig,
    /// Passes over the training set (ignored when `max_steps` is set).
    #[config(default = 1)]
    pub epochs: usize,
    /// Stop after this many optimiser steps instead of after `epochs`.
    pub max_steps: Option<usize>,
    /// Examples per micro-batch.
    #[config(default = 4)]
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed before one optimiser step.
    #[config(default = 1)]
    pub grad_accum_steps: usize,
    /// Peak learning rate of AdamW.
    #[config(default = 2e-4)]
    pub lr: f64,
    /// Decoupled weight decay of AdamW (PyTorch's `AdamW(weight_decay=...)`; HF Trainer uses 0).
    #[config(default = 0.0)]
    pub weight_decay: f64,
    /// AdamW `beta1`.
    #[config(default = 0.9)]
    pub beta1: f64,
    /// AdamW `beta2`.
    #[config(default = 0.999)]
    pub beta2: f64,
    /// AdamW `epsilon`.
    #[config(default = 1e-8)]
    pub eps: f64,
    /// Fraction of the total steps spent warming the learning rate up linearly from 0.
    #[config(default = 0.1)]
    pub warmup_ratio: f64,
    /// The learning rate decays by a half cosine to `lr * min_lr_ratio` at the last step.
    #[config(default = 0.0)]
    pub min_lr_ratio: f64,
    /// Clip the global gradient norm to this value (`None`: no clipping).
    #[config(default = "Some(1.0)")]
    pub max_grad_norm: Option<f64>,
    /// Longest training sequence in tokens.
    #[config(default = 512)]
    pub max_len: usize,
    /// What to do with longer examples.
    #[config(default = "OverflowPolicy::Truncate")]
    pub overflow: OverflowPolicy,
    /// Pack several short examples into one row of `max_len` tokens (block-diagonal attention, so
    /// examples never see each other) instead of padding each to the batch's longest.
    #[config(default = false)]
    pub packing: bool,
    /// Seed of the adapter initialisation, the shuffling and the dropout masks.
    #[config(default = 42)]
    pub seed: u64,
    /// Evaluate the held-out loss every this many steps (and at the end); 0 = only at the end.
    #[config(default = 0)]
    pub eval_every: usize,
    /// Write a checkpoint every this many steps (0 = only at the end); needs a checkpoint
    /// directory. A run killed between checkpoints resumes from the last one.
    #[config(default = 50)]
    pub checkpoint_every: usize,
    /// Checkpoints kept on disk (older ones are deleted after a newer one is safely written).
    #[config(default = 2)]
    pub keep_checkpoints: usize,
}
