//! [`LanguageModel`]: a decoder with its tokenizer, special-token settings and chat template.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use tokenizers::Tokenizer;

use super::config::{DecoderArch, DecoderConfig};
use super::decoder::Decoder;
use super::loader::{GgufWeights, build_decoder, decoder_config_from_gguf};
use super::precision::Precision;
use crate::assets::{ModelSource, resolve_model};
use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::error::{LmError, Result};
use crate::io::gguf::GgufFile;
use crate::io::safetensors::SafetensorsWeights;
use crate::model::hf_config::{HfModelConfig, read_hf_config};
use crate::prompt::PromptFormat;
use crate::quant::{QuantReport, WeightFormat, quantize_decoder};
use crate::tokenizer::{
    TokenizerSettings, check_ids_fit_embedding, check_ids_in_vocab, tokenizer_from_gguf,
    tokenizer_from_json,
};

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

    /// Loads a Llama / Qwen2 / Gemma 3 GGUF file (weights, tokenizer and template from its
    /// metadata).
    pub fn from_gguf(path: &Path, device: &Device) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let config = decoder_config_from_gguf(&file, path)?;
        let tokenizer = tokenizer_from_gguf(&file)?;
        // Before the (slow) weights: every id the tokenizer can produce needs an embedding row.
        let settings = TokenizerSettings::from_gguf(&file)?;
        let mut specials = special_ids(
            &config,
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
        );
        specials.extend(settings.pad_id.map(|id| {
            (
                "the padding token (tokenizer.ggml.padding_token_id)".to_string(),
                id,
            )
        }));
        check_ids_fit_embedding(&tokenizer, &specials, config.vocab_size, path)?;
        let decoder = build_decoder(&config, &GgufWeights::new(&file, path, &config), device)?;
        // SentencePiece vocabularies add BOS unless the file says otherwise (as transformers).
        let add_bos = settings.add_bos;
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
        let add_bos = match tc.get("add_bos_token") {
            None | Some(serde_json::Value::Null) => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(v) => {
                return Err(LmError::Config {
                    path: dir.join("tokenizer_config.json"),
                    detail: format!("`add_bos_token`: expected true or false, found {v}"),
                });
            }
        };
        let chat_template = match chat_template_source(dir, &tc)? {
            Some(src) => Some(ChatTemplate::new(
                &src,
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
        // Before the weights: every id the tokenizer can produce needs an embedding row.
        let mut specials = special_ids(
            &config,
            "bos_token_id in config.json",
            "eos_token_id in config.json",
        );
        if let Some(id) = read_pad_token_id(&dir.join("config.json"))? {
            specials.push((
                "the padding token (pad_token_id in config.json)".to_string(),
                id,
            ));
        }
        check_ids_fit_embedding(&tokenizer, &specials, config.vocab_size, dir)?;
        let weights = SafetensorsWeights::open_dir(dir)?;
        let decoder = build_decoder(&config, &weights, device)?;
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

    /// Chooses the weights decode steps multiply by ([`crate::quant`]): `Native` keeps the
    /// GGUF's blocks where a kernel exists (re-reading them from [`source`](Self::source);
    /// every matrix stays f32 for a model not loaded from a GGUF file), `Q8_0` re-quantises
    /// the f32 weights, `F32` drops any quantised copy. Prefill, scoring and training keep
    /// using the f32 weights.
    ///
    /// # Errors
    /// When the GGUF file cannot be re-opened or does not match the decoder.
    pub fn set_decode_weights(&mut self, format: WeightFormat) -> Result<QuantReport> {
        let precision = self.decoder.precision();
        if format != WeightFormat::F32 && precision != Precision::F32 {
            return Err(LmError::InvalidInput(format!(
                "quantised decode weights ({}) serve an f32 model, and this one runs in {precision}; \
                 use one of `--decode-weights` and `--dtype`",
                format.name()
            )));
        }
        let gguf = if format == WeightFormat::Native && self.source.is_file() {
            Some(GgufFile::open(&self.source)?)
        } else {
            None
        };
        quantize_decoder(&mut self.decoder, format, gguf.as_ref())
    }

    /// Runs the decoder in `precision` ([`Decoder::set_precision`]: frozen weights and block
    /// activations in f16/bf16, norms, softmax, LoRA experts and logits in f32).
    ///
    /// # Errors
    /// [`LmError::Device`] when the model's device does not compute in that dtype;
    /// [`LmError::InvalidInput`] when quantised decode weights are attached (they serve f32
    /// models only), or for f16 on a Gemma 3 model (its residual stream outgrows f16's ±65504:
    /// every logit comes out NaN; it was trained in bf16, which has f32's range).
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        precision.check_device(&self.device)?;
        if precision == Precision::F16 && self.decoder.config.arch == DecoderArch::Gemma3 {
            return Err(LmError::InvalidInput(
                "Gemma 3 does not run in f16: its activations outgrow f16's range (±65504) and \
                 every logit comes out NaN; use `--dtype bf16` (it has f32's range) or f32"
                    .into(),
            ));
        }
        let quantised = self.decoder.lm_head_quant.is_some()
            || self
                .decoder
                .adapted_linears()
                .iter()
                .any(|(_, l)| l.quant.is_some());
        if precision != Precision::F32 && quantised {
            return Err(LmError::InvalidInput(format!(
                "quantised decode weights are attached and serve an f32 model; running in \
                 {precision} needs `--decode-weights f32`"
            )));
        }
        self.decoder.set_precision(precision);
        Ok(())
    }

    /// The decoder's configuration.
    pub fn config(&self) -> &DecoderConfig {
        &self.decoder.config
    }

    /// Longest sequence (prompt + generated) the model accepts.
    pub fn max_context(&self) -> usize {
        self.decoder.rope.max_positions()
    }

    /// Token ids of a plain text, with the model's own special-token rule: BOS first when the
    /// model asks for one and the text does not already begin with it (so a text that carries
    /// its BOS keeps exactly one, as lm-evaluation-harness does since 0.4.10). Special-token
    /// strings in the text (e.g. `<|im_start|>`) map to their ids.
    ///
    /// Text rendered by the chat template goes through [`Self::encode_chat`] (or
    /// [`Self::encode_prompt`]), which adds nothing.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode_continuation(text)?;
        if let Some(bos) = self.bos_to_add
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// Token ids of a text rendered by the chat template ([`Self::render_chat`]): no special
    /// token is added, the template writes the ones the model needs (`{{ bos_token }}`...), as
    /// transformers' `apply_chat_template` encodes with `add_special_tokens=False`.
    pub fn encode_chat(&self, rendered: &str) -> Result<Vec<u32>> {
        self.encode_continuation(rendered)
    }

    /// Token ids of a prompt laid out in `format`: [`Self::encode_chat`] for the chat format
    /// (the text was rendered by the template), [`Self::encode`] for plain text. Every path
    /// that tokenises a prompt (training, evaluation, generation) goes through here, so a chat
    /// prompt gets exactly the special tokens its template writes.
    pub fn encode_prompt(&self, format: &PromptFormat, text: &str) -> Result<Vec<u32>> {
        if format.is_chat() {
            self.encode_chat(text)
        } else {
            self.encode(text)
        }
    }

    /// Token ids of the prompt that asks `question` in `format` (what generation continues):
    /// chat renders it as a user turn with the template's generation prompt, plain fills
    /// `doc_to_text`; then [`Self::encode_prompt`].
    ///
    /// # Errors
    /// [`LmError::ChatTemplate`] for the chat format on a model without a template, or a
    /// template that fails; [`LmError::Tokenizer`] when encoding fails.
    pub fn encode_question(&self, format: &PromptFormat, question: &str) -> Result<Vec<u32>> {
        let text = match format.plain_pair(question, "") {
            Some((text, _)) => text,
            None => self.render_chat(&[ChatMessage::user(question)], true)?,
        };
        self.encode_prompt(format, &text)
    }

    /// Checks that every id of `ids` has a row in the embedding table, before the ids reach the
    /// backend (which would fail on them with a panic); `what` names the input for the message.
    ///
    /// # Errors
    /// [`LmError::TokenIdOutOfRange`] with the first id past the table.
    pub fn check_ids(&self, ids: &[u32], what: impl FnOnce() -> String) -> Result<()> {
        check_ids_in_vocab(ids, self.decoder.config.vocab_size, what)
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

/// The BOS and EOS ids a decoder config declares, named by where they come from.
fn special_ids(config: &DecoderConfig, bos_from: &str, eos_from: &str) -> Vec<(String, u32)> {
    let bos = config
        .bos_token_id
        .map(|id| (format!("the BOS token ({bos_from})"), id));
    let eos = config
        .eos_token_ids
        .iter()
        .map(|&id| (format!("the EOS token ({eos_from})"), id));
    bos.into_iter().chain(eos).collect()
}

/// `pad_token_id` of an HF `config.json` (already known to be a JSON object), if set.
pub(crate) fn read_pad_token_id(path: &Path) -> Result<Option<u32>> {
    let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| LmError::Config {
        path: path.to_path_buf(),
        detail: format!("expected a JSON object, found invalid JSON: {e}"),
    })?;
    match v.get("pad_token_id") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .map(Some)
            .ok_or_else(|| LmError::Config {
                path: path.to_path_buf(),
                detail: format!("`pad_token_id`: expected a token id (an integer >= 0), found {x}"),
            }),
    }
}

/// The chat template of an HF directory: `chat_template` in `tokenizer_config.json`, as a string
/// or as transformers' list of named templates (the one named `default` is used, as
/// `apply_chat_template` does without a name), else the file `chat_template.jinja`.
fn chat_template_source(
    dir: &Path,
    tc: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<String>> {
    use serde_json::Value;
    let path = dir.join("tokenizer_config.json");
    let bad = |detail: String| LmError::Config {
        path: path.clone(),
        detail,
    };
    match tc.get("chat_template") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => return Ok(Some(s.clone())),
        Some(Value::Array(list)) => {
            let mut names = Vec::new();
            for t in list {
                let (Some(name), Some(template)) = (
                    t.get("name").and_then(Value::as_str),
                    t.get("template").and_then(Value::as_str),
                ) else {
                    return Err(bad(format!(
                        "`chat_template`: expected a string or a list of {{\"name\", \"template\"}} objects, found the entry {t}"
                    )));
                };
                if name == "default" {
                    return Ok(Some(template.to_string()));
                }
                names.push(name.to_string());
            }
            tracing::warn!(
                templates = ?names,
                "{}: chat_template lists named templates but none named `default`; the model is used without a chat template",
                path.display()
            );
            return Ok(None);
        }
        Some(v) => {
            return Err(bad(format!(
                "`chat_template`: expected a string or a list of named templates, found {v}"
            )));
        }
    }
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        let text = std::fs::read_to_string(&jinja).map_err(|e| LmError::io(&jinja, e))?;
        return Ok(Some(text));
    }
    Ok(None)
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
