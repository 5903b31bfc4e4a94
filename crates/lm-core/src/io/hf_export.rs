//! Exporting a decoder as a Hugging Face checkpoint directory, streamed tensor by tensor.
//!
//! The directory holds what `transformers.AutoModelForCausalLM.from_pretrained(dir)` and
//! `AutoTokenizer.from_pretrained(dir)` read:
//!
//! - `model.safetensors`: HF tensor names (`model.layers.3.self_attn.q_proj.weight`), PyTorch
//!   `[out, in]` layout, q/k rows in HF's `rotate_half` order (GGUF's Llama permutation undone by
//!   [`GgufWeights`]), no `lm_head.weight` when the embeddings are tied; f32, f16 or bf16;
//! - `config.json` (`LlamaForCausalLM` / `Qwen2ForCausalLM`) and `generation_config.json`;
//! - `tokenizer.json` (the `tokenizers::Tokenizer` lm-core runs, serialised, so ids are the same)
//!   and `tokenizer_config.json` (chat template, bos / eos / pad / unk tokens);
//!
//! For an HF directory as the base, its own tokenizer files and `config.json` are copied (the
//! dtype field updated) instead of being regenerated.
//!
//! Memory: [`export_decoder`] never holds the model. The safetensors header is written first (every
//! offset follows from the shapes and the dtype), then a small window of tensors at a time is read
//! (de-quantised), passed to the caller's `update` hook (the LoRA merge adds ΔW there), converted
//! and written, and dropped. The window is processed in parallel (rayon) and written in order.
//! Output directories are staged next to the target and renamed into place ([`StagedDir`]).
//!
//! [`GgufWeights`]: crate::model::loader::GgufWeights

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rayon::prelude::*;
use serde_json::{Value, json};
use tokenizers::Tokenizer;
use tokenizers::processors::template::TemplateProcessing;

use crate::assets::{ModelSource, resolve_model};
use crate::error::{LmError, Result};
use crate::io::gguf::GgufFile;
use crate::io::hf_config::{HfModelConfig, read_hf_config};
use crate::io::safetensors::SafetensorsWeights;
use crate::model::config::{DecoderArch, DecoderConfig};
use crate::model::loader::{GgufWeights, WeightSource, decoder_config_from_gguf};
use crate::tokenizer::{tokenizer_from_gguf, tokenizer_from_json};

/// The weights file of an exported checkpoint.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Element type of the exported tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExportDtype {
    /// 32-bit float (exact: merges accumulate in f32).
    #[default]
    F32,
    /// IEEE half precision (round to nearest even).
    F16,
    /// bfloat16 (round to nearest even, as PyTorch's `.to(torch.bfloat16)`).
    Bf16,
}

impl ExportDtype {
    /// The safetensors dtype tag (`F32`, `F16`, `BF16`).
    pub fn safetensors_name(self) -> &'static str {
        match self {
            ExportDtype::F32 => "F32",
            ExportDtype::F16 => "F16",
            ExportDtype::Bf16 => "BF16",
        }
    }

    /// The PyTorch dtype name written to `config.json` (`float32`, ...).
    pub fn torch_name(self) -> &'static str {
        match self {
            ExportDtype::F32 => "float32",
            ExportDtype::F16 => "float16",
            ExportDtype::Bf16 => "bfloat16",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            ExportDtype::F32 => 4,
            ExportDtype::F16 | ExportDtype::Bf16 => 2,
        }
    }

    /// Appends the little-endian encoding of `values` to `out`.
    pub fn encode_into(self, values: &[f32], out: &mut Vec<u8>) {
        out.reserve(values.len() * self.size());
        match self {
            ExportDtype::F32 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            ExportDtype::F16 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
            ExportDtype::Bf16 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&half::bf16::from_f32(*v).to_le_bytes())),
        }
    }
}

impl FromStr for ExportDtype {
    type Err = LmError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(ExportDtype::F32),
            "f16" | "float16" | "fp16" => Ok(ExportDtype::F16),
            "bf16" | "bfloat16" => Ok(ExportDtype::Bf16),
            other => Err(LmError::InvalidInput(format!(
                "unknown export dtype `{other}`: expected f32, f16 or bf16"
            ))),
        }
    }
}

