//! Every token id a model can be handed fits its embedding table (transformers#11102: tokens added
//! without resizing the embeddings): the tokenizer's ids and the BOS / EOS / padding ids are
//! checked when a model is loaded (GGUF, HF decoder directory, BERT directory), and ids from the
//! user are checked before they reach the backend, which panics on them.

use std::path::Path;

use lm_core::LmError;
use lm_core::embed::decoder_embeddings;
use lm_core::generate::{GenerationConfig, generate, generate_and_score};
use lm_core::model::{ExpertMix, LanguageModel, SentenceEncoder};
use lm_core::score::{ScoreOptions, ScoreRequest, score, score_per_row_experts};
use lm_core::testing::{
    test_device, tiny_gguf, tiny_language_model, tiny_vocab, write_tiny_bert_dir, write_tiny_hf_dir,
};
use lm_core::train::data::tokenize_examples;
use lm_core::train::{OverflowPolicy, PromptFormat, TrainExample};

fn load_gguf(w: &lm_core::testing::GgufWriter, dir: &Path) -> lm_core::Result<LanguageModel> {
    let path = dir.join("m.gguf");
    w.write(&path).unwrap();
    LanguageModel::from_gguf(&path, &test_device())
}

/// Asserts a load error names the id, the table size and the token or setting.
fn assert_beyond(e: LmError, id: u32, needles: &[&str]) {
    let msg = e.to_string();
    match e {
        LmError::TokenizerBeyondEmbedding { id: got, rows, .. } => {
            assert_eq!((got, rows), (id, 259), "{msg}");
        }
        other => panic!("expected TokenizerBeyondEmbedding, found {other:?}"),
    }
    assert!(msg.contains("259 rows") && msg.contains("resize"), "{msg}");
    for n in needles {
        assert!(msg.contains(n), "`{n}` not in: {msg}");
    }
}

#[test]
fn the_tiny_gguf_loads_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    let m = load_gguf(&tiny_gguf(1), dir.path()).unwrap();
    assert_eq!(m.config().vocab_size, 259);
    let ids = m.encode("<|im_start|>hi").unwrap();
    assert_eq!(ids[0], 1);
    let s = score(
        &m,
        &[ScoreRequest::text(ids)],
        &ScoreOptions::default(),
        &ExpertMix::Base,
    )
    .unwrap();
    assert!(s[0].logprob.is_finite());
}

#[test]
fn a_gguf_token_past_the_table_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    // One more control token than embedding rows (the llama.cpp report's shape).
    let mut tokens = tiny_vocab();
    tokens.push("<|extra_ctl|>".into());
    let mut types = vec![1i32; tokens.len()];
    types[..3].fill(3);
    types[259] = 3;
    let mut w = tiny_gguf(1);
    w.add_str_array("tokenizer.ggml.tokens", &tokens)
        .add_i32_array("tokenizer.ggml.token_type", &types);
    let e = load_gguf(&w, dir.path()).unwrap_err();
    assert_beyond(e, 259, &["added token `<|extra_ctl|>`", "m.gguf"]);

    // A plain vocabulary token past the table, and two of them.
    tokens.push("<|another|>".into());
    let mut w = tiny_gguf(1);
    w.add_str_array("tokenizer.ggml.tokens", &tokens)
        .add_i32_array("tokenizer.ggml.token_type", &vec![1i32; tokens.len()]);
    let e = load_gguf(&w, dir.path()).unwrap_err();
    assert_beyond(
        e,
        259,
        &["vocabulary token `<|extra_ctl|>`", "1 more id(s)"],
    );
}

#[test]
fn gguf_special_ids_past_the_table_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    for (key, id, name) in [
        ("tokenizer.ggml.bos_token_id", 60000, "BOS token"),
        ("tokenizer.ggml.eos_token_id", 259, "EOS token"),
        ("tokenizer.ggml.padding_token_id", 300, "padding token"),
    ] {
        let mut w = tiny_gguf(1);
        w.add_bool("tokenizer.ggml.add_bos_token", true)
            .add_u32(key, id);
        let e = load_gguf(&w, dir.path()).unwrap_err();
        assert_beyond(e, id, &[name, key]);
    }
}

