//! The memory-mapped GGUF reader: [`GgufFile`] validates the whole header before returning.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::value::{DEFAULT_ALIGNMENT, GGUF_MAGIC, GgmlType, GgufValue, GgufValueType, MAX_DIMS};
use crate::error::{LmError, Result};
use crate::io::dequant;

/// Deepest nesting of arrays accepted in metadata.
const MAX_ARRAY_DEPTH: usize = 3;
const FORMAT: &str = "GGUF";

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

    /// The array of numbers under `key` as `f32` (floats, or integers converted).
    ///
    /// # Errors
    /// [`LmError::Config`] naming the key when it is missing or not an array of numbers.
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        const E: &str = "an array of numbers";
        let v = self.required(key, E)?;
        v.as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|x| x.as_f32().or_else(|| x.as_int().map(|i| i as f32)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::gguf::GgufWriter;
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
    }
}
