//! lm-core models behind data-select's [`Embedder`] trait: sentence encoders (Rocket's
//! retrieval, with MiniLM standing in for bge-m3) and decoder mean-pooled states (DiverseEvol).

use std::sync::Mutex;

use data_select::embed::Embedder;
use data_select::{Result, SelectError};
use lm_core::embed::decoder_embeddings;
use lm_core::model::{ExpertMix, LanguageModel, SentenceEncoder};
use ndarray::Array2;

/// A sentence encoder (mean pool + L2) as an [`Embedder`].
#[derive(Debug)]
pub struct SentenceEmbedder {
    encoder: Mutex<SentenceEncoder>,
    id: String,
    dim: usize,
    batch_size: usize,
}

impl SentenceEmbedder {
    /// Loads an HF BERT directory or a default asset name (e.g. `minilm-l6-v2`).
    pub fn load(spec: &str, device: &lm_core::burn::tensor::Device) -> lm_core::Result<Self> {
        let encoder = SentenceEncoder::load(spec, device)?;
        Ok(Self::new(encoder, spec))
    }

    /// Wraps a loaded encoder; `name` identifies it in cache keys.
    pub fn new(encoder: SentenceEncoder, name: &str) -> Self {
        let dim = encoder.dim();
        let id = format!(
            "sentence-encoder:{name}:mean-l2:max{}",
            encoder.max_seq_length
        );
        Self {
            encoder: Mutex::new(encoder),
            id,
            dim,
            batch_size: 32,
        }
    }
}

impl Embedder for SentenceEmbedder {
    fn embed(&self, texts: &[String]) -> Result<Array2<f32>> {
        let encoder = self.encoder.lock().expect("embedder lock");
        let rows = encoder
            .embed(texts, self.batch_size)
            .map_err(|e| SelectError::embedder(&self.id, e))?;
        to_matrix(rows, self.dim, &self.id)
    }
    fn model_id(&self) -> String {
        self.id.clone()
    }
    fn dim(&self) -> usize {
        self.dim
    }
}

/// A decoder's mean-pooled last hidden states (DiverseEvol) as an [`Embedder`].
#[derive(Debug)]
pub struct DecoderEmbedder {
    model: Mutex<LanguageModel>,
    id: String,
    dim: usize,
    batch_size: usize,
}

impl DecoderEmbedder {
    /// Wraps a loaded model; `name` identifies it (and its adapters) in cache keys.
    pub fn new(model: LanguageModel, name: &str) -> Self {
        let dim = model.config().hidden_size;
        Self {
            model: Mutex::new(model),
            id: format!("decoder-mean:{name}"),
            dim,
            batch_size: 8,
        }
    }
}

impl Embedder for DecoderEmbedder {
    fn embed(&self, texts: &[String]) -> Result<Array2<f32>> {
        let model = self.model.lock().expect("embedder lock");
        let err = |e: lm_core::LmError| SelectError::embedder(&self.id, e);
        let ids = texts
            .iter()
            .map(|t| model.encode(t))
            .collect::<lm_core::Result<Vec<_>>>()
            .map_err(err)?;
        let rows =
            decoder_embeddings(&model, &ids, self.batch_size, &ExpertMix::Base).map_err(err)?;
        to_matrix(rows, self.dim, &self.id)
    }
    fn model_id(&self) -> String {
        self.id.clone()
    }
    fn dim(&self) -> usize {
        self.dim
    }
}

fn to_matrix(rows: Vec<Vec<f32>>, dim: usize, id: &str) -> Result<Array2<f32>> {
    let n = rows.len();
    Array2::from_shape_vec((n, dim), rows.concat())
        .map_err(|e| SelectError::embedder(id, format!("expected {n} rows of {dim} values: {e}")))
}
