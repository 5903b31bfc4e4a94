//! Reading an exported checkpoint back ([`load_exported`]), for verification.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::Tokenizer;

use super::WEIGHTS_FILE;
use crate::error::{LmError, Result};
use crate::model::hf_config::{HfModelConfig, read_hf_config};
use crate::model::loader::WeightSource;
use crate::tokenizer::tokenizer_from_json;

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
            return Err(LmError::WrongModelKind {
                path: dir.to_path_buf(),
                found: "an encoder",
                expected: "an exported checkpoint must be a decoder (Llama, Qwen2)",
            });
        }
    };
    let weights = ExportedWeights::open(dir)?;
    let decoder = crate::model::loader::build_decoder(&config, &weights, device)?;
    Ok((decoder, tokenizer_from_json(dir.join("tokenizer.json"))?))
}
