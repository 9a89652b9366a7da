//! `GET /v1/api/ws`: checks the `oauth_token` query (OAuth 1.0a) or bearer token (OAuth 2.0)
//! before the upgrade, then the session: either the `api` cookie on the handshake, or — as
//! IBKR documents for clients that cannot set a cookie — a first text message
//! `{"session":"<id from tickle>"}` after the server's `{"message":"waiting for session"}`.
//! Once authenticated it sends IBKR's `system` and `sts` messages and heartbeats, and streams
//! market data: after `smd+<conid>+{"fields":[…]}` a `smd+<conid>` message with those fields at
//! once and again with every heartbeat, until `umd+<conid>+{}`. Every socket is closed when the
//! sandbox stops, as a restarting server's would be.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::oauth2::bearer;
use crate::pacing;
use crate::reply::Reject;
use crate::state::{Shared, State, lock, session_key};

/// Largest message or frame a client may send: its messages are `tic`, `sts` and small
/// subscriptions.
const MAX_MESSAGE: usize = 64 * 1024;

/// How long a socket opened without the cookie may take to send its session.
const SESSION_WAIT: Duration = Duration::from_secs(30);

/// Most market-data lines one socket may stream at once (IBKR's default is 100).
const MAX_MARKET_DATA_LINES: usize = 100;
/// Most fields one market-data subscription may ask for.
const MAX_FIELDS: usize = 100;
/// Streamed when a subscription names no fields: the last price.
const DEFAULT_FIELDS: &[u32] = &[31];

/// A market-data message from the client: `smd+<conid>+{"fields":["31",…]}` subscribes,
/// `umd+<conid>+{}` unsubscribes.
#[derive(Debug, PartialEq, Eq)]
enum MarketData {
    Subscribe(u64, Vec<u32>),
    Unsubscribe(u64),
}

fn market_data(text: &str) -> Option<MarketData> {
    let (kind, rest) = if let Some(rest) = text.strip_prefix("smd+") {
        (true, rest)
    } else {
        (false, text.strip_prefix("umd+")?)
    };
    let (conid, arguments) = rest.split_once('+').unwrap_or((rest, ""));
    let conid: u64 = conid.parse().ok().filter(|c| *c != 0)?;
    if !kind {
        return Some(MarketData::Unsubscribe(conid));
    }
    let asked = serde_json::from_str::<Value>(arguments)
        .ok()
        .and_then(|a| a.get("fields").and_then(Value::as_array).cloned())
        .unwrap_or_default();
    let mut fields: Vec<u32> = Vec::new();
    for field in asked.iter().filter_map(|f| match f {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    }) {
        if fields.len() == MAX_FIELDS {
            break;
        }
        if !fields.contains(&field) {
            fields.push(field);
        }
    }
    if fields.is_empty() {
        fields = DEFAULT_FIELDS.to_vec();
    }
    Some(MarketData::Subscribe(conid, fields))
}

/// Resolves once the sandbox is stopping (or gone).
async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// The `smd+<conid>` message for one market-data line.
fn market_data_message(shared: &Shared, conid: u64, fields: &[u32]) -> String {
    let updated = lock(shared).now().saturating_mul(1000);
    let mut message = crate::api::quote(conid, fields, updated);
    message.insert("topic".into(), json!(format!("smd+{conid}")));
    Value::Object(message).to_string()
}

/// Who a socket belongs to.
struct Owner {
    /// The SSO-session key.
    key: String,
    credential: String,
}

/// The session behind the token of the handshake, and its current session id.
fn token_session(
    state: &State,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(Owner, String), Reject> {
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
    let credential = session.credential.clone();
    Ok((Owner { key, credential }, session.session_id.clone()))
}

/// The session id in the `api` cookie: `api=<id>`, or `api={"session":"<id>"}` (raw or
/// percent-encoded), as clients send it.
fn cookie_session(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("api="))?;
    let decoded = if value.starts_with("%7B") || value.starts_with("%7b") {
        url::form_urlencoded::parse(format!("v={value}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())?
    } else {
        value.to_owned()
    };
    if decoded.starts_with('{') {
        // A JSON cookie without a session names none: refused, not taken as no cookie.
        Some(session_message(&decoded).unwrap_or_default())
    } else {
        Some(decoded)
    }
}

/// The `session` of a `{"session":"<id>"}` message.
fn session_message(text: &str) -> Option<String> {
    let message: Value = serde_json::from_str(text).ok()?;
    message.get("session")?.as_str().map(str::to_owned)
}

pub(crate) async fn handler(
    shared: Shared,
    upgrade: WebSocketUpgrade,
    query: HashMap<String, String>,
    headers: HeaderMap,
    peer: IpAddr,
    arrival: Instant,
) -> Response {
    let admitted =
        {
            let mut state = lock(&shared);
            let admitted = token_session(&state, &query, &headers).and_then(|(owner, current)| {
            let cookie = cookie_session(&headers);
            if cookie.as_ref().is_some_and(|c| *c != current) {
                return Err(Reject::ibkr(
                    401,
                    "the api cookie does not match the session (tickle for the current session id)",
                ));
            }
            pacing::check(&mut state, &owner.credential, "GET", "/v1/api/ws", peer, arrival)?;
            Ok((owner, cookie.is_some(), state.ws_heartbeat))
        });
            match admitted {
                Ok((owner, with_cookie, heartbeat)) => {
                    if with_cookie {
                        state.counters.ws_connections += 1;
                    }
                    (owner, with_cookie, heartbeat)
                }
                Err(reject @ Reject::TooManyRequests { .. }) => return reject.into_response(),
                Err(reject) => {
                    state.counters.rejections += 1;
                    tracing::info!(endpoint = "ws", ?reject, "sandbox refused a request");
                    return reject.into_response();
                }
            }
        };
    let (owner, with_cookie, heartbeat) = admitted;
    upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |mut socket| async move {
            let authenticated = with_cookie || await_session(&mut socket, &shared, &owner).await;
            if authenticated {
                serve(socket, shared, owner, heartbeat).await;
            }
        })
}

/// The cookie-less handshake: `waiting for session`, then the first text message must name the
/// socket's current session. True once it did; otherwise the socket is closed.
async fn await_session(socket: &mut WebSocket, shared: &Shared, owner: &Owner) -> bool {
    let waiting = json!({"message": "waiting for session"}).to_string();
    if socket.send(Message::Text(waiting.into())).await.is_err() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + SESSION_WAIT;
    let claimed = loop {
        match tokio::time::timeout_at(deadline, socket.recv()).await {
            Ok(Some(Ok(Message::Text(text)))) => break session_message(text.as_str()),
            // Pings are answered by the WebSocket layer; they are not the session.
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Binary(_)))) => break None,
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) => return false,
            Err(_) => break None,
        }
    };
    {
        let mut state = lock(shared);
        let current = state.sso.get(&owner.key).map(|s| s.session_id.clone());
        if claimed.is_some() && claimed == current {
            state.counters.ws_connections += 1;
            return true;
        }
        state.counters.rejections += 1;
    }
    tracing::info!(
        endpoint = "ws",
        "sandbox refused a socket: no or wrong session message"
    );
    let close = CloseFrame {
        code: close_code::POLICY,
        reason: "session does not match (send {\"session\":\"<id from tickle>\"})".into(),
    };
    let _ = socket.send(Message::Close(Some(close))).await;
    false
}

