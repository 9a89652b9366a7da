//! Passing client requests on to IBKR through the session: authorised by it, paced (a request
//! that would wait too long is answered 429 here, so IBKR never sees a violation), bodies
//! streamed both ways, failures answered at once with a JSON reason. Identical concurrent GETs
//! of a paced endpoint share one upstream call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ibauth::Error;
use ibauth::session::{Forward, ForwardBody};
use serde_json::json;

use crate::state::Shared;

/// A passed-on request's times, for the access log: its wait for a turn under the pacing
/// limits (`None`: the session has no pacer) and IBKR's time to answer (to the answer's headers; the turn,
/// signing and sending included, the wait not).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub waited: Option<Duration>,
    pub upstream: Duration,
}

/// Whether a path is one the Client Portal Gateway passes on:
/// `/(v1|qa|ci|alpha|local)/(portal|am|api|tws)/…`.
pub(crate) fn forwarded_path(path: &str) -> bool {
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (
            Some("v1" | "qa" | "ci" | "alpha" | "local"),
            Some("portal" | "am" | "api" | "tws"),
            Some(_)
        )
    )
}

/// An answer, with the times of the upstream call behind it (`None`: answered here).
pub(crate) type Answer = (Response, Option<Timing>);

/// Any path the gateway passes on (and the answer for any other path that reaches it).
pub(crate) async fn forward(state: &Shared, request: Request) -> Answer {
    let path = request.uri().path();
    if !forwarded_path(path) {
        return (
            reason(
                StatusCode::NOT_FOUND,
                "not a Web API path: the gateway passes on /v1/api/… and /v1/portal/…",
            ),
            None,
        );
    }
    if !path.starts_with("/v1/") {
        return (
            reason(
                StatusCode::NOT_FOUND,
                "only the production environment (/v1/…) is served through OAuth; qa, ci, alpha and local are IBKR-internal",
            ),
            None,
        );
    }
    if let Some(refusal) = state.unavailable() {
        return (refusal, None);
    }
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let known_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let small = known_length.is_some_and(|n| n <= state.options.buffer_request_body as u64);
    let no_body = known_length == Some(0)
        || known_length.is_none()
            && !parts.headers.contains_key(header::TRANSFER_ENCODING)
            && matches!(parts.method, Method::GET | Method::HEAD | Method::DELETE);
    let body = if no_body {
        ForwardBody::Empty
    } else if small {
        // Boxed, as the sharing below: what only some requests do stays out of every
        // request's future (built and moved whole).
        match Box::pin(axum::body::to_bytes(
            body,
            state.options.buffer_request_body,
        ))
        .await
        {
            Ok(bytes) => ForwardBody::Full(bytes),
            Err(_) => {
                return (
                    reason(StatusCode::BAD_REQUEST, "the request body was cut short"),
                    None,
                );
            }
        }
    } else {
        ForwardBody::from_stream(body.into_data_stream())
    };
    let paced_endpoint = state.session.http().pacer().is_some_and(|p| {
        p.rules()
            .rule_for(&parts.method, parts.uri.path())
            .is_some()
    });
    // Everyone asking the same thing now gets the one answer (the key copied only then).
    let shared_key =
        (parts.method == Method::GET && no_body && paced_endpoint).then(|| path_and_query.clone());
    let request = Forward {
        method: parts.method,
        path_and_query,
        headers: parts.headers,
        body,
    };
    if let Some(key) = shared_key {
        let state2 = state.clone();
        let shared = Box::pin(
            state
                .flights
                .share(key, async move { buffered(&state2, request).await }),
        )
        .await;
        return shared.answer();
    }
    send(state, request).await
}

/// Sends `request` and streams the answer back.
async fn send(state: &Shared, request: Forward) -> Answer {
    let timeout = state.options.request_timeout;
    let started = Instant::now();
    // Boxed: the session's future is large, and every future around it (the timeout, the
    // access log, the connection's) would otherwise be as large and copied whole when built.
    let forwarded = tokio::time::timeout(
        timeout,
        Box::pin(state.session.forward(request, Some(state.options.max_wait))),
    )
    .await;
    let streamed = match forwarded {
        // Waiting on the session's recovery (a login, itself waiting for its turn), not on
        // IBKR: say so, as the next request is told at once.
        Err(_) => {
            return (
                state.unavailable().unwrap_or_else(|| too_slow(timeout)),
                None,
            );
        }
        Ok(Err(e)) => return (failure(&e), None),
        Ok(Ok(streamed)) => streamed,
    };
    let waited = streamed.permit.as_ref().map(|p| p.waited);
    let timing = Timing {
        waited,
        upstream: started.elapsed().saturating_sub(waited.unwrap_or_default()),
    };
    let permit = streamed.permit;
    let (upstream, body) = streamed.response.into_parts();
    let mut headers = upstream.headers;
    strip_headers(&mut headers);
    // The permit lives as long as the body is being passed on (an in-flight cap counts it).
    let body = http_body_util::BodyExt::map_frame(body, move |frame| {
        let _held = &permit;
        frame
    });
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = upstream.status;
    *response.headers_mut() = headers;
    (response, Some(timing))
}

