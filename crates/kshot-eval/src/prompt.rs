//! Prompt formatting: lm-eval's plain few-shot format and the model's chat template with the
//! shots as earlier turns, plus the context/continuation tokenisation rule used for scoring.
//!
//! **Plain** (lm-evaluation-harness conventions; `doc_to_text = "Question: {question}\nAnswer:"`,
//! target delimiter `" "`, few-shot delimiter `"\n\n"`), two shots then the test question:
//!
//! ```text
//! Question: What is 2 + 3?
//! Answer: 2 + 3 = 5.
//! The answer is 5.
//!
//! Question: What is 4 + 4?
//! Answer: The answer is 8.
//!
//! Question: What is 6 + 1?
//! Answer:
//! ```
//!
//! Generation stops at the few-shot delimiter or at `Question:`. When scoring a target after
//! such a context, trailing whitespace of the context is moved to the start of the target and
//! the pair is tokenised as one string, then split at the context's token count (lm-eval's
//! `_encode_pair`).
//!
//! **Chat** (the default): each shot is a user turn (its question) followed by an assistant turn
//! (its [`KShotItem::response`]: `"{rationale}\nThe answer is {answer}."`); the test question is
//! the last user turn, rendered with the model's template and its generation prompt. For
//! SmolLM2 (ChatML, whose template adds a default system turn), one shot gives:
//!
//! ```text
//! <|im_start|>system
//! You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
//! <|im_start|>user
//! What is 2 + 3?<|im_end|>
//! <|im_start|>assistant
//! 2 + 3 = 5.
//! The answer is 5.<|im_end|>
//! <|im_start|>user
//! What is 6 + 1?<|im_end|>
//! <|im_start|>assistant
//! ```
//!
//! A scored target in chat mode is the assistant text plus the template's end of turn
//! (`...The answer is 7.<|im_end|>`), found by rendering the conversation with the answer and
//! removing the prompt prefix. The generation prompt's trailing newline stays in the context:
//! the template, not the model, writes it, and generation sees the same context tokens.

use lm_core::chat_template::ChatMessage;
use lm_core::model::LanguageModel;
use lm_core::score::ScoreRequest;

use crate::error::Result;
use crate::kshot::KShotItem;

pub use lm_core::prompt::PromptFormat;

/// K-shot prompts in a [`PromptFormat`]: contexts, scored pairs and their tokenisation.
pub trait KShotPrompt {
    /// The context text for `item` after `shots` (what generation continues).
    fn context(
        &self,
        model: &LanguageModel,
        shots: &[KShotItem],
        item: &KShotItem,
    ) -> Result<String>;

    /// Context and continuation for scoring `target` as the answer to `item`.
    /// Plain: `(context, target_delimiter + target)`; chat: `(rendered prompt, target + end of turn)`.
    fn pair(
        &self,
        model: &LanguageModel,
        shots: &[KShotItem],
        item: &KShotItem,
        target: &str,
    ) -> Result<(String, String)>;

    /// The scoring request for `(context, continuation)`: plain moves the context's trailing
    /// whitespace to the continuation (lm-eval); both encode the joined text once and split it
    /// at the context's token count.
    fn encode_pair(
        &self,
        model: &LanguageModel,
        context: &str,
        continuation: &str,
    ) -> Result<ScoreRequest>;
}

impl KShotPrompt for PromptFormat {
    fn context(
        &self,
        model: &LanguageModel,
        shots: &[KShotItem],
        item: &KShotItem,
    ) -> Result<String> {
        match self {
            Self::Chat { system } => {
                let messages = chat_messages(system.as_deref(), shots, item);
                Ok(model.render_chat(&messages, true)?)
            }
            Self::Plain {
                doc_to_text,
                target_delimiter,
                fewshot_delimiter,
            } => Ok(plain_context(
                doc_to_text,
                target_delimiter,
                fewshot_delimiter,
                shots,
                item,
            )),
        }
    }

    fn pair(
        &self,
        model: &LanguageModel,
        shots: &[KShotItem],
        item: &KShotItem,
        target: &str,
    ) -> Result<(String, String)> {
        let context = self.context(model, shots, item)?;
        match self {
            Self::Chat { system } => {
                let mut messages = chat_messages(system.as_deref(), shots, item);
                messages.push(ChatMessage::assistant(target));
                let full = model.render_chat(&messages, false)?;
                let continuation = match full.strip_prefix(&context) {
                    Some(rest) => rest.trim_end().to_string(),
                    None => {
                        // A template whose prompt is not a prefix of the full chat: append the
                        // end-of-sequence token text instead.
                        let eos = model
                            .eos_ids
                            .first()
                            .and_then(|&id| model.tokenizer.id_to_token(id))
                            .unwrap_or_default();
                        format!("{target}{eos}")
                    }
                };
                Ok((context, continuation))
            }
            Self::Plain {
                target_delimiter, ..
            } => Ok((context, format!("{target_delimiter}{target}"))),
        }
    }

