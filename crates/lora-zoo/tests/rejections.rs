//! Every refusal path of the loader and validator, on adapter directories written byte by byte.

use std::collections::HashMap;
use std::path::Path;

use lora_zoo::{AdapterLoadOptions, BaseModelSpec, LoadReport, LoraAdapter, LoraError};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

const Q: &str = "model.layers.0.self_attn.q_proj";
const CONFIG: &str =
    r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]}"#;

struct T {
    key: String,
    shape: Vec<usize>,
    dtype: Dtype,
    bytes: Vec<u8>,
}

fn f32t(key: &str, shape: &[usize], fill: impl Fn(usize) -> f32) -> T {
    let n: usize = shape.iter().product();
    T {
        key: key.into(),
        shape: shape.to_vec(),
        dtype: Dtype::F32,
        bytes: (0..n).flat_map(|i| fill(i).to_le_bytes()).collect(),
    }
}

fn lora(module: &str, r: usize, d_in: usize, d_out: usize) -> Vec<T> {
    vec![
        f32t(
            &format!("base_model.model.{module}.lora_A.weight"),
            &[r, d_in],
            |i| (i as f32 * 0.01).sin(),
        ),
        f32t(
            &format!("base_model.model.{module}.lora_B.weight"),
            &[d_out, r],
            |i| (i as f32 * 0.02).cos(),
        ),
    ]
}

fn write(dir: &Path, config: &str, tensors: &[T]) {
    std::fs::write(dir.join("adapter_config.json"), config).unwrap();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            (
                t.key.clone(),
                TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None::<HashMap<String, String>>).unwrap();
    std::fs::write(dir.join("adapter_model.safetensors"), bytes).unwrap();
}

fn load(config: &str, tensors: &[T]) -> lora_zoo::Result<LoraAdapter> {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), config, tensors);
    LoraAdapter::load(dir.path())
}

fn spec() -> BaseModelSpec {
    BaseModelSpec::llama("tiny", 2, 16, 32, 4, 2, 4)
}

#[test]
fn a_valid_adapter_loads_and_validates() {
    let mut t = lora(Q, 2, 16, 16);
    t.extend(lora("model.layers.1.self_attn.v_proj", 2, 16, 8));
    let a = load(CONFIG, &t).unwrap();
    assert_eq!(a.modules.len(), 2);
    assert_eq!(a.modules[Q].scale, 2.0);
    let r = a.validate(&spec()).unwrap();
    assert_eq!(r.applied.len(), 2);
    // q_proj of layer 1 and v_proj of layer 0 are targeted but absent
    assert_eq!(
        r.missing,
        vec![
            "model.layers.0.self_attn.v_proj",
            "model.layers.1.self_attn.q_proj"
        ]
    );
}

#[test]
fn f16_and_bf16_and_default_adapter_name_keys_are_read() {
    let mk = |key: &str, shape: &[usize], dtype: Dtype, conv: fn(f32) -> [u8; 2]| T {
        key: key.into(),
        shape: shape.to_vec(),
        dtype,
        bytes: (0..shape.iter().product::<usize>())
            .flat_map(|i| conv(0.25 * i as f32))
            .collect(),
    };
    let t = vec![
        mk(
            &format!("base_model.model.{Q}.lora_A.default.weight"),
            &[2, 16],
            Dtype::F16,
            |x| half::f16::from_f32(x).to_le_bytes(),
        ),
        mk(
            &format!("base_model.model.{Q}.lora_B.default.weight"),
            &[16, 2],
            Dtype::BF16,
            |x| half::bf16::from_f32(x).to_le_bytes(),
        ),
    ];
    let a = load(CONFIG, &t).unwrap();
    assert_eq!(a.modules[Q].a[[1, 3]], 0.25 * 19.0);
    assert_eq!(a.modules[Q].b[[7, 1]], 0.25 * 15.0);
}

#[test]
fn truncated_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), CONFIG, &lora(Q, 2, 16, 16));
    let p = dir.path().join("adapter_model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    for cut in [bytes.len() - 10, 20, 4] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        assert!(
            matches!(
                LoraAdapter::load(dir.path()),
                Err(LoraError::InvalidSafetensors { .. })
            ),
            "cut {cut}"
        );
    }
}

#[test]
fn missing_files() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        LoraAdapter::load(dir.path()),
        Err(LoraError::MissingFile { .. })
    ));
    std::fs::write(dir.path().join("adapter_config.json"), CONFIG).unwrap();
    assert!(matches!(
        LoraAdapter::load(dir.path()),
        Err(LoraError::MissingFile { .. })
    ));
    // Pickled weights only: named as such, with the conversion to run.
    std::fs::write(dir.path().join("adapter_model.bin"), b"PK\x03\x04").unwrap();
    let e = LoraAdapter::load(dir.path()).unwrap_err();
    assert!(matches!(e, LoraError::PickleWeights { .. }), "{e}");
    assert!(e.to_string().contains("safe_serialization=True"), "{e}");
}

