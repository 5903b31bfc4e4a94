//! Tokenizers: from a `tokenizer.json`, or rebuilt from the `tokenizer.ggml.*` metadata of a GGUF.
//!
//! A GGUF file carries no `tokenizer.json`; llama.cpp stores the vocabulary, the merges (or
//! scores), a type per token and a pre-tokenizer name (`tokenizer.ggml.pre`).
//! [`tokenizer_from_gguf`] rebuilds the tokenizer transformers builds from the same metadata, so
//! token ids match the reference. Two vocabulary kinds (`tokenizer.ggml.model`):
//!
//! - `llama`: SentencePiece (Llama 2, Mistral, Gemma), see [`sentencepiece`];
//! - `gpt2`: byte-level BPE (Llama 3, Qwen2, SmolLM), described below.
//!
//! The byte-level BPE tokenizer is the one the model's own Hugging Face `tokenizer.json` describes:
//!
//! - the vocabulary is spelled in GPT-2's byte alphabet (tokens using other characters are
//!   re-spelled byte by byte, as transformers' GGUF loader does);
//! - the pre-tokenizer is picked from `tokenizer.ggml.pre`: `smollm` splits every digit then
//!   applies the GPT-2 byte-level regex (SmolLM2's `tokenizer.json`; llama.cpp's `smollm` does the
//!   same), `qwen2` normalises to NFC and splits with Qwen2's regex, `llama-bpe` / `llama3` with
//!   Llama 3's; anything else gets the plain GPT-2 byte-level regex;
//! - tokens typed control (3) become special added tokens and user-defined (4) plain added tokens,
//!   so `<|im_start|>` or `<think>` are matched whole and never split.
//!
//! No post-processor is installed: whether to prepend BOS / append EOS is reported in
//! [`TokenizerSettings`] and left to the caller, so encoding with or without special tokens gives
//! the same ids.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::{LmError, Result};
use crate::io::gguf::GgufFile;

pub mod sentencepiece;

pub use sentencepiece::{SentencePieceFlavour, sentencepiece_from_gguf};

/// llama.cpp token type of control tokens (`<|im_start|>`, `<|endoftext|>`).
const TOKEN_TYPE_CONTROL: i64 = 3;
/// llama.cpp token type of user-defined added tokens (`<think>`).
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The `tokenizer.ggml.model` values lm-core builds tokenizers for.
pub const SUPPORTED_GGUF_TOKENIZERS: &str = "`llama` (SentencePiece: Llama 2, Mistral, Gemma) and `gpt2` (byte-level BPE: Llama 3, Qwen2, SmolLM)";

/// Qwen2's pre-tokenizer regex (its `tokenizer.json`, and llama.cpp's `qwen2`).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Llama 3's pre-tokenizer regex (llama.cpp's `llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

pub(crate) fn tok_err(detail: impl Into<String>) -> LmError {
    LmError::Tokenizer {
        detail: detail.into(),
    }
}

/// Loads a Hugging Face `tokenizer.json`.
///
/// Padding and truncation stored in the file are cleared, as transformers does for a plain
/// `tokenizer(text)` call; callers that want them set them explicitly.
///
/// # Errors
/// [`LmError::Io`] when the file cannot be read; [`LmError::Tokenizer`] when it is not a valid
/// tokenizer description.
pub fn tokenizer_from_json(path: impl AsRef<Path>) -> Result<Tokenizer> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
    let mut tokenizer = text.parse::<Tokenizer>().map_err(|e| {
        tok_err(format!(
            "{}: not a valid tokenizer.json: {e}",
            path.display()
        ))
    })?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| tok_err(format!("{}: cannot clear truncation: {e}", path.display())))?;
    Ok(tokenizer)
}

/// GPT-2's byte-to-character table: printable bytes map to themselves, the others to `U+0100..`.
fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, 33..=126 | 161..=172 | 174..=255);
        table[b as usize] = if printable {
            b as char
        } else {
            let c = char::from_u32(next).unwrap_or('\u{FFFD}');
            next += 1;
            c
        };
    }
    table
}