/// An answer held whole, to hand to every client that asked the same.
#[derive(Clone)]
pub(crate) struct Buffered {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// The one upstream call's times (each client's access-log line shows them).
    timing: Option<Timing>,
}

impl Buffered {
    fn answer(&self) -> Answer {
        let mut response = (self.status, self.body.clone()).into_response();
        *response.headers_mut() = self.headers.clone();
        (response, self.timing)
    }
}

async fn buffered(state: &Shared, request: Forward) -> Buffered {
    let (response, timing) = send(state, request).await;
    let (parts, body) = response.into_parts();
    // Bounded: the same cap as every answer the session reads.
    match axum::body::to_bytes(body, ibauth::http::DEFAULT_MAX_BODY).await {
        Ok(body) => Buffered {
            status: parts.status,
            headers: parts.headers,
            body,
            timing,
        },
        Err(_) => {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let body = json!({
                "error": "IBKR's answer was cut short or too large",
                "gateway": "ibauth",
            });
            Buffered {
                status: StatusCode::BAD_GATEWAY,
                headers,
                body: Bytes::from(body.to_string()),
                timing,
            }
        }
    }
}

/// Concurrent identical requests in flight: the first runs, the others wait for its answer.
#[derive(Default)]
pub(crate) struct Flights {
    running: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Buffered>>>>,
}

impl Flights {
    pub(crate) async fn share<F>(&self, key: String, run: F) -> Buffered
    where
        F: std::future::Future<Output = Buffered>,
    {
        let cell = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let answer = cell.get_or_init(|| run).await.clone();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            running.remove(&key);
        }
        answer
    }
}

/// Leaves the upstream headers worth passing back: not the hop-by-hop ones (the connection to
/// the client is another), and no cookies (the session's are its own business). In place: the
/// answer's map is the client's, without a copy.
fn strip_headers(headers: &mut HeaderMap) {
    const STRIPPED: [header::HeaderName; 7] = [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::SET_COOKIE,
    ];
    let stripped = |name: &header::HeaderName| STRIPPED.contains(name) || name == "keep-alive";
    // One look over the few names an answer has, rather than a hashed lookup for each of the
    // eight: most answers have none of them.
    if !headers.keys().any(stripped) {
        return;
    }
    for name in STRIPPED {
        // `remove` takes every value of the name.
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

/// A JSON reason with `status`.
pub(crate) fn reason(status: StatusCode, why: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": why, "gateway": "ibauth" })),
    )
        .into_response()
}

fn too_slow(timeout: Duration) -> Response {
    reason(
        StatusCode::GATEWAY_TIMEOUT,
        &format!(
            "IBKR did not answer within {} s (the gateway's request timeout)",
            timeout.as_secs_f32()
        ),
    )
}

/// What the client sees when the session could not pass its request on.
fn failure(e: &Error) -> Response {
    match e {
        Error::Paced { source, .. } => {
            let secs = source.wait.as_secs() + u64::from(source.wait.subsec_nanos() > 0);
            let mut response = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({
                    "error": e.to_string(),
                    "gateway": "ibauth",
                    "retry_after_s": secs.max(1),
                    "limit": source.limit,
                    "bucket": source.bucket,
                })),
            )
                .into_response();
            if let Ok(value) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        Error::Timeout { .. } | Error::Network { .. } => reason(
            StatusCode::BAD_GATEWAY,
            &format!("IBKR cannot be reached: {e}"),
        ),
        _ => reason(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_cookies_are_not_passed_back() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("upgrade", "h2c"),
            ("proxy-authenticate", "Basic"),
            ("set-cookie", "x-sess-uuid=1"),
            ("set-cookie", "JSESSIONID=2"),
            ("content-type", "application/json"),
            ("x-request-id", "a"),
            ("x-request-id", "b"),
        ] {
            headers.append(
                axum::http::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_headers(&mut headers);
        let mut left: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        // Names may move (their order means nothing); a name's values keep theirs.
        left.sort_by_key(|(name, _)| *name);
        assert_eq!(
            left,
            [
                ("content-type", "application/json"),
                ("x-request-id", "a"),
                ("x-request-id", "b")
            ]
        );
    }

    #[test]
    fn the_gateways_forwarded_paths() {
        for yes in [
            "/v1/api/tickle",
            "/v1/portal/sso/validate",
            "/qa/tws/x",
            "/v1/am/a/b",
        ] {
            assert!(forwarded_path(yes), "{yes}");
        }
        for no in [
            "/",
            "/sso/Login",
            "/v1/api",
            "/v2/api/x",
            "/v1/other/x",
            "/livez",
        ] {
            assert!(!forwarded_path(no), "{no}");
        }
    }
}
