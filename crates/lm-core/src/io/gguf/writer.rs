//! [`GgufWriter`]: small GGUF v3 files for tests and fixtures (behind `cfg(test)` or the
//! `test-util` feature).

use std::path::Path;

use super::value::{DEFAULT_ALIGNMENT, GGUF_MAGIC, GgmlType, GgufValue, GgufValueType, MAX_DIMS};
use crate::error::{LmError, Result};

/// A tensor waiting to be written by [`GgufWriter`].
#[derive(Debug, Clone)]
struct PendingTensor {
    name: String,
    dims: Vec<usize>,
    dtype: GgmlType,
    data: Vec<u8>,
}

/// Writes small GGUF v3 files, for tests and fixtures.
///
/// ```
/// use lm_core::io::gguf::{GgufFile, GgufWriter};
/// let mut w = GgufWriter::new();
/// w.add_str("general.architecture", "llama").add_u32("llama.block_count", 2);
/// w.add_tensor_f32("norm.weight", &[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
/// let file = GgufFile::from_bytes(w.to_bytes(), "mem.gguf").unwrap();
/// assert_eq!(file.get_u32("llama.block_count").unwrap(), 2);
/// assert_eq!(file.tensor_f32("norm.weight").unwrap().0, vec![1.0, 2.0, 3.0, 4.0]);
/// ```
#[derive(Debug, Clone)]
pub struct GgufWriter {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty version-3 file with the default alignment.
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Sets the version field written (2 and 3 share a layout; other values make invalid files,
    /// which tests use on purpose).
    pub fn set_version(&mut self, version: u32) -> &mut Self {
        self.version = version;
        self
    }

    /// Sets the data alignment (a power of two) and records it as `general.alignment`.
    pub fn set_alignment(&mut self, alignment: u32) -> &mut Self {
        self.alignment = alignment.max(1) as u64;
        self.add("general.alignment", GgufValue::U32(alignment))
    }

    /// Adds (or replaces) a metadata entry.
    pub fn add(&mut self, key: &str, value: GgufValue) -> &mut Self {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Removes a metadata entry (for files that lack a key on purpose).
    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.metadata.retain(|(k, _)| k != key);
        self
    }

    /// Removes a tensor (for files that lack one on purpose).
    pub fn remove_tensor(&mut self, name: &str) -> &mut Self {
        self.tensors.retain(|t| t.name != name);
        self
    }

    /// Adds a `u32` entry.
    pub fn add_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.add(key, GgufValue::U32(v))
    }

