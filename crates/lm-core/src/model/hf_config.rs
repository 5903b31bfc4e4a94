//! HF `config.json` → [`DecoderConfig`] / [`EncoderConfig`].
//!
//! Supported `model_type`s: `llama`, `qwen2`, `gemma3_text` (decoders) and `bert` (encoder). Keys
//! follow transformers' names; optional keys get transformers' defaults.

use std::path::Path;

use serde_json::Value;

use crate::error::{LmError, Result};
use crate::model::config::{DecoderArch, DecoderConfig, EncoderConfig, SUPPORTED_HF_ARCHITECTURES};

/// What an HF directory's `config.json` describes.
#[derive(Debug, Clone, PartialEq)]
pub enum HfModelConfig {
    /// A Llama or Qwen2 causal LM.
    Decoder(DecoderConfig),
    /// A BERT encoder.
    Encoder(EncoderConfig),
}

/// Reads and interprets `config.json` from a file path.
pub fn read_hf_config(path: &Path) -> Result<HfModelConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
    parse_hf_config(&text, path)
}

/// Interprets the text of a `config.json`; `path` is only used in error messages.
pub fn parse_hf_config(text: &str, path: &Path) -> Result<HfModelConfig> {
    let v: Value = serde_json::from_str(text).map_err(|e| LmError::Config {
        path: path.to_path_buf(),
        detail: format!("expected a JSON object, found invalid JSON: {e}"),
    })?;
    let cfg = Keys { v: &v, path };
    let model_type = cfg.str("model_type")?;
    match model_type.as_str() {
        "llama" | "qwen2" | "gemma3_text" => {
            let arch = match model_type.as_str() {
                "llama" => DecoderArch::Llama,
                "qwen2" => DecoderArch::Qwen2,
                _ => DecoderArch::Gemma3,
            };
            let gemma3 = arch == DecoderArch::Gemma3;
            let hidden_size = cfg.usize("hidden_size")?;
            let num_heads = cfg.usize("num_attention_heads")?;
            let head_dim = cfg.usize_or("head_dim", hidden_size / num_heads.max(1))?;
            let attention_bias = match arch {
                DecoderArch::Qwen2 => true,
                DecoderArch::Llama | DecoderArch::Gemma3 => cfg.bool_or("attention_bias", false)?,
            };
            if gemma3 {
                let act = cfg.str_or("hidden_activation", "gelu_pytorch_tanh")?;
                if act != "gelu_pytorch_tanh" {
                    return Err(LmError::Config {
                        path: path.to_path_buf(),
                        detail: format!(
                            "expected hidden_activation `gelu_pytorch_tanh` for Gemma 3, found `{act}`"
                        ),
                    });
                }
            }
            // transformers 5 nests the RoPE bases under `rope_parameters` (per layer type for
            // Gemma 3); older configs have `rope_theta` / `rope_local_base_freq`.
            let nested_theta = |layer_type: Option<&str>| -> Option<f64> {
                let p = v.get("rope_parameters")?;
                let p = match layer_type {
                    Some(t) => p.get(t)?,
                    None => p,
                };
                p.get("rope_theta")?.as_f64()
            };
            let (default_theta, default_local) = if gemma3 {
                (1_000_000.0, Some(10_000.0))
            } else {
                (10_000.0, None)
            };
            let rope_theta = match nested_theta(gemma3.then_some("full_attention")) {
                Some(t) => t,
                None => cfg.f64_or("rope_theta", default_theta)?,
            };
            let rope_local_theta = match nested_theta(Some("sliding_attention")) {
                Some(t) if gemma3 => Some(t),
                _ if gemma3 => Some(cfg.f64_or("rope_local_base_freq", 10_000.0)?),
                _ => default_local,
            };
            let num_layers = cfg.usize("num_hidden_layers")?;
            let (sliding_window, global_layer_every) = if gemma3 {
                let window = cfg.usize_or("sliding_window", 4096)?;
                (Some(window), Some(gemma3_global_every(&cfg, num_layers)?))
            } else {
                (None, None)
            };
            let eos = match v.get("eos_token_id") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| cfg.token_id("eos_token_id", x))
                    .collect::<Result<_>>()?,
                Some(x) => vec![cfg.token_id("eos_token_id", x)?],
            };
            let config = DecoderConfig {
                arch,
                vocab_size: cfg.usize("vocab_size")?,
                hidden_size,
                intermediate_size: cfg.usize("intermediate_size")?,
                num_layers,
                num_heads,
                num_kv_heads: cfg.usize_or("num_key_value_heads", num_heads)?,
                head_dim,
                rope_theta,
                rms_norm_eps: cfg.f64_or("rms_norm_eps", 1e-6)?,
                max_position_embeddings: cfg.usize_or("max_position_embeddings", 2048)?,
                tie_word_embeddings: cfg.bool_or("tie_word_embeddings", gemma3)?,
                attention_bias,
                bos_token_id: match v.get("bos_token_id") {
                    None | Some(Value::Null) => None,
                    Some(x) => Some(cfg.token_id("bos_token_id", x)?),
                },
                eos_token_ids: eos,
                sliding_window,
                global_layer_every,
                rope_local_theta,
                query_pre_attn_scalar: if gemma3 {
                    Some(cfg.f64_or("query_pre_attn_scalar", 256.0)?)
                } else {
                    None
                },
                attn_logit_softcapping: cfg.f64_opt("attn_logit_softcapping")?,
                final_logit_softcapping: cfg.f64_opt("final_logit_softcapping")?,
            };
            config.validate(path)?;
            Ok(HfModelConfig::Decoder(config))
        }
        "bert" => {
            let act = cfg.str_or("hidden_act", "gelu")?;
            if act != "gelu" {
                return Err(LmError::Config {
                    path: path.to_path_buf(),
                    detail: format!("expected hidden_act `gelu` for BERT, found `{act}`"),
                });
            }
            let config = EncoderConfig {
                vocab_size: cfg.usize("vocab_size")?,
                hidden_size: cfg.usize("hidden_size")?,
                intermediate_size: cfg.usize("intermediate_size")?,
                num_layers: cfg.usize("num_hidden_layers")?,
                num_heads: cfg.usize("num_attention_heads")?,
                max_position_embeddings: cfg.usize_or("max_position_embeddings", 512)?,
                type_vocab_size: cfg.usize_or("type_vocab_size", 2)?,
                layer_norm_eps: cfg.f64_or("layer_norm_eps", 1e-12)?,
            };
            config.validate(path)?;
            Ok(HfModelConfig::Encoder(config))
        }
        other => Err(LmError::UnsupportedArchitecture {
            found: other.to_string(),
            supported: SUPPORTED_HF_ARCHITECTURES,
        }),
    }
}

