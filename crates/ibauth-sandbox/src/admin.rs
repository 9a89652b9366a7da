//! The sandbox's own API under `/__sandbox/`: counters, per-user activity (`users`), bulk
//! third-party grants and the fault-injection handle over HTTP, for tests that drive a
//! separate process. It never exists on IBKR, it is for tests
//! only (anyone who reaches the port may drop sessions or script failures), and it can be
//! turned off (`SandboxBuilder::admin(false)`, `ibauth sandbox --no-admin`). Every number and
//! text it takes is bounded, so no request can make the sandbox allocate or wait without end.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::control::Control;
use crate::reply::Reject;
use crate::state::{FailWith, PacingLimits, Shared, lock};

/// `GET /__sandbox/counters`: what the sandbox has answered (for tests in other processes).
pub(crate) async fn counters(AxumState(s): AxumState<Shared>) -> Response {
    axum::Json(Control { state: s }.counters()).into_response()
}

/// `GET /__sandbox/orders`: the orders placed so far (for tests in other processes).
pub(crate) async fn orders(AxumState(s): AxumState<Shared>) -> Response {
    axum::Json(Control { state: s }.orders()).into_response()
}

/// `GET /__sandbox/users`: [`crate::UserStats`] of every user that did anything, by name.
pub(crate) async fn users(AxumState(s): AxumState<Shared>) -> Response {
    axum::Json(Control { state: s }.all_user_stats()).into_response()
}

/// `GET /__sandbox/users/{user}`: [`crate::UserStats`] of one user (all zero if never seen).
pub(crate) async fn user(
    AxumState(s): AxumState<Shared>,
    axum::extract::Path(user): axum::extract::Path<String>,
) -> Response {
    if user.len() > MAX_CREDENTIAL {
        return Reject::ibkr(
            400,
            format!("user names are at most {MAX_CREDENTIAL} bytes"),
        )
        .into_response();
    }
    axum::Json(Control { state: s }.user_stats(&user)).into_response()
}

/// Most access tokens one bulk-grants request may issue.
const MAX_BULK_GRANTS: u64 = 100_000;
/// Most access tokens the sandbox holds before bulk grants are refused.
const MAX_GRANTS_HELD: usize = 1_000_000;
/// Longest consumer key or user-name prefix of a bulk-grants request.
const MAX_BULK_NAME: usize = 64;

/// `POST /__sandbox/bulk-grants?consumer=KEY&prefix=P&n=N` (or the same fields in a JSON
/// body): issues OAuth 1.0a access tokens under the consumer for users `P0` … `P{N−1}` (`prefix`
/// defaults to `user`) and answers them as JSON lines (`application/x-ndjson`), one
/// `{"user","oauth_token","oauth_token_secret"}` per line.
pub(crate) async fn bulk_grants(
    AxumState(s): AxumState<Shared>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    body: Bytes,
) -> Response {
    let (consumer, prefix, n) = match bulk_args(query.as_deref(), &body) {
        Ok(args) => args,
        Err(why) => return Reject::ibkr(400, why).into_response(),
    };
    if lock(&s).oauth1a.tokens.len().saturating_add(n) > MAX_GRANTS_HELD {
        return Reject::ibkr(
            400,
            format!("the sandbox holds at most {MAX_GRANTS_HELD} access tokens"),
        )
        .into_response();
    }
    let handle = Control { state: s };
    // Thousands of RSA encryptions: off the async workers.
    let issued =
        tokio::task::spawn_blocking(move || handle.issue_access_tokens(&consumer, &prefix, n))
            .await;
    match issued {
        Ok(Some(issued)) => {
            let mut lines = String::with_capacity(issued.len().saturating_mul(400));
            for grant in &issued {
                if let Ok(line) = serde_json::to_string(grant) {
                    lines.push_str(&line);
                    lines.push('\n');
                }
            }
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderValue::from_static("application/x-ndjson"),
                )],
                lines,
            )
                .into_response()
        }
        Ok(None) => Reject::ibkr(400, "unknown consumer").into_response(),
        Err(_) => Reject::ibkr(500, "issuing the access tokens failed").into_response(),
    }
}

