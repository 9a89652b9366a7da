//! A Redis coordinator for ibauth: one IBKR login shared by a fleet of processes on several
//! machines, coordinated through one Redis server ([`RedisCoordinator`], an
//! [`ibauth::coord::Coordinator`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use ibauth::coord::{Acquired, Coordinator, holder_name};
//! use ibauth_redis::RedisCoordinator;
//!
//! # async fn run() -> Result<(), ibauth::coord::CoordError> {
//! let coord = RedisCoordinator::connect("redis://:secret@redis.internal:6379/0").await?;
//! println!("fleet store: {}", coord.describe()); // redis://redis.internal:6379/0
//! match coord.acquire("oauth2:0123abcd", &holder_name(), Duration::from_secs(15)).await? {
//!     Acquired::Granted(lease) => println!("leading, generation {}", lease.generation),
//!     Acquired::Held(info) => println!("following {}", info.holder),
//! }
//! # Ok(()) }
//! ```
//!
//! Timeouts, the key prefix and TLS trust are set with [`RedisCoordinator::builder`]:
//!
//! ```no_run
//! # async fn run() -> Result<(), ibauth::coord::CoordError> {
//! use std::time::Duration;
//! let coord = ibauth_redis::RedisCoordinator::builder("rediss://redis.internal:6380/0")
//!     .key_prefix("prod-ibauth:")
//!     .connect_timeout(Duration::from_secs(1))
//!     .response_timeout(Duration::from_secs(1))
//!     .tls_root_certificates(std::fs::read("/etc/ibauth/redis-ca.pem").unwrap_or_default())
//!     .connect()
//!     .await?;
//! # let _ = coord; Ok(()) }
//! ```
//!
//! # What is stored
//!
//! Every key starts with the prefix (default `ibauth:`); an identity's keys share the hash tag
//! `{identity}`:
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `ibauth:{id}:lease` | string, `PX` | `holder generation` of the live lease; Redis expires it |
//! | `ibauth:{id}:last` | string | the last grant (so an expired lease still shows who had it) |
//! | `ibauth:{id}:gen` | string | the generation counter |
//! | `ibauth:{id}:doc` | hash | `key_id`, `bytes` (sealed), `version`, `generation` |
//! | `ibauth:{id}:version` | string | the document's version counter (kept when it is removed) |
//! | `ibauth:{id}:members`, `…:member-info` | sorted set, hash | members by expiry, and what they said |
//! | `ibauth:identities` | set | identities with a document |
//! | `ibauth:pace:{account}`, `…:lock` | string, string `PX` | pacing document, its lock |
//! | `ibauth:events` | pub/sub channel | `saved <version>`, `removed`, `released`, `recovery`, then `\n` and the identity |
//!
//! Each call that checks and writes is one Lua script, run atomically by Redis (`EVALSHA`).
//! Lease expiry is Redis' own (`PX`, its clock), never a host's; member timestamps are the
//! server's `TIME`.
//!
//! # Consistency: what Redis gives, and how it differs from PostgreSQL
//!
//! * **One Redis server (the supported set-up).** Every call is one atomic script on one
//!   server: leases, fencing checks and document writes are linearizable per identity while
//!   the server is up. A leader whose lease expired or was taken cannot write
//!   ([`CoordError::Fenced`]): the write checks the exact
//!   `holder generation` of the live lease in the same script.
//! * **Durability is Redis' configuration, not ours.** Without persistence a restart loses
//!   everything: the lease (the leader's next renewal is fenced; it steps down and someone
//!   takes the lease again), the document (the next leader logs in again), the members. With
//!   `appendonly yes` a restart keeps them (a lease keeps its absolute expiry).
//! * **Generations and versions never go back — even across a data loss.** Both counters are
//!   `max(stored + 1, server time in ms)`, so after a restart without persistence (or a failover
//!   to a replica that missed the last writes) the next lease still gets a higher generation
//!   than any before, as long as the server's clock does not go back by more than the time
//!   the store was away. Generations and versions are therefore large numbers (milliseconds
//!   since 1970 at the time of the grant), not 1, 2, 3. With AOF the stored counter alone
//!   already guarantees it.
//! * **Replication and failover (Sentinel, managed "highly available" Redis) are asynchronous.**
//!   A failover can lose an acknowledged lease grant or document write: a process may believe
//!   it leads while the new primary still shows the previous lease (or none). Every write is
//!   still checked against the lease the new primary holds, so at most one process can write
//!   there and the other is fenced and steps down; the generation floor keeps new grants above
//!   every earlier one. What is lost is liveness, not safety of the document: a lost save
//!   means followers read the previous tokens until the leader saves again, and IBKR may see a
//!   second login for a moment. Redlock (a majority of independent masters) is deliberately
//!   not implemented: it still rests on timing assumptions and hands out no fencing token
//!   (Martin Kleppmann's analysis); the generation checked on every write is what protects
//!   the document. PostgreSQL (`ibauth-postgres`) has a commit in its write-ahead log before
//!   it answers (and, with synchronous replication, on a standby too): choose it when a
//!   failover must not lose a lease or a write.
//! * **Notifications are at-most-once.** Pub/sub does not queue: a message published while a
//!   process's listener is disconnected is lost. When the listener reconnects, every
//!   subscriber gets [`Event::Resync`] and reads the state again
//!   ([`Coordinator::load`],
//!   [`lease_info`](ibauth::coord::Coordinator::lease_info)); the listener pings every 5 s, so
//!   a connection that silently died is noticed. PostgreSQL's `LISTEN` behaves the same way.
//! * **A store that went away fails calls quickly.** Every call is bounded by the connect
//!   and response timeouts (default 2 s each) and returns
//!   [`CoordError::Unavailable`]; the next call
//!   connects again. A write whose answer was lost (a timeout after it was sent) may have been
//!   applied: retrying it under the same lease is harmless (a store writes a new version, a
//!   release or removal is a no-op the second time).
//! * **Eviction must be off.** Redis under `maxmemory` with an eviction policy may delete any
//!   key, leases included (`volatile-*` policies pick exactly the keys with an expiry):
//!   configure the server with `maxmemory-policy noeviction` (the default). An evicted lease
//!   fences its leader (it steps down, someone takes over), an evicted document makes the next
//!   leader log in again; the generation floor keeps fencing sound either way.
//! * **Pacing transactions** hold a lock key (`SET PX`, default 5 s) with a random token; a
//!   crashed holder blocks the account at most that long. A commit after the lock expired is
//!   refused (nothing written) with `Unavailable`, so the caller reads again.
//!
//! # Security
//!
//! Documents arrive sealed (AES-256-GCM, [`ibauth::coord::Keyring`]); Redis only ever holds
//! ciphertext. The Redis password in the URL is never logged or shown:
//! [`describe`](ibauth::coord::Coordinator::describe) strips it, and errors are scrubbed of it.
//! `rediss://` uses rustls (aws-lc-rs) with the system's roots or the CA given to
//! [`RedisCoordinatorBuilder::tls_root_certificates`]; `#insecure` (no certificate check) is
//! refused. Plain `redis://` is for a trusted network only (the sealed documents are still
//! encrypted, but the password and lease traffic are not).

