//! Change notifications: one `LISTEN` connection per coordinator, fanned out to per-identity
//! broadcast channels.
//!
//! Writers `NOTIFY` (through `pg_notify`) inside the transaction that makes the change, so a
//! notification is delivered only if the change committed. The payload is
//! `KIND:VERSION:IDENTITY` — `S:<version>:` saved, `D::` removed, `R::` released, `Q::`
//! recovery requested — well under PostgreSQL's 8000-byte limit (identities are at most
//! 200 bytes).
//!
//! When the listening connection breaks (the database restarted, the network dropped, a
//! periodic ping went unanswered) it reconnects with backoff and, once it listens again,
//! sends [`Event::Resync`] to every subscriber: notifications may have been missed, so they
//! read the state again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use ibauth::coord::{Event, Events};
use tokio::sync::{broadcast, oneshot};
use tokio_postgres::AsyncMessage;

use crate::config::Redactor;
use crate::pool::Pool;

/// The notification channel.
pub(crate) const CHANNEL: &str = "ibauth_events";

/// Events a subscriber may fall behind by before it sees `Lagged`.
const CAPACITY: usize = 64;

/// The per-identity channels.
#[derive(Default)]
pub(crate) struct Hub {
    channels: Mutex<HashMap<String, broadcast::Sender<Event>>>,
}