    /// Adds an `f32` entry.
    pub fn add_f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.add(key, GgufValue::F32(v))
    }

    /// Adds a bool entry.
    pub fn add_bool(&mut self, key: &str, v: bool) -> &mut Self {
        self.add(key, GgufValue::Bool(v))
    }

    /// Adds a string entry.
    pub fn add_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.add(key, GgufValue::String(v.to_string()))
    }

    /// Adds an array-of-strings entry.
    pub fn add_str_array<S: AsRef<str>>(&mut self, key: &str, v: &[S]) -> &mut Self {
        let items = v
            .iter()
            .map(|s| GgufValue::String(s.as_ref().to_string()))
            .collect();
        self.add(
            key,
            GgufValue::Array {
                item_type: GgufValueType::String,
                items,
            },
        )
    }

    /// Adds an array-of-`i32` entry.
    pub fn add_i32_array(&mut self, key: &str, v: &[i32]) -> &mut Self {
        let items = v.iter().map(|&x| GgufValue::I32(x)).collect();
        self.add(
            key,
            GgufValue::Array {
                item_type: GgufValueType::I32,
                items,
            },
        )
    }

    /// Adds an array-of-`f32` entry (e.g. `tokenizer.ggml.scores`).
    pub fn add_f32_array(&mut self, key: &str, v: &[f32]) -> &mut Self {
        let items = v.iter().map(|&x| GgufValue::F32(x)).collect();
        self.add(
            key,
            GgufValue::Array {
                item_type: GgufValueType::F32,
                items,
            },
        )
    }

    /// Adds a tensor from raw bytes of type `dtype`; `dims` in PyTorch order.
    ///
    /// # Errors
    /// [`LmError::InvalidInput`] when the byte length does not match the dims and type.
    pub fn add_tensor_raw(
        &mut self,
        name: &str,
        dims: &[usize],
        dtype: GgmlType,
        data: Vec<u8>,
    ) -> Result<&mut Self> {
        let n: usize = dims.iter().product();
        let row = dims.last().copied().unwrap_or(1);
        let expected = dtype.bytes_for(n as u64);
        if dims.is_empty()
            || dims.len() > MAX_DIMS
            || !row.is_multiple_of(dtype.block_size())
            || expected != Some(data.len() as u64)
        {
            return Err(LmError::InvalidInput(format!(
                "GgufWriter: tensor `{name}` with dims {dims:?} ({} dims allowed, last dim a multiple of {}) of type {dtype} needs {expected:?} bytes, got {}",
                MAX_DIMS,
                dtype.block_size(),
                data.len()
            )));
        }
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            dtype,
            data,
        });
        Ok(self)
    }

    /// Adds an F32 tensor; `dims` in PyTorch order.
    ///
    /// # Errors
    /// [`LmError::InvalidInput`] when `data.len()` is not the product of `dims`.
    pub fn add_tensor_f32(
        &mut self,
        name: &str,
        dims: &[usize],
        data: &[f32],
    ) -> Result<&mut Self> {
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.add_tensor_raw(name, dims, GgmlType::F32, bytes)
    }

    /// Adds an F16 tensor (values rounded to nearest f16); `dims` in PyTorch order.
    ///
    /// # Errors
    /// [`LmError::InvalidInput`] when `data.len()` is not the product of `dims`.
    pub fn add_tensor_f16(
        &mut self,
        name: &str,
        dims: &[usize],
        data: &[f32],
    ) -> Result<&mut Self> {
        let bytes = data
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes())
            .collect();
        self.add_tensor_raw(name, dims, GgmlType::F16, bytes)
    }

    /// Adds a Q8_0 tensor quantised from `data` like ggml's reference quantiser
    /// (`d = max|x| / 127`, `q = round(x / d)`); `dims` in PyTorch order, last dim a multiple of 32.
    ///
    /// # Errors
    /// [`LmError::InvalidInput`] when the sizes do not fit.
    pub fn add_tensor_q8_0(
        &mut self,
        name: &str,
        dims: &[usize],
        data: &[f32],
    ) -> Result<&mut Self> {
        let mut bytes = Vec::with_capacity(data.len() / 32 * 34);
        for block in data.chunks(32) {
            let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
            let d = amax / 127.0;
            let id = if d == 0.0 { 0.0 } else { 1.0 / d };
            bytes.extend_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
            bytes.extend(block.iter().map(|&x| ((x * id).round() as i8) as u8));
        }
        if !data.len().is_multiple_of(32) {
            bytes.push(0); // forces the size check below to fail with a clear message
        }
        self.add_tensor_raw(name, dims, GgmlType::Q8_0, bytes)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        fn put_str(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
            match v {
                GgufValue::U8(x) => out.push(*x),
                GgufValue::I8(x) => out.push(*x as u8),
                GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
                GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
                GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
                GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
                GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
                GgufValue::Bool(x) => out.push(*x as u8),
                GgufValue::String(s) => put_str(out, s),
                GgufValue::Array { item_type, items } => {
                    out.extend_from_slice(&item_type.tag().to_le_bytes());
                    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                    for item in items {
                        put_value(out, item);
                    }
                }
                GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
                GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
                GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
            }
        }
        let align = |n: u64| n.div_ceil(self.alignment) * self.alignment;

        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend_from_slice(&v.value_type().tag().to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for &d in t.dims.iter().rev() {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.extend_from_slice(&t.dtype.id().to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offset = align(offset + t.data.len() as u64);
        }
        out.resize(align(out.len() as u64) as usize, 0);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            out.resize(align(out.len() as u64) as usize, 0);
        }
        out
    }

    /// Writes the file to `path`.
    ///
    /// # Errors
    /// [`LmError::Io`] when the file cannot be written.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()).map_err(|e| LmError::io(path, e))
    }
}
