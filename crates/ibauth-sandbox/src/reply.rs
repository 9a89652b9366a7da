//! Refusals in IBKR's two shapes: `application/problem+json` on the OAuth and gateway
//! endpoints, `{"error": …, "statusCode": …}` on the REST API.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::state::{Shared, State, lock};

/// A refusal, with the reason the sandbox logs.
#[derive(Debug)]
pub(crate) enum Reject {
    Problem {
        status: u16,
        title: &'static str,
        detail: String,
    },
    Ibkr {
        status: u16,
        message: String,
    },
    /// A pacing refusal (429 with `Retry-After`); counted by the pacing counters, not as a
    /// rejection.
    TooManyRequests {
        retry_after_secs: u64,
    },
}

impl Reject {
    pub fn problem(status: u16, detail: impl Into<String>) -> Self {
        let title = match status {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            415 => "Unsupported Media Type",
            _ => "Internal Server Error",
        };
        Reject::Problem {
            status,
            title,
            detail: detail.into(),
        }
    }

    pub fn ibkr(status: u16, message: impl Into<String>) -> Self {
        Reject::Ibkr {
            status,
            message: message.into(),
        }
    }

    pub fn unauthenticated() -> Self {
        Self::ibkr(401, "not authenticated")
    }

    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Reject::TooManyRequests { retry_after_secs }
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        match self {
            Reject::Problem {
                status,
                title,
                detail,
            } => {
                let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                let body = json!({ "type": "about:blank", "title": title, "status": status, "detail": detail });
                let mut response = (code, body.to_string()).into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/problem+json"),
                );
                response
            }
            Reject::Ibkr { status, message } => {
                let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                (
                    code,
                    axum::Json(json!({ "error": message, "statusCode": status })),
                )
                    .into_response()
            }
            Reject::TooManyRequests { retry_after_secs } => {
                let mut response = Reject::ibkr(429, "Too Many Requests").into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                response
            }
        }
    }
}

/// Runs one handler under the lock, counting and logging refusals.
pub(crate) fn answer(
    state: &Shared,
    endpoint: &str,
    ok: StatusCode,
    handler: impl FnOnce(&mut State) -> Result<Value, Reject>,
) -> Response {
    let mut state = lock(state);
    match handler(&mut state) {
        Ok(body) => (ok, axum::Json(body)).into_response(),
        Err(reject) => {
            if !matches!(reject, Reject::TooManyRequests { .. }) {
                state.counters.rejections += 1;
            }
            tracing::info!(endpoint, ?reject, "sandbox refused a request");
            reject.into_response()
        }
    }
}
