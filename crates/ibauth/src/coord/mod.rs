//! One IBKR login shared by processes on several machines: the coordination interface behind
//! a fleet, and what it stores.
//!
//! IBKR allows one brokerage session per username. Processes that share one — strategy
//! workers, two gateways behind a load balancer — agree through a [`Coordinator`] (PostgreSQL
//! in `ibauth-postgres`, Redis in `ibauth-redis`, [`MemoryCoordinator`] in-process) on who
//! acts for it:
//!
//! * **a lease per identity** (the auth method and a fingerprint of the credentials) with a
//!   generation that only grows — a fencing token. The holder, the *leader*, logs in,
//!   initialises, tickles, renews and recovers; the others, *followers*, only sign their calls
//!   with the tokens it stored.
//! * **compare-and-set saves**: the session document is written only under the current lease
//!   ([`Coordinator::store`] checks the generation in the same transaction), so a leader that
//!   was paused past its lease and woke up is refused ([`CoordError::Fenced`]) and steps down.
//! * **change notification** ([`Coordinator::subscribe`]): followers see new tokens at once,
//!   and take over as soon as a lease is released.
//! * **documents encrypted at rest** ([`Keyring`]: AES-256-GCM, a key id stored with each
//!   document, rotation): a store only ever holds sealed bytes.
//!
//! Times that decide who holds a lease are the store's own (PostgreSQL's clock, Redis' key
//! expiry), never the hosts': hosts whose clocks disagree still agree on the lease.

pub mod conformance;
mod error;
mod memory;
mod queue;
mod seal;

pub use error::CoordError;
pub use memory::MemoryCoordinator;
pub use queue::{Claimed, DEFAULT_CONSUMER, QueueStats, WorkQueue};
pub use seal::{KEY_LEN, Keyring, KeyringError, StoreKey};

use std::time::Duration;

use crate::client::BoxFuture;

/// What a coordinator call returns.
pub type CoordFuture<'a, T> = BoxFuture<'a, Result<T, CoordError>>;

/// The default time a lease lasts without renewal: a dead leader is replaced within it.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

/// The longest identity, holder or account name a coordinator accepts (bytes); longer ones are
/// refused before anything is sent.
pub const MAX_NAME_LEN: usize = 200;

/// The largest sealed document a coordinator stores or reads (bytes).
pub const MAX_DOC_LEN: usize = 64 * 1024;

/// Where a fleet's shared store is: `postgres://…` (or `postgresql://…`), `redis://…` or
/// `rediss://…`. `Debug` and [`redacted`](Self::redacted) never show a password.
///
/// ```
/// use ibauth::coord::StoreUrl;
/// let url = StoreUrl::parse("postgres://fleet:s3cret@db.internal:5432/ibauth").unwrap();
/// assert_eq!(url.scheme(), "postgres");
/// assert_eq!(url.redacted(), "postgres://fleet:***@db.internal:5432/ibauth");
/// assert!(!format!("{url:?}").contains("s3cret"));
/// assert!(StoreUrl::parse("mysql://db").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// Checks the scheme (and that it parses as a URL).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
        match url.scheme() {
            "postgres" | "postgresql" | "redis" | "rediss" => Ok(Self(text.to_owned())),
            other => Err(format!(
                "store scheme `{other}` is not supported: use postgres://… or redis://…"
            )),
        }
    }

    /// The URL as given (with its password: for the driver only).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `postgres`, `postgresql`, `redis` or `rediss`.
    pub fn scheme(&self) -> &str {
        self.0.split(':').next().unwrap_or("")
    }

    /// The URL with its password (and any `password=` query parameter) replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreUrl({})", self.redacted())
    }
}

/// `text` with a URL's password (and `password=` query values) replaced by `***` — for
/// [`Coordinator::describe`], logs and errors.
pub fn redact_url(text: &str) -> String {
    let Ok(mut url) = url::Url::parse(text) else {
        return "<store URL>".into();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret =
                    k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword");
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// A lease on one identity, as granted to its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The identity it is for.
    pub identity: String,
    /// Who holds it (unique per process and session).
    pub holder: String,
    /// The fencing token: grows with every grant to a new holder, never reused.
    pub generation: u64,
}

/// The answer to [`Coordinator::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lease is the caller's (newly granted, or its own still-live lease renewed).
    Granted(Lease),
    /// Another holder has a live lease.
    Held(LeaseInfo),
}

/// Who holds a lease, as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The holder.
    pub holder: String,
    /// Its generation.
    pub generation: u64,
    /// How long it lasts without renewal (zero: expired, free to take).
    pub expires_in: Duration,
}

/// A sealed session document as a store keeps it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedDoc {
    /// The id of the key it is sealed with ([`StoreKey::id`]).
    pub key_id: String,
    /// Nonce and ciphertext with its tag.
    pub bytes: Vec<u8>,
    /// Counts writes of this identity's document (set by the store; ignored when storing).
    pub version: u64,
    /// The lease generation it was written under (set by the store; ignored when storing).
    pub generation: u64,
}

impl std::fmt::Debug for SealedDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedDoc")
            .field("key_id", &self.key_id)
            .field("len", &self.bytes.len())
            .field("version", &self.version)
            .field("generation", &self.generation)
            .finish()
    }
}

/// What happened to an identity, as [`Coordinator::subscribe`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A document was stored (its version).
    Saved(u64),
    /// The document was removed (after a logout).
    Removed,
    /// The lease was released: a follower may take it now.
    Released,
    /// A follower asks the leader to recover the session (its calls are refused).
    RecoveryRequested,
    /// Notifications may have been missed (a reconnect): read the state again.
    Resync,
}

