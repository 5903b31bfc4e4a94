//! The streamed `model.safetensors`: output dtypes, the HF tensor plan of a decoder, the header
//! computed up front and a writer that appends tensors in plan order.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{Value, json};

use crate::error::{LmError, Result};
use crate::model::config::DecoderConfig;

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
    pub(super) fn new(name: String, shape: &[usize]) -> Self {
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

/// The tensors of a Llama / Qwen2 checkpoint in HF's module order, as the one layout
/// ([`layout::decoder_tensor_plan`](crate::model::layout::decoder_tensor_plan)) gives them.
///
/// # Shapes
/// linear weights are `[d_out, d_in]`; norms and biases `[d]`; embedding `[vocab, hidden]`.
pub fn decoder_tensor_plan(c: &DecoderConfig) -> Vec<TensorEntry> {
    crate::model::layout::decoder_tensor_plan(c)
        .into_iter()
        .map(|t| TensorEntry::new(t.name, &t.shape))
        .collect()
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
