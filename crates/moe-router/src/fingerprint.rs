//! [`BaseFingerprint`]: enough of a base model to refuse a mixture saved for another one.
//!
//! lm-core and lora-zoo have no base-model identity beyond shapes (`BaseModelSpec`, which every
//! checkpoint of one architecture shares) and the free-text `base_model_name_or_path`, so the
//! fingerprint is the decoder's shape hyper-parameters plus a probe of 16 embedding values. The
//! probe is compared with a tolerance (10% of its RMS) so that the same model read from another
//! format (GGUF Q4 vs safetensors f32) still matches while a different model of the same shape
//! (another seed, another family) does not; a light fine-tune of the same base may pass.

use std::path::Path;

use lm_core::burn::tensor::{Int, Tensor, TensorData};
use lm_core::model::Decoder;
use serde::{Deserialize, Serialize};

use crate::error::{MoeError, Result};

/// Number of embedding values in the probe.
const PROBE: usize = 16;

/// The identity of a base decoder, as saved in `moe_config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseFingerprint {
    /// Architecture family (`Llama`, `Qwen2`).
    pub arch: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Number of blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Head width.
    pub head_dim: usize,
    /// Whether the output head is the embedding.
    pub tie_word_embeddings: bool,
    /// Embedding values at fixed positions (row `i·vocab/16`, column `(7i) mod hidden`).
    pub probe: Vec<f32>,
}

impl BaseFingerprint {
    /// The fingerprint of a decoder.
    pub fn of(decoder: &Decoder) -> Self {
        let c = &decoder.config;
        let weight = decoder.embed_tokens.weight.val();
        let [vocab, hidden] = weight.dims();
        let rows: Vec<i64> = (0..PROBE).map(|i| (i * vocab / PROBE) as i64).collect();
        let device = weight.device();
        let picked = weight.select(
            0,
            Tensor::<1, Int>::from_data(TensorData::new(rows, [PROBE]), &device),
        );
        let values: Vec<f32> = picked.into_data().iter::<f32>().collect();
        let probe = (0..PROBE)
            .map(|i| values[i * hidden + (7 * i) % hidden])
            .collect();
        Self {
            arch: format!("{:?}", c.arch),
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            num_layers: c.num_layers,
            num_heads: c.num_heads,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            tie_word_embeddings: c.tie_word_embeddings,
            probe,
        }
    }

    /// A short description for messages: `Llama 2×32 (vocab 256)`.
    pub fn describe(&self) -> String {
        format!(
            "{} {}x{} (vocab {})",
            self.arch, self.num_layers, self.hidden_size, self.vocab_size
        )
    }

    /// Refuses `found` (the decoder at hand) when it is not the model this fingerprint was taken
    /// of; `path` names the saved mixture in the error.
    pub fn check(&self, found: &BaseFingerprint, path: &Path) -> Result<()> {
        let mismatch = |field: &str, saved: String, found: String| MoeError::BaseMismatch {
            path: path.to_path_buf(),
            field: field.into(),
            saved,
            found,
        };
        let fields: [(&str, String, String); 9] = [
            ("arch", self.arch.clone(), found.arch.clone()),
            (
                "vocab_size",
                self.vocab_size.to_string(),
                found.vocab_size.to_string(),
            ),
            (
                "hidden_size",
                self.hidden_size.to_string(),
                found.hidden_size.to_string(),
            ),
            (
                "intermediate_size",
                self.intermediate_size.to_string(),
                found.intermediate_size.to_string(),
            ),
            (
                "num_layers",
                self.num_layers.to_string(),
                found.num_layers.to_string(),
            ),
            (
                "num_heads",
                self.num_heads.to_string(),
                found.num_heads.to_string(),
            ),
            (
                "num_kv_heads",
                self.num_kv_heads.to_string(),
                found.num_kv_heads.to_string(),
            ),
            (
                "head_dim",
                self.head_dim.to_string(),
                found.head_dim.to_string(),
            ),
            (
                "tie_word_embeddings",
                self.tie_word_embeddings.to_string(),
                found.tie_word_embeddings.to_string(),
            ),
        ];
        for (field, saved, here) in fields {
            if saved != here {
                return Err(mismatch(field, saved, here));
            }
        }
        let rms =
            (self.probe.iter().map(|v| v * v).sum::<f32>() / self.probe.len().max(1) as f32).sqrt();
        let diff = self
            .probe
            .iter()
            .zip(&found.probe)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        if self.probe.len() != found.probe.len() || diff > 0.1 * rms {
            return Err(mismatch(
                "embedding probe (the weights)",
                format!("{:?}", &self.probe[..self.probe.len().min(4)]),
                format!(
                    "{:?} (largest difference {diff:.3e}, tolerance {:.3e})",
                    &found.probe[..found.probe.len().min(4)],
                    0.1 * rms
                ),
            ));
        }
        Ok(())
    }
}
