//! A memory-mapped reader (and a tiny writer) for GGUF v2/v3 model files.
//!
//! A GGUF file is: the magic `GGUF`, a `u32` version, `u64` tensor and metadata counts, the
//! metadata key/value pairs, one info record per tensor (name, dims in ggml order, ggml type,
//! offset), padding to the alignment (`general.alignment`, default 32), then the tensor data.
//! Everything is little-endian.
//!
//! [`GgufFile::open`] maps the file and validates the whole header before returning: every
//! count is checked against the bytes that remain before anything is allocated from it, string
//! and array lengths are bounded, types are known, tensors have 1..=4 nonzero dims whose element
//! count does not overflow, quantised rows are whole blocks, and every tensor's data lies inside
//! the file without overlapping another. Any violation is an [`LmError::Corrupt`] (or
//! [`LmError::UnsupportedDtype`] for an unknown ggml type) saying what was expected and found.
//!
//! Tensor shapes are reported in PyTorch order (ggml lists the fastest-varying dim first, so
//! they are reversed). [`GgufFile::tensor_f32`] dequantises through [`super::dequant`].
//! [`unpermute_llama_qk`] undoes the row permutation llama.cpp applies to Llama `q`/`k`
//! projections. [`GgufWriter`] writes small files for tests.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::dequant;
pub use super::dequant::GgmlType;
use crate::error::{LmError, Result};

/// The four magic bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Data alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dims a ggml tensor can have.
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of arrays accepted in metadata.
const MAX_ARRAY_DEPTH: usize = 3;
const FORMAT: &str = "GGUF";

/// The type tag of a metadata value (`gguf_type` in ggml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufValueType {
    /// `u8` (tag 0).
    U8,
    /// `i8` (tag 1).
    I8,
    /// `u16` (tag 2).
    U16,
    /// `i16` (tag 3).
    I16,
    /// `u32` (tag 4).
    U32,
    /// `i32` (tag 5).
    I32,
    /// `f32` (tag 6).
    F32,
    /// `bool` stored as one byte 0/1 (tag 7).
    Bool,
    /// UTF-8 string with a `u64` length (tag 8).
    String,
    /// Array: item type tag, `u64` count, items (tag 9).
    Array,
    /// `u64` (tag 10).
    U64,
    /// `i64` (tag 11).
    I64,
    /// `f64` (tag 12).
    F64,
}

impl GgufValueType {
    const ALL: [GgufValueType; 13] = [
        GgufValueType::U8,
        GgufValueType::I8,
        GgufValueType::U16,
        GgufValueType::I16,
        GgufValueType::U32,
        GgufValueType::I32,
        GgufValueType::F32,
        GgufValueType::Bool,
        GgufValueType::String,
        GgufValueType::Array,
        GgufValueType::U64,
        GgufValueType::I64,
        GgufValueType::F64,
    ];

    /// The type for a tag, or `None` for an unknown tag.
    pub fn from_tag(tag: u32) -> Option<Self> {
        Self::ALL.get(tag as usize).copied()
    }

    /// The tag written in the file.
    pub fn tag(self) -> u32 {
        Self::ALL.iter().position(|t| *t == self).unwrap_or(0) as u32
    }

    /// The fewest bytes one value of this type takes (strings and arrays: their length fields).
    fn min_size(self) -> u64 {
        match self {
            GgufValueType::U8 | GgufValueType::I8 | GgufValueType::Bool => 1,
            GgufValueType::U16 | GgufValueType::I16 => 2,
            GgufValueType::U32 | GgufValueType::I32 | GgufValueType::F32 => 4,
            GgufValueType::U64 | GgufValueType::I64 | GgufValueType::F64 => 8,
            GgufValueType::String => 8,
            GgufValueType::Array => 12,
        }
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `f32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Homogeneous array; `item_type` is kept so empty arrays round-trip.
    Array {
        /// The type of every item.
        item_type: GgufValueType,
        /// The items.
        items: Vec<GgufValue>,
    },
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f64`.
    F64(f64),
}

impl GgufValue {
    /// The value's type tag.
    pub fn value_type(&self) -> GgufValueType {
        match self {
            GgufValue::U8(_) => GgufValueType::U8,
            GgufValue::I8(_) => GgufValueType::I8,
            GgufValue::U16(_) => GgufValueType::U16,
            GgufValue::I16(_) => GgufValueType::I16,
            GgufValue::U32(_) => GgufValueType::U32,
            GgufValue::I32(_) => GgufValueType::I32,
            GgufValue::F32(_) => GgufValueType::F32,
            GgufValue::Bool(_) => GgufValueType::Bool,
            GgufValue::String(_) => GgufValueType::String,
            GgufValue::Array { .. } => GgufValueType::Array,
            GgufValue::U64(_) => GgufValueType::U64,
            GgufValue::I64(_) => GgufValueType::I64,
            GgufValue::F64(_) => GgufValueType::F64,
        }
    }

