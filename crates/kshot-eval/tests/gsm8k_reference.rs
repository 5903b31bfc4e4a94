//! A few GSM8K items through kshot-eval's exact match against the committed transformers
//! reference (`tests/fixtures/gsm8k_smollm2_transformers.json`, written by
//! `scripts/gsm8k_transformers_reference.py`): same generated text, same extracted answer, same
//! verdict. The full 200-item comparison is `cargo run --release -p kshot-eval --example
//! gsm8k_agreement` (result in `tests/fixtures/gsm8k_smollm2_openexpert.json`).

use std::path::Path;

use kshot_eval::{EvalConfig, KShotItem, exact_match};
use lm_core::model::{ExpertMix, LanguageModel};
use lm_core::testing::{default_model_path, test_device};

fn model() -> LanguageModel {
    LanguageModel::from_gguf(&default_model_path(), &test_device()).unwrap()
}

#[test]
fn short_gsm8k_generations_match_transformers() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gsm8k_smollm2_transformers.json");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let mut items: Vec<&serde_json::Value> = reference["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["finish_reason"] == "eos")
        .collect();
    // The three shortest answers keep the test short; include a correct one when there is one.
    items.sort_by_key(|i| {
        (
            !i["correct"].as_bool().unwrap(),
            i["generated_tokens"].as_u64().unwrap(),
        )
    });
    let mut picked: Vec<&serde_json::Value> = items.iter().take(1).copied().collect();
    let mut rest: Vec<&serde_json::Value> = items[1..].to_vec();
    rest.sort_by_key(|i| i["generated_tokens"].as_u64().unwrap());
    picked.extend(rest.into_iter().take(2));
    let kshot: Vec<KShotItem> = picked
        .iter()
        .map(|i| KShotItem::new(i["question"].as_str().unwrap(), i["gold"].as_str().unwrap()))
        .collect();
    let config = EvalConfig {
        max_new_tokens: reference["max_new_tokens"].as_u64().unwrap() as usize,
        batch_size: 3,
        ..Default::default()
    };
    let m = model();
    let ours = exact_match(&m, &ExpertMix::Base, &[], &kshot, &config).unwrap();
    for (o, t) in ours.per_item.iter().zip(&picked) {
        assert_eq!(
            o.prediction,
            t["text"].as_str().unwrap(),
            "item {}",
            t["index"]
        );
        assert_eq!(
            o.extracted.as_deref(),
            t["extracted"].as_str(),
            "item {}",
            t["index"]
        );
        assert_eq!(
            o.correct,
            t["correct"].as_bool().unwrap(),
            "item {}",
            t["index"]
        );
    }
}