#[test]
fn hf_directory_ids_past_the_table_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("hf");
    write_tiny_hf_dir(&d, 1).unwrap();
    LanguageModel::from_hf_dir(&d, &test_device()).unwrap();

    // An added token past the table in tokenizer.json.
    let mut tok = tokenizers::Tokenizer::from_file(d.join("tokenizer.json")).unwrap();
    tok.add_special_tokens([tokenizers::AddedToken::from("<|extra|>", true)])
        .unwrap();
    let original = std::fs::read(d.join("tokenizer.json")).unwrap();
    tok.save(d.join("tokenizer.json"), false).unwrap();
    let e = LanguageModel::from_hf_dir(&d, &test_device()).unwrap_err();
    assert_beyond(e, 259, &["added token `<|extra|>`"]);
    std::fs::write(d.join("tokenizer.json"), original).unwrap();

    // BOS / EOS / padding ids in config.json.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("config.json")).unwrap()).unwrap();
    for (key, id, name) in [
        (
            "bos_token_id",
            1000,
            "BOS token (bos_token_id in config.json)",
        ),
        (
            "eos_token_id",
            259,
            "EOS token (eos_token_id in config.json)",
        ),
        (
            "pad_token_id",
            4000,
            "padding token (pad_token_id in config.json)",
        ),
    ] {
        let mut c = config.clone();
        c[key] = id.into();
        std::fs::write(d.join("config.json"), c.to_string()).unwrap();
        let e = LanguageModel::from_hf_dir(&d, &test_device()).unwrap_err();
        assert_beyond(e, id, &[name]);
    }
}

#[test]
fn bert_directory_ids_past_the_table_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("bert");
    write_tiny_bert_dir(&d, 1).unwrap();
    let enc = SentenceEncoder::from_hf_dir(&d, &test_device()).unwrap();
    assert_eq!(enc.embed(&["hi".into()], 4).unwrap()[0].len(), 32);
    // Pre-tokenised rows are checked before the lookup (ids and positions).
    let e = enc.embed_ids(&[&[5, 259]]).unwrap_err();
    assert!(
        matches!(
            e,
            LmError::TokenIdOutOfRange {
                id: 259,
                vocab: 259,
                ..
            }
        ),
        "{e}"
    );
    let long = vec![5u32; 65];
    let e = enc.embed_ids(&[&long]).unwrap_err();
    assert!(matches!(e, LmError::ContextOverflow { max: 64, .. }), "{e}");

    let mut tok = tokenizers::Tokenizer::from_file(d.join("tokenizer.json")).unwrap();
    tok.add_tokens([tokenizers::AddedToken::from("[NEW]", false)])
        .unwrap();
    tok.save(d.join("tokenizer.json"), false).unwrap();
    let e = SentenceEncoder::from_hf_dir(&d, &test_device()).unwrap_err();
    assert_beyond(e, 259, &["added token `[NEW]`"]);

    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("config.json")).unwrap()).unwrap();
    c["pad_token_id"] = (-1).into();
    std::fs::write(d.join("config.json"), c.to_string()).unwrap();
    let e = SentenceEncoder::from_hf_dir(&d, &test_device())
        .unwrap_err()
        .to_string();
    assert!(e.contains("pad_token_id") && e.contains("-1"), "{e}");
}

#[test]
fn ids_from_the_user_are_checked_before_the_backend() {
    let device = test_device();
    let m = tiny_language_model(1, &device); // vocab 256
    let out_of_range = |e: LmError, what: &str| {
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                LmError::TokenIdOutOfRange {
                    id: 256,
                    vocab: 256,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains(what) && msg.contains("0 to 255"), "{msg}");
    };
    let bad = ScoreRequest {
        prompt: vec![1, 2],
        target: vec![3, 256],
    };
    let opts = ScoreOptions::default();
    out_of_range(
        score(
            &m,
            &[ScoreRequest::text(vec![1, 2]), bad.clone()],
            &opts,
            &ExpertMix::Base,
        )
        .unwrap_err(),
        "row 1 (target to score)",
    );
    out_of_range(
        score_per_row_experts(&m, &[bad], &[None], &opts).unwrap_err(),
        "row 0 (target to score)",
    );
    let config = GenerationConfig {
        max_new_tokens: 2,
        ..Default::default()
    };
    out_of_range(
        generate(&m, &[vec![1, 256]], &config, &ExpertMix::Base).unwrap_err(),
        "prompt 0",
    );
    out_of_range(
        generate_and_score(
            &m,
            &[vec![1, 2]],
            &[vec![vec![256]]],
            &config,
            &ExpertMix::Base,
        )
        .unwrap_err(),
        "continuation set 0, row 0",
    );
    out_of_range(
        decoder_embeddings(&m, &[vec![256]], 4, &ExpertMix::Base).unwrap_err(),
        "sequence 0",
    );
    let tokens = TrainExample::Tokens {
        ids: vec![1, 256],
        loss_mask: vec![false, true],
    };
    out_of_range(
        tokenize_examples(
            &m,
            &[tokens],
            &PromptFormat::raw(),
            16,
            OverflowPolicy::Skip,
        )
        .unwrap_err(),
        "token example 0",
    );
}
