//! The gateway as a stack of small services: access list → access log → CORS → local routes,
//! the WebSocket bridge, or the proxy.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use crate::local;
use crate::proxy::{self, Timing};
use crate::state::Shared;

pub(crate) fn router(state: Shared) -> Router {
    let mut app = Router::new()
        .route("/", get(local::status_page))
        .route("/sso/Login", get(local::status_page));
    for service in ["api", "portal"] {
        let at = |path: &str| format!("/v1/{service}/{path}");
        app = app
            .route(
                &at("iserver/reauthenticate"),
                post(local::reauthenticate).get(local::reauthenticate),
            )
            .route(&at("iserver/auth/ssodh/init"), post(local::ssodh_init))
            .route(&at("logout"), post(local::logout).get(local::logout))
            .route(&at("tickle"), post(local::tickle).get(local::tickle))
            .route(&at("ws"), any(crate::ws::bridge));
    }
    // One middleware for the three (each layer of its own would clone the inner service and
    // box a future a request).
    app.fallback(proxy::forward)
        .layer(axum::middleware::from_fn_with_state(state.clone(), front))
        .with_state(state)
}

/// The access list, then the access log around CORS around the routes.
async fn front(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(refusal) = refusal(&state, peer, &request) {
        return refusal;
    }
    access_log(request, |request| cors(&state, request, next)).await
}

/// Refuses addresses the access list does not allow, as the Client Portal Gateway does (404
/// `Access Denied`) — but says in the log who was refused and what to change.
pub(crate) async fn access(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    match refusal(&state, peer, &request) {
        Some(refusal) => refusal,
        None => next.run(request).await,
    }
}

/// The answer for an address the access list does not allow (`None`: allowed).
fn refusal(state: &Shared, peer: SocketAddr, request: &Request) -> Option<Response> {
    let ip = peer.ip().to_canonical();
    if state.options.access.allows(ip) {
        return None;
    }
    if state.options.access.denies(ip) {
        tracing::warn!(
            %ip,
            path = request.uri().path(),
            "refused {ip}: it matches ips.deny; remove it from ips.deny to let it in"
        );
    } else {
        tracing::warn!(
            %ip,
            path = request.uri().path(),
            allowed = ?state.options.access.allowed(),
            "refused {ip}: it is not in ips.allow; add it (or a pattern such as {}) to ips.allow to let it in",
            suggestion(ip)
        );
    }
    Some((StatusCode::NOT_FOUND, "Access Denied").into_response())
}

/// A pattern that would let `ip` in: its /24 (`172.17.0.*`), or the address itself for IPv6.
fn suggestion(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.*")
        }
        std::net::IpAddr::V6(v6) => v6.to_string(),
    }
}

/// One structured line per request: method, path without the query (it can hold account ids),
/// status, time in the gateway (`ms`, to the answer's headers), and for a request passed on,
/// IBKR's time to answer (`upstream_ms`) and the wait for a turn under the pacing limits
/// (`waited_ms`; 0 with `IBAUTH_PACING=off`).
async fn access_log<F>(request: Request, next: impl FnOnce(Request) -> F) -> Response
where
    F: Future<Output = Response>,
{
    let method = request.method().clone();
    // A clone of the URI shares its bytes: no copy of the path.
    let uri = request.uri().clone();
    let started = Instant::now();
    let response = next(request).await;
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let timing = response.extensions().get::<Timing>().copied();
    tracing::info!(
        target: "ibauth_gateway::access",
        %method,
        path = uri.path(),
        status = response.status().as_u16(),
        ms = ms(started.elapsed()),
        upstream_ms = timing.map(|t| ms(t.upstream)),
        waited_ms = timing.and_then(|t| t.waited).map(ms),
        "request"
    );
    response
}

/// The gateway's `cors:` settings, for browser clients: headers on every answer, and the
/// preflight answered here.
async fn cors(state: &Shared, request: Request, next: Next) -> Response {
    let Some(origin) = &state.options.cors.allowed_origin else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    if state.options.cors.allow_credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if preflight {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
    }
    response
}
