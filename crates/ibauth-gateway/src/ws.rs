//! The WebSocket bridge on `/v1/api/ws`: a client connects as it would to IBKR's gateway — with
//! the `api` cookie, or without it (then `{"message":"waiting for session"}` and a first message
//! `{"session":…}`) — and the gateway opens the upstream socket with the session's credentials
//! and relays messages both ways. When the upstream socket drops or the session is renewed, it
//! reconnects and sends the client's live subscriptions again: clients see a gap, not a
//! disconnect — however long IBKR is away (past the socket's own reconnection tries, a new one
//! is opened every 0.5 s to 5 s), unless the session fails for good or the gateway goes
//! dormant.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use ibauth::session::SessionState;
use ibauth::ws::IbkrWebSocket;

use crate::state::{Shared, dormant};

/// How long a client without the cookie has to name its session.
const NAME_THE_SESSION: Duration = Duration::from_secs(30);
/// Between tries to open a new upstream socket once the old one's own reconnection gave up
/// (IBKR away for longer): doubling from the first to the second.
const REOPEN_MIN: Duration = Duration::from_millis(500);
const REOPEN_MAX: Duration = Duration::from_secs(5);

/// Policy violation (RFC 6455 §7.4.1): the client did not name the session.
const POLICY: u16 = 1008;
/// The upstream socket is gone for good, or the gateway went dormant.
const GOING_AWAY: u16 = 1001;
/// The close reason when the gateway goes dormant.
const DORMANT: &str = "the gateway is dormant (deactivated)";

pub(crate) async fn bridge(
    State(state): State<Shared>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Some(refusal) = state.unavailable() {
        return refusal;
    }
    let named = cookie_session(&headers);
    let cap = ibauth::http::DEFAULT_MAX_BODY;
    upgrade
        .max_message_size(cap)
        .max_frame_size(cap)
        .on_upgrade(move |socket| async move { relay(state, socket, named).await })
        .into_response()
}

/// The session named by the `api` cookie: `api=<id>` or `api={"session":"<id>"}` (raw or
/// percent-encoded), as clients send it.
fn cookie_session(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix("api="))
        .find_map(|value| {
            let decoded = url::form_urlencoded::parse(format!("v={value}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| value.to_owned());
            session_of(&decoded).or_else(|| Some(decoded).filter(|d| !d.is_empty()))
        })
}

/// `{"session":"<id>"}` → the id.
fn session_of(text: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()?
        .get("session")?
        .as_str()
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
}

/// A subscription's key (`smd+265598+{…}` → `md+265598`) and whether the message adds or
/// removes it; `None` for anything else (`tic`, `ech+hb`, …).
fn subscription(message: &str) -> Option<(String, bool)> {
    let mut chars = message.chars();
    let kind = chars.next()?;
    let rest = chars.as_str();
    let (topic, after) = rest.split_once('+')?;
    if topic.len() != 2 || !topic.chars().all(|c| c.is_ascii_lowercase()) {
        return None;
    }
    let argument = after.split('+').next().unwrap_or("");
    let key = format!("{topic}+{argument}");
    match kind {
        's' => Some((key, true)),
        'u' => Some((key, false)),
        _ => None,
    }
}

async fn close(client: &mut WebSocket, code: u16, reason: &str) {
    let _ = client
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.chars().take(120).collect::<String>().into(),
        })))
        .await;
}

