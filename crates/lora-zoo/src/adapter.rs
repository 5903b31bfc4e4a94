//! [`LoraAdapter`]: a PEFT LoRA adapter read into f32 factors, one [`LoraModule`] per adapted linear
//! layer, plus validation against a [`BaseModelSpec`].
//!
//! Key layout (PEFT `save_pretrained`): `base_model.model.<module>.lora_A.weight` of shape `[r, d_in]`
//! and `...lora_B.weight` of shape `[d_out, r]`; in-memory state dicts carry the adapter name
//! (`lora_A.default.weight`), which is accepted too. F32, F16, BF16 and F64 are read as f32.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayView2};
use safetensors::SafeTensors;

use crate::config::{AdapterConfig, is_output_or_embedding};
use crate::error::{LoraError, Result};
use crate::spec::BaseModelSpec;

/// File name of the config in a PEFT adapter directory.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// File name of the weights in a PEFT adapter directory.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Prefix PEFT puts before module names in saved LoRA state dicts.
pub const KEY_PREFIX: &str = "base_model.model.";

/// The two factors of one adapted linear layer and its scale: `ΔW = scale · B · A`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraModule {
    /// Down projection, `[r, d_in]`.
    pub a: Array2<f32>,
    /// Up projection, `[d_out, r]`.
    pub b: Array2<f32>,
    /// Alpha this module was configured with (informative; `scale` is what is applied).
    pub alpha: f64,
    /// Effective scale (`alpha / r` or `alpha / sqrt(r)`).
    pub scale: f32,
}

impl LoraModule {
    /// Builds a module, checking that the factor shapes agree.
    ///
    /// # Shapes
    /// `a: [r, d_in]`, `b: [d_out, r]`, `r >= 1`.
    pub fn new(a: Array2<f32>, b: Array2<f32>, alpha: f64, scale: f32) -> Result<Self> {
        if a.nrows() != b.ncols() {
            return Err(LoraError::ShapeMismatch {
                what: "lora_B columns vs lora_A rows".into(),
                expected: format!("lora_B [d_out, {}]", a.nrows()),
                found: b.shape().to_vec(),
            });
        }
        if a.nrows() == 0 {
            return Err(LoraError::ZeroRank {
                module: "<new module>".into(),
            });
        }
        Ok(LoraModule { a, b, alpha, scale })
    }

    /// The factors in lm-core's layout for the adapter seam: `a = lora_Aᵀ` (`[d_in, r]`),
    /// `b = lora_Bᵀ` (`[r, d_out]`), with this module's scale.
    pub fn host_factors(&self) -> lm_core::model::HostFactors {
        lm_core::model::HostFactors {
            a: self.a.t().iter().copied().collect(),
            b: self.b.t().iter().copied().collect(),
            rank: self.rank(),
            scale: self.scale,
        }
    }

    /// Rank `r`.
    pub fn rank(&self) -> usize {
        self.a.nrows()
    }

    /// Input width `d_in`.
    pub fn d_in(&self) -> usize {
        self.a.ncols()
    }

    /// Output width `d_out`.
    pub fn d_out(&self) -> usize {
        self.b.nrows()
    }

    /// The dense update `scale · B · A`, accumulated in f32.
    ///
    /// # Shapes
    /// returns `[d_out, d_in]`.
    pub fn delta(&self) -> Array2<f32> {
        let mut d = self.b.dot(&self.a);
        d *= self.scale;
        d
    }

    /// Number of stored parameters (`r · (d_in + d_out)`).
    pub fn num_params(&self) -> usize {
        self.a.len() + self.b.len()
    }
}

/// A LoRA adapter: its config and its modules by name (`model.layers.3.self_attn.q_proj`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraAdapter {
    /// The parsed `adapter_config.json`.
    pub config: AdapterConfig,
    /// Adapted modules, by base-model module name.
    pub modules: BTreeMap<String, LoraModule>,
}

/// Which factor a tensor key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Factor {
    A,
    B,
}

