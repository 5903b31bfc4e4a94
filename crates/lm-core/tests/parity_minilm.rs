//! all-MiniLM-L6-v2 sentence embeddings against transformers + mean pooling + L2
//! (`tests/fixtures/minilm`, made by `scripts/gen_reference_fixtures.py`).

mod common;

use common::fixture;
use lm_core::model::SentenceEncoder;
use lm_core::testing::{asset_dir, test_device};
use serde_json::Value;

fn load() -> (SentenceEncoder, Value) {
    let enc =
        SentenceEncoder::from_hf_dir(&asset_dir(lm_core::assets::DEFAULT_ENCODER), &test_device())
            .expect("MiniLM loads");
    let text = std::fs::read_to_string(fixture("minilm/reference.json")).unwrap();
    (enc, serde_json::from_str(&text).unwrap())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

#[test]
fn embeddings_match_sentence_transformers() {
    let (enc, reference) = load();
    let sentences: Vec<String> = serde_json::from_value(reference["sentences"].clone()).unwrap();
    let want_ids: Vec<Vec<u32>> = serde_json::from_value(reference["ids"].clone()).unwrap();
    let want: Vec<Vec<f32>> = serde_json::from_value(reference["embeddings"].clone()).unwrap();
    assert!(sentences.len() >= 5);
    for (s, ids) in sentences.iter().zip(&want_ids) {
        assert_eq!(&enc.encode(s).unwrap(), ids, "token ids of {s:?}");
    }
    // Batch of 4 mixes lengths: padding must not matter.
    let got = enc.embed(&sentences, 4).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let c = cosine(g, w);
        assert!(c >= 0.9999, "sentence {i}: cosine {c}");
        let norm: f32 = g.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not unit length: {norm}");
    }
    let pair = cosine(&got[0], &got[1]);
    assert!(
        (pair - 0.7553).abs() < 5e-4,
        "published STS pair cosine 0.7553, got {pair}"
    );
}