#[test]
fn bad_patterns_are_named_on_one_line() {
    let dir = tempfile::tempdir().unwrap();
    for (field, config) in [
        (
            "target_modules",
            r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ".*(q_proj"}"#,
        ),
        (
            "rank_pattern",
            r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"], "rank_pattern": {"(q": 4}}"#,
        ),
    ] {
        write(dir.path(), config, &lora(Q, 2, 8, 8));
        let e = LoraAdapter::load(dir.path()).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, LoraError::BadPattern { .. }), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            msg.contains(field) && msg.contains("(unclosed group)"),
            "{msg}"
        );
    }
}

#[test]
fn non_finite_weights() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut t = lora(Q, 2, 16, 16);
        t[1] = f32t(
            &t[1].key.clone(),
            &[16, 2],
            |i| if i == 5 { bad } else { 0.1 },
        );
        match load(CONFIG, &t) {
            Err(LoraError::NonFinite { index, .. }) => assert_eq!(index, 5),
            other => panic!("expected NonFinite, got {other:?}"),
        }
    }
}

#[test]
fn rank_inconsistent_with_config() {
    let err = load(CONFIG, &lora(Q, 3, 16, 16)).unwrap_err();
    assert!(
        matches!(
            err,
            LoraError::RankMismatch {
                config_rank: 2,
                tensor_rank: 3,
                ..
            }
        ),
        "{err}"
    );
    // rank_pattern decides the expected rank
    let cfg = r#"{"r": 2, "target_modules": ["q_proj"], "rank_pattern": {"q_proj": 3}}"#;
    assert!(load(cfg, &lora(Q, 3, 16, 16)).is_ok());
}

#[test]
fn rank_zero() {
    assert!(matches!(
        load(CONFIG, &lora(Q, 0, 16, 16)),
        Err(LoraError::ZeroRank { .. })
    ));
    let cfg = r#"{"r": 0, "target_modules": ["q_proj"]}"#;
    assert!(matches!(
        load(cfg, &lora(Q, 2, 16, 16)),
        Err(LoraError::ZeroRank { .. })
    ));
}

#[test]
fn a_without_b_and_b_without_a() {
    let t = lora(Q, 2, 16, 16);
    let only_a = vec![f32t(&t[0].key, &[2, 16], |_| 0.1)];
    let only_b = vec![f32t(&t[1].key, &[16, 2], |_| 0.1)];
    assert!(matches!(
        load(CONFIG, &only_a),
        Err(LoraError::MissingFactor {
            missing: "lora_B",
            ..
        })
    ));
    assert!(matches!(
        load(CONFIG, &only_b),
        Err(LoraError::MissingFactor {
            missing: "lora_A",
            ..
        })
    ));
}

#[test]
fn factor_shapes_disagree() {
    let mut t = lora(Q, 2, 16, 16);
    t[1] = f32t(&t[1].key.clone(), &[16, 2, 1], |_| 0.1);
    assert!(matches!(
        load(CONFIG, &t),
        Err(LoraError::ShapeMismatch { .. })
    ));
    let mut t = lora(Q, 2, 16, 16);
    t[1] = f32t(&t[1].key.clone(), &[2, 16], |_| 0.1); // B stored transposed
    assert!(matches!(
        load(CONFIG, &t),
        Err(LoraError::ShapeMismatch { .. })
    ));
}

#[test]
fn shape_mismatch_against_base() {
    let a = load(CONFIG, &lora(Q, 2, 32, 16)).unwrap();
    assert!(matches!(
        a.validate(&spec()),
        Err(LoraError::ShapeMismatch { .. })
    ));
}

#[test]
fn unknown_target_module() {
    let a = load(CONFIG, &lora("model.layers.5.self_attn.q_proj", 2, 16, 16)).unwrap();
    assert!(matches!(
        a.validate(&spec()),
        Err(LoraError::UnknownTargetModule { .. })
    ));
    let cfg = r#"{"r": 2, "target_modules": ["qkv_proj"]}"#;
    let a = load(cfg, &lora("model.layers.0.self_attn.qkv_proj", 2, 16, 16)).unwrap();
    assert!(matches!(
        a.validate(&spec()),
        Err(LoraError::UnknownTargetModule { .. })
    ));
}

fn load_with(
    config: &str,
    tensors: &[T],
    strict: bool,
) -> lora_zoo::Result<(LoraAdapter, LoadReport)> {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), config, tensors);
    LoraAdapter::load_with(dir.path(), AdapterLoadOptions { strict })
}