/// Maps a safetensors key to `(module, factor)`, or a named refusal.
fn parse_key(key: &str) -> Result<(String, Factor)> {
    let rest = key.strip_prefix(KEY_PREFIX).unwrap_or(key);
    if rest.contains("lora_magnitude_vector") {
        return Err(LoraError::DoraUnsupported {
            detail: format!("tensor {key}"),
        });
    }
    if rest.contains("modules_to_save") || rest.contains(".original_module.") {
        return Err(LoraError::ModulesToSaveUnsupported {
            modules: vec![key.to_string()],
        });
    }
    if rest.contains("lora_embedding_A") || rest.contains("lora_embedding_B") {
        return Err(LoraError::EmbeddingAdapter {
            module: key.to_string(),
        });
    }
    for (tag, factor) in [(".lora_A.", Factor::A), (".lora_B.", Factor::B)] {
        if let Some(pos) = rest.find(tag) {
            let module = &rest[..pos];
            let tail = &rest[pos + tag.len()..];
            // tail is "weight" or "<adapter>.weight"; a "bias" tail is a lora_bias tensor.
            let parts: Vec<&str> = tail.split('.').collect();
            let last = *parts.last().unwrap_or(&"");
            if last == "bias" {
                return Err(LoraError::BiasUnsupported {
                    found: format!("tensor {key}"),
                });
            }
            if last != "weight" || parts.len() > 2 || module.is_empty() {
                return Err(LoraError::UnrecognizedTensor {
                    key: key.to_string(),
                });
            }
            if is_output_or_embedding(module) {
                return Err(LoraError::EmbeddingAdapter {
                    module: module.to_string(),
                });
            }
            return Ok((module.to_string(), factor));
        }
    }
    if rest.ends_with(".bias") {
        return Err(LoraError::BiasUnsupported {
            found: format!("tensor {key}"),
        });
    }
    Err(LoraError::UnrecognizedTensor {
        key: key.to_string(),
    })
}

/// Reads a 2-D tensor as f32, refusing other ranks, unknown dtypes and non-finite values.
fn read_matrix(key: &str, view: &safetensors::tensor::TensorView<'_>) -> Result<Array2<f32>> {
    let shape = view.shape().to_vec();
    if shape.len() != 2 {
        return Err(LoraError::ShapeMismatch {
            what: format!("tensor {key}"),
            expected: "a 2-D matrix".into(),
            found: shape,
        });
    }
    let bytes = view.data();
    let values: Vec<f32> =
        lm_core::io::safetensors::decode_f32(view.dtype(), bytes).ok_or_else(|| {
            LoraError::UnsupportedDtype {
                key: key.to_string(),
                dtype: format!("{:?}", view.dtype()),
            }
        })?;
    if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(LoraError::NonFinite {
            key: key.to_string(),
            value,
            index,
        });
    }
    Array2::from_shape_vec((shape[0], shape[1]), values).map_err(|_| LoraError::ShapeMismatch {
        what: format!("tensor {key}"),
        expected: "data length equal to the product of the shape".into(),
        found: shape,
    })
}

/// How [`LoraAdapter::load_with`] treats tensors the config does not target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdapterLoadOptions {
    /// Refuse ([`LoraError::UntargetedTensors`]) instead of dropping them with a warning.
    pub strict: bool,
}

/// What loading left out or found without effect (each also logged with `tracing::warn!`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Modules whose factors are in the file but which the config (`target_modules`,
    /// `exclude_modules`, `layers_to_transform`) does not target: dropped, as PEFT ignores them.
    pub untargeted: Vec<String>,
    /// `rank_pattern` / `alpha_pattern` keys, as `(field, key)`, that match no module of the adapter.
    pub unmatched_pattern_keys: Vec<(String, String)>,
}

