//! The tokenizer rebuilt from SmolLM2's GGUF gives the reference ids (fixtures from
//! `scripts/gen_tokenizer_fixtures.py`), and `tokenizer_from_json` matches HF on MiniLM.

use std::path::PathBuf;

use lm_core::io::gguf::{GgufFile, GgufWriter};
use lm_core::tokenizer::{TokenizerSettings, tokenizer_from_gguf, tokenizer_from_json};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokenizer")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn home() -> PathBuf {
    std::env::var_os("OPENEXPERT_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/openexpert")
        })
}

fn asset(rel: &str) -> Option<PathBuf> {
    let p = home().join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("note: {} absent, skipping", p.display());
        None
    }
}

/// The default model's GGUF, or `None` (and a note) when it is not fetched.
fn default_model() -> Option<PathBuf> {
    lm_core::testing::default_model_if_fetched()
}

fn ids_of(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn smollm2_gguf_tokenizer_matches_the_reference_ids() {
    let Some(path) = default_model() else {
        return;
    };
    let gguf = GgufFile::open(&path).unwrap();
    let tok = tokenizer_from_gguf(&gguf).unwrap();
    assert_eq!(tok.get_vocab_size(true), 49152);
    let fx = fixture("smollm2_gguf.json");
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = ids_of(&case["ids"]);
        // SmolLM2 adds no special tokens: with and without them, the same ids.
        for add_special in [false, true] {
            let got = tok.encode(text, add_special).unwrap().get_ids().to_vec();
            if got != want {
                failures.push(format!(
                    "{text:?} (add_special={add_special}): got {got:?}, want {want:?}"
                ));
            }
        }
        let decoded = tok.decode(&want, false).unwrap();
        assert_eq!(
            decoded,
            case["decoded"].as_str().unwrap(),
            "decode of {text:?}"
        );
        let skipped = tok.decode(&want, true).unwrap();
        assert_eq!(
            skipped,
            case["decoded_skip_special"].as_str().unwrap(),
            "decode(skip) of {text:?}"
        );
        assert_eq!(decoded, text, "round trip of {text:?}");
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The fixture covers a text where transformers' GGUF path (GPT-2 regex only) differs from the
    // real tokenizer, so this test would catch a missing digit split.
    assert!(
        !fx["texts_where_transformers_gguf_differs"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// SmolLM2's vocabulary under the `qwen2` and `llama-bpe` pre-tokenizers: ids equal those of
/// the Python tokenizers built as the real Qwen2 tokenizer (NFC + split regex) and transformers'
/// `llama-bpe` rule build them.
#[test]
fn other_pre_tokenizers_match_python_on_the_same_vocab() {
    let Some(path) = default_model() else {
        return;
    };
    let real = GgufFile::open(&path).unwrap();
    let fx = fixture("smollm2_gguf.json");
    for (pre, key) in [
        ("qwen2", "ids_pre_qwen2"),
        ("llama-bpe", "ids_pre_llama_bpe"),
    ] {
        let mut w = GgufWriter::new();
        for (k, v) in real.metadata() {
            if k.starts_with("tokenizer.ggml.") {
                w.add(k, v.clone());
            }
        }
        w.add_str("tokenizer.ggml.pre", pre);
        let file = GgufFile::from_bytes(w.to_bytes(), format!("{pre}.gguf")).unwrap();
        let tok = tokenizer_from_gguf(&file).unwrap();
        let mut differs_from_smollm = 0;
        for case in fx["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want = ids_of(&case[key]);
            let got = tok.encode(text, false).unwrap().get_ids().to_vec();
            assert_eq!(got, want, "pre {pre}: {text:?}");
            differs_from_smollm += usize::from(want != ids_of(&case["ids"]));
        }
        assert!(
            differs_from_smollm > 0,
            "the fixture does not tell {pre} from smollm"
        );
    }
}

#[test]
fn smollm2_control_tokens_are_whole_and_special() {
    let Some(path) = default_model() else {
        return;
    };
    let gguf = GgufFile::open(&path).unwrap();
    let tok = tokenizer_from_gguf(&gguf).unwrap();
    let enc = tok.encode("<|im_start|>user\nHi<|im_end|>", false).unwrap();
    assert_eq!(enc.get_ids().first(), Some(&1));
    assert_eq!(enc.get_ids().last(), Some(&2));
    assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "user\nHi");
    let s = TokenizerSettings::from_gguf(&gguf).unwrap();
    assert_eq!(
        s,
        TokenizerSettings {
            add_bos: false,
            add_eos: false,
            bos_id: Some(1),
            eos_id: Some(2),
            pad_id: Some(2)
        }
    );
}

#[test]
fn minilm_tokenizer_json_matches_hf() {
    let Some(dir) = asset("models/minilm-l6-v2") else {
        return;
    };
    let tok = tokenizer_from_json(dir.join("tokenizer.json")).unwrap();
    let fx = fixture("minilm.json");
    for case in fx["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = tok.encode(text, true).unwrap().get_ids().to_vec();
        assert_eq!(got, ids_of(&case["ids"]), "{text:?}");
        assert_eq!(
            tok.decode(&got, true).unwrap(),
            case["decoded"].as_str().unwrap(),
            "{text:?}"
        );
    }
}

#[test]
fn tokenizer_from_json_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let e = tokenizer_from_json(dir.path().join("absent.json"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("absent.json"), "{e}");
    let p = dir.path().join("bad.json");
    std::fs::write(&p, "{\"model\": 3}").unwrap();
    let e = tokenizer_from_json(&p).unwrap_err().to_string();
    assert!(
        e.contains("bad.json") && e.contains("not a valid tokenizer.json"),
        "{e}"
    );
}
