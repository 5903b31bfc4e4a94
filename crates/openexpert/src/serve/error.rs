//! [`ServeError`]: why the server could not start or stopped; [`ApiError`]: a failed request, as
//! an OpenAI error body with its HTTP status.

use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use llm_client::wire::ErrorBody;

/// Why `openexpert serve` could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A setting cannot work.
    #[error("invalid serve settings: {detail}")]
    InvalidConfig {
        /// What was expected and what was found.
        detail: String,
    },
    /// The model cannot render chat messages.
    #[error(
        "{model} has no chat template: serve renders OpenAI chat messages with the model's template; serve an instruct model (e.g. smollm2-135m-instruct)"
    )]
    NoChatTemplate {
        /// The model's source.
        model: String,
    },
    /// The address could not be resolved or bound.
    #[error(
        "could not listen on {addr}: {source}; pick another --port (0 = any free one) or stop what uses it"
    )]
    Bind {
        /// `host:port` as given.
        addr: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime or a thread could not be started.
    #[error("could not start the server's {what}: {source}")]
    Start {
        /// `runtime`, `HTTP thread` or `generation thread`.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed while running.
    #[error("the HTTP server on {addr} failed: {source}")]
    Serve {
        /// The listening address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A server thread panicked (a bug: please report it with the log).
    #[error("the server's {what} panicked")]
    Panicked {
        /// `HTTP thread` or `generation thread`.
        what: &'static str,
    },
}

/// A failed request: an HTTP status and an OpenAI error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
}

impl ApiError {
    /// 400 `invalid_request_error`, naming the field at fault when there is one.
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody::new(message, "invalid_request_error", param, None),
        }
    }

    /// 404 for a model this server does not serve.
    pub fn unknown_model(asked: &str, served: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            body: ErrorBody::new(
                format!(
                    "expected model {served:?} (the one this server serves, see GET /v1/models), found {asked:?}"
                ),
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
            ),
        }
    }

    /// 404 for a path this server does not have.
    pub fn no_route(path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            body: ErrorBody::new(
                format!(
                    "no endpoint {path}: this server has GET /v1/models and POST /v1/chat/completions"
                ),
                "invalid_request_error",
                None,
                Some("unknown_url"),
            ),
        }
    }

    /// 405 for a path this server has, asked with another method (`GET /v1/chat/completions`).
    pub fn wrong_method(method: &str, path: &str) -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            body: ErrorBody::new(
                format!(
                    "{method} {path} is not served: this server has GET /v1/models and POST /v1/chat/completions"
                ),
                "invalid_request_error",
                None,
                Some("method_not_allowed"),
            ),
        }
    }

    /// 503 when the queue is full or the server is stopping.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: ErrorBody::new(message, "server_error", None, Some("overloaded")),
        }
    }

    /// 500 for a failure of the server itself.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: ErrorBody::new(message, "server_error", None, None),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.status == StatusCode::SERVICE_UNAVAILABLE;
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if retry {
            // the client's backoff honours it (llm-client does)
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
