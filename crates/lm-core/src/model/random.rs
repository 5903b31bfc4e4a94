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
    /// Random weights for a decoder config: matrices ~ U(-a, a) with a = 1/√d_in, norms 1.
    pub fn random_decoder(config: &DecoderConfig, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let c = config;
        let (d, ff, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
        let (qd, kvd) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
        let mut t = BTreeMap::new();
        let mut mat = |name: String, rows: usize, cols: usize, rng: &mut StdRng| {
            let a = 1.0 / (cols as f32).sqrt();
            let values = (0..rows * cols).map(|_| rng.random_range(-a..a)).collect();
            t.insert(name, (values, vec![rows, cols]));
        };
        mat("model.embed_tokens.weight".into(), v, d, &mut rng);
        if !c.tie_word_embeddings {
            mat("lm_head.weight".into(), v, d, &mut rng);
        }
        for i in 0..c.num_layers {
            let p = format!("model.layers.{i}");
            mat(format!("{p}.self_attn.q_proj.weight"), qd, d, &mut rng);
            mat(format!("{p}.self_attn.k_proj.weight"), kvd, d, &mut rng);
            mat(format!("{p}.self_attn.v_proj.weight"), kvd, d, &mut rng);
            mat(format!("{p}.self_attn.o_proj.weight"), d, qd, &mut rng);
            mat(format!("{p}.mlp.gate_proj.weight"), ff, d, &mut rng);
            mat(format!("{p}.mlp.up_proj.weight"), ff, d, &mut rng);
            mat(format!("{p}.mlp.down_proj.weight"), d, ff, &mut rng);
            if c.attention_bias {
                for (n, w) in [("q", qd), ("k", kvd), ("v", kvd)] {
                    mat(format!("{p}.self_attn.{n}_proj.bias"), 1, w, &mut rng);
                }
            }
        }
        let mut map = Self {
            tensors: t,
            origin: PathBuf::from("<random>"),
        };
        // Biases were drawn as [1, w] matrices; store them as vectors.
        for (_, (_, shape)) in map.tensors.iter_mut().filter(|(k, _)| k.ends_with(".bias")) {
            *shape = vec![shape[1]];
        }
        let ones = |n: usize| (vec![1.0f32; n], vec![n]);
        for i in 0..c.num_layers {
            let p = format!("model.layers.{i}");
            map.tensors
                .insert(format!("{p}.input_layernorm.weight"), ones(d));
            map.tensors
                .insert(format!("{p}.post_attention_layernorm.weight"), ones(d));
        }
        map.tensors.insert("model.norm.weight".into(), ones(d));
        map
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
