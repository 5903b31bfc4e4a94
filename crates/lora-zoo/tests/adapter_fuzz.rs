//! Fuzzing the PEFT adapter readers: `adapter_config.json` as any text, or as a valid config
//! whose fields hold any JSON value, and `adapter_model.safetensors` as mutated valid bytes, never
//! panic the parser, the support checks, the module matcher, the loader or the validation
//! against a base model.

use std::collections::HashMap;
use std::path::Path;

use lora_zoo::{AdapterConfig, BaseModelSpec, LoraAdapter};
use proptest::prelude::*;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde_json::{Value, json};

/// Module names a matcher is asked about.
const MODULES: [&str; 5] = [
    "model.layers.0.self_attn.q_proj",
    "model.layers.1.self_attn.v_proj",
    "model.layers.12.mlp.down_proj",
    "lm_head",
    "model.embed_tokens",
];

/// The fields of a LoraConfig that change what is loaded.
const FIELDS: [&str; 14] = [
    "peft_type",
    "r",
    "lora_alpha",
    "target_modules",
    "exclude_modules",
    "layers_to_transform",
    "layers_pattern",
    "rank_pattern",
    "alpha_pattern",
    "init_lora_weights",
    "use_rslora",
    "use_dora",
    "modules_to_save",
    "bias",
];

fn valid_config() -> Value {
    json!({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4,
           "target_modules": ["q_proj", "v_proj"], "bias": "none", "init_lora_weights": true})
}

/// Values that mean something to a LoraConfig, and odd ones.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(0i64),
            Just(1),
            Just(-1),
            Just(2),
            Just(i64::MAX),
            0i64..64
        ]
        .prop_map(|i| json!(i)),
        prop_oneof![Just(0.0f64), Just(-4.0), Just(1e308), Just(0.5)].prop_map(|f| json!(f)),
        prop_oneof![
            Just("LORA".to_string()),
            Just("q_proj".to_string()),
            Just(".*q_proj".to_string()),
            Just("^q_proj".to_string()),
            Just("(q_proj".to_string()),
            Just("all-linear".to_string()),
            Just("pissa".to_string()),
            Just("layers".to_string()),
            Just("none".to_string()),
            "\\PC{0,10}",
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(2, 10, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![Just("q_proj".to_string()), "[a-z_.^$()]{1,10}"],
                inner,
                0..3
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Everything downstream of a parsed config.
fn exercise(c: &AdapterConfig) {
    let _ = c.check_supported();
    if let Ok(m) = c.matcher() {
        for name in MODULES {
            let _ = m.is_target(name);
            let _ = m.layer_index(name);
            let _ = m.scaling(name);
        }
        let _ = m.unmatched_pattern_keys(MODULES.iter().copied());
    }
    let _ = c.to_json_string();
}

/// A valid adapter file: rank-2 factors for q_proj of layers 0 and 1 (width 8).
fn adapter_bytes() -> Vec<u8> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for layer in 0..2 {
        let m = format!("base_model.model.model.layers.{layer}.self_attn.q_proj");
        for (f, shape) in [("lora_A", [2, 8]), ("lora_B", [8, 2])] {
            let bytes = (0..16)
                .flat_map(|i| ((i as f32) * 0.1).to_le_bytes())
                .collect();
            tensors.push((format!("{m}.{f}.weight"), shape.to_vec(), bytes));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, s, b)| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None::<HashMap<String, String>>).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_config_text_never_panics(text in "\\PC{0,160}") {
        if let Ok(c) = AdapterConfig::from_json_str(&text, Path::new("adapter_config.json")) {
            exercise(&c);
        }
    }

    #[test]
    fn configs_with_any_field_values_never_panic(edits in proptest::collection::vec((0..FIELDS.len(), proptest::option::weighted(0.9, json_value())), 1..5)) {
        let mut v = valid_config();
        for (f, value) in edits {
            let o = v.as_object_mut().unwrap();
            match value {
                Some(x) => { o.insert(FIELDS[f].into(), x); }
                None => { o.remove(FIELDS[f]); }
            }
        }
        let path = Path::new("adapter_config.json");
        if let Ok(c) = AdapterConfig::from_json_str(&v.to_string(), path) {
            exercise(&c);
            // And the whole loader on valid factors.
            if let Ok(a) = LoraAdapter::from_safetensors_bytes(c, &adapter_bytes(), path) {
                let _ = a.validate(&BaseModelSpec::llama("tiny", 2, 8, 16, 2, 2, 4));
            }
        }
    }

    #[test]
    fn mutated_adapter_files_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut b = adapter_bytes();
        for (i, v) in &edits {
            let i = i.index(b.len());
            b[i] = *v;
        }
        if let Some(c) = cut {
            let n = c.index(b.len());
            b.truncate(n);
        }
        let config = AdapterConfig::from_json_str(&valid_config().to_string(), Path::new("c")).unwrap();
        if let Ok(a) = LoraAdapter::from_safetensors_bytes(config, &b, Path::new("adapter_model.safetensors")) {
            let _ = a.validate(&BaseModelSpec::llama("tiny", 2, 8, 16, 2, 2, 4));
        }
    }
}
