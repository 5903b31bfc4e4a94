//! [`PromptFormat`]: how a question (or a training prompt) and its answer become text, written
//! once for training, evaluation and generation.
//!
//! - **Chat** (the default): the model's own chat template; the question is a user turn, the
//!   answer an assistant turn (optionally after a system turn).
//! - **Plain**: lm-evaluation-harness's few-shot text, `doc_to_text` with `{question}` replaced,
//!   then `target_delimiter` and the answer; examples are joined by `fewshot_delimiter`.
//!   [`PromptFormat::plain`] gives lm-eval's defaults (`"Question: {question}\nAnswer:"`, `" "`,
//!   `"\n\n"`); [`PromptFormat::raw`] is the prompt followed directly by the answer.
//!
//! The trainer (`train::tokenize_examples`) and kshot-eval's prompts both read this type, so
//! `openexpert train --format plain` learns exactly the text `openexpert eval --format plain`
//! scores.

use serde::{Deserialize, Serialize};

/// How prompts and answers are laid out as text (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptFormat {
    /// The model's chat template.
    Chat {
        /// An optional system turn (otherwise the template's default, if any).
        system: Option<String>,
    },
    /// Plain few-shot text (lm-eval conventions).
    Plain {
        /// Template of a question; `{question}` is replaced (lm-eval default
        /// `"Question: {question}\nAnswer:"`).
        doc_to_text: String,
        /// Between a question and its answer (lm-eval default `" "`).
        target_delimiter: String,
        /// Between examples (lm-eval default `"\n\n"`).
        fewshot_delimiter: String,
    },
}

impl Default for PromptFormat {
    fn default() -> Self {
        Self::Chat { system: None }
    }
}

impl PromptFormat {
    /// lm-eval's defaults for the plain format.
    pub fn plain() -> Self {
        Self::Plain {
            doc_to_text: "Question: {question}\nAnswer:".into(),
            target_delimiter: " ".into(),
            fewshot_delimiter: "\n\n".into(),
        }
    }

    /// Plain text with no template: the prompt, then directly the answer (for models without a
    /// chat template and for benchmarks that must match another tool's tokenisation).
    pub fn raw() -> Self {
        Self::Plain {
            doc_to_text: "{question}".into(),
            target_delimiter: String::new(),
            fewshot_delimiter: "\n\n".into(),
        }
    }

    /// Whether this is the chat format.
    pub fn is_chat(&self) -> bool {
        matches!(self, Self::Chat { .. })
    }

    /// Default stop strings for generation: none for chat (the end-of-turn token stops it), the
    /// few-shot delimiter and `Question:` for plain.
    pub fn default_stops(&self) -> Vec<String> {
        match self {
            Self::Chat { .. } => Vec::new(),
            Self::Plain {
                fewshot_delimiter, ..
            } => vec![fewshot_delimiter.clone(), "Question:".into()],
        }
    }

    /// Plain format: `(question text, answer text)` of one example, i.e. `doc_to_text` with the
    /// question filled in and `target_delimiter + answer`. `None` for the chat format.
    pub fn plain_pair(&self, question: &str, answer: &str) -> Option<(String, String)> {
        match self {
            Self::Chat { .. } => None,
            Self::Plain {
                doc_to_text,
                target_delimiter,
                ..
            } => Some((
                doc_to_text.replace("{question}", question),
                format!("{target_delimiter}{answer}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_pairs_follow_lm_eval_and_raw_concatenates() {
        let (q, a) = PromptFormat::plain().plain_pair("2+2?", "4").unwrap();
        assert_eq!((q.as_str(), a.as_str()), ("Question: 2+2?\nAnswer:", " 4"));
        let (q, a) = PromptFormat::raw().plain_pair("2+2?", "4").unwrap();
        assert_eq!(q + &a, "2+2?4");
        assert!(PromptFormat::default().plain_pair("q", "a").is_none());
        let json = serde_json::to_string(&PromptFormat::default()).unwrap();
        assert_eq!(json, r#"{"chat":{"system":null}}"#);
    }
}
