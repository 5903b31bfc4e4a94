//! Qwen2 (Qwen2.5-Coder-0.5B-Instruct GGUF: Q4_K/Q5_0/Q6_K/Q8_0, q/k/v bias, untied head,
//! θ = 1e6) against transformers (`tests/fixtures/qwen2`, `scripts/gen_qwen2_reference.py`).
//! The model is an optional asset (`openexpert fetch qwen2.5-0.5b-instruct`, 491 MB): without it
//! the test says so and passes.

mod common;

use common::fixture;
use lm_core::generate::{GenerationConfig, generate};
use lm_core::model::{ExpertMix, LanguageModel};
use lm_core::score::{ScoreOptions, ScoreRequest, score};
use lm_core::testing::{max_abs_diff, test_device};
use serde_json::Value;

#[test]
fn qwen2_matches_transformers() {
    let Some(path) = lm_core::testing::model_if_fetched("qwen2.5-0.5b-instruct") else {
        return;
    };
    let m = LanguageModel::from_gguf(&path, &test_device()).unwrap();
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("qwen2/reference.json")).unwrap())
            .unwrap();
    for p in reference["prompts"].as_array().unwrap() {
        let want_ids: Vec<u32> = serde_json::from_value(p["ids"].clone()).unwrap();
        assert_eq!(
            m.encode(p["text"].as_str().unwrap()).unwrap(),
            want_ids,
            "token ids"
        );
        let s = &score(
            &m,
            &[ScoreRequest::text(want_ids.clone())],
            &ScoreOptions::default(),
            &ExpertMix::Base,
        )
        .unwrap()[0];
        let want: Vec<f32> = serde_json::from_value(p["token_logprobs"].clone()).unwrap();
        let d = max_abs_diff(&s.token_logprobs, &want);
        eprintln!("qwen2 per-token log-prob max diff {d}");
        assert!(d < 1e-3, "per-token log-probs differ by {d}");
        let config = GenerationConfig {
            max_new_tokens: 10,
            stop_at_eos: false,
            ..Default::default()
        };
        let out = generate(&m, &[want_ids], &config, &ExpertMix::Base).unwrap();
        let greedy: Vec<u32> = serde_json::from_value(p["greedy_new_ids"].clone()).unwrap();
        assert_eq!(out[0].token_ids, greedy, "greedy continuation");
    }
}
