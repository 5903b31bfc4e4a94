//! [`ChatClient`]: blocking calls to one OpenAI-compatible endpoint, with a bound on calls in
//! flight, retries, an optional [`CallCache`] and counters.
//!
//! A call goes: cache (if any) → wait for a free place (at most `max_concurrency` per client,
//! however many threads call it) → `POST {base_url}/chat/completions` → on a retryable failure
//! (429, 5xx, timeout, dropped connection) wait `Retry-After` (429 / 503) or a jittered
//! exponential backoff, and try again up to `max_retries` times → on success, store in the
//! cache. Failures are never cached; 401 / 403 and other 4xx are never retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::CallCache;
use crate::endpoint::Endpoint;
use crate::error::{ClientError, Result};
use crate::retry::{Backoff, Gate, parse_retry_after};
use crate::sampling::Sampling;
use crate::wire::{
    ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ErrorBody, ModelList, Stop,
};

/// The answer of one chat call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// The assistant's text.
    pub text: String,
    /// `stop` (end of turn or a stop string), `length` (`max_tokens` reached), or what the
    /// server said; `unknown` when it said nothing.
    pub finish_reason: String,
    /// Whether it came from the cache rather than the network.
    #[serde(skip)]
    pub cached: bool,
}

/// What a client has done so far (all its clones together).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallStats {
    /// Calls sent to the endpoint (each counted once, however many attempts it took),
    /// successful or not.
    pub calls: u64,
    /// Calls answered from the cache, without the network.
    pub cached: u64,
    /// Calls that ended in an error (a subset of `calls`, plus refused requests).
    pub failed: u64,
    /// Extra attempts made after retryable failures.
    pub retries: u64,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    cached: AtomicU64,
    failed: AtomicU64,
    retries: AtomicU64,
}

/// What is asked of the endpoint.
enum Call<'a> {
    /// `POST /chat/completions` with this JSON body.
    Chat(&'a [u8]),
    /// `GET /models`.
    Models,
}

/// A failed attempt and the wait the server asked for, if any.
struct Failure {
    error: ClientError,
    retry_after: Option<Duration>,
}

/// A blocking client of one OpenAI-compatible chat endpoint. Cheap to clone; clones share the
/// connection pool, the concurrency bound and the counters, and may be used from many threads.
#[derive(Clone)]
pub struct ChatClient {
    role: String,
    endpoint: Endpoint,
    url: String,
    models_url: String,
    api_key: Option<String>,
    agent: ureq::Agent,
    cache: Option<CallCache>,
    gate: Arc<Gate>,
    backoff: Arc<Backoff>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for ChatClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the key itself
        f.debug_struct("ChatClient")
            .field("role", &self.role)
            .field("url", &self.url)
            .field("model", &self.endpoint.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("cache", &self.cache.as_ref().map(CallCache::dir))
            .finish()
    }
}

