//! Models: the Llama / Qwen2 / Gemma 3 [`Decoder`] and the BERT [`Encoder`], their configs and loaders,
//! the [`AdaptedLinear`] seam, and the ready-to-use [`LanguageModel`] / [`SentenceEncoder`]
//! that bundle weights with their tokenizer.

pub mod adapted_linear;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod expert_pack;
pub mod hf_config;
pub mod kv_cache;
pub mod language_model;
pub mod layers;
pub mod layout;
pub mod loader;
pub mod precision;
#[cfg(any(test, feature = "test-util"))]
pub mod random;
pub mod sentence_encoder;

pub use adapted_linear::{AdaptedLinear, ExpertMix, ExpertSet, LoraDropout};
pub use config::{DecoderArch, DecoderConfig, EncoderConfig};
pub use decoder::{AttentionMask, Decoder};
pub use encoder::Encoder;
pub use expert_pack::{HostFactors, TargetRule, attach_expert_sets, detach_experts, lora_scale};
pub use kv_cache::KvCache;
pub use language_model::LanguageModel;
pub use precision::Precision;
pub use sentence_encoder::SentenceEncoder;
