//! SmolLM2-135M-Instruct (GGUF Q4_1) against the PyTorch / transformers reference
//! (`tests/fixtures/smollm2`, made by `scripts/gen_reference_fixtures.py`): token ids, chat
//! rendering, per-token log-probs, last-position logits, greedy continuations.

mod common;

use std::sync::OnceLock;

use common::{asset_dir, fixture, max_abs_diff, test_device};
use lm_core::chat_template::ChatMessage;
use lm_core::generate::{GenerationConfig, generate};
use lm_core::io::safetensors::SafetensorsWeights;
use lm_core::model::{ExpertMix, LanguageModel};
use lm_core::score::{ScoreOptions, ScoreRequest, score};
use serde_json::Value;

const TOL: f32 = 1e-3;

fn model() -> &'static LanguageModel {
    static MODEL: OnceLock<LanguageModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path =
            asset_dir(lm_core::assets::DEFAULT_MODEL).join("SmolLM2-135M-Instruct.Q4_1.gguf");
        LanguageModel::from_gguf(&path, &test_device()).expect("SmolLM2 loads")
    })
}

fn reference() -> &'static Value {
    static REF: OnceLock<Value> = OnceLock::new();
    REF.get_or_init(|| {
        let text = std::fs::read_to_string(fixture("smollm2/reference.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn token_ids_match_the_hf_tokenizer() {
    let m = model();
    for p in reference()["prompts"].as_array().unwrap() {
        let got = m.encode(p["text"].as_str().unwrap()).unwrap();
        assert_eq!(got, ids(&p["ids"]), "prompt `{}`", p["name"]);
    }
}

#[test]
fn chat_template_renders_like_transformers() {
    let m = model();
    let chat = &reference()["chat"];
    let messages: Vec<ChatMessage> = serde_json::from_value(chat["messages"].clone()).unwrap();
    let rendered = m.render_chat(&messages, true).unwrap();
    assert_eq!(rendered, chat["rendered"].as_str().unwrap());
    assert_eq!(m.encode(&rendered).unwrap(), ids(&chat["rendered_ids"]));
}

#[test]
fn token_logprobs_and_last_logits_match_within_1e3() {
    let m = model();
    let prompts = reference()["prompts"].as_array().unwrap();
    let requests: Vec<ScoreRequest> = prompts
        .iter()
        .map(|p| ScoreRequest::text(ids(&p["ids"])))
        .collect();
    // All prompts in one right-padded batch: padding must not change any score.
    let options = ScoreOptions {
        batch_size: requests.len(),
        keep_last_logits: true,
        ..Default::default()
    };
    let scores = score(m, &requests, &options, &ExpertMix::Base).unwrap();
    let logits = SafetensorsWeights::open_file(fixture("smollm2/last_logits.safetensors")).unwrap();
    let (ref_logits, shape) = logits.tensor_f32("logits").unwrap();
    assert_eq!(shape, vec![prompts.len(), m.config().vocab_size]);
    let vocab = shape[1];
    for (i, (p, s)) in prompts.iter().zip(&scores).enumerate() {
        let want = floats(&p["token_logprobs"]);
        let d = max_abs_diff(&s.token_logprobs, &want);
        assert!(
            d < TOL,
            "prompt `{}`: per-token log-prob max diff {d}",
            p["name"]
        );
        let got = s.last_logits.as_ref().unwrap();
        let d = max_abs_diff(got, &ref_logits[i * vocab..(i + 1) * vocab]);
        assert!(
            d < TOL,
            "prompt `{}`: last-position logits max diff {d}",
            p["name"]
        );
    }
}

#[test]
fn batching_does_not_change_scores() {
    let m = model();
    let prompts = reference()["prompts"].as_array().unwrap();
    let requests: Vec<ScoreRequest> = prompts
        .iter()
        .map(|p| ScoreRequest::text(ids(&p["ids"])))
        .collect();
    let alone = ScoreOptions {
        batch_size: 1,
        keep_last_logits: false,
        ..Default::default()
    };
    let together = ScoreOptions {
        batch_size: 4,
        keep_last_logits: false,
        max_batch_tokens: usize::MAX,
    };
    let a = score(m, &requests, &alone, &ExpertMix::Base).unwrap();
    let b = score(m, &requests, &together, &ExpertMix::Base).unwrap();
    for (x, y) in a.iter().zip(&b) {
        let d = max_abs_diff(&x.token_logprobs, &y.token_logprobs);
        assert!(d < 1e-4, "batched vs alone differ by {d}");
    }
}

#[test]
fn prompt_target_pairs_match() {
    let m = model();
    for pair in reference()["pairs"].as_array().unwrap() {
        let prompt = m.encode(pair["prompt"].as_str().unwrap()).unwrap();
        let target = m
            .encode_continuation(pair["target"].as_str().unwrap())
            .unwrap();
        assert_eq!(prompt, ids(&pair["prompt_ids"]));
        assert_eq!(target, ids(&pair["target_ids"]));
        let s = &score(
            m,
            &[ScoreRequest { prompt, target }],
            &ScoreOptions::default(),
            &ExpertMix::Base,
        )
        .unwrap()[0];
        let d = max_abs_diff(&s.token_logprobs, &floats(&pair["target_logprobs"]));
        assert!(d < TOL, "pair `{}`: max diff {d}", pair["prompt"]);
        let want = pair["target_logprob_sum"].as_f64().unwrap();
        assert!((s.logprob - want).abs() < TOL as f64 * s.n_tokens as f64);
    }
}

#[test]
fn greedy_continuations_match_up_to_near_ties() {
    let m = model();
    let prompts = reference()["prompts"].as_array().unwrap();
    let inputs: Vec<Vec<u32>> = prompts.iter().map(|p| ids(&p["ids"])).collect();
    let config = GenerationConfig {
        max_new_tokens: 20,
        stop_at_eos: false,
        ..Default::default()
    };
    // Batched and left-padded, with the KV cache: must still match the reference's full
    // recomputation.
    let outs = generate(m, &inputs, &config, &ExpertMix::Base).unwrap();
    for (p, out) in prompts.iter().zip(&outs) {
        let want = ids(&p["greedy_new_ids"]);
        let margins = floats(&p["greedy_top2_margins"]);
        // Compare up to the first step whose top-2 margin is within our tolerance.
        let reliable = margins
            .iter()
            .position(|&g| g < 2.0 * TOL)
            .unwrap_or(want.len());
        assert!(
            reliable >= 5 || p["name"] == "digits",
            "fixture has an early near tie"
        );
        assert_eq!(
            &out.token_ids[..reliable],
            &want[..reliable],
            "prompt `{}` (compared {reliable} steps)",
            p["name"]
        );
    }
}

#[test]
fn answers_the_capital_of_france() {
    let m = model();
    let chat = &reference()["chat"];
    let rendered = m
        .render_chat(&[ChatMessage::user("What is the capital of France?")], true)
        .unwrap();
    let out = generate(
        m,
        &[m.encode(&rendered).unwrap()],
        &GenerationConfig::default(),
        &ExpertMix::Base,
    )
    .unwrap();
    assert_eq!(out[0].text.trim(), chat["greedy_answer"].as_str().unwrap());
    assert_eq!(out[0].finish_reason, lm_core::generate::FinishReason::Eos);
}
