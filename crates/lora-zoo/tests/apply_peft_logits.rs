//! Adapters applied unmerged through lm-core's `AdaptedLinear` give the logits of the real
//! `peft` library (`tests/fixtures/refs/logits.safetensors`, made by
//! `scripts/gen_peft_fixtures.py` on SmolLM2-135M-Instruct): one adapter at a time, and all of
//! them in one batch with a per-row adapter index.

use std::path::{Path, PathBuf};

use lm_core::burn::tensor::{Int, Tensor, TensorData};
use lm_core::model::{ExpertMix, LanguageModel};
use lm_core::testing::{assert_close, default_model_path, test_device, test_tolerance};
use lora_zoo::LoraAdapter;
use lora_zoo::apply::{attach_adapters, detach_all};

const ADAPTERS: [&str; 4] = ["a_qv_r4", "b_mlp_rslora", "c_rank_pattern", "d_qv_r4"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn reference() -> (Vec<i64>, std::collections::BTreeMap<String, Vec<f32>>) {
    let bytes = std::fs::read(fixtures().join("refs/logits.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids_view = st.tensor("input_ids").unwrap();
    let ids: Vec<i64> = ids_view
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let mut logits = std::collections::BTreeMap::new();
    for name in ADAPTERS.iter().chain(&["base"]) {
        let t = st.tensor(name).unwrap();
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        logits.insert(name.to_string(), v);
    }
    (ids, logits)
}

fn model() -> LanguageModel {
    LanguageModel::from_gguf(&default_model_path(), &test_device()).unwrap()
}

/// The first 1024 logits of every position, for rows `[batch, seq]` of the same ids.
fn first_logits(m: &LanguageModel, ids: &[i64], batch: usize, mix: &ExpertMix) -> Vec<Vec<f32>> {
    let s = ids.len();
    let tokens: Vec<i64> = ids.iter().copied().cycle().take(batch * s).collect();
    let t = Tensor::<2, Int>::from_data(TensorData::new(tokens, [batch, s]), &m.device);
    let logits = m.decoder.forward(t, mix).narrow(2, 0, 1024);
    let v: Vec<f32> = logits.into_data().try_into_vec::<f32>().unwrap();
    v.chunks(s * 1024).map(<[f32]>::to_vec).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Runs on `OPENEXPERT_TEST_DEVICE` (cpu by default) within that device's logit tolerance
/// (1e-3 on the CPU).
#[test]
fn unmerged_logits_match_peft() {
    let (ids, want) = reference();
    let tol = test_tolerance().logits;
    let mut m = model();
    let base = &first_logits(&m, &ids, 1, &ExpertMix::Base)[0];
    assert_close(
        "forward: SmolLM2 base logits vs PEFT",
        base,
        &want["base"],
        tol,
    );

    let adapters: Vec<LoraAdapter> = ADAPTERS
        .iter()
        .map(|n| LoraAdapter::load(&fixtures().join("adapters").join(n)).unwrap())
        .collect();
    for (name, adapter) in ADAPTERS.iter().zip(&adapters) {
        attach_adapters(&mut m.decoder, &[adapter]).unwrap();
        let got = &first_logits(&m, &ids, 1, &ExpertMix::Static(vec![1.0]))[0];
        assert_close(
            &format!("LoRA apply: adapter {name} (static mix) vs PEFT"),
            got,
            &want[*name],
            tol,
        );
        // The adapter must actually change the output, or the test proves nothing.
        assert!(max_diff(got, base) > 1e-2, "adapter {name} had no effect");
    }

    // All four adapters in one batch, row i using adapter i, base computation shared.
    let refs: Vec<&LoraAdapter> = adapters.iter().collect();
    let report = attach_adapters(&mut m.decoder, &refs).unwrap();
    assert_eq!(report.experts, 4);
    let rows = first_logits(&m, &ids, 4, &ExpertMix::PerRow((0..4).map(Some).collect()));
    for (name, row) in ADAPTERS.iter().zip(&rows) {
        assert_close(
            &format!("LoRA apply: adapter {name} as one row of a per-row batch of 4 vs PEFT"),
            row,
            &want[*name],
            tol,
        );
    }
    detach_all(&mut m.decoder);
    let again = &first_logits(&m, &ids, 1, &ExpertMix::Static(vec![]))[0];
    assert_close(
        "LoRA detach: SmolLM2 base logits after detaching vs PEFT",
        again,
        &want["base"],
        tol,
    );
}