/// Gemma 3's period of global layers, from `layer_types` (which must be periodic: layer `i` is
/// `full_attention` exactly when `(i + 1) % n == 0`) or `sliding_window_pattern` (default 6).
fn gemma3_global_every(cfg: &Keys<'_>, num_layers: usize) -> Result<usize> {
    let Some(types) = cfg.v.get("layer_types").filter(|t| !t.is_null()) else {
        return cfg.usize_or("sliding_window_pattern", 6);
    };
    let bad = || {
        cfg.err("layer_types", "a list of \"sliding_attention\" / \"full_attention\", one per layer, with every n-th layer full")
    };
    let types: Vec<&str> = types
        .as_array()
        .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
        .ok_or_else(bad)?;
    if types.len() != num_layers {
        return Err(bad());
    }
    let full: Vec<bool> = types
        .iter()
        .map(|t| match *t {
            "full_attention" => Ok(true),
            "sliding_attention" => Ok(false),
            _ => Err(bad()),
        })
        .collect::<Result<_>>()?;
    // The period is the first global layer's index + 1 (all layers local: any n > num_layers).
    let n = full
        .iter()
        .position(|&f| f)
        .map_or(num_layers + 1, |i| i + 1);
    if full
        .iter()
        .enumerate()
        .all(|(i, &f)| f == (i + 1).is_multiple_of(n))
    {
        Ok(n)
    } else {
        Err(bad())
    }
}

struct Keys<'a> {
    v: &'a Value,
    path: &'a Path,
}