/// `consumer`, `prefix` and `n` of a bulk-grants request, from the query or a JSON body.
fn bulk_args(query: Option<&str>, body: &[u8]) -> Result<(String, String, usize), String> {
    let mut args = serde_json::Map::new();
    if !body.is_empty() {
        match serde_json::from_slice(body) {
            Ok(Value::Object(fields)) => args = fields,
            _ => return Err("the body must be a JSON object".into()),
        }
    }
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let value = match key.as_ref() {
            "n" => match value.parse::<u64>() {
                Ok(n) => Value::from(n),
                Err(_) => return Err("`n` must be a whole number".into()),
            },
            _ => Value::from(value.into_owned()),
        };
        args.insert(key.into_owned(), value);
    }
    if let Some(unknown) = args
        .keys()
        .find(|k| !["consumer", "prefix", "n"].contains(&k.as_str()))
    {
        return Err(format!("unknown bulk-grants setting `{unknown}`"));
    }
    let args = Value::Object(args);
    let consumer =
        text(&args, "consumer", MAX_BULK_NAME)?.ok_or_else(|| "`consumer` missing".to_owned())?;
    let prefix = text(&args, "prefix", MAX_BULK_NAME)?.unwrap_or_else(|| "user".to_owned());
    let n = bounded(&args, "n", 1, MAX_BULK_GRANTS)?.ok_or_else(|| "`n` missing".to_owned())?;
    let n = usize::try_from(n).map_err(|_| "`n` too large".to_owned())?;
    Ok((consumer, prefix, n))
}

/// Most answers one `fail_next` or `cut` request may script.
const MAX_SCRIPTED: u32 = 10_000;
/// Most scripted answers waiting at once.
const MAX_QUEUED: usize = 100_000;
/// Longest scripted message (each of up to `MAX_SCRIPTED` answers holds a copy).
const MAX_MESSAGE: usize = 1024;
/// Longest credential (IBKR usernames are short).
const MAX_CREDENTIAL: usize = 256;
/// Longest `Retry-After` a scripted answer may announce: one day.
const MAX_RETRY_AFTER_SECS: u64 = 86_400;
/// Longest response delay: one minute (clients time out long before).
const MAX_DELAY_MS: u64 = 60_000;
/// Longest pacing window: one day (IBKR's longest is 15 minutes).
const MAX_WINDOW_MS: u64 = 86_400_000;
/// Longest penalty: a week, what `PacingLimits::penalty` allows.
const MAX_PENALTY_MS: u64 = 7 * 86_400_000;
/// Largest pacing count: a window keeps up to this many arrival times per user.
const MAX_COUNT: u64 = 100_000;

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
    match run(&handle, &action, &args, times) {
        Ok(()) => axum::Json(serde_json::json!({ "ok": true })).into_response(),
        Err(Refusal::Bad(why)) => Reject::ibkr(400, why).into_response(),
        Err(Refusal::Unknown) => {
            Reject::ibkr(404, format!("unknown sandbox action `{action}`")).into_response()
        }
    }
}

/// Why an action was not done.
enum Refusal {
    /// A missing or out-of-range argument.
    Bad(String),
    /// No such action.
    Unknown,
}

impl From<String> for Refusal {
    fn from(why: String) -> Self {
        Refusal::Bad(why)
    }
}

