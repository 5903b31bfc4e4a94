//! Building models from weights: HF names are the lingua franca; GGUF names are mapped to them.
//!
//! A [`WeightSource`] hands out f32 tensors by HF name (`model.layers.3.self_attn.q_proj.weight`)
//! in PyTorch layout. [`SafetensorsWeights`] does so directly; [`GgufWeights`] maps the name to
//! llama.cpp's (`blk.3.attn_q.weight`), dequantises, undoes the q/k row permutation of Llama
//! models and the `+ 1` llama.cpp adds to Gemma's norm weights. Every tensor's shape is checked
//! against the config before use.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::adapted_linear::{AdaptedLinear, linear_from_torch};
use super::config::{DecoderArch, DecoderConfig, EncoderConfig, SUPPORTED_GGUF_ARCHITECTURES};
use super::decoder::{Attention, Decoder, DecoderLayer, Mlp, embedding_from};
use super::encoder::{Encoder, EncoderLayer};
use super::layers::{LayerNorm, RmsNorm, Rope};
use super::layout::{
    BlockLinear, BlockNorm, EMBED_TOKENS, FINAL_NORM, LM_HEAD, module_name, norm_name,
};
use crate::error::{LmError, Result};
use crate::io::gguf::GgufFile;
use crate::io::safetensors::SafetensorsWeights;

/// Hands out tensors by HF name as `(values, shape)` in PyTorch layout.
pub trait WeightSource {
    /// Reads a tensor, or [`LmError::MissingTensor`].
    fn get(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)>;
    /// Whether the tensor exists.
    fn has(&self, name: &str) -> bool;
    /// Where the weights come from, for messages.
    fn origin(&self) -> &Path;

    /// Reads a tensor and checks its shape.
    fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (values, found) = self.get(name)?;
        if found != shape {
            return Err(LmError::ShapeMismatch {
                tensor: name.to_string(),
                expected: shape.to_vec(),
                found,
            });
        }
        Ok(values)
    }
}

impl WeightSource for SafetensorsWeights {
    fn get(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        self.tensor_f32(name)
    }
    fn has(&self, name: &str) -> bool {
        self.contains(name)
    }
    fn origin(&self) -> &Path {
        SafetensorsWeights::origin(self)
    }
}

/// A GGUF file seen through HF tensor names.
pub struct GgufWeights<'a> {
    file: &'a GgufFile,
    path: PathBuf,
    arch: DecoderArch,
    num_heads: usize,
    num_kv_heads: usize,
}

impl<'a> GgufWeights<'a> {
    /// Wraps an opened GGUF file for a decoder of the given config.
    pub fn new(file: &'a GgufFile, path: &Path, config: &DecoderConfig) -> Self {
        Self {
            file,
            path: path.to_path_buf(),
            arch: config.arch,
            num_heads: config.num_heads,
            num_kv_heads: config.num_kv_heads,
        }
    }

    /// llama.cpp's name for an HF tensor name of a Llama / Qwen2 model.
    pub fn gguf_name(hf: &str) -> Option<String> {
        Self::gguf_name_for(DecoderArch::Llama, hf)
    }

    /// llama.cpp's name for an HF tensor name of an architecture: the norms around Gemma's
    /// sub-layers have names of their own (`post_attention_layernorm` → `post_attention_norm`,
    /// `pre_feedforward_layernorm` → `ffn_norm`, `post_feedforward_layernorm` → `post_ffw_norm`),
    /// where Llama's `post_attention_layernorm` (before the MLP) is `ffn_norm`.
    pub fn gguf_name_for(arch: DecoderArch, hf: &str) -> Option<String> {
        let fixed = match hf {
            "model.embed_tokens.weight" => Some("token_embd.weight"),
            "model.norm.weight" => Some("output_norm.weight"),
            "lm_head.weight" => Some("output.weight"),
            _ => None,
        };
        if let Some(f) = fixed {
            return Some(f.to_string());
        }
        let rest = hf.strip_prefix("model.layers.")?;
        let (idx, tail) = rest.split_once('.')?;
        let sandwich = arch.has_sandwich_norms();
        let mapped = match tail {
            "input_layernorm.weight" => "attn_norm.weight",
            "post_attention_layernorm.weight" if sandwich => "post_attention_norm.weight",
            "post_attention_layernorm.weight" => "ffn_norm.weight",
            "pre_feedforward_layernorm.weight" if sandwich => "ffn_norm.weight",
            "post_feedforward_layernorm.weight" if sandwich => "post_ffw_norm.weight",
            "self_attn.q_norm.weight" => "attn_q_norm.weight",
            "self_attn.k_norm.weight" => "attn_k_norm.weight",
            "self_attn.q_proj.weight" => "attn_q.weight",
            "self_attn.k_proj.weight" => "attn_k.weight",
            "self_attn.v_proj.weight" => "attn_v.weight",
            "self_attn.o_proj.weight" => "attn_output.weight",
            "self_attn.q_proj.bias" => "attn_q.bias",
            "self_attn.k_proj.bias" => "attn_k.bias",
            "self_attn.v_proj.bias" => "attn_v.bias",
            "mlp.gate_proj.weight" => "ffn_gate.weight",
            "mlp.up_proj.weight" => "ffn_up.weight",
            "mlp.down_proj.weight" => "ffn_down.weight",
            _ => return None,
        };
        Some(format!("blk.{idx}.{mapped}"))
    }
}

