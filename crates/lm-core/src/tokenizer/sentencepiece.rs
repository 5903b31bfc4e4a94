//! SentencePiece vocabularies from GGUF metadata (`tokenizer.ggml.model = "llama"`: Llama 2,
//! Mistral, Gemma), rebuilt as the `tokenizers::Tokenizer` transformers builds from the same file.
//!
//! The construction follows transformers' GGUF conversion
//! (`transformers/integrations/gguf/gguf_tokenizer_mapping.py`, `sentencepiece_tokenizer` and
//! `gemma_tokenizer`), so ids and decoded texts are transformers':
//!
//! - the model is a BPE over the vocabulary as the file spells it (`▁` for a space), with byte
//!   fallback (`<0x41>` tokens for characters outside the vocabulary) and fused unknowns;
//! - the file lists no merges, so they are recovered from the vocabulary as transformers'
//!   `generate_merges` does: every split of a token into two tokens is a merge, ordered best
//!   first by the token's score (Llama, Mistral: `tokenizer.ggml.scores`) or by the token's
//!   position in the file (Gemma, whose scores do not follow its merge order), ties broken by
//!   the longer left piece, then the longer right piece, then file order;
//! - **Llama / Mistral** (`LlamaTokenizer`): no normaliser, a `Metaspace` pre-tokenizer that
//!   turns spaces into `▁` and prepends one `▁` to the text (scheme `first`, no splitting); the
//!   decoder maps `▁` back to spaces, joins byte tokens into UTF-8, and strips the one leading
//!   space; no unknown token is set;
//! - **Gemma** (`GemmaTokenizer`): tokens made only of spaces are stored as real spaces and
//!   re-spelled with `▁`; a normaliser replaces every space by `▁`, nothing is prepended; the
//!   decoder does not strip; the unknown token is `<unk>`;
//! - control tokens (type 3: `<bos>`, `<start_of_turn>`) become special added tokens and
//!   user-defined ones (type 4: `<sep>`, Gemma's `\n`) plain added tokens, matched whole in the
//!   raw text, as in [`super::tokenizer_from_gguf`]'s byte-level path.
//!
//! Adding BOS / EOS is left to the caller ([`super::TokenizerSettings`]).

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{DecoderWrapper, SplitDelimiterBehavior, Tokenizer};

use super::{add_gguf_added_tokens, gguf_token_types, tok_err};
use crate::error::{LmError, Result};
use crate::io::gguf::GgufFile;

/// SentencePiece's space marker, `▁` (U+2581).
pub const SPACE_MARKER: char = '\u{2581}';

/// The GGUF architectures whose SentencePiece vocabulary follows Gemma's conventions.
const GEMMA_ARCHITECTURES: [&str; 3] = ["gemma", "gemma2", "gemma3"];

/// Which of transformers' SentencePiece tokenizer classes a vocabulary follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentencePieceFlavour {
    /// `LlamaTokenizer` (Llama 2, Mistral, TinyLlama...): `Metaspace`, one `▁` prepended,
    /// merges ordered by score.
    Llama,
    /// `GemmaTokenizer` (Gemma 1/2/3): spaces normalised to `▁`, nothing prepended, merges
    /// ordered by file position.
    Gemma,
}

impl SentencePieceFlavour {
    /// The flavour transformers picks for a GGUF `general.architecture`.
    pub fn for_architecture(arch: Option<&str>) -> Self {
        match arch {
            Some(a) if GEMMA_ARCHITECTURES.contains(&a) => Self::Gemma,
            _ => Self::Llama,
        }
    }
}

