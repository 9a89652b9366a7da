//! `GET /v1/api/ws`: checks the `oauth_token` query (OAuth 1.0a) or bearer token (OAuth 2.0)
//! and the `api` session cookie, then sends IBKR's `system` and `sts` messages and heartbeats.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::oauth2::bearer;
use crate::pacing;
use crate::reply::Reject;
use crate::state::{Shared, State, lock, session_key};

/// The session a socket belongs to: (session key, credential).
fn authenticate(
    state: &State,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(String, String), Reject> {
    let now = state.now();
    let key = match query.get("oauth_token") {
        Some(token) => {
            let lst = state
                .oauth1a
                .lsts
                .get(token)
                .ok_or_else(Reject::unauthenticated)?;
            if lst.expires_at <= now {
                return Err(Reject::ibkr(401, "live session token expired"));
            }
            session_key(token)
        }
        None => bearer(headers)
            .ok_or_else(Reject::unauthenticated)?
            .to_owned(),
    };
    let session = state.sso.get(&key).ok_or_else(Reject::unauthenticated)?;
    if session.expires_at <= now {
        return Err(Reject::unauthenticated());
    }
    let cookie = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("api="))
        .next();
    if cookie != Some(session.session_id.as_str()) {
        return Err(Reject::ibkr(
            401,
            "the api cookie does not match the session (tickle for the current session id)",
        ));
    }
    Ok((key, session.credential.clone()))
}

pub(crate) async fn handler(
    shared: Shared,
    upgrade: WebSocketUpgrade,
    query: HashMap<String, String>,
    headers: HeaderMap,
    peer: IpAddr,
    arrival: Instant,
) -> Response {
    let (key, credential, heartbeat) = {
        let mut state = lock(&shared);
        let admitted = authenticate(&state, &query, &headers).and_then(|(key, credential)| {
            pacing::check(&mut state, &credential, "GET", "/v1/api/ws", peer, arrival)?;
            Ok((key, credential))
        });
        match admitted {
            Ok((key, credential)) => {
                state.counters.ws_connections += 1;
                (key, credential, state.ws_heartbeat)
            }
            Err(reject @ Reject::TooManyRequests { .. }) => return reject.into_response(),
            Err(reject) => {
                state.counters.rejections += 1;
                tracing::info!(endpoint = "ws", ?reject, "sandbox refused a request");
                return reject.into_response();
            }
        }
    };
    let session_id = lock(&shared)
        .sso
        .get(&key)
        .map(|s| s.session_id.clone())
        .unwrap_or_default();
    upgrade.on_upgrade(move |socket| serve(socket, shared, key, credential, session_id, heartbeat))
}

async fn serve(
    mut socket: WebSocket,
    shared: Shared,
    key: String,
    credential: String,
    session_id: String,
    heartbeat: Duration,
) {
    let sts = || {
        let state = lock(&shared);
        let flags = state.flags(&key, &credential);
        json!({
            "topic": "sts",
            "args": {
                "authenticated": flags.authenticated,
                "competing": flags.competing,
                "connected": flags.connected,
                "message": "",
                "fail": "",
                "serverName": "ibauth-sandbox",
                "serverVersion": env!("CARGO_PKG_VERSION"),
                "username": credential,
            }
        })
        .to_string()
    };
    let system = json!({"topic": "system", "success": credential, "isFT": false, "isPaper": false});
    if socket
        .send(Message::Text(system.to_string().into()))
        .await
        .is_err()
        || socket.send(Message::Text(sts().into())).await.is_err()
    {
        return;
    }
    let mut beat = tokio::time::interval(heartbeat);
    beat.reset();
    loop {
        tokio::select! {
            _ = beat.tick() => {
                // A socket belongs to one session: when it ends or changes, close, so the
                // client reconnects with the current session's cookie.
                let current = lock(&shared).sso.get(&key).map(|s| s.session_id.clone());
                if current.as_deref() != Some(session_id.as_str()) {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                let now_ms = lock(&shared).now() * 1000;
                let hb = json!({"topic": "system", "hb": now_ms}).to_string();
                if socket.send(Message::Text(hb.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) if text.as_str() == "tic" => {
                    let alive = json!({"topic": "tic", "alive": true}).to_string();
                    if socket.send(Message::Text(alive.into())).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Text(text))) if text.as_str().starts_with("sts") => {
                    if socket.send(Message::Text(sts().into())).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    }
}
