//! Supervised LoRA fine-tuning on burn's autodiff, with the base model frozen.
//!
//! - [`config`]: [`TrainConfig`] / [`LoraTrainConfig`] with documented defaults.
//! - [`data`]: examples → token ids with a response-only loss mask; padded or packed batches.
//! - [`lora`]: the trainable factors on the host ([`LoraWeights`]) and how they enter the
//!   decoder's `AdaptedLinear`s.
//! - [`optim`]: AdamW, warm-up + cosine schedule, global-norm clipping (PyTorch's rules).
//! - [`checkpoint`]: atomic checkpoints that resume to the same result as an uninterrupted run.
//! - [`trainable`]: the [`Trainable`] trait (LoRA factors, or a mixture's routers and experts).
//! - [`trainer`]: the loop ([`LoraTrainer`]), progress bar, held-out loss, NaN guard.
//!
//! Export as a PEFT adapter lives in `lora-zoo` (`lora_zoo::trained::to_adapter`), which
//! depends on this crate.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod lora;
pub mod optim;
pub mod trainable;
pub mod trainer;

pub use crate::prompt::PromptFormat;
pub use config::{LoraTrainConfig, OverflowPolicy, TrainConfig};
pub use data::{DatasetStats, TrainExample};
pub use lora::{LoraSlot, LoraWeights};
pub use trainable::{Trainable, gather_grads};
pub use trainer::{
    LoraTrainer, StepLog, TrainOutcome, TrainReport, evaluate_loss, evaluate_loss_of,
};