mod events;
mod scripts;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ibauth::coord::{
    Acquired, CoordError, CoordFuture, Coordinator, Event, Events, Lease, LeaseInfo, MAX_DOC_LEN,
    Member, PaceTxn, SealedDoc, check_name,
};
use redis::Value;
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use events::{Hub, Listener};
use scripts::Scripts;

/// The default bound on establishing a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default bound on one command's answer.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The default key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "ibauth:";
/// How long a pacing lock lasts by default: a crashed holder blocks others at most this long.
pub const DEFAULT_PACE_LOCK_TTL: Duration = Duration::from_secs(5);
/// How long [`Coordinator::pace`] waits for the lock by default before it gives up.
pub const DEFAULT_PACE_WAIT: Duration = Duration::from_secs(10);

/// The most members listed, and identities returned.
const MAX_LISTED: usize = 10_000;
/// The longest member description kept (bytes; longer ones are cut at a character boundary).
const MAX_ABOUT: usize = 1024;
/// The longest ttl sent for a lease, heartbeat or lock (longer ones are cut to it): 10 years.
const MAX_TTL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// Options for a [`RedisCoordinator`] ([`RedisCoordinator::builder`]).
#[derive(Clone)]
pub struct RedisCoordinatorBuilder {
    url: String,
    key_prefix: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    pace_lock_ttl: Duration,
    pace_wait: Duration,
    tls_root: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisCoordinatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCoordinatorBuilder")
            .field("url", &describe_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("pace_lock_ttl", &self.pace_lock_ttl)
            .field("pace_wait", &self.pace_wait)
            .field("tls_root", &self.tls_root.as_ref().map(Vec::len))
            .finish()
    }
}

