//! The HTTP surface: IBKR's paths mapped to the handlers, with the fault-injection and `Date`
//! layers around them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State as AxumState};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::paths::API_PREFIXES;
use crate::reply::{Reject, answer};
use crate::state::{Shared, lock};
use crate::v1::MAX_BODY;
use crate::{admin, faults, oauth1a, oauth2, pacing, third_party, v1, ws};

/// The sandbox's routes; the admin API (`/__sandbox/…`) only with `admin`.
pub(crate) fn router(state: Shared, admin: bool) -> Router {
    let mut router = Router::new()
        .route(
            "/oauth2/api/v1/token",
            post(
                |AxumState(s): AxumState<Shared>, headers: HeaderMap, body: Bytes| async move {
                    answer(&s, "token", StatusCode::OK, |st| {
                        oauth2::token(st, &headers, &body)
                    })
                },
            ),
        )
        .route(
            "/gw/api/v1/sso-sessions",
            post(
                |AxumState(s): AxumState<Shared>,
                 ConnectInfo(peer): ConnectInfo<SocketAddr>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    // 200, as IBKR answers (its own OAuth 2.0 sample reads the bearer only on
                    // 200).
                    answer(&s, "sso-sessions", StatusCode::OK, |st| {
                        oauth2::sso_session(st, &headers, &body, peer.ip())
                    })
                },
            ),
        );
    for prefix in API_PREFIXES {
        router = api_routes(router, prefix);
    }
    router = router
        .route(
            "/authorize",
            get(
                |AxumState(s): AxumState<Shared>,
                 axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>| async move {
                    let token = query.get("oauth_token").cloned().unwrap_or_default();
                    decide(third_party::authorize_page(&mut lock(&s), &token))
                },
            )
            .post(|AxumState(s): AxumState<Shared>, body: Bytes| async move {
                let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                decide(third_party::authorize_submit(&mut lock(&s), &form))
            }),
        )
        .route(
            "/ip",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.ip().to_canonical().to_string()
            }),
        );
    if admin {
        router = router
            .route("/__sandbox/counters", get(admin::counters))
            .route("/__sandbox/orders", get(admin::orders))
            .route("/__sandbox/users", get(admin::users))
            .route("/__sandbox/users/{user}", get(admin::user))
            .route("/__sandbox/bulk-grants", post(admin::bulk_grants))
            .route("/__sandbox/{action}", post(admin::action));
    }
    router
        .fallback(|| async { Reject::ibkr(404, "Not Found").into_response() })
        // Innermost first: the penalty box, fault injection, the `Date` header, and outermost
        // the arrival stamp, so pacing sees when a request came whatever delays follow.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            pacing::penalty_box,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            faults::middleware,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            date_header,
        ))
        .layer(axum::middleware::from_fn(pacing::stamp_arrival))
        // Every body any endpoint buffers is bounded, not only the REST API's.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The REST API under `prefix` (`/v1/api` or `/v1/portal`): the same handlers at both, each
/// verifying signatures against the URL it was called at.
fn api_routes(router: Router<Shared>, prefix: &str) -> Router<Shared> {
    let at = |path: &str| format!("{prefix}{path}");
    router
        .route(&at("/sso/validate"), get(v1::handler))
        .route(&at("/iserver/auth/ssodh/init"), post(v1::handler))
        .route(
            &at("/iserver/auth/status"),
            post(v1::handler).get(v1::handler),
        )
        .route(&at("/tickle"), post(v1::handler).get(v1::handler))
        .route(&at("/logout"), post(v1::handler))
        .route(&at("/iserver/accounts"), get(v1::handler))
        .route(&at("/portfolio/accounts"), get(v1::handler))
        .route(&at("/iserver/marketdata/snapshot"), get(v1::handler))
        .route(&at("/iserver/account/orders"), get(v1::handler))
        .route(&at("/iserver/account/{account}/orders"), post(v1::handler))
        .route(
            &at("/oauth/live_session_token"),
            post(
                |AxumState(s): AxumState<Shared>,
                 ConnectInfo(peer): ConnectInfo<SocketAddr>,
                 uri: Uri,
                 headers: HeaderMap| async move {
                    const ENDPOINT: &str = "live_session_token";
                    let verified = {
                        let mut st = lock(&s);
                        let url = format!("{}{}", st.base_url, uri.path());
                        oauth1a::lst_verify(&mut st, authorization(&headers), &url)
                    };
                    let verified = match verified {
                        Ok(verified) => verified,
                        Err(reject) => {
                            return answer(&s, ENDPOINT, StatusCode::OK, |_| Err(reject));
                        }
                    };
                    // The Diffie-Hellman exchange, off the lock and off the async workers.
                    let agreed = tokio::task::spawn_blocking(move || oauth1a::lst_agree(verified))
                        .await
                        .unwrap_or_else(|_| Err(Reject::ibkr(500, "LST derivation failed")));
                    answer(&s, ENDPOINT, StatusCode::OK, |st| {
                        oauth1a::lst_record(st, agreed?, peer.ip())
                    })
                },
            ),
        )
        .route(
            &at("/oauth/request_token"),
            post(
                |AxumState(s): AxumState<Shared>, uri: Uri, headers: HeaderMap| async move {
                    answer(&s, "request_token", StatusCode::OK, |st| {
                        let url = format!("{}{}", st.base_url, uri.path());
                        third_party::request_token(st, authorization(&headers), &url)
                    })
                },
            ),
        )
        .route(
            &at("/oauth/access_token"),
            post(
                |AxumState(s): AxumState<Shared>, uri: Uri, headers: HeaderMap| async move {
                    answer(&s, "access_token", StatusCode::OK, |st| {
                        let url = format!("{}{}", st.base_url, uri.path());
                        third_party::access_token(st, authorization(&headers), &url)
                    })
                },
            ),
        )
        .route(
            &at("/ws"),
            get(
                |AxumState(s): AxumState<Shared>,
                 ConnectInfo(peer): ConnectInfo<SocketAddr>,
                 arrival: Option<axum::extract::Extension<pacing::Arrival>>,
                 upgrade: axum::extract::WebSocketUpgrade,
                 axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
                 headers: HeaderMap| async move {
                    let arrival = arrival.map_or_else(std::time::Instant::now, |a| a.0.0);
                    ws::handler(s, upgrade, query, headers, peer.ip(), arrival).await
                },
            ),
        )
}

/// `Date` from the sandbox's own clock, so a clock shifted for a test shows in the header as a
/// real server's would (clients measure their skew from it).
async fn date_header(
    AxumState(s): AxumState<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let now = lock(&s).now();
    let mut response = next.run(request).await;
    let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(now));
    if let Ok(value) = axum::http::HeaderValue::from_str(&date) {
        response
            .headers_mut()
            .insert(axum::http::header::DATE, value);
    }
    response
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The authorisation page's answer over HTTP.
fn decide(decision: third_party::Decision) -> Response {
    match decision {
        third_party::Decision::Redirect(to) => axum::response::Redirect::to(&to).into_response(),
        third_party::Decision::Page(status, html) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            axum::response::Html(html),
        )
            .into_response(),
    }
}
