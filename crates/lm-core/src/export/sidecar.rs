//! The side files of a checkpoint: `config.json`, `generation_config.json`, `tokenizer.json`,
//! `tokenizer_config.json`, `special_tokens_map.json`, written atomically.

use std::path::Path;

use atomic_fs::{write_atomic, write_json};
use serde_json::{Value, json};
use tokenizers::processors::template::TemplateProcessing;

use super::{ExportBase, ExportDtype, TokenizerInfo, read_json_opt};
use crate::error::{LmError, Result};
use crate::model::config::{DecoderArch, DecoderConfig};

/// `config.json` for a decoder: every field transformers' `LlamaConfig` / `Qwen2Config` /
/// `Gemma3TextConfig` needs.
pub fn config_json(c: &DecoderConfig, dtype: ExportDtype, pad_id: Option<u32>) -> Value {
    let (arch, model_type) = match c.arch {
        DecoderArch::Llama => ("LlamaForCausalLM", "llama"),
        DecoderArch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        DecoderArch::Gemma3 => ("Gemma3ForCausalLM", "gemma3_text"),
    };
    let eos: Value = match c.eos_token_ids.as_slice() {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    };
    let mut v = json!({
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.max_position_embeddings,
        "initializer_range": 0.02,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": null,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "attention_dropout": 0.0,
        "tie_word_embeddings": c.tie_word_embeddings,
        "use_cache": true,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": pad_id,
        "torch_dtype": dtype.torch_name(),
        "dtype": dtype.torch_name(),
    });
    let o = v.as_object_mut().expect("a JSON object");
    match c.arch {
        DecoderArch::Llama => {
            o.insert("attention_bias".into(), json!(c.attention_bias));
            o.insert("mlp_bias".into(), json!(false));
            o.insert("pretraining_tp".into(), json!(1));
        }
        DecoderArch::Qwen2 => {
            o.insert("use_sliding_window".into(), json!(false));
            o.insert("sliding_window".into(), json!(c.max_position_embeddings));
            o.insert("max_window_layers".into(), json!(c.num_layers));
        }
        DecoderArch::Gemma3 => {
            let local_theta = c.rope_local_theta.unwrap_or(c.rope_theta);
            let layer_types: Vec<&str> = (0..c.num_layers)
                .map(|i| {
                    if c.is_local_layer(i) {
                        "sliding_attention"
                    } else {
                        "full_attention"
                    }
                })
                .collect();
            o.remove("hidden_act");
            o.insert("hidden_activation".into(), json!("gelu_pytorch_tanh"));
            o.insert("attention_bias".into(), json!(c.attention_bias));
            o.insert("sliding_window".into(), json!(c.sliding_window));
            o.insert("layer_types".into(), json!(layer_types));
            o.insert("rope_local_base_freq".into(), json!(local_theta));
            o.insert(
                "rope_parameters".into(),
                json!({
                    "full_attention": {"rope_type": "default", "rope_theta": c.rope_theta},
                    "sliding_attention": {"rope_type": "default", "rope_theta": local_theta},
                }),
            );
            // transformers' `Gemma3TextConfig` is strict: `query_pre_attn_scalar` is an int.
            let scalar = c.query_pre_attn_scalar.unwrap_or(c.head_dim as f64);
            let scalar = if scalar.fract() == 0.0 && scalar < u32::MAX as f64 {
                json!(scalar as u32)
            } else {
                json!(scalar)
            };
            o.insert("query_pre_attn_scalar".into(), scalar);
            o.insert(
                "attn_logit_softcapping".into(),
                json!(c.attn_logit_softcapping),
            );
            o.insert(
                "final_logit_softcapping".into(),
                json!(c.final_logit_softcapping),
            );
        }
    }
    v
}

/// `generation_config.json`: the special tokens generation stops on.
pub fn generation_config_json(c: &DecoderConfig, pad_id: Option<u32>) -> Value {
    let eos: Value = match c.eos_token_ids.as_slice() {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    };
    json!({"bos_token_id": c.bos_token_id, "eos_token_id": eos, "pad_token_id": pad_id})
}

/// `tokenizer.json`: lm-core's tokenizer, with a BOS post-processor when the model adds BOS (lm-core
/// adds it in [`LanguageModel::encode`](crate::model::LanguageModel::encode) instead).
pub fn tokenizer_json(info: &TokenizerInfo) -> Result<String> {
    let mut tok = info.tokenizer.clone();
    if info.add_bos
        && let Some(bos) = &info.bos
        && let Some(id) = tok.token_to_id(bos)
    {
        let bad = |e: String| LmError::Tokenizer {
            detail: format!("cannot build the BOS post-processor: {e}"),
        };
        let pp = TemplateProcessing::builder()
            .try_single(format!("{bos}:0 $A:0"))
            .map_err(|e| bad(e.to_string()))?
            .try_pair(format!("{bos}:0 $A:0 {bos}:1 $B:1"))
            .map_err(|e| bad(e.to_string()))?
            .special_tokens(vec![(bos.clone(), id)])
            .build()
            .map_err(|e| bad(e.to_string()))?;
        tok.with_post_processor(Some(pp));
    }
    tok.to_string(true).map_err(|e| LmError::Tokenizer {
        detail: format!("cannot serialise the tokenizer: {e}"),
    })
}

/// `tokenizer_config.json`: tokenizer class, special tokens, chat template.
pub fn tokenizer_config_json(info: &TokenizerInfo, model_max_length: usize) -> Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": info.bos,
        "eos_token": info.eos,
        "pad_token": info.pad,
        "unk_token": info.unk,
        "add_bos_token": info.add_bos,
        "add_eos_token": false,
        "add_prefix_space": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": model_max_length,
        "chat_template": info.chat_template,
    })
}

/// Writes everything but the weights into `dir`: `config.json`, `generation_config.json`,
/// `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`. An HF base's own
/// tokenizer files are copied verbatim.
pub fn write_sidecar_files(base: &ExportBase, dir: &Path, dtype: ExportDtype) -> Result<()> {
    let info = base.tokenizer_info()?;
    let config = base.config();
    if let ExportBase::HfDir { dir: src, .. } = base {
        let mut cfg = read_json_opt(&src.join("config.json"))?.unwrap_or(json!({}));
        if let Some(o) = cfg.as_object_mut() {
            o.insert("torch_dtype".into(), json!(dtype.torch_name()));
            o.insert("dtype".into(), json!(dtype.torch_name()));
        }
        write_json(&dir.join("config.json"), &cfg)?;
        for f in [
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ] {
            let from = src.join(f);
            if from.is_file() {
                let bytes = std::fs::read(&from).map_err(|e| LmError::io(&from, e))?;
                write_atomic(&dir.join(f), &bytes)?;
            }
        }
        if !src.join("generation_config.json").is_file() {
            write_json(
                &dir.join("generation_config.json"),
                &generation_config_json(config, info.pad_id),
            )?;
        }
        return Ok(());
    }
    write_json(
        &dir.join("config.json"),
        &config_json(config, dtype, info.pad_id),
    )?;
    write_json(
        &dir.join("generation_config.json"),
        &generation_config_json(config, info.pad_id),
    )?;
    write_atomic(
        &dir.join("tokenizer.json"),
        tokenizer_json(&info)?.as_bytes(),
    )?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &tokenizer_config_json(&info, config.max_position_embeddings),
    )?;
    write_json(
        &dir.join("special_tokens_map.json"),
        &json!({"bos_token": info.bos, "eos_token": info.eos, "pad_token": info.pad, "unk_token": info.unk}),
    )?;
    Ok(())
}
