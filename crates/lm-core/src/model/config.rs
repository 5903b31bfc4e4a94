//! Hyper-parameters of the supported architectures, independent of where they were read from.

use std::path::Path;

use crate::error::{LmError, Result};

/// Which decoder family a [`DecoderConfig`] describes.
///
/// What differs between the families is answered here, once, by the methods below; the
/// numbers (window, RoPE bases, soft-caps) are fields of [`DecoderConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderArch {
    /// Llama (SmolLM2, TinyLlama, Llama 2/3...): no q/k/v bias.
    Llama,
    /// Qwen2 / Qwen2.5: q/k/v projections carry a bias.
    Qwen2,
    /// Gemma 3 (text): embedding scaled by √d, RMSNorm scaled by `(1 + w)`, norms before *and*
    /// after attention and MLP, RMSNorm on queries and keys, GeGLU with tanh GELU, local
    /// sliding-window layers interleaved with global ones (transformers' `Gemma3TextModel`).
    Gemma3,
}

/// The decoder architectures lm-core runs, as GGUF `general.architecture` names.
pub const SUPPORTED_GGUF_ARCHITECTURES: &str = "llama, qwen2, gemma3";

/// The decoder architectures lm-core runs, as HF `config.json` `model_type`s.
pub const SUPPORTED_HF_ARCHITECTURES: &str = "llama, qwen2, gemma3_text (decoders), bert (encoder)";

/// The feed-forward's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateActivation {
    /// `silu(x) = x · σ(x)` (SwiGLU: Llama, Qwen2).
    Silu,
    /// GELU with the tanh approximation, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))` (GeGLU:
    /// Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

impl DecoderArch {
    /// Whether RMSNorm scales by `(1 + w)` instead of `w` (Gemma stores the offset from 1).
    pub fn norm_unit_offset(self) -> bool {
        matches!(self, Self::Gemma3)
    }

    /// Whether token embeddings are multiplied by `√hidden_size` (Gemma).
    pub fn scales_embedding(self) -> bool {
        matches!(self, Self::Gemma3)
    }

    /// Whether queries and keys are RMS-normalised per head before RoPE (Gemma 3).
    pub fn has_qk_norm(self) -> bool {
        matches!(self, Self::Gemma3)
    }

    /// Whether attention and MLP outputs are normalised too (`post_attention_layernorm` on the
    /// attention output, `pre_feedforward_layernorm` / `post_feedforward_layernorm` around the
    /// MLP), rather than Llama's one norm before each.
    pub fn has_sandwich_norms(self) -> bool {
        matches!(self, Self::Gemma3)
    }

    /// The feed-forward's gate activation.
    pub fn gate_activation(self) -> GateActivation {
        match self {
            Self::Llama | Self::Qwen2 => GateActivation::Silu,
            Self::Gemma3 => GateActivation::GeluTanh,
        }
    }

    /// Whether llama.cpp stored the q/k rows of its GGUF permuted for interleaved RoPE.
    pub fn gguf_permutes_qk(self) -> bool {
        matches!(self, Self::Llama)
    }
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
    /// Keys a query of a local (sliding-window) layer sees, itself included: key `k` is visible
    /// to query `q` when `q - window < k ≤ q` (transformers' `sliding_window_overlay`). `None`:
    /// every layer is global.
    pub sliding_window: Option<usize>,
    /// With a window, every `n`-th layer (layers `n-1`, `2n-1`, ...) is global and the others
    /// local (Gemma 3: 6, transformers' `sliding_window_pattern`); `None`: all layers local.
    pub global_layer_every: Option<usize>,
    /// RoPE base θ of local layers (Gemma 3: 10 000, `rope_local_base_freq`); `None`: `rope_theta`.
    pub rope_local_theta: Option<f64>,
    /// Attention scores are scaled by `query_pre_attn_scalar^-½` (Gemma); `None`: `head_dim^-½`.
    pub query_pre_attn_scalar: Option<f64>,
    /// `cap · tanh(scores / cap)` on attention scores before the softmax (Gemma 2); `None`: off.
    pub attn_logit_softcapping: Option<f64>,
    /// `cap · tanh(logits / cap)` on the output logits (Gemma 2); `None`: off.
    pub final_logit_softcapping: Option<f64>,
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
        if let Some(w) = self.sliding_window {
            if w == 0 {
                return bad("expected a sliding_window of at least 1 token, found 0".into());
            }
            if w > self.max_position_embeddings {
                return bad(format!(
                    "sliding_window ({w}) is larger than the context (max_position_embeddings = {}): expected a window no wider than the context. The config is inconsistent: fix sliding_window or the context length.",
                    self.max_position_embeddings
                ));
            }
        }
        if self.global_layer_every == Some(0) {
            return bad("expected global_layer_every (sliding_window_pattern) ≥ 1, found 0".into());
        }
        for (name, v) in [
            ("rope_local_theta", self.rope_local_theta),
            ("query_pre_attn_scalar", self.query_pre_attn_scalar),
            ("attn_logit_softcapping", self.attn_logit_softcapping),
            ("final_logit_softcapping", self.final_logit_softcapping),
        ] {
            if let Some(x) = v
                && (x.is_nan() || x <= 0.0)
            {
                return bad(format!("expected a positive {name}, found {x}"));
            }
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
            sliding_window: None,
            global_layer_every: None,
            rope_local_theta: None,
            query_pre_attn_scalar: None,
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
        }
    }

    /// A tiny Gemma 3 config for tests: [`DecoderConfig::tiny`] with Gemma's numerics, a window
    /// of 4 tokens, every 2nd layer global, local θ 100, attention scale `8^-½`.
    pub fn tiny_gemma3(vocab_size: usize) -> Self {
        Self {
            arch: DecoderArch::Gemma3,
            rms_norm_eps: 1e-6,
            sliding_window: Some(4),
            global_layer_every: Some(2),
            rope_local_theta: Some(100.0),
            query_pre_attn_scalar: Some(8.0),
            ..Self::tiny(vocab_size)
        }
    }

    /// Whether block `layer` attends within the sliding window only.
    pub fn is_local_layer(&self, layer: usize) -> bool {
        self.sliding_window.is_some()
            && self
                .global_layer_every
                .is_none_or(|n| !(layer + 1).is_multiple_of(n))
    }

    /// The attention-score scale: `query_pre_attn_scalar^-½`, else `head_dim^-½`.
    pub fn attention_scale(&self) -> f64 {
        1.0 / self
            .query_pre_attn_scalar
            .unwrap_or(self.head_dim as f64)
            .sqrt()
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