    /// Any integer value as `i128` (wide enough for every integer type), else `None`.
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            GgufValue::U8(v) => v.into(),
            GgufValue::I8(v) => v.into(),
            GgufValue::U16(v) => v.into(),
            GgufValue::I16(v) => v.into(),
            GgufValue::U32(v) => v.into(),
            GgufValue::I32(v) => v.into(),
            GgufValue::U64(v) => v.into(),
            GgufValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// A float value (`f32`, or `f64` narrowed), else `None`.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            GgufValue::F32(v) => Some(v),
            GgufValue::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    /// A string value, else `None`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// A bool value, else `None`.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// An array's items, else `None`.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array { items, .. } => Some(items),
            _ => None,
        }
    }

    /// A short description for error messages: the type, and the value when it is short.
    pub fn describe(&self) -> String {
        match self {
            GgufValue::String(s) if s.len() <= 40 => format!("string {s:?}"),
            GgufValue::String(s) => format!("a string of {} bytes", s.len()),
            GgufValue::Array { item_type, items } => {
                format!("an array of {} {:?}", items.len(), item_type)
            }
            other => format!("{other:?}"),
        }
    }
}

/// One tensor's header record.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Shape in PyTorch order (slowest-varying first), i.e. the reverse of the GGUF dims.
    pub dims: Vec<usize>,
    /// Element type.
    pub dtype: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
    /// Bytes of data.
    pub n_bytes: usize,
}

impl GgufTensorInfo {
    /// Number of elements (product of the dims).
    pub fn n_elements(&self) -> usize {
        self.dims.iter().product()
    }
}

/// The bytes of a GGUF file: memory-mapped, or owned (tests, [`GgufFile::from_bytes`]).
#[derive(Debug)]
enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// An opened, validated GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    storage: Storage,
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    by_name: HashMap<String, usize>,
    alignment: u64,
    data_offset: usize,
}

