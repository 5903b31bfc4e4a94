//! # lm-core: openexpert's model runtime
//!
//! Everything else in openexpert stands on this crate. It owns:
//!
//! - [`device`]: the one place that maps `cpu` / `wgpu` / `cuda` to a burn [`burn::tensor::Device`];
//! - [`io`]: memory-mapped GGUF and safetensors readers, GGUF dequantisation, HF `config.json`;
//! - [`tokenizer`] and [`chat_template`]: `tokenizers::Tokenizer` from `tokenizer.json` or GGUF
//!   metadata (byte-level BPE or SentencePiece), chat prompts rendered from the model's own Jinja
//!   template;
//! - [`model`]: the Llama / Qwen2 / Gemma 3 decoder (with a KV cache) and the BERT encoder, whose
//!   adaptable linears are [`model::AdaptedLinear`]s, the seam for LoRA experts;
//! - [`generate`], [`score`], [`embed`]: batched generation, teacher-forced log-probs and
//!   perplexity, mean-pooled embeddings;
//! - [`kernels`]: fused, vectorised CPU kernels (SwiGLU, RMSNorm, LayerNorm, RoPE, GELU) with
//!   the generic burn path kept for other backends;
//! - [`assets`]: the registry of default models pinned in `assets/manifest.toml` and their fetcher;
//! - [`names`]: one spelling per algorithm switch ([`named_enum!`]), shared by configs and the CLI.
#![warn(missing_docs)]

pub mod assets;
pub mod chat_template;
pub mod device;
pub mod embed;
pub mod error;
pub mod export;
pub mod generate;
pub mod io;
pub mod kernels;
pub mod model;
/// One spelling per algorithm switch (the `named-enum` crate).
pub mod names {
    pub use named_enum::UnknownName;
}
pub use named_enum::named_enum;
pub mod progress;
pub mod prompt;
pub mod quant;
pub mod score;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod tokenizer;
pub mod train;

pub use error::{LmError, Result};

/// The burn version lm-core is built on, re-exported so users name the same `Device` and tensors.
pub use burn;
