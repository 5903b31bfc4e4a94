//! Writing PEFT adapter directories (`adapter_config.json` + `adapter_model.safetensors`, f32, PEFT
//! key names without the adapter name) that the real `peft` library loads unchanged, and building a
//! config that describes an arbitrary set of modules (per-module ranks and scales through
//! `rank_pattern` / `alpha_pattern`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use atomic_fs::StagedDir;
use safetensors::Dtype;
use safetensors::tensor::TensorView;

use crate::adapter::{CONFIG_FILE, KEY_PREFIX, LoraAdapter, LoraModule, WEIGHTS_FILE, f32_bytes};
use crate::config::{AdapterConfig, PatternMap, TargetModules};
use crate::error::{LoraError, Result};

/// The most frequent value (ties: the smallest, for determinism).
fn mode<T: Copy + PartialOrd>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut v: Vec<T> = values.collect();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let mut best: Option<(T, usize)> = None;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j] == v[i] {
            j += 1;
        }
        if best.is_none_or(|(_, n)| j - i > n) {
            best = Some((v[i], j - i));
        }
        i = j;
    }
    best.map(|(x, _)| x)
}

/// A config that PEFT reads back into exactly these modules, ranks and scales.
///
/// `target_modules` lists the full module names (PEFT matches them exactly); `use_rslora` is off and
/// each module's alpha is `scale · r`; the most common rank and alpha become `r` / `lora_alpha`, the
/// others go to `rank_pattern` / `alpha_pattern` keyed by the escaped full module name. Other fields
/// (task type, base model) come from `template`.
pub fn config_for_modules(
    modules: &BTreeMap<String, LoraModule>,
    template: &AdapterConfig,
) -> AdapterConfig {
    let r = mode(modules.values().map(LoraModule::rank)).unwrap_or(template.r);
    let alpha_of = |m: &LoraModule| f64::from(m.scale) * m.rank() as f64;
    let alpha = mode(modules.values().map(alpha_of)).unwrap_or(template.lora_alpha);
    let mut rank_pattern = Vec::new();
    let mut alpha_pattern = Vec::new();
    for (name, m) in modules {
        let key = regex::escape(name);
        if m.rank() != r {
            rank_pattern.push((key.clone(), m.rank()));
        }
        if alpha_of(m) != alpha {
            alpha_pattern.push((key, alpha_of(m)));
        }
    }
    AdapterConfig {
        r,
        lora_alpha: alpha,
        use_rslora: false,
        target_modules: Some(TargetModules::List(modules.keys().cloned().collect())),
        exclude_modules: None,
        layers_to_transform: None,
        layers_pattern: None,
        rank_pattern: PatternMap(rank_pattern),
        alpha_pattern: PatternMap(alpha_pattern),
        use_dora: false,
        lora_bias: false,
        modules_to_save: None,
        bias: crate::config::Bias::None,
        fan_in_fan_out: template.fan_in_fan_out,
        task_type: template
            .task_type
            .clone()
            .or_else(|| Some("CAUSAL_LM".into())),
        base_model_name_or_path: template.base_model_name_or_path.clone(),
        revision: template.revision.clone(),
        init_lora_weights: serde_json::Value::Bool(true),
        ..AdapterConfig::default()
    }
}

impl LoraAdapter {
    /// Checks that every module is targeted by the config with the rank and scale it has, so that a
    /// PEFT load of the written files reproduces this adapter.
    pub fn check_consistent(&self) -> Result<()> {
        self.config.check_supported()?;
        let matcher = self.config.matcher()?;
        for (name, m) in &self.modules {
            if !matcher.is_target(name) {
                return Err(LoraError::Inconsistent {
                    module: name.clone(),
                    message: "the config's target_modules do not select it".into(),
                });
            }
            let s = matcher.scaling(name);
            if s.rank != m.rank() {
                return Err(LoraError::Inconsistent {
                    module: name.clone(),
                    message: format!("config rank {} but factors have rank {}", s.rank, m.rank()),
                });
            }
            let tol = 1e-6 * s.scale.abs().max(1.0);
            if (s.scale - f64::from(m.scale)).abs() > tol {
                return Err(LoraError::Inconsistent {
                    module: name.clone(),
                    message: format!("config scale {} but module scale {}", s.scale, m.scale),
                });
            }
        }
        Ok(())
    }

    /// Replaces the config by one describing the modules exactly ([`config_for_modules`]).
    pub fn with_describing_config(mut self) -> Self {
        self.config = config_for_modules(&self.modules, &self.config);
        self
    }

