//! The sandbox's own API under `/__sandbox/`: counters and the fault-injection handle over
//! HTTP, for tests that drive a separate process. It never exists on IBKR.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::control::Control;
use crate::reply::Reject;
use crate::state::{FailWith, PacingLimits, Shared};

/// `GET /__sandbox/counters`: what the sandbox has answered (for tests in other processes).
pub(crate) async fn counters(AxumState(s): AxumState<Shared>) -> Response {
    axum::Json(Control { state: s }.counters()).into_response()
}

/// `GET /__sandbox/orders`: the orders placed so far (for tests in other processes).
pub(crate) async fn orders(AxumState(s): AxumState<Shared>) -> Response {
    axum::Json(Control { state: s }.orders()).into_response()
}

/// Most answers one `fail_next` or `cut` request may script.
const MAX_SCRIPTED: u32 = 10_000;

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
    // How many answers to script: bounded, so a request cannot queue faults without end.
    let times = match args.get("n") {
        None => 1,
        Some(n) => match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n <= MAX_SCRIPTED => n,
            _ => {
                return Reject::ibkr(
                    400,
                    format!("n must be a whole number up to {MAX_SCRIPTED}"),
                )
                .into_response();
            }
        },
    };
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
            handle.fail_next(times as usize, fail);
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
        "cut" => handle.cut_next(times),
        "pacing" => match pacing_limits(&args) {
            Ok(limits) => handle.set_pacing(limits),
            Err(why) => return Reject::ibkr(400, why).into_response(),
        },
        "expire_tokens" => handle.expire_tokens_now(),
        "nightly_reset" => handle.nightly_reset(),
        _ => {
            return Reject::ibkr(404, format!("unknown sandbox action `{action}`")).into_response();
        }
    }
    axum::Json(serde_json::json!({ "ok": true })).into_response()
}

/// Most endpoint limits one `pacing` request may set.
const MAX_ENDPOINT_LIMITS: usize = 100;

/// The limits of a `POST /__sandbox/pacing` body: `{"enabled":false}` for off, or
/// `{"enabled":true}` with any of `preset` (`"ibkr"`, the default, or `"gateway"`),
/// `penalty_ms`, `global_per_second`, `global` (`{"count","per_ms"}`) and `endpoints`
/// (`[{"method","path","count","per_ms"}]`, `method` absent or null for any).
fn pacing_limits(args: &Value) -> Result<Option<PacingLimits>, String> {
    const KEYS: [&str; 6] = [
        "enabled",
        "preset",
        "penalty_ms",
        "global_per_second",
        "global",
        "endpoints",
    ];
    if let Some(unknown) = args
        .as_object()
        .and_then(|o| o.keys().find(|k| !KEYS.contains(&k.as_str())))
    {
        return Err(format!("unknown pacing setting `{unknown}`"));
    }
    let enabled = args
        .get("enabled")
        .and_then(Value::as_bool)
        .ok_or("`enabled` (true or false) missing")?;
    if !enabled {
        return Ok(None);
    }
    let mut limits = match args.get("preset").and_then(Value::as_str) {
        None | Some("ibkr") => PacingLimits::ibkr(),
        Some("gateway") => PacingLimits::gateway(),
        Some(_) => return Err("`preset` must be \"ibkr\" or \"gateway\"".into()),
    };
    if let Some(ms) = args.get("penalty_ms") {
        limits = limits.penalty(millis(ms, "penalty_ms")?);
    }
    if let Some(n) = args.get("global_per_second") {
        limits = limits.global(count(n, "global_per_second")?, Duration::from_secs(1));
    }
    if let Some(global) = args.get("global") {
        limits = limits.global(
            count(&global["count"], "global.count")?,
            millis(&global["per_ms"], "global.per_ms")?,
        );
    }
    if let Some(endpoints) = args.get("endpoints") {
        let endpoints = endpoints
            .as_array()
            .filter(|list| list.len() <= MAX_ENDPOINT_LIMITS)
            .ok_or(format!(
                "`endpoints` must be a list of at most {MAX_ENDPOINT_LIMITS}"
            ))?;
        for endpoint in endpoints {
            let method = match &endpoint["method"] {
                Value::Null => None,
                Value::String(m) => Some(m.as_str()),
                _ => return Err("`endpoints[].method` must be a string or null".into()),
            };
            let path = endpoint["path"]
                .as_str()
                .ok_or("`endpoints[].path` missing")?;
            limits = limits.endpoint(
                method,
                path,
                count(&endpoint["count"], "endpoints[].count")?,
                millis(&endpoint["per_ms"], "endpoints[].per_ms")?,
            );
        }
    }
    Ok(Some(limits))
}

fn count(value: &Value, name: &str) -> Result<u32, String> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(format!("`{name}` must be a whole number below 2^32"))
}

fn millis(value: &Value, name: &str) -> Result<Duration, String> {
    value
        .as_u64()
        .map(Duration::from_millis)
        .ok_or(format!("`{name}` must be a whole number of milliseconds"))
}