impl GgufFile {
    /// Memory-maps and validates the GGUF file at `path`.
    ///
    /// # Errors
    /// [`LmError::Io`] when the file cannot be read; [`LmError::Corrupt`] /
    /// [`LmError::UnsupportedDtype`] when it is not a valid GGUF v2/v3 file.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| LmError::io(path, e))?;
        let len = file.metadata().map_err(|e| LmError::io(path, e))?.len();
        if len == 0 {
            return Err(corrupt(
                path,
                "a GGUF header (at least 24 bytes)",
                "an empty file",
            ));
        }
        // SAFETY: the map is read-only and lives as long as `GgufFile`. Like every reader of
        // memory-mapped weights, we rely on the file not being truncated or rewritten while open.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| LmError::io(path, e))?;
        Self::parse(path.to_path_buf(), Storage::Mapped(map))
    }

    /// Parses and validates a GGUF file held in memory; `name_for_errors` names it in errors.
    ///
    /// # Errors
    /// As [`GgufFile::open`].
    pub fn from_bytes(bytes: Vec<u8>, name_for_errors: impl Into<PathBuf>) -> Result<GgufFile> {
        Self::parse(name_for_errors.into(), Storage::Owned(bytes))
    }

    fn parse(path: PathBuf, storage: Storage) -> Result<GgufFile> {
        let header = parse_header(&path, storage.bytes())?;
        let by_name = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            path,
            storage,
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            by_name,
            alignment: header.alignment,
            data_offset: header.data_offset,
        })
    }

    /// The file's path (or the name given to [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data alignment in bytes.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset where the tensor data section starts.
    pub fn data_offset(&self) -> usize {
        self.data_offset
    }

    /// All metadata, sorted by key.
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    /// The metadata value under `key`, if any.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    fn config_err(&self, key: &str, expected: &str, found: &str) -> LmError {
        LmError::Config {
            path: self.path.clone(),
            detail: format!("GGUF metadata `{key}`: expected {expected}, found {found}"),
        }
    }

    fn required(&self, key: &str, expected: &str) -> Result<&GgufValue> {
        self.get(key)
            .ok_or_else(|| self.config_err(key, expected, "no such key"))
    }

    fn int_in<T: TryFrom<i128>>(&self, key: &str, v: &GgufValue, expected: &str) -> Result<T> {
        v.as_int()
            .and_then(|i| T::try_from(i).ok())
            .ok_or_else(|| self.config_err(key, expected, &v.describe()))
    }

    /// The integer under `key` as `u32` (any integer type whose value fits).
    ///
    /// # Errors
    /// [`LmError::Config`] naming the key when it is missing or not such an integer.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        const E: &str = "an integer in 0..=4294967295";
        self.int_in(key, self.required(key, E)?, E)
    }

    /// As [`GgufFile::get_u32`], `Ok(None)` when the key is absent.
    ///
    /// # Errors
    /// [`LmError::Config`] when present with another type.
    pub fn get_u32_opt(&self, key: &str) -> Result<Option<u32>> {
        self.get(key)
            .map(|v| self.int_in(key, v, "an integer in 0..=4294967295"))
            .transpose()
    }

    /// The integer under `key` as `u64` (any non-negative integer).
    ///
    /// # Errors
    /// [`LmError::Config`] naming the key when it is missing or not such an integer.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        const E: &str = "a non-negative integer";
        self.int_in(key, self.required(key, E)?, E)
    }

    /// The integer under `key` as `usize`.
    ///
    /// # Errors
    /// [`LmError::Config`] naming the key when it is missing or not such an integer.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        const E: &str = "a non-negative integer";
        self.int_in(key, self.required(key, E)?, E)
    }

    /// As [`GgufFile::get_usize`], `Ok(None)` when the key is absent.
    ///
    /// # Errors
    /// [`LmError::Config`] when present with another type.
    pub fn get_usize_opt(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| self.int_in(key, v, "a non-negative integer"))
            .transpose()
    }

    /// The float under `key` as `f32` (`f32`, `f64`, or an integer converted).
    ///
    /// # Errors
    /// [`LmError::Config`] naming the key when it is missing or not a number.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.required(key, "a number")?;
        self.number(key, v)
    }

    fn number(&self, key: &str, v: &GgufValue) -> Result<f32> {
        v.as_f32()
            .or_else(|| v.as_int().map(|i| i as f32))
            .ok_or_else(|| self.config_err(key, "a number", &v.describe()))
    }

    /// As [`GgufFile::get_f32`], `Ok(None)` when the key is absent.
    ///
    /// # Errors
    /// [`LmError::Config`] when present with another type.
    pub fn get_f32_opt(&self, key: &str) -> Result<Option<f32>> {
        self.get(key).map(|v| self.number(key, v)).transpose()
    }

    /// The bool under `key`.
    ///
    /// # Errors
    /// [`LmError::Config`] naming the key when it is missing or not a bool.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let v = self.required(key, "a bool")?;
        v.as_bool()
            .ok_or_else(|| self.config_err(key, "a bool", &v.describe()))
    }

    /// As [`GgufFile::get_bool`], `Ok(None)` when the key is absent.
    ///
    /// # Errors
    /// [`LmError::Config`] when present with another type.
    pub fn get_bool_opt(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| self.config_err(key, "a bool", &v.describe()))
            })
            .transpose()
    }

    /// The string under `key`.
    ///
    /// # Errors
    /// [`LmError::Config`] naming the key when it is missing or not a string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.required(key, "a string")?;
        v.as_str()
            .ok_or_else(|| self.config_err(key, "a string", &v.describe()))
    }

    /// As [`GgufFile::get_str`], `Ok(None)` when the key is absent.
    ///
    /// # Errors
    /// [`LmError::Config`] when present with another type.
    pub fn get_str_opt(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| self.config_err(key, "a string", &v.describe()))
            })
            .transpose()
    }

    /// The array of strings under `key`.
    ///
    /// # Errors
    /// [`LmError::Config`] naming the key when it is missing or not an array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        const E: &str = "an array of strings";
        let v = self.required(key, E)?;
        v.as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(GgufValue::as_str)
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| self.config_err(key, E, &v.describe()))
    }

    /// The array of integers under `key`, each converted to `i64`.
    ///
    /// # Errors
    /// [`LmError::Config`] naming the key when it is missing or not an array of integers
    /// fitting `i64`.
    pub fn get_int_array(&self, key: &str) -> Result<Vec<i64>> {
        const E: &str = "an array of integers";
        let v = self.required(key, E)?;
        v.as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|x| x.as_int().and_then(|i| i64::try_from(i).ok()))
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| self.config_err(key, E, &v.describe()))
    }

    /// `general.architecture`, e.g. `llama` or `qwen2`.
    ///
    /// # Errors
    /// [`LmError::Config`] when the key is missing or not a string.
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The info of the tensor called `name`, if any.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    fn info_or_missing(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.tensor_info(name)
            .ok_or_else(|| LmError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })
    }

    /// The raw (possibly quantised) bytes of tensor `name`.
    ///
    /// # Errors
    /// [`LmError::MissingTensor`] when there is no such tensor.
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.info_or_missing(name)?;
        Ok(&self.storage.bytes()[info.offset..info.offset + info.n_bytes])
    }

    /// Tensor `name` dequantised to `f32`, with its PyTorch-order shape.
    ///
    /// # Shapes
    /// GGUF dims `[ne0, ne1, ...]` -> `(data: [.. * ne1 * ne0] row-major, shape: [..., ne1, ne0])`.
    ///
    /// # Errors
    /// [`LmError::MissingTensor`] when absent; [`LmError::UnsupportedDtype`] for a type
    /// outside [`dequant::SUPPORTED`].
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let info = self.info_or_missing(name)?;
        if !info.dtype.can_dequantize() {
            return Err(LmError::UnsupportedDtype {
                path: self.path.clone(),
                tensor: name.to_string(),
                dtype: info.dtype.name().to_string(),
                supported: dequant::SUPPORTED,
            });
        }
        let data = dequant::dequantize(info.dtype, self.tensor_bytes(name)?, info.n_elements())?;
        Ok((data, info.dims.clone()))
    }
}

