//! Training examples → token ids with a response mask, and the batches the trainer consumes.
//!
//! Loss is computed on response tokens only. For chat examples the conversation is rendered
//! with the model's own template and every assistant turn (including the template's end-of-turn
//! marker, so the model learns to stop) is a target; everything else (system prompt, user
//! turns, the assistant header) is context. Segments are tokenised one after the other, the
//! way lm-evaluation-harness tokenises context and continuation.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::config::OverflowPolicy;
use crate::chat_template::ChatMessage;
use crate::error::{LmError, Result};
use crate::model::LanguageModel;
use crate::prompt::PromptFormat;

/// One supervised example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TrainExample {
    /// A multi-turn chat; every `assistant` turn is a target.
    Chat {
        /// The turns, in order.
        messages: Vec<ChatMessage>,
    },
    /// A prompt and its response (a one-turn chat in the chat format, `doc_to_text` + answer in the plain one).
    PromptResponse {
        /// The user's request.
        prompt: String,
        /// The answer to learn.
        response: String,
    },
    /// Already tokenised: ids and which of them are targets (used as is, in any format).
    Tokens {
        /// Token ids.
        ids: Vec<u32>,
        /// `loss_mask[i]`: whether `ids[i]` is predicted with a loss (same length as `ids`).
        loss_mask: Vec<bool>,
    },
}

/// An example as token ids. `target[i]` says whether `ids[i]` is a response token (the loss
/// is taken on predicting it from `ids[..i]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedExample {
    /// Index of the example in the input list.
    pub index: usize,
    /// Token ids.
    pub ids: Vec<u32>,
    /// Response mask, same length as `ids`; `target[0]` is always false.
    pub target: Vec<bool>,
}

impl TokenizedExample {
    /// Number of response tokens.
    pub fn num_targets(&self) -> usize {
        self.target.iter().filter(|t| **t).count()
    }
}

/// What tokenisation kept and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetStats {
    /// Examples given.
    pub examples: usize,
    /// Examples kept.
    pub kept: usize,
    /// Kept examples that were cut to `max_len`.
    pub truncated: usize,
    /// Examples dropped for being longer than `max_len` (policy `Skip`), by input index.
    pub skipped_too_long: Vec<usize>,
    /// Examples dropped because no response token is left (empty response, or all response
    /// tokens past `max_len`), by input index.
    pub skipped_no_response: Vec<usize>,
    /// Tokens in the kept examples.
    pub tokens: usize,
    /// Response (loss) tokens in the kept examples.
    pub response_tokens: usize,
}

/// Text segments of one example: `(text, is_target)`, in order.
fn segments(
    model: &LanguageModel,
    example: &TrainExample,
    format: &PromptFormat,
) -> Result<Vec<(String, bool)>> {
    match (format, example) {
        (_, TrainExample::Tokens { .. }) => unreachable!("token examples are not rendered"),
        (PromptFormat::Plain { .. }, TrainExample::PromptResponse { prompt, response }) => {
            let (context, target) = format
                .plain_pair(prompt, response)
                .expect("a plain format gives a pair");
            Ok(vec![(context, false), (target, true)])
        }
        (PromptFormat::Plain { .. }, TrainExample::Chat { .. }) => Err(LmError::InvalidInput(
            "a chat example needs the chat format (the plain format has no turns)".into(),
        )),
        (PromptFormat::Chat { system }, TrainExample::PromptResponse { prompt, response }) => {
            let mut messages: Vec<ChatMessage> = system.iter().map(ChatMessage::system).collect();
            messages.push(ChatMessage::user(prompt.clone()));
            messages.push(ChatMessage {
                role: "assistant".into(),
                content: response.clone(),
            });
            chat_segments(model, &messages)
        }
        (PromptFormat::Chat { system }, TrainExample::Chat { messages }) => match system {
            Some(s) if messages.first().is_none_or(|m| m.role != "system") => {
                let mut with_system = vec![ChatMessage::system(s)];
                with_system.extend(messages.iter().cloned());
                chat_segments(model, &with_system)
            }
            _ => chat_segments(model, messages),
        },
    }
}

