//! Memory-mapped safetensors checkpoints (single file or sharded with an index), read to f32.
//!
//! Header parsing and offset validation (lying header length, offsets past the end,
//! overlapping or gapped tensors) are done by the `safetensors` crate; every failure is
//! turned into an [`LmError::Corrupt`] naming the file. Element types F32, F16 and BF16 are
//! converted to f32; anything else is [`LmError::UnsupportedDtype`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, SafeTensors};

use crate::error::{LmError, Result};

const SUPPORTED: &str = "F32, F16, BF16, F64";

/// One opened safetensors file: its map and parsed header.
struct Shard {
    path: PathBuf,
    map: Mmap,
    header_len: usize,
    metadata: Metadata,
}

/// A checkpoint made of one or more safetensors files, addressed by tensor name.
pub struct SafetensorsWeights {
    shards: Vec<Shard>,
    index: BTreeMap<String, usize>,
    origin: PathBuf,
}

impl std::fmt::Debug for SafetensorsWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsWeights")
            .field("origin", &self.origin)
            .field("shards", &self.shards.len())
            .field("tensors", &self.index.len())
            .finish()
    }
}

impl SafetensorsWeights {
    /// Opens a single `.safetensors` file.
    pub fn open_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let shard = open_shard(path)?;
        let index = shard
            .metadata
            .tensors()
            .into_keys()
            .map(|name| (name, 0))
            .collect();
        Ok(Self {
            shards: vec![shard],
            index,
            origin: path.to_path_buf(),
        })
    }

    /// Opens the weights of an HF model directory: `model.safetensors`, or the shards listed in
    /// `model.safetensors.index.json`.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let single = dir.join("model.safetensors");
        if single.is_file() {
            return Self::open_file(single);
        }
        let index_path = dir.join("model.safetensors.index.json");
        if !index_path.is_file() {
            return Err(LmError::MissingTensor {
                path: dir.to_path_buf(),
                tensor: "model.safetensors (or model.safetensors.index.json)".to_string(),
            });
        }
        let text = std::fs::read_to_string(&index_path).map_err(|e| LmError::io(&index_path, e))?;
        let parsed: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| LmError::Corrupt {
                path: index_path.clone(),
                format: "safetensors index",
                expected: "a JSON object with a `weight_map`".into(),
                found: format!("invalid JSON ({e})"),
            })?;
        let map = parsed
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| LmError::Corrupt {
                path: index_path.clone(),
                format: "safetensors index",
                expected: "a `weight_map` object of tensor name -> shard file".into(),
                found: "no `weight_map`".into(),
            })?;
        let mut shard_ids: BTreeMap<String, usize> = BTreeMap::new();
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for (name, file) in map {
            let file = file.as_str().ok_or_else(|| LmError::Corrupt {
                path: index_path.clone(),
                format: "safetensors index",
                expected: "shard file names as strings".into(),
                found: format!("{file} for tensor `{name}`"),
            })?;
            let id = match shard_ids.get(file) {
                Some(&id) => id,
                None => {
                    let shard = open_shard(&dir.join(file))?;
                    shards.push(shard);
                    shard_ids.insert(file.to_string(), shards.len() - 1);
                    shards.len() - 1
                }
            };
            if shards[id].metadata.info(name).is_none() {
                return Err(LmError::MissingTensor {
                    path: dir.join(file),
                    tensor: name.clone(),
                });
            }
            index.insert(name.clone(), id);
        }
        Ok(Self {
            shards,
            index,
            origin: dir.to_path_buf(),
        })
    }

    /// Where the weights came from (file or directory).
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Names of all tensors, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let shard = &self.shards[*self.index.get(name)?];
        shard.metadata.info(name).map(|i| i.shape.clone())
    }

    /// Reads a tensor converted to f32, with its shape (row-major, PyTorch order).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let id = *self.index.get(name).ok_or_else(|| LmError::MissingTensor {
            path: self.origin.clone(),
            tensor: name.to_string(),
        })?;
        let shard = &self.shards[id];
        let info = shard.metadata.info(name).expect("indexed tensor has info");
        let (start, end) = info.data_offsets;
        let base = 8 + shard.header_len;
        let bytes = &shard.map[base + start..base + end];
        let values = decode_f32(info.dtype, bytes).ok_or_else(|| LmError::UnsupportedDtype {
            path: shard.path.clone(),
            tensor: name.to_string(),
            dtype: format!("{:?}", info.dtype),
            supported: SUPPORTED,
        })?;
        Ok((values, info.shape.clone()))
    }
}

/// Little-endian safetensors bytes of a float type (F32, F16, BF16, F64) as f32 values;
/// `None` for any other element type.
pub fn decode_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")) as f32)
            .collect(),
        _ => return None,
    })
}

