//! `adapter_config.json`: the PEFT `LoraConfig` fields we read, with PEFT's defaults and matching rules.
//!
//! Unknown keys are kept in [`AdapterConfig::extra`] (so files round-trip) and logged, never rejected:
//! older PEFT versions wrote keys newer ones dropped. Matching follows PEFT 0.21:
//! - `target_modules` as a list: a module is targeted when its name equals an entry or ends with
//!   `"." + entry`; as a string: the whole name must match the regex (`re.fullmatch`); `"all-linear"`
//!   targets every linear layer except the output head.
//! - `layers_to_transform` restricts list targets to the given layer indices (the first numbered path
//!   segment, or the one after `layers_pattern`).
//! - `rank_pattern` / `alpha_pattern`: the first key (in file order) for which
//!   `^(.*\.)?(key)$` matches the module name wins; otherwise `r` / `lora_alpha`.
//! - The effective scale is `alpha / r`, or `alpha / sqrt(r)` with `use_rslora`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use regex::Regex;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{LoraError, Result};

/// `target_modules` (or `exclude_modules`): a list of name suffixes or one regex string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Names or name suffixes (`"q_proj"` matches `model.layers.0.self_attn.q_proj`).
    List(Vec<String>),
    /// A regex the whole module name must match, or the special value `"all-linear"`.
    Regex(String),
}

/// `layers_to_transform`: one layer index or a list of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LayersToTransform {
    /// A single layer index.
    One(usize),
    /// Several layer indices.
    Many(Vec<usize>),
}

impl LayersToTransform {
    /// Whether `layer` is selected.
    pub fn contains(&self, layer: usize) -> bool {
        match self {
            LayersToTransform::One(i) => *i == layer,
            LayersToTransform::Many(v) => v.contains(&layer),
        }
    }

    /// Whether the selection is empty (an empty list means "all layers" in PEFT).
    pub fn is_empty(&self) -> bool {
        matches!(self, LayersToTransform::Many(v) if v.is_empty())
    }
}

/// `layers_pattern`: one name or a list of names of the layer container (`"layers"`, `"h"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One name.
    One(String),
    /// Several names.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The names as a slice-like list.
    pub fn names(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// `bias`: which biases were trained alongside the adapter. Only `none` can be loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bias {
    /// No bias trained (the only supported value).
    #[default]
    None,
    /// All biases trained.
    All,
    /// Only the biases of LoRA layers trained.
    LoraOnly,
}

/// An ordered `{regex: value}` map (`rank_pattern`, `alpha_pattern`). Order matters: PEFT takes the
/// first matching key in file order, so this is a list of pairs, not a hash map. `null` reads as empty.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PatternMap<T>(pub Vec<(String, T)>);

impl<T> PatternMap<T> {
    /// Whether there are no patterns.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: Serialize> Serialize for PatternMap<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for PatternMap<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = PatternMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from module regex to value, or null")
            }
            fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
                Ok(PatternMap(Vec::new()))
            }
            fn visit_none<E>(self) -> std::result::Result<Self::Value, E> {
                Ok(PatternMap(Vec::new()))
            }
            fn visit_some<D2: Deserializer<'de>>(
                self,
                d: D2,
            ) -> std::result::Result<Self::Value, D2::Error> {
                d.deserialize_any(self)
            }
            fn visit_map<M: MapAccess<'de>>(
                self,
                mut m: M,
            ) -> std::result::Result<Self::Value, M::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(PatternMap(out))
            }
        }
        d.deserialize_option(V(std::marker::PhantomData))
    }
}

/// Default `r` in PEFT.
pub fn default_r() -> usize {
    8
}
/// Default `lora_alpha` in PEFT.
pub fn default_lora_alpha() -> f64 {
    8.0
}
/// Default `peft_type`.
pub fn default_peft_type() -> String {
    "LORA".to_string()
}
/// Default `init_lora_weights` (`true`).
pub fn default_init_lora_weights() -> serde_json::Value {
    serde_json::Value::Bool(true)
}
/// Default `inference_mode` (`true`, as saved adapters have it).
pub fn default_inference_mode() -> bool {
    true
}