    fn encode_pair(
        &self,
        model: &LanguageModel,
        context: &str,
        continuation: &str,
    ) -> Result<ScoreRequest> {
        let (context, continuation) = if self.is_chat() {
            (context.to_string(), continuation.to_string())
        } else {
            move_trailing_whitespace(context, continuation)
        };
        // Chat text was rendered by the template, which writes its own special tokens.
        let whole = model.encode_prompt(self, &format!("{context}{continuation}"))?;
        let ctx = model.encode_prompt(self, &context)?;
        let split = ctx.len().min(whole.len());
        Ok(ScoreRequest {
            prompt: whole[..split].to_vec(),
            target: whole[split..].to_vec(),
        })
    }
}

/// The chat turns: optional system, then each shot as user + assistant, then the question.
pub fn chat_messages(
    system: Option<&str>,
    shots: &[KShotItem],
    item: &KShotItem,
) -> Vec<ChatMessage> {
    let mut m = Vec::with_capacity(2 * shots.len() + 2);
    if let Some(s) = system {
        m.push(ChatMessage::system(s));
    }
    for s in shots {
        let (question, response) = s.prompt_response();
        m.push(ChatMessage::user(question));
        m.push(ChatMessage::assistant(response));
    }
    m.push(ChatMessage::user(item.question.clone()));
    m
}

/// lm-eval's plain few-shot context.
pub fn plain_context(
    doc_to_text: &str,
    target_delimiter: &str,
    fewshot_delimiter: &str,
    shots: &[KShotItem],
    item: &KShotItem,
) -> String {
    let text = |i: &KShotItem| doc_to_text.replace("{question}", &i.question);
    let mut parts: Vec<String> = shots
        .iter()
        .map(|s| format!("{}{target_delimiter}{}", text(s), s.response()))
        .collect();
    parts.push(text(item));
    parts.join(fewshot_delimiter)
}

/// Moves trailing whitespace of `context` to the front of `continuation` (lm-eval `_encode_pair`).
pub fn move_trailing_whitespace(context: &str, continuation: &str) -> (String, String) {
    let trimmed = context.trim_end();
    let moved = &context[trimmed.len()..];
    (trimmed.to_string(), format!("{moved}{continuation}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shots() -> Vec<KShotItem> {
        vec![
            KShotItem::new("What is 2 + 3?", "5").with_rationale("2 + 3 = 5."),
            KShotItem::new("What is 4 + 4?", "8"),
        ]
    }

    #[test]
    fn plain_context_matches_the_documented_example() {
        let q = KShotItem::new("What is 6 + 1?", "7");
        let PromptFormat::Plain {
            doc_to_text,
            target_delimiter,
            fewshot_delimiter,
        } = PromptFormat::plain()
        else {
            unreachable!()
        };
        let c = plain_context(
            &doc_to_text,
            &target_delimiter,
            &fewshot_delimiter,
            &shots(),
            &q,
        );
        assert_eq!(
            c,
            "Question: What is 2 + 3?\nAnswer: 2 + 3 = 5.\nThe answer is 5.\n\nQuestion: What is 4 + 4?\nAnswer: The answer is 8.\n\nQuestion: What is 6 + 1?\nAnswer:"
        );
    }

    #[test]
    fn chat_turns_alternate() {
        let q = KShotItem::new("Q", "1");
        let m = chat_messages(Some("sys"), &shots(), &q);
        let roles: Vec<&str> = m.iter().map(|x| x.role.as_str()).collect();
        assert_eq!(
            roles,
            ["system", "user", "assistant", "user", "assistant", "user"]
        );
        assert_eq!(m[2].content, "2 + 3 = 5.\nThe answer is 5.");
    }

    #[test]
    fn plain_pairs_encode_as_one_string_split_at_the_context() {
        let device = lm_core::device::device_from_name("cpu").unwrap();
        let model = lm_core::testing::tiny_language_model(1, &device);
        let f = PromptFormat::plain();
        let q = KShotItem::new("2+2?", "4");
        let (ctx, cont) = f.pair(&model, &[], &q, "4").unwrap();
        assert_eq!(
            (ctx.as_str(), cont.as_str()),
            ("Question: 2+2?\nAnswer:", " 4")
        );
        let r = f.encode_pair(&model, "Answer: ", "4").unwrap();
        // The space moved to the target: context "Answer:" (7 bytes), target " 4".
        assert_eq!(r.prompt.len(), 7);
        assert_eq!(model.decode(&r.target).unwrap(), " 4");
    }

    proptest! {
        #[test]
        fn moving_whitespace_keeps_the_joined_text(ctx in "[a-z \n]{0,12}", cont in "[a-z ]{0,6}") {
            let (c, t) = move_trailing_whitespace(&ctx, &cont);
            prop_assert_eq!(format!("{c}{t}"), format!("{ctx}{cont}"));
            prop_assert!(!c.ends_with(char::is_whitespace));
        }
    }
}