impl RedisCoordinatorBuilder {
    /// The prefix of every key and of the notification channel (default `ibauth:`): fleets
    /// that share a Redis server keep apart with different prefixes. 1 to 64 printable
    /// characters, without `{` or `}` (they delimit the identity's hash tag).
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.key_prefix);
        self
    }

    /// Bounds establishing a connection (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bounds waiting for one answer (default 2 s). A call takes at most the connect timeout
    /// plus this before it fails with `Unavailable`.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long a pacing lock lasts (default 5 s): a holder that crashed blocks the account's
    /// pacing at most this long, and a holder slower than this loses its commit.
    pub fn pace_lock_ttl(mut self, ttl: Duration) -> Self {
        self.pace_lock_ttl = ttl;
        self
    }

    /// How long [`Coordinator::pace`] waits for another holder's lock before it fails with
    /// `Unavailable` (default 10 s).
    pub fn pace_wait(mut self, wait: Duration) -> Self {
        self.pace_wait = wait;
        self
    }

    /// Trusts only this CA (PEM) for `rediss://`, instead of the system's roots.
    pub fn tls_root_certificates(mut self, pem: Vec<u8>) -> Self {
        self.tls_root = Some(pem);
        self
    }

    /// Connects, and checks that the server answers and is recent enough (Redis 5 or later,
    /// or a compatible server such as Valkey).
    pub async fn connect(self) -> Result<RedisCoordinator, CoordError> {
        let coord = self.build()?;
        coord.check_server().await?;
        Ok(coord)
    }

    fn build(self) -> Result<RedisCoordinator, CoordError> {
        let prefix_ok = !self.key_prefix.is_empty()
            && self.key_prefix.len() <= 64
            && !self
                .key_prefix
                .chars()
                .any(|c| c.is_control() || c == '{' || c == '}');
        if !prefix_ok {
            return Err(CoordError::Config(format!(
                "Redis key prefix {:?}: 1 to 64 printable characters without braces",
                self.key_prefix
            )));
        }
        for (what, d) in [
            ("connect timeout", self.connect_timeout),
            ("response timeout", self.response_timeout),
            ("pacing lock ttl", self.pace_lock_ttl),
        ] {
            if d < Duration::from_millis(10) || d > Duration::from_secs(3600) {
                return Err(CoordError::Config(format!(
                    "Redis {what} of {d:?}: between 10 ms and 1 h"
                )));
            }
        }
        let target = parse_url(&self.url)?;
        if target.tls {
            // redis' rustls config takes the process's default provider: make it aws-lc-rs
            // when nobody chose one (several providers compiled in would make it panic).
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let client = match (&self.tls_root, target.tls) {
            (Some(pem), true) => redis::Client::build_with_tls(
                self.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            _ => redis::Client::open(self.url.as_str()),
        }
        .map_err(|e| {
            CoordError::Config(format!(
                "Redis address {}: {}",
                target.describe,
                scrub(&e.to_string(), target.password.as_deref())
            ))
        })?;
        let settings = Settings {
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
            pace_lock_ttl: self.pace_lock_ttl,
            pace_wait: self.pace_wait,
        };
        let manager = new_manager(&client, &settings).map_err(|e| {
            CoordError::Config(format!(
                "Redis {}: {}",
                target.describe,
                scrub(&e.to_string(), target.password.as_deref())
            ))
        })?;
        let prefix = self.key_prefix;
        Ok(RedisCoordinator {
            inner: Arc::new(Inner {
                describe: target.describe,
                password: target.password,
                conn: Mutex::new(Conn { epoch: 0, manager }),
                channel: format!("{prefix}events"),
                prefix,
                settings,
                scripts: Scripts::new(),
                hub: Hub::new(),
                listener: Mutex::new(None),
                client,
            }),
        })
    }
}

/// A [`Coordinator`] on one Redis server (see the [crate documentation](crate) for what it
/// guarantees). Clones share the connections.
#[derive(Clone)]
pub struct RedisCoordinator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCoordinator")
            .field("store", &self.inner.describe)
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

#[derive(Clone, Copy)]
struct Settings {
    connect_timeout: Duration,
    response_timeout: Duration,
    pace_lock_ttl: Duration,
    pace_wait: Duration,
}

struct Conn {
    /// Bumped each time the connection is replaced.
    epoch: u64,
    manager: ConnectionManager,
}

struct Inner {
    describe: String,
    password: Option<String>,
    client: redis::Client,
    conn: Mutex<Conn>,
    prefix: String,
    channel: String,
    settings: Settings,
    scripts: Scripts,
    hub: Arc<Hub>,
    listener: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .listener
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// A connection manager that connects on first use, once per attempt (this crate decides
/// when to try again), with the configured timeouts.
fn new_manager(client: &redis::Client, s: &Settings) -> redis::RedisResult<ConnectionManager> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(s.connect_timeout))
        .set_response_timeout(Some(s.response_timeout))
        .set_number_of_retries(0)
        .set_min_delay(Duration::from_millis(20))
        .set_max_delay(Duration::from_millis(200));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

/// What a URL points at, for logs.
struct Target {
    describe: String,
    password: Option<String>,
    tls: bool,
}

fn parse_url(raw: &str) -> Result<Target, CoordError> {
    let bad = || {
        CoordError::Config(
            "the Redis address is not a URL like redis://[:password@]host[:port][/db] or \
             rediss://… (TLS) or redis+unix:///path/to/socket"
                .into(),
        )
    };
    let url = url::Url::parse(raw).map_err(|_| bad())?;
    let tls = match url.scheme() {
        "redis" | "valkey" | "redis+unix" | "unix" | "valkey+unix" => false,
        "rediss" | "valkeys" => true,
        other => {
            return Err(CoordError::Config(format!(
                "the Redis address has scheme {other:?}: use redis://, rediss:// (TLS) or redis+unix://"
            )));
        }
    };
    if tls && url.fragment() == Some("insecure") {
        return Err(CoordError::Config(
            "rediss://…#insecure (no certificate check) is refused: give the server's CA \
             (tls_root_certificates) instead"
                .into(),
        ));
    }
    let password = url.password().map(|p| {
        url::form_urlencoded::parse(format!("p={p}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| p.to_owned())
    });
    Ok(Target {
        describe: describe_url(raw),
        password: password.filter(|p| !p.is_empty()),
        tls,
    })
}

/// `scheme://host:port/db` (or `scheme://path` for a socket): no user, no password, no query.
fn describe_url(raw: &str) -> String {
    let Ok(url) = url::Url::parse(raw) else {
        return "redis (an address that does not parse)".into();
    };
    let scheme = url.scheme();
    if scheme.ends_with("unix") {
        return format!("{scheme}://{}", url.path());
    }
    let host = url.host_str().unwrap_or("localhost");
    let port = url.port().unwrap_or(6379);
    let db = url.path().trim_start_matches('/');
    let db = if db.is_empty() { "0" } else { db };
    format!("{scheme}://{host}:{port}/{db}")
}

/// Removes the password from a driver message (none is expected there; this makes sure).
fn scrub(text: &str, password: Option<&str>) -> String {
    match password {
        Some(p) if p.len() >= 3 => text.replace(p, "***"),
        _ => text.to_owned(),
    }
}

/// A number of milliseconds Redis accepts for `PX` (1 ms to 10 years).
fn millis(d: Duration) -> String {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    ms.clamp(1, MAX_TTL_MS).to_string()
}

/// A random token for a pacing lock.
fn token() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn lease_value(lease: &Lease) -> String {
    format!("{} {}", lease.holder, lease.generation)
}

fn check_lease(lease: &Lease) -> Result<(), CoordError> {
    check_name("identity", &lease.identity)?;
    check_name("holder", &lease.holder)
}

/// Cuts `text` to at most `max` bytes at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl RedisCoordinator {
    /// Connects to `url` (`redis://[user][:password@]host[:port][/db]`, `rediss://…` for
    /// TLS, `redis+unix:///path`) with the default options.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), ibauth::coord::CoordError> {
    /// let coord = ibauth_redis::RedisCoordinator::connect("redis://127.0.0.1:6379/0").await?;
    /// # let _ = coord; Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, CoordError> {
        Self::builder(url).connect().await
    }

    /// Options for a coordinator on `url`.
    pub fn builder(url: &str) -> RedisCoordinatorBuilder {
        RedisCoordinatorBuilder {
            url: url.to_owned(),
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            pace_lock_ttl: DEFAULT_PACE_LOCK_TTL,
            pace_wait: DEFAULT_PACE_WAIT,
            tls_root: None,
        }
    }

    /// The key prefix in use.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    async fn check_server(&self) -> Result<(), CoordError> {
        let info = self
            .inner
            .run("connecting", |mut c| async move {
                redis::cmd("INFO")
                    .arg("server")
                    .query_async::<Value>(&mut c)
                    .await
            })
            .await?;
        let text = bytes(&info)
            .map(|b| String::from_utf8_lossy(&b[..b.len().min(64 * 1024)]).into_owned())
            .unwrap_or_default();
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap_or("")
            .trim();
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        if major < 5 {
            return Err(CoordError::Config(format!(
                "Redis {}: server version {version:?}; ibauth needs Redis 5 or later (scripts that read the server's clock)",
                self.inner.describe
            )));
        }
        Ok(())
    }

    fn key(&self, identity: &str, what: &str) -> String {
        format!("{}{{{identity}}}:{what}", self.inner.prefix)
    }

    fn identities_key(&self) -> String {
        format!("{}identities", self.inner.prefix)
    }

    fn pace_keys(&self, account: &str) -> (String, String) {
        let doc = format!("{}pace:{{{account}}}", self.inner.prefix);
        (format!("{doc}:lock"), doc)
    }

    fn fenced(&self, lease: &Lease, reply: &[Value]) -> CoordError {
        let current = reply
            .get(1)
            .and_then(bytes)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.rsplit_once(' '))
            .and_then(|(_, g)| g.parse().ok());
        CoordError::Fenced {
            identity: lease.identity.clone(),
            generation: lease.generation,
            current,
        }
    }

    /// Starts the change-feed listener once.
    fn ensure_listener(&self) {
        let mut task = self
            .inner
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let listener = Listener {
            client: self.inner.client.clone(),
            channel: self.inner.channel.clone(),
            hub: self.inner.hub.clone(),
            timeout: self.inner.settings.connect_timeout + self.inner.settings.response_timeout,
            describe: self.inner.describe.clone(),
        };
        *task = Some(tokio::spawn(listener.run()).abort_handle());
    }
}