/// One tensor of the exported checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// HF tensor name.
    pub name: String,
    /// PyTorch shape.
    pub shape: Vec<usize>,
}

impl TensorEntry {
    fn new(name: String, shape: &[usize]) -> Self {
        Self {
            name,
            shape: shape.to_vec(),
        }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The tensors of a Llama / Qwen2 checkpoint in HF's module order (embedding, each layer's norms,
/// attention and MLP, final norm, then `lm_head` unless tied).
///
/// # Shapes
/// linear weights are `[d_out, d_in]`; norms and biases `[d]`; embedding `[vocab, hidden]`.
pub fn decoder_tensor_plan(c: &DecoderConfig) -> Vec<TensorEntry> {
    let (d, ff, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (qd, kvd) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
    let mut plan = vec![TensorEntry::new(
        "model.embed_tokens.weight".into(),
        &[v, d],
    )];
    for i in 0..c.num_layers {
        let p = format!("model.layers.{i}");
        plan.push(TensorEntry::new(
            format!("{p}.input_layernorm.weight"),
            &[d],
        ));
        for (m, rows) in [("q_proj", qd), ("k_proj", kvd), ("v_proj", kvd)] {
            plan.push(TensorEntry::new(
                format!("{p}.self_attn.{m}.weight"),
                &[rows, d],
            ));
            if c.attention_bias {
                plan.push(TensorEntry::new(format!("{p}.self_attn.{m}.bias"), &[rows]));
            }
        }
        plan.push(TensorEntry::new(
            format!("{p}.self_attn.o_proj.weight"),
            &[d, qd],
        ));
        plan.push(TensorEntry::new(
            format!("{p}.post_attention_layernorm.weight"),
            &[d],
        ));
        plan.push(TensorEntry::new(
            format!("{p}.mlp.gate_proj.weight"),
            &[ff, d],
        ));
        plan.push(TensorEntry::new(
            format!("{p}.mlp.up_proj.weight"),
            &[ff, d],
        ));
        plan.push(TensorEntry::new(
            format!("{p}.mlp.down_proj.weight"),
            &[d, ff],
        ));
    }
    plan.push(TensorEntry::new("model.norm.weight".into(), &[d]));
    if !c.tie_word_embeddings {
        plan.push(TensorEntry::new("lm_head.weight".into(), &[v, d]));
    }
    plan
}

/// The safetensors header (8-byte length + JSON, padded with spaces to a multiple of 8) for
/// `plan` stored contiguously in order with `dtype`.
pub fn safetensors_header(plan: &[TensorEntry], dtype: ExportDtype) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    map.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0usize;
    for t in plan {
        let end = offset + t.numel() * dtype.size();
        map.insert(
            t.name.clone(),
            json!({"dtype": dtype.safetensors_name(), "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut text = serde_json::to_vec(&Value::Object(map)).expect("a JSON map serialises");
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out
}

/// A safetensors file written tensor by tensor in the order of its plan.
pub struct SafetensorsStreamWriter {
    out: BufWriter<File>,
    path: PathBuf,
    plan: Vec<TensorEntry>,
    dtype: ExportDtype,
    next: usize,
}

impl SafetensorsStreamWriter {
    /// Creates `path` and writes the header.
    pub fn create(path: &Path, plan: Vec<TensorEntry>, dtype: ExportDtype) -> Result<Self> {
        let file = File::create(path).map_err(|e| LmError::io(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 22, file);
        out.write_all(&safetensors_header(&plan, dtype))
            .map_err(|e| LmError::io(path, e))?;
        Ok(Self {
            out,
            path: path.to_path_buf(),
            plan,
            dtype,
            next: 0,
        })
    }

    /// Writes the next tensor's already-encoded bytes (see [`ExportDtype::encode_into`]).
    pub fn write_encoded(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(entry) = self.plan.get(self.next) else {
            return Err(LmError::InvalidInput(format!(
                "{}: tensor {name} written after the last planned tensor",
                self.path.display()
            )));
        };
        if entry.name != name || entry.numel() * self.dtype.size() != bytes.len() {
            return Err(LmError::InvalidInput(format!(
                "{}: expected tensor {} ({} bytes) next, got {name} ({} bytes)",
                self.path.display(),
                entry.name,
                entry.numel() * self.dtype.size(),
                bytes.len()
            )));
        }
        self.out
            .write_all(bytes)
            .map_err(|e| LmError::io(&self.path, e))?;
        self.next += 1;
        Ok(())
    }

    /// Checks every planned tensor was written and flushes (no fsync: the directory is staged and
    /// renamed into place, which protects readers from partial files, not against power loss).
    pub fn finish(mut self) -> Result<()> {
        if self.next != self.plan.len() {
            return Err(LmError::InvalidInput(format!(
                "{}: {} of {} tensors written",
                self.path.display(),
                self.next,
                self.plan.len()
            )));
        }
        self.out.flush().map_err(|e| LmError::io(&self.path, e))
    }
}

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
                        return Err(LmError::InvalidInput(format!(
                            "{} holds an encoder (BERT); only decoders (Llama, Qwen2) are exported",
                            dir.display()
                        )));
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
                    add_bos: file
                        .get_bool_opt("tokenizer.ggml.add_bos_token")?
                        .unwrap_or(false),
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

fn read_json_opt(path: &Path) -> Result<Option<Value>> {
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

/// `config.json` for a decoder: every field transformers' `LlamaConfig` / `Qwen2Config` needs.
pub fn config_json(c: &DecoderConfig, dtype: ExportDtype, pad_id: Option<u32>) -> Value {
    let (arch, model_type) = match c.arch {
        DecoderArch::Llama => ("LlamaForCausalLM", "llama"),
        DecoderArch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
    };
    let eos: Value = match c.eos_token_ids.as_slice() {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    };
    let mut v = json!({
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.max_position_embeddings,
        "initializer_range": 0.02,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": null,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "attention_dropout": 0.0,
        "tie_word_embeddings": c.tie_word_embeddings,
        "use_cache": true,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": eos,
        "pad_token_id": pad_id,
        "torch_dtype": dtype.torch_name(),
        "dtype": dtype.torch_name(),
    });
    let o = v.as_object_mut().expect("a JSON object");
    match c.arch {
        DecoderArch::Llama => {
            o.insert("attention_bias".into(), json!(c.attention_bias));
            o.insert("mlp_bias".into(), json!(false));
            o.insert("pretraining_tp".into(), json!(1));
        }
        DecoderArch::Qwen2 => {
            o.insert("use_sliding_window".into(), json!(false));
            o.insert("sliding_window".into(), json!(c.max_position_embeddings));
            o.insert("max_window_layers".into(), json!(c.num_layers));
        }
    }
    v
}

/// `generation_config.json`: the special tokens generation stops on.
pub fn generation_config_json(c: &DecoderConfig, pad_id: Option<u32>) -> Value {
    let eos: Value = match c.eos_token_ids.as_slice() {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    };
    json!({"bos_token_id": c.bos_token_id, "eos_token_id": eos, "pad_token_id": pad_id})
}

/// `tokenizer.json`: lm-core's tokenizer, with a BOS post-processor when the model adds BOS (lm-core
/// adds it in [`LanguageModel::encode`](crate::model::LanguageModel::encode) instead).
pub fn tokenizer_json(info: &TokenizerInfo) -> Result<String> {
    let mut tok = info.tokenizer.clone();
    if info.add_bos
        && let Some(bos) = &info.bos
        && let Some(id) = tok.token_to_id(bos)
    {
        let bad = |e: String| LmError::Tokenizer {
            detail: format!("cannot build the BOS post-processor: {e}"),
        };
        let pp = TemplateProcessing::builder()
            .try_single(format!("{bos}:0 $A:0"))
            .map_err(|e| bad(e.to_string()))?
            .try_pair(format!("{bos}:0 $A:0 {bos}:1 $B:1"))
            .map_err(|e| bad(e.to_string()))?
            .special_tokens(vec![(bos.clone(), id)])
            .build()
            .map_err(|e| bad(e.to_string()))?;
        tok.with_post_processor(Some(pp));
    }
    tok.to_string(true).map_err(|e| LmError::Tokenizer {
        detail: format!("cannot serialise the tokenizer: {e}"),
    })
}

/// `tokenizer_config.json`: tokenizer class, special tokens, chat template.
pub fn tokenizer_config_json(info: &TokenizerInfo, model_max_length: usize) -> Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": info.bos,
        "eos_token": info.eos,
        "pad_token": info.pad,
        "unk_token": info.unk,
        "add_bos_token": info.add_bos,
        "add_eos_token": false,
        "add_prefix_space": false,
        "clean_up_tokenization_spaces": false,
        "model_max_length": model_max_length,
        "chat_template": info.chat_template,
    })
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, bytes).map_err(|e| LmError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| LmError::io(path, e))
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).expect("a JSON value serialises");
    write_atomic(path, text.as_bytes())
}

/// Writes everything but the weights into `dir`: `config.json`, `generation_config.json`,
/// `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`. An HF base's own
/// tokenizer files are copied verbatim.
pub fn write_sidecar_files(base: &ExportBase, dir: &Path, dtype: ExportDtype) -> Result<()> {
    let info = base.tokenizer_info()?;
    let config = base.config();
    if let ExportBase::HfDir { dir: src, .. } = base {
        let mut cfg = read_json_opt(&src.join("config.json"))?.unwrap_or(json!({}));
        if let Some(o) = cfg.as_object_mut() {
            o.insert("torch_dtype".into(), json!(dtype.torch_name()));
            o.insert("dtype".into(), json!(dtype.torch_name()));
        }
        write_json(&dir.join("config.json"), &cfg)?;
        for f in [
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ] {
            let from = src.join(f);
            if from.is_file() {
                let bytes = std::fs::read(&from).map_err(|e| LmError::io(&from, e))?;
                write_atomic(&dir.join(f), &bytes)?;
            }
        }
        if !src.join("generation_config.json").is_file() {
            write_json(
                &dir.join("generation_config.json"),
                &generation_config_json(config, info.pad_id),
            )?;
        }
        return Ok(());
    }
    write_json(
        &dir.join("config.json"),
        &config_json(config, dtype, info.pad_id),
    )?;
    write_json(
        &dir.join("generation_config.json"),
        &generation_config_json(config, info.pad_id),
    )?;
    write_atomic(
        &dir.join("tokenizer.json"),
        tokenizer_json(&info)?.as_bytes(),
    )?;
    write_json(
        &dir.join("tokenizer_config.json"),
        &tokenizer_config_json(&info, config.max_position_embeddings),
    )?;
    write_json(
        &dir.join("special_tokens_map.json"),
        &json!({"bos_token": info.bos, "eos_token": info.eos, "pad_token": info.pad, "unk_token": info.unk}),
    )
}

/// Most elements read, updated and encoded at once (the streaming window), besides one tensor
/// that is larger on its own.
pub const WINDOW_ELEMENTS: usize = 1 << 24;

/// What [`export_decoder`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSummary {
    /// Number of tensors.
    pub tensors: usize,
    /// Size of `model.safetensors` in bytes.
    pub bytes: u64,
}

/// Streams the base's tensors into `dir/model.safetensors`: each tensor is read (f32), handed to
/// `update(name, shape, values)` (which may change the values in place, e.g. add a LoRA ΔW), encoded
/// to `dtype` and written; `on_tensor` is called after each write (progress). Tensors of a window
/// (up to [`WINDOW_ELEMENTS`]) are processed in parallel and written in plan order.
///
/// # Shapes
/// `values` are row-major in the PyTorch shape `shape` (`[d_out, d_in]` for linear weights).
pub fn export_decoder<E, U>(
    base: &ExportBase,
    dir: &Path,
    dtype: ExportDtype,
    update: U,
    on_tensor: &(dyn Fn(&str) + Sync),
) -> std::result::Result<ExportSummary, E>
where
    E: From<LmError> + Send,
    U: Fn(&str, &[usize], &mut [f32]) -> std::result::Result<(), E> + Sync,
{
    let plan = base.plan();
    let path = dir.join(WEIGHTS_FILE);
    let mut writer = SafetensorsStreamWriter::create(&path, plan.clone(), dtype)?;
    let mut start = 0;
    while start < plan.len() {
        let mut end = start + 1;
        let mut elems = plan[start].numel();
        while end < plan.len() && elems + plan[end].numel() <= WINDOW_ELEMENTS {
            elems += plan[end].numel();
            end += 1;
        }
        let encoded: Vec<std::result::Result<Vec<u8>, E>> = plan[start..end]
            .par_iter()
            .map(|entry| {
                let (mut values, shape) = base.tensor(&entry.name)?;
                if shape != entry.shape {
                    return Err(LmError::ShapeMismatch {
                        tensor: entry.name.clone(),
                        expected: entry.shape.clone(),
                        found: shape,
                    }
                    .into());
                }
                update(&entry.name, &entry.shape, &mut values)?;
                let mut bytes = Vec::new();
                dtype.encode_into(&values, &mut bytes);
                Ok(bytes)
            })
            .collect();
        for (entry, bytes) in plan[start..end].iter().zip(encoded) {
            writer.write_encoded(&entry.name, &bytes?)?;
            on_tensor(&entry.name);
        }
        start = end;
    }
    writer.finish()?;
    let bytes = std::fs::metadata(&path)
        .map_err(|e| LmError::io(&path, e))?
        .len();
    Ok(ExportSummary {
        tensors: plan.len(),
        bytes,
    })
}

/// An output directory being written: files go to a hidden sibling directory that
/// [`commit`](StagedDir::commit) renames into place; dropped uncommitted, it is removed.
#[derive(Debug)]
pub struct StagedDir {
    target: PathBuf,
    staging: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Checks `target` (refused when it is a file, or a non-empty directory unless `force`) and
    /// creates the staging directory next to it.
    pub fn create(target: &Path, force: bool) -> Result<Self> {
        if target.exists() {
            if !target.is_dir() {
                return Err(LmError::InvalidInput(format!(
                    "output {} exists and is not a directory: pick another --output",
                    target.display()
                )));
            }
            let non_empty = std::fs::read_dir(target)
                .map_err(|e| LmError::io(target, e))?
                .next()
                .is_some();
            if non_empty && !force {
                return Err(LmError::InvalidInput(format!(
                    "output directory {} exists and is not empty: pass --force to replace it, or pick another --output",
                    target.display()
                )));
            }
        }
        let name = target
            .file_name()
            .ok_or_else(|| {
                LmError::InvalidInput(format!("output {} has no directory name", target.display()))
            })?
            .to_string_lossy()
            .to_string();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| LmError::io(&parent, e))?;
        let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|e| LmError::io(&staging, e))?;
        }
        std::fs::create_dir(&staging).map_err(|e| LmError::io(&staging, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            staging,
            committed: false,
        })
    }

    /// Where files are written until the commit.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The final directory.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Moves the staged directory into place (replacing an existing target).
    pub fn commit(mut self) -> Result<PathBuf> {
        if self.target.exists() {
            std::fs::remove_dir_all(&self.target).map_err(|e| LmError::io(&self.target, e))?;
        }
        std::fs::rename(&self.staging, &self.target).map_err(|e| LmError::io(&self.target, e))?;
        self.committed = true;
        Ok(self.target.clone())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// A single exported `model.safetensors` read tensor by tensor with positioned reads instead of a
/// memory map, so that loading a model from it does not keep the file's pages resident next to the
/// model's own copy (peak memory ≈ one model, not two). Used to check an export right after writing.
pub struct ExportedWeights {
    file: File,
    path: PathBuf,
    data_start: u64,
    tensors: std::collections::BTreeMap<String, (safetensors::Dtype, Vec<usize>, u64, u64)>,
}

impl ExportedWeights {
    /// Opens `dir/model.safetensors` and parses its header.
    pub fn open(dir: &Path) -> Result<Self> {
        use std::io::Read;
        let path = dir.join(WEIGHTS_FILE);
        let mut file = File::open(&path).map_err(|e| LmError::io(&path, e))?;
        let corrupt = |found: String| LmError::Corrupt {
            path: path.clone(),
            format: "safetensors",
            expected: "an 8-byte header length and a JSON header".into(),
            found,
        };
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .map_err(|e| LmError::io(&path, e))?;
        let n = u64::from_le_bytes(len);
        if n > 100 << 20 {
            return Err(corrupt(format!("a header length of {n} bytes")));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header)
            .map_err(|e| LmError::io(&path, e))?;
        let v: serde_json::Map<String, Value> =
            serde_json::from_slice(&header).map_err(|e| corrupt(format!("invalid JSON ({e})")))?;
        let mut tensors = std::collections::BTreeMap::new();
        for (name, info) in v {
            if name == "__metadata__" {
                continue;
            }
            let dtype: safetensors::Dtype = serde_json::from_value(info["dtype"].clone())
                .map_err(|e| corrupt(format!("tensor {name}: bad dtype ({e})")))?;
            let shape: Vec<usize> = serde_json::from_value(info["shape"].clone())
                .map_err(|e| corrupt(format!("tensor {name}: bad shape ({e})")))?;
            let offs: [u64; 2] = serde_json::from_value(info["data_offsets"].clone())
                .map_err(|e| corrupt(format!("tensor {name}: bad offsets ({e})")))?;
            tensors.insert(name, (dtype, shape, offs[0], offs[1]));
        }
        Ok(Self {
            file,
            path,
            data_start: 8 + n,
            tensors,
        })
    }
}

impl WeightSource for ExportedWeights {
    fn get(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        use std::os::unix::fs::FileExt;
        let (dtype, shape, begin, end) =
            self.tensors
                .get(name)
                .ok_or_else(|| LmError::MissingTensor {
                    path: self.path.clone(),
                    tensor: name.to_string(),
                })?;
        let mut bytes = vec![0u8; (end - begin) as usize];
        self.file
            .read_exact_at(&mut bytes, self.data_start + begin)
            .map_err(|e| LmError::io(&self.path, e))?;
        let values = crate::io::safetensors::decode_f32(*dtype, &bytes).ok_or_else(|| {
            LmError::UnsupportedDtype {
                path: self.path.clone(),
                tensor: name.to_string(),
                dtype: format!("{dtype:?}"),
                supported: "F32, F16, BF16, F64",
            }
        })?;
        if values.len() != shape.iter().product::<usize>() {
            return Err(LmError::ShapeMismatch {
                tensor: name.to_string(),
                expected: shape.clone(),
                found: vec![values.len()],
            });
        }
        Ok((values, shape.clone()))
    }
    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
    fn origin(&self) -> &Path {
        &self.path
    }
}

/// Loads an exported directory's decoder (through [`ExportedWeights`]) and its `tokenizer.json`.
pub fn load_exported(
    dir: &Path,
    device: &burn::tensor::Device,
) -> Result<(crate::model::Decoder, Tokenizer)> {
    let config = match read_hf_config(&dir.join("config.json"))? {
        HfModelConfig::Decoder(c) => c,
        HfModelConfig::Encoder(_) => {
            return Err(LmError::InvalidInput(format!(
                "{} holds an encoder, not a decoder",
                dir.display()
            )));
        }
    };
    let weights = ExportedWeights::open(dir)?;
    let decoder = crate::model::loader::build_decoder(&config, &weights, device)?;
    Ok((decoder, tokenizer_from_json(dir.join("tokenizer.json"))?))
}

/// Exports a base model unchanged (GGUF → HF conversion): weights, config and tokenizer files.
pub fn export_base(spec: &str, output: &Path, dtype: ExportDtype, force: bool) -> Result<PathBuf> {
    let base = ExportBase::open(spec)?;
    let staged = StagedDir::create(output, force)?;
    export_decoder::<LmError, _>(&base, staged.path(), dtype, |_, _, _| Ok(()), &|_| {})?;
    write_sidecar_files(&base, staged.path(), dtype)?;
    staged.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::safetensors::SafetensorsWeights;

    #[test]
    fn plan_follows_hf_names_and_tying() {
        let mut c = DecoderConfig::tiny(50);
        let plan = decoder_tensor_plan(&c);
        assert_eq!(plan.len(), 1 + 2 * 9 + 1);
        assert_eq!(plan[0].shape, vec![50, 32]);
        assert!(plan.iter().all(|t| t.name != "lm_head.weight"));
        let q = plan
            .iter()
            .find(|t| t.name == "model.layers.1.self_attn.k_proj.weight")
            .unwrap();
        assert_eq!(q.shape, vec![16, 32]);
        c.tie_word_embeddings = false;
        c.arch = DecoderArch::Qwen2;
        c.attention_bias = true;
        let plan = decoder_tensor_plan(&c);
        assert_eq!(plan.last().unwrap().name, "lm_head.weight");
        assert!(
            plan.iter()
                .any(|t| t.name == "model.layers.0.self_attn.v_proj.bias")
        );
    }

    #[test]
    fn streamed_file_reads_back_with_every_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let plan = vec![
            TensorEntry::new("a".into(), &[2, 3]),
            TensorEntry::new("b".into(), &[5]),
        ];
        let a: Vec<f32> = vec![1.0, -2.5, 3.25, 0.0, 1e-3, -7.0];
        let b: Vec<f32> = vec![0.5, 0.25, -0.125, 8.0, 100.0];
        for dtype in [ExportDtype::F32, ExportDtype::F16, ExportDtype::Bf16] {
            let path = dir.path().join(format!("{dtype:?}.safetensors"));
            let mut w = SafetensorsStreamWriter::create(&path, plan.clone(), dtype).unwrap();
            for (name, v) in [("a", &a), ("b", &b)] {
                let mut bytes = Vec::new();
                dtype.encode_into(v, &mut bytes);
                w.write_encoded(name, &bytes).unwrap();
            }
            w.finish().unwrap();
            let st = SafetensorsWeights::open_file(&path).unwrap();
            let (ga, sa) = st.tensor_f32("a").unwrap();
            assert_eq!(sa, vec![2, 3]);
            let (gb, _) = st.tensor_f32("b").unwrap();
            // values chosen to be exact in every dtype except 1e-3
            for (x, y) in ga.iter().chain(&gb).zip(a.iter().chain(&b)) {
                assert!(
                    (x - y).abs() <= 1e-3 * y.abs().max(1e-3),
                    "{dtype:?} {x} {y}"
                );
            }
        }
    }

    #[test]
    fn writer_refuses_out_of_order_and_missing_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let plan = vec![
            TensorEntry::new("a".into(), &[2]),
            TensorEntry::new("b".into(), &[2]),
        ];
        let path = dir.path().join("x.safetensors");
        let mut w = SafetensorsStreamWriter::create(&path, plan.clone(), ExportDtype::F32).unwrap();
        assert!(w.write_encoded("b", &[0; 8]).is_err());
        assert!(w.write_encoded("a", &[0; 4]).is_err());
        w.write_encoded("a", &[0; 8]).unwrap();
        assert!(w.finish().is_err());
    }

    #[test]
    fn staged_dir_refuses_non_empty_unless_forced_and_cleans_up() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("out");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"x").unwrap();
        let err = StagedDir::create(&target, false).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        {
            let s = StagedDir::create(&target, true).unwrap();
            std::fs::write(s.path().join("f"), b"y").unwrap();
            // dropped without commit: staging removed, target untouched
        }
        assert!(target.join("keep").is_file());
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
        let s = StagedDir::create(&target, true).unwrap();
        std::fs::write(s.path().join("f"), b"y").unwrap();
        s.commit().unwrap();
        assert!(target.join("f").is_file() && !target.join("keep").exists());
    }

    #[test]
    fn config_json_reads_back_as_the_same_config() {
        let mut c = DecoderConfig::tiny(50);
        c.bos_token_id = Some(1);
        c.rms_norm_eps = 1e-5;
        for arch in [DecoderArch::Llama, DecoderArch::Qwen2] {
            c.arch = arch;
            c.attention_bias = arch == DecoderArch::Qwen2;
            let text = config_json(&c, ExportDtype::Bf16, Some(2)).to_string();
            let HfModelConfig::Decoder(back) =
                crate::io::hf_config::parse_hf_config(&text, Path::new("config.json")).unwrap()
            else {
                panic!("expected a decoder")
            };
            assert_eq!(back, c);
        }
    }

    #[test]
    fn dtype_names_parse() {
        assert_eq!("BF16".parse::<ExportDtype>().unwrap(), ExportDtype::Bf16);
        assert_eq!("float16".parse::<ExportDtype>().unwrap(), ExportDtype::F16);
        assert!("int8".parse::<ExportDtype>().is_err());
    }
}
