//! # llm-client
//!
//! A blocking client of OpenAI-compatible chat endpoints (vLLM, llama.cpp's server, OpenAI,
//! `openexpert serve`), for the teachers, judges and classifiers of openexpert's pipelines, and
//! the wire types that `openexpert serve` shares with it.
//!
//! - [`wire`]: the chat-completions JSON (requests, responses, streamed chunks, model lists,
//!   error bodies), tolerant of fields it does not know;
//! - [`Endpoint`]: base URL, model, API-key variable, timeout, concurrency and retry settings;
//! - [`Sampling`]: temperature, top-p, max tokens, stop strings, seed (greedy by default);
//! - [`ChatClient`]: [`chat`](ChatClient::chat) and order-preserving, bounded-concurrency
//!   [`chat_many`](ChatClient::chat_many); retries with exponential backoff and full jitter on
//!   429 / 5xx / timeouts / dropped connections only, honouring `Retry-After`;
//!   [`check_model`](ChatClient::check_model) to fail at the start of a run, not at its first call;
//! - [`CallCache`]: successful completions on disk by a hash of (model, messages, sampling), so a
//!   re-run replays what was answered and calls only what is missing;
//! - [`ClientError`]: every failure, naming the role and the URL.
//!
//! No async runtime: calls block the calling thread; concurrency comes from threads
//! ([`ChatClient::chat_many`], or sharing a clone of the client between threads).
//!
//! ```no_run
//! use llm_client::{CallCache, ChatClient, Endpoint, Sampling, wire::ChatMessage};
//!
//! let endpoint = Endpoint::new("http://127.0.0.1:8080/v1", "smollm2-135m-instruct");
//! let teacher = ChatClient::new("teacher", endpoint)?
//!     .with_cache(CallCache::open(std::path::Path::new("run/calls"))?);
//! let answer = teacher.chat(&[ChatMessage::user("Name a prime.")], &Sampling::greedy(32))?;
//! println!("{} ({})", answer.text, answer.finish_reason);
//! # Ok::<(), llm_client::ClientError>(())
//! ```
#![warn(missing_docs)]

mod cache;
mod client;
mod endpoint;
mod error;
mod retry;
mod sampling;
pub mod wire;

pub use cache::CallCache;
pub use client::{CallStats, ChatClient, Completion};
pub use endpoint::Endpoint;
pub use error::{ClientError, Result};
pub use sampling::Sampling;