async fn serve(mut socket: WebSocket, shared: Shared, owner: Owner, heartbeat: Duration) {
    let Owner { key, credential } = owner;
    let (session_id, paper) = {
        let state = lock(&shared);
        match state.sso.get(&key) {
            Some(s) => (s.session_id.clone(), s.paper),
            None => return,
        }
    };
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
    let system = json!({"topic": "system", "success": credential, "isFT": false, "isPaper": paper});
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
    let mut stopping = lock(&shared).stopping.subscribe();
    // Market-data lines streamed on this socket: conid → fields.
    let mut lines: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    loop {
        tokio::select! {
            () = stopped(&mut stopping) => {
                let close = CloseFrame {
                    code: close_code::AWAY,
                    reason: "the sandbox is stopping".into(),
                };
                let _ = socket.send(Message::Close(Some(close))).await;
                return;
            }
            _ = beat.tick() => {
                // A socket belongs to one session: when it ends or changes, close, so the
                // client reconnects with the current session's cookie.
                let current = lock(&shared).sso.get(&key).map(|s| s.session_id.clone());
                if current.as_deref() != Some(session_id.as_str()) {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                let now_ms = lock(&shared).now().saturating_mul(1000);
                let hb = json!({"topic": "system", "hb": now_ms}).to_string();
                if socket.send(Message::Text(hb.into())).await.is_err() {
                    return;
                }
                for (&conid, fields) in &lines {
                    let update = market_data_message(&shared, conid, fields);
                    if socket.send(Message::Text(update.into())).await.is_err() {
                        return;
                    }
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) if market_data(text.as_str()).is_some() => {
                    match market_data(text.as_str()) {
                        Some(MarketData::Subscribe(conid, fields)) => {
                            if lines.len() >= MAX_MARKET_DATA_LINES && !lines.contains_key(&conid) {
                                let refusal = json!({
                                    "topic": format!("smd+{conid}"),
                                    "error": format!("at most {MAX_MARKET_DATA_LINES} market data lines"),
                                })
                                .to_string();
                                if socket.send(Message::Text(refusal.into())).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                            let first = market_data_message(&shared, conid, &fields);
                            lines.insert(conid, fields);
                            if socket.send(Message::Text(first.into())).await.is_err() {
                                return;
                            }
                        }
                        Some(MarketData::Unsubscribe(conid)) => {
                            lines.remove(&conid);
                        }
                        None => {}
                    }
                }
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

#[cfg(test)]
mod tests {
    use super::{MarketData, cookie_session, market_data};

    #[test]
    fn market_data_subscriptions_as_clients_send_them() {
        assert_eq!(
            market_data(r#"smd+265598+{"fields":["31","84","31"]}"#),
            Some(MarketData::Subscribe(265598, vec![31, 84]))
        );
        assert_eq!(
            market_data("smd+8314+{}"),
            Some(MarketData::Subscribe(8314, vec![31]))
        );
        assert_eq!(
            market_data("umd+265598+{}"),
            Some(MarketData::Unsubscribe(265598))
        );
        for other in ["tic", "smd+x+{}", "smd+0+{}", "sor+{}", "ech+hb"] {
            assert_eq!(market_data(other), None, "{other}");
        }
    }
    use axum::http::{HeaderMap, HeaderValue, header::COOKIE};

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(COOKIE, value);
        }
        headers
    }

    #[test]
    fn the_session_cookie_in_each_form() {
        for cookie in [
            "api=abc123",
            "x=1; api=abc123",
            r#"api={"session":"abc123"}"#,
            "api=%7B%22session%22%3A%22abc123%22%7D",
        ] {
            assert_eq!(
                cookie_session(&with_cookie(cookie)).as_deref(),
                Some("abc123"),
                "{cookie}"
            );
        }
        assert_eq!(cookie_session(&with_cookie("other=1")), None);
        assert_eq!(
            cookie_session(&with_cookie(r#"api={"x":"1"}"#)).as_deref(),
            Some("")
        );
    }
}
