//! What an export starts from: a GGUF file or an HF directory, with its tokenizer information.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tokenizers::Tokenizer;

use super::{TensorEntry, decoder_tensor_plan};
use crate::assets::{ModelSource, resolve_model};
use crate::error::{LmError, Result};
use crate::io::gguf::GgufFile;
use crate::io::safetensors::SafetensorsWeights;
use crate::model::config::DecoderConfig;
use crate::model::hf_config::{HfModelConfig, read_hf_config};
use crate::model::loader::{GgufWeights, WeightSource, decoder_config_from_gguf};
use crate::tokenizer::{tokenizer_from_gguf, tokenizer_from_json};

/// Tokenizer-side facts of a base model, for `tokenizer.json` / `tokenizer_config.json`.
#[derive(Debug, Clone)]
pub struct TokenizerInfo {
    /// The tokenizer lm-core runs.
    pub tokenizer: Tokenizer,
    /// Jinja chat template source, if any.
    pub chat_template: Option<String>,
    /// Whether a BOS token is prepended to every text.
    pub add_bos: bool,
    /// BOS token text.
    pub bos: Option<String>,
    /// EOS token text.
    pub eos: Option<String>,
    /// Padding token text.
    pub pad: Option<String>,
    /// Unknown-token text.
    pub unk: Option<String>,
    /// Padding token id.
    pub pad_id: Option<u32>,
}

/// A base model opened for export: a GGUF file or an HF directory, seen through HF tensor names.
pub enum ExportBase {
    /// A GGUF file.
    Gguf {
        /// The opened file.
        file: GgufFile,
        /// Its path.
        path: PathBuf,
        /// Its decoder config.
        config: DecoderConfig,
    },
    /// An HF directory.
    HfDir {
        /// Its weights.
        weights: SafetensorsWeights,
        /// The directory.
        dir: PathBuf,
        /// Its decoder config.
        config: DecoderConfig,
    },
}

impl std::fmt::Debug for ExportBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExportBase({})", self.origin().display())
    }
}

impl ExportBase {
    /// Opens a GGUF path, an HF directory or a model asset name (as [`LanguageModel::load`]).
    ///
    /// [`LanguageModel::load`]: crate::model::LanguageModel::load
    pub fn open(spec: &str) -> Result<Self> {
        match resolve_model(spec)? {
            ModelSource::Gguf(path) => {
                let file = GgufFile::open(&path)?;
                let config = decoder_config_from_gguf(&file, &path)?;
                Ok(ExportBase::Gguf { file, path, config })
            }
            ModelSource::HfDir(dir) => {
                let config = match read_hf_config(&dir.join("config.json"))? {
                    HfModelConfig::Decoder(c) => c,
                    HfModelConfig::Encoder(_) => {
                        return Err(LmError::WrongModelKind {
                            path: dir.clone(),
                            found: "an encoder (BERT)",
                            expected: "only decoders (Llama, Qwen2) are exported",
                        });
                    }
                };
                let weights = SafetensorsWeights::open_dir(&dir)?;
                Ok(ExportBase::HfDir {
                    weights,
                    dir,
                    config,
                })
            }
        }
    }

    /// The decoder config.
    pub fn config(&self) -> &DecoderConfig {
        match self {
            ExportBase::Gguf { config, .. } | ExportBase::HfDir { config, .. } => config,
        }
    }

    /// The tensors the export writes.
    pub fn plan(&self) -> Vec<TensorEntry> {
        decoder_tensor_plan(self.config())
    }

    /// Reads a tensor by HF name, f32, PyTorch layout (q/k un-permuted for GGUF Llama).
    pub fn tensor(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        match self {
            ExportBase::Gguf { file, path, config } => {
                GgufWeights::new(file, path, config).get(name)
            }
            ExportBase::HfDir { weights, .. } => weights.get(name),
        }
    }

    /// Where the base came from.
    pub fn origin(&self) -> &Path {
        match self {
            ExportBase::Gguf { path, .. } => path,
            ExportBase::HfDir { dir, .. } => dir,
        }
    }

    /// The tokenizer and its special tokens (GGUF metadata, or the directory's files).
    pub fn tokenizer_info(&self) -> Result<TokenizerInfo> {
        match self {
            ExportBase::Gguf { file, config, .. } => {
                let tokenizer = tokenizer_from_gguf(file)?;
                let text = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
                let pad_id = file.get_u32_opt("tokenizer.ggml.padding_token_id")?;
                Ok(TokenizerInfo {
                    chat_template: file
                        .get_str_opt("tokenizer.chat_template")?
                        .map(str::to_string),
                    add_bos: crate::tokenizer::TokenizerSettings::from_gguf(file)?.add_bos,
                    bos: text(config.bos_token_id),
                    eos: text(config.eos_token_ids.first().copied()),
                    pad: text(pad_id),
                    unk: text(file.get_u32_opt("tokenizer.ggml.unknown_token_id")?),
                    pad_id,
                    tokenizer,
                })
            }
            ExportBase::HfDir { dir, .. } => {
                let tokenizer = tokenizer_from_json(dir.join("tokenizer.json"))?;
                let tc = read_json_opt(&dir.join("tokenizer_config.json"))?.unwrap_or(json!({}));
                let token = |key: &str| match tc.get(key) {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Object(o)) => {
                        o.get("content").and_then(Value::as_str).map(str::to_string)
                    }
                    _ => None,
                };
                let pad = token("pad_token");
                Ok(TokenizerInfo {
                    chat_template: tc
                        .get("chat_template")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    add_bos: tc
                        .get("add_bos_token")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    bos: token("bos_token"),
                    eos: token("eos_token"),
                    pad_id: pad.as_deref().and_then(|p| tokenizer.token_to_id(p)),
                    pad,
                    unk: token("unk_token"),
                    tokenizer,
                })
            }
        }
    }
}

pub(super) fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| LmError::Config {
            path: path.to_path_buf(),
            detail: format!("expected a JSON object, found invalid JSON: {e}"),
        })
}
