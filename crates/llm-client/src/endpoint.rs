//! [`Endpoint`]: where an OpenAI-compatible server lives and how patiently to call it.

use serde::{Deserialize, Serialize};

/// An OpenAI-compatible chat endpoint and the client's manners towards it. Read from a config
/// file (TOML / JSON; unknown keys are refused so a typo is not silently ignored), every field
/// optional with the defaults below.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Endpoint {
    /// Base URL up to and including `/v1` (default `http://127.0.0.1:8080/v1`, where
    /// `openexpert serve` listens); `/chat/completions` is appended.
    pub base_url: String,
    /// The model name sent in every request (default empty: must be set).
    pub model: String,
    /// Name of the environment variable holding the API key, sent as `Authorization: Bearer`
    /// (default none: no key is sent). The key itself never goes in a config file.
    pub api_key_env: Option<String>,
    /// Seconds for a whole call, connection to last byte (default 120).
    pub timeout_s: f64,
    /// Most calls in flight at once from [`crate::ChatClient::chat_many`] (default 4).
    pub max_concurrency: usize,
    /// Extra attempts after a retryable failure (429, 5xx, timeout, dropped connection)
    /// (default 5).
    pub max_retries: usize,
    /// Backoff before retry `k` (from 0) is uniform in `[0, min(backoff_max_ms, backoff_base_ms
    /// · 2^k)]` ("full jitter"), milliseconds (default 500).
    pub backoff_base_ms: u64,
    /// Cap of the backoff, milliseconds (default 30 000). A `Retry-After` header on 429 / 503
    /// replaces the backoff and is not capped.
    pub backoff_max_ms: u64,
}

impl Default for Endpoint {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:8080/v1".into(),
            model: String::new(),
            api_key_env: None,
            timeout_s: 120.0,
            max_concurrency: 4,
            max_retries: 5,
            backoff_base_ms: 500,
            backoff_max_ms: 30_000,
        }
    }
}

impl Endpoint {
    /// An endpoint at `base_url` serving `model`, with the default manners.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            ..Self::default()
        }
    }

    /// The chat-completions URL: the base URL without trailing slashes, then
    /// `/chat/completions`.
    pub fn chat_url(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }

    /// The model-list URL: the base URL without trailing slashes, then `/models`.
    pub fn models_url(&self) -> String {
        format!("{}/models", self.base_url.trim_end_matches('/'))
    }

    /// Whether the settings can work; the error says what was expected and found.
    pub fn check(&self) -> Result<(), String> {
        let url = self.base_url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "expected base_url to start with http:// or https:// (e.g. http://127.0.0.1:8080/v1), found {:?}",
                self.base_url
            ));
        }
        if self.model.trim().is_empty() {
            return Err(
                "expected a model name (the server's GET /v1/models lists them), found none".into(),
            );
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(format!("expected timeout_s > 0, found {}", self.timeout_s));
        }
        if self.max_concurrency == 0 {
            return Err("expected max_concurrency >= 1, found 0".into());
        }
        if let Some(var) = &self.api_key_env
            && var.trim().is_empty()
        {
            return Err(
                "expected api_key_env to name an environment variable, found an empty name".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_missing_fields_and_typos_are_refused() {
        let e: Endpoint = serde_json::from_str(r#"{"model":"m","timeout_s":5}"#).unwrap();
        assert_eq!(e.base_url, "http://127.0.0.1:8080/v1");
        assert_eq!((e.timeout_s, e.max_retries), (5.0, 5));
        assert!(serde_json::from_str::<Endpoint>(r#"{"modle":"m"}"#).is_err());
        assert_eq!(
            Endpoint::new("http://h:1/v1/", "m").chat_url(),
            "http://h:1/v1/chat/completions"
        );
    }

    #[test]
    fn check_names_the_bad_field() {
        assert!(Endpoint::new("http://h/v1", "m").check().is_ok());
        let e = Endpoint::new("h:80/v1", "m").check().unwrap_err();
        assert!(e.contains("base_url"), "{e}");
        let e = Endpoint::new("http://h/v1", " ").check().unwrap_err();
        assert!(e.contains("model name"), "{e}");
        let mut zero = Endpoint::new("http://h/v1", "m");
        zero.max_concurrency = 0;
        assert!(zero.check().unwrap_err().contains("max_concurrency"));
    }
}