fn corrupt(path: &Path, expected: impl Into<String>, found: impl Into<String>) -> LmError {
    LmError::Corrupt {
        path: path.to_path_buf(),
        format: FORMAT,
        expected: expected.into(),
        found: found.into(),
    }
}

/// A bounds-checked little-endian reader over the header bytes.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(corrupt(
                self.path,
                format!("{n} bytes for {what} at offset {}", self.pos),
                format!(
                    "only {} bytes left (file is {} bytes)",
                    self.remaining(),
                    self.buf.len()
                ),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let start = self.pos;
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            corrupt(
                self.path,
                format!("{what} to be UTF-8 (string at offset {start})"),
                format!("invalid UTF-8: {e}"),
            )
        })
    }

    fn value(&mut self, ty: GgufValueType, depth: usize, key: &str) -> Result<GgufValue> {
        let what = format!("the value of metadata `{key}`");
        Ok(match ty {
            GgufValueType::U8 => GgufValue::U8(self.array::<1>(&what)?[0]),
            GgufValueType::I8 => GgufValue::I8(self.array::<1>(&what)?[0] as i8),
            GgufValueType::U16 => GgufValue::U16(u16::from_le_bytes(self.array(&what)?)),
            GgufValueType::I16 => GgufValue::I16(i16::from_le_bytes(self.array(&what)?)),
            GgufValueType::U32 => GgufValue::U32(u32::from_le_bytes(self.array(&what)?)),
            GgufValueType::I32 => GgufValue::I32(i32::from_le_bytes(self.array(&what)?)),
            GgufValueType::F32 => GgufValue::F32(f32::from_le_bytes(self.array(&what)?)),
            GgufValueType::U64 => GgufValue::U64(u64::from_le_bytes(self.array(&what)?)),
            GgufValueType::I64 => GgufValue::I64(i64::from_le_bytes(self.array(&what)?)),
            GgufValueType::F64 => GgufValue::F64(f64::from_le_bytes(self.array(&what)?)),
            GgufValueType::Bool => {
                let at = self.pos;
                match self.array::<1>(&what)?[0] {
                    0 => GgufValue::Bool(false),
                    1 => GgufValue::Bool(true),
                    b => {
                        return Err(corrupt(
                            self.path,
                            format!("a bool (0 or 1) for {what} at offset {at}"),
                            format!("byte {b}"),
                        ));
                    }
                }
            }
            GgufValueType::String => GgufValue::String(self.string(&what)?),
            GgufValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(corrupt(
                        self.path,
                        format!("arrays nested at most {MAX_ARRAY_DEPTH} deep in {what}"),
                        "deeper nesting",
                    ));
                }
                let item_type = self.value_type(&what)?;
                let at = self.pos;
                let count = self.u64(&what)?;
                let min = item_type.min_size();
                if count.checked_mul(min).is_none_or(|n| n > self.remaining()) {
                    return Err(corrupt(
                        self.path,
                        format!(
                            "an array length that fits in the file for {what} (offset {at}): \
                             at most {} items of {item_type:?} ({min}+ bytes each)",
                            self.remaining() / min
                        ),
                        format!("{count} items"),
                    ));
                }
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(item_type, depth + 1, key)?);
                }
                GgufValue::Array { item_type, items }
            }
        })
    }

    fn value_type(&mut self, what: &str) -> Result<GgufValueType> {
        let at = self.pos;
        let tag = self.u32(what)?;
        GgufValueType::from_tag(tag).ok_or_else(|| {
            corrupt(
                self.path,
                format!("a metadata value type tag 0..=12 for {what} at offset {at}"),
                format!("tag {tag}"),
            )
        })
    }
}

