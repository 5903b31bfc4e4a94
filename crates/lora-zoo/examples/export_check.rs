//! Writes the inputs of `scripts/check_hf_export.py`: the SmolLM2 base exported as an HF
//! directory, the same base with the fixture adapter `b_mlp_rslora` merged, and lm-core's token ids
//! and logits for a few prompts on both exported directories (loaded back with
//! `LanguageModel::from_hf_dir`).
//!
//! ```sh
//! cargo run --release -p lora-zoo --example export_check -- /tmp/oe-export-check
//! ```
//!
//! Output: `<dir>/base/`, `<dir>/merged/` (HF checkpoints) and `<dir>/lmcore.safetensors` with
//! `ids.<i>` (i64 `[seq]`), `base.<i>` and `merged.<i>` (f32 `[seq, vocab]`), plus
//! `<dir>/prompts.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use lm_core::burn::tensor::{Int, Tensor, TensorData};
use lm_core::export::{ExportDtype, export_base};
use lm_core::model::{ExpertMix, LanguageModel};
use lora_zoo::merge::{
    MergeOptions, VerifyOptions, load_named, merge_into_base, plain_merge_options,
};
use safetensors::tensor::{Dtype, TensorView};

/// Prompts with digit runs, a chat turn, unicode and code (the tokenizer's hard cases).
const PROMPTS: [&str; 4] = [
    "The year 2024 had 366 days; 12345 + 678 = 13023.",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "Café naïve — 東京 😀 résumé",
    "def f(x):\n    return x ** 2  # square\n",
];

fn logits(m: &LanguageModel, ids: &[u32]) -> Vec<f32> {
    let t: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    let t = Tensor::<2, Int>::from_data(TensorData::new(t, [1, ids.len()]), &m.device);
    m.decoder
        .forward(t, &ExpertMix::Base)
        .into_data()
        .try_into_vec::<f32>()
        .expect("f32 logits")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "/tmp/oe-export-check".into()),
    );
    std::fs::create_dir_all(&out)?;
    let model = lm_core::assets::DEFAULT_MODEL;
    export_base(model, &out.join("base"), ExportDtype::F32, true)?;
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adapters/b_mlp_rslora");
    let named = load_named(&[fixture])?;
    let opts = MergeOptions {
        combine: plain_merge_options(1),
        dtype: ExportDtype::F32,
        force: true,
        verify: Some(VerifyOptions::default()),
        progress: false,
    };
    let report = merge_into_base(model, &named, &opts, &out.join("merged"))?;
    eprintln!(
        "merged: max |Δlogit| vs unmerged {:?}",
        report.verification.as_ref().map(|v| v.max_abs_logit_diff)
    );

    let device = lm_core::device::device_from_name("cpu")?;
    let mut tensors: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)> = HashMap::new();
    let base = LanguageModel::from_hf_dir(&out.join("base"), &device)?;
    let gguf = LanguageModel::load(model, &device)?;
    let mut all_ids = Vec::new();
    for (i, p) in PROMPTS.iter().enumerate() {
        let ids = base.encode(p)?;
        assert_eq!(
            ids,
            gguf.encode(p)?,
            "exported tokenizer differs from the GGUF one"
        );
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&x| i64::from(x).to_le_bytes())
            .collect();
        tensors.insert(format!("ids.{i}"), (Dtype::I64, vec![ids.len()], bytes));
        let l = logits(&base, &ids);
        let v = l.len() / ids.len();
        let bytes: Vec<u8> = l.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.insert(format!("base.{i}"), (Dtype::F32, vec![ids.len(), v], bytes));
        all_ids.push(ids);
    }
    drop(base);
    drop(gguf);
    let merged = LanguageModel::from_hf_dir(&out.join("merged"), &device)?;
    for (i, ids) in all_ids.iter().enumerate() {
        let l = logits(&merged, ids);
        let v = l.len() / ids.len();
        let bytes: Vec<u8> = l.iter().flat_map(|x| x.to_le_bytes()).collect();
        tensors.insert(
            format!("merged.{i}"),
            (Dtype::F32, vec![ids.len(), v], bytes),
        );
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, (dt, shape, b))| Ok((k.clone(), TensorView::new(*dt, shape.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    safetensors::serialize_to_file(views, None, &out.join("lmcore.safetensors"))?;
    std::fs::write(
        out.join("prompts.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "prompts": PROMPTS,
            "merged_adapter": "crates/lora-zoo/tests/fixtures/adapters/b_mlp_rslora",
            "merge_report": report,
        }))?,
    )?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
