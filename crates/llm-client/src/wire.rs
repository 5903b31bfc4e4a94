//! The JSON of OpenAI's chat-completions API, as far as openexpert speaks it: what
//! [`crate::ChatClient`] sends and reads, and what `openexpert serve` reads and answers.
//!
//! Every type ignores fields it does not know (servers add `system_fingerprint`, `logprobs`,
//! `usage` details...; clients send `presence_penalty`, `user`...), so talking to vLLM,
//! llama.cpp's server or OpenAI itself does not break on an extra key. A message's `content` is
//! read from a string, `null` (read as empty) or an array of text parts (joined), and always
//! written as a string.

use serde::{Deserialize, Deserializer, Serialize};

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text of the turn (`null` and text-part arrays are read as text).
    #[serde(default, deserialize_with = "content_text")]
    pub content: String,
}

impl ChatMessage {
    /// A turn of any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
    /// A `system` turn.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    /// A `user` turn.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    /// An `assistant` turn.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// Reads a message content: a string, `null`, or `[{"type": "text", "text": ...}, ...]`.
fn content_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    struct Part {
        #[serde(default, rename = "type")]
        kind: Option<String>,
        #[serde(default)]
        text: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Parts(Vec<Part>),
    }
    Ok(match Option::<Content>::deserialize(d)? {
        None => String::new(),
        Some(Content::Text(t)) => t,
        Some(Content::Parts(parts)) => {
            // An image or audio part read as nothing would answer a question never asked.
            if let Some(kind) = parts
                .iter()
                .filter_map(|p| p.kind.as_deref())
                .find(|k| *k != "text")
            {
                return Err(serde::de::Error::custom(format!(
                    "expected text content parts only, found a {kind:?} part (this server reads text)"
                )));
            }
            parts.into_iter().filter_map(|p| p.text).collect()
        }
    })
}

/// `stop` as OpenAI accepts it: one string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

impl Stop {
    /// The stop strings as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// The body of `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The served model's name (see `GET /v1/models`).
    pub model: String,
    /// The conversation so far.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature, 0 = greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Most new tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    /// OpenAI's newer name for `max_tokens`; `max_tokens` wins when both are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<usize>,
    /// Stop strings (cut from the answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    /// Sampler seed, for reproducible sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Number of choices; only 1 is supported by `openexpert serve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// Answer as server-sent events (`chat.completion.chunk` objects, then `data: [DONE]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

/// Token counts of one completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the rendered prompt.
    #[serde(default)]
    pub prompt_tokens: usize,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: usize,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: usize,
}

/// One answer of a completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    /// Position among the choices (always 0 from `openexpert serve`).
    #[serde(default)]
    pub index: usize,
    /// The assistant's turn.
    pub message: ChatMessage,
    /// `stop` (end of turn or a stop string) or `length` (`max_tokens` reached); `null` from
    /// some servers.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The answer to a non-streamed chat completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    /// Completion id (`chatcmpl-...`).
    #[serde(default)]
    pub id: String,
    /// Always `chat.completion`.
    #[serde(default)]
    pub object: String,
    /// Unix time of creation, seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answered.
    #[serde(default)]
    pub model: String,
    /// The answers (one from `openexpert serve`).
    #[serde(default)]
    pub choices: Vec<Choice>,
    /// Token counts, if the server reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// The part of a message a streamed chunk adds.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Delta {
    /// `assistant` in the first chunk, absent after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Text added by this chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One choice of a streamed chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Position among the choices.
    #[serde(default)]
    pub index: usize,
    /// What this chunk adds.
    #[serde(default)]
    pub delta: Delta,
    /// Set (`stop` / `length`) in the last chunk only; `null` before.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// One server-sent event of a streamed completion (`data: {chunk}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    /// Completion id, the same in every chunk of one completion.
    #[serde(default)]
    pub id: String,
    /// Always `chat.completion.chunk`.
    #[serde(default)]
    pub object: String,
    /// Unix time of creation, seconds.
    #[serde(default)]
    pub created: u64,
    /// The model that answers.
    #[serde(default)]
    pub model: String,
    /// The choices this chunk extends.
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The name to pass as `model`.
    pub id: String,
    /// Always `model`.
    #[serde(default)]
    pub object: String,
    /// Who serves it (`openexpert`).
    #[serde(default)]
    pub owned_by: String,
}

/// The answer of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `list`.
    #[serde(default)]
    pub object: String,
    /// The served models.
    #[serde(default)]
    pub data: Vec<ModelCard>,
}

/// What an error response says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A human-readable message.
    #[serde(default)]
    pub message: String,
    /// Kind of error (`invalid_request_error`, `not_found_error`, `server_error`, ...).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The request field at fault, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// The body of an error response: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

impl ErrorBody {
    /// An error body with a message, a kind, and optionally the offending field and a code.
    pub fn new(
        message: impl Into<String>,
        kind: impl Into<String>,
        param: Option<&str>,
        code: Option<&str>,
    ) -> Self {
        Self {
            error: ErrorDetail {
                message: message.into(),
                kind: kind.into(),
                param: param.map(str::to_string),
                code: code.map(str::to_string),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_reads_openai_shapes_and_ignores_extra_fields() {
        let r: ChatCompletionRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"hi","name":"x"},
                {"role":"assistant","content":null},
                {"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}],
                "stop":"\n","presence_penalty":0.5,"user":"u"}"#,
        )
        .unwrap();
        assert_eq!(r.messages[0], ChatMessage::user("hi"));
        assert_eq!(r.messages[1].content, "");
        assert_eq!(r.messages[2].content, "ab");
        assert_eq!(r.stop.unwrap().into_vec(), vec!["\n".to_string()]);
        let image = serde_json::from_str::<ChatCompletionRequest>(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(image.contains("\"image_url\" part"), "{image}");
        let many: Stop = serde_json::from_str(r#"["a","b"]"#).unwrap();
        assert_eq!(many.into_vec(), vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn request_omits_unset_options() {
        let r = ChatCompletionRequest {
            model: "m".into(),
            messages: vec![ChatMessage::user("q")],
            temperature: Some(0.0),
            top_p: None,
            max_tokens: Some(3),
            max_completion_tokens: None,
            stop: None,
            seed: None,
            n: None,
            stream: None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"model":"m","messages":[{"role":"user","content":"q"}],"temperature":0.0,"max_tokens":3}"#
        );
    }

    #[test]
    fn response_and_error_bodies_parse() {
        let r: ChatCompletionResponse = serde_json::from_str(
            r#"{"id":"c","object":"chat.completion","created":1,"model":"m","system_fingerprint":"x",
                "choices":[{"index":0,"message":{"role":"assistant","content":"yes"},"finish_reason":"stop","logprobs":null}]}"#,
        )
        .unwrap();
        assert_eq!(r.choices[0].message.content, "yes");
        assert_eq!(r.usage, None);
        let e: ErrorBody = serde_json::from_str(
            r#"{"error":{"message":"bad","type":"invalid_request_error","param":"top_p","code":null}}"#,
        )
        .unwrap();
        assert_eq!(
            (e.error.kind.as_str(), e.error.param.as_deref()),
            ("invalid_request_error", Some("top_p"))
        );
    }
}