impl LoraAdapter {
    /// Loads a PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`).
    ///
    /// The config decides, as in PEFT: factors of modules it does not target are dropped with a
    /// warning (see [`load_with`](Self::load_with) for the report and a strict mode), and an adapter
    /// left with no module is refused ([`LoraError::EmptyAdapter`]).
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with(dir, AdapterLoadOptions::default()).map(|(a, _)| a)
    }

    /// [`load`](Self::load) with options, also returning what was dropped or had no effect.
    pub fn load_with(dir: &Path, opts: AdapterLoadOptions) -> Result<(Self, LoadReport)> {
        let config = AdapterConfig::from_file(&dir.join(CONFIG_FILE))?;
        let weights = dir.join(WEIGHTS_FILE);
        let file = std::fs::File::open(&weights).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                let pickle = dir.join("adapter_model.bin");
                if pickle.is_file() {
                    LoraError::PickleWeights { path: pickle }
                } else {
                    LoraError::MissingFile {
                        path: weights.clone(),
                    }
                }
            } else {
                LoraError::io(&weights, e)
            }
        })?;
        // SAFETY: the map is read-only and dropped before returning; a concurrent writer truncating
        // the file is the only hazard and is outside what this loader promises.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| LoraError::io(&weights, e))?;
        Self::from_safetensors_bytes_with(config, &map, &weights, opts)
    }

    /// Builds an adapter from a config and the bytes of a safetensors file (`path` for errors only),
    /// dropping untargeted factors with a warning (see [`load`](Self::load)).
    pub fn from_safetensors_bytes(
        config: AdapterConfig,
        bytes: &[u8],
        path: &Path,
    ) -> Result<Self> {
        Self::from_safetensors_bytes_with(config, bytes, path, AdapterLoadOptions::default())
            .map(|(a, _)| a)
    }

    /// [`from_safetensors_bytes`](Self::from_safetensors_bytes) with options and the report.
    pub fn from_safetensors_bytes_with(
        config: AdapterConfig,
        bytes: &[u8],
        path: &Path,
        opts: AdapterLoadOptions,
    ) -> Result<(Self, LoadReport)> {
        config.check_supported()?;
        let matcher = config.matcher()?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| LoraError::InvalidSafetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        // Without target_modules the config cannot decide (PEFT would infer them from the model
        // type), so every module with factors is kept.
        let decides = config.target_modules.is_some();
        let mut untargeted: BTreeSet<String> = BTreeSet::new();
        let mut a_map: BTreeMap<String, Array2<f32>> = BTreeMap::new();
        let mut b_map: BTreeMap<String, Array2<f32>> = BTreeMap::new();
        let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
        names.sort();
        for key in &names {
            let (module, factor) = parse_key(key)?;
            if decides && !matcher.is_target(&module) {
                untargeted.insert(module);
                continue;
            }
            let view = st.tensor(key).map_err(|e| LoraError::InvalidSafetensors {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            let m = read_matrix(key, &view)?;
            let map = if factor == Factor::A {
                &mut a_map
            } else {
                &mut b_map
            };
            if map.insert(module.clone(), m).is_some() {
                return Err(LoraError::UnrecognizedTensor {
                    key: format!(
                        "{key} (a second {factor:?} factor for {module}: several adapter names in one file)"
                    ),
                });
            }
        }
        if let Some(m) = b_map.keys().find(|m| !a_map.contains_key(*m)) {
            return Err(LoraError::MissingFactor {
                module: m.clone(),
                present: "lora_B",
                missing: "lora_A",
            });
        }
        let mut modules = BTreeMap::new();
        for (name, a) in a_map {
            let Some(b) = b_map.remove(&name) else {
                return Err(LoraError::MissingFactor {
                    module: name,
                    present: "lora_A",
                    missing: "lora_B",
                });
            };
            if a.nrows() == 0 || b.ncols() == 0 {
                return Err(LoraError::ZeroRank { module: name });
            }
            if a.nrows() != b.ncols() {
                return Err(LoraError::ShapeMismatch {
                    what: format!("{name}.lora_B"),
                    expected: format!("[d_out, {}] (r from lora_A [r, d_in])", a.nrows()),
                    found: b.shape().to_vec(),
                });
            }
            let s = matcher.scaling(&name);
            if s.rank != a.nrows() {
                return Err(LoraError::RankMismatch {
                    module: name,
                    config_rank: s.rank,
                    tensor_rank: a.nrows(),
                });
            }
            modules.insert(
                name,
                LoraModule {
                    a,
                    b,
                    alpha: s.alpha,
                    scale: s.scale as f32,
                },
            );
        }
        let untargeted: Vec<String> = untargeted.into_iter().collect();
        if !untargeted.is_empty() {
            if opts.strict {
                return Err(LoraError::UntargetedTensors {
                    path: path.to_path_buf(),
                    modules: untargeted,
                });
            }
            tracing::warn!(
                adapter = %path.display(),
                count = untargeted.len(),
                modules = ?untargeted,
                "ignoring LoRA factors of modules the adapter config does not target \
                 (target_modules / layers_to_transform / exclude_modules); PEFT ignores them too"
            );
        }
        if modules.is_empty() {
            let detail = if untargeted.is_empty() {
                "the file holds no lora_A / lora_B tensors".to_string()
            } else {
                format!(
                    "all {} module(s) with factors are outside target_modules / layers_to_transform \
                     (first: {})",
                    untargeted.len(),
                    untargeted[0]
                )
            };
            return Err(LoraError::EmptyAdapter {
                path: path.to_path_buf(),
                detail,
            });
        }
        let unmatched: Vec<(String, String)> = matcher
            .unmatched_pattern_keys(modules.keys().map(String::as_str))
            .into_iter()
            .map(|(field, key)| (field.to_string(), key))
            .collect();
        for (field, key) in &unmatched {
            tracing::warn!(
                adapter = %path.display(),
                "{field} key {key:?} does not match any module of the adapter, so it has no effect \
                 (PEFT matches keys as ^(.*\\.)?(key)$ against full module names)"
            );
        }
        let report = LoadReport {
            untargeted,
            unmatched_pattern_keys: unmatched,
        };
        Ok((LoraAdapter { config, modules }, report))
    }

    /// The largest rank over modules (0 for an empty adapter).
    pub fn max_rank(&self) -> usize {
        self.modules
            .values()
            .map(LoraModule::rank)
            .max()
            .unwrap_or(0)
    }

    /// Total number of stored parameters.
    pub fn num_params(&self) -> usize {
        self.modules.values().map(LoraModule::num_params).sum()
    }

    /// The distinct module suffixes targeted (`q_proj`, `down_proj`, ...).
    pub fn target_suffixes(&self) -> BTreeSet<String> {
        self.modules
            .keys()
            .map(|k| k.rsplit('.').next().unwrap_or(k).to_string())
            .collect()
    }

    /// Compares the adapter with a base model: which modules apply, which targeted base modules have
    /// no tensors (`missing`, PEFT leaves them at zero), which tensors the config does not target
    /// (`unused`, PEFT would ignore them), and refusals (unknown module, shape mismatch).
    pub fn diagnose(&self, base: &BaseModelSpec) -> Result<ValidationReport> {
        let matcher = self.config.matcher()?;
        let mut report = ValidationReport::default();
        for (name, m) in &self.modules {
            let Some((d_in, d_out)) = base.shape(name) else {
                report
                    .problems
                    .push(ValidationProblem::UnknownModule(name.clone()));
                continue;
            };
            if (m.d_in(), m.d_out()) != (d_in, d_out) {
                report.problems.push(ValidationProblem::Shape {
                    module: name.clone(),
                    expected: (d_in, d_out),
                    found: (m.d_in(), m.d_out()),
                });
                continue;
            }
            if matcher.is_target(name) {
                report.applied.push(name.clone());
            } else {
                report.unused.push(name.clone());
            }
        }
        for name in base.modules.keys() {
            if matcher.is_target(name) && !self.modules.contains_key(name) {
                report.missing.push(name.clone());
            }
        }
        Ok(report)
    }

    /// [`diagnose`](Self::diagnose), turning the first problem into an error.
    pub fn validate(&self, base: &BaseModelSpec) -> Result<ValidationReport> {
        let report = self.diagnose(base)?;
        match report.problems.first() {
            None => Ok(report),
            Some(ValidationProblem::UnknownModule(m)) => Err(LoraError::UnknownTargetModule {
                module: m.clone(),
                base: base.name.clone(),
            }),
            Some(ValidationProblem::Shape {
                module,
                expected,
                found,
            }) => Err(LoraError::ShapeMismatch {
                what: format!("{module} against base model {}", base.name),
                expected: format!("(d_in, d_out) = {expected:?}"),
                found: vec![found.0, found.1],
            }),
        }
    }
}

/// A problem found while validating an adapter against a base model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationProblem {
    /// The module does not exist in the base model.
    UnknownModule(String),
    /// The module exists with another shape.
    Shape {
        /// The module.
        module: String,
        /// `(d_in, d_out)` in the base.
        expected: (usize, usize),
        /// `(d_in, d_out)` of the adapter.
        found: (usize, usize),
    },
}

