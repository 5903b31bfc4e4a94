//! The HTTP side: `GET /v1/models`, `POST /v1/chat/completions` (JSON or server-sent events),
//! `GET /health`, and OpenAI error bodies for everything else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use llm_client::wire::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatMessage, Choice,
    ChunkChoice, Delta, ModelCard, ModelList, Usage,
};
use tokio::sync::oneshot;

use super::Counters;
use super::error::ApiError;
use super::worker::{Answer, Job, Settings};

/// What every handler shares.
pub(crate) struct AppState {
    /// The name clients pass as `model`.
    pub model_name: String,
    /// The worker's queue (bounded: a full queue answers 503).
    pub queue: SyncSender<Job>,
    /// Numbers completion ids.
    pub next_id: AtomicU64,
    /// Counters shared with the worker and the [`super::Server`] handle.
    pub counters: Arc<Counters>,
}

/// The routes of the server.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/health", get(|| async { "ok" }))
        .fallback(|uri: Uri| async move { ApiError::no_route(uri.path()) })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            ApiError::wrong_method(method.as_str(), uri.path())
        })
        .with_state(state)
}

async fn models(State(state): State<Arc<AppState>>) -> axum::Json<ModelList> {
    axum::Json(ModelList {
        object: "list".into(),
        data: vec![ModelCard {
            id: state.model_name.clone(),
            object: "model".into(),
            owned_by: "openexpert".into(),
        }],
    })
}

async fn chat_completions(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    state.counters.requests.fetch_add(1, Ordering::Relaxed);
    match answer(&state, &body).await {
        Ok(response) => response,
        Err(e) => {
            state.counters.rejected.fetch_add(1, Ordering::Relaxed);
            e.into_response()
        }
    }
}

async fn answer(state: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let request: ChatCompletionRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            format!("expected a JSON chat-completion request, found {e}"),
            None,
        )
    })?;
    if request.model != state.model_name {
        return Err(ApiError::unknown_model(&request.model, &state.model_name));
    }
    let settings = settings(&request)?;
    let messages = request
        .messages
        .iter()
        .map(|m| lm_core::chat_template::ChatMessage {
            role: m.role.clone(),
            content: m.content.clone(),
        })
        .collect();
    let stream = request.stream.unwrap_or(false);
    let (reply, answered) = oneshot::channel();
    let job = Job {
        messages,
        settings,
        stream,
        reply,
    };
    state.queue.try_send(job).map_err(|e| match e {
        TrySendError::Full(_) => ApiError::unavailable(
            "the server's queue is full: retry later, or start it with a larger --max-queue",
        ),
        TrySendError::Disconnected(_) => ApiError::unavailable("the server is shutting down"),
    })?;
    let answer = answered
        .await
        .map_err(|_| ApiError::unavailable("the server is shutting down"))??;
    let id = format!(
        "chatcmpl-{:x}{:06}",
        unix_now(),
        state.next_id.fetch_add(1, Ordering::Relaxed)
    );
    Ok(if stream {
        sse_response(&id, &state.model_name, answer)
    } else {
        json_response(id, &state.model_name, answer)
    })
}

/// The roles a chat template renders.
const CHAT_ROLES: [&str; 3] = ["system", "user", "assistant"];

/// The generation settings of a request, or a 400 naming the field at fault.
fn settings(request: &ChatCompletionRequest) -> Result<Settings, ApiError> {
    if request.messages.is_empty() {
        return Err(ApiError::bad_request(
            "expected at least one message, found none",
            Some("messages"),
        ));
    }
    if let Some((i, m)) = request
        .messages
        .iter()
        .enumerate()
        .find(|(_, m)| !CHAT_ROLES.contains(&m.role.as_str()))
    {
        return Err(ApiError::bad_request(
            format!(
                "expected the role of message {i} to be system, user or assistant (what the model's chat template renders), found {:?}",
                m.role
            ),
            Some("messages"),
        ));
    }
    if let Some(n) = request.n
        && n != 1
    {
        return Err(ApiError::bad_request(
            format!("expected n = 1 (one choice per request is supported), found {n}"),
            Some("n"),
        ));
    }
    let temperature = request.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(ApiError::bad_request(
            format!("expected temperature >= 0, found {temperature}"),
            Some("temperature"),
        ));
    }
    let top_p = request.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad_request(
            format!("expected top_p in (0, 1], found {top_p}"),
            Some("top_p"),
        ));
    }
    let (max_tokens, field) = match (request.max_tokens, request.max_completion_tokens) {
        (Some(n), _) => (Some(n), "max_tokens"),
        (None, n) => (n, "max_completion_tokens"),
    };
    if max_tokens == Some(0) {
        return Err(ApiError::bad_request(
            format!("expected {field} >= 1, found 0"),
            Some(field),
        ));
    }
    let stop = request
        .stop
        .clone()
        .map(|s| s.into_vec())
        .unwrap_or_default();
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::bad_request(
            "expected non-empty stop strings, found an empty one",
            Some("stop"),
        ));
    }
    Ok(Settings {
        max_tokens,
        temperature,
        top_p,
        stop,
        seed: request.seed,
    })
}

fn json_response(id: String, model: &str, answer: Answer) -> Response {
    axum::Json(ChatCompletionResponse {
        id,
        object: "chat.completion".into(),
        created: unix_now(),
        model: model.to_string(),
        choices: vec![Choice {
            index: 0,
            message: ChatMessage::assistant(answer.text),
            finish_reason: Some(answer.finish_reason.into()),
        }],
        usage: Some(Usage {
            prompt_tokens: answer.prompt_tokens,
            completion_tokens: answer.completion_tokens,
            total_tokens: answer.prompt_tokens + answer.completion_tokens,
        }),
    })
    .into_response()
}

/// The whole answer as server-sent events: a first chunk with the role, one chunk per delta, a
/// last chunk with the finish reason, then `data: [DONE]`.
fn sse_response(id: &str, model: &str, answer: Answer) -> Response {
    let created = unix_now();
    let chunk = |delta: Delta, finish_reason: Option<String>| {
        let chunk = ChatCompletionChunk {
            id: id.to_string(),
            object: "chat.completion.chunk".into(),
            created,
            model: model.to_string(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
            }],
        };
        format!(
            "data: {}\n\n",
            serde_json::to_string(&chunk).expect("strings and numbers always serialise")
        )
    };
    let mut body = chunk(
        Delta {
            role: Some("assistant".into()),
            content: Some(String::new()),
        },
        None,
    );
    for piece in answer.deltas {
        body.push_str(&chunk(
            Delta {
                role: None,
                content: Some(piece),
            },
            None,
        ));
    }
    body.push_str(&chunk(Delta::default(), Some(answer.finish_reason.into())));
    body.push_str("data: [DONE]\n\n");
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from(body),
    )
        .into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> ChatCompletionRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn settings_name_the_bad_field() {
        for (json, field) in [
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (
                r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#,
                "messages",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":-1}"#,
                "temperature",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"top_p":0}"#,
                "top_p",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                "max_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":0}"#,
                "max_completion_tokens",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#,
                "n",
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["a",""]}"#,
                "stop",
            ),
        ] {
            let e = settings(&request(json)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.body.error.param.as_deref(), Some(field), "{json}");
        }
    }

    #[test]
    fn settings_default_like_openai() {
        let s = settings(&request(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":"\n","max_completion_tokens":5}"#,
        ))
        .unwrap();
        assert_eq!(
            s,
            Settings {
                max_tokens: Some(5),
                temperature: 1.0,
                top_p: 1.0,
                stop: vec!["\n".into()],
                seed: None,
            }
        );
    }
}