fn open_shard(path: &Path) -> Result<Shard> {
    let file = std::fs::File::open(path).map_err(|e| LmError::io(path, e))?;
    // SAFETY: the map is read-only; a file changed underneath us can only give wrong values,
    // which the header validation and shape checks bound to in-range reads.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| LmError::io(path, e))?;
    let (header_len, metadata) =
        SafeTensors::read_metadata(&map).map_err(|e| corrupt(path, &map, e))?;
    Ok(Shard {
        path: path.to_path_buf(),
        map,
        header_len,
        metadata,
    })
}

fn corrupt(path: &Path, bytes: &[u8], err: safetensors::SafeTensorError) -> LmError {
    use safetensors::SafeTensorError as E;
    let claimed = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
    let (expected, found) = match &err {
        E::HeaderTooSmall => (
            "an 8-byte header length".to_string(),
            format!("{} bytes in the whole file", bytes.len()),
        ),
        E::InvalidHeaderLength | E::HeaderTooLarge => (
            "a header length that fits in the file".to_string(),
            format!(
                "a header of {} bytes in a {}-byte file",
                claimed.unwrap_or(0),
                bytes.len()
            ),
        ),
        E::InvalidOffset(name) => (
            "contiguous, non-overlapping tensor offsets".to_string(),
            format!("bad data_offsets for tensor `{name}`"),
        ),
        E::MetadataIncompleteBuffer => (
            "tensor data exactly filling the file after the header".to_string(),
            format!(
                "a {}-byte file that does not match its header (truncated?)",
                bytes.len()
            ),
        ),
        other => ("a valid safetensors header".to_string(), other.to_string()),
    };
    LmError::Corrupt {
        path: path.to_path_buf(),
        format: "safetensors",
        expected,
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Builds a valid safetensors file with the given f32 tensors.
    pub(crate) fn write_f32(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
        let mut header = serde_json::Map::new();
        let mut offset = 0usize;
        let mut data = Vec::new();
        for (name, shape, values) in tensors {
            let n = values.len() * 4;
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}),
            );
            offset += n;
            for v in values {
                data.extend_from_slice(&v.to_le_bytes());
            }
        }
        let header = serde_json::to_vec(&header).unwrap();
        let mut f = std::fs::File::create(path).unwrap();
        f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
        f.write_all(&header).unwrap();
        f.write_all(&data).unwrap();
    }

    #[test]
    fn reads_f32_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.safetensors");
        write_f32(
            &p,
            &[
                ("w", vec![2, 3], vec![1., 2., 3., 4., 5., 6.]),
                ("b", vec![1], vec![7.]),
            ],
        );
        let w = SafetensorsWeights::open_file(&p).unwrap();
        assert_eq!(
            w.tensor_f32("w").unwrap(),
            (vec![1., 2., 3., 4., 5., 6.], vec![2, 3])
        );
        assert_eq!(w.shape("b"), Some(vec![1]));
        assert!(
            w.tensor_f32("nope")
                .unwrap_err()
                .to_string()
                .contains("missing tensor `nope`")
        );
    }

    #[test]
    fn truncated_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.safetensors");
        write_f32(&p, &[("w", vec![4], vec![1., 2., 3., 4.])]);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let err = SafetensorsWeights::open_file(&p).unwrap_err().to_string();
        assert!(err.contains("corrupt safetensors"), "{err}");
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn lying_header_length_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.safetensors");
        write_f32(&p, &[("w", vec![1], vec![1.])]);
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let err = SafetensorsWeights::open_file(&p).unwrap_err().to_string();
        assert!(err.contains("header length"), "{err}");
    }

    #[test]
    fn overlapping_offsets_are_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.safetensors");
        let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0u8; 12]);
        std::fs::write(&p, &bytes).unwrap();
        let err = SafetensorsWeights::open_file(&p).unwrap_err().to_string();
        assert!(err.contains("offsets"), "{err}");
    }

    #[test]
    fn unknown_dtype_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.safetensors");
        let header = br#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&[0u8; 8]);
        std::fs::write(&p, &bytes).unwrap();
        let w = SafetensorsWeights::open_file(&p).unwrap();
        let err = w.tensor_f32("a").unwrap_err().to_string();
        assert!(err.contains("unsupported type I64"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("x.safetensors");
            std::fs::write(&p, &bytes).unwrap();
            let _ = SafetensorsWeights::open_file(&p);
        }

        #[test]
        fn arbitrary_header_json_never_panics(header in "\\{[ -~]{0,120}\\}", tail in 0usize..64) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("x.safetensors");
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend(std::iter::repeat_n(0u8, tail));
            std::fs::write(&p, &bytes).unwrap();
            if let Ok(w) = SafetensorsWeights::open_file(&p) {
                let names: Vec<String> = w.names().map(str::to_string).collect();
                for n in names { let _ = w.tensor_f32(&n); }
            }
        }
    }
}