/// The contents of `adapter_config.json` for a LoRA adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// Adapter family; must be `"LORA"`.
    #[serde(default = "default_peft_type")]
    pub peft_type: String,
    /// Task type (`"CAUSAL_LM"` for decoder models).
    #[serde(default)]
    pub task_type: Option<String>,
    /// The base model the adapter was trained on.
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Base model revision.
    #[serde(default)]
    pub revision: Option<String>,
    /// Whether the adapter was saved for inference.
    #[serde(default = "default_inference_mode")]
    pub inference_mode: bool,
    /// Default rank.
    #[serde(default = "default_r")]
    pub r: usize,
    /// Default alpha.
    #[serde(default = "default_lora_alpha")]
    pub lora_alpha: f64,
    /// Dropout during training (ignored at inference).
    #[serde(default)]
    pub lora_dropout: f64,
    /// Which modules carry the adapter.
    #[serde(default)]
    pub target_modules: Option<TargetModules>,
    /// Modules excluded from `target_modules`.
    #[serde(default)]
    pub exclude_modules: Option<TargetModules>,
    /// Whether the base layer stores `[in, out]` (GPT-2 `Conv1D`). The layers adapted here are
    /// linears, for which PEFT resets it to false with a warning; so does
    /// [`AdapterConfig::check_supported`] (the factors are read as for any linear).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Which biases were trained; only `none` is supported.
    #[serde(default)]
    pub bias: Bias,
    /// rsLoRA scaling `alpha / sqrt(r)` instead of `alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// Whole modules saved next to the adapter; refused.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// How the factors were initialised (bool or a method name).
    #[serde(default = "default_init_lora_weights")]
    pub init_lora_weights: serde_json::Value,
    /// Only these layer indices carry the adapter.
    #[serde(default)]
    pub layers_to_transform: Option<LayersToTransform>,
    /// Name of the layer container used to find the layer index.
    #[serde(default)]
    pub layers_pattern: Option<OneOrMany>,
    /// Per-module rank overrides (ordered, first match wins).
    #[serde(default)]
    pub rank_pattern: PatternMap<usize>,
    /// Per-module alpha overrides (ordered, first match wins).
    #[serde(default)]
    pub alpha_pattern: PatternMap<f64>,
    /// DoRA; refused.
    #[serde(default)]
    pub use_dora: bool,
    /// Bias on the lora_B layer; refused.
    #[serde(default)]
    pub lora_bias: bool,
    /// Every other key, kept verbatim so the file round-trips.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Default for AdapterConfig {
    fn default() -> Self {
        AdapterConfig {
            peft_type: default_peft_type(),
            task_type: Some("CAUSAL_LM".to_string()),
            base_model_name_or_path: None,
            revision: None,
            inference_mode: default_inference_mode(),
            r: default_r(),
            lora_alpha: default_lora_alpha(),
            lora_dropout: 0.0,
            target_modules: None,
            exclude_modules: None,
            fan_in_fan_out: false,
            bias: Bias::None,
            use_rslora: false,
            modules_to_save: None,
            init_lora_weights: default_init_lora_weights(),
            layers_to_transform: None,
            layers_pattern: None,
            rank_pattern: PatternMap::default(),
            alpha_pattern: PatternMap::default(),
            use_dora: false,
            lora_bias: false,
            extra: BTreeMap::new(),
        }
    }
}