/// transformers' `generate_merges`: every split of a token into two vocabulary tokens, ordered
/// by the token's sort key (higher first), then the longer left piece, then the longer right
/// piece, then file order (and, for one token, by the pieces' ids).
///
/// `tokens[i]` has sort key `keys[i]`; when a token is spelled twice, its first position orders
/// it and its last key and id count, as with a Python dict built from the list.
pub fn merges_from_vocab(tokens: &[String], keys: &[f64]) -> Vec<(String, String)> {
    let mut vocab: HashMap<&str, u32> = HashMap::with_capacity(tokens.len());
    let mut key_of: HashMap<&str, f64> = HashMap::with_capacity(tokens.len());
    let mut order: Vec<&str> = Vec::with_capacity(tokens.len());
    for (i, (t, k)) in tokens.iter().zip(keys).enumerate() {
        if vocab.insert(t.as_str(), i as u32).is_none() {
            order.push(t.as_str());
        }
        key_of.insert(t.as_str(), *k);
    }
    // (left, right, key, left chars, right chars)
    let mut merges: Vec<(&str, &str, f64, usize, usize)> = Vec::new();
    let mut local = Vec::new();
    for token in order {
        let key = key_of[token];
        let n_chars = token.chars().count();
        local.clear();
        for (i, (at, _)) in token.char_indices().enumerate().skip(1) {
            let (l, r) = token.split_at(at);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                local.push((li, ri, l, r, i, n_chars - i));
            }
        }
        local.sort_by_key(|&(li, ri, ..)| (li, ri));
        merges.extend(
            local
                .iter()
                .map(|&(_, _, l, r, nl, nr)| (l, r, key, nl, nr)),
        );
    }
    // Stable, descending: equal keys keep their order, as Python's `sorted(reverse=True)`.
    merges.sort_by(|a, b| {
        b.2.partial_cmp(&a.2)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.3.cmp(&a.3))
            .then(b.4.cmp(&a.4))
    });
    merges
        .into_iter()
        .map(|(l, r, ..)| (l.to_string(), r.to_string()))
        .collect()
}

