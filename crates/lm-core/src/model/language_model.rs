//! [`LanguageModel`]: a decoder with its tokenizer, special-token settings and chat template.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use tokenizers::Tokenizer;

use super::config::DecoderConfig;
use super::decoder::Decoder;
use super::loader::{GgufWeights, build_decoder, decoder_config_from_gguf};
use crate::assets::{ModelSource, resolve_model};
use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::error::{LmError, Result};
use crate::io::gguf::GgufFile;
use crate::io::safetensors::SafetensorsWeights;
use crate::model::hf_config::{HfModelConfig, read_hf_config};
use crate::tokenizer::{TokenizerSettings, tokenizer_from_gguf, tokenizer_from_json};

/// A causal LM ready to tokenize, score and generate.
#[derive(Debug)]
pub struct LanguageModel {
    /// The network.
    pub decoder: Decoder,
    /// Its tokenizer (ids identical to the model's HF tokenizer).
    pub tokenizer: Tokenizer,
    /// Token prepended to every encoded text, if the model asks for one.
    pub bos_to_add: Option<u32>,
    /// Tokens that end generation.
    pub eos_ids: Vec<u32>,
    /// The model's chat template, if it has one.
    pub chat_template: Option<ChatTemplate>,
    /// The device the weights live on.
    pub device: Device,
    /// Where the model was loaded from.
    pub source: PathBuf,
}

impl LanguageModel {
    /// Loads a GGUF file, an HF directory, or a default asset by name (see `openexpert fetch`).
    pub fn load(spec: &str, device: &Device) -> Result<Self> {
        match resolve_model(spec)? {
            ModelSource::Gguf(path) => Self::from_gguf(&path, device),
            ModelSource::HfDir(dir) => Self::from_hf_dir(&dir, device),
        }
    }

    /// Loads a Llama / Qwen2 GGUF file (weights, tokenizer and template from its metadata).
    pub fn from_gguf(path: &Path, device: &Device) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let config = decoder_config_from_gguf(&file, path)?;
        let decoder = build_decoder(&config, &GgufWeights::new(&file, path, &config), device)?;
        let tokenizer = tokenizer_from_gguf(&file)?;
        // SentencePiece vocabularies add BOS unless the file says otherwise (as transformers).
        let add_bos = TokenizerSettings::from_gguf(&file)?.add_bos;
        let token_text = |id: Option<u32>| {
            id.and_then(|i| tokenizer.id_to_token(i))
                .map(|t| t.to_string())
                .unwrap_or_default()
        };
        let bos_text = token_text(config.bos_token_id);
        let eos_text = token_text(config.eos_token_ids.first().copied());
        let chat_template = match file.get_str_opt("tokenizer.chat_template")? {
            Some(src) => Some(ChatTemplate::new(src, &bos_text, &eos_text)?),
            None => None,
        };
        Ok(Self {
            bos_to_add: if add_bos { config.bos_token_id } else { None },
            eos_ids: config.eos_token_ids.clone(),
            decoder,
            tokenizer,
            chat_template,
            device: device.clone(),
            source: path.to_path_buf(),
        })
    }

    /// Loads an HF directory: `config.json`, safetensors weights, `tokenizer.json`,
    /// `tokenizer_config.json` (chat template, `add_bos_token`).
    pub fn from_hf_dir(dir: &Path, device: &Device) -> Result<Self> {
        let config = match read_hf_config(&dir.join("config.json"))? {
            HfModelConfig::Decoder(c) => c,
            HfModelConfig::Encoder(_) => {
                return Err(LmError::WrongModelKind {
                    path: dir.to_path_buf(),
                    found: "an encoder (BERT)",
                    expected: "use it as a sentence encoder (`embed`), not as a language model",
                });
            }
        };
        let weights = SafetensorsWeights::open_dir(dir)?;
        let decoder = build_decoder(&config, &weights, device)?;
        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(LmError::Tokenizer {
                detail: format!(
                    "expected {} next to the weights, found none: copy the model's tokenizer.json there",
                    tokenizer_path.display()
                ),
            });
        }
        let tokenizer = tokenizer_from_json(&tokenizer_path)?;
        let tc = read_tokenizer_config(dir)?;
        let token_str = |key: &str| -> String {
            match tc.get(key) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Object(o)) => o
                    .get("content")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_string(),
                _ => String::new(),
            }
        };
        let add_bos = tc
            .get("add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let chat_template = match tc.get("chat_template").and_then(|v| v.as_str()) {
            Some(src) => Some(ChatTemplate::new(
                src,
                &token_str("bos_token"),
                &token_str("eos_token"),
            )?),
            None => None,
        };
        let mut eos_ids = config.eos_token_ids.clone();
        if let Some(id) = tokenizer.token_to_id(&token_str("eos_token"))
            && !eos_ids.contains(&id)
        {
            eos_ids.push(id);
        }
        Ok(Self {
            bos_to_add: if add_bos { config.bos_token_id } else { None },
            eos_ids,
            decoder,
            tokenizer,
            chat_template,
            device: device.clone(),
            source: dir.to_path_buf(),
        })
    }

    /// Wraps an already-built decoder (tiny test models, fine-tuned models).
    pub fn from_parts(decoder: Decoder, tokenizer: Tokenizer, device: &Device) -> Self {
        let eos_ids = decoder.config.eos_token_ids.clone();
        Self {
            decoder,
            tokenizer,
            bos_to_add: None,
            eos_ids,
            chat_template: None,
            device: device.clone(),
            source: PathBuf::from("<in memory>"),
        }
    }

    /// The decoder's configuration.
    pub fn config(&self) -> &DecoderConfig {
        &self.decoder.config
    }

    /// Longest sequence (prompt + generated) the model accepts.
    pub fn max_context(&self) -> usize {
        self.decoder.rope.max_positions()
    }

    /// Token ids of a text, with the model's own special-token rule (BOS if it asks for one).
    /// Special-token strings in the text (e.g. `<|im_start|>`) map to their ids.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids: Vec<u32> = self.bos_to_add.into_iter().collect();
        ids.extend(self.encode_continuation(text)?);
        Ok(ids)
    }

    /// Token ids of a text with no special tokens added (for targets appended to a prompt).
    pub fn encode_continuation(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| LmError::Tokenizer {
                detail: format!("could not encode text: {e}"),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of token ids (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| LmError::Tokenizer {
                detail: format!("could not decode ids: {e}"),
            })
    }

    /// Renders a chat with the model's template.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self
            .chat_template
            .as_ref()
            .ok_or_else(|| LmError::ChatTemplate {
                detail: format!(
                    "{} has no chat template (a base model, e.g. gemma3-270m): use `--format plain` or `--format raw` to train and evaluate, and a plain prompt instead of `--chat` to generate",
                    self.source.display()
                ),
            })?;
        template.render(messages, add_generation_prompt)
    }
}

fn read_tokenizer_config(dir: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(Default::default());
    }
    let text = std::fs::read_to_string(&path).map_err(|e| LmError::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| LmError::Config {
        path,
        detail: format!("expected a JSON object, found invalid JSON: {e}"),
    })
}