impl AdapterConfig {
    /// Parses the JSON text of an `adapter_config.json`; `path` is only used in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let cfg: AdapterConfig =
            serde_json::from_str(text).map_err(|e| LoraError::InvalidConfig {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        if !cfg.extra.is_empty() {
            tracing::debug!(
                keys = ?cfg.extra.keys().collect::<Vec<_>>(),
                "adapter_config.json has keys lora-zoo does not interpret; kept verbatim"
            );
        }
        Ok(cfg)
    }

    /// Reads and parses `path` (an `adapter_config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                LoraError::MissingFile {
                    path: path.to_path_buf(),
                }
            } else {
                LoraError::io(path, e)
            }
        })?;
        Self::from_json_str(&text, path)
    }

    /// Pretty JSON text of the config.
    pub fn to_json_string(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| LoraError::Serialize {
            what: "adapter_config.json".into(),
            message: e.to_string(),
        })
    }

    /// Refuses what lora-zoo cannot load faithfully: non-LoRA types, DoRA, `modules_to_save`,
    /// trained biases and `r = 0`.
    pub fn check_supported(&self) -> Result<()> {
        if !self.peft_type.eq_ignore_ascii_case("LORA") {
            return Err(LoraError::NotLora {
                found: self.peft_type.clone(),
            });
        }
        if self.use_dora {
            return Err(LoraError::DoraUnsupported {
                detail: "use_dora = true in adapter_config.json".into(),
            });
        }
        if let Some(m) = &self.modules_to_save
            && !m.is_empty()
        {
            return Err(LoraError::ModulesToSaveUnsupported { modules: m.clone() });
        }
        if self.bias != Bias::None {
            return Err(LoraError::BiasUnsupported {
                found: format!("bias = {:?}", self.bias),
            });
        }
        if self.lora_bias {
            return Err(LoraError::BiasUnsupported {
                found: "lora_bias = true".into(),
            });
        }
        if self.fan_in_fan_out {
            // PEFT does the same for torch.nn.Linear (fan_in_fan_out is for GPT-2's Conv1D).
            tracing::warn!(
                "fan_in_fan_out = true is for Conv1D layers (GPT-2); the adapted layers are linears, so it is ignored, as PEFT does"
            );
        }
        if self.r == 0 {
            return Err(LoraError::ZeroRank {
                module: "config (r)".into(),
            });
        }
        if let Some((k, _)) = self.rank_pattern.0.iter().find(|(_, r)| *r == 0) {
            return Err(LoraError::ZeroRank {
                module: format!("config (rank_pattern {k:?})"),
            });
        }
        if let serde_json::Value::String(init) = &self.init_lora_weights {
            if rewrites_base(init) {
                return Err(LoraError::ResidualBaseInit { init: init.clone() });
            }
            if !PLAIN_BASE_INITS.contains(&init.to_ascii_lowercase().as_str()) {
                tracing::warn!(
                    init_lora_weights = %init,
                    "unknown init_lora_weights; assuming the adapter applies to the unmodified base model"
                );
            }
        }
        Ok(())
    }

    /// Compiles the config's patterns into a [`ModuleMatcher`].
    pub fn matcher(&self) -> Result<ModuleMatcher> {
        ModuleMatcher::new(self)
    }
}

/// `init_lora_weights` strings whose adapters apply to the unmodified base (the initial `B·A` is zero
/// or the base is untouched): `gaussian`, `eva`, `orthogonal`. `true` / `false` are booleans.
pub const PLAIN_BASE_INITS: [&str; 3] = ["gaussian", "eva", "orthogonal"];

/// Whether an `init_lora_weights` string names an initialisation that subtracts the initial adapter
/// from the base weights (PiSSA and `pissa_niter_<n>`, OLoRA, CorDA, LoftQ): such adapters, saved
/// without PEFT's conversion, are only valid on that residual base.
pub fn rewrites_base(init: &str) -> bool {
    let init = init.to_ascii_lowercase();
    matches!(init.as_str(), "pissa" | "olora" | "corda" | "loftq")
        || init.starts_with("pissa_niter_")
}

/// The effective rank, alpha and scale of one module.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModuleScaling {
    /// Rank (from `rank_pattern` or `r`).
    pub rank: usize,
    /// Alpha (from `alpha_pattern` or `lora_alpha`).
    pub alpha: f64,
    /// `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    pub scale: f64,
}

pub use lm_core::model::lora_scale;

fn compile(field: &'static str, pattern: &str, src: &str) -> Result<Regex> {
    Regex::new(src).map_err(|e| LoraError::BadPattern {
        field,
        pattern: pattern.to_string(),
        message: regex_message(&e),
    })
}

