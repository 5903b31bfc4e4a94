//! [`SentenceEncoder`]: a BERT encoder with its tokenizer, giving sentence-transformers
//! embeddings (mean pooling over real tokens, then L2 normalisation).

use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use tokenizers::{Tokenizer, TruncationParams};

use super::encoder::Encoder;
use super::loader::build_encoder;
use crate::assets::{ModelSource, resolve_model};
use crate::error::{LmError, Result};
use crate::io::safetensors::SafetensorsWeights;
use crate::model::hf_config::{HfModelConfig, read_hf_config};
use crate::model::language_model::read_pad_token_id;
use crate::tokenizer::{check_ids_fit_embedding, check_ids_in_vocab, tokenizer_from_json};

/// A sentence embedder (e.g. all-MiniLM-L6-v2).
#[derive(Debug)]
pub struct SentenceEncoder {
    /// The network.
    pub encoder: Encoder,
    /// Its tokenizer, with padding off and truncation at [`Self::max_seq_length`].
    pub tokenizer: Tokenizer,
    /// Longest input in tokens (`sentence_bert_config.json`, default 256).
    pub max_seq_length: usize,
    /// Device of the weights.
    pub device: Device,
    /// Where it was loaded from.
    pub source: PathBuf,
}

impl SentenceEncoder {
    /// Loads an HF directory or a default asset name (e.g. `minilm-l6-v2`).
    pub fn load(spec: &str, device: &Device) -> Result<Self> {
        match resolve_model(spec)? {
            ModelSource::HfDir(dir) => Self::from_hf_dir(&dir, device),
            ModelSource::Gguf(path) => Err(LmError::WrongModelKind {
                path,
                found: "a GGUF decoder",
                expected: "a sentence encoder needs an HF BERT directory",
            }),
        }
    }

    /// Loads an HF BERT directory with `config.json`, `model.safetensors` and `tokenizer.json`.
    pub fn from_hf_dir(dir: &Path, device: &Device) -> Result<Self> {
        let config = match read_hf_config(&dir.join("config.json"))? {
            HfModelConfig::Encoder(c) => c,
            HfModelConfig::Decoder(_) => {
                return Err(LmError::WrongModelKind {
                    path: dir.to_path_buf(),
                    found: "a decoder",
                    expected: "the sentence encoder needs a BERT model",
                });
            }
        };
        let mut tokenizer = tokenizer_from_json(dir.join("tokenizer.json"))?;
        // Before the weights: every id the tokenizer can produce needs an embedding row.
        let specials: Vec<(String, u32)> = read_pad_token_id(&dir.join("config.json"))?
            .map(|id| {
                (
                    "the padding token (pad_token_id in config.json)".to_string(),
                    id,
                )
            })
            .into_iter()
            .collect();
        check_ids_fit_embedding(&tokenizer, &specials, config.vocab_size, dir)?;
        let weights = SafetensorsWeights::open_dir(dir)?;
        let encoder = build_encoder(&config, &weights, device)?;
        let max_seq_length = read_max_seq_length(dir)?
            .unwrap_or(256)
            .min(config.max_position_embeddings);
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| LmError::Tokenizer {
                detail: format!("could not set truncation: {e}"),
            })?;
        Ok(Self {
            encoder,
            tokenizer,
            max_seq_length,
            device: device.clone(),
            source: dir.to_path_buf(),
        })
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.encoder.config.hidden_size
    }

    /// Token ids of a sentence with `[CLS]`/`[SEP]`, truncated to `max_seq_length`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| LmError::Tokenizer {
                detail: format!("could not encode text: {e}"),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Embeds sentences in batches of `batch_size`; returns one L2-normalised row per text.
    ///
    /// # Shapes
    /// - returns `texts.len()` rows of [`Self::dim`] values
    pub fn embed(&self, texts: &[String], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let ids = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>>>()?;
        // Sort by length so batches carry little padding; restore order at the end.
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); ids.len()];
        for chunk in order.chunks(batch_size.max(1)) {
            let rows: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let embs = self.embed_ids(&rows)?;
            for (&i, e) in chunk.iter().zip(embs) {
                out[i] = e;
            }
        }
        Ok(out)
    }

    /// Embeds pre-tokenised rows as one right-padded batch.
    pub fn embed_ids(&self, rows: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let max = self.encoder.config.max_position_embeddings;
        for (i, r) in rows.iter().enumerate() {
            check_ids_in_vocab(r, self.encoder.config.vocab_size, || {
                format!("row {i} (text to embed)")
            })?;
            if r.len() > max {
                return Err(LmError::ContextOverflow {
                    tokens: r.len(),
                    extra: 0,
                    max,
                });
            }
        }
        let b = rows.len();
        let s = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
        let mut tokens = vec![0i64; b * s];
        let mut pad = vec![true; b * s];
        for (i, r) in rows.iter().enumerate() {
            for (j, &t) in r.iter().enumerate() {
                tokens[i * s + j] = t as i64;
                pad[i * s + j] = false;
            }
        }
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(tokens, [b, s]), &self.device);
        let pad = Tensor::<2, Bool>::from_data(TensorData::new(pad, [b, s]), &self.device);
        let emb = self.encoder.embed(tokens, pad);
        let d = self.dim();
        let values = emb
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| LmError::InvalidInput(format!("could not read embeddings: {e:?}")))?;
        Ok(values.chunks(d).map(<[f32]>::to_vec).collect())
    }
}

fn read_max_seq_length(dir: &Path) -> Result<Option<usize>> {
    let path = dir.join("sentence_bert_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| LmError::io(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| LmError::Config {
        path: path.clone(),
        detail: format!("expected JSON, found: {e}"),
    })?;
    Ok(v.get("max_seq_length")
        .and_then(|x| x.as_u64())
        .map(|x| x as usize))
}
