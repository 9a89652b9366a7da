//! Change notification over Redis pub/sub: one dedicated connection per coordinator, subscribed
//! to one channel (`{prefix}events`) whose messages name their identity, fanned out to
//! per-identity broadcast channels in the process.
//!
//! Pub/sub is at-most-once: a message published while the listener is disconnected is lost.
//! So whenever the listener reconnects (after a restart of Redis, a network cut, or a silent
//! connection that stopped answering its pings) every subscriber gets [`Event::Resync`] and
//! reads the state again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt as _;
use ibauth::coord::{Event, Events};
use tokio::sync::{broadcast, watch};

/// How many events a slow subscriber may fall behind before it sees `Lagged` (as in memory).
const CAPACITY: usize = 64;

/// The longest message payload read (an event and an identity; anything longer is not ours).
const MAX_PAYLOAD: usize = 1024;

/// How often the listener checks that its connection still answers.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(5);

/// The process side of the notifications: who listens to which identity, and whether the
/// listener is connected.
pub(crate) struct Hub {
    senders: Mutex<HashMap<String, broadcast::Sender<Event>>>,
    connected: watch::Sender<bool>,
}

impl Hub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            senders: Mutex::new(HashMap::new()),
            connected: watch::channel(false).0,
        })
    }

    fn senders(&self) -> MutexGuard<'_, HashMap<String, broadcast::Sender<Event>>> {
        self.senders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A feed for `identity` (registered at once; events arrive once the listener is
    /// connected).
    pub fn subscribe(&self, identity: &str) -> Events {
        let mut senders = self.senders();
        senders.retain(|_, tx| tx.receiver_count() > 0);
        senders
            .entry(identity.to_owned())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    /// Waits until the listener is connected and subscribed, at most `wait`.
    pub async fn wait_connected(&self, wait: Duration) -> bool {
        let mut rx = self.connected.subscribe();
        matches!(
            tokio::time::timeout(wait, rx.wait_for(|up| *up)).await,
            Ok(Ok(_))
        )
    }

    fn set_connected(&self, up: bool) {
        self.connected.send_replace(up);
    }

    fn deliver(&self, identity: &str, event: Event) {
        let mut senders = self.senders();
        if let Some(tx) = senders.get(identity)
            && tx.send(event).is_err()
        {
            // Every receiver is gone: unsubscribed.
            senders.remove(identity);
        }
    }

    fn resync_all(&self) {
        let mut senders = self.senders();
        senders.retain(|_, tx| tx.send(Event::Resync).is_ok());
    }
}

/// Reads one message: `saved <version>\n<identity>`, `removed\n<identity>`,
/// `released\n<identity>`, `recovery\n<identity>`. Anything else is ignored.
pub(crate) fn parse(payload: &[u8]) -> Option<(String, Event)> {
    if payload.len() > MAX_PAYLOAD {
        return None;
    }
    let text = std::str::from_utf8(payload).ok()?;
    let (what, identity) = text.split_once('\n')?;
    if identity.is_empty() {
        return None;
    }
    let event = match what {
        "removed" => Event::Removed,
        "released" => Event::Released,
        "recovery" => Event::RecoveryRequested,
        _ => Event::Saved(what.strip_prefix("saved ")?.parse().ok()?),
    };
    Some((identity.to_owned(), event))
}

/// The message announcing `event` for `identity` (see [`parse`]).
pub(crate) fn payload(identity: &str, event: &Event) -> String {
    match event {
        Event::Saved(v) => format!("saved {v}\n{identity}"),
        Event::Removed => format!("removed\n{identity}"),
        Event::Released => format!("released\n{identity}"),
        Event::RecoveryRequested => format!("recovery\n{identity}"),
        Event::Resync => format!("resync\n{identity}"),
    }
}

/// What the listener needs.
pub(crate) struct Listener {
    pub client: redis::Client,
    pub channel: String,
    pub hub: Arc<Hub>,
    /// Bounds a connection attempt with its SUBSCRIBE, and each ping.
    pub timeout: Duration,
    pub describe: String,
}

impl Listener {
    /// Runs until aborted: connect, subscribe, deliver; on a disconnect, reconnect with
    /// backoff and tell every subscriber to resync.
    pub async fn run(self) {
        let mut backoff = Duration::from_millis(50);
        let mut connected_before = false;
        loop {
            match tokio::time::timeout(self.timeout, self.connect()).await {
                Ok(Ok((sink, stream))) => {
                    backoff = Duration::from_millis(50);
                    if connected_before {
                        tracing::info!(store = %self.describe, "shared store: change feed reconnected; subscribers resync");
                        self.hub.resync_all();
                    }
                    connected_before = true;
                    self.hub.set_connected(true);
                    let why = self.pump(sink, stream).await;
                    self.hub.set_connected(false);
                    tracing::warn!(store = %self.describe, "shared store: change feed lost ({why}); reconnecting");
                }
                Ok(Err(e)) => {
                    tracing::debug!(store = %self.describe, error = %e, "shared store: change feed cannot connect");
                }
                Err(_) => {
                    tracing::debug!(store = %self.describe, "shared store: change feed: no answer in time");
                }
            }
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn connect(
        &self,
    ) -> redis::RedisResult<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
        let (mut sink, stream) = self.client.get_async_pubsub().await?.split();
        sink.subscribe(&self.channel).await?;
        Ok((sink, stream))
    }

    async fn pump(
        &self,
        mut sink: redis::aio::PubSubSink,
        mut stream: redis::aio::PubSubStream,
    ) -> &'static str {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { return "connection closed" };
                    if let Some((identity, event)) = parse(msg.get_payload_bytes()) {
                        self.hub.deliver(&identity, event);
                    }
                }
                _ = ping.tick() => {
                    match tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => return "ping failed",
                        Err(_) => return "no answer to a ping",
                    }
                }
            }
        }
    }
}

/// `d` ± 25 %, so a fleet does not reconnect in lockstep.
pub(crate) fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 1];
    let _ = aws_lc_rs::rand::fill(&mut b);
    let quarter = d / 4;
    d - quarter + quarter * u32::from(b[0]) / 128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_foreign_ones_are_ignored() {
        for event in [
            Event::Saved(1_764_000_000_123),
            Event::Removed,
            Event::Released,
            Event::RecoveryRequested,
        ] {
            let text = payload("oauth2:ab cd", &event);
            assert_eq!(
                parse(text.as_bytes()),
                Some(("oauth2:ab cd".to_owned(), event))
            );
        }
        assert_eq!(parse(b"saved x\nid"), None);
        assert_eq!(parse(b"saved 1"), None);
        assert_eq!(parse(b"hello\nid"), None);
        assert_eq!(parse(b"removed\n"), None);
        assert_eq!(parse(&[0xff, b'\n', b'a']), None);
        let long = format!("removed\n{}", "x".repeat(MAX_PAYLOAD));
        assert_eq!(parse(long.as_bytes()), None);
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(400));
            assert!(
                d >= Duration::from_millis(300) && d <= Duration::from_millis(500),
                "{d:?}"
            );
        }
    }
}
