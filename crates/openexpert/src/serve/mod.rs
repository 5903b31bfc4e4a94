//! An OpenAI-compatible HTTP server for one lm-core model (with its adapters or mixture): the
//! library behind `openexpert serve`, startable in-process by tests and pipelines (TAPIR's
//! local teacher and judge can be served this way and called through `llm-client`).
//!
//! - `GET /v1/models`: the served model's name;
//! - `POST /v1/chat/completions`: messages rendered with the model's chat template, then
//!   [`lm_core::generate::generate`]; `temperature`, `top_p`, `max_tokens` (or
//!   `max_completion_tokens`), `stop`, `seed` honoured; `stream: true` answers server-sent
//!   events (`chat.completion.chunk` objects, then `data: [DONE]`);
//! - `GET /health`: `ok`.
//!
//! Errors are OpenAI error bodies: 400 naming the field at fault, 404 for an unknown model or
//! path, 503 (with `Retry-After: 1`) when the queue is full or the server stops.
//!
//! **Batching.** One thread owns the model; HTTP handlers (on a small tokio runtime) queue
//! requests to it, and it runs them as batched `generate` calls (see `worker` for grouping and
//! seeds). Greedy answers do not depend on batching: each row of a batch decodes as it would
//! alone (left padding is masked), so the server answers what `openexpert generate` prints.
//!
//! **Streaming** sends the answer's pieces (one per token) once its batch is done: the format is
//! OpenAI's, but the first byte comes no sooner than the whole answer.

mod error;
mod routes;
mod worker;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use lm_core::model::{ExpertMix, LanguageModel};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use error::{ApiError, ServeError};

/// How to serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    /// The name clients pass as `model` and `GET /v1/models` lists (default
    /// `smollm2-135m-instruct`, the default model's asset name).
    pub model_name: String,
    /// Host or address to listen on (default `127.0.0.1`: this machine only).
    pub host: String,
    /// Port (default 8080; 0 = any free one, see [`Server::addr`]).
    pub port: u16,
    /// Most requests per generation batch (default 8).
    pub max_batch: usize,
    /// How long the worker waits for more requests after the first, milliseconds (default 20:
    /// clients sending together arrive a few milliseconds apart, and one decoding step of a
    /// small model on a CPU takes longer than the wait).
    pub batch_window_ms: u64,
    /// Most requests waiting for the worker; more are answered 503 (default 64).
    pub max_queue: usize,
    /// `max_tokens` of a request that gives none, clamped to the context left (default 256).
    pub default_max_tokens: usize,
    /// Stop gracefully on Ctrl-C (SIGINT) (default false; the `serve` command sets it). A
    /// second Ctrl-C during the shutdown exits at once.
    pub stop_on_ctrl_c: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            model_name: lm_core::assets::DEFAULT_MODEL.into(),
            host: "127.0.0.1".into(),
            port: 8080,
            max_batch: 8,
            batch_window_ms: 20,
            max_queue: 64,
            default_max_tokens: 256,
            stop_on_ctrl_c: false,
        }
    }
}

/// What a server has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeStats {
    /// Chat-completion requests received.
    pub requests: u64,
    /// Of which answered with an error (bad request, overload, failure).
    pub rejected: u64,
    /// `generate` calls run.
    pub batches: u64,
    /// Rows of the largest batch.
    pub largest_batch: u64,
    /// Tokens generated in all.
    pub tokens_generated: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    rejected: AtomicU64,
    batches: AtomicU64,
    largest_batch: AtomicU64,
    tokens_generated: AtomicU64,
}