#[test]
fn tensors_the_config_does_not_target_are_dropped_on_load() {
    // (b) a module suffix outside target_modules
    let mut t = lora(Q, 2, 16, 16);
    t.extend(lora("model.layers.0.mlp.up_proj", 2, 16, 32));
    let (a, report) = load_with(CONFIG, &t, false).unwrap();
    assert_eq!(a.modules.keys().collect::<Vec<_>>(), vec![Q]);
    assert_eq!(report.untargeted, vec!["model.layers.0.mlp.up_proj"]);
    assert!(a.validate(&spec()).unwrap().unused.is_empty());
    // (a) a layer outside layers_to_transform, even with a rank the config would refuse
    let cfg = r#"{"r": 2, "target_modules": ["q_proj"], "layers_to_transform": [0]}"#;
    let mut t = lora(Q, 2, 16, 16);
    t.extend(lora("model.layers.1.self_attn.q_proj", 3, 16, 16));
    let (a, report) = load_with(cfg, &t, false).unwrap();
    assert_eq!(a.modules.len(), 1);
    assert_eq!(report.untargeted, vec!["model.layers.1.self_attn.q_proj"]);
    // exclude_modules decides too
    let cfg = r#"{"r": 2, "target_modules": ["q_proj"], "exclude_modules": ["layers.1.self_attn.q_proj"]}"#;
    let mut t = lora(Q, 2, 16, 16);
    t.extend(lora("model.layers.1.self_attn.q_proj", 2, 16, 16));
    assert_eq!(load_with(cfg, &t, false).unwrap().1.untargeted.len(), 1);
    // strict refuses, naming the modules
    let err = load_with(
        CONFIG,
        &{
            let mut t = lora(Q, 2, 16, 16);
            t.extend(lora("model.layers.0.mlp.up_proj", 2, 16, 32));
            t
        },
        true,
    )
    .unwrap_err();
    assert!(
        matches!(&err, LoraError::UntargetedTensors { modules, .. } if modules == &["model.layers.0.mlp.up_proj"]),
        "{err}"
    );
    assert!(err.to_string().contains("model.layers.0.mlp.up_proj"));
    // a clean adapter passes strict loading with an empty report
    let (_, report) = load_with(CONFIG, &lora(Q, 2, 16, 16), true).unwrap();
    assert_eq!(report, LoadReport::default());
}

#[test]
fn an_adapter_with_no_targeted_module_is_refused() {
    let cfg = r#"{"r": 2, "target_modules": ["k_proj"]}"#;
    let err = load(cfg, &lora(Q, 2, 16, 16)).unwrap_err();
    assert!(matches!(err, LoraError::EmptyAdapter { .. }), "{err}");
    assert!(
        err.to_string().contains("adapter_model.safetensors"),
        "{err}"
    );
    assert!(err.to_string().contains(Q), "{err}");
    let err = load(CONFIG, &[]).unwrap_err();
    assert!(matches!(err, LoraError::EmptyAdapter { .. }), "{err}");
    assert!(err.to_string().contains("no lora_A"), "{err}");
    // without target_modules the config cannot decide: modules are kept
    assert_eq!(
        load(r#"{"r": 2}"#, &lora(Q, 2, 16, 16))
            .unwrap()
            .modules
            .len(),
        1
    );
}

#[test]
fn unmatched_pattern_keys_are_reported() {
    let cfg = r#"{"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"],
                 "rank_pattern": {"^model\\.layers\\.0\\.self_attn\\.q_proj": 2, "k_proj": 4},
                 "alpha_pattern": {"^q_proj": 100, "q_proj": 8}}"#;
    let (a, report) = load_with(cfg, &lora(Q, 2, 16, 16), false).unwrap();
    assert_eq!(
        report.unmatched_pattern_keys,
        vec![
            ("rank_pattern".to_string(), "k_proj".to_string()),
            ("alpha_pattern".to_string(), "^q_proj".to_string()),
        ]
    );
    // "^q_proj" never matches; "q_proj" gives alpha 8 -> scale 8 / 2
    assert_eq!(a.modules[Q].scale, 4.0);
}