/// The pre-tokenizer (and normaliser) `tokenizer.ggml.pre` names.
fn pre_tokenizer_for(pre: Option<&str>) -> Result<(PreTokenizerWrapper, bool)> {
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(
            SplitPattern::Regex(re.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| tok_err(format!("bad pre-tokenizer regex: {e}")))?;
        Ok(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, false, false).into(),
        ])
        .into())
    };
    Ok(match pre {
        Some("smollm") => (
            Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            false,
        ),
        Some("qwen2" | "deepseek-r1-qwen" | "megrez") => (split(QWEN2_SPLIT)?, true),
        Some("llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" | "dbrx" | "falcon3") => {
            (split(LLAMA3_SPLIT)?, false)
        }
        other => {
            if !matches!(other, None | Some("gpt2" | "default")) {
                tracing::warn!(
                    pre = other,
                    "unknown tokenizer.ggml.pre: using the GPT-2 byte-level pre-tokenizer; ids may differ from the reference tokenizer"
                );
            }
            (ByteLevel::new(false, true, true).into(), false)
        }
    })
}

/// Builds the tokenizer described by a GGUF's `tokenizer.ggml.*` metadata: SentencePiece
/// (`tokenizer.ggml.model = llama`, [`sentencepiece_from_gguf`]) or byte-level BPE (`gpt2`).
///
/// # Errors
/// [`LmError::Config`] when a required key (`tokenizer.ggml.tokens`, `tokenizer.ggml.merges`...)
/// is missing or mistyped; [`LmError::Tokenizer`] for another tokenizer model, a SentencePiece
/// vocabulary without scores, or merges that do not fit the vocabulary.
pub fn tokenizer_from_gguf(gguf: &GgufFile) -> Result<Tokenizer> {
    match gguf.get_str("tokenizer.ggml.model")? {
        "gpt2" => byte_level_from_gguf(gguf),
        "llama" => sentencepiece_from_gguf(gguf),
        model => Err(tok_err(format!(
            "{}: tokenizer.ggml.model is `{model}`; supported are {SUPPORTED_GGUF_TOKENIZERS}. Use the model's Hugging Face directory (tokenizer.json) instead.",
            gguf.path().display()
        ))),
    }
}