/// Builds the tokenizer of a SentencePiece (`tokenizer.ggml.model = "llama"`) GGUF vocabulary.
///
/// # Errors
/// [`LmError::Config`] when `tokenizer.ggml.tokens` is missing or mistyped, or when
/// `tokenizer.ggml.scores` / `token_type` do not have one entry per token;
/// [`LmError::Tokenizer`] when a Llama-style vocabulary has neither merges nor scores (its
/// merge order cannot be recovered), or a merge does not fit the vocabulary.
pub fn sentencepiece_from_gguf(gguf: &GgufFile) -> Result<Tokenizer> {
    let path = gguf.path();
    let flavour = SentencePieceFlavour::for_architecture(gguf.get_str_opt("general.architecture")?);
    let raw = gguf.get_str_array("tokenizer.ggml.tokens")?;
    let per_token = |key: &str, n: usize| -> Result<()> {
        if n != raw.len() {
            return Err(LmError::Config {
                path: path.to_path_buf(),
                detail: format!(
                    "{key} has {n} entries, expected one per token ({})",
                    raw.len()
                ),
            });
        }
        Ok(())
    };
    let token_types = gguf_token_types(gguf, raw.len())?;
    let tokens: Vec<String> = raw
        .iter()
        .map(|t| match flavour {
            // transformers' `gemma_tokenizer`: a token of spaces only is looked up as `▁`s.
            SentencePieceFlavour::Gemma if t.contains(' ') && t.trim().is_empty() => {
                std::iter::repeat_n(SPACE_MARKER, t.chars().count()).collect()
            }
            _ => t.to_string(),
        })
        .collect();

    let merges = match gguf.get("tokenizer.ggml.merges") {
        Some(_) => gguf
            .get_str_array("tokenizer.ggml.merges")?
            .iter()
            .enumerate()
            .map(|(i, m)| match m.split(' ').collect::<Vec<_>>()[..] {
                [a, b] => Ok((a.to_string(), b.to_string())),
                _ => Err(tok_err(format!(
                    "{}: merge #{i} `{m}` is not two tokens separated by one space",
                    path.display()
                ))),
            })
            .collect::<Result<Vec<_>>>()?,
        None => {
            let keys: Vec<f64> = match flavour {
                // Gemma's scores do not follow its merge order; the file order does.
                SentencePieceFlavour::Gemma => (0..tokens.len()).map(|i| -(i as f64)).collect(),
                SentencePieceFlavour::Llama => {
                    if gguf.get("tokenizer.ggml.scores").is_none() {
                        return Err(tok_err(format!(
                            "{}: SentencePiece vocabulary without scores: expected `tokenizer.ggml.scores` (one score per token, which orders the merges) or `tokenizer.ggml.merges`, found neither. Re-convert the model with llama.cpp's convert_hf_to_gguf.py, or use its Hugging Face folder (tokenizer.json).",
                            path.display()
                        )));
                    }
                    let scores = gguf.get_f32_array("tokenizer.ggml.scores")?;
                    per_token("tokenizer.ggml.scores", scores.len())?;
                    scores.into_iter().map(f64::from).collect()
                }
            };
            merges_from_vocab(&tokens, &keys)
        }
    };

    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .fuse_unk(true)
        .byte_fallback(true);
    if flavour == SentencePieceFlavour::Gemma {
        builder = builder.unk_token("<unk>".into());
    }
    let bpe = builder
        .build()
        .map_err(|e| tok_err(format!("{}: cannot build BPE: {e}", path.display())))?;

    let mut tokenizer = Tokenizer::new(bpe);
    let replace = |from: &str, to: &str| {
        Replace::new(from, to).map_err(|e| tok_err(format!("cannot build a Replace step: {e}")))
    };
    let mut decoders: Vec<DecoderWrapper> = vec![
        replace(&SPACE_MARKER.to_string(), " ")?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    match flavour {
        SentencePieceFlavour::Llama => {
            tokenizer.with_pre_tokenizer(Some(Metaspace::new(
                SPACE_MARKER,
                PrependScheme::First,
                false,
            )));
            decoders.push(Strip::new(' ', 1, 0).into());
        }
        SentencePieceFlavour::Gemma => {
            tokenizer
                .with_normalizer(Some(replace(" ", &SPACE_MARKER.to_string())?))
                .map_err(|e| tok_err(format!("cannot set the normaliser: {e}")))?;
            let split = Split::new(
                SplitPattern::String(" ".into()),
                SplitDelimiterBehavior::MergedWithPrevious,
                false,
            )
            .map_err(|e| tok_err(format!("cannot build the pre-tokenizer: {e}")))?;
            tokenizer.with_pre_tokenizer(Some(split));
        }
    }
    tokenizer.with_decoder(Some(DecoderSequence::new(decoders)));

    // As transformers' `add_gguf_special_tokens`: control tokens by their spelling in the file,
    // user-defined ones when that spelling is in the vocabulary.
    add_gguf_added_tokens(&mut tokenizer, &raw, &token_types, |_| true)?;
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn merges_follow_score_then_piece_lengths() {
        // "abc" (key -3) splits as a+bc and ab+c; "ab" (key -1) as a+b; "bc" (key -2) as b+c.
        let tokens = s(&["a", "b", "c", "ab", "bc", "abc"]);
        let keys = [0.0, 0.0, 0.0, -1.0, -2.0, -3.0];
        let m = merges_from_vocab(&tokens, &keys);
        let m: Vec<(&str, &str)> = m.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(m, vec![("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")]);
    }

    #[test]
    fn a_duplicate_token_is_ordered_by_its_first_position_and_last_key() {
        let tokens = s(&["a", "b", "ab", "x", "ab"]);
        let m = merges_from_vocab(&tokens, &[0.0, 0.0, -5.0, 0.0, -1.0]);
        assert_eq!(m, vec![("a".to_string(), "b".to_string())]);
    }

    #[test]
    fn flavour_follows_the_architecture() {
        for a in ["gemma", "gemma2", "gemma3"] {
            assert_eq!(
                SentencePieceFlavour::for_architecture(Some(a)),
                SentencePieceFlavour::Gemma
            );
        }
        for a in [Some("llama"), None] {
            assert_eq!(
                SentencePieceFlavour::for_architecture(a),
                SentencePieceFlavour::Llama
            );
        }
    }

    proptest! {
        /// Every merge joins two vocabulary tokens into a vocabulary token, none is repeated,
        /// and keys never increase along the list.
        #[test]
        fn merges_are_valid_and_sorted(words in proptest::collection::vec("[abc]{1,4}", 1..30)) {
            let mut tokens: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
            for w in words {
                if !tokens.contains(&w) {
                    tokens.push(w);
                }
            }
            let keys: Vec<f64> = (0..tokens.len()).map(|i| -(i as f64)).collect();
            let m = merges_from_vocab(&tokens, &keys);
            let pos = |t: &str| tokens.iter().position(|x| x == t);
            let mut seen = std::collections::HashSet::new();
            let mut last = f64::INFINITY;
            for (l, r) in &m {
                let joined = format!("{l}{r}");
                let p = pos(&joined);
                prop_assert!(p.is_some() && pos(l).is_some() && pos(r).is_some());
                prop_assert!(seen.insert((l.clone(), r.clone())));
                let k = keys[p.unwrap()];
                prop_assert!(k <= last);
                last = k;
            }
        }
    }
}