impl Inner {
    fn manager(&self) -> (u64, ConnectionManager) {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        (conn.epoch, conn.manager.clone())
    }

    /// Drops a connection that timed out or broke (once, however many calls saw it): the next
    /// call connects afresh.
    fn reset(&self, epoch: u64) {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if conn.epoch != epoch {
            return;
        }
        if let Ok(manager) = new_manager(&self.client, &self.settings) {
            conn.manager = manager;
            conn.epoch += 1;
        }
    }

    fn unavailable(&self, action: &'static str, detail: String) -> CoordError {
        CoordError::Unavailable {
            store: self.describe.clone(),
            action,
            detail: scrub(&detail, self.password.as_deref()),
        }
    }

    fn error(&self, action: &'static str, e: &redis::RedisError) -> CoordError {
        let detail = scrub(&e.to_string(), self.password.as_deref());
        let code = e.code().unwrap_or("");
        if code == "IBAUTH_CORRUPT" || code == "WRONGTYPE" {
            return CoordError::Corrupt {
                store: self.describe.clone(),
                detail: format!(
                    "while {action}: {detail} (does something else write keys under {:?}?)",
                    self.prefix
                ),
            };
        }
        match e.kind() {
            redis::ErrorKind::AuthenticationFailed
            | redis::ErrorKind::InvalidClientConfig
            | redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm) => {
                CoordError::Config(format!(
                    "Redis {} refused us while {action}: {detail}",
                    self.describe
                ))
            }
            _ if matches!(code, "NOAUTH" | "WRONGPASS") => CoordError::Config(format!(
                "Redis {} refused us while {action}: {detail}",
                self.describe
            )),
            redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => {
                CoordError::Corrupt {
                    store: self.describe.clone(),
                    detail: format!("while {action}: {detail}"),
                }
            }
            _ => self.unavailable(action, detail),
        }
    }

    /// Runs `op` on the shared connection within the call's deadline (connect plus response
    /// timeout). A broken connection is replaced and the call tried once more (a stale
    /// connection after the server restarted); a timeout replaces it and fails.
    async fn run<F, Fut>(&self, action: &'static str, op: F) -> Result<Value, CoordError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<Value>>,
    {
        let deadline =
            Instant::now() + self.settings.connect_timeout + self.settings.response_timeout;
        let mut tried_again = false;
        loop {
            let (epoch, manager) = self.manager();
            match tokio::time::timeout_at(deadline, op(manager)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => {
                    let broken = e.is_io_error() || e.is_unrecoverable_error();
                    if broken || e.is_timeout() {
                        self.reset(epoch);
                    }
                    if broken && !e.is_timeout() && !tried_again && Instant::now() < deadline {
                        tried_again = true;
                        continue;
                    }
                    return Err(self.error(action, &e));
                }
                Err(_) => {
                    self.reset(epoch);
                    let waited = self.settings.connect_timeout + self.settings.response_timeout;
                    return Err(self.unavailable(action, format!("no answer within {waited:?}")));
                }
            }
        }
    }

    /// Runs `script` with `keys` and `args`.
    async fn eval(
        &self,
        action: &'static str,
        script: &redis::Script,
        keys: &[&[u8]],
        args: &[&[u8]],
    ) -> Result<Value, CoordError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        let invocation = &invocation;
        self.run(action, move |mut c| async move {
            invocation.invoke_async::<Value>(&mut c).await
        })
        .await
    }

    fn corrupt(&self, action: &'static str, what: &str) -> CoordError {
        CoordError::Corrupt {
            store: self.describe.clone(),
            detail: format!("while {action}: unexpected answer ({what})"),
        }
    }
}