/// A running server. Dropping it stops it (gracefully: requests in flight are answered).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    model_name: String,
    counters: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    http: Option<JoinHandle<Result<(), ServeError>>>,
    worker: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts serving `model` (with `mix` applied, as [`lm_core::generate::generate`] takes it)
    /// and returns once the address is bound; requests are answered from then on, on other
    /// threads.
    ///
    /// # Errors
    /// [`ServeError::InvalidConfig`] for zero batch or queue sizes, an empty model name or a
    /// per-row mix; [`ServeError::NoChatTemplate`]; [`ServeError::Bind`] when the address cannot
    /// be bound; [`ServeError::Start`] when a thread or the runtime cannot start.
    pub fn start(
        model: LanguageModel,
        mix: ExpertMix,
        config: ServeConfig,
    ) -> Result<Self, ServeError> {
        check(&config, &mix)?;
        if model.chat_template.is_none() {
            return Err(ServeError::NoChatTemplate {
                model: model.source.display().to_string(),
            });
        }
        let addr_text = format!("{}:{}", config.host, config.port);
        let bind = |source| ServeError::Bind {
            addr: addr_text.clone(),
            source,
        };
        let listener = TcpListener::bind(&addr_text).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;

        let counters = Arc::new(Counters::default());
        let (queue, jobs) = std::sync::mpsc::sync_channel(config.max_queue);
        let worker_config = worker::WorkerConfig {
            max_batch: config.max_batch,
            window: Duration::from_millis(config.batch_window_ms),
            default_max_tokens: config.default_max_tokens,
        };
        let worker = {
            let counters = counters.clone();
            std::thread::Builder::new()
                .name("serve-generation".into())
                .spawn(move || worker::run(model, mix, jobs, worker_config, counters))
                .map_err(|source| ServeError::Start {
                    what: "generation thread",
                    source,
                })?
        };
        let state = Arc::new(routes::AppState {
            model_name: config.model_name.clone(),
            queue,
            next_id: AtomicU64::new(0),
            counters: counters.clone(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("serve-http")
            .enable_all()
            .build()
            .map_err(|source| ServeError::Start {
                what: "runtime",
                source,
            })?;
        let (stop, stopped) = oneshot::channel::<()>();
        let ctrl_c = config.stop_on_ctrl_c;
        let http = std::thread::Builder::new()
            .name("serve-http-main".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .map_err(|source| ServeError::Serve { addr, source })?;
                    let app = routes::router(state);
                    axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown_signal(stopped, ctrl_c))
                        .await
                        .map_err(|source| ServeError::Serve { addr, source })
                })
            })
            .map_err(|source| ServeError::Start {
                what: "HTTP thread",
                source,
            })?;
        tracing::info!("serving {} on http://{addr}/v1", config.model_name);
        Ok(Self {
            addr,
            model_name: config.model_name,
            counters,
            stop: Some(stop),
            http: Some(http),
            worker: Some(worker),
        })
    }

    /// The address the server listens on (with the actual port when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of its API, `http://ADDR/v1`, for [`llm_client::Endpoint::base_url`].
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The served model's name.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// Counters so far.
    pub fn stats(&self) -> ServeStats {
        let c = &self.counters;
        ServeStats {
            requests: c.requests.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
            tokens_generated: c.tokens_generated.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting connections, answers the requests in flight, then returns.
    ///
    /// # Errors
    /// What the HTTP server failed with, or [`ServeError::Panicked`].
    pub fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join()
    }

    /// Blocks until the server stops: on Ctrl-C when [`ServeConfig::stop_on_ctrl_c`] is set,
    /// or on an error.
    ///
    /// # Errors
    /// As [`Server::shutdown`].
    pub fn wait(mut self) -> Result<(), ServeError> {
        self.join()
    }

    fn join(&mut self) -> Result<(), ServeError> {
        let http = match self.http.take() {
            Some(h) => h.join().unwrap_or(Err(ServeError::Panicked {
                what: "HTTP thread",
            })),
            None => Ok(()),
        };
        // the HTTP side is gone, and with it the queue's sender: the worker ends its batch
        let worker = match self.worker.take() {
            Some(w) => w.join().map_err(|_| ServeError::Panicked {
                what: "generation thread",
            }),
            None => Ok(()),
        };
        http.and(worker)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = self.join() {
            tracing::error!("{e}");
        }
    }
}

fn check(config: &ServeConfig, mix: &ExpertMix) -> Result<(), ServeError> {
    let bad = |detail: String| Err(ServeError::InvalidConfig { detail });
    if config.model_name.trim().is_empty() {
        return bad("expected a model name to serve, found an empty one".into());
    }
    if config.max_batch == 0 {
        return bad("expected --max-batch >= 1, found 0".into());
    }
    if config.max_queue == 0 {
        return bad("expected --max-queue >= 1, found 0".into());
    }
    if config.default_max_tokens == 0 {
        return bad("expected default_max_tokens >= 1, found 0".into());
    }
    if matches!(mix, ExpertMix::PerRow(_)) {
        return bad(
            "expected a mix that applies to every row alike (base, static weights or a routed mixture), found a per-row one".into(),
        );
    }
    Ok(())
}

/// Resolves when the handle asks to stop (or is dropped), or on Ctrl-C if asked; a second
/// Ctrl-C then exits the process at once.
async fn shutdown_signal(stopped: oneshot::Receiver<()>, ctrl_c: bool) {
    if !ctrl_c {
        let _ = stopped.await;
        return;
    }
    tokio::select! {
        _ = stopped => {}
        r = tokio::signal::ctrl_c() => {
            if r.is_ok() {
                tracing::info!("Ctrl-C: finishing the requests in flight (Ctrl-C again to quit now)");
                tokio::spawn(async {
                    if tokio::signal::ctrl_c().await.is_ok() {
                        std::process::exit(130);
                    }
                });
            }
        }
    }
}