impl WeightSource for GgufWeights<'_> {
    fn get(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let missing = || LmError::MissingTensor {
            path: self.path.clone(),
            tensor: format!(
                "{name} (GGUF: {})",
                Self::gguf_name_for(self.arch, name).unwrap_or_default()
            ),
        };
        let gguf = Self::gguf_name_for(self.arch, name).ok_or_else(missing)?;
        if self.file.tensor_info(&gguf).is_none() {
            return Err(missing());
        }
        let (mut values, shape) = self.file.tensor_f32(&gguf)?;
        // llama.cpp stores Gemma's norm weights as `1 + w`; HF (and this crate's RMSNorm with
        // `unit_offset`) keep `w` (transformers' `Gemma2TensorProcessor`).
        if self.arch.norm_unit_offset() && name.ends_with("norm.weight") {
            values.iter_mut().for_each(|v| *v -= 1.0);
        }
        let heads = if name.ends_with("q_proj.weight") {
            Some(self.num_heads)
        } else if name.ends_with("k_proj.weight") {
            Some(self.num_kv_heads)
        } else {
            None
        };
        match heads {
            Some(h) if self.arch.gguf_permutes_qk() && shape.len() == 2 => {
                let values = unpermute_llama_qk(&values, h, shape[0], shape[1]);
                Ok((values, shape))
            }
            _ => Ok((values, shape)),
        }
    }
    fn has(&self, name: &str) -> bool {
        Self::gguf_name_for(self.arch, name).is_some_and(|g| self.file.tensor_info(&g).is_some())
    }
    fn origin(&self) -> &Path {
        &self.path
    }
}

/// Undoes llama.cpp's row permutation of a Llama `q_proj` / `k_proj` weight.
///
/// llama.cpp's converter interleaves the two rotary halves of every head; Hugging Face
/// (and this crate's decoder) keep them as two contiguous halves. With `half = d_out / n_head / 2`:
/// `hf = gguf.reshape(n_head, half, 2, d_in).swapaxes(1, 2).reshape(d_out, d_in)`, i.e. HF row
/// `h * 2 * half + a * half + b` is GGUF row `h * 2 * half + 2 * b + a`. For `k_proj` pass the
/// number of KV heads.
///
/// # Shapes
/// `w: [d_out, d_in]` (GGUF row order) -> `[d_out, d_in]` (HF row order).
///
/// # Panics
/// When `w.len() != d_out * d_in` or `d_out` is not a multiple of `2 * n_head`; shapes come
/// from a validated config. [`try_unpermute_llama_qk`] returns an error instead.
pub fn unpermute_llama_qk(w: &[f32], n_head: usize, d_out: usize, d_in: usize) -> Vec<f32> {
    match try_unpermute_llama_qk(w, n_head, d_out, d_in) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// As [`unpermute_llama_qk`], with an error for inconsistent shapes.
///
/// # Shapes
/// `w: [d_out, d_in]` -> `[d_out, d_in]`.
///
/// # Errors
/// [`LmError::InvalidInput`] when `w.len() != d_out * d_in` or `d_out` is not a multiple of
/// `2 * n_head`.
pub fn try_unpermute_llama_qk(
    w: &[f32],
    n_head: usize,
    d_out: usize,
    d_in: usize,
) -> Result<Vec<f32>> {
    if n_head == 0 || !d_out.is_multiple_of(2 * n_head) || d_out.checked_mul(d_in) != Some(w.len())
    {
        return Err(LmError::InvalidInput(format!(
            "unpermute_llama_qk: expected a [{d_out}, {d_in}] weight ({} values) with d_out a multiple of 2 * n_head = {}, found {} values",
            d_out.saturating_mul(d_in),
            2 * n_head,
            w.len()
        )));
    }
    let head_dim = d_out / n_head;
    let half = head_dim / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for a in 0..2 {
            for b in 0..half {
                let dst = h * head_dim + a * half + b;
                let src = h * head_dim + 2 * b + a;
                out[dst * d_in..(dst + 1) * d_in].copy_from_slice(&w[src * d_in..(src + 1) * d_in]);
            }
        }
    }
    Ok(out)
}

