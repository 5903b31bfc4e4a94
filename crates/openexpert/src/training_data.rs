//! Training data from JSONL files in every shape the toolkit reads, as lm-core
//! [`TrainExample`]s.
//!
//! Per line, the first shape that matches wins:
//! - `{"prompt": ..., "response": ...}`: one user turn and its answer;
//! - `{"question": ..., "answer": ..., "rationale"?: ...}` (the K-shot shape, read as a
//!   [`KShotItem`] with GSM8K's `#### N` split): the pair is [`KShotItem::prompt_response`], the
//!   question and the rationale, a newline and `The answer is {answer}.`, exactly what
//!   chat-format evaluation scores;
//! - Alpaca (`instruction`/`input`/`output`), ShareGPT (`conversations`) and chat
//!   (`messages`), read by [`data_select::pool`]: a chat whose every assistant turn is a target.

use std::path::Path;

use data_select::pool::{PoolBuilder, PoolOptions, Role};
use kshot_eval::KShotItem;
use lm_core::chat_template::ChatMessage;
use lm_core::train::TrainExample;
use serde_json::Value;

/// Errors reading training data.
#[derive(Debug, thiserror::Error)]
pub enum TrainingDataError {
    /// The file cannot be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not usable.
    #[error(
        "{path}:{line}: {detail}. Expected one JSON object per line with prompt/response, question/answer[/rationale], Alpaca, ShareGPT or chat messages fields"
    )]
    BadLine {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// The file has no examples.
    #[error("{path}: expected at least one training example, found none")]
    Empty {
        /// The file.
        path: String,
    },
}

fn text_field<'a>(o: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    o.get(key).and_then(Value::as_str)
}

/// Reads a JSONL file of training examples (see the module docs for the shapes).
pub fn read_training_jsonl(path: &Path) -> Result<Vec<TrainExample>, TrainingDataError> {
    let p = path.display().to_string();
    let lines = data_select::jsonl::open_jsonl(path).map_err(|e| match e {
        data_select::jsonl::JsonlError::Io { source, .. } => TrainingDataError::Io {
            path: p.clone(),
            source,
        },
        other => TrainingDataError::Io {
            path: p.clone(),
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    let mut out = Vec::new();
    for line in lines {
        let line = line.map_err(|source| TrainingDataError::Io {
            path: p.clone(),
            source,
        })?;
        let bad = |detail: String| TrainingDataError::BadLine {
            path: p.clone(),
            line: line.number,
            detail,
        };
        let value = line
            .parsed
            .map_err(|e| bad(format!("malformed JSON ({e})")))?;
        out.push(example_from_value(value).map_err(bad)?);
    }
    if out.is_empty() {
        return Err(TrainingDataError::Empty { path: p });
    }
    Ok(out)
}

/// One JSON record as a training example.
pub fn example_from_value(value: Value) -> Result<TrainExample, String> {
    let Value::Object(o) = &value else {
        return Err(format!("expected a JSON object, found {value}"));
    };
    if let (Some(prompt), Some(response)) = (text_field(o, "prompt"), text_field(o, "response")) {
        return Ok(TrainExample::PromptResponse {
            prompt: prompt.to_string(),
            response: response.to_string(),
        });
    }
    if o.contains_key("question") {
        let (prompt, response) = KShotItem::from_value(value.clone())?.prompt_response();
        return Ok(TrainExample::PromptResponse { prompt, response });
    }
    let mut builder = PoolBuilder::new(PoolOptions::default());
    builder
        .push_value(value.clone(), 1)
        .map_err(|e| e.to_string())?;
    let report = builder.finish();
    let record = report
        .records
        .into_iter()
        .next()
        .ok_or_else(|| "not a recognised record shape".to_string())?;
    let mut messages = Vec::new();
    if let Some(system) = &record.system {
        messages.push(ChatMessage {
            role: "system".into(),
            content: system.clone(),
        });
    }
    for turn in &record.turns {
        let role = match turn.role {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        messages.push(ChatMessage {
            role: role.into(),
            content: turn.content.clone(),
        });
    }
    if !messages.iter().any(|m| m.role == "assistant") {
        return Err("the record has no assistant turn to learn".into());
    }
    Ok(TrainExample::Chat { messages })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_shape_becomes_an_example() {
        let pr = example_from_value(json!({"prompt": "p", "response": "r"})).unwrap();
        assert!(matches!(pr, TrainExample::PromptResponse { .. }));
        let k = example_from_value(json!({"question": "2+2?", "answer": 4, "rationale": "2+2=4"}))
            .unwrap();
        assert_eq!(
            k,
            TrainExample::PromptResponse {
                prompt: "2+2?".into(),
                response: "2+2=4\nThe answer is 4.".into()
            }
        );
        let alpaca =
            example_from_value(json!({"instruction": "Add", "input": "1 2", "output": "3"}))
                .unwrap();
        let TrainExample::Chat { messages } = alpaca else {
            panic!("alpaca becomes a chat")
        };
        assert_eq!(messages.last().unwrap().content, "3");
        let share = example_from_value(json!({"conversations": [
            {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}))
        .unwrap();
        assert!(matches!(share, TrainExample::Chat { .. }));
    }

    #[test]
    fn unusable_records_are_refused_with_a_reason() {
        assert!(example_from_value(json!([1, 2])).is_err());
        assert!(example_from_value(json!({"question": "q"})).is_err());
        assert!(
            example_from_value(json!({"messages": [{"role": "user", "content": "x"}]})).is_err()
        );
    }

    /// Any JSON value in the fields the shapes read.
    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|i| json!(i)),
            prop_oneof![
                Just("user".to_string()),
                Just("assistant".to_string()),
                Just("gpt".to_string()),
                Just("human".to_string()),
                Just("system".to_string()),
                Just("#### 4".to_string()),
                "\\PC{0,10}",
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("role".to_string()),
                        Just("content".to_string()),
                        Just("from".to_string()),
                        Just("value".to_string()),
                        "[a-z]{1,6}",
                    ],
                    inner,
                    0..3
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_record_never_panics(
            fields in proptest::collection::vec(
                (proptest::sample::select(vec![
                    "prompt", "response", "question", "answer", "rationale", "choices",
                    "instruction", "input", "output", "conversations", "messages", "system",
                ]), json_value()),
                0..5,
            )
        ) {
            let record: serde_json::Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            if let Ok(TrainExample::Chat { messages }) = example_from_value(Value::Object(record)) {
                proptest::prop_assert!(messages.iter().any(|m| m.role == "assistant"));
            }
        }

        #[test]
        fn any_file_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("data.jsonl");
            std::fs::write(&path, &bytes).unwrap();
            let _ = read_training_jsonl(&path);
        }
    }
}
