//! Between lm-core's trainer and PEFT: a trained [`LoraWeights`] becomes a [`LoraAdapter`]
//! (and so a PEFT directory through [`LoraAdapter::save`]), and an existing adapter becomes the
//! starting point of further training (warm starts).
//!
//! lm-core keeps factors in burn's layout (`a: [d_in, r]`, `b: [r, d_out]`); PEFT stores
//! `lora_A: [r, d_in]` and `lora_B: [d_out, r]`, so each is transposed on the way.

use std::collections::BTreeMap;

use lm_core::model::Decoder;
use lm_core::train::{LoraTrainConfig, LoraWeights};
use ndarray::Array2;

use crate::adapter::{LoraAdapter, LoraModule};
use crate::config::{AdapterConfig, LayersToTransform, TargetModules};
use crate::error::{LoraError, Result};

/// The PEFT adapter of trained weights. `base_model` goes to `base_model_name_or_path`.
pub fn adapter_from_trained(
    weights: &LoraWeights,
    base_model: Option<&str>,
) -> Result<LoraAdapter> {
    let c = &weights.config;
    let r = c.r;
    let mut modules = BTreeMap::new();
    for slot in &weights.slots {
        let a = Array2::from_shape_vec((slot.d_in, r), weights.a(slot).to_vec())
            .expect("slot sizes are consistent")
            .reversed_axes()
            .as_standard_layout()
            .to_owned();
        let b = Array2::from_shape_vec((r, slot.d_out), weights.b(slot).to_vec())
            .expect("slot sizes are consistent")
            .reversed_axes()
            .as_standard_layout()
            .to_owned();
        modules.insert(
            slot.name.clone(),
            LoraModule::new(a, b, c.alpha, c.scale())?,
        );
    }
    let config = AdapterConfig {
        r,
        lora_alpha: c.alpha,
        lora_dropout: c.dropout,
        use_rslora: c.use_rslora,
        target_modules: Some(TargetModules::List(c.target_modules.clone())),
        layers_to_transform: c.layers.clone().map(LayersToTransform::Many),
        task_type: Some("CAUSAL_LM".into()),
        base_model_name_or_path: base_model.map(str::to_string),
        init_lora_weights: serde_json::Value::Bool(true),
        ..AdapterConfig::default()
    };
    let adapter = LoraAdapter { config, modules };
    adapter.check_consistent()?;
    Ok(adapter)
}

/// Trainable weights for `decoder` under `config`, initialised from `adapter` (warm starts and
/// resumed runs): laid out in the decoder's module order as a fresh
/// [`LoraWeights::init`] would be, so the trainer takes them as they are.
///
/// # Errors
/// [`LoraError::Inconsistent`] when a module's rank or scale differs from `config`'s;
/// [`LoraError::Model`] ([`lm_core::LmError::ExpertFactors`]) when the adapter and the config
/// adapt different modules.
pub fn trained_from_adapter(
    adapter: &LoraAdapter,
    decoder: &Decoder,
    config: &LoraTrainConfig,
) -> Result<LoraWeights> {
    let (r, scale) = (config.r, config.scale());
    for (name, m) in &adapter.modules {
        if m.rank() != r || (m.scale - scale).abs() > 1e-6 * scale.abs().max(1.0) {
            return Err(LoraError::Inconsistent {
                module: name.clone(),
                message: format!(
                    "rank {} / scale {} differ from the training config's {r} / {scale}; warm starts need the adapter's own rank and alpha",
                    m.rank(),
                    m.scale
                ),
            });
        }
    }
    let names: Vec<String> = adapter.modules.keys().cloned().collect();
    Ok(LoraWeights::from_named_factors(
        decoder,
        config,
        |name| {
            adapter.modules.get(name).map(|m| {
                let f = m.host_factors();
                (f.a, f.b)
            })
        },
        &names,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lm_core::burn::tensor::Device;
    use lm_core::model::random::tiny_language_model;

    #[test]
    fn trained_weights_round_trip_through_a_peft_directory() {
        let model = tiny_language_model(2, &Device::default());
        let cfg = LoraTrainConfig::new().with_r(4).with_alpha(8.0);
        let mut w = LoraWeights::init(&model.decoder, &cfg, 9).unwrap();
        for (i, v) in w.values.iter_mut().enumerate() {
            *v += (i % 7) as f32 * 0.01; // make b non-zero too
        }
        let adapter = adapter_from_trained(&w, Some("tiny")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        adapter.save(dir.path()).unwrap();
        let loaded = LoraAdapter::load(dir.path()).unwrap();
        assert_eq!(loaded.modules, adapter.modules);
        let slot = &w.slots[0];
        let m = &loaded.modules[&slot.name];
        // lora_A[j, i] = a[i, j]
        assert_eq!(m.a[[1, 2]], w.a(slot)[2 * 4 + 1]);
        assert_eq!(m.b[[3, 1]], w.b(slot)[slot.d_out + 3]);
        assert!((m.scale - 2.0).abs() < 1e-7);
        let back = trained_from_adapter(&loaded, &model.decoder, &cfg).unwrap();
        assert_eq!(back.values, w.values);
        assert_eq!(back.slots, w.slots);
        assert_eq!(back.config.scale(), w.config.scale());
        // Another rank, or other targets, are refused with the module named.
        let err = trained_from_adapter(&loaded, &model.decoder, &cfg.clone().with_r(8));
        assert!(matches!(err, Err(LoraError::Inconsistent { .. })));
        let wider = cfg.clone().with_target_modules(vec!["q_proj".into()]);
        let err = trained_from_adapter(&loaded, &model.decoder, &wider).unwrap_err();
        assert!(err.to_string().contains("v_proj"), "{err}");
    }
}
