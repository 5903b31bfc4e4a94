//! Chat requests and replies: the plain-data currency between the algorithms and whatever
//! answers them (a local model, an OpenAI-compatible endpoint, a fake in a test).
//!
//! A [`ChatBackend`] completes a batch of [`ChatRequest`]s; the prompted roles of
//! [`crate::prompted`] render the TAPIR prompts into requests and hand them to a backend, so a new
//! backend only implements this one trait.

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Who speaks a chat turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The user's turn.
    User,
    /// The model's turn.
    Assistant,
}

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

impl ChatMessage {
    /// A system turn.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }

    /// A user turn.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }

    /// An assistant turn.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// How to sample one reply (OpenAI's `temperature`, `top_p`, `max_tokens`, `seed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// Temperature; 0 is greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 disables it.
    pub top_p: f32,
    /// Most new tokens.
    pub max_tokens: usize,
    /// Sampler seed (part of the call cache's key, so two samples of one prompt differ by it).
    pub seed: u64,
}

impl Sampling {
    /// Greedy decoding of at most `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            max_tokens,
            seed: 0,
        }
    }
}

/// One request to a chat model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation so far; the model writes the next assistant turn.
    pub messages: Vec<ChatMessage>,
    /// How to sample the reply.
    pub sampling: Sampling,
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The assistant turn's text.
    pub text: String,
    /// The reply stopped at the token limit (OpenAI's `finish_reason == "length"`).
    pub truncated: bool,
    /// Served from the call cache rather than computed.
    pub cached: bool,
}

impl Reply {
    /// A complete, freshly computed reply.
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            truncated: false,
            cached: false,
        }
    }
}

impl From<&str> for Reply {
    fn from(text: &str) -> Self {
        Reply::new(text)
    }
}

impl From<String> for Reply {
    fn from(text: String) -> Self {
        Reply::new(text)
    }
}

/// A request that failed after the backend's retries (a 500 that never went away, a timeout):
/// the item is dropped or left unscored and counted, the run goes on. Failures that make every
/// request fail (an unreachable endpoint, a refused key) are a [`crate::TapirError::Role`]
/// instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{detail}")]
pub struct CallFailure {
    /// What went wrong.
    pub detail: String,
}

/// One reply per request, in request order.
pub type Replies = Vec<std::result::Result<Reply, CallFailure>>;

/// Calls a role made, for the report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStats {
    /// Requests answered by the model (computed now).
    pub made: usize,
    /// Requests answered from the call cache.
    pub cached: usize,
    /// Requests that failed after retries.
    pub failed: usize,
}

impl CallStats {
    /// Counts one batch of replies.
    pub fn count(&mut self, replies: &Replies) {
        for r in replies {
            match r {
                Ok(r) if r.cached => self.cached += 1,
                Ok(_) => self.made += 1,
                Err(_) => self.failed += 1,
            }
        }
    }

    /// The sum of two counts.
    pub fn plus(self, other: CallStats) -> CallStats {
        CallStats {
            made: self.made + other.made,
            cached: self.cached + other.cached,
            failed: self.failed + other.failed,
        }
    }

    /// All requests.
    pub fn total(&self) -> usize {
        self.made + self.cached + self.failed
    }
}

/// Something that completes chat requests: a local model, an OpenAI-compatible client, a fake.
///
/// Implementations may run the batch in any order or concurrently, but return one reply per
/// request in request order.
pub trait ChatBackend {
    /// Where this backend runs, for error messages and reports (`http://host:8080/v1 model
    /// qwen`, `local qwen2.5-0.5b-instruct`).
    fn describe(&self) -> String;

    /// Completes every request.
    ///
    /// # Errors
    /// A [`crate::TapirError::Role`] (or any error) when the backend cannot work at all; a
    /// request that alone failed is an `Err` in its slot of the returned [`Replies`].
    fn complete(&self, requests: &[ChatRequest]) -> Result<Replies>;
}

impl<B: ChatBackend + ?Sized> ChatBackend for std::sync::Arc<B> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    fn complete(&self, requests: &[ChatRequest]) -> Result<Replies> {
        (**self).complete(requests)
    }
}

impl<B: ChatBackend + ?Sized> ChatBackend for &B {
    fn describe(&self) -> String {
        (**self).describe()
    }

    fn complete(&self, requests: &[ChatRequest]) -> Result<Replies> {
        (**self).complete(requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_made_cached_and_failed() {
        let mut s = CallStats::default();
        let cached = Reply {
            cached: true,
            ..Reply::new("a")
        };
        s.count(&vec![
            Ok(Reply::new("x")),
            Ok(cached),
            Err(CallFailure {
                detail: "500".into(),
            }),
            Ok("y".into()),
        ]);
        assert_eq!(
            s,
            CallStats {
                made: 2,
                cached: 1,
                failed: 1
            }
        );
        assert_eq!(s.total(), 4);
        assert_eq!(s.plus(s).made, 4);
    }
}