/// The regex compiler's message on one line: a syntax error's Display draws the pattern and a
/// caret over several lines, whose last line (`error: unclosed group`) is the reason.
fn regex_message(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    last.trim().trim_start_matches("error: ").to_string()
}

/// Target selection and per-module rank/alpha of a config, with its regexes compiled once.
#[derive(Debug, Clone)]
pub struct ModuleMatcher {
    targets: Option<TargetSel>,
    excludes: Option<TargetSel>,
    layers: Option<LayersToTransform>,
    layer_regexes: Vec<Regex>,
    rank_patterns: Vec<(String, Regex, usize)>,
    alpha_patterns: Vec<(String, Regex, f64)>,
    r: usize,
    alpha: f64,
    use_rslora: bool,
}

#[derive(Debug, Clone)]
enum TargetSel {
    List(Vec<String>),
    Regex(Regex),
    AllLinear,
}

impl TargetSel {
    fn new(field: &'static str, t: &TargetModules) -> Result<Self> {
        Ok(match t {
            TargetModules::List(v) => TargetSel::List(v.clone()),
            TargetModules::Regex(s) if s == "all-linear" => TargetSel::AllLinear,
            TargetModules::Regex(s) => TargetSel::Regex(compile(field, s, &format!("^(?:{s})$"))?),
        })
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            // PEFT's list rule, written once in lm-core (layers are checked by the caller,
            // which knows `layers_pattern`).
            TargetSel::List(v) => lm_core::model::TargetRule {
                targets: v,
                layers: None,
            }
            .matches(name),
            TargetSel::Regex(r) => r.is_match(name),
            TargetSel::AllLinear => !is_output_or_embedding(name),
        }
    }
}

/// Whether a module name is the token embedding or the output head (never adaptable here).
pub fn is_output_or_embedding(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    matches!(
        last,
        "lm_head" | "embed_tokens" | "wte" | "embed_out" | "output" | "token_embd"
    )
}