/// A process taking part for an identity, as [`Coordinator::members`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its holder name.
    pub id: String,
    /// Whether it held the lease at its last heartbeat.
    pub leader: bool,
    /// A short description: host, pid, public IP.
    pub about: String,
    /// How long ago it was last heard from.
    pub seen_ago: Duration,
}

/// A change feed for one identity; dropped, it unsubscribes.
pub type Events = tokio::sync::broadcast::Receiver<Event>;

/// One shared place where a fleet keeps its sessions: leases, documents, notifications,
/// members, and pacing. Implementations must make every method atomic on its own; the
/// conformance suite ([`conformance`]) states the semantics as tests every implementation
/// runs.
pub trait Coordinator: Send + Sync + 'static {
    /// Where the store is, for logs and status (no credentials: `postgres://host:5432/db`).
    fn describe(&self) -> String;

    /// Takes the lease on `identity` for `ttl` as `holder`: granted when it is free or
    /// expired (with a generation above every earlier one) or when `holder` already holds it
    /// live (renewed, same generation); otherwise who holds it.
    fn acquire<'a>(
        &'a self,
        identity: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> CoordFuture<'a, Acquired>;

    /// Extends `lease` by `ttl` if it is still the current, live lease;
    /// [`CoordError::Fenced`] otherwise (it expired or another holder took it).
    fn renew<'a>(&'a self, lease: &'a Lease, ttl: Duration) -> CoordFuture<'a, ()>;

    /// Gives `lease` up (if still held) and tells followers ([`Event::Released`]).
    fn release<'a>(&'a self, lease: &'a Lease) -> CoordFuture<'a, ()>;

    /// Who holds the lease on `identity` now, if anyone ever did.
    fn lease_info<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, Option<LeaseInfo>>;

    /// The stored document of `identity`.
    fn load<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, Option<SealedDoc>>;

    /// Replaces the document of `lease.identity` — only while `lease` is the current, live
    /// lease, checked in the same transaction ([`CoordError::Fenced`] otherwise) — and tells
    /// subscribers ([`Event::Saved`]). Returns the new version.
    fn store<'a>(&'a self, lease: &'a Lease, doc: &'a SealedDoc) -> CoordFuture<'a, u64>;

    /// Removes the document of `lease.identity` under the same condition as
    /// [`store`](Self::store).
    fn remove<'a>(&'a self, lease: &'a Lease) -> CoordFuture<'a, ()>;

    /// Every identity with a stored document.
    fn identities(&self) -> CoordFuture<'_, Vec<String>>;

    /// Events for `identity` from now on.
    fn subscribe<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, Events>;

    /// Asks the leader of `identity` to recover the session ([`Event::RecoveryRequested`]).
    fn request_recovery<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, ()>;

    /// Records that `member` is alive for `identity` (listed by [`members`](Self::members)
    /// for `ttl`).
    fn heartbeat<'a>(
        &'a self,
        identity: &'a str,
        member: &'a Member,
        ttl: Duration,
    ) -> CoordFuture<'a, ()>;

    /// Removes `member_id` from `identity`'s members (a clean stop).
    fn leave<'a>(&'a self, identity: &'a str, member_id: &'a str) -> CoordFuture<'a, ()>;

    /// The members of `identity` heard from within their ttl.
    fn members<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, Vec<Member>>;

    /// Starts an exclusive read-modify-write of `account`'s pacing document (the fleet's
    /// shared budgets): other callers for the same account wait until it is committed or
    /// dropped. Holding it longer than a few seconds is a bug; stores may break it then.
    fn pace<'a>(&'a self, account: &'a str) -> CoordFuture<'a, Box<dyn PaceTxn>>;
}

/// An exclusive read-modify-write of one pacing document ([`Coordinator::pace`]).
pub trait PaceTxn: Send {
    /// The document as it was when the transaction started (`None`: none yet).
    fn current(&self) -> Option<&[u8]>;
    /// Replaces the document and ends the transaction. Dropping without committing leaves
    /// the document unchanged.
    fn commit(self: Box<Self>, bytes: Vec<u8>) -> CoordFuture<'static, ()>;
}

/// Checks an identity, holder or account name before it is sent to a store.
pub fn check_name(what: &'static str, name: &str) -> Result<(), CoordError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(CoordError::BadName {
            what,
            len: name.len(),
        });
    }
    Ok(())
}

/// A holder name unique to this process and call: `host:pid:random`.
pub fn holder_name() -> String {
    let host = hostname();
    let mut b = [0u8; 6];
    let _ = aws_lc_rs::rand::fill(&mut b);
    let tag: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{host}:{}:{tag}", std::process::id())
}

/// The host's name (for members and holders), `host` when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
                .take(64)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_they_leave() {
        assert!(check_name("identity", "oauth2:0123abcd").is_ok());
        assert!(check_name("identity", "").is_err());
        assert!(check_name("identity", &"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(check_name("identity", "a\nb").is_err());
    }

    #[test]
    fn holder_names_differ_per_call() {
        let a = holder_name();
        let b = holder_name();
        assert_ne!(a, b);
        assert!(a.contains(&std::process::id().to_string()), "{a}");
        assert!(check_name("holder", &a).is_ok());
    }

    #[test]
    fn a_sealed_doc_debugs_without_its_bytes() {
        let doc = SealedDoc {
            key_id: "k1".into(),
            bytes: b"secret-bytes".to_vec(),
            version: 3,
            generation: 2,
        };
        let shown = format!("{doc:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("len: 12"), "{shown}");
    }
}
