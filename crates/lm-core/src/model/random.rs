//! Tiny random models for tests, examples and benchmarks of code that needs *a* model but not a
//! trained one: a seeded [`TensorMap`] of weights with HF names, built through the same loaders
//! as real checkpoints, and a byte-level tokenizer with no merges.
//!
//! The same models as files, for tests that load from disk or run the CLI: [`tiny_gguf`] (a
//! Llama GGUF with its tokenizer and chat template in the metadata), [`write_tiny_hf_dir`] (the
//! HF directory of a Llama decoder) and [`write_tiny_bert_dir`] (a BERT sentence encoder). Their
//! tokenizer is byte-level with no merges and three control tokens, `<|endoftext|>` (id 0, BOS),
//! `<|im_start|>` (1) and `<|im_end|>` (2, EOS), then the 256 byte tokens ([`tiny_vocab`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokenizers::Tokenizer;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

use super::config::{DecoderConfig, EncoderConfig};
use super::decoder::Decoder;
use super::language_model::LanguageModel;
use super::layout::{DecoderTensor, TensorKind, decoder_tensor_plan};
use super::loader::{WeightSource, build_decoder};
use crate::error::{LmError, Result};
use crate::io::gguf::{GgufFile, GgufWriter};
use crate::tokenizer::tokenizer_from_gguf;

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

/// The ChatML template of the tiny model files: no BOS written, the generation prompt opens an
/// assistant turn.
pub const TINY_CHAT_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Control tokens of the tiny model files, ids 0, 1, 2.
const TINY_CONTROL: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// The tiny model files' vocabulary: the three control tokens, then the 256 bytes spelled in
/// GPT-2's byte alphabet (259 tokens, one embedding row each).
pub fn tiny_vocab() -> Vec<String> {
    let mut tokens: Vec<String> = TINY_CONTROL.iter().map(|t| t.to_string()).collect();
    let mut bytes: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    bytes.sort_unstable();
    tokens.extend(bytes.into_iter().map(String::from));
    tokens
}

/// The decoder config of the tiny model files ([`DecoderConfig::tiny`] with [`tiny_vocab`],
/// BOS 0, EOS 2).
pub fn tiny_file_config() -> DecoderConfig {
    DecoderConfig {
        bos_token_id: Some(0),
        eos_token_ids: vec![2],
        ..DecoderConfig::tiny(tiny_vocab().len())
    }
}

/// A complete tiny Llama GGUF: [`tiny_file_config`], random F32 weights of `seed`, the
/// byte-level tokenizer of [`tiny_vocab`], `add_bos_token = false` and [`TINY_CHAT_TEMPLATE`].
/// A writer, so tests can replace entries (`add_*` replaces a key) before writing it.
pub fn tiny_gguf(seed: u64) -> GgufWriter {
    let config = tiny_file_config();
    let mut w = GgufWriter::new();
    w.add_str("general.architecture", "llama")
        .add_str("general.name", "tiny random llama")
        .add_u32("llama.vocab_size", config.vocab_size as u32)
        .add_u32("llama.embedding_length", config.hidden_size as u32)
        .add_u32("llama.feed_forward_length", config.intermediate_size as u32)
        .add_u32("llama.block_count", config.num_layers as u32)
        .add_u32("llama.attention.head_count", config.num_heads as u32)
        .add_u32("llama.attention.head_count_kv", config.num_kv_heads as u32)
        .add_u32(
            "llama.context_length",
            config.max_position_embeddings as u32,
        )
        .add_f32("llama.rope.freq_base", config.rope_theta as f32)
        .add_f32(
            "llama.attention.layer_norm_rms_epsilon",
            config.rms_norm_eps as f32,
        );
    add_tiny_tokenizer(&mut w);
    w.add_u32("tokenizer.ggml.bos_token_id", 0)
        .add_u32("tokenizer.ggml.eos_token_id", 2)
        .add_bool("tokenizer.ggml.add_bos_token", false)
        .add_str("tokenizer.chat_template", TINY_CHAT_TEMPLATE);
    for (name, (values, shape)) in TensorMap::random_decoder(&config, seed).tensors {
        let gguf = super::loader::GgufWeights::gguf_name(&name)
            .expect("every tensor of the plan has a GGUF name");
        w.add_tensor_f32(&gguf, &shape, &values)
            .expect("shapes come from the plan");
    }
    w
}

/// The `tokenizer.ggml.*` entries of the tiny vocabulary (no merges; control tokens typed 3).
fn add_tiny_tokenizer(w: &mut GgufWriter) {
    let tokens = tiny_vocab();
    let types: Vec<i32> = (0..tokens.len())
        .map(|i| if i < TINY_CONTROL.len() { 3 } else { 1 })
        .collect();
    w.add_str("tokenizer.ggml.model", "gpt2")
        .add_str("tokenizer.ggml.pre", "gpt2")
        .add_str_array("tokenizer.ggml.tokens", &tokens)
        .add_str_array::<&str>("tokenizer.ggml.merges", &[])
        .add_i32_array("tokenizer.ggml.token_type", &types);
}

/// The `tokenizer.json` text of the tiny model files (the tokenizer [`tiny_gguf`] describes).
///
/// # Errors
/// Only if the tokenizer cannot be built or serialised.
pub fn tiny_tokenizer_json() -> Result<String> {
    let mut w = GgufWriter::new();
    add_tiny_tokenizer(&mut w);
    let file = GgufFile::from_bytes(w.to_bytes(), "tiny.gguf")?;
    tokenizer_from_gguf(&file)?
        .to_string(false)
        .map_err(|e| LmError::Tokenizer {
            detail: format!("cannot serialise the tiny tokenizer: {e}"),
        })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| LmError::io(path, e))
}

fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, (Vec<f32>, Vec<usize>)>,
) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, (v, s))| {
            (
                k.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(k, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (k.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| LmError::InvalidInput(format!("tiny safetensors: {e}")))?;
    let data = safetensors::serialize(views, None::<std::collections::HashMap<String, String>>)
        .map_err(|e| LmError::InvalidInput(format!("tiny safetensors: {e}")))?;
    write_file(path, &data)
}

/// Writes the HF directory of a tiny Llama decoder into `dir` (created if needed):
/// `config.json` ([`tiny_file_config`]), `model.safetensors` (random F32 weights of `seed`),
/// `tokenizer.json` ([`tiny_tokenizer_json`]) and `tokenizer_config.json`
/// (`add_bos_token = false`, [`TINY_CHAT_TEMPLATE`]).
///
/// # Errors
/// [`LmError::Io`] when a file cannot be written.
pub fn write_tiny_hf_dir(dir: &Path, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| LmError::io(dir, e))?;
    let c = tiny_file_config();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "rope_theta": c.rope_theta,
        "rms_norm_eps": c.rms_norm_eps,
        "max_position_embeddings": c.max_position_embeddings,
        "tie_word_embeddings": c.tie_word_embeddings,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    });
    write_file(&dir.join("config.json"), config.to_string().as_bytes())?;
    write_safetensors(
        &dir.join("model.safetensors"),
        &TensorMap::random_decoder(&c, seed).tensors,
    )?;
    write_file(
        &dir.join("tokenizer.json"),
        tiny_tokenizer_json()?.as_bytes(),
    )?;
    let tc = serde_json::json!({
        "add_bos_token": false,
        "bos_token": "<|endoftext|>",
        "eos_token": "<|im_end|>",
        "chat_template": TINY_CHAT_TEMPLATE,
    });
    write_file(
        &dir.join("tokenizer_config.json"),
        tc.to_string().as_bytes(),
    )
}

/// The config of [`write_tiny_bert_dir`]: 2 blocks, width 32, 4 heads, 64 positions, the
/// [`tiny_vocab`] rows.
pub fn tiny_bert_config() -> EncoderConfig {
    EncoderConfig {
        vocab_size: tiny_vocab().len(),
        hidden_size: 32,
        intermediate_size: 64,
        num_layers: 2,
        num_heads: 4,
        max_position_embeddings: 64,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
    }
}

/// Writes the HF directory of a tiny random BERT sentence encoder into `dir`: `config.json`
/// ([`tiny_bert_config`]), `model.safetensors` (random F32 weights of `seed`) and the tiny
/// `tokenizer.json`.
///
/// # Errors
/// [`LmError::Io`] when a file cannot be written.
pub fn write_tiny_bert_dir(dir: &Path, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| LmError::io(dir, e))?;
    let c = tiny_bert_config();
    let (d, ff) = (c.hidden_size, c.intermediate_size);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tensors = BTreeMap::new();
    let mut put = |name: String, shape: Vec<usize>, ones: bool| {
        let n: usize = shape.iter().product();
        let a = 1.0 / (*shape.last().expect("non-empty shape") as f32).sqrt();
        let values = if ones {
            vec![1.0f32; n]
        } else {
            (0..n).map(|_| rng.random_range(-a..a)).collect()
        };
        tensors.insert(name, (values, shape));
    };
    put(
        "embeddings.word_embeddings.weight".into(),
        vec![c.vocab_size, d],
        false,
    );
    put(
        "embeddings.position_embeddings.weight".into(),
        vec![c.max_position_embeddings, d],
        false,
    );
    put(
        "embeddings.token_type_embeddings.weight".into(),
        vec![c.type_vocab_size, d],
        false,
    );
    let norm = |put: &mut dyn FnMut(String, Vec<usize>, bool), name: &str| {
        put(format!("{name}.weight"), vec![d], true);
        put(format!("{name}.bias"), vec![d], false);
    };
    norm(&mut put, "embeddings.LayerNorm");
    for i in 0..c.num_layers {
        let p = format!("encoder.layer.{i}");
        for (name, d_out, d_in) in [
            ("attention.self.query", d, d),
            ("attention.self.key", d, d),
            ("attention.self.value", d, d),
            ("attention.output.dense", d, d),
            ("intermediate.dense", ff, d),
            ("output.dense", d, ff),
        ] {
            put(format!("{p}.{name}.weight"), vec![d_out, d_in], false);
            put(format!("{p}.{name}.bias"), vec![d_out], false);
        }
        norm(&mut put, &format!("{p}.attention.output.LayerNorm"));
        norm(&mut put, &format!("{p}.output.LayerNorm"));
    }
    let config = serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": c.vocab_size,
        "hidden_size": d,
        "intermediate_size": ff,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "max_position_embeddings": c.max_position_embeddings,
        "type_vocab_size": c.type_vocab_size,
        "layer_norm_eps": c.layer_norm_eps,
        "hidden_act": "gelu",
        "pad_token_id": 0,
    });
    write_file(&dir.join("config.json"), config.to_string().as_bytes())?;
    write_safetensors(&dir.join("model.safetensors"), &tensors)?;
    write_file(
        &dir.join("tokenizer.json"),
        tiny_tokenizer_json()?.as_bytes(),
    )
}