/// Splits a rendered conversation into context and assistant segments by rendering prefixes.
fn chat_segments(model: &LanguageModel, messages: &[ChatMessage]) -> Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    let mut done = 0usize; // bytes of the full rendering already assigned to segments
    let full = model.render_chat(messages, false)?;
    for (i, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let before = model.render_chat(&messages[..i], true)?;
        let through = model.render_chat(&messages[..=i], false)?;
        if !through.starts_with(&before) || !full.starts_with(&through) || before.len() < done {
            return Err(LmError::ChatTemplate {
                detail: format!(
                    "rendering turn {i} is not a prefix of the whole conversation, so its response \
                     tokens cannot be located; train with the plain format or fix the template"
                ),
            });
        }
        out.push((full[done..before.len()].to_string(), false));
        out.push((full[before.len()..through.len()].to_string(), true));
        done = through.len();
    }
    if done < full.len() {
        out.push((full[done..].to_string(), false));
    }
    Ok(out)
}

/// Tokenises examples with a response mask, applying `max_len` and the overflow policy.
pub fn tokenize_examples(
    model: &LanguageModel,
    examples: &[TrainExample],
    format: &PromptFormat,
    max_len: usize,
    overflow: OverflowPolicy,
) -> Result<(Vec<TokenizedExample>, DatasetStats)> {
    if max_len < 2 {
        return Err(LmError::InvalidInput(format!(
            "max_len must be at least 2 tokens (a context token and a target), found {max_len}"
        )));
    }
    let mut stats = DatasetStats {
        examples: examples.len(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(examples.len());
    for (index, example) in examples.iter().enumerate() {
        let mut ids = Vec::new();
        let mut target = Vec::new();
        if let TrainExample::Tokens { ids: t, loss_mask } = example {
            if t.len() != loss_mask.len() {
                return Err(LmError::InvalidInput(format!(
                    "token example {index}: expected one loss_mask entry per id, found {} ids and {} mask entries",
                    t.len(),
                    loss_mask.len()
                )));
            }
            model.check_ids(t, || format!("token example {index}"))?;
            ids = t.clone();
            target = loss_mask.clone();
        }
        let rendered = if matches!(example, TrainExample::Tokens { .. }) {
            Vec::new()
        } else {
            segments(model, example, format)?
        };
        for (k, (text, is_target)) in rendered.iter().enumerate() {
            let seg = if k == 0 {
                // The chat template writes the special tokens itself: nothing is added.
                model.encode_prompt(format, text)?
            } else {
                model.encode_continuation(text)?
            };
            target.extend(std::iter::repeat_n(*is_target, seg.len()));
            ids.extend(seg);
        }
        if !format.is_chat()
            && !matches!(example, TrainExample::Tokens { .. })
            && let Some(&eos) = model.eos_ids.first()
        {
            ids.push(eos);
            target.push(true);
        }
        if let Some(first) = target.first_mut() {
            *first = false; // nothing predicts the first token
        }
        if ids.len() > max_len {
            match overflow {
                OverflowPolicy::Skip => {
                    stats.skipped_too_long.push(index);
                    continue;
                }
                OverflowPolicy::Truncate => {
                    ids.truncate(max_len);
                    target.truncate(max_len);
                    stats.truncated += 1;
                }
            }
        }
        let example = TokenizedExample { index, ids, target };
        if example.num_targets() == 0 {
            stats.skipped_no_response.push(index);
            continue;
        }
        stats.tokens += example.ids.len();
        stats.response_tokens += example.num_targets();
        out.push(example);
    }
    stats.kept = out.len();
    Ok((out, stats))
}

/// One micro-batch, laid out on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Rows.
    pub batch: usize,
    /// Columns (tokens per row).
    pub seq: usize,
    /// Token ids, row-major `[batch, seq]` (padding uses `pad_id`).
    pub tokens: Vec<u32>,
    /// RoPE positions `[batch, seq]` (restart at 0 for every packed example).
    pub positions: Vec<i64>,
    /// Flat indices `row * seq + col` of the positions whose output predicts a target.
    pub predict_at: Vec<usize>,
    /// The target ids, one per entry of `predict_at`.
    pub target_ids: Vec<u32>,
    /// Packed rows: the example (segment) id of every token `[batch, seq]`, `u32::MAX` for
    /// padding; attention stays within a segment. `None` for unpacked batches (causal only).
    pub segments: Option<Vec<u32>>,
    /// Input indices of the examples in this batch.
    pub examples: Vec<usize>,
    /// Real (non-padding) tokens.
    pub real_tokens: usize,
    /// Whether each token `[batch, seq]` (row-major) belongs to an example (`false` for
    /// padding).
    pub real: Vec<bool>,
}

impl Batch {
    /// Per-token weights `[batch · seq]`: 1 for a token of an example, 0 for padding. The
    /// mask auxiliary losses over a forward's tokens use (router balance and z-losses), so
    /// padding never counts as routed tokens.
    pub fn token_weights(&self) -> Vec<f32> {
        self.real
            .iter()
            .map(|&r| if r { 1.0 } else { 0.0 })
            .collect()
    }

    /// Number of loss tokens.
    pub fn num_targets(&self) -> usize {
        self.target_ids.len()
    }
}

/// Rows of one batch: each row is a list of examples (one unless packed).
fn build_batch(rows: &[Vec<&TokenizedExample>], pad_id: u32, packed: bool) -> Batch {
    let seq = rows
        .iter()
        .map(|r| r.iter().map(|e| e.ids.len()).sum::<usize>())
        .max()
        .unwrap_or(0);
    let batch = rows.len();
    let mut tokens = vec![pad_id; batch * seq];
    let mut positions = vec![0i64; batch * seq];
    let mut segments = vec![u32::MAX; batch * seq];
    let mut predict_at = Vec::new();
    let mut target_ids = Vec::new();
    let mut examples = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        let mut col = 0;
        for (k, e) in row.iter().enumerate() {
            examples.push(e.index);
            for (j, (&id, &t)) in e.ids.iter().zip(&e.target).enumerate() {
                let flat = r * seq + col + j;
                tokens[flat] = id;
                positions[flat] = j as i64;
                segments[flat] = k as u32;
                if t {
                    predict_at.push(flat - 1);
                    target_ids.push(id);
                }
            }
            col += e.ids.len();
        }
        // Padding continues the positions so RoPE never sees a jump inside a row.
        for (j, flat) in (r * seq + col..(r + 1) * seq).enumerate() {
            positions[flat] = (col + j) as i64;
        }
    }
    Batch {
        batch,
        seq,
        tokens,
        positions,
        predict_at,
        target_ids,
        real: segments.iter().map(|&s| s != u32::MAX).collect(),
        segments: packed.then_some(segments),
        real_tokens: rows.iter().flatten().map(|e| e.ids.len()).sum(),
        examples,
    }
}

