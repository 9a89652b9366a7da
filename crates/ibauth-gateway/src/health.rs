//! Health like IBeam's, on its own port: `/livez` (the process answers), `/readyz` (200 only
//! when authenticated), `/status` (JSON) — all from the cached state, so a probe never causes
//! a tickle — and `/activate` / `/deactivate` (dormant mode: logged out, clients answered 503).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ibauth::session::{SessionState, Status};
use serde_json::json;

use crate::state::Shared;

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/livez", get(|| async { "OK" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/activate", post(activate).get(activate))
        .route("/deactivate", post(deactivate).get(deactivate))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::router::access,
        ))
        .with_state(state)
}

async fn readyz(State(state): State<Shared>) -> Response {
    let ready = state.is_active() && state.session.status().state == SessionState::Authenticated;
    if ready {
        (StatusCode::OK, "OK").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "Not Ready").into_response()
    }
}

/// The session's status as JSON: no secret (the session id is shortened).
pub(crate) fn status_json(s: &Status, active: bool) -> serde_json::Value {
    json!({
        "active": active,
        "state": s.state.name(),
        "reason": match &s.state { SessionState::Failed(r) => Some(r.message.clone()), _ => None },
        "detail": s.detail,
        "session": s.session.as_deref().map(ibauth::short_id),
        "api_base": s.api_base,
        "tickles": s.tickles,
        "logins": s.logins,
        "renewals": s.renewals,
        "recoveries": s.recoveries,
        "transient_failures": s.transient_failures,
        "rtt_ms": s.last_rtt.map(|d| (d.as_secs_f64() * 1e6).round() / 1000.0),
        "last_tickle": s.last_tickle
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
        "tokens": s.tokens.iter().map(|t| json!({
            "kind": t.kind.name(),
            "obtained_at": t.obtained_at,
            "expires_at": t.expires_at,
        })).collect::<Vec<_>>(),
    })
}

async fn status(State(state): State<Shared>) -> Response {
    axum::Json(status_json(&state.session.status(), state.is_active())).into_response()
}

async fn activate(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    tracing::info!(%peer, "activate: logging in and serving");
    match state.activate().await {
        Ok(()) => axum::Json(json!({ "active": true })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "active": false, "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn deactivate(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    tracing::info!(%peer, "deactivate: logging out; clients are answered 503 until /activate");
    state.deactivate().await;
    axum::Json(json!({ "active": false })).into_response()
}
