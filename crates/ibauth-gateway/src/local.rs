//! What the gateway answers itself, because it must not reach IBKR from each client: a
//! re-authentication or `ssodh/init` becomes the session's own (shared) recovery; a client's
//! logout does not end the session every other client uses; client tickles are answered from
//! the keep-alive's; and `/` and `/sso/Login` show the status page clients and IBeam look for.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use ibauth::session::SessionState;
use serde_json::json;

use crate::options::LogoutMode;
use crate::proxy::reason;
use crate::state::Shared;

/// The text the Client Portal Gateway's login page shows once logged in; IBeam and clients
/// look for it.
pub const LOGIN_SUCCEEDS: &str = "Client login succeeds";

/// `/` and `/sso/Login`: a small status page.
pub(crate) async fn status_page(State(state): State<Shared>) -> Html<String> {
    let status = state.session.status();
    let authenticated = state.is_active() && status.state == SessionState::Authenticated;
    let headline = if authenticated {
        LOGIN_SUCCEEDS.to_owned()
    } else if !state.is_active() {
        "Dormant: the gateway is deactivated".to_owned()
    } else {
        format!("Not authenticated ({})", status.state.name())
    };
    let detail = status
        .detail
        .as_deref()
        .map(escape)
        .map(|d| format!("<p>{d}</p>"))
        .unwrap_or_default();
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ibauth gateway</title></head>\
         <body style=\"font-family:sans-serif;margin:3em\"><h1>{headline}</h1>\
         <p>ibauth gateway, {} session on {}; {} tickles, {} logins.</p>{detail}</body></html>",
        state.session.method().label(),
        escape(&status.api_base),
        status.tickles,
        status.logins,
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `iserver/reauthenticate`: the session's own recovery, shared by every client asking at
/// once; answered as IBKR does.
pub(crate) async fn reauthenticate(State(state): State<Shared>) -> Response {
    if !state.is_active() {
        return axum::Json(json!({ "error": "not logged in" })).into_response();
    }
    let recovery = tokio::time::timeout(state.options.request_timeout, state.session.recover());
    match recovery.await {
        Ok(Ok(())) => axum::Json(json!({ "message": "triggered" })).into_response(),
        Ok(Err(e)) => reason(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(_) => reason(
            StatusCode::GATEWAY_TIMEOUT,
            "the re-authentication goes on in the background; ask iserver/auth/status",
        ),
    }
}

/// `iserver/auth/ssodh/init`: the session's own `ssodh/init` (with its `compete`).
pub(crate) async fn ssodh_init(State(state): State<Shared>) -> Response {
    // Not refused when the session is down: a client asking for `ssodh/init` is trying to
    // bring it back, which is what the session does.
    if !state.is_active() {
        return crate::state::unavailable("the gateway is dormant (deactivated)", None);
    }
    let init = tokio::time::timeout(state.options.request_timeout, state.session.init());
    match init.await {
        Ok(Ok(status)) => axum::Json(status).into_response(),
        Ok(Err(e)) => reason(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(_) => reason(StatusCode::GATEWAY_TIMEOUT, "ssodh/init took too long"),
    }
}

/// `logout`: shared (answered here, the session goes on) or passed on (the session ends).
pub(crate) async fn logout(State(state): State<Shared>) -> Response {
    match state.options.logout {
        LogoutMode::Shared => {
            tracing::info!("a client logged out; the shared session goes on (logout: shared)");
            axum::Json(json!({ "status": true })).into_response()
        }
        LogoutMode::Pass => match state.session.logout().await {
            Ok(_) => axum::Json(json!({ "status": true })).into_response(),
            Err(e) => reason(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        },
    }
}

/// `tickle`: the keep-alive's last tickle, as IBKR sent it (a client's own tickles would only
/// multiply the gateway's).
pub(crate) async fn tickle(State(state): State<Shared>) -> Response {
    if let Some(refusal) = state.unavailable() {
        return refusal;
    }
    let status = state.session.status();
    if let Some(raw) = status.tickle.and_then(|t| t.raw) {
        return axum::Json(raw).into_response();
    }
    match state.session.tickle().await {
        Ok(tickle) => match tickle.raw {
            Some(raw) => axum::Json(raw).into_response(),
            None => axum::Json(tickle).into_response(),
        },
        Err(e) => reason(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