/// The byte-level BPE tokenizer (`tokenizer.ggml.model = gpt2`) of a GGUF.
fn byte_level_from_gguf(gguf: &GgufFile) -> Result<Tokenizer> {
    let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
    let merges = gguf.get_str_array("tokenizer.ggml.merges")?;
    let token_types = gguf_token_types(gguf, tokens.len())?;

    let table = byte_to_char();
    let alphabet: std::collections::HashSet<char> = table.iter().copied().collect();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let spelled: Vec<String> = tokens
        .iter()
        .map(|t| {
            if in_alphabet(t) {
                t.to_string()
            } else {
                t.bytes().map(|b| table[b as usize]).collect()
            }
        })
        .collect();
    let vocab: Vocab = spelled
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| match m.split(' ').collect::<Vec<_>>()[..] {
            [a, b] => Ok((a.to_string(), b.to_string())),
            _ => Err(tok_err(format!(
                "{}: merge #{i} `{m}` is not two tokens separated by one space",
                gguf.path().display()
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| tok_err(format!("{}: cannot build BPE: {e}", gguf.path().display())))?;

    let mut tokenizer = Tokenizer::new(bpe);
    let (pre, nfc) = pre_tokenizer_for(gguf.get_str_opt("tokenizer.ggml.pre")?)?;
    tokenizer.with_pre_tokenizer(Some(pre));
    if nfc {
        tokenizer
            .with_normalizer(Some(NFC))
            .map_err(|e| tok_err(format!("cannot set the NFC normaliser: {e}")))?;
    }
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

    // As transformers: a control token is added (special) by its original spelling, unless that
    // uses characters outside the byte alphabet (a llama.cpp mislabel); a user-defined token is
    // added (not special) when its original spelling is in the vocabulary.
    add_gguf_added_tokens(&mut tokenizer, &tokens, &token_types, in_alphabet)?;
    Ok(tokenizer)
}

/// `tokenizer.ggml.token_type` of a GGUF with `n_tokens` tokens: one type per token, or empty
/// when the key is absent.
///
/// # Errors
/// [`LmError::Config`] when the array is not one entry per token.
fn gguf_token_types(gguf: &GgufFile, n_tokens: usize) -> Result<Vec<i64>> {
    let Some(_) = gguf.get("tokenizer.ggml.token_type") else {
        return Ok(Vec::new());
    };
    let types = gguf.get_int_array("tokenizer.ggml.token_type")?;
    if types.len() != n_tokens {
        return Err(LmError::Config {
            path: gguf.path().to_path_buf(),
            detail: format!(
                "tokenizer.ggml.token_type has {} entries, expected one per token ({n_tokens})",
                types.len(),
            ),
        });
    }
    Ok(types)
}

/// Adds a GGUF vocabulary's control and user-defined tokens to `tokenizer`, as transformers'
/// `add_gguf_special_tokens`: a control token is added as special by its spelling in the file
/// (when `keep_control` accepts that spelling); a user-defined token is added, not special,
/// when its spelling is in the vocabulary. `tokens` and `token_types` are the GGUF's parallel
/// arrays (`token_types` may be empty: nothing is added).
fn add_gguf_added_tokens(
    tokenizer: &mut Tokenizer,
    tokens: &[&str],
    token_types: &[i64],
    keep_control: impl Fn(&str) -> bool,
) -> Result<()> {
    let of_type = |ty: i64| {
        tokens
            .iter()
            .zip(token_types)
            .filter(move |(_, t)| **t == ty)
            .map(|(s, _)| *s)
    };
    let control: Vec<AddedToken> = of_type(TOKEN_TYPE_CONTROL)
        .filter(|s| keep_control(s))
        .map(|s| AddedToken::from(s, true).normalized(false))
        .collect();
    let user: Vec<AddedToken> = of_type(TOKEN_TYPE_USER_DEFINED)
        .filter(|s| tokenizer.token_to_id(s).is_some())
        .map(|s| AddedToken::from(s, false).normalized(false))
        .collect();
    tokenizer
        .add_special_tokens(control)
        .map_err(|e| tok_err(format!("cannot add control tokens: {e}")))?;
    tokenizer
        .add_tokens(user)
        .map_err(|e| tok_err(format!("cannot add user-defined tokens: {e}")))?;
    Ok(())
}

/// Checks that every id a model's tokenizer can produce has a row in its embedding table of
/// `rows` rows: the ids of the vocabulary and of the added tokens, and the special-token ids the
/// model declares (`specials`: `(what, id)`, e.g. `("bos_token_id (config.json)", 1)`).
///
/// Run at load, so a tokenizer grown without resizing the embeddings (transformers#11102) is
/// refused with a message instead of failing inside the backend at the first such token.
///
/// # Errors
/// [`LmError::TokenizerBeyondEmbedding`] naming the smallest id past the table (its token or
/// setting) and how many others there are.
pub fn check_ids_fit_embedding(
    tokenizer: &Tokenizer,
    specials: &[(String, u32)],
    rows: usize,
    path: &Path,
) -> Result<()> {
    let added = tokenizer.get_added_tokens_decoder();
    let mut past: Vec<(u32, String)> = tokenizer
        .get_vocab(true)
        .into_iter()
        .filter(|&(_, id)| id as usize >= rows)
        .map(|(token, id)| {
            let kind = if added.contains_key(&id) {
                "added token"
            } else {
                "vocabulary token"
            };
            (id, format!("the tokenizer's {kind} `{}`", shorten(&token)))
        })
        .collect();
    past.extend(
        specials
            .iter()
            .filter(|(_, id)| *id as usize >= rows)
            .map(|(what, id)| (*id, what.clone())),
    );
    // The smallest id first; for one id, a named setting before the token spelling it.
    past.sort_by_key(|(id, what)| (*id, what.starts_with("the tokenizer")));
    past.dedup_by_key(|(id, _)| *id);
    match past.first() {
        None => Ok(()),
        Some((id, what)) => Err(LmError::TokenizerBeyondEmbedding {
            path: path.to_path_buf(),
            what: what.clone(),
            id: *id,
            rows,
            others: past.len() - 1,
        }),
    }
}

/// Checks that every id of `ids` is below `vocab` (the rows of the embedding table they will
/// be looked up in); `what` names the input for the message.
///
/// # Errors
/// [`LmError::TokenIdOutOfRange`] with the first id past the table.
pub fn check_ids_in_vocab(ids: &[u32], vocab: usize, what: impl FnOnce() -> String) -> Result<()> {
    match ids.iter().find(|&&id| id as usize >= vocab) {
        None => Ok(()),
        Some(&id) => Err(LmError::TokenIdOutOfRange {
            what: what(),
            id,
            vocab,
        }),
    }
}

/// A token as printed in messages: at most 40 characters.
fn shorten(token: &str) -> String {
    if token.chars().count() <= 40 {
        token.to_string()
    } else {
        format!("{}...", token.chars().take(40).collect::<String>())
    }
}

/// Whether and which special tokens a model's prompts get, from GGUF metadata or a HF
/// `tokenizer_config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenizerSettings {
    /// Prepend `bos_id` to encoded prompts.
    pub add_bos: bool,
    /// Append `eos_id` to encoded prompts.
    pub add_eos: bool,
    /// Beginning-of-sequence token.
    pub bos_id: Option<u32>,
    /// End-of-sequence token.
    pub eos_id: Option<u32>,
    /// Padding token.
    pub pad_id: Option<u32>,
}

impl TokenizerSettings {
    /// Reads `tokenizer.ggml.{add_bos_token, add_eos_token, bos_token_id, eos_token_id,
    /// padding_token_id}`. As in transformers, a sentencepiece (`llama`) vocabulary without the
    /// flag adds BOS; byte-level ones do not.
    ///
    /// # Errors
    /// [`LmError::Config`] when a key is present with the wrong type.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let sentencepiece = gguf.get_str_opt("tokenizer.ggml.model")? == Some("llama");
        Ok(TokenizerSettings {
            add_bos: gguf
                .get_bool_opt("tokenizer.ggml.add_bos_token")?
                .unwrap_or(sentencepiece),
            add_eos: gguf
                .get_bool_opt("tokenizer.ggml.add_eos_token")?
                .unwrap_or(false),
            bos_id: gguf.get_u32_opt("tokenizer.ggml.bos_token_id")?,
            eos_id: gguf.get_u32_opt("tokenizer.ggml.eos_token_id")?,
            pad_id: gguf.get_u32_opt("tokenizer.ggml.padding_token_id")?,
        })
    }

    /// Reads a HF `tokenizer_config.json` (`add_bos_token`, `add_eos_token`, `bos_token`,
    /// `eos_token`, `pad_token`, as strings or `{"content": ...}`), resolving token texts to ids
    /// with `tokenizer`.
    ///
    /// # Errors
    /// [`LmError::Io`] when unreadable; [`LmError::Config`] when not JSON or a field has the
    /// wrong type.
    pub fn from_hf_config(path: impl AsRef<Path>, tokenizer: &Tokenizer) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| LmError::io(path, e))?;
        let cfg: HashMap<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| LmError::Config {
                path: path.to_path_buf(),
                detail: format!("expected a JSON object: {e}"),
            })?;
        let bad = |key: &str, expected: &str, v: &serde_json::Value| LmError::Config {
            path: path.to_path_buf(),
            detail: format!("`{key}`: expected {expected}, found {v}"),
        };
        let flag = |key: &str| -> Result<bool> {
            match cfg.get(key) {
                None | Some(serde_json::Value::Null) => Ok(false),
                Some(v) => v.as_bool().ok_or_else(|| bad(key, "a bool", v)),
            }
        };
        let token = |key: &str| -> Result<Option<u32>> {
            let text = match cfg.get(key) {
                None | Some(serde_json::Value::Null) => return Ok(None),
                Some(serde_json::Value::String(s)) => s.as_str(),
                Some(v) => v
                    .get("content")
                    .and_then(|c| c.as_str())
                    .ok_or_else(|| bad(key, "a string or {\"content\": string}", v))?,
            };
            Ok(tokenizer.token_to_id(text))
        };
        Ok(TokenizerSettings {
            add_bos: flag("add_bos_token")?,
            add_eos: flag("add_eos_token")?,
            bos_id: token("bos_token")?,
            eos_id: token("eos_token")?,
            pad_id: token("pad_token")?,
        })
    }

    /// [`TokenizerSettings::from_hf_config`] on `dir/tokenizer_config.json`, or no special
    /// tokens when that file is absent.
    ///
    /// # Errors
    /// As [`TokenizerSettings::from_hf_config`].
    pub fn from_hf_dir(dir: impl AsRef<Path>, tokenizer: &Tokenizer) -> Result<Self> {
        let p = dir.as_ref().join("tokenizer_config.json");
        if p.exists() {
            Self::from_hf_config(p, tokenizer)
        } else {
            Ok(TokenizerSettings::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::gguf::GgufWriter;

    /// A tiny byte-level vocabulary: bytes of "ab 1", merges "a b", "Ġ a", control tokens.
    fn tiny(pre: &str) -> GgufFile {
        let tokens = [
            "<|endoftext|>",
            "<|im_start|>",
            "a",
            "b",
            "Ġ",
            "1",
            "ab",
            "Ġa",
            "<think>",
            "\n",
            "Ċ",
            "Ã",
            "©",
            "Ã©",
            "世",
        ];
        let mut w = GgufWriter::new();
        w.add_str("tokenizer.ggml.model", "gpt2")
            .add_str("tokenizer.ggml.pre", pre)
            .add_str_array("tokenizer.ggml.tokens", &tokens)
            .add_str_array("tokenizer.ggml.merges", &["a b", "Ġ a", "Ã ©"])
            .add_i32_array(
                "tokenizer.ggml.token_type",
                &[3, 3, 1, 1, 1, 1, 1, 1, 4, 3, 1, 1, 1, 1, 1],
            )
            .add_u32("tokenizer.ggml.bos_token_id", 1)
            .add_u32("tokenizer.ggml.eos_token_id", 0)
            .add_bool("tokenizer.ggml.add_bos_token", false);
        GgufFile::from_bytes(w.to_bytes(), "tiny.gguf").unwrap()
    }

    #[test]
    fn builds_merges_and_keeps_control_tokens_whole() {
        let t = tokenizer_from_gguf(&tiny("smollm")).unwrap();
        let enc = t.encode("<|im_start|>ab a<think>1", false).unwrap();
        assert_eq!(enc.get_ids(), &[1, 6, 7, 8, 5]);
        let dec = t.decode(enc.get_ids(), false).unwrap();
        assert_eq!(dec, "<|im_start|>ab a<think>1");
        // Special tokens are skipped on request; user-defined ones are not special.
        assert_eq!(t.decode(enc.get_ids(), true).unwrap(), "ab a<think>1");
    }

    #[test]
    fn mislabelled_control_token_is_respelled_not_added() {
        // "\n" (type 3) is outside the byte alphabet: it is re-spelled to "Ċ" and not added.
        let t = tokenizer_from_gguf(&tiny("smollm")).unwrap();
        assert_eq!(
            t.token_to_id("Ċ"),
            Some(10),
            "the later duplicate spelling wins, as in a Python dict"
        );
        let ids = t.encode("\n", false).unwrap().get_ids().to_vec();
        assert_eq!(ids, vec![10]);
        // A token outside the alphabet is spelled as its UTF-8 bytes.
        let table = byte_to_char();
        let respelled: String = "世".bytes().map(|b| table[b as usize]).collect();
        assert_eq!(respelled.chars().count(), 3);
        assert_eq!(t.token_to_id(&respelled), Some(14));
    }

    #[test]
    fn settings_from_gguf() {
        let s = TokenizerSettings::from_gguf(&tiny("smollm")).unwrap();
        assert_eq!(
            s,
            TokenizerSettings {
                add_bos: false,
                add_eos: false,
                bos_id: Some(1),
                eos_id: Some(0),
                pad_id: None
            }
        );
    }

    #[test]
    fn rejects_unknown_models_and_bad_merges() {
        let mut w = GgufWriter::new();
        w.add_str("tokenizer.ggml.model", "t5");
        let f = GgufFile::from_bytes(w.to_bytes(), "t5.gguf").unwrap();
        let e = tokenizer_from_gguf(&f).unwrap_err().to_string();
        assert!(
            e.contains("`t5`") && e.contains("`llama`") && e.contains("`gpt2`"),
            "{e}"
        );

        let mut w = GgufWriter::new();
        w.add_str("tokenizer.ggml.model", "gpt2")
            .add_str_array("tokenizer.ggml.tokens", &["a", "b"])
            .add_str_array("tokenizer.ggml.merges", &["a b c"]);
        let f = GgufFile::from_bytes(w.to_bytes(), "m.gguf").unwrap();
        let e = tokenizer_from_gguf(&f).unwrap_err().to_string();
        assert!(e.contains("merge #0"), "{e}");

        let mut w = GgufWriter::new();
        w.add_str("tokenizer.ggml.model", "gpt2")
            .add_str_array("tokenizer.ggml.tokens", &["a", "b"]);
        let f = GgufFile::from_bytes(w.to_bytes(), "m.gguf").unwrap();
        let e = tokenizer_from_gguf(&f).unwrap_err().to_string();
        assert!(
            e.contains("tokenizer.ggml.merges") && e.contains("no such key"),
            "{e}"
        );
    }

    #[test]
    fn ids_past_the_table_name_the_smallest_and_count_the_rest() {
        let t = tokenizer_from_gguf(&tiny("smollm")).unwrap();
        let path = Path::new("m.gguf");
        // 15 tokens: a table of 15 rows holds them all, 13 rows leave ids 13 and 14 out.
        check_ids_fit_embedding(&t, &[("the BOS token".into(), 14)], 15, path).unwrap();
        let e = check_ids_fit_embedding(&t, &[], 13, path).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                LmError::TokenizerBeyondEmbedding {
                    id: 13,
                    rows: 13,
                    others: 1,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(
            msg.contains("vocabulary token `Ã©`") && msg.contains("ids 0 to 12"),
            "{msg}"
        );
        // A named setting wins over the token that spells the same id; added tokens say so.
        let specials = [
            ("the EOS token (x)".to_string(), 8),
            ("the pad".to_string(), 99),
        ];
        let e = check_ids_fit_embedding(&t, &specials, 8, path).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("the EOS token (x) has id 8"), "{msg}");
        // Ids 10..=14 and 99 (id 9's spelling `Ċ` belongs to id 10, the later duplicate).
        assert!(msg.contains("and 6 more id(s)"), "{msg}");
        let e = check_ids_fit_embedding(&t, &[], 8, path)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("the tokenizer's added token `<think>` has id 8"),
            "{e}"
        );
        check_ids_in_vocab(&[0, 12], 13, || "row".into()).unwrap();
        let e = check_ids_in_vocab(&[0, 13, 20], 13, || "row 4".into()).unwrap_err();
        assert!(
            matches!(
                e,
                LmError::TokenIdOutOfRange {
                    id: 13,
                    vocab: 13,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().starts_with("row 4: token id 13"), "{e}");
    }

    #[test]
    fn qwen2_pre_tokenizer_normalises_to_nfc() {
        let t = tokenizer_from_gguf(&tiny("qwen2")).unwrap();
        // "e" + combining acute (NFD) is normalised to "é" (NFC) = bytes C3 A9 -> "Ã©" = 13.
        let ids = t.encode("e\u{301}", false).unwrap().get_ids().to_vec();
        assert_eq!(ids, vec![13]);
        let smollm = tokenizer_from_gguf(&tiny("smollm")).unwrap();
        assert_ne!(smollm.encode("e\u{301}", false).unwrap().get_ids(), &[13]);
    }

    #[test]
    fn settings_from_hf_config() {
        let t = tokenizer_from_gguf(&tiny("smollm")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer_config.json");
        std::fs::write(
            &p,
            r#"{"add_bos_token": true, "bos_token": {"content": "<|im_start|>"}, "eos_token": "<|endoftext|>", "pad_token": null}"#,
        )
        .unwrap();
        let s = TokenizerSettings::from_hf_dir(dir.path(), &t).unwrap();
        assert_eq!(
            s,
            TokenizerSettings {
                add_bos: true,
                add_eos: false,
                bos_id: Some(1),
                eos_id: Some(0),
                pad_id: None
            }
        );
        std::fs::write(&p, r#"{"add_bos_token": "yes"}"#).unwrap();
        let e = TokenizerSettings::from_hf_config(&p, &t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("add_bos_token") && e.contains("a bool"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            TokenizerSettings::from_hf_dir(empty.path(), &t).unwrap(),
            TokenizerSettings::default()
        );
    }
}
