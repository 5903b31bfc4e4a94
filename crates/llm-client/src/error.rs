//! [`ClientError`]: everything a chat call can fail with, naming the role (`teacher`, `judge`,
//! ...) and the URL so that a run with several endpoints says which one failed.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// What can go wrong while calling an OpenAI-compatible endpoint or its cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint's settings cannot work (bad URL, zero concurrency, empty model name...).
    #[error("invalid {role} endpoint settings: {detail}")]
    InvalidConfig {
        /// Who the endpoint serves (`teacher`, `judge`, ...).
        role: String,
        /// What was expected and what was found.
        detail: String,
    },
    /// A call that cannot be sent (no message, unusable sampling settings); nothing was sent.
    #[error("invalid {role} call: {detail}")]
    InvalidRequest {
        /// Who the endpoint serves.
        role: String,
        /// What was expected and what was found.
        detail: String,
    },
    /// The endpoint names an API-key variable that is not set.
    #[error(
        "the {role} endpoint reads its API key from the environment variable {var}, which is not set (or empty): export {var}=..., or remove api_key_env for a server without keys"
    )]
    MissingApiKey {
        /// Who the endpoint serves.
        role: String,
        /// The variable's name.
        var: String,
    },
    /// No connection could be made (refused, unknown host, TLS failure): not retried.
    #[error(
        "the {role} endpoint {url} is unreachable: {source}; check that the server runs and the base URL is right"
    )]
    Unreachable {
        /// Who the endpoint serves.
        role: String,
        /// The URL called.
        url: String,
        /// The transport's error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// The connection broke mid-call (reset, closed early): retried.
    #[error("the {role} endpoint {url} dropped the connection: {source}")]
    Disconnected {
        /// Who the endpoint serves.
        role: String,
        /// The URL called.
        url: String,
        /// The transport's error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// HTTP 401 / 403: the key is missing or wrong. Never retried.
    #[error("the {role} endpoint {url} refused the request (HTTP {status}): {hint}")]
    Unauthorized {
        /// Who the endpoint serves.
        role: String,
        /// The URL called.
        url: String,
        /// 401 or 403.
        status: u16,
        /// What to check (the key's variable, or that none was set).
        hint: String,
    },
    /// Any other non-2xx status (after retries for 429 and 5xx).
    #[error("the {role} endpoint {url} answered HTTP {status}: {body}")]
    Status {
        /// Who the endpoint serves.
        role: String,
        /// The URL called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The error message of the body (OpenAI's `error.message`), or its first 500 bytes.
        body: String,
    },
    /// No complete answer within `timeout_s`: retried.
    #[error(
        "the {role} endpoint {url} did not answer within {seconds} s: raise timeout_s or lower max_tokens"
    )]
    Timeout {
        /// Who the endpoint serves.
        role: String,
        /// The URL called.
        url: String,
        /// The timeout, seconds.
        seconds: f64,
    },
    /// A 2xx answer that is not a chat completion.
    #[error(
        "the {role} endpoint {url} answered something that is not an OpenAI chat completion: {detail}"
    )]
    Malformed {
        /// Who the endpoint serves.
        role: String,
        /// The URL called.
        url: String,
        /// What was expected and what was found.
        detail: String,
    },
    /// Every attempt failed with a retryable error; `last` is the final one.
    #[error("the {role} endpoint {url} failed {attempts} times, giving up")]
    RetriesExhausted {
        /// Who the endpoint serves.
        role: String,
        /// The URL called.
        url: String,
        /// Attempts made (1 + retries).
        attempts: usize,
        /// The error of the last attempt.
        #[source]
        last: Box<ClientError>,
    },
    /// A completion with no choice or an empty (or whitespace-only) message.
    #[error(
        "the {role} endpoint {url} answered with an empty message: check the model's chat template and max_tokens"
    )]
    EmptyResponse {
        /// Who the endpoint serves.
        role: String,
        /// The URL called.
        url: String,
    },
    /// The endpoint does not list the configured model.
    #[error(
        "the {role} endpoint {url} does not serve the model {model:?}; it serves {served:?}: set model to one of them"
    )]
    UnknownModel {
        /// Who the endpoint serves.
        role: String,
        /// The model-list URL.
        url: String,
        /// The configured model.
        model: String,
        /// The models it lists.
        served: Vec<String>,
    },
    /// Reading or creating the call cache failed.
    #[error("call cache: I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing an entry of the call cache failed.
    #[error("call cache: could not write {path}")]
    CacheWrite {
        /// The entry's file.
        path: PathBuf,
        /// The atomic write's error.
        #[source]
        source: atomic_fs::Error,
    },
}

impl ClientError {
    /// Whether another attempt may succeed: timeouts, dropped connections and 429 / 5xx
    /// statuses. 401 / 403, other 4xx, malformed and empty answers are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Timeout { .. } | ClientError::Disconnected { .. } => true,
            ClientError::Status { status, .. } => *status == 429 || (500..600).contains(status),
            _ => false,
        }
    }

    /// The HTTP status behind this error, if an answer came.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } | ClientError::Unauthorized { status, .. } => {
                Some(*status)
            }
            ClientError::RetriesExhausted { last, .. } => last.status(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> ClientError {
        ClientError::Status {
            role: "judge".into(),
            url: "http://x/v1/chat/completions".into(),
            status,
            body: String::new(),
        }
    }

    #[test]
    fn only_429_5xx_timeouts_and_resets_are_retryable() {
        assert!(status(429).is_retryable());
        assert!(status(500).is_retryable());
        assert!(status(503).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(404).is_retryable());
        let unauthorized = ClientError::Unauthorized {
            role: "judge".into(),
            url: "u".into(),
            status: 401,
            hint: String::new(),
        };
        assert!(!unauthorized.is_retryable());
        let timeout = ClientError::Timeout {
            role: "judge".into(),
            url: "u".into(),
            seconds: 1.0,
        };
        assert!(timeout.is_retryable());
    }

    #[test]
    fn messages_name_role_and_url() {
        let e = ClientError::RetriesExhausted {
            role: "teacher".into(),
            url: "http://h/v1/chat/completions".into(),
            attempts: 3,
            last: Box::new(status(503)),
        };
        assert_eq!(
            e.to_string(),
            "the teacher endpoint http://h/v1/chat/completions failed 3 times, giving up"
        );
        assert_eq!(e.status(), Some(503));
        let source = std::error::Error::source(&e).unwrap().to_string();
        assert!(source.contains("HTTP 503"), "{source}");
    }
}