impl Hub {
    pub(crate) fn subscribe(&self, identity: &str) -> Events {
        let mut channels = self.lock();
        if channels.len() >= 64 {
            channels.retain(|_, tx| tx.receiver_count() > 0);
        }
        channels
            .entry(identity.to_owned())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    fn send(&self, identity: &str, event: Event) {
        let mut channels = self.lock();
        if let Some(tx) = channels.get(identity)
            && tx.send(event).is_err()
        {
            // Nobody listens any more.
            channels.remove(identity);
        }
    }

    fn resync_all(&self) {
        let mut channels = self.lock();
        channels.retain(|_, tx| tx.send(Event::Resync).is_ok());
    }

    /// Routes one notification payload; anything else on the channel is ignored.
    pub(crate) fn dispatch(&self, payload: &str) {
        if let Some((identity, event)) = parse(payload) {
            self.send(identity, event);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<Event>>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn parse(payload: &str) -> Option<(&str, Event)> {
    let mut parts = payload.splitn(3, ':');
    let kind = parts.next()?;
    let version = parts.next()?;
    let identity = parts.next().filter(|i| !i.is_empty())?;
    let event = match kind {
        "S" => Event::Saved(version.parse().ok()?),
        "D" => Event::Removed,
        "R" => Event::Released,
        "Q" => Event::RecoveryRequested,
        _ => return None,
    };
    Some((identity, event))
}

/// How the listener behaves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListenerOptions {
    pub(crate) ping_every: Duration,
    pub(crate) ping_timeout: Duration,
    pub(crate) max_backoff: Duration,
}

/// Runs the listener until `stop` is dropped or sent. `ready` is answered after the first
/// `LISTEN` (with its error when the first connection fails).
pub(crate) async fn run(
    pool: Arc<Pool>,
    hub: Arc<Hub>,
    store: String,
    redactor: Redactor,
    options: ListenerOptions,
    ready: oneshot::Sender<Result<(), String>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    loop {
        let outcome = tokio::select! {
            _ = &mut stop => return,
            outcome = listen_once(&pool, &hub, options, &mut ready) => outcome,
        };
        match outcome {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                let e = redactor.redact(e);
                if let Some(tx) = ready.take() {
                    let _ = tx.send(Err(e));
                    return;
                }
                tracing::warn!("{store}: change notifications interrupted ({e}); reconnecting");
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(options.max_backoff);
    }
}

/// One listening connection, from connect to its end: `Ok` if it listened before it broke.
async fn listen_once(
    pool: &Pool,
    hub: &Hub,
    options: ListenerOptions,
    ready: &mut Option<oneshot::Sender<Result<(), String>>>,
) -> Result<(), String> {
    let (client, mut connection) = pool.connect_raw().await.map_err(|e| e.to_string())?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    // The connection has to be driven while a query waits for its answer.
    let statement = format!("LISTEN {CHANNEL}");
    let listen = client.batch_execute(&statement);
    match drive(listen, &mut messages, hub, options.ping_timeout).await {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(e),
        None => return Err("the connection closed".into()),
    }
    match ready.take() {
        Some(tx) => {
            let _ = tx.send(Ok(()));
        }
        // A reconnection: what happened meanwhile was not heard.
        None => hub.resync_all(),
    }
    let mut ping = tokio::time::interval(options.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    loop {
        tokio::select! {
            message = messages.next() => {
                if !handle(message, hub) {
                    return Ok(());
                }
            }
            _ = ping.tick() => {
                let answered = drive(client.simple_query("SELECT 1"), &mut messages, hub, options.ping_timeout).await;
                if !matches!(answered, Some(Ok(_))) {
                    tracing::debug!("the notification connection did not answer its ping");
                    return Ok(());
                }
            }
        }
    }
}

type Messages<'m> = dyn futures_util::Stream<Item = Result<AsyncMessage, tokio_postgres::Error>>
    + Unpin
    + Send
    + 'm;

/// Polls `query` while dispatching what arrives; `None` when the connection ended first.
async fn drive<T>(
    query: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    messages: &mut Messages<'_>,
    hub: &Hub,
    limit: Duration,
) -> Option<Result<T, String>> {
    let query = tokio::time::timeout(limit, query);
    tokio::pin!(query);
    loop {
        tokio::select! {
            answer = &mut query => {
                return Some(match answer {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {limit:?}")),
                });
            }
            message = messages.next() => {
                if !handle(message, hub) {
                    return None;
                }
            }
        }
    }
}

/// Dispatches one message; `false` when the connection ended.
fn handle(message: Option<Result<AsyncMessage, tokio_postgres::Error>>, hub: &Hub) -> bool {
    match message {
        Some(Ok(AsyncMessage::Notification(n))) => {
            if n.channel() == CHANNEL {
                hub.dispatch(n.payload());
            }
            true
        }
        Some(Ok(_)) => true,
        Some(Err(e)) => {
            tracing::debug!("the notification connection ended: {e}");
            false
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_route_to_their_identity() {
        let hub = Hub::default();
        let mut a = hub.subscribe("oauth2:ab:cd");
        let mut b = hub.subscribe("other");
        hub.dispatch("S:42:oauth2:ab:cd");
        hub.dispatch("D::oauth2:ab:cd");
        hub.dispatch("R::oauth2:ab:cd");
        hub.dispatch("Q::oauth2:ab:cd");
        for junk in [
            "",
            "S",
            "S:x:oauth2:ab:cd",
            "Z::oauth2:ab:cd",
            "S:1:",
            "R::nobody",
        ] {
            hub.dispatch(junk);
        }
        assert_eq!(a.try_recv().unwrap(), Event::Saved(42));
        assert_eq!(a.try_recv().unwrap(), Event::Removed);
        assert_eq!(a.try_recv().unwrap(), Event::Released);
        assert_eq!(a.try_recv().unwrap(), Event::RecoveryRequested);
        assert!(a.try_recv().is_err());
        assert!(b.try_recv().is_err());
        hub.resync_all();
        assert_eq!(a.try_recv().unwrap(), Event::Resync);
        assert_eq!(b.try_recv().unwrap(), Event::Resync);
    }

    #[test]
    fn channels_without_subscribers_are_dropped() {
        let hub = Hub::default();
        let a = hub.subscribe("gone");
        drop(a);
        hub.dispatch("S:1:gone");
        assert!(hub.lock().is_empty());
        for i in 0..100 {
            drop(hub.subscribe(&format!("id-{i}")));
        }
        assert!(hub.lock().len() <= 65);
    }
}