struct Header {
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    alignment: u64,
    data_offset: usize,
}

/// Fewest bytes a metadata entry takes: key length, one-byte key, type tag, one-byte value.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;
/// Fewest bytes a tensor info takes: name length, one-byte name, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 1 + 4 + 8 + 4 + 8;

fn parse_header(path: &Path, buf: &[u8]) -> Result<Header> {
    let mut cur = Cursor { buf, pos: 0, path };
    let magic = cur.take(4, "the magic bytes `GGUF`")?;
    if magic != GGUF_MAGIC {
        return Err(corrupt(
            path,
            "the magic bytes `GGUF` at offset 0",
            format!("{:?}", String::from_utf8_lossy(magic)),
        ));
    }
    let version = cur.u32("the GGUF version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(corrupt(
                path,
                "GGUF version 2 or 3",
                "version 1 (the 2023 format with 32-bit counts, no longer supported: re-convert the model with a current llama.cpp)",
            ));
        }
        v if v.swap_bytes() <= 3 => {
            return Err(corrupt(
                path,
                "a little-endian GGUF file",
                format!("a big-endian file (version field {v:#x})"),
            ));
        }
        v => return Err(corrupt(path, "GGUF version 2 or 3", format!("version {v}"))),
    }
    let n_tensors = cur.u64("the tensor count")?;
    let n_kv = cur.u64("the metadata count")?;
    let needed = n_kv.checked_mul(MIN_KV_BYTES).and_then(|a| {
        n_tensors
            .checked_mul(MIN_TENSOR_INFO_BYTES)
            .and_then(|b| a.checked_add(b))
    });
    if needed.is_none_or(|n| n > cur.remaining()) {
        return Err(corrupt(
            path,
            format!(
                "tensor and metadata counts that fit in the {} bytes after the header",
                cur.remaining()
            ),
            format!(
                "{n_tensors} tensors and {n_kv} metadata entries (at least {} bytes)",
                needed.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
            ),
        ));
    }

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = cur.string(&format!("metadata key #{i}"))?;
        let ty = cur.value_type(&format!("metadata `{key}`"))?;
        let value = cur.value(ty, 0, &key)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(corrupt(
                path,
                "unique metadata keys",
                format!("`{key}` twice"),
            ));
        }
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_int() {
            Some(a) if a > 0 && a <= u32::MAX as i128 && (a as u64).is_power_of_two() => a as u64,
            _ => {
                return Err(corrupt(
                    path,
                    "`general.alignment` a power of two",
                    v.describe(),
                ));
            }
        },
    };

    struct Raw {
        name: String,
        ggml_dims: Vec<u64>,
        dtype: GgmlType,
        rel_offset: u64,
    }
    let mut raws = Vec::with_capacity(n_tensors as usize);
    let mut seen = HashMap::new();
    for i in 0..n_tensors {
        let name = cur.string(&format!("the name of tensor #{i}"))?;
        let what = format!("tensor `{name}`");
        let n_dims = cur.u32(&what)?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(corrupt(
                path,
                format!("1..={MAX_DIMS} dims for {what}"),
                format!("{n_dims} dims"),
            ));
        }
        let mut ggml_dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            ggml_dims.push(cur.u64(&what)?);
        }
        if ggml_dims.contains(&0) {
            return Err(corrupt(
                path,
                format!("nonzero dims for {what}"),
                format!("dims {ggml_dims:?} (ggml order)"),
            ));
        }
        let type_id = cur.u32(&what)?;
        let dtype = GgmlType::from_id(type_id).ok_or_else(|| LmError::UnsupportedDtype {
            path: path.to_path_buf(),
            tensor: name.clone(),
            dtype: format!("unknown ggml type id {type_id}"),
            supported: dequant::SUPPORTED,
        })?;
        let rel_offset = cur.u64(&what)?;
        if seen.insert(name.clone(), i).is_some() {
            return Err(corrupt(
                path,
                "unique tensor names",
                format!("`{name}` twice"),
            ));
        }
        raws.push(Raw {
            name,
            ggml_dims,
            dtype,
            rel_offset,
        });
    }

    let header_end = cur.pos as u64;
    let data_offset = header_end.div_ceil(alignment) * alignment;
    let file_len = buf.len() as u64;
    if !raws.is_empty() && data_offset > file_len {
        return Err(corrupt(
            path,
            format!("tensor data starting at offset {data_offset}"),
            format!("a file of {file_len} bytes"),
        ));
    }

    let mut tensors = Vec::with_capacity(raws.len());
    for raw in raws {
        let what = format!("tensor `{}`", raw.name);
        let n_elements = raw
            .ggml_dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= usize::MAX as u64)
            .ok_or_else(|| {
                corrupt(
                    path,
                    format!("an element count that fits in 64 bits for {what}"),
                    format!("dims {:?} (ggml order)", raw.ggml_dims),
                )
            })?;
        let bs = raw.dtype.block_size() as u64;
        if !raw.ggml_dims[0].is_multiple_of(bs) {
            return Err(corrupt(
                path,
                format!(
                    "the row length (first ggml dim) of {what} to be a multiple of the {} block size {bs}",
                    raw.dtype
                ),
                format!("{}", raw.ggml_dims[0]),
            ));
        }
        let n_bytes = raw.dtype.bytes_for(n_elements).ok_or_else(|| {
            corrupt(
                path,
                format!("a byte size that fits in 64 bits for {what}"),
                "overflow",
            )
        })?;
        if !raw.rel_offset.is_multiple_of(alignment) {
            return Err(corrupt(
                path,
                format!("the data offset of {what} to be a multiple of the alignment {alignment}"),
                format!("offset {}", raw.rel_offset),
            ));
        }
        let end = data_offset
            .checked_add(raw.rel_offset)
            .and_then(|s| s.checked_add(n_bytes));
        if end.is_none_or(|e| e > file_len) {
            return Err(corrupt(
                path,
                format!(
                    "the data of {what} ({n_bytes} bytes at data offset {}) inside the file of {file_len} bytes",
                    raw.rel_offset
                ),
                format!(
                    "it ends at byte {}, past the end",
                    end.map_or_else(|| "beyond 2^64".to_string(), |e| e.to_string())
                ),
            ));
        }
        tensors.push(GgufTensorInfo {
            name: raw.name,
            dims: raw.ggml_dims.iter().rev().map(|&d| d as usize).collect(),
            dtype: raw.dtype,
            offset: (data_offset + raw.rel_offset) as usize,
            n_bytes: n_bytes as usize,
        });
    }

    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].offset);
    for w in order.windows(2) {
        let (a, b) = (&tensors[w[0]], &tensors[w[1]]);
        if a.offset + a.n_bytes > b.offset {
            return Err(corrupt(
                path,
                format!(
                    "non-overlapping tensor data: `{}` occupies bytes {}..{}",
                    a.name,
                    a.offset,
                    a.offset + a.n_bytes
                ),
                format!("`{}` starting at byte {} inside it", b.name, b.offset),
            ));
        }
    }

    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset: data_offset as usize,
    })
}

