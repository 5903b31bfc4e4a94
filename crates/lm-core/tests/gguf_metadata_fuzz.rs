//! Fuzzing what is read *from* GGUF metadata (the reader's own byte-level fuzzing is in
//! `io::gguf::reader`): the tiny model's config and tokenizer keys replaced by values of any type
//! and size never panic the config, tokenizer, special-token and id checks, nor a full load.

use lm_core::io::gguf::{GgufFile, GgufValue, GgufValueType};
use lm_core::model::LanguageModel;
use lm_core::model::loader::decoder_config_from_gguf;
use lm_core::testing::{test_device, tiny_gguf};
use lm_core::tokenizer::{TokenizerSettings, check_ids_fit_embedding, tokenizer_from_gguf};
use proptest::prelude::*;

/// The keys a model load interprets.
const KEYS: [&str; 22] = [
    "general.architecture",
    "general.alignment",
    "llama.vocab_size",
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.block_count",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.key_length",
    "llama.context_length",
    "llama.rope.freq_base",
    "llama.attention.layer_norm_rms_epsilon",
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.chat_template",
];

/// Strings that matter to the loaders, and odd ones.
fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("llama".to_string()),
        Just("qwen2".to_string()),
        Just("gpt2".to_string()),
        Just("smollm".to_string()),
        Just("a b".to_string()),
        Just("{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}".to_string()),
        Just("{% for %}".to_string()),
        "\\PC{0,12}",
    ]
}

/// Integers at the edges (0, 1, small, around the vocabulary size, the type's extremes).
fn int() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(1),
        Just(-1),
        Just(258),
        Just(259),
        Just(60000),
        Just(u32::MAX as i64),
        Just(i64::MAX),
        Just(i64::MIN),
        0i64..600,
    ]
}

fn value() -> impl Strategy<Value = GgufValue> {
    let scalar = prop_oneof![
        int().prop_map(|i| GgufValue::U32(i as u32)),
        int().prop_map(|i| GgufValue::I32(i as i32)),
        int().prop_map(|i| GgufValue::U64(i as u64)),
        int().prop_map(GgufValue::I64),
        int().prop_map(|i| GgufValue::U8(i as u8)),
        prop_oneof![
            Just(f32::NAN),
            Just(f32::INFINITY),
            Just(0.0f32),
            Just(-1.0),
            Just(1e-5),
            Just(1e30)
        ]
        .prop_map(GgufValue::F32),
        any::<bool>().prop_map(GgufValue::Bool),
        string().prop_map(GgufValue::String),
    ];
    prop_oneof![
        4 => scalar,
        1 => proptest::collection::vec(string(), 0..6).prop_map(|v| GgufValue::Array {
            item_type: GgufValueType::String,
            items: v.into_iter().map(GgufValue::String).collect(),
        }),
        1 => proptest::collection::vec(int(), 0..6).prop_map(|v| GgufValue::Array {
            item_type: GgufValueType::I32,
            items: v.into_iter().map(|i| GgufValue::I32(i as i32)).collect(),
        }),
    ]
}

/// 1 to 4 keys of [`KEYS`] replaced (or removed, as `None`).
fn edits() -> impl Strategy<Value = Vec<(usize, Option<GgufValue>)>> {
    proptest::collection::vec(
        (0..KEYS.len(), proptest::option::weighted(0.85, value())),
        1..4,
    )
}

fn edited(edits: &[(usize, Option<GgufValue>)]) -> Vec<u8> {
    let mut w = tiny_gguf(5);
    for (k, v) in edits {
        match v {
            Some(v) => w.add(KEYS[*k], v.clone()),
            None => w.remove(KEYS[*k]),
        };
    }
    w.to_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn metadata_of_any_type_never_panics_the_readers(edits in edits()) {
        let Ok(file) = GgufFile::from_bytes(edited(&edits), "fuzz.gguf") else {
            return Ok(());
        };
        let config = decoder_config_from_gguf(&file, std::path::Path::new("fuzz.gguf"));
        let settings = TokenizerSettings::from_gguf(&file);
        if let Ok(tokenizer) = tokenizer_from_gguf(&file) {
            let rows = config.as_ref().map_or(259, |c| c.vocab_size);
            let specials: Vec<(String, u32)> = settings
                .iter()
                .flat_map(|s| [s.bos_id, s.eos_id, s.pad_id])
                .flatten()
                .map(|id| ("special".to_string(), id))
                .collect();
            let _ = check_ids_fit_embedding(&tokenizer, &specials, rows, std::path::Path::new("f"));
            let _ = tokenizer.encode("Hi <|im_start|> 12", false);
        }
    }
}

proptest! {
    // A full load builds the tiny model: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn loading_an_edited_tiny_model_never_panics(edits in edits()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        std::fs::write(&path, edited(&edits)).unwrap();
        if let Ok(m) = LanguageModel::from_gguf(&path, &test_device()) {
            // Whatever loaded encodes, renders and scores without panicking.
            if let Ok(ids) = m.encode("Hello") {
                let _ = lm_core::score::score(
                    &m,
                    &[lm_core::score::ScoreRequest::text(ids)],
                    &lm_core::score::ScoreOptions::default(),
                    &lm_core::model::ExpertMix::Base,
                );
            }
            let _ = m.render_chat(&[lm_core::chat_template::ChatMessage::user("Hi")], true);
        }
    }
}