impl ChatClient {
    /// A client of `endpoint`, named `role` (`teacher`, `judge`, ...) in its messages. Reads the
    /// API key from the variable `endpoint.api_key_env` now; connects only on the first call.
    ///
    /// # Errors
    /// [`ClientError::InvalidConfig`] for unusable settings, [`ClientError::MissingApiKey`] when
    /// the named variable is unset or empty.
    pub fn new(role: &str, endpoint: Endpoint) -> Result<Self> {
        endpoint
            .check()
            .map_err(|detail| ClientError::InvalidConfig {
                role: role.to_string(),
                detail,
            })?;
        let api_key = match &endpoint.api_key_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(key) if !key.trim().is_empty() => Some(key.trim().to_string()),
                _ => {
                    return Err(ClientError::MissingApiKey {
                        role: role.to_string(),
                        var: var.clone(),
                    });
                }
            },
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs_f64(endpoint.timeout_s)))
            .http_status_as_error(false)
            .user_agent(concat!("openexpert-llm-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let url = endpoint.chat_url();
        let models_url = endpoint.models_url();
        let seed = u64::from_le_bytes(
            Sha256::digest(format!("{role}\n{url}").as_bytes())[..8]
                .try_into()
                .expect("a SHA-256 digest has 32 bytes"),
        );
        Ok(Self {
            role: role.to_string(),
            gate: Arc::new(Gate::new(endpoint.max_concurrency)),
            backoff: Arc::new(Backoff::new(
                endpoint.backoff_base_ms,
                endpoint.backoff_max_ms,
                seed,
            )),
            url,
            models_url,
            api_key,
            agent,
            cache: None,
            counters: Arc::default(),
            endpoint,
        })
    }

    /// The same client, answering from (and filling) `cache`.
    pub fn with_cache(mut self, cache: CallCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The role this client serves.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The endpoint's settings.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The URL called (`{base_url}/chat/completions`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The cache, if one is attached.
    pub fn cache(&self) -> Option<&CallCache> {
        self.cache.as_ref()
    }

    /// Counters of this client and its clones so far.
    pub fn stats(&self) -> CallStats {
        let c = &self.counters;
        CallStats {
            calls: c.calls.load(Ordering::Relaxed),
            cached: c.cached.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
        }
    }

    /// One chat completion of `messages` with `sampling`: from the cache when it holds the call,
    /// otherwise from the endpoint (retrying as the module docs say), then cached.
    ///
    /// # Errors
    /// Every [`ClientError`] but `Io`: `InvalidRequest` for an empty conversation or unusable
    /// sampling settings (nothing is sent), the transport and HTTP errors, `RetriesExhausted`
    /// when every attempt failed with a retryable error, `EmptyResponse` for an empty message,
    /// `CacheWrite` when the answer cannot be stored.
    pub fn chat(&self, messages: &[ChatMessage], sampling: &Sampling) -> Result<Completion> {
        let result = self.chat_inner(messages, sampling);
        if result.is_err() {
            self.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn chat_inner(&self, messages: &[ChatMessage], sampling: &Sampling) -> Result<Completion> {
        if messages.is_empty() {
            return Err(self.invalid("expected at least one message, found none".into()));
        }
        sampling.check().map_err(|detail| self.invalid(detail))?;
        let key = self
            .cache
            .as_ref()
            .map(|_| CallCache::key(&self.endpoint.model, messages, sampling));
        if let (Some(cache), Some(key)) = (&self.cache, &key)
            && let Some(hit) = cache.get(key)
        {
            self.counters.cached.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&self.request(messages, sampling))
            .expect("strings and numbers always serialise");
        let text = self.send_with_retries(&Call::Chat(&body))?;
        let completion = self.completion(&text)?;
        if let (Some(cache), Some(key)) = (&self.cache, &key) {
            cache.put(key, &completion)?;
        }
        Ok(completion)
    }

    /// Many chat completions, at most `max_concurrency` in flight, answers in the order of
    /// `requests`; one failure does not stop the others.
    pub fn chat_many(&self, requests: &[(Vec<ChatMessage>, Sampling)]) -> Vec<Result<Completion>> {
        let workers = self
            .endpoint
            .max_concurrency
            .clamp(1, requests.len().max(1));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            for _ in 0..workers {
                let tx = tx.clone();
                let next = &next;
                s.spawn(move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((messages, sampling)) = requests.get(i) else {
                            break;
                        };
                        if tx.send((i, self.chat(messages, sampling))).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        drop(tx);
        let mut answers: Vec<(usize, Result<Completion>)> = rx.into_iter().collect();
        answers.sort_by_key(|(i, _)| *i);
        answers.into_iter().map(|(_, r)| r).collect()
    }

    /// The models the endpoint serves (`GET {base_url}/models`), with the same retries as a chat
    /// call. Not cached and not counted in [`ChatClient::stats`].
    ///
    /// # Errors
    /// As [`ChatClient::chat`]; `Malformed` when the answer is not a model list.
    pub fn models(&self) -> Result<ModelList> {
        let text = self.send_with_retries(&Call::Models)?;
        serde_json::from_str(&text).map_err(|e| ClientError::Malformed {
            role: self.role.clone(),
            url: self.models_url.clone(),
            detail: format!(
                "expected a JSON model list, found {e} in {:?}",
                clip(&text, 200)
            ),
        })
    }

    /// Checks that the endpoint answers and serves the configured model (one `GET /models`), so
    /// that a long run fails at its start rather than at its first call.
    ///
    /// # Errors
    /// As [`ChatClient::models`]; [`ClientError::UnknownModel`] when the model is not listed.
    pub fn check_model(&self) -> Result<()> {
        let list = self.models()?;
        if list.data.iter().any(|m| m.id == self.endpoint.model) {
            return Ok(());
        }
        Err(ClientError::UnknownModel {
            role: self.role.clone(),
            url: self.models_url.clone(),
            model: self.endpoint.model.clone(),
            served: list.data.into_iter().map(|m| m.id).collect(),
        })
    }

    /// The request body of a call.
    fn request(&self, messages: &[ChatMessage], sampling: &Sampling) -> ChatCompletionRequest {
        ChatCompletionRequest {
            model: self.endpoint.model.clone(),
            messages: messages.to_vec(),
            temperature: Some(sampling.temperature),
            top_p: Some(sampling.top_p),
            max_tokens: Some(sampling.max_tokens),
            max_completion_tokens: None,
            stop: (!sampling.stop.is_empty()).then(|| Stop::Many(sampling.stop.clone())),
            seed: sampling.seed,
            n: None,
            stream: None,
        }
    }

    /// Attempts the call until it succeeds, fails for good, or runs out of retries; returns the
    /// body of the 2xx answer.
    fn send_with_retries(&self, call: &Call) -> Result<String> {
        let url = match call {
            Call::Chat(_) => self.url.as_str(),
            Call::Models => self.models_url.as_str(),
        };
        let mut retry = 0;
        loop {
            let attempt = {
                let _place = self.gate.enter();
                self.attempt(call, url)
            };
            let Failure { error, retry_after } = match attempt {
                Ok(c) => return Ok(c),
                Err(f) => f,
            };
            if !error.is_retryable() {
                return Err(error);
            }
            if retry >= self.endpoint.max_retries {
                return Err(if retry == 0 {
                    error
                } else {
                    ClientError::RetriesExhausted {
                        role: self.role.clone(),
                        url: url.to_string(),
                        attempts: retry + 1,
                        last: Box::new(error),
                    }
                });
            }
            let wait = retry_after.unwrap_or_else(|| self.backoff.delay(retry));
            tracing::info!(
                "{} call failed ({error}); retry {} of {} in {:.2} s",
                self.role,
                retry + 1,
                self.endpoint.max_retries,
                wait.as_secs_f64()
            );
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(wait);
            retry += 1;
        }
    }

    /// One HTTP attempt, classified.
    fn attempt(&self, call: &Call, url: &str) -> std::result::Result<String, Failure> {
        let fail = |error| Failure {
            error,
            retry_after: None,
        };
        let bearer = self.api_key.as_ref().map(|key| format!("Bearer {key}"));
        let sent = match call {
            Call::Chat(body) => {
                let mut request = self
                    .agent
                    .post(url)
                    .header("Content-Type", "application/json")
                    .header("Accept", "application/json");
                if let Some(b) = &bearer {
                    request = request.header("Authorization", b);
                }
                request.send(*body)
            }
            Call::Models => {
                let mut request = self.agent.get(url).header("Accept", "application/json");
                if let Some(b) = &bearer {
                    request = request.header("Authorization", b);
                }
                request.call()
            }
        };
        let mut response = sent.map_err(|e| fail(self.transport_error(e, url)))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| fail(self.transport_error(e, url)))?;
        if status == 401 || status == 403 {
            let hint = match &self.endpoint.api_key_env {
                Some(var) => format!(
                    "check the API key in the environment variable {var}; {}",
                    error_message(&text)
                ),
                None => format!(
                    "set api_key_env to the environment variable holding the key; {}",
                    error_message(&text)
                ),
            };
            return Err(fail(ClientError::Unauthorized {
                role: self.role.clone(),
                url: url.to_string(),
                status,
                hint,
            }));
        }
        if !(200..300).contains(&status) {
            return Err(Failure {
                error: ClientError::Status {
                    role: self.role.clone(),
                    url: url.to_string(),
                    status,
                    body: error_message(&text),
                },
                retry_after: retry_after.filter(|_| status == 429 || status == 503),
            });
        }
        Ok(text)
    }

    /// The completion in a 2xx body.
    fn completion(&self, text: &str) -> Result<Completion> {
        let response: ChatCompletionResponse =
            serde_json::from_str(text).map_err(|e| ClientError::Malformed {
                role: self.role.clone(),
                url: self.url.clone(),
                detail: format!(
                    "expected a JSON chat.completion object, found {e} in {:?}",
                    clip(text, 200)
                ),
            })?;
        let Some(choice) = response.choices.into_iter().next() else {
            return Err(self.empty());
        };
        if choice.message.content.trim().is_empty() {
            return Err(self.empty());
        }
        Ok(Completion {
            text: choice.message.content,
            finish_reason: choice.finish_reason.unwrap_or_else(|| "unknown".into()),
            cached: false,
        })
    }

    /// A transport error, classified: timeouts and dropped connections are retryable; no
    /// connection at all, TLS and URL problems are not.
    fn transport_error(&self, e: ureq::Error, url: &str) -> ClientError {
        use std::io::ErrorKind;
        let (role, url) = (self.role.clone(), url.to_string());
        let timeout = || ClientError::Timeout {
            role: self.role.clone(),
            url: url.clone(),
            seconds: self.endpoint.timeout_s,
        };
        match e {
            ureq::Error::Timeout(_) => timeout(),
            ureq::Error::Io(ref io) => match io.kind() {
                ErrorKind::TimedOut | ErrorKind::WouldBlock => timeout(),
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof => ClientError::Disconnected {
                    role,
                    url,
                    source: Box::new(e),
                },
                ErrorKind::InvalidData => ClientError::Malformed {
                    role,
                    url,
                    detail: format!("expected a UTF-8 body, found {e}"),
                },
                _ => ClientError::Unreachable {
                    role,
                    url,
                    source: Box::new(e),
                },
            },
            ureq::Error::Protocol(_) | ureq::Error::BodyExceedsLimit(_) => ClientError::Malformed {
                role,
                url,
                detail: format!("expected an HTTP/1.1 answer, found {e}"),
            },
            ureq::Error::BodyStalled => ClientError::Disconnected {
                role,
                url,
                source: Box::new(e),
            },
            _ => ClientError::Unreachable {
                role,
                url,
                source: Box::new(e),
            },
        }
    }

    fn invalid(&self, detail: String) -> ClientError {
        ClientError::InvalidRequest {
            role: self.role.clone(),
            detail,
        }
    }

    fn empty(&self) -> ClientError {
        ClientError::EmptyResponse {
            role: self.role.clone(),
            url: self.url.clone(),
        }
    }
}

/// The message of an error body: OpenAI's `error.message` when it is one, otherwise the body's
/// first 500 bytes.
fn error_message(body: &str) -> String {
    match serde_json::from_str::<ErrorBody>(body) {
        Ok(e) if !e.error.message.is_empty() => e.error.message,
        _ if body.trim().is_empty() => "(empty body)".into(),
        _ => clip(body.trim(), 500).to_string(),
    }
}

/// The longest prefix of `s` of at most `n` bytes that ends on a character boundary.
fn clip(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_and_caches_can_be_shared_between_threads() {
        fn shared<T: Send + Sync + Clone>() {}
        shared::<ChatClient>();
        shared::<CallCache>();
    }

    #[test]
    fn error_message_prefers_openai_message_and_clips() {
        assert_eq!(
            error_message(r#"{"error":{"message":"slow down","type":"rate_limit"}}"#),
            "slow down"
        );
        assert_eq!(error_message("  "), "(empty body)");
        assert_eq!(error_message(&"é".repeat(400)).len(), 500);
    }

    #[test]
    fn missing_key_names_the_variable_and_bad_settings_are_refused() {
        let mut e = Endpoint::new("http://127.0.0.1:9/v1", "m");
        e.api_key_env = Some("OPENEXPERT_TEST_SURELY_UNSET_KEY".into());
        let err = ChatClient::new("judge", e).unwrap_err();
        assert!(matches!(err, ClientError::MissingApiKey { .. }));
        assert!(
            err.to_string().contains("OPENEXPERT_TEST_SURELY_UNSET_KEY"),
            "{err}"
        );
        let err = ChatClient::new("judge", Endpoint::new("ftp://h", "m")).unwrap_err();
        assert!(err.to_string().contains("judge"), "{err}");
    }

    #[test]
    fn bad_calls_are_refused_before_the_network() {
        // port 9 (discard) on loopback: nothing is sent because the request is refused first
        let client =
            ChatClient::new("teacher", Endpoint::new("http://127.0.0.1:9/v1", "m")).unwrap();
        let e = client.chat(&[], &Sampling::default()).unwrap_err();
        assert!(e.to_string().contains("at least one message"), "{e}");
        let bad = Sampling {
            top_p: 0.0,
            ..Sampling::default()
        };
        let e = client.chat(&[ChatMessage::user("q")], &bad).unwrap_err();
        assert!(e.to_string().contains("top_p"), "{e}");
        assert_eq!(
            client.stats(),
            CallStats {
                calls: 0,
                cached: 0,
                failed: 2,
                retries: 0
            }
        );
    }
}
