//! # openexpert
//!
//! Task experts from open knowledge: a bank of public LoRA adapters, open instruction data and a
//! few labelled examples of the target task (K-shot). This facade re-exports the workspace's
//! crates and hosts the command-line tool `openexpert`:
//!
//! - [`lm_core`]: the burn model runtime (GGUF / safetensors loading, tokenizers, Llama / Qwen2 /
//!   BERT, generation, scoring, embeddings);
//! - [`lora_zoo`]: PEFT adapters in and out, adapter algebra, similarity, bank index;
//! - [`data_select`]: instruction pools, k-center, K-shot retrieval and dedup, baselines;
//! - [`embedders`]: lm-core models behind data-select's `Embedder` trait;
//! - [`pipelines`]: the loops that train models (DiverseEvol, Rocket, TAPIR);
//! - [`report`]: SVG plots and markdown tables for experiment reports;
//! - [`serve`]: an OpenAI-compatible HTTP server for a model with its adapters (`openexpert
//!   serve`), batching concurrent requests; [`llm_client`] is its client;
//! - [`kshot_eval`]: K-shot sets, lm-eval-style prompts, exact match / multiple choice /
//!   reasoning perplexity, packed bank evaluation and Rocket expert selection;
//! - [`tapir_curriculum`]: TAPIR's roles, judge, difficulty, task rebalancing, expansion,
//!   refinement and rounds, model-free (`pipelines::tapir` gives them models and endpoints);
//! - `moe-router`: mixtures of LoRA experts.
#![warn(missing_docs)]

pub use data_select;
pub use kshot_eval;
pub use llm_client;
pub use lm_core;
pub use lora_zoo;
pub use tapir_curriculum;

pub mod bench;
pub mod embedders;
pub mod pipelines;
pub mod report;
pub mod serve;
pub mod training_data;

/// The most used items in one import.
pub mod prelude {
    pub use lm_core::chat_template::ChatMessage;
    pub use lm_core::device::{device_from_env, device_from_name};
    pub use lm_core::generate::{Generation, GenerationConfig, generate};
    pub use lm_core::model::{ExpertMix, LanguageModel, SentenceEncoder};
    pub use lm_core::score::{ScoreOptions, ScoreRequest, TokenScores, score};
    pub use lm_core::{LmError, Result};
}