/// Does `action` with its checked arguments.
fn run(handle: &Control, action: &str, args: &Value, times: u32) -> Result<(), Refusal> {
    match action {
        "fail_next" => {
            let status =
                bounded(args, "status", 100, 599)?.ok_or_else(|| "status missing".to_owned())?;
            let status = u16::try_from(status).map_err(|_| "status out of range".to_owned())?;
            let mut fail = FailWith::new(
                status,
                text(args, "message", MAX_MESSAGE)?.unwrap_or_default(),
            );
            if let Some(secs) = bounded(args, "retry_after", 0, MAX_RETRY_AFTER_SECS)? {
                fail = fail.retry_after(secs);
            }
            // Bounded in total too, not only per request.
            let queued = lock(&handle.state).faults.fail_next.len();
            if queued.saturating_add(times as usize) > MAX_QUEUED {
                return Err(format!("at most {MAX_QUEUED} scripted answers may wait").into());
            }
            handle.fail_next(times as usize, fail);
        }
        "delay" => {
            let ms = bounded(args, "ms", 0, MAX_DELAY_MS)?;
            handle.delay_responses(ms.filter(|ms| *ms > 0).map(Duration::from_millis));
        }
        "drop_session" | "competing" | "rotate_session" | "disconnect" => {
            let credential = text(args, "credential", MAX_CREDENTIAL)?
                .ok_or_else(|| "credential missing".to_owned())?;
            match action {
                "drop_session" => handle.drop_session(&credential),
                "competing" => handle.report_competing(&credential),
                "disconnect" => handle.disconnect(&credential),
                _ => handle.rotate_session(&credential),
            }
        }
        "cut" => handle.cut_next(times),
        "pacing" => handle.set_pacing(pacing_limits(args)?),
        "expire_tokens" => handle.expire_tokens_now(),
        "tickler_window" => {
            let ms =
                bounded(args, "ms", 1, MAX_WINDOW_MS)?.ok_or_else(|| "ms missing".to_owned())?;
            handle.set_tickler_window(Duration::from_millis(ms));
        }
        "reset_user_stats" => handle.reset_user_stats(),
        "nightly_reset" => handle.nightly_reset(),
        _ => return Err(Refusal::Unknown),
    }
    Ok(())
}

/// The string `args[key]` of at most `max` bytes, if given.
fn text(args: &Value, key: &str, max: usize) -> Result<Option<String>, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_str()
            .filter(|s| s.len() <= max)
            .map(|s| Some(s.to_owned()))
            .ok_or(format!("`{key}` must be a string of at most {max} bytes")),
    }
}

/// The whole number `args[key]` within `min..=max`, if given.
fn bounded(args: &Value, key: &str, min: u64, max: u64) -> Result<Option<u64>, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| (min..=max).contains(n))
            .map(Some)
            .ok_or(format!(
                "`{key}` must be a whole number from {min} to {max}"
            )),
    }
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
        limits = limits.penalty(millis(ms, "penalty_ms", MAX_PENALTY_MS)?);
    }
    if let Some(n) = args.get("global_per_second") {
        limits = limits.global(count(n, "global_per_second")?, Duration::from_secs(1));
    }
    if let Some(global) = args.get("global") {
        limits = limits.global(
            count(&global["count"], "global.count")?,
            millis(&global["per_ms"], "global.per_ms", MAX_WINDOW_MS)?,
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
                .filter(|p| p.len() <= 256)
                .ok_or("`endpoints[].path` missing or longer than 256 bytes")?;
            limits = limits.endpoint(
                method,
                path,
                count(&endpoint["count"], "endpoints[].count")?,
                millis(&endpoint["per_ms"], "endpoints[].per_ms", MAX_WINDOW_MS)?,
            );
        }
    }
    Ok(Some(limits))
}

fn count(value: &Value, name: &str) -> Result<u32, String> {
    value
        .as_u64()
        .filter(|n| *n <= MAX_COUNT)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(format!("`{name}` must be a whole number up to {MAX_COUNT}"))
}

fn millis(value: &Value, name: &str, max: u64) -> Result<Duration, String> {
    value
        .as_u64()
        .filter(|ms| *ms <= max)
        .map(Duration::from_millis)
        .ok_or(format!(
            "`{name}` must be a whole number of milliseconds up to {max}"
        ))
}