/// Reads a decoder config from GGUF metadata (`{arch}.block_count`, ...).
pub fn decoder_config_from_gguf(file: &GgufFile, path: &Path) -> Result<DecoderConfig> {
    let arch_name = file.get_str("general.architecture")?.to_string();
    let arch = match arch_name.as_str() {
        "llama" => DecoderArch::Llama,
        "qwen2" => DecoderArch::Qwen2,
        "gemma3" => DecoderArch::Gemma3,
        other => {
            return Err(LmError::UnsupportedArchitecture {
                found: other.to_string(),
                supported: SUPPORTED_GGUF_ARCHITECTURES,
            });
        }
    };
    let key = |k: &str| format!("{arch_name}.{k}");
    let hidden_size = file.get_u32(&key("embedding_length"))? as usize;
    let num_heads = file.get_u32(&key("attention.head_count"))? as usize;
    let num_kv_heads = file
        .get_u32_opt(&key("attention.head_count_kv"))?
        .map_or(num_heads, |v| v as usize);
    let head_dim = file
        .get_u32_opt(&key("attention.key_length"))?
        .map_or(hidden_size / num_heads.max(1), |v| v as usize);
    let vocab_size = match file.get_u32_opt(&key("vocab_size"))? {
        Some(v) => v as usize,
        None => file.get_str_array("tokenizer.ggml.tokens")?.len(),
    };
    let eos = file.get_u32_opt("tokenizer.ggml.eos_token_id")?;
    let f64_opt =
        |k: &str| -> Result<Option<f64>> { Ok(file.get_f32_opt(&key(k))?.map(shortest_f64)) };
    let gemma3 = arch == DecoderArch::Gemma3;
    let config = DecoderConfig {
        arch,
        vocab_size,
        hidden_size,
        intermediate_size: file.get_u32(&key("feed_forward_length"))? as usize,
        num_layers: file.get_u32(&key("block_count"))? as usize,
        num_heads,
        num_kv_heads,
        head_dim,
        rope_theta: shortest_f64(file.get_f32_opt(&key("rope.freq_base"))?.unwrap_or(10000.0)),
        rms_norm_eps: shortest_f64(
            file.get_f32_opt(&key("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-6),
        ),
        max_position_embeddings: file
            .get_u32_opt(&key("context_length"))?
            .map_or(2048, |v| v as usize),
        tie_word_embeddings: file.tensor_info("output.weight").is_none(),
        attention_bias: arch == DecoderArch::Qwen2,
        bos_token_id: file.get_u32_opt("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: eos.into_iter().collect(),
        // Gemma 3: what the GGUF does not store is transformers' `Gemma3TextConfig` default
        // (every 6th layer global, local θ 10 000, scores scaled by 256^-½), as its GGUF loader.
        sliding_window: file
            .get_u32_opt(&key("attention.sliding_window"))?
            .filter(|_| gemma3)
            .map(|v| v as usize),
        global_layer_every: gemma3.then_some(GEMMA3_SLIDING_WINDOW_PATTERN),
        rope_local_theta: gemma3.then_some(GEMMA3_ROPE_LOCAL_THETA),
        query_pre_attn_scalar: gemma3.then_some(GEMMA3_QUERY_PRE_ATTN_SCALAR),
        attn_logit_softcapping: f64_opt("attn_logit_softcapping")?,
        final_logit_softcapping: f64_opt("final_logit_softcapping")?,
    };
    config.validate(path)?;
    Ok(config)
}

/// transformers' `Gemma3TextConfig` default `sliding_window_pattern`: every 6th layer is global.
pub const GEMMA3_SLIDING_WINDOW_PATTERN: usize = 6;
/// transformers' `Gemma3TextConfig` default `rope_local_base_freq`.
pub const GEMMA3_ROPE_LOCAL_THETA: f64 = 10_000.0;
/// transformers' `Gemma3TextConfig` default `query_pre_attn_scalar`.
pub const GEMMA3_QUERY_PRE_ATTN_SCALAR: f64 = 256.0;

/// The f64 a config file would have held for an f32 metadata value: GGUF stores `1e-5` as the
/// f32 nearest to it, and widening that directly gives `9.99999974e-6`.
fn shortest_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// The longest context the RoPE tables are built for: the model's own, capped to keep tables
/// small on models that claim very long contexts.
pub const MAX_ROPE_POSITIONS: usize = 8192;

/// Builds a [`Decoder`] from any [`WeightSource`] with HF names.
pub fn build_decoder(
    config: &DecoderConfig,
    weights: &dyn WeightSource,
    device: &Device,
) -> Result<Decoder> {
    let c = config;
    let (d, v) = (c.hidden_size, c.vocab_size);
    // Names, shapes and biases come from the one layout (`model::layout`).
    let linear = |layer: usize, which: BlockLinear| -> Result<AdaptedLinear> {
        let name = module_name(layer, which);
        let (d_in, d_out) = which.shape(c);
        let w = weights.get_shaped(&format!("{name}.weight"), &[d_out, d_in])?;
        let b = if which.has_bias(c) {
            Some(weights.get_shaped(&format!("{name}.bias"), &[d_out])?)
        } else {
            None
        };
        Ok(AdaptedLinear::new(linear_from_torch(
            &w, d_out, d_in, b, device,
        )))
    };
    let offset = c.arch.norm_unit_offset();
    let norm_of = |name: &str, width: usize| -> Result<RmsNorm> {
        Ok(RmsNorm::with_offset(
            weights.get_shaped(name, &[width])?,
            c.rms_norm_eps,
            offset,
            device,
        ))
    };
    let norm = |name: &str| norm_of(name, d);
    let block_norm = |layer: usize, which: BlockNorm| -> Result<Option<RmsNorm>> {
        if !which.exists(c) {
            return Ok(None);
        }
        norm_of(&norm_name(layer, which), which.width(c)).map(Some)
    };
    let required = |layer: usize, which: BlockNorm| -> Result<RmsNorm> {
        norm_of(&norm_name(layer, which), which.width(c))
    };
    let scale = c.query_pre_attn_scalar.map(|_| c.attention_scale());
    // Not `with_capacity(num_layers)`: the count comes from the file, and a lying one must end
    // in a missing-tensor error, not an allocation failure.
    let mut layers = Vec::new();
    for i in 0..c.num_layers {
        layers.push(DecoderLayer {
            input_layernorm: required(i, BlockNorm::Input)?,
            self_attn: Attention {
                q_proj: linear(i, BlockLinear::Q)?,
                k_proj: linear(i, BlockLinear::K)?,
                v_proj: linear(i, BlockLinear::V)?,
                o_proj: linear(i, BlockLinear::O)?,
                q_norm: block_norm(i, BlockNorm::Query)?,
                k_norm: block_norm(i, BlockNorm::Key)?,
                scale,
                softcap: c.attn_logit_softcapping,
                num_heads: c.num_heads,
                num_kv_heads: c.num_kv_heads,
                head_dim: c.head_dim,
            },
            post_attention_layernorm: required(i, BlockNorm::PostAttention)?,
            pre_feedforward_layernorm: block_norm(i, BlockNorm::PreFeedforward)?,
            post_feedforward_layernorm: block_norm(i, BlockNorm::PostFeedforward)?,
            mlp: Mlp {
                gate_proj: linear(i, BlockLinear::Gate)?,
                up_proj: linear(i, BlockLinear::Up)?,
                down_proj: linear(i, BlockLinear::Down)?,
                activation: c.arch.gate_activation(),
            },
            local: c.is_local_layer(i),
        });
    }
    let embed = weights.get_shaped(EMBED_TOKENS, &[v, d])?;
    let lm_head = if c.tie_word_embeddings || !weights.has(LM_HEAD) {
        linear_from_torch(&embed, v, d, None, device)
    } else {
        let w = weights.get_shaped(LM_HEAD, &[v, d])?;
        linear_from_torch(&w, v, d, None, device)
    };
    let rope_positions = c.max_position_embeddings.min(MAX_ROPE_POSITIONS);
    Ok(Decoder {
        embed_tokens: embedding_from(embed, v, d, device),
        layers,
        norm: norm(FINAL_NORM)?,
        lm_head,
        rope: Rope::new(c.head_dim, c.rope_theta, rope_positions, device),
        rope_local: c
            .rope_local_theta
            .filter(|&t| t != c.rope_theta && (0..c.num_layers).any(|i| c.is_local_layer(i)))
            .map(|t| Rope::new(c.head_dim, t, rope_positions, device)),
        config: c.clone(),
    })
}

/// Builds an [`Encoder`] from HF BERT weights (with or without the `bert.` prefix).
pub fn build_encoder(
    config: &EncoderConfig,
    weights: &dyn WeightSource,
    device: &Device,
) -> Result<Encoder> {
    let c = config;
    let prefix = if weights.has("bert.embeddings.word_embeddings.weight") {
        "bert."
    } else {
        ""
    };
    let (d, ff) = (c.hidden_size, c.intermediate_size);
    let linear = |name: &str, d_out: usize, d_in: usize| -> Result<AdaptedLinear> {
        let w = weights.get_shaped(&format!("{prefix}{name}.weight"), &[d_out, d_in])?;
        let b = weights.get_shaped(&format!("{prefix}{name}.bias"), &[d_out])?;
        Ok(AdaptedLinear::new(linear_from_torch(
            &w,
            d_out,
            d_in,
            Some(b),
            device,
        )))
    };
    let layer_norm = |name: &str| -> Result<LayerNorm> {
        Ok(LayerNorm::new(
            weights.get_shaped(&format!("{prefix}{name}.weight"), &[d])?,
            weights.get_shaped(&format!("{prefix}{name}.bias"), &[d])?,
            c.layer_norm_eps,
            device,
        ))
    };
    let embedding = |name: &str, rows: usize| -> Result<burn::nn::Embedding> {
        let w = weights.get_shaped(&format!("{prefix}{name}"), &[rows, d])?;
        Ok(embedding_from(w, rows, d, device))
    };
    // Not `with_capacity(num_layers)`: the count comes from the file, and a lying one must end
    // in a missing-tensor error, not an allocation failure.
    let mut layers = Vec::new();
    for i in 0..c.num_layers {
        let p = format!("encoder.layer.{i}");
        layers.push(EncoderLayer {
            query: linear(&format!("{p}.attention.self.query"), d, d)?,
            key: linear(&format!("{p}.attention.self.key"), d, d)?,
            value: linear(&format!("{p}.attention.self.value"), d, d)?,
            attn_out: linear(&format!("{p}.attention.output.dense"), d, d)?,
            attn_norm: layer_norm(&format!("{p}.attention.output.LayerNorm"))?,
            intermediate: linear(&format!("{p}.intermediate.dense"), ff, d)?,
            output: linear(&format!("{p}.output.dense"), d, ff)?,
            out_norm: layer_norm(&format!("{p}.output.LayerNorm"))?,
        });
    }
    Ok(Encoder {
        word_embeddings: embedding("embeddings.word_embeddings.weight", c.vocab_size)?,
        position_embeddings: embedding(
            "embeddings.position_embeddings.weight",
            c.max_position_embeddings,
        )?,
        token_type_embeddings: embedding(
            "embeddings.token_type_embeddings.weight",
            c.type_vocab_size,
        )?,
        embed_norm: layer_norm("embeddings.LayerNorm")?,
        layers,
        config: c.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unpermute_matches_the_reshape_formula() {
        // n_head 2, head_dim 4 (half 2), d_in 1: gguf rows [h0: r0 r1 r2 r3, h1: r4..r7].
        let w: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let hf = unpermute_llama_qk(&w, 2, 8, 1);
        // reshape(2, 2, 2, 1).swapaxes(1, 2): head 0 -> rows 0, 2, 1, 3.
        assert_eq!(hf, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert!(try_unpermute_llama_qk(&w, 3, 8, 1).is_err());
        assert!(try_unpermute_llama_qk(&w, 2, 8, 2).is_err());
    }

    proptest! {
        #[test]
        fn unpermute_is_a_row_permutation(n_head in 1usize..5, half in 1usize..5, d_in in 1usize..4) {
            let d_out = n_head * half * 2;
            let w: Vec<f32> = (0..d_out * d_in).map(|i| i as f32).collect();
            let hf = unpermute_llama_qk(&w, n_head, d_out, d_in);
            let mut sorted = hf.clone();
            sorted.sort_by(f32::total_cmp);
            prop_assert_eq!(&sorted, &w);
            // The first row of each head is unchanged.
            for h in 0..n_head {
                let r = h * 2 * half;
                prop_assert_eq!(&hf[r * d_in..(r + 1) * d_in], &w[r * d_in..(r + 1) * d_in]);
            }
        }
    }
}
