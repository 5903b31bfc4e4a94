//! Hyper-parameters of the supported architectures, independent of where they were read from.

use std::path::Path;

use crate::error::{LmError, Result};

/// Which decoder family a [`DecoderConfig`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderArch {
    /// Llama (SmolLM2, TinyLlama, Llama 2/3...): no q/k/v bias.
    Llama,
    /// Qwen2 / Qwen2.5: q/k/v projections carry a bias.
    Qwen2,
}

/// Shape and numerics of a Llama-family decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// Architecture family.
    pub arch: DecoderArch,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Model width `d_model`.
    pub hidden_size: usize,
    /// Width of the SwiGLU feed-forward.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RoPE base frequency θ.
    pub rope_theta: f64,
    /// RMSNorm ε.
    pub rms_norm_eps: f64,
    /// Longest supported context.
    pub max_position_embeddings: usize,
    /// Whether the output head reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// Whether q/k/v projections have a bias.
    pub attention_bias: bool,
    /// Beginning-of-sequence token, if any.
    pub bos_token_id: Option<u32>,
    /// Tokens that end generation.
    pub eos_token_ids: Vec<u32>,
}

impl DecoderConfig {
    /// Checks that the numbers are consistent (heads divide, widths positive).
    pub fn validate(&self, source: &Path) -> Result<()> {
        let bad = |detail: String| {
            Err(LmError::Config {
                path: source.to_path_buf(),
                detail,
            })
        };
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return bad(format!("expected {name} > 0, found 0"));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "expected num_heads ({}) to be a multiple of num_kv_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "expected an even head_dim for RoPE, found {}",
                self.head_dim
            ));
        }
        if self.rope_theta.is_nan()
            || self.rope_theta <= 0.0
            || self.rms_norm_eps.is_nan()
            || self.rms_norm_eps <= 0.0
        {
            return bad(format!(
                "expected positive rope_theta and rms_norm_eps, found {} and {}",
                self.rope_theta, self.rms_norm_eps
            ));
        }
        Ok(())
    }

    /// A tiny random-model config for tests: 2 layers, width 32, 4 heads / 2 KV heads.
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            arch: DecoderArch::Llama,
            vocab_size,
            hidden_size: 32,
            intermediate_size: 64,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 8,
            rope_theta: 10000.0,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 128,
            tie_word_embeddings: true,
            attention_bias: false,
            bos_token_id: None,
            eos_token_ids: vec![0],
        }
    }
}

/// Shape and numerics of a BERT encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Number of encoder blocks.
    pub num_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Longest input in tokens.
    pub max_position_embeddings: usize,
    /// Number of segment (token type) embeddings.
    pub type_vocab_size: usize,
    /// LayerNorm ε.
    pub layer_norm_eps: f64,
}

impl EncoderConfig {
    /// Checks that the numbers are consistent.
    pub fn validate(&self, source: &Path) -> Result<()> {
        if self.num_heads == 0 || !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(LmError::Config {
                path: source.to_path_buf(),
                detail: format!(
                    "expected hidden_size ({}) to be a multiple of num_attention_heads ({})",
                    self.hidden_size, self.num_heads
                ),
            });
        }
        Ok(())
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
}