impl ModuleMatcher {
    fn new(cfg: &AdapterConfig) -> Result<Self> {
        let targets = cfg
            .target_modules
            .as_ref()
            .map(|t| TargetSel::new("target_modules", t))
            .transpose()?;
        let excludes = cfg
            .exclude_modules
            .as_ref()
            .map(|t| TargetSel::new("exclude_modules", t))
            .transpose()?;
        let layer_regexes = match &cfg.layers_pattern {
            Some(p) if !p.names().is_empty() => p
                .names()
                .into_iter()
                .map(|n| {
                    compile(
                        "layers_pattern",
                        n,
                        &format!(r"^(?:.*?\.)??(?:{n})\.(\d+)\."),
                    )
                })
                .collect::<Result<Vec<_>>>()?,
            _ => vec![compile(
                "layers_pattern",
                "<default>",
                r"^.*?\.[^.]*\.(\d+)\.",
            )?],
        };
        let rank_patterns = cfg
            .rank_pattern
            .0
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    compile("rank_pattern", k, &format!(r"^(?:.*\.)?(?:{k})$"))?,
                    *v,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let alpha_patterns = cfg
            .alpha_pattern
            .0
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    compile("alpha_pattern", k, &format!(r"^(?:.*\.)?(?:{k})$"))?,
                    *v,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ModuleMatcher {
            targets,
            excludes,
            layers: cfg.layers_to_transform.clone().filter(|l| !l.is_empty()),
            layer_regexes,
            rank_patterns,
            alpha_patterns,
            r: cfg.r,
            alpha: cfg.lora_alpha,
            use_rslora: cfg.use_rslora,
        })
    }

    /// The layer index of a module name, found the way PEFT does (first numbered segment, or the
    /// number after `layers_pattern`).
    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.layer_regexes
            .iter()
            .find_map(|r| r.captures(name))
            .and_then(|c| c.get(1))
            .and_then(|m| m.as_str().parse().ok())
    }

    /// Whether PEFT would put this adapter on module `name`.
    pub fn is_target(&self, name: &str) -> bool {
        if let Some(ex) = &self.excludes
            && ex.matches(name)
        {
            return false;
        }
        let Some(t) = &self.targets else {
            return false;
        };
        let found = t.matches(name);
        // PEFT applies layers_to_transform to list targets only.
        if found
            && matches!(t, TargetSel::List(_))
            && let Some(layers) = &self.layers
        {
            return self.layer_index(name).is_some_and(|i| layers.contains(i));
        }
        found
    }

    /// The `rank_pattern` / `alpha_pattern` keys (as `(field, key)`) that match none of `modules`
    /// under PEFT's rule `^(.*\.)?(key)$`: such a key has no effect (a common mistake is an
    /// anchored short key like `"^q_proj"`, which can never match a full module name).
    pub fn unmatched_pattern_keys<'a>(
        &self,
        modules: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Vec<(&'static str, String)> {
        let rank = self
            .rank_patterns
            .iter()
            .map(|(k, re, _)| ("rank_pattern", k, re));
        let alpha = self
            .alpha_patterns
            .iter()
            .map(|(k, re, _)| ("alpha_pattern", k, re));
        rank.chain(alpha)
            .filter(|(_, _, re)| !modules.clone().into_iter().any(|m| re.is_match(m)))
            .map(|(field, k, _)| (field, k.clone()))
            .collect()
    }

    /// Effective rank, alpha and scale of module `name`.
    pub fn scaling(&self, name: &str) -> ModuleScaling {
        let rank = self
            .rank_patterns
            .iter()
            .find(|(_, re, _)| re.is_match(name))
            .map_or(self.r, |(_, _, v)| *v);
        let alpha = self
            .alpha_patterns
            .iter()
            .find(|(_, re, _)| re.is_match(name))
            .map_or(self.alpha, |(_, _, v)| *v);
        ModuleScaling {
            rank,
            alpha,
            scale: lora_scale(rank, alpha, self.use_rslora),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> AdapterConfig {
        AdapterConfig::from_json_str(s, Path::new("test.json")).unwrap()
    }

    #[test]
    fn defaults_match_peft() {
        let c = parse(r#"{"peft_type": "LORA"}"#);
        assert_eq!(c.r, 8);
        assert_eq!(c.lora_alpha, 8.0);
        assert_eq!(c.bias, Bias::None);
        assert!(!c.use_rslora && !c.use_dora && !c.fan_in_fan_out);
        assert!(c.rank_pattern.is_empty());
    }

    #[test]
    fn parses_a_real_peft_config() {
        let c = parse(
            r#"{"alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": "x/y",
            "bias": "none", "fan_in_fan_out": false, "inference_mode": true, "init_lora_weights": true,
            "layers_pattern": null, "layers_to_transform": [0, 2], "lora_alpha": 16, "lora_dropout": 0.05,
            "modules_to_save": null, "peft_type": "LORA", "r": 4, "rank_pattern": {"v_proj": 2},
            "revision": null, "target_modules": ["v_proj", "q_proj"], "task_type": "CAUSAL_LM",
            "use_dora": false, "use_rslora": true, "megatron_config": null}"#,
        );
        assert_eq!(c.r, 4);
        assert_eq!(c.lora_alpha, 16.0);
        assert!(c.use_rslora);
        assert_eq!(
            c.layers_to_transform,
            Some(LayersToTransform::Many(vec![0, 2]))
        );
        assert!(c.extra.contains_key("auto_mapping"));
        let m = c.matcher().unwrap();
        assert!(m.is_target("model.layers.0.self_attn.q_proj"));
        assert!(m.is_target("model.layers.2.self_attn.v_proj"));
        assert!(!m.is_target("model.layers.1.self_attn.q_proj"));
        assert!(!m.is_target("model.layers.0.self_attn.k_proj"));
        let s = m.scaling("model.layers.0.self_attn.v_proj");
        assert_eq!(s.rank, 2);
        assert!((s.scale - 16.0 / 2f64.sqrt()).abs() < 1e-12);
        let s = m.scaling("model.layers.0.self_attn.q_proj");
        assert_eq!((s.rank, s.scale), (4, 8.0));
    }

    #[test]
    fn layers_to_transform_accepts_an_int() {
        let c = parse(r#"{"target_modules": ["q_proj"], "layers_to_transform": 3}"#);
        let m = c.matcher().unwrap();
        assert!(m.is_target("model.layers.3.self_attn.q_proj"));
        assert!(!m.is_target("model.layers.13.self_attn.q_proj"));
    }

    #[test]
    fn regex_targets_fullmatch() {
        let c = parse(r#"{"target_modules": ".*\\.(q_proj|down_proj)"}"#);
        let m = c.matcher().unwrap();
        assert!(m.is_target("model.layers.0.self_attn.q_proj"));
        assert!(m.is_target("model.layers.7.mlp.down_proj"));
        assert!(!m.is_target("model.layers.7.mlp.down_proj.x"));
        assert!(!m.is_target("model.layers.7.mlp.up_proj"));
        let all = parse(r#"{"target_modules": "all-linear"}"#)
            .matcher()
            .unwrap();
        assert!(all.is_target("model.layers.0.mlp.up_proj"));
        assert!(!all.is_target("lm_head"));
    }

    #[test]
    fn suffix_matching_needs_a_dot_boundary() {
        let m = parse(r#"{"target_modules": ["proj"]}"#).matcher().unwrap();
        assert!(!m.is_target("model.layers.0.self_attn.q_proj"));
        assert!(m.is_target("model.proj"));
        assert!(m.is_target("proj"));
    }

    #[test]
    fn exclude_modules_wins() {
        let m = parse(
            r#"{"target_modules": ["q_proj"], "exclude_modules": ["layers.1.self_attn.q_proj"]}"#,
        )
        .matcher()
        .unwrap();
        assert!(m.is_target("model.layers.0.self_attn.q_proj"));
        assert!(!m.is_target("model.layers.1.self_attn.q_proj"));
    }

    #[test]
    fn first_matching_pattern_wins_in_file_order() {
        let c = parse(
            r#"{"r": 8, "rank_pattern": {"layers.1.self_attn.q_proj": 2, "q_proj": 4},
               "alpha_pattern": {"q_proj": 3}}"#,
        );
        assert_eq!(c.rank_pattern.0[0].0, "layers.1.self_attn.q_proj");
        let m = c.matcher().unwrap();
        assert_eq!(m.scaling("model.layers.1.self_attn.q_proj").rank, 2);
        assert_eq!(m.scaling("model.layers.11.self_attn.q_proj").rank, 4);
        assert_eq!(m.scaling("model.layers.1.self_attn.v_proj").rank, 8);
        // a pattern is a suffix with a dot boundary: "proj" is not a suffix match of "q_proj"
        let m2 = parse(r#"{"rank_pattern": {"proj": 2}}"#).matcher().unwrap();
        assert_eq!(m2.scaling("model.layers.1.self_attn.q_proj").rank, 8);
        assert!((m.scaling("model.layers.1.self_attn.q_proj").scale - 1.5).abs() < 1e-12);
    }

    #[test]
    fn refusals_are_named() {
        assert!(matches!(
            parse(r#"{"use_dora": true}"#).check_supported(),
            Err(LoraError::DoraUnsupported { .. })
        ));
        assert!(matches!(
            parse(r#"{"modules_to_save": ["score"]}"#).check_supported(),
            Err(LoraError::ModulesToSaveUnsupported { .. })
        ));
        assert!(matches!(
            parse(r#"{"bias": "lora_only"}"#).check_supported(),
            Err(LoraError::BiasUnsupported { .. })
        ));
        assert!(matches!(
            parse(r#"{"r": 0}"#).check_supported(),
            Err(LoraError::ZeroRank { .. })
        ));
        assert!(matches!(
            parse(r#"{"rank_pattern": {"q_proj": 0}}"#).check_supported(),
            Err(LoraError::ZeroRank { .. })
        ));
        assert!(matches!(
            parse(r#"{"peft_type": "IA3"}"#).check_supported(),
            Err(LoraError::NotLora { .. })
        ));
        assert!(
            parse(r#"{"modules_to_save": null}"#)
                .check_supported()
                .is_ok()
        );
        assert!(matches!(
            AdapterConfig::from_json_str("{\"r\": \"x\"}", Path::new("a")),
            Err(LoraError::InvalidConfig { .. })
        ));
        assert!(matches!(
            parse(r#"{"target_modules": "(?<=a)b"}"#).matcher(),
            Err(LoraError::BadPattern { .. })
        ));
    }

    #[test]
    fn residual_base_inits_are_named() {
        for init in ["pissa", "PiSSA", "pissa_niter_4", "olora", "corda", "loftq"] {
            assert!(rewrites_base(init), "{init}");
            let c = parse(&format!(r#"{{"init_lora_weights": "{init}"}}"#));
            assert!(matches!(
                c.check_supported(),
                Err(LoraError::ResidualBaseInit { .. })
            ));
        }
        for init in ["gaussian", "eva", "orthogonal", "pissa_like"] {
            assert!(!rewrites_base(init), "{init}");
        }
        for init in ["true", "false", r#""gaussian""#, r#""eva""#] {
            let c = parse(&format!(r#"{{"init_lora_weights": {init}}}"#));
            assert!(c.check_supported().is_ok(), "{init}");
        }
    }

    #[test]
    fn unmatched_pattern_keys_follow_the_anchored_rule() {
        let m = parse(
            r#"{"rank_pattern": {"^q_proj": 2, "^model\\.layers\\.0\\.self_attn\\.q_proj": 2, "v_proj": 4},
                "alpha_pattern": {"layers.1.self_attn.q_proj": 3, "q_proj": 5}}"#,
        )
        .matcher()
        .unwrap();
        let names = [
            "model.layers.0.self_attn.q_proj",
            "model.layers.0.self_attn.v_proj",
        ];
        assert_eq!(
            m.unmatched_pattern_keys(names),
            vec![
                ("rank_pattern", "^q_proj".to_string()),
                ("alpha_pattern", "layers.1.self_attn.q_proj".to_string()),
            ]
        );
    }

    #[test]
    fn null_patterns_read_as_empty() {
        let c = parse(r#"{"rank_pattern": null, "alpha_pattern": null}"#);
        assert!(c.rank_pattern.is_empty() && c.alpha_pattern.is_empty());
    }

    fn arb_config() -> impl Strategy<Value = AdapterConfig> {
        (
            1usize..64,
            (1u32..128).prop_map(|x| f64::from(x) / 2.0),
            any::<bool>(),
            prop::collection::vec("[a-z_]{1,8}", 0..4),
            prop::collection::vec(("[a-z_]{1,8}", 1usize..32), 0..3),
            prop::option::of(prop::collection::vec(0usize..40, 0..4)),
            prop::collection::btree_map("[a-z]{3,6}_x", 0i64..100, 0..3),
        )
            .prop_map(|(r, alpha, rs, targets, rp, layers, extra)| AdapterConfig {
                r,
                lora_alpha: alpha,
                use_rslora: rs,
                target_modules: Some(TargetModules::List(targets)),
                rank_pattern: PatternMap(rp),
                layers_to_transform: layers.map(LayersToTransform::Many),
                extra: extra.into_iter().map(|(k, v)| (k, v.into())).collect(),
                ..AdapterConfig::default()
            })
    }

    proptest! {
        #[test]
        fn config_round_trips(c in arb_config()) {
            let text = c.to_json_string().unwrap();
            let back = AdapterConfig::from_json_str(&text, Path::new("x")).unwrap();
            prop_assert_eq!(back, c);
        }

        #[test]
        fn scale_formula(r in 1usize..256, alpha in 0.1f64..512.0) {
            prop_assert!((lora_scale(r, alpha, false) * r as f64 - alpha).abs() < 1e-9 * alpha.max(1.0));
            let s = lora_scale(r, alpha, true);
            prop_assert!((s * s * r as f64 - alpha * alpha).abs() < 1e-9 * (alpha * alpha).max(1.0));
        }
    }
}
