//! Merging into the real SmolLM2-135M-Instruct (Q4_1 GGUF) and exporting an HF checkpoint:
//! the merged weights equal PEFT's `merge_and_unload` (`refs/merged_delta.safetensors`), the
//! exported directory loads back in lm-core with the unmerged model's logits, and bad inputs fail
//! before anything is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lm_core::export::{ExportBase, ExportDtype};
use lm_core::io::safetensors::SafetensorsWeights;
use lora_zoo::merge::{
    MergeOptions, REPORT_FILE, VerifyOptions, load_named, merge_into_base, plain_merge_options,
};
use lora_zoo::{CombineMethod, LoraAdapter, LoraError, LoraModule};
use ndarray::Array2;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn gguf() -> String {
    lm_core::testing::default_model_path().display().to_string()
}

fn options(n: usize, verify: bool) -> MergeOptions {
    MergeOptions {
        combine: plain_merge_options(n),
        dtype: ExportDtype::F32,
        force: false,
        verify: verify.then(|| VerifyOptions {
            device: std::env::var(lm_core::testing::TEST_DEVICE_VAR)
                .unwrap_or_else(|_| "cpu".into()),
            ..VerifyOptions::default()
        }),
        progress: false,
    }
}

/// PEFT's `(merged - base)[:64]` per `"<adapter>/<module>"`.
fn peft_deltas() -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixtures().join("refs/merged_delta.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (k, (v.shape().to_vec(), data))
        })
        .collect()
}

/// b_mlp_rslora (layer 1: q, gate, up, down) and c_rank_pattern (layer 0: q, v, o) touch disjoint
/// modules, so their sum merged once holds each one's own update: all four PEFT reference modules.
#[test]
fn merged_export_matches_peft_and_the_unmerged_forward() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("merged");
    let named = load_named(&[
        fixtures().join("adapters/b_mlp_rslora"),
        fixtures().join("adapters/c_rank_pattern"),
    ])
    .unwrap();
    let report = merge_into_base(&gguf(), &named, &options(2, true), &dir).unwrap();

    // (1) merged weights vs PEFT merge_and_unload, through the exported file (q rows un-permuted)
    let merged = SafetensorsWeights::open_dir(&dir).unwrap();
    let base = ExportBase::open(&gguf()).unwrap();
    let refs = peft_deltas();
    assert_eq!(refs.len(), 4);
    for (key, (shape, want)) in &refs {
        let module = key.split_once('/').unwrap().1;
        let name = format!("{module}.weight");
        let (w, wshape) = merged.tensor_f32(&name).unwrap();
        let (b, _) = base.tensor(&name).unwrap();
        let rows = shape[0];
        assert_eq!(wshape[1], shape[1], "{key}");
        let got: Vec<f32> = w[..rows * shape[1]]
            .iter()
            .zip(&b)
            .map(|(x, y)| x - y)
            .collect();
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(scale > 1e-4, "{key}: reference delta is trivially zero");
        let d = got
            .iter()
            .zip(want)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-5, "{key}: max |ours - peft merge_and_unload| = {d}");
    }
    // untouched tensors are the base's, bit for bit
    let untouched = "model.layers.5.self_attn.k_proj.weight";
    assert_eq!(
        merged.tensor_f32(untouched).unwrap().0,
        base.tensor(untouched).unwrap().0
    );
    assert!(!merged.contains("lm_head.weight"), "tied embeddings");
    assert_eq!(report.modules.len(), 7);
    assert!(report.modules.iter().all(|m| m.delta_fro > 0.0));

    // (2) merged vs unmerged forward
    let v = report.verification.as_ref().unwrap();
    assert!(
        v.max_abs_logit_diff < 1e-3,
        "max |Δlogit| = {}",
        v.max_abs_logit_diff
    );
    assert!(v.max_abs_logit > 1.0 && v.argmax_agree && v.tokenizer_ids_equal);
    assert!(v.tokens > 10);

    // the report on disk, the sidecar files, no staging leftovers
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(REPORT_FILE)).unwrap()).unwrap();
    assert_eq!(
        on_disk["verification"]["max_abs_logit_diff"]
            .as_f64()
            .unwrap() as f32,
        v.max_abs_logit_diff
    );
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
    assert_eq!(cfg["tie_word_embeddings"], true);
    let tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert!(
        tc["chat_template"]
            .as_str()
            .unwrap()
            .contains("<|im_start|>")
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);

    // LanguageModel::from_hf_dir reads it too: same tokenizer ids, the chat template
    drop(merged);
    let device = lm_core::device::device_from_name("cpu").unwrap();
    let hf = lm_core::model::LanguageModel::from_hf_dir(&dir, &device).unwrap();
    let gguf_model = lm_core::model::LanguageModel::load(&gguf(), &device).unwrap();
    let text = "Prices rose 12345% in 2024 — café 😀";
    assert_eq!(hf.encode(text).unwrap(), gguf_model.encode(text).unwrap());
    let chat = [lm_core::chat_template::ChatMessage {
        role: "user".into(),
        content: "Hi".into(),
    }];
    assert_eq!(
        hf.render_chat(&chat, true).unwrap(),
        gguf_model.render_chat(&chat, true).unwrap()
    );
    assert_eq!(hf.eos_ids, gguf_model.eos_ids);
}