/// What [`LoraAdapter::diagnose`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationReport {
    /// Modules that will be adapted.
    pub applied: Vec<String>,
    /// Base modules the config targets but that have no tensors (left unadapted).
    pub missing: Vec<String>,
    /// Adapter modules the config does not target (PEFT would ignore them).
    pub unused: Vec<String>,
    /// Refusals: unknown modules and shape mismatches.
    pub problems: Vec<ValidationProblem>,
}

/// The directory of an adapter's files: `(config, weights)` paths.
pub fn adapter_files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(CONFIG_FILE), dir.join(WEIGHTS_FILE))
}

/// Writes a view as little-endian f32 bytes (row-major).
pub(crate) fn f32_bytes(m: ArrayView2<'_, f32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.len() * 4);
    for v in m.iter() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parsing() {
        let (m, f) =
            parse_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").unwrap();
        assert_eq!(
            (m.as_str(), f),
            ("model.layers.0.self_attn.q_proj", Factor::A)
        );
        let (m, f) =
            parse_key("base_model.model.model.layers.0.mlp.up_proj.lora_B.default.weight").unwrap();
        assert_eq!((m.as_str(), f), ("model.layers.0.mlp.up_proj", Factor::B));
        assert!(matches!(
            parse_key("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"),
            Err(LoraError::DoraUnsupported { .. })
        ));
        assert!(matches!(
            parse_key("base_model.model.model.embed_tokens.lora_embedding_A"),
            Err(LoraError::EmbeddingAdapter { .. })
        ));
        assert!(matches!(
            parse_key("base_model.model.lm_head.lora_A.weight"),
            Err(LoraError::EmbeddingAdapter { .. })
        ));
        assert!(matches!(
            parse_key("base_model.model.score.modules_to_save.default.weight"),
            Err(LoraError::ModulesToSaveUnsupported { .. })
        ));
        assert!(matches!(
            parse_key("base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias"),
            Err(LoraError::BiasUnsupported { .. })
        ));
        assert!(matches!(
            parse_key("base_model.model.model.layers.0.self_attn.q_proj.bias"),
            Err(LoraError::BiasUnsupported { .. })
        ));
        assert!(matches!(
            parse_key("something.else"),
            Err(LoraError::UnrecognizedTensor { .. })
        ));
        assert!(matches!(
            parse_key("base_model.model.x.lora_A.a.b.weight"),
            Err(LoraError::UnrecognizedTensor { .. })
        ));
    }

    #[test]
    fn module_delta_is_scaled_product() {
        let a = Array2::from_shape_fn((2, 3), |(i, j)| (i + 2 * j) as f32);
        let b = Array2::from_shape_fn((4, 2), |(i, j)| i as f32 - j as f32);
        let m = LoraModule::new(a.clone(), b.clone(), 4.0, 2.0).unwrap();
        let d = m.delta();
        assert_eq!(d.shape(), &[4, 3]);
        assert_eq!(d[[3, 2]], 2.0 * (3.0 * 4.0 + 2.0 * 5.0));
        assert!(LoraModule::new(a, b.t().to_owned(), 1.0, 1.0).is_err());
    }
}
