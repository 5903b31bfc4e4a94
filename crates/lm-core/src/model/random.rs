//! Tiny random models for tests, examples and benchmarks of code that needs *a* model but not a
//! trained one: a seeded [`TensorMap`] of weights with HF names, built through the same loaders
//! as real checkpoints, and a byte-level tokenizer with no merges.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokenizers::Tokenizer;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

use super::config::DecoderConfig;
use super::decoder::Decoder;
use super::language_model::LanguageModel;
use super::layout::{DecoderTensor, TensorKind, decoder_tensor_plan};
use super::loader::{WeightSource, build_decoder};
use crate::error::{LmError, Result};

/// Weights held in memory by HF name: `(values, shape)` in PyTorch layout.
#[derive(Debug, Clone, Default)]
pub struct TensorMap {
    /// The tensors.
    pub tensors: BTreeMap<String, (Vec<f32>, Vec<usize>)>,
    origin: PathBuf,
}

impl TensorMap {
    /// Random weights for a decoder config ([`decoder_tensor_plan`]): matrices ~ U(-a, a)
    /// with a = 1/√d_in, biases with a = 1/√d_out, norms of unit scale (1, or 0 for Gemma's `1 + w`). Matrices are drawn embedding first, then the head,
    /// then block by block (weights, then biases), so a config's weights never depend on
    /// whether another tensor exists later in the plan.
    pub fn random_decoder(config: &DecoderConfig, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let plan = decoder_tensor_plan(config);
        let mut draw_order: Vec<&DecoderTensor> =
            plan.iter().filter(|t| t.kind != TensorKind::Norm).collect();
        draw_order.sort_by_key(|t| {
            let group = match t.kind {
                TensorKind::Embedding => 0,
                TensorKind::LmHead => 1,
                _ => 2 + t.layer.unwrap_or(0),
            };
            (group, matches!(t.kind, TensorKind::LinearBias(_)))
        });
        let mut tensors = BTreeMap::new();
        for t in draw_order {
            // Matrices: a = 1/√d_in; biases: a = 1/√d_out (their only dimension).
            let a = 1.0 / (*t.shape.last().expect("tensors have a shape") as f32).sqrt();
            let values = (0..t.numel()).map(|_| rng.random_range(-a..a)).collect();
            tensors.insert(t.name.clone(), (values, t.shape.clone()));
        }
        // Unit scale: weight 1, or 0 where the norm scales by `1 + w` (Gemma).
        let unit = if config.arch.norm_unit_offset() {
            0.0
        } else {
            1.0
        };
        for t in plan.iter().filter(|t| t.kind == TensorKind::Norm) {
            tensors.insert(t.name.clone(), (vec![unit; t.numel()], t.shape.clone()));
        }
        Self {
            tensors,
            origin: PathBuf::from("<random>"),
        }
    }
}

impl WeightSource for TensorMap {
    fn get(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| LmError::MissingTensor {
                path: self.origin.clone(),
                tensor: name.to_string(),
            })
    }
    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    fn origin(&self) -> &Path {
        &self.origin
    }
}

/// A byte-level BPE tokenizer with the 256 byte tokens and no merges (ids 0..256).
pub fn byte_tokenizer() -> Tokenizer {
    let vocab: tokenizers::models::bpe::Vocab = ByteLevel::alphabet()
        .into_iter()
        .map(|c| c.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .enumerate()
        .map(|(i, s)| (s, i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, Vec::new())
        .build()
        .expect("a merge-free byte vocabulary is valid");
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, false)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok
}

/// A tiny random [`LanguageModel`] (vocab 256, byte tokenizer) built through the real loader.
pub fn tiny_language_model(seed: u64, device: &Device) -> LanguageModel {
    let config = DecoderConfig::tiny(256);
    let decoder: Decoder =
        build_decoder(&config, &TensorMap::random_decoder(&config, seed), device)
            .expect("random weights match their own config");
    LanguageModel::from_parts(decoder, byte_tokenizer(), device)
}

/// A tiny random Gemma 3 [`LanguageModel`] ([`DecoderConfig::tiny_gemma3`]: window 4, every 2nd
/// layer global; vocab 256, byte tokenizer) built through the real loader, its norm weights
/// drawn from U(-0.5, 0.5) so that the `1 + w` scale is exercised.
pub fn tiny_gemma3_language_model(seed: u64, device: &Device) -> LanguageModel {
    tiny_language_model_with(DecoderConfig::tiny_gemma3(256), seed, device)
}

/// A tiny random [`LanguageModel`] of any config (vocab 256, byte tokenizer); norm weights are
/// drawn from U(-0.5, 0.5) around their unit value.
pub fn tiny_language_model_with(
    config: DecoderConfig,
    seed: u64,
    device: &Device,
) -> LanguageModel {
    let mut weights = TensorMap::random_decoder(&config, seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e6f726d);
    for t in decoder_tensor_plan(&config)
        .iter()
        .filter(|t| t.kind == TensorKind::Norm)
    {
        if let Some((values, _)) = weights.tensors.get_mut(&t.name) {
            values
                .iter_mut()
                .for_each(|v| *v += rng.random_range(-0.5..0.5));
        }
    }
    let decoder =
        build_decoder(&config, &weights, device).expect("random weights match their own config");
    LanguageModel::from_parts(decoder, byte_tokenizer(), device)
}