/// Groups examples into micro-batches.
///
/// Order: a seeded shuffle per epoch (`seed`, `epoch`), or the input order when `shuffle` is
/// false (evaluation). Unpacked: `batch_size` examples per batch, right-padded to the longest
/// (causal attention makes right padding invisible to real tokens). Packed: examples are put
/// first-fit into rows of at most `max_len` tokens, `batch_size` rows per batch.
pub fn make_batches(
    examples: &[TokenizedExample],
    batch_size: usize,
    max_len: usize,
    packing: bool,
    pad_id: u32,
    shuffle: Option<(u64, usize)>,
) -> Vec<Batch> {
    let mut order: Vec<&TokenizedExample> = examples.iter().collect();
    if let Some((seed, epoch)) = shuffle {
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        order.shuffle(&mut rng);
    }
    let batch_size = batch_size.max(1);
    let rows: Vec<Vec<&TokenizedExample>> = if packing {
        let mut rows: Vec<(usize, Vec<&TokenizedExample>)> = Vec::new();
        for e in order {
            match rows
                .iter_mut()
                .find(|(len, _)| len + e.ids.len() <= max_len)
            {
                Some((len, row)) => {
                    *len += e.ids.len();
                    row.push(e);
                }
                None => rows.push((e.ids.len(), vec![e])),
            }
        }
        rows.into_iter().map(|(_, r)| r).collect()
    } else {
        order.into_iter().map(|e| vec![e]).collect()
    };
    rows.chunks(batch_size)
        .map(|chunk| build_batch(chunk, pad_id, packing))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::random::tiny_language_model;
    use burn::tensor::Device;

    fn tiny() -> LanguageModel {
        tiny_language_model(1, &Device::default())
    }

    #[test]
    fn raw_examples_mask_only_the_response_and_eos() {
        let m = tiny();
        let ex = vec![TrainExample::PromptResponse {
            prompt: "ab".into(),
            response: "cd".into(),
        }];
        let (t, stats) = tokenize_examples(&m, &ex, &PromptFormat::raw(), 64, OverflowPolicy::Skip)
            .expect("tokenizes");
        let p = m.encode("ab").unwrap().len();
        assert_eq!(t[0].target[..p], vec![false; p][..]);
        assert!(t[0].target[p..].iter().all(|x| *x));
        assert_eq!(stats.response_tokens, t[0].ids.len() - p);
    }

    #[test]
    fn overflow_policies_truncate_or_skip_and_report() {
        let m = tiny();
        let ex = vec![
            TrainExample::PromptResponse {
                prompt: "x".repeat(30),
                response: "y".repeat(30),
            },
            TrainExample::PromptResponse {
                prompt: "x".repeat(40),
                response: "y".into(),
            },
        ];
        let (kept, stats) =
            tokenize_examples(&m, &ex, &PromptFormat::raw(), 35, OverflowPolicy::Truncate).unwrap();
        assert_eq!(kept.len(), 1, "the second loses its whole response");
        assert_eq!(stats.truncated, 2);
        assert_eq!(stats.skipped_no_response, vec![1]);
        assert_eq!(kept[0].ids.len(), 35);
        let (kept, stats) =
            tokenize_examples(&m, &ex, &PromptFormat::raw(), 35, OverflowPolicy::Skip).unwrap();
        assert!(kept.is_empty());
        assert_eq!(stats.skipped_too_long, vec![0, 1]);
    }

    #[test]
    fn chat_examples_need_a_template_or_are_refused_in_raw() {
        let m = tiny();
        let ex = vec![TrainExample::Chat {
            messages: vec![ChatMessage::user("hi")],
        }];
        assert!(
            tokenize_examples(&m, &ex, &PromptFormat::raw(), 64, OverflowPolicy::Skip).is_err()
        );
        assert!(
            tokenize_examples(&m, &ex, &PromptFormat::default(), 64, OverflowPolicy::Skip).is_err(),
            "the tiny model has no chat template"
        );
    }

    fn ex(index: usize, len: usize) -> TokenizedExample {
        TokenizedExample {
            index,
            ids: (0..len as u32).map(|i| i + 10 * index as u32).collect(),
            target: (0..len).map(|i| i >= len / 2).collect(),
        }
    }

    #[test]
    fn padded_batches_predict_each_target_from_the_previous_position() {
        let data = vec![ex(0, 4), ex(1, 6), ex(2, 3)];
        let batches = make_batches(&data, 2, 64, false, 0, None);
        assert_eq!(batches.len(), 2);
        let b = &batches[0];
        assert_eq!((b.batch, b.seq), (2, 6));
        for (&at, &id) in b.predict_at.iter().zip(&b.target_ids) {
            assert_eq!(b.tokens[at + 1], id);
        }
        assert_eq!(b.num_targets(), 2 + 3);
        assert!(b.segments.is_none());
        // Row 0 (4 tokens) is padded by 2; row 1 (6 tokens) is full.
        let w = b.token_weights();
        assert_eq!(&w[..6], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        assert_eq!(&w[6..], &[1.0; 6]);
        assert_eq!(w.iter().sum::<f32>() as usize, b.real_tokens);
    }

    #[test]
    fn shuffling_is_seeded_and_changes_with_the_epoch() {
        let data: Vec<_> = (0..20).map(|i| ex(i, 3)).collect();
        let order = |s, e| {
            make_batches(&data, 4, 64, false, 0, Some((s, e)))
                .iter()
                .flat_map(|b| b.examples.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(order(7, 0), order(7, 0));
        assert_ne!(order(7, 0), order(7, 1));
        let mut sorted = order(7, 1);
        sorted.sort();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn packing_fills_rows_and_restarts_positions() {
        let data = vec![ex(0, 4), ex(1, 5), ex(2, 3), ex(3, 6)];
        let batches = make_batches(&data, 8, 9, true, 0, None);
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert!(b.seq <= 9);
        let seg = b.segments.as_ref().unwrap();
        // Row 0 holds examples 0 and 1 (4 + 5 = 9 tokens): positions restart at the second.
        assert_eq!(&b.positions[..9], &[0, 1, 2, 3, 0, 1, 2, 3, 4]);
        assert_eq!(&seg[..9], &[0, 0, 0, 0, 1, 1, 1, 1, 1]);
        let total: usize = data.iter().map(TokenizedExample::num_targets).sum();
        assert_eq!(b.num_targets(), total);
        for (&at, &id) in b.predict_at.iter().zip(&b.target_ids) {
            assert_eq!(b.tokens[at + 1], id);
            assert_eq!(seg[at], seg[at + 1], "never predicts across examples");
        }
        let w = b.token_weights();
        assert!(
            seg.iter()
                .zip(&w)
                .all(|(&s, &w)| (s == u32::MAX) == (w == 0.0))
        );
        assert_eq!(w.iter().sum::<f32>() as usize, b.real_tokens);
    }
}