impl Keys<'_> {
    fn err(&self, key: &str, expected: &str) -> LmError {
        LmError::Config {
            path: self.path.to_path_buf(),
            detail: format!(
                "key `{key}`: expected {expected}, found {}",
                self.v
                    .get(key)
                    .map_or("nothing".to_string(), |x| x.to_string())
            ),
        }
    }
    /// A token id (`bos_token_id`, an entry of `eos_token_id`): an integer that fits `u32`.
    fn token_id(&self, key: &str, x: &Value) -> Result<u32> {
        x.as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| LmError::Config {
                path: self.path.to_path_buf(),
                detail: format!(
                    "key `{key}`: expected a token id (an integer from 0 to {}), found {x}",
                    u32::MAX
                ),
            })
    }

    fn str(&self, key: &str) -> Result<String> {
        self.v
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| self.err(key, "a string"))
    }
    fn str_or(&self, key: &str, default: &str) -> Result<String> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(default.to_string()),
            Some(_) => self.str(key),
        }
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.v
            .get(key)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .ok_or_else(|| self.err(key, "a non-negative integer"))
    }
    fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(_) => self.usize(key),
        }
    }
    fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, "a number")),
        }
    }
    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x.as_f64().ok_or_else(|| self.err(key, "a number")),
        }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x.as_bool().ok_or_else(|| self.err(key, "true or false")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LLAMA: &str = r#"{"model_type":"llama","vocab_size":49152,"hidden_size":576,
        "intermediate_size":1536,"num_hidden_layers":30,"num_attention_heads":9,
        "num_key_value_heads":3,"rope_theta":100000.0,"rms_norm_eps":1e-5,
        "tie_word_embeddings":true,"max_position_embeddings":8192,"eos_token_id":2}"#;

    #[test]
    fn llama_config_parses_with_defaults() {
        let HfModelConfig::Decoder(c) = parse_hf_config(LLAMA, Path::new("c.json")).unwrap() else {
            panic!("expected a decoder")
        };
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.num_kv_heads, 3);
        assert!(c.tie_word_embeddings && !c.attention_bias);
        assert_eq!(c.eos_token_ids, vec![2]);
        assert_eq!(c.rope_theta, 100000.0);
    }

    #[test]
    fn qwen2_has_qkv_bias() {
        let text = LLAMA.replace("\"llama\"", "\"qwen2\"");
        let HfModelConfig::Decoder(c) = parse_hf_config(&text, Path::new("c.json")).unwrap() else {
            panic!()
        };
        assert!(c.attention_bias);
    }

    #[test]
    fn missing_key_names_it() {
        let text = LLAMA.replace("\"hidden_size\":576,", "");
        let err = parse_hf_config(&text, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hidden_size") && err.contains("found nothing"),
            "{err}"
        );
    }

    #[test]
    fn inconsistent_heads_are_rejected() {
        let text = LLAMA.replace("\"num_key_value_heads\":3", "\"num_key_value_heads\":4");
        let err = parse_hf_config(&text, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("num_kv_heads"), "{err}");
    }

    const GEMMA3: &str = r#"{"model_type":"gemma3_text","vocab_size":262144,"hidden_size":640,
        "intermediate_size":2048,"num_hidden_layers":18,"num_attention_heads":4,
        "num_key_value_heads":1,"head_dim":256,"max_position_embeddings":32768,
        "query_pre_attn_scalar":256,"sliding_window":512,"rms_norm_eps":1e-6,
        "rope_parameters":{"full_attention":{"rope_type":"default","rope_theta":1000000.0},
        "sliding_attention":{"rope_type":"default","rope_theta":10000.0}},
        "layer_types":["sliding_attention","sliding_attention","sliding_attention",
        "sliding_attention","sliding_attention","full_attention","sliding_attention",
        "sliding_attention","sliding_attention","sliding_attention","sliding_attention",
        "full_attention","sliding_attention","sliding_attention","sliding_attention",
        "sliding_attention","sliding_attention","full_attention"],
        "final_logit_softcapping":null,"attn_logit_softcapping":null,"eos_token_id":[1,106]}"#;

    #[test]
    fn gemma3_config_parses_layer_types_and_rope_bases() {
        let HfModelConfig::Decoder(c) = parse_hf_config(GEMMA3, Path::new("c.json")).unwrap()
        else {
            panic!("expected a decoder")
        };
        assert_eq!(c.arch, DecoderArch::Gemma3);
        assert_eq!(c.global_layer_every, Some(6));
        assert_eq!(c.sliding_window, Some(512));
        assert_eq!((c.rope_theta, c.rope_local_theta), (1e6, Some(1e4)));
        assert!(c.tie_word_embeddings, "Gemma ties its head by default");
        assert!(c.is_local_layer(0) && !c.is_local_layer(5) && !c.is_local_layer(17));
        assert_eq!(c.attention_scale(), 1.0 / 16.0);
        assert_eq!(c.final_logit_softcapping, None);
        // Not periodic.
        let text = GEMMA3.replace(
            "\"sliding_attention\",\"full_attention\"],",
            "\"full_attention\",\"sliding_attention\"],",
        );
        assert_ne!(text, GEMMA3);
        let err = parse_hf_config(&text, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer_types"), "{err}");
        // A window wider than the context.
        let text = GEMMA3.replace("\"sliding_window\":512", "\"sliding_window\":65536");
        let err = parse_hf_config(&text, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sliding_window (65536)") && err.contains("context"),
            "{err}"
        );
    }

    #[test]
    fn unknown_architecture_is_named() {
        let text = LLAMA.replace("\"llama\"", "\"gpt_neox\"");
        let err = parse_hf_config(&text, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("gpt_neox") && err.contains("llama"), "{err}");
    }
}
