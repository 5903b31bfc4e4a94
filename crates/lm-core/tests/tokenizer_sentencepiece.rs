//! SentencePiece tokenizers rebuilt from GGUF metadata give transformers' ids and decoded texts:
//!
//! - a tiny Llama-style vocabulary (`tests/fixtures/sentencepiece/tiny_vocab.json`, trained with
//!   the `sentencepiece` package by `scripts/gen_sentencepiece_fixtures.py`), written into a GGUF
//!   with lm-core's test writer: byte fallback, a user-defined and a control symbol, `▁` prefix;
//! - Gemma 3's 262k vocabulary (`tests/fixtures/gemma3/tokenizer.json`), when the optional asset
//!   `gemma3-270m` is fetched (otherwise the test says so and passes).

mod common;

use common::fixture;
use lm_core::LmError;
use lm_core::io::gguf::{GgufFile, GgufWriter};
use lm_core::testing::{GEMMA3_MODEL, model_if_fetched};
use lm_core::tokenizer::{TokenizerSettings, check_ids_fit_embedding, tokenizer_from_gguf};
use serde_json::Value;
use std::path::Path;
use tokenizers::Tokenizer;

fn load(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(rel)).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

/// The tiny vocabulary as a Llama GGUF (tokenizer metadata only); `scores: false` leaves them out.
fn tiny_gguf(fx: &Value, scores: bool) -> GgufFile {
    let tokens: Vec<String> = serde_json::from_value(fx["tokens"].clone()).unwrap();
    let types: Vec<i32> = serde_json::from_value(fx["token_types"].clone()).unwrap();
    let s: Vec<f32> = serde_json::from_value(fx["scores"].clone()).unwrap();
    let mut w = GgufWriter::new();
    w.add_str("general.architecture", "llama")
        .add_str("tokenizer.ggml.model", "llama")
        .add_str("tokenizer.ggml.pre", "default")
        .add_str_array("tokenizer.ggml.tokens", &tokens)
        .add_i32_array("tokenizer.ggml.token_type", &types)
        .add_u32(
            "tokenizer.ggml.bos_token_id",
            fx["bos_id"].as_u64().unwrap() as u32,
        )
        .add_u32(
            "tokenizer.ggml.eos_token_id",
            fx["eos_id"].as_u64().unwrap() as u32,
        )
        .add_u32(
            "tokenizer.ggml.unknown_token_id",
            fx["unk_id"].as_u64().unwrap() as u32,
        )
        .add_bool("tokenizer.ggml.add_bos_token", true)
        .add_bool("tokenizer.ggml.add_eos_token", false);
    if scores {
        w.add_f32_array("tokenizer.ggml.scores", &s);
    }
    GgufFile::from_bytes(w.to_bytes(), "tiny-sp.gguf").unwrap()
}

