//! The gateway's routes answered here (the status page, re-authentication, logout, tickles,
//! the WebSocket bridge) and what [`crate::front`] wraps every request in: the access list,
//! the access log and CORS.

use std::net::SocketAddr;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use crate::local;
use crate::proxy::{self, Answer};
use crate::state::Shared;

/// What is answered here under each of `/v1/api/` and `/v1/portal/` (any method: a method a
/// route does not take is refused here, never passed on).
const LOCAL: [&str; 5] = [
    "iserver/reauthenticate",
    "iserver/auth/ssodh/init",
    "logout",
    "tickle",
    "ws",
];

/// Whether the router answers `path` itself (everything else under the forwarded prefixes
/// goes to the proxy).
pub(crate) fn is_local(path: &str) -> bool {
    path == "/"
        || path == "/sso/Login"
        || ["/v1/api/", "/v1/portal/"].iter().any(|prefix| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| LOCAL.contains(&rest))
        })
}

/// The routes answered here, and the proxy as the fallback for the rest ([`crate::front`]
/// calls the proxy itself for a forwarded path, and the access list, the log and CORS around
/// both).
pub(crate) fn router(state: Shared) -> Router {
    let mut app = Router::new()
        .route("/", get(local::status_page))
        .route("/sso/Login", get(local::status_page));
    for service in ["api", "portal"] {
        for path in LOCAL {
            let route = match path {
                "iserver/reauthenticate" => post(local::reauthenticate).get(local::reauthenticate),
                "iserver/auth/ssodh/init" => post(local::ssodh_init),
                "logout" => post(local::logout).get(local::logout),
                "tickle" => post(local::tickle).get(local::tickle),
                _ => any(crate::ws::bridge),
            };
            app = app.route(&format!("/v1/{service}/{path}"), route);
        }
    }
    let fallback = state.clone();
    app.fallback(move |request: Request| async move {
        let (mut response, timing) = proxy::forward(&fallback, request).await;
        if let Some(timing) = timing {
            response.extensions_mut().insert(timing);
        }
        response
    })
    .with_state(state)
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
pub(crate) fn refusal(state: &Shared, peer: SocketAddr, request: &Request) -> Option<Response> {
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
pub(crate) async fn access_log<F>(request: Request, next: impl FnOnce(Request) -> F) -> Response
where
    F: Future<Output = Answer>,
{
    let method = request.method().clone();
    // A clone of the URI shares its bytes: no copy of the path.
    let uri = request.uri().clone();
    let started = Instant::now();
    let (response, timing) = next(request).await;
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
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
pub(crate) async fn cors<F>(
    state: &Shared,
    request: Request,
    next: impl FnOnce(Request) -> F,
) -> Answer
where
    F: Future<Output = Answer>,
{
    let Some(origin) = &state.options.cors.allowed_origin else {
        return next(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let (mut response, timing) = if preflight {
        (StatusCode::NO_CONTENT.into_response(), None)
    } else {
        next(request).await
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
    (response, timing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the front hands to the router rather than straight to the proxy: the router's own
    /// routes, exactly (a near miss is IBKR's to answer).
    #[test]
    fn the_routes_answered_here() {
        let mut local = vec!["/", "/sso/Login"];
        let all: Vec<String> = ["api", "portal"]
            .iter()
            .flat_map(|s| LOCAL.iter().map(move |p| format!("/v1/{s}/{p}")))
            .collect();
        local.extend(all.iter().map(String::as_str));
        assert_eq!(local.len(), 12);
        for path in local {
            assert!(is_local(path), "{path}");
        }
        for path in [
            "/v1/api/iserver/accounts",
            "/v1/api/tickle/",
            "/v1/api/tickles",
            "/v1/api/iserver/auth/status",
            "/v1/api/iserver/auth/ssodh/init/x",
            "/v1/tws/tickle",
            "/v2/api/tickle",
            "/v1/api//tickle",
            "/sso/login",
            "",
        ] {
            assert!(!is_local(path), "{path}");
        }
    }
}