/// The bytes of a string reply.
fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

/// An integer reply, or a string of digits.
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => std::str::from_utf8(bytes(other)?).ok()?.parse().ok(),
    }
}

fn uint(v: &Value) -> Option<u64> {
    int(v).and_then(|n| u64::try_from(n).ok())
}

fn text(v: &Value) -> Option<String> {
    bytes(v).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

fn array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// `holder generation` → (holder, generation).
fn split_lease(v: &Value) -> Option<(String, u64)> {
    let t = text(v)?;
    let (holder, generation) = t.rsplit_once(' ')?;
    Some((holder.to_owned(), generation.parse().ok()?))
}

/// Milliseconds of a `PTTL` reply (-1: no expiry, which ibauth never sets: corrupt).
fn pttl(v: &Value) -> Option<Duration> {
    let ms = int(v)?;
    match ms {
        -2 => Some(Duration::ZERO),
        ms if ms >= 0 => Some(Duration::from_millis(ms.unsigned_abs())),
        _ => None,
    }
}

impl Coordinator for RedisCoordinator {
    fn describe(&self) -> String {
        self.inner.describe.clone()
    }

    fn acquire<'a>(
        &'a self,
        identity: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> CoordFuture<'a, Acquired> {
        Box::pin(async move {
            check_name("identity", identity)?;
            check_name("holder", holder)?;
            const ACTION: &str = "taking the lease";
            let reply = self
                .inner
                .eval(
                    ACTION,
                    &self.inner.scripts.acquire,
                    &[
                        self.key(identity, "lease").as_bytes(),
                        self.key(identity, "gen").as_bytes(),
                        self.key(identity, "last").as_bytes(),
                    ],
                    &[holder.as_bytes(), millis(ttl).as_bytes()],
                )
                .await?;
            let bad = || self.inner.corrupt(ACTION, "acquire");
            let items = array(&reply).ok_or_else(bad)?;
            match (items.first().and_then(int), items.len()) {
                (Some(1), 2) => Ok(Acquired::Granted(Lease {
                    identity: identity.to_owned(),
                    holder: holder.to_owned(),
                    generation: uint(&items[1]).ok_or_else(bad)?,
                })),
                (Some(0), 4) => Ok(Acquired::Held(LeaseInfo {
                    holder: text(&items[1]).ok_or_else(bad)?,
                    generation: uint(&items[2]).ok_or_else(bad)?,
                    expires_in: pttl(&items[3]).ok_or_else(bad)?,
                })),
                _ => Err(bad()),
            }
        })
    }

    fn renew<'a>(&'a self, lease: &'a Lease, ttl: Duration) -> CoordFuture<'a, ()> {
        Box::pin(async move {
            check_lease(lease)?;
            const ACTION: &str = "renewing the lease";
            let reply = self
                .inner
                .eval(
                    ACTION,
                    &self.inner.scripts.renew,
                    &[self.key(&lease.identity, "lease").as_bytes()],
                    &[lease_value(lease).as_bytes(), millis(ttl).as_bytes()],
                )
                .await?;
            let items = array(&reply).ok_or_else(|| self.inner.corrupt(ACTION, "renew"))?;
            match items.first().and_then(int) {
                Some(1) => Ok(()),
                Some(0) => Err(self.fenced(lease, items)),
                _ => Err(self.inner.corrupt(ACTION, "renew")),
            }
        })
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> CoordFuture<'a, ()> {
        Box::pin(async move {
            check_lease(lease)?;
            self.inner
                .eval(
                    "releasing the lease",
                    &self.inner.scripts.release,
                    &[
                        self.key(&lease.identity, "lease").as_bytes(),
                        self.key(&lease.identity, "last").as_bytes(),
                    ],
                    &[
                        lease_value(lease).as_bytes(),
                        self.inner.channel.as_bytes(),
                        events::payload(&lease.identity, &Event::Released).as_bytes(),
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn lease_info<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, Option<LeaseInfo>> {
        Box::pin(async move {
            check_name("identity", identity)?;
            const ACTION: &str = "reading the lease";
            let reply = self
                .inner
                .eval(
                    ACTION,
                    &self.inner.scripts.lease_info,
                    &[
                        self.key(identity, "lease").as_bytes(),
                        self.key(identity, "last").as_bytes(),
                    ],
                    &[],
                )
                .await?;
            if reply == Value::Nil {
                return Ok(None);
            }
            let bad = || self.inner.corrupt(ACTION, "lease");
            let items = array(&reply).ok_or_else(bad)?;
            let (holder, generation) = items.first().and_then(split_lease).ok_or_else(bad)?;
            let expires_in = items.get(1).and_then(pttl).ok_or_else(bad)?;
            Ok(Some(LeaseInfo {
                holder,
                generation,
                expires_in,
            }))
        })
    }

    fn load<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, Option<SealedDoc>> {
        Box::pin(async move {
            check_name("identity", identity)?;
            const ACTION: &str = "loading the session";
            let reply = self
                .inner
                .eval(
                    ACTION,
                    &self.inner.scripts.load,
                    &[self.key(identity, "doc").as_bytes()],
                    &[MAX_DOC_LEN.to_string().as_bytes()],
                )
                .await?;
            if reply == Value::Nil {
                return Ok(None);
            }
            let bad = || self.inner.corrupt(ACTION, "document");
            let items = array(&reply).ok_or_else(bad)?;
            match (items.first().and_then(int), items.len()) {
                (Some(1), 5) => {
                    let key_id = text(&items[1]).ok_or_else(bad)?;
                    let sealed = bytes(&items[2]).ok_or_else(bad)?;
                    if sealed.len() > MAX_DOC_LEN {
                        return Err(bad());
                    }
                    Ok(Some(SealedDoc {
                        key_id,
                        bytes: sealed.to_vec(),
                        version: uint(&items[3]).ok_or_else(bad)?,
                        generation: uint(&items[4]).ok_or_else(bad)?,
                    }))
                }
                (Some(0), 2) => Err(CoordError::Corrupt {
                    store: self.inner.describe.clone(),
                    detail: format!(
                        "the document of {identity} is {} bytes, more than the {MAX_DOC_LEN} allowed (or a field is damaged); not read",
                        int(&items[1]).unwrap_or(-1)
                    ),
                }),
                _ => Err(bad()),
            }
        })
    }

    fn store<'a>(&'a self, lease: &'a Lease, doc: &'a SealedDoc) -> CoordFuture<'a, u64> {
        Box::pin(async move {
            if doc.bytes.len() > MAX_DOC_LEN {
                return Err(CoordError::TooLarge {
                    len: doc.bytes.len(),
                });
            }
            check_name("key id", &doc.key_id)?;
            check_lease(lease)?;
            const ACTION: &str = "storing the session";
            let id = &lease.identity;
            let reply = self
                .inner
                .eval(
                    ACTION,
                    &self.inner.scripts.store,
                    &[
                        self.key(id, "lease").as_bytes(),
                        self.key(id, "doc").as_bytes(),
                        self.key(id, "version").as_bytes(),
                        self.identities_key().as_bytes(),
                    ],
                    &[
                        lease_value(lease).as_bytes(),
                        doc.key_id.as_bytes(),
                        &doc.bytes,
                        lease.generation.to_string().as_bytes(),
                        self.inner.channel.as_bytes(),
                        id.as_bytes(),
                    ],
                )
                .await?;
            let bad = || self.inner.corrupt(ACTION, "store");
            let items = array(&reply).ok_or_else(bad)?;
            match items.first().and_then(int) {
                Some(1) => items.get(1).and_then(uint).ok_or_else(bad),
                Some(0) => Err(self.fenced(lease, items)),
                _ => Err(bad()),
            }
        })
    }

    fn remove<'a>(&'a self, lease: &'a Lease) -> CoordFuture<'a, ()> {
        Box::pin(async move {
            check_lease(lease)?;
            const ACTION: &str = "removing the session";
            let id = &lease.identity;
            let reply = self
                .inner
                .eval(
                    ACTION,
                    &self.inner.scripts.remove,
                    &[
                        self.key(id, "lease").as_bytes(),
                        self.key(id, "doc").as_bytes(),
                        self.identities_key().as_bytes(),
                    ],
                    &[
                        lease_value(lease).as_bytes(),
                        self.inner.channel.as_bytes(),
                        id.as_bytes(),
                    ],
                )
                .await?;
            let items = array(&reply).ok_or_else(|| self.inner.corrupt(ACTION, "remove"))?;
            match items.first().and_then(int) {
                Some(1) => Ok(()),
                Some(0) => Err(self.fenced(lease, items)),
                _ => Err(self.inner.corrupt(ACTION, "remove")),
            }
        })
    }

    fn identities(&self) -> CoordFuture<'_, Vec<String>> {
        Box::pin(async move {
            const ACTION: &str = "listing sessions";
            let reply = self
                .inner
                .eval(
                    ACTION,
                    &self.inner.scripts.identities,
                    &[self.identities_key().as_bytes()],
                    &[MAX_LISTED.to_string().as_bytes()],
                )
                .await?;
            let bad = || self.inner.corrupt(ACTION, "identities");
            let items = array(&reply).ok_or_else(bad)?;
            match items.first().and_then(int) {
                Some(1) => {
                    let members = items.get(1).and_then(array).ok_or_else(bad)?;
                    let mut ids: Vec<String> = members
                        .iter()
                        .filter_map(text)
                        .filter(|id| check_name("identity", id).is_ok())
                        .collect();
                    ids.sort();
                    Ok(ids)
                }
                Some(0) => Err(CoordError::Corrupt {
                    store: self.inner.describe.clone(),
                    detail: format!(
                        "{} lists {} identities, more than the {MAX_LISTED} read",
                        self.identities_key(),
                        items.get(1).and_then(int).unwrap_or(-1)
                    ),
                }),
                _ => Err(bad()),
            }
        })
    }

    fn subscribe<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, Events> {
        Box::pin(async move {
            check_name("identity", identity)?;
            self.ensure_listener();
            let events = self.inner.hub.subscribe(identity);
            let wait = self.inner.settings.connect_timeout + self.inner.settings.response_timeout;
            if !self.inner.hub.wait_connected(wait).await {
                return Err(self.inner.unavailable(
                    "subscribing",
                    format!("the change feed is not connected within {wait:?}"),
                ));
            }
            Ok(events)
        })
    }

    fn request_recovery<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, ()> {
        Box::pin(async move {
            check_name("identity", identity)?;
            let channel = self.inner.channel.as_str();
            let message = events::payload(identity, &Event::RecoveryRequested);
            let message = message.as_str();
            self.inner
                .run("asking for a recovery", move |mut c| async move {
                    redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(message)
                        .query_async::<Value>(&mut c)
                        .await
                })
                .await?;
            Ok(())
        })
    }

    fn heartbeat<'a>(
        &'a self,
        identity: &'a str,
        member: &'a Member,
        ttl: Duration,
    ) -> CoordFuture<'a, ()> {
        Box::pin(async move {
            check_name("identity", identity)?;
            check_name("member", &member.id)?;
            let info = format!(
                "{}\n{}",
                u8::from(member.leader),
                cut(&member.about, MAX_ABOUT)
            );
            self.inner
                .eval(
                    "sending a heartbeat",
                    &self.inner.scripts.heartbeat,
                    &[
                        self.key(identity, "members").as_bytes(),
                        self.key(identity, "member-info").as_bytes(),
                    ],
                    &[
                        member.id.as_bytes(),
                        millis(ttl).as_bytes(),
                        info.as_bytes(),
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn leave<'a>(&'a self, identity: &'a str, member_id: &'a str) -> CoordFuture<'a, ()> {
        Box::pin(async move {
            check_name("identity", identity)?;
            check_name("member", member_id)?;
            self.inner
                .eval(
                    "leaving",
                    &self.inner.scripts.leave,
                    &[
                        self.key(identity, "members").as_bytes(),
                        self.key(identity, "member-info").as_bytes(),
                    ],
                    &[member_id.as_bytes()],
                )
                .await?;
            Ok(())
        })
    }

    fn members<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, Vec<Member>> {
        Box::pin(async move {
            check_name("identity", identity)?;
            const ACTION: &str = "listing members";
            let reply = self
                .inner
                .eval(
                    ACTION,
                    &self.inner.scripts.members,
                    &[
                        self.key(identity, "members").as_bytes(),
                        self.key(identity, "member-info").as_bytes(),
                    ],
                    &[
                        MAX_LISTED.to_string().as_bytes(),
                        (MAX_ABOUT + 64).to_string().as_bytes(),
                    ],
                )
                .await?;
            let bad = || self.inner.corrupt(ACTION, "members");
            let items = array(&reply).ok_or_else(bad)?;
            let now = items.first().and_then(uint).ok_or_else(bad)?;
            let mut members = Vec::new();
            for pair in items[1..].chunks(2) {
                let [id, info] = pair else { return Err(bad()) };
                let (Some(id), Some(info)) = (text(id), text(info)) else {
                    continue;
                };
                let mut parts = info.splitn(3, '\n');
                let (Some(seen), Some(leader), Some(about)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let Ok(seen) = seen.parse::<u64>() else {
                    continue;
                };
                members.push(Member {
                    id,
                    leader: leader == "1",
                    about: about.to_owned(),
                    seen_ago: Duration::from_millis(now.saturating_sub(seen)),
                });
            }
            members.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(members)
        })
    }

    fn pace<'a>(&'a self, account: &'a str) -> CoordFuture<'a, Box<dyn PaceTxn>> {
        Box::pin(async move {
            check_name("account", account)?;
            const ACTION: &str = "pacing";
            let (lock, doc) = self.pace_keys(account);
            let token = token();
            let ttl = millis(self.inner.settings.pace_lock_ttl);
            let max = MAX_DOC_LEN.to_string();
            let started = Instant::now();
            let deadline = started + self.inner.settings.pace_wait;
            let mut backoff = Duration::from_millis(5);
            loop {
                let reply = self
                    .inner
                    .eval(
                        ACTION,
                        &self.inner.scripts.pace_begin,
                        &[lock.as_bytes(), doc.as_bytes()],
                        &[token.as_bytes(), ttl.as_bytes(), max.as_bytes()],
                    )
                    .await?;
                let bad = || self.inner.corrupt(ACTION, "pace");
                let items = array(&reply).ok_or_else(bad)?;
                match items.first().and_then(int) {
                    Some(1) => {
                        let current = match items.get(1) {
                            None | Some(Value::Nil) => None,
                            Some(v) => Some(bytes(v).ok_or_else(bad)?.to_vec()),
                        };
                        return Ok(Box::new(RedisPace {
                            coord: self.clone(),
                            lock,
                            doc,
                            token,
                            current,
                            done: false,
                        }) as Box<dyn PaceTxn>);
                    }
                    Some(0) => {
                        let now = Instant::now();
                        if now >= deadline {
                            return Err(self.inner.unavailable(
                                ACTION,
                                format!(
                                    "the pacing lock of account {account} is still held by another process after {:?}",
                                    now - started
                                ),
                            ));
                        }
                        // Never longer than the holder's lock has left, nor past the deadline.
                        let left = items.get(1).and_then(pttl).unwrap_or(backoff);
                        let nap = events::jitter(backoff)
                            .min(left.max(Duration::from_millis(1)))
                            .min(deadline - now);
                        tokio::time::sleep(nap).await;
                        backoff = (backoff * 2).min(Duration::from_millis(100));
                    }
                    Some(2) => {
                        return Err(CoordError::Corrupt {
                            store: self.inner.describe.clone(),
                            detail: format!(
                                "the pacing document of {account} is {} bytes, more than the {MAX_DOC_LEN} allowed; not read",
                                items.get(1).and_then(int).unwrap_or(-1)
                            ),
                        });
                    }
                    _ => return Err(bad()),
                }
            }
        })
    }
}

/// A pacing transaction: the lock key holds this transaction's token until it commits, is
/// dropped (released at once when a runtime is there to send it) or expires.
struct RedisPace {
    coord: RedisCoordinator,
    lock: String,
    doc: String,
    token: String,
    current: Option<Vec<u8>>,
    /// The lock is no longer ours to release (committed, or lost).
    done: bool,
}

impl PaceTxn for RedisPace {
    fn current(&self) -> Option<&[u8]> {
        self.current.as_deref()
    }

    fn commit(self: Box<Self>, bytes: Vec<u8>) -> CoordFuture<'static, ()> {
        let mut this = self;
        Box::pin(async move {
            if bytes.len() > MAX_DOC_LEN {
                return Err(CoordError::TooLarge { len: bytes.len() });
            }
            const ACTION: &str = "pacing";
            let inner = this.coord.inner.clone();
            let reply = inner
                .eval(
                    ACTION,
                    &inner.scripts.pace_commit,
                    &[this.lock.as_bytes(), this.doc.as_bytes()],
                    &[this.token.as_bytes(), &bytes],
                )
                .await?;
            this.done = true;
            match int(&reply) {
                Some(1) => Ok(()),
                Some(0) => Err(inner.unavailable(
                    ACTION,
                    format!(
                        "the pacing lock expired before the commit (held longer than {:?}); nothing was written, read again",
                        inner.settings.pace_lock_ttl
                    ),
                )),
                _ => Err(inner.corrupt(ACTION, "pace commit")),
            }
        })
    }
}

impl Drop for RedisPace {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Without a runtime, the lock's expiry frees it.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = self.coord.inner.clone();
        let lock = std::mem::take(&mut self.lock);
        let token = std::mem::take(&mut self.token);
        runtime.spawn(async move {
            let _ = inner
                .eval(
                    "releasing the pacing lock",
                    &inner.scripts.pace_abort,
                    &[lock.as_bytes()],
                    &[token.as_bytes()],
                )
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_described_without_credentials() {
        assert_eq!(
            describe_url("redis://:s3cret@redis.internal:6380/2"),
            "redis://redis.internal:6380/2"
        );
        assert_eq!(
            describe_url("rediss://user:pw@10.0.0.1"),
            "rediss://10.0.0.1:6379/0"
        );
        assert_eq!(
            describe_url("redis+unix:///run/redis.sock"),
            "redis+unix:///run/redis.sock"
        );
        assert!(!describe_url("not a url :s3cret").contains("s3cret"));
        let target = parse_url("redis://:p%40ss@h:1/0").expect("parses");
        assert_eq!(target.password.as_deref(), Some("p@ss"));
        assert_eq!(
            scrub("WRONGPASS p@ss is wrong", Some("p@ss")),
            "WRONGPASS *** is wrong"
        );
    }

    #[test]
    fn bad_addresses_are_refused_without_echoing_them() {
        for url in [
            "http://:pw123@h/0",
            "nonsense :pw123",
            "rediss://:pw123@h/0#insecure",
        ] {
            let Err(CoordError::Config(msg)) = parse_url(url) else {
                panic!("{url} accepted");
            };
            assert!(!msg.contains("pw123"), "{msg}");
        }
    }

    #[test]
    fn builder_checks_its_options() {
        let err = RedisCoordinator::builder("redis://127.0.0.1/0")
            .key_prefix("a{b")
            .build()
            .expect_err("braces refused");
        assert!(matches!(err, CoordError::Config(_)), "{err}");
        let err = RedisCoordinator::builder("redis://127.0.0.1/0")
            .response_timeout(Duration::ZERO)
            .build()
            .expect_err("zero timeout refused");
        assert!(matches!(err, CoordError::Config(_)), "{err}");
    }

    #[test]
    fn replies_are_read_without_trusting_them() {
        assert_eq!(
            split_lease(&Value::BulkString(b"host a:1:ff 17".to_vec())),
            Some(("host a:1:ff".to_owned(), 17))
        );
        assert_eq!(
            split_lease(&Value::BulkString(b"nogeneration".to_vec())),
            None
        );
        assert_eq!(split_lease(&Value::BulkString(b"h -1".to_vec())), None);
        assert_eq!(pttl(&Value::Int(-1)), None);
        assert_eq!(pttl(&Value::Int(1500)), Some(Duration::from_millis(1500)));
        assert_eq!(millis(Duration::ZERO), "1");
        assert_eq!(millis(Duration::MAX), MAX_TTL_MS.to_string());
        assert_eq!(cut("héllo", 2), "h");
    }
}

/// The README's example, compiled with the doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
