//! Gemma 3 270M (GGUF Q4_K_M) against transformers (`tests/fixtures/gemma3/reference.json`, made
//! by `scripts/gen_gemma3_reference.py`): token ids, per-token log-probs and last-position logits
//! within 1e-3, and 20 greedy tokens, on six prompts, one longer than the 512-token sliding
//! window. The model is an optional asset (`openexpert fetch gemma3-270m`, 253 MB): without it
//! every test says so and passes.

mod common;

use std::sync::OnceLock;

use common::fixture;
use lm_core::generate::{GenerationConfig, generate};
use lm_core::model::{DecoderArch, ExpertMix, LanguageModel};
use lm_core::score::{ScoreOptions, ScoreRequest, score};
use lm_core::testing::{GEMMA3_MODEL, max_abs_diff, model_if_fetched, test_device};
use serde_json::Value;

const TOL: f32 = 1e-3;

fn model() -> Option<&'static LanguageModel> {
    static MODEL: OnceLock<Option<LanguageModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = model_if_fetched(GEMMA3_MODEL)?;
            Some(LanguageModel::from_gguf(&path, &test_device()).expect("Gemma 3 loads"))
        })
        .as_ref()
}

fn reference() -> &'static Value {
    static REF: OnceLock<Value> = OnceLock::new();
    REF.get_or_init(|| {
        let text = std::fs::read_to_string(fixture("gemma3/reference.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

fn prompts() -> &'static [Value] {
    reference()["prompts"].as_array().unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn config_and_token_ids_match() {
    let Some(m) = model() else { return };
    let c = m.config();
    assert_eq!(c.arch, DecoderArch::Gemma3);
    assert_eq!((c.num_layers, c.hidden_size, c.head_dim), (18, 640, 256));
    assert_eq!(c.sliding_window, Some(512));
    let locals: Vec<bool> = (0..c.num_layers).map(|i| c.is_local_layer(i)).collect();
    let want: Vec<bool> = reference()["config"]["layer_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t == "sliding_attention")
        .collect();
    assert_eq!(locals, want, "local / global layers");
    assert!(
        prompts().iter().any(|p| ids(&p["ids"]).len() > 512),
        "a prompt is longer than the sliding window"
    );
    for p in prompts() {
        let text = p["text"].as_str().unwrap();
        assert_eq!(m.encode(text).unwrap(), ids(&p["ids"]), "{text:?}");
    }
}

#[test]
fn logprobs_and_last_logits_match_within_1e3() {
    let Some(m) = model() else { return };
    let requests: Vec<ScoreRequest> = prompts()
        .iter()
        .map(|p| ScoreRequest::text(ids(&p["ids"])))
        .collect();
    // Batched (right-padded): padding and the window must not interfere. The default token
    // budget per pass keeps the [rows, seq, 262144] logits of a pass near 1 GB.
    let options = ScoreOptions {
        batch_size: requests.len(),
        keep_last_logits: true,
        ..Default::default()
    };
    let scores = score(m, &requests, &options, &ExpertMix::Base).unwrap();
    let (mut worst_lp, mut worst_logit) = (0f32, 0f32);
    for (p, s) in prompts().iter().zip(&scores) {
        let n = ids(&p["ids"]).len();
        let d = max_abs_diff(&s.token_logprobs, &floats(&p["token_logprobs"]));
        worst_lp = worst_lp.max(d);
        assert!(d < TOL, "{n}-token prompt: per-token log-prob max diff {d}");
        let logits = s.last_logits.as_ref().unwrap();
        let top: Vec<u32> = ids(&p["last_top_ids"]);
        let got: Vec<f32> = top.iter().map(|&i| logits[i as usize]).collect();
        let d = max_abs_diff(&got, &floats(&p["last_top_logits"]));
        worst_logit = worst_logit.max(d);
        assert!(
            d < TOL,
            "{n}-token prompt: last-position top logits max diff {d}"
        );
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = max + logits.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
        let want = p["last_logsumexp"].as_f64().unwrap() as f32;
        assert!(
            (lse - want).abs() < TOL,
            "{n}-token prompt: log-sum-exp {lse} vs {want}"
        );
        // Our own top logit is the reference's.
        let argmax = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(argmax as u32, top[0]);
    }
    eprintln!(
        "gemma3 parity: per-token log-prob max diff {worst_lp:.2e}, last-position logit max diff {worst_logit:.2e}"
    );
}

#[test]
fn greedy_continuations_match() {
    let Some(m) = model() else { return };
    let inputs: Vec<Vec<u32>> = prompts().iter().map(|p| ids(&p["ids"])).collect();
    let config = GenerationConfig {
        max_new_tokens: 20,
        stop_at_eos: false,
        ..Default::default()
    };
    // Batched and left-padded with the KV cache, the long prompt decoding past the window.
    let outs = generate(m, &inputs, &config, &ExpertMix::Base).unwrap();
    for (p, out) in prompts().iter().zip(&outs) {
        assert_eq!(
            out.token_ids,
            ids(&p["greedy_new_ids"]),
            "{:?} continued as {:?}, expected {:?}",
            p["text"],
            out.text,
            p["greedy_text"]
        );
    }
}