#[test]
fn residual_base_inits_are_refused_and_plain_ones_accepted() {
    for init in [
        "pissa",
        "pissa_niter_4",
        "pissa_niter_16",
        "olora",
        "corda",
        "loftq",
    ] {
        let cfg =
            format!(r#"{{"r": 2, "target_modules": ["q_proj"], "init_lora_weights": "{init}"}}"#);
        let err = load(&cfg, &lora(Q, 2, 16, 16)).unwrap_err();
        assert!(
            matches!(&err, LoraError::ResidualBaseInit { init: i } if i == init),
            "{init}: {err}"
        );
        assert!(
            err.to_string()
                .contains("path_initial_model_for_weight_conversion"),
            "{err}"
        );
    }
    for init in ["true", "false", "\"gaussian\"", "\"eva\"", "\"orthogonal\""] {
        let cfg =
            format!(r#"{{"r": 2, "target_modules": ["q_proj"], "init_lora_weights": {init}}}"#);
        assert!(load(&cfg, &lora(Q, 2, 16, 16)).is_ok(), "{init}");
    }
}

#[test]
fn dora_is_refused_by_config_and_by_tensor() {
    let cfg = r#"{"r": 2, "target_modules": ["q_proj"], "use_dora": true}"#;
    assert!(matches!(
        load(cfg, &lora(Q, 2, 16, 16)),
        Err(LoraError::DoraUnsupported { .. })
    ));
    let mut t = lora(Q, 2, 16, 16);
    t.push(f32t(
        &format!("base_model.model.{Q}.lora_magnitude_vector"),
        &[16],
        |_| 1.0,
    ));
    assert!(matches!(
        load(CONFIG, &t),
        Err(LoraError::DoraUnsupported { .. })
    ));
}

#[test]
fn modules_to_save_is_refused() {
    let cfg = r#"{"r": 2, "target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}"#;
    assert!(matches!(
        load(cfg, &lora(Q, 2, 16, 16)),
        Err(LoraError::ModulesToSaveUnsupported { .. })
    ));
    let mut t = lora(Q, 2, 16, 16);
    t.push(f32t(
        "base_model.model.score.modules_to_save.default.weight",
        &[2, 16],
        |_| 1.0,
    ));
    assert!(matches!(
        load(CONFIG, &t),
        Err(LoraError::ModulesToSaveUnsupported { .. })
    ));
}

#[test]
fn embedding_and_lm_head_adapters_are_refused() {
    let t = vec![
        f32t(
            "base_model.model.model.embed_tokens.lora_embedding_A",
            &[2, 100],
            |_| 0.1,
        ),
        f32t(
            "base_model.model.model.embed_tokens.lora_embedding_B",
            &[16, 2],
            |_| 0.1,
        ),
    ];
    assert!(matches!(
        load(CONFIG, &t),
        Err(LoraError::EmbeddingAdapter { .. })
    ));
    assert!(matches!(
        load(CONFIG, &lora("lm_head", 2, 16, 100)),
        Err(LoraError::EmbeddingAdapter { .. })
    ));
}

#[test]
fn bias_is_refused() {
    let cfg = r#"{"r": 2, "target_modules": ["q_proj"], "bias": "all"}"#;
    assert!(matches!(
        load(cfg, &lora(Q, 2, 16, 16)),
        Err(LoraError::BiasUnsupported { .. })
    ));
    let cfg = r#"{"r": 2, "target_modules": ["q_proj"], "lora_bias": true}"#;
    assert!(matches!(
        load(cfg, &lora(Q, 2, 16, 16)),
        Err(LoraError::BiasUnsupported { .. })
    ));
    let mut t = lora(Q, 2, 16, 16);
    t.push(f32t(
        &format!("base_model.model.{Q}.lora_B.bias"),
        &[16],
        |_| 0.1,
    ));
    assert!(matches!(
        load(CONFIG, &t),
        Err(LoraError::BiasUnsupported { .. })
    ));
}

#[test]
fn unknown_dtype_and_unknown_keys_are_refused() {
    let mut t = lora(Q, 2, 16, 16);
    t[0] = T {
        key: t[0].key.clone(),
        shape: vec![2, 16],
        dtype: Dtype::I32,
        bytes: vec![0; 2 * 16 * 4],
    };
    assert!(matches!(
        load(CONFIG, &t),
        Err(LoraError::UnsupportedDtype { .. })
    ));
    let mut t = lora(Q, 2, 16, 16);
    t.push(f32t("base_model.model.model.norm.weight", &[16], |_| 1.0));
    assert!(matches!(
        load(CONFIG, &t),
        Err(LoraError::UnrecognizedTensor { .. })
    ));
}

#[test]
fn invalid_config_json() {
    assert!(matches!(
        load("{not json", &lora(Q, 2, 16, 16)),
        Err(LoraError::InvalidConfig { .. })
    ));
    assert!(matches!(
        load(r#"{"peft_type": "PROMPT_TUNING"}"#, &lora(Q, 2, 16, 16)),
        Err(LoraError::NotLora { .. })
    ));
}

#[test]
fn error_messages_say_what_to_do() {
    let e = load(CONFIG, &lora(Q, 3, 16, 16)).unwrap_err().to_string();
    assert!(
        e.contains("r = 2") && e.contains("r = 3") && e.contains("rank_pattern"),
        "{e}"
    );
}