/// Every case's ids (without and with the BOS the settings ask for) and decoded text.
fn check_cases(tok: &Tokenizer, settings: &TokenizerSettings, fx: &Value) {
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text, false).unwrap().get_ids().to_vec();
        let want = ids(&case["ids"]);
        if got != want {
            failures.push(format!("{text:?}: ids {got:?}, expected {want:?}"));
            continue;
        }
        let mut with_bos: Vec<u32> = settings
            .bos_id
            .filter(|_| settings.add_bos)
            .into_iter()
            .collect();
        with_bos.extend(&got);
        if with_bos != ids(&case["ids_with_special_tokens"]) {
            failures.push(format!("{text:?}: with special tokens {with_bos:?}"));
        }
        let decoded = tok.decode(&got, false).unwrap();
        if decoded != case["decoded"].as_str().unwrap() {
            failures.push(format!(
                "{text:?}: decoded {decoded:?}, expected {:?}",
                case["decoded"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tiny_sentencepiece_vocabulary_matches_transformers() {
    let fx = load("sentencepiece/tiny_vocab.json");
    let gguf = tiny_gguf(&fx, true);
    let tok = tokenizer_from_gguf(&gguf).unwrap();
    let settings = TokenizerSettings::from_gguf(&gguf).unwrap();
    assert!(settings.add_bos && !settings.add_eos);
    check_cases(&tok, &settings, &fx);
    // Byte fallback: a character outside the vocabulary is its UTF-8 bytes, and decodes back.
    let enc = tok.encode("🦀", false).unwrap();
    let pieces = enc.get_tokens();
    assert!(pieces.iter().any(|p| p == "<0xF0>"), "{pieces:?}");
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), "🦀");
}

/// `(id, what, others)` of a [`LmError::TokenizerBeyondEmbedding`] from a table of `rows` rows.
fn beyond(tok: &Tokenizer, specials: &[(String, u32)], rows: usize) -> (u32, String, usize) {
    match check_ids_fit_embedding(tok, specials, rows, Path::new("sp.gguf")) {
        Err(LmError::TokenizerBeyondEmbedding {
            id, what, others, ..
        }) => (id, what, others),
        other => panic!("expected TokenizerBeyondEmbedding, found {other:?}"),
    }
}

#[test]
fn sentencepiece_ids_past_the_table_are_named() {
    let fx = load("sentencepiece/tiny_vocab.json");
    let tok = tokenizer_from_gguf(&tiny_gguf(&fx, true)).unwrap();
    let n = fx["tokens"].as_array().unwrap().len();
    // Byte-fallback, control and user-defined tokens all have their file ids.
    check_ids_fit_embedding(
        &tok,
        &[("the BOS token".into(), 1)],
        n,
        Path::new("sp.gguf"),
    )
    .unwrap();
    let (id, what, others) = beyond(&tok, &[], n - 1);
    assert_eq!((id as usize, others), (n - 1, 0), "{what}");
    assert!(
        what.starts_with("the tokenizer's vocabulary token"),
        "{what}"
    );
    // `<sep>` (user-defined, id 4) is an added token; 4 rows leave every later id out.
    let (id, what, others) = beyond(&tok, &[], 4);
    assert_eq!((id, others), (4, n - 5));
    assert_eq!(what, "the tokenizer's added token `<sep>`");
    // The control token `</s>` (id 2) is named by the setting that declares it.
    let (id, what, _) = beyond(&tok, &[("the EOS token (x)".into(), 2)], 2);
    assert_eq!((id, what.as_str()), (2, "the EOS token (x)"));
}

#[test]
fn sentencepiece_without_scores_is_refused_clearly() {
    let fx = load("sentencepiece/tiny_vocab.json");
    let e = tokenizer_from_gguf(&tiny_gguf(&fx, false))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("without scores") && e.contains("tokenizer.ggml.scores"),
        "{e}"
    );
    // Scores of the wrong length name the key and both counts.
    let mut w = GgufWriter::new();
    w.add_str("tokenizer.ggml.model", "llama")
        .add_str_array("tokenizer.ggml.tokens", &["<unk>", "a"])
        .add_f32_array("tokenizer.ggml.scores", &[0.0]);
    let f = GgufFile::from_bytes(w.to_bytes(), "short.gguf").unwrap();
    let e = tokenizer_from_gguf(&f).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer.ggml.scores") && e.contains("1 entries") && e.contains("(2)"),
        "{e}"
    );
}

#[test]
fn gemma3_tokenizer_matches_transformers() {
    let Some(path) = model_if_fetched(GEMMA3_MODEL) else {
        return;
    };
    let gguf = GgufFile::open(&path).unwrap();
    let t0 = std::time::Instant::now();
    let tok = tokenizer_from_gguf(&gguf).unwrap();
    eprintln!("gemma3 tokenizer built in {:.2?}", t0.elapsed());
    assert_eq!(tok.get_vocab_size(true), 262_144);
    let settings = TokenizerSettings::from_gguf(&gguf).unwrap();
    assert_eq!((settings.add_bos, settings.bos_id), (true, Some(2)));
    check_cases(&tok, &settings, &load("gemma3/tokenizer.json"));

    // The load-time check that every id fits the embedding table, on the 262k vocabulary.
    let specials = [("the BOS token".to_string(), 2), ("the pad".to_string(), 0)];
    let t0 = std::time::Instant::now();
    check_ids_fit_embedding(&tok, &specials, 262_144, &path).unwrap();
    eprintln!(
        "gemma3 ids checked against the embedding table in {:.2?}",
        t0.elapsed()
    );
    let (id, what, others) = beyond(&tok, &specials, 262_143);
    assert_eq!((id, others), (262_143, 0), "{what}");
}
