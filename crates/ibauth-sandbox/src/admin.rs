//! The sandbox's own API under `/__sandbox/`: counters and the fault-injection handle over
//! HTTP, for tests that drive a separate process. It never exists on IBKR.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::control::Control;
use crate::reply::Reject;
use crate::state::{FailWith, Shared};

/// `GET /__sandbox/counters`: what the sandbox has answered (for tests in other processes).
pub(crate) async fn counters(AxumState(s): AxumState<Shared>) -> Response {
    axum::Json(Control { state: s }.counters()).into_response()
}

/// `GET /__sandbox/orders`: the orders placed so far (for tests in other processes).
pub(crate) async fn orders(AxumState(s): AxumState<Shared>) -> Response {
    axum::Json(Control { state: s }.orders()).into_response()
}

/// `POST /__sandbox/{action}` with a JSON body: the fault-injection handle over HTTP, for
/// tests that drive a separate process. Sandbox only; it never exists on IBKR.
pub(crate) async fn action(
    AxumState(s): AxumState<Shared>,
    axum::extract::Path(action): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let args: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return Reject::ibkr(400, "body is not JSON").into_response(),
        }
    };
    let text = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_owned);
    let number = |k: &str| args.get(k).and_then(Value::as_u64);
    let handle = Control { state: s };
    match action.as_str() {
        "fail_next" => {
            let Some(status) = number("status").and_then(|n| u16::try_from(n).ok()) else {
                return Reject::ibkr(400, "status missing").into_response();
            };
            let mut fail = FailWith::new(status, text("message").unwrap_or_default());
            if let Some(secs) = number("retry_after") {
                fail = fail.retry_after(secs);
            }
            handle.fail_next(number("n").unwrap_or(1) as usize, fail);
        }
        "delay" => {
            handle.delay_responses(number("ms").filter(|ms| *ms > 0).map(Duration::from_millis))
        }
        "drop_session" | "competing" | "rotate_session" | "disconnect" => {
            let Some(credential) = text("credential") else {
                return Reject::ibkr(400, "credential missing").into_response();
            };
            match action.as_str() {
                "drop_session" => handle.drop_session(&credential),
                "competing" => handle.report_competing(&credential),
                "disconnect" => handle.disconnect(&credential),
                _ => handle.rotate_session(&credential),
            }
        }
        "cut" => handle.cut_next(number("n").unwrap_or(1) as u32),
        "expire_tokens" => handle.expire_tokens_now(),
        "nightly_reset" => handle.nightly_reset(),
        _ => {
            return Reject::ibkr(404, format!("unknown sandbox action `{action}`")).into_response();
        }
    }
    axum::Json(serde_json::json!({ "ok": true })).into_response()
}