/// Undoes llama.cpp's row permutation of a Llama `q_proj` / `k_proj` weight.
///
/// llama.cpp's converter interleaves the two rotary halves of every head; Hugging Face
/// (and this crate's decoder) keep them as two contiguous halves. With `half = d_out / n_head / 2`:
/// `hf = gguf.reshape(n_head, half, 2, d_in).swapaxes(1, 2).reshape(d_out, d_in)`, i.e. HF row
/// `h * 2 * half + a * half + b` is GGUF row `h * 2 * half + 2 * b + a`. For `k_proj` pass the
/// number of KV heads.
///
/// # Shapes
/// `w: [d_out, d_in]` (GGUF row order) -> `[d_out, d_in]` (HF row order).
///
/// # Panics
/// When `w.len() != d_out * d_in` or `d_out` is not a multiple of `2 * n_head`; shapes come
/// from a validated config. [`try_unpermute_llama_qk`] returns an error instead.
pub fn unpermute_llama_qk(w: &[f32], n_head: usize, d_out: usize, d_in: usize) -> Vec<f32> {
    match try_unpermute_llama_qk(w, n_head, d_out, d_in) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// As [`unpermute_llama_qk`], with an error for inconsistent shapes.
///
/// # Shapes
/// `w: [d_out, d_in]` -> `[d_out, d_in]`.
///
/// # Errors
/// [`LmError::InvalidInput`] when `w.len() != d_out * d_in` or `d_out` is not a multiple of
/// `2 * n_head`.
pub fn try_unpermute_llama_qk(
    w: &[f32],
    n_head: usize,
    d_out: usize,
    d_in: usize,
) -> Result<Vec<f32>> {
    if n_head == 0 || !d_out.is_multiple_of(2 * n_head) || d_out.checked_mul(d_in) != Some(w.len())
    {
        return Err(LmError::InvalidInput(format!(
            "unpermute_llama_qk: expected a [{d_out}, {d_in}] weight ({} values) with d_out a multiple of 2 * n_head = {}, found {} values",
            d_out.saturating_mul(d_in),
            2 * n_head,
            w.len()
        )));
    }
    let head_dim = d_out / n_head;
    let half = head_dim / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_head {
        for a in 0..2 {
            for b in 0..half {
                let dst = h * head_dim + a * half + b;
                let src = h * head_dim + 2 * b + a;
                out[dst * d_in..(dst + 1) * d_in].copy_from_slice(&w[src * d_in..(src + 1) * d_in]);
            }
        }
    }
    Ok(out)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> GgufWriter {
        let mut w = GgufWriter::new();
        w.add_str("general.architecture", "llama")
            .add_u32("llama.block_count", 2)
            .add_f32("llama.rope.freq_base", 10000.0)
            .add_bool("tokenizer.ggml.add_bos_token", true)
            .add_str_array("tokenizer.ggml.tokens", &["a", "b", "ab"])
            .add_i32_array("tokenizer.ggml.token_type", &[1, 1, 3])
            .add("neg", GgufValue::I64(-5))
            .add("big", GgufValue::U64(1 << 40));
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) / 7.0).collect();
        w.add_tensor_f32("norm", &[3], &[1.0, -2.0, 0.5]).unwrap();
        w.add_tensor_f16("h", &[2, 2], &[1.0, 0.5, -0.25, 3.0])
            .unwrap();
        w.add_tensor_q8_0("q", &[2, 32], &x).unwrap();
        w
    }

    #[test]
    fn round_trip_metadata_and_tensors() {
        let f = GgufFile::from_bytes(sample().to_bytes(), "mem").unwrap();
        assert_eq!(f.version(), 3);
        assert_eq!(f.architecture().unwrap(), "llama");
        assert_eq!(f.get_u32("llama.block_count").unwrap(), 2);
        assert_eq!(f.get_usize("llama.block_count").unwrap(), 2);
        assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 10000.0);
        assert!(f.get_bool("tokenizer.ggml.add_bos_token").unwrap());
        assert_eq!(
            f.get_str_array("tokenizer.ggml.tokens").unwrap(),
            ["a", "b", "ab"]
        );
        assert_eq!(
            f.get_int_array("tokenizer.ggml.token_type").unwrap(),
            [1, 1, 3]
        );
        assert_eq!(f.get_u64("big").unwrap(), 1 << 40);
        assert_eq!(f.get_u32_opt("absent").unwrap(), None);
        assert_eq!(f.tensors().len(), 3);
        let (h, dims) = f.tensor_f32("h").unwrap();
        assert_eq!((h, dims), (vec![1.0, 0.5, -0.25, 3.0], vec![2, 2]));
        let (q, dims) = f.tensor_f32("q").unwrap();
        assert_eq!(dims, vec![2, 32]);
        for (i, v) in q.iter().enumerate() {
            let x = (i as f32 - 20.0) / 7.0;
            assert!((v - x).abs() < 0.03, "{i}: {v} vs {x}");
        }
        for t in f.tensors() {
            assert_eq!(t.offset % 32, 0);
        }
    }

    #[test]
    fn typed_getters_name_the_key() {
        let f = GgufFile::from_bytes(sample().to_bytes(), "mem").unwrap();
        let e = f.get_u32("neg").unwrap_err().to_string();
        assert!(e.contains("`neg`") && e.contains("I64(-5)"), "{e}");
        let e = f.get_u32("big").unwrap_err().to_string();
        assert!(e.contains("0..=4294967295"), "{e}");
        let e = f.get_str("llama.block_count").unwrap_err().to_string();
        assert!(e.contains("expected a string"), "{e}");
        let e = f.get_f32("missing.key").unwrap_err().to_string();
        assert!(
            e.contains("`missing.key`") && e.contains("no such key"),
            "{e}"
        );
        assert!(matches!(
            f.tensor_f32("nope"),
            Err(LmError::MissingTensor { .. })
        ));
        assert!(f.get_bool_opt("general.architecture").is_err());
    }

    #[test]
    fn custom_alignment_is_honoured() {
        let mut w = sample();
        w.set_alignment(64);
        let f = GgufFile::from_bytes(w.to_bytes(), "mem").unwrap();
        assert_eq!(f.alignment(), 64);
        assert_eq!(f.data_offset() % 64, 0);
        assert_eq!(f.tensor_f32("norm").unwrap().0, vec![1.0, -2.0, 0.5]);
        let mut w = sample();
        w.add_u32("general.alignment", 48);
        let e = GgufFile::from_bytes(w.to_bytes(), "mem")
            .unwrap_err()
            .to_string();
        assert!(e.contains("power of two"), "{e}");
    }

    #[test]
    fn unpermute_matches_the_reshape_formula() {
        // n_head 2, head_dim 4 (half 2), d_in 1: gguf rows [h0: r0 r1 r2 r3, h1: r4..r7].
        let w: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let hf = unpermute_llama_qk(&w, 2, 8, 1);
        // reshape(2, 2, 2, 1).swapaxes(1, 2): head 0 -> rows 0, 2, 1, 3.
        assert_eq!(hf, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert!(try_unpermute_llama_qk(&w, 3, 8, 1).is_err());
        assert!(try_unpermute_llama_qk(&w, 2, 8, 2).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), with_magic in any::<bool>()) {
            let mut b = bytes;
            if with_magic && b.len() >= 8 {
                b[..4].copy_from_slice(b"GGUF");
                b[4..8].copy_from_slice(&3u32.to_le_bytes());
            }
            let _ = GgufFile::from_bytes(b, "fuzz");
        }

        #[test]
        fn mutated_valid_files_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            truncate in any::<bool>(),
        ) {
            let mut b = sample().to_bytes();
            for (i, v) in &edits {
                let i = i.index(b.len());
                b[i] = *v;
            }
            if truncate {
                let n = cut.index(b.len());
                b.truncate(n);
            }
            if let Ok(f) = GgufFile::from_bytes(b, "fuzz") {
                for t in f.tensors().to_vec() {
                    let _ = f.tensor_f32(&t.name);
                }
            }
        }

        #[test]
        fn unpermute_is_a_row_permutation(n_head in 1usize..5, half in 1usize..5, d_in in 1usize..4) {
            let d_out = n_head * half * 2;
            let w: Vec<f32> = (0..d_out * d_in).map(|i| i as f32).collect();
            let hf = unpermute_llama_qk(&w, n_head, d_out, d_in);
            let mut sorted = hf.clone();
            sorted.sort_by(f32::total_cmp);
            prop_assert_eq!(&sorted, &w);
            // The first row of each head is unchanged.
            for h in 0..n_head {
                let r = h * 2 * half;
                prop_assert_eq!(&hf[r * d_in..(r + 1) * d_in], &w[r * d_in..(r + 1) * d_in]);
            }
        }
    }
}