/// An adapter whose q_proj is `[64 -> 64]`: trained for another base.
fn foreign_adapter(dir: &Path) -> PathBuf {
    let good = LoraAdapter::load(&fixtures().join("adapters/a_qv_r4")).unwrap();
    let mut bad = good.clone();
    let name = "model.layers.0.self_attn.q_proj".to_string();
    bad.modules.insert(
        name,
        LoraModule::new(Array2::ones((4, 64)), Array2::ones((64, 4)), 8.0, 2.0).unwrap(),
    );
    let d = dir.join("foreign");
    bad.save(&d).unwrap();
    d
}

#[test]
fn bad_inputs_fail_before_writing() {
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");

    // adapter for another base: clear error, nothing written
    let adapters = tempfile::tempdir().unwrap();
    let named = load_named(&[foreign_adapter(adapters.path())]).unwrap();
    let err = merge_into_base(&gguf(), &named, &options(1, false), &out).unwrap_err();
    assert!(matches!(err, LoraError::ShapeMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("q_proj") && msg.contains("576"), "{msg}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);

    // wrong number of weights
    let good = load_named(&[fixtures().join("adapters/a_qv_r4")]).unwrap();
    let mut o = options(1, false);
    o.combine.weights = vec![1.0, 2.0];
    assert!(merge_into_base(&gguf(), &good, &o, &out).is_err());
    assert!(!out.exists());

    // a merge that changes no weight: zero weights are refused up front; a density that prunes
    // every entry after the pass, the staged output removed
    let mut o = options(1, false);
    o.combine.weights = vec![0.0];
    let err = merge_into_base(&gguf(), &good, &o, &out).unwrap_err();
    assert!(matches!(err, LoraError::EmptyCombination { .. }), "{err}");
    assert!(!out.exists());
    let mut o = options(1, false);
    o.combine.method = CombineMethod::Ties;
    o.combine.density = 1e-30;
    let err = merge_into_base(&gguf(), &good, &o, &out).unwrap_err();
    assert!(
        matches!(err, LoraError::EmptyCombination { .. }) && err.to_string().contains("density"),
        "{err}"
    );
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);

    // non-empty output without --force
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("precious.txt"), b"keep me").unwrap();
    let err = merge_into_base(&gguf(), &good, &options(1, false), &out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("precious.txt")).unwrap(), b"keep me");

    // unwritable output: its parent is a file
    let file = root.path().join("a_file");
    std::fs::write(&file, b"x").unwrap();
    let err = merge_into_base(&gguf(), &good, &options(1, false), &file.join("out")).unwrap_err();
    assert!(err.to_string().contains("a_file"), "{err}");

    // an unknown dtype is refused by name, listing the known ones (the CLI's `--dtype` parses
    // through this; crates/openexpert/tests/cli_lora.rs checks the command line)
    let err = "int4".parse::<ExportDtype>().unwrap_err().to_string();
    assert!(err.contains("int4") && err.contains("bf16"), "{err}");
    assert!(out.join("precious.txt").is_file());
}