    /// Writes the adapter as a PEFT directory: f32 tensors under
    /// `base_model.model.<module>.lora_{A,B}.weight`, and the config. Refuses an adapter that its own
    /// config does not describe ([`check_consistent`](Self::check_consistent)).
    ///
    /// Atomic: the files are written into a hidden sibling of `dir` that then replaces `dir` as a
    /// whole ([`StagedDir`]), so a crash leaves either the old adapter or the new one; anything
    /// else that was in `dir` is gone afterwards. Missing parent directories are created.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.check_consistent()?;
        let staged = StagedDir::replacing(dir)?;
        let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> =
            Vec::with_capacity(2 * self.modules.len());
        for (name, m) in &self.modules {
            buffers.push((
                format!("{KEY_PREFIX}{name}.lora_A.weight"),
                m.a.shape().to_vec(),
                f32_bytes(m.a.view()),
            ));
            buffers.push((
                format!("{KEY_PREFIX}{name}.lora_B.weight"),
                m.b.shape().to_vec(),
                f32_bytes(m.b.view()),
            ));
        }
        let views = buffers
            .iter()
            .map(|(k, shape, data)| {
                TensorView::new(Dtype::F32, shape.clone(), data)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| LoraError::Serialize {
                        what: k.clone(),
                        message: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        let bytes =
            safetensors::serialize(views, Some(meta)).map_err(|e| LoraError::Serialize {
                what: WEIGHTS_FILE.into(),
                message: e.to_string(),
            })?;
        let wpath = staged.path().join(WEIGHTS_FILE);
        std::fs::write(&wpath, bytes).map_err(|e| LoraError::io(&wpath, e))?;
        let cpath = staged.path().join(CONFIG_FILE);
        std::fs::write(&cpath, self.config.to_json_string()?)
            .map_err(|e| LoraError::io(&cpath, e))?;
        staged.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn module(r: usize, d_in: usize, d_out: usize, scale: f32, seed: f32) -> LoraModule {
        LoraModule::new(
            Array2::from_shape_fn((r, d_in), |(i, j)| ((i * 7 + j) as f32 * 0.37 + seed).sin()),
            Array2::from_shape_fn((d_out, r), |(i, j)| {
                ((i * 3 + j) as f32 * 0.11 - seed).cos()
            }),
            f64::from(scale) * r as f64,
            scale,
        )
        .unwrap()
    }

    #[test]
    fn describing_config_round_trips_through_disk() {
        let mut modules = BTreeMap::new();
        modules.insert(
            "model.layers.0.self_attn.q_proj".into(),
            module(4, 8, 8, 2.0, 0.1),
        );
        modules.insert(
            "model.layers.1.self_attn.q_proj".into(),
            module(4, 8, 8, 2.0, 0.2),
        );
        modules.insert(
            "model.layers.1.mlp.down_proj".into(),
            module(2, 16, 8, 0.5, 0.3),
        );
        let ad = LoraAdapter {
            config: AdapterConfig::default(),
            modules,
        }
        .with_describing_config();
        assert_eq!(ad.config.r, 4);
        assert_eq!(ad.config.rank_pattern.0.len(), 1);
        let dir = tempfile::tempdir().unwrap();
        ad.save(dir.path()).unwrap();
        let back = LoraAdapter::load(dir.path()).unwrap();
        assert_eq!(back.modules, ad.modules);
        assert_eq!(back.config, ad.config);
    }

    #[test]
    fn refuses_to_write_what_its_config_does_not_describe() {
        let mut modules = BTreeMap::new();
        modules.insert(
            "model.layers.0.self_attn.q_proj".into(),
            module(4, 8, 8, 2.0, 0.1),
        );
        let mut ad = LoraAdapter {
            config: AdapterConfig::default(),
            modules,
        }
        .with_describing_config();
        ad.config.r = 3;
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            ad.save(dir.path()),
            Err(LoraError::Inconsistent { .. })
        ));
        ad.config.r = 4;
        ad.config.lora_alpha = 1.0;
        assert!(matches!(
            ad.save(dir.path()),
            Err(LoraError::Inconsistent { .. })
        ));
    }

    #[test]
    fn save_replaces_the_directory_as_a_whole() {
        let mut modules = BTreeMap::new();
        modules.insert(
            "model.layers.0.self_attn.q_proj".into(),
            module(4, 8, 8, 2.0, 0.1),
        );
        let ad = LoraAdapter {
            config: AdapterConfig::default(),
            modules,
        }
        .with_describing_config();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("adapter");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("stale.bin"), b"old").unwrap();
        ad.save(&dir).unwrap();
        assert!(!dir.join("stale.bin").exists());
        assert_eq!(LoraAdapter::load(&dir).unwrap().modules, ad.modules);
        let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(
            left.len(),
            1,
            "no staging directory left beside the adapter"
        );
        // A refused save leaves the previous adapter in place.
        let mut bad = ad.clone();
        bad.config.r = 3;
        assert!(bad.save(&dir).is_err());
        assert_eq!(LoraAdapter::load(&dir).unwrap().modules, ad.modules);
    }
}