async fn relay(state: Shared, mut client: WebSocket, named: Option<String>) {
    // Dormant: the client is closed and the upstream socket dropped, never reconnected (its
    // reconnection would log the session in again behind `/deactivate`'s logout).
    let mut activity = state.activity.subscribe();
    if named.is_none() {
        let waiting = Message::Text(r#"{"message":"waiting for session"}"#.into());
        if client.send(waiting).await.is_err() {
            return;
        }
        let first = tokio::time::timeout(NAME_THE_SESSION, client.recv()).await;
        let session = match first {
            Ok(Some(Ok(Message::Text(text)))) => session_of(&text),
            _ => None,
        };
        let current = state.session.status().session;
        if session.is_none() || session != current {
            tracing::info!("WebSocket client did not name the current session; closing");
            close(
                &mut client,
                POLICY,
                "name the session: {\"session\":\"<id from /tickle>\"}",
            )
            .await;
            return;
        }
    }
    let opened = tokio::select! {
        biased;
        () = dormant(&mut activity) => {
            close(&mut client, GOING_AWAY, DORMANT).await;
            return;
        }
        opened = state.session.websocket() => opened,
    };
    let upstream = match opened {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the upstream WebSocket");
            close(&mut client, GOING_AWAY, &format!("upstream: {e}")).await;
            return;
        }
    };
    // Live subscriptions, by key, as the client sent them: re-sent after a reconnect.
    let mut live: BTreeMap<String, String> = BTreeMap::new();
    let mut seen_reconnects = upstream.reconnects();
    // The upstream socket; `None` while IBKR is out of reach for longer than the socket's own
    // reconnection tries, when `reopening` opens a new one, again and again, until it opens
    // (the client keeps its connection and its subscriptions meanwhile).
    let mut upstream = Some(upstream);
    let mut reopening: Option<Reopen> = None;
    let mut backoff = REOPEN_MIN;
    loop {
        tokio::select! {
            biased;
            () = dormant(&mut activity) => {
                tracing::info!("the gateway is dormant: closing a WebSocket client");
                close(&mut client, GOING_AWAY, DORMANT).await;
                break;
            }
            from_client = client.recv() => match from_client {
                Some(Ok(Message::Text(text))) => {
                    let text = text.to_string();
                    match subscription(&text) {
                        Some((key, true)) => {
                            live.insert(key, text.clone());
                        }
                        Some((key, false)) => {
                            live.remove(&key);
                        }
                        None => {}
                    }
                    if let Some(upstream) = upstream.as_mut()
                        && let Err(e) = upstream.send_text(&text).await
                    {
                        tracing::debug!(error = %e, "upstream send failed; the next read reconnects");
                    }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    if let Some(upstream) = upstream.as_mut() {
                        let text = String::from_utf8_lossy(&bytes).into_owned();
                        let _ = upstream.send_text(&text).await;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            },
            from_upstream = next_upstream(&mut upstream) => match (from_upstream, upstream.as_mut()) {
                (Some(Ok(text)), Some(socket)) => {
                    if socket.reconnects() != seen_reconnects {
                        seen_reconnects = socket.reconnects();
                        resubscribe(socket, &live).await;
                    }
                    if client.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                (ended, _) => {
                    let why = match ended {
                        Some(Err(e)) => e.to_string(),
                        _ => "closed".to_owned(),
                    };
                    tracing::warn!(error = %why, "the upstream WebSocket is gone; opening a new one");
                    if let Some(gone) = upstream.take() {
                        gone.close().await;
                    }
                    reopening = Some(reopen(&state, Duration::ZERO));
                }
            },
            reopened = next_reopen(&mut reopening) => {
                reopening = None;
                match reopened {
                    Ok(mut socket) => {
                        tracing::info!("upstream WebSocket open again");
                        backoff = REOPEN_MIN;
                        resubscribe(&mut socket, &live).await;
                        seen_reconnects = socket.reconnects();
                        upstream = Some(socket);
                    }
                    Err(e) => {
                        if let SessionState::Failed(reason) = state.session.status().state {
                            tracing::warn!(error = %e, reason = %reason.message, "the session failed: closing a WebSocket client");
                            close(&mut client, GOING_AWAY, "the session failed").await;
                            break;
                        }
                        tracing::info!(error = %e, retry_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "cannot open the upstream WebSocket yet");
                        reopening = Some(reopen(&state, backoff));
                        backoff = (backoff * 2).min(REOPEN_MAX);
                    }
                }
            }
        }
    }
    if let Some(upstream) = upstream {
        upstream.close().await;
    }
}

/// Opening a new upstream socket after `after`.
type Reopen = Pin<Box<dyn Future<Output = Result<IbkrWebSocket, ibauth::Error>> + Send>>;

fn reopen(state: &Shared, after: Duration) -> Reopen {
    let session = state.session.clone();
    Box::pin(async move {
        tokio::time::sleep(after).await;
        session.websocket().await
    })
}

/// The next message of the upstream socket; never, while there is none.
async fn next_upstream(
    upstream: &mut Option<IbkrWebSocket>,
) -> Option<Result<String, ibauth::Error>> {
    match upstream {
        Some(socket) => socket.next_text().await,
        None => std::future::pending().await,
    }
}

/// The reopening's outcome; never, while none is under way. The future is kept across the
/// relay's turns, so a client's messages do not restart it.
async fn next_reopen(reopening: &mut Option<Reopen>) -> Result<IbkrWebSocket, ibauth::Error> {
    match reopening {
        Some(opening) => opening.await,
        None => std::future::pending().await,
    }
}

/// After a reconnect: the client's subscriptions again, so it sees a gap, not a disconnect.
async fn resubscribe(upstream: &mut IbkrWebSocket, live: &BTreeMap<String, String>) {
    tracing::info!(
        subscriptions = live.len(),
        "upstream WebSocket reconnected; subscribing again"
    );
    for message in live.values() {
        if let Err(e) = upstream.send_text(message).await {
            tracing::warn!(error = %e, "cannot subscribe again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn subscriptions_are_keyed_by_topic_and_argument() {
        assert_eq!(
            subscription(r#"smd+265598+{"fields":["31","84"]}"#),
            Some(("md+265598".into(), true))
        );
        assert_eq!(
            subscription("umd+265598+{}"),
            Some(("md+265598".into(), false))
        );
        assert_eq!(subscription("sor+{}"), Some(("or+{}".into(), true)));
        for other in ["tic", "ech+hb", "{\"session\":\"x\"}", "s+x", "SMD+1"] {
            assert_eq!(subscription(other), None, "{other}");
        }
    }

    #[test]
    fn the_api_cookie_in_every_form_clients_send() {
        let with = |cookie: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                axum::http::header::COOKIE,
                HeaderValue::from_str(cookie).unwrap(),
            );
            cookie_session(&h)
        };
        assert_eq!(with("api=abc123").as_deref(), Some("abc123"));
        assert_eq!(
            with(r#"x=1; api={"session":"abc123"}"#).as_deref(),
            Some("abc123")
        );
        assert_eq!(
            with("api=%7B%22session%22%3A%22abc123%22%7D").as_deref(),
            Some("abc123")
        );
        assert_eq!(with("other=1"), None);
    }
}
