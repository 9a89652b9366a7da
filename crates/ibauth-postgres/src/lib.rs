#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod config;
mod listener;
mod pool;
mod queue;
mod schema;
mod tls;

pub use queue::MAX_CLAIM;
pub use schema::SCHEMA_VERSION;

use std::sync::Arc;
use std::time::Duration;

use ibauth::coord::{
    Acquired, CoordError, CoordFuture, Coordinator, Events, Lease, LeaseInfo, MAX_DOC_LEN,
    MAX_NAME_LEN, Member, PaceTxn, SealedDoc, check_name,
};
use tokio::sync::oneshot;
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, ToSql, Type};

use crate::config::{Redactor, Roots, Target};
use crate::listener::{CHANNEL, Hub, ListenerOptions};
use crate::pool::{Conn, GetError, Pool};

/// The longest `about` kept for a member (characters); longer ones are cut, and control
/// characters dropped.
pub const MAX_ABOUT_LEN: usize = 1024;

/// The most members [`Coordinator::members`] lists for one identity.
pub const MAX_MEMBERS: i64 = 1000;

/// The most identities [`Coordinator::identities`] lists.
pub const MAX_IDENTITIES: i64 = 10_000;

/// The longest TTL accepted (longer ones are cut to it): ten years.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A [`Coordinator`] on PostgreSQL; clones share one pool and one notification listener.
///
/// ```no_run
/// use ibauth::coord::{Acquired, Coordinator, DEFAULT_LEASE_TTL, holder_name};
/// use ibauth_postgres::PgCoordinator;
///
/// # async fn demo() -> Result<(), ibauth::coord::CoordError> {
/// let coord = PgCoordinator::connect("postgres://ibauth:secret@db.internal:5432/ibauth").await?;
/// match coord.acquire("oauth2:0123abcd", &holder_name(), DEFAULT_LEASE_TTL).await? {
///     Acquired::Granted(lease) => println!("leading, generation {}", lease.generation),
///     Acquired::Held(info) => println!("following {}", info.holder),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgCoordinator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PgCoordinator")
            .field(&self.inner.store)
            .finish()
    }
}

struct Inner {
    pool: Arc<Pool>,
    hub: Arc<Hub>,
    store: String,
    redactor: Redactor,
    connect_timeout: Duration,
    query_timeout: Duration,
    pace_wait: Duration,
    /// Dropped with the last clone: stops the listener.
    _stop_listener: oneshot::Sender<()>,
}

/// How a [`PgCoordinator`] connects: pool size and timeouts.
///
/// ```no_run
/// use std::time::Duration;
/// use ibauth_postgres::PgCoordinator;
///
/// # async fn demo() -> Result<(), ibauth::coord::CoordError> {
/// let coord = PgCoordinator::builder("postgres://ibauth@db.internal/ibauth?sslmode=verify-full")
///     .pool_size(2)
///     .query_timeout(Duration::from_secs(3))
///     .connect()
///     .await?;
/// # let _ = coord;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgCoordinatorBuilder {
    url: String,
    pool_size: usize,
    connect_timeout: Duration,
    query_timeout: Duration,
    pace_wait: Duration,
    pace_hold: Duration,
    ping_every: Duration,
    roots_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for PgCoordinatorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCoordinatorBuilder")
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .finish_non_exhaustive()
    }
}

impl PgCoordinatorBuilder {
    /// At most this many connections at once besides the listener's (default 4, at least 2:
    /// a pacing transaction holds one while another waits for it).
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(2);
        self
    }

    /// How long connecting (or waiting for a free pooled connection) may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one statement may take, on the client and on the server
    /// (`statement_timeout`; default 5 s). A call answers within `connect_timeout +
    /// query_timeout` at most, with [`CoordError::Unavailable`] when the database is gone.
    pub fn query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// How long [`Coordinator::pace`] waits for another process's transaction on the same
    /// account (`lock_timeout`; default 3 s, and never longer than the query timeout) before
    /// it fails with [`CoordError::Unavailable`].
    pub fn pace_wait(mut self, wait: Duration) -> Self {
        self.pace_wait = wait;
        self
    }

    /// How long a pacing transaction may sit open: past this the server ends its session
    /// and frees the row (`idle_in_transaction_session_timeout`; default 10 s), so a
    /// process that froze or hung mid-transaction does not block the fleet.
    pub fn pace_hold(mut self, hold: Duration) -> Self {
        self.pace_hold = hold;
        self
    }

    /// How often the notification connection is checked with a query (default 10 s): one
    /// that does not answer within the query timeout is replaced, and subscribers get
    /// [`ibauth::coord::Event::Resync`].
    pub fn listener_ping(mut self, every: Duration) -> Self {
        self.ping_every = every;
        self
    }

    /// Trusts only the CA certificates in this PEM bundle for TLS (like `sslrootcert=FILE`)
    /// instead of the platform's trust store.
    pub fn root_certificates_pem(mut self, pem: &[u8]) -> Self {
        self.roots_pem = Some(pem.to_vec());
        self
    }

    /// Connects, creates or migrates the tables, and starts listening for changes.
    ///
    /// Fails with [`CoordError::Unavailable`] when the database cannot be reached (try
    /// again later), [`CoordError::Schema`] when its tables were made by a newer ibauth,
    /// [`CoordError::Config`] for a bad URL or credentials.
    pub async fn connect(self) -> Result<PgCoordinator, CoordError> {
        let mut target = Target::parse(&self.url)?;
        if let (Some(pem), Some(_)) = (&self.roots_pem, &target.tls) {
            let certs = config::parse_roots(pem)
                .map_err(|e| CoordError::Config(format!("root certificates: {e}")))?;
            target.tls = Some(Roots::Only(certs));
        }
        let tls = match &target.tls {
            Some(roots) => Some(tls::client_config(roots)?),
            None => None,
        };
        let mut pg = target.pg.clone();
        pg.connect_timeout(self.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .tcp_user_timeout(self.connect_timeout + self.query_timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("ibauth");
        }
        let ms = |d: Duration| d.as_millis().clamp(1, i32::MAX as u128);
        let ours = format!(
            "-c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            ms(self.query_timeout),
            ms(self.pace_wait),
            ms(self.pace_hold)
        );
        let options = match pg.get_options() {
            Some(theirs) if !theirs.trim().is_empty() => format!("{theirs} {ours}"),
            _ => ours,
        };
        pg.options(options);
        let pool = Arc::new(Pool::new(
            pg,
            tls::MakeRustls(tls),
            self.pool_size,
            self.connect_timeout,
        ));
        let (stop_tx, stop_rx) = oneshot::channel();
        let inner = Inner {
            pool: pool.clone(),
            hub: Arc::new(Hub::default()),
            store: target.describe.clone(),
            redactor: target.redactor(),
            connect_timeout: self.connect_timeout,
            query_timeout: self.query_timeout,
            pace_wait: self.pace_wait,
            _stop_listener: stop_tx,
        };
        inner.migrate().await?;

        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(listener::run(
            pool,
            inner.hub.clone(),
            inner.store.clone(),
            inner.redactor.clone(),
            ListenerOptions {
                ping_every: self.ping_every,
                ping_timeout: self.query_timeout,
                max_backoff: Duration::from_secs(5),
            },
            ready_tx,
            stop_rx,
        ));
        let wait = self.connect_timeout + self.query_timeout;
        match tokio::time::timeout(wait, ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(detail))) => return Err(inner.unavailable("listening for changes", detail)),
            Ok(Err(_)) | Err(_) => {
                return Err(inner.unavailable(
                    "listening for changes",
                    format!("no answer within {wait:?}"),
                ));
            }
        }
        Ok(PgCoordinator {
            inner: Arc::new(inner),
        })
    }
}

impl PgCoordinator {
    /// Connects with the default pool size and timeouts ([`builder`](Self::builder)).
    ///
    /// `url`: `postgres://user:password@host:port/database`, with `sslmode=disable`,
    /// `prefer`, `require`, `verify-ca` or `verify-full` and `sslrootcert=FILE` as in libpq —
    /// except that TLS, whenever it is used, always verifies the server's certificate and
    /// name. Without `sslmode`, loopback hosts and unix sockets are plain and any other host
    /// needs TLS.
    pub async fn connect(url: &str) -> Result<PgCoordinator, CoordError> {
        Self::builder(url).connect().await
    }

    /// A coordinator for `url` with other settings.
    pub fn builder(url: &str) -> PgCoordinatorBuilder {
        PgCoordinatorBuilder {
            url: url.to_owned(),
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
            pace_wait: Duration::from_secs(3),
            pace_hold: Duration::from_secs(10),
            ping_every: Duration::from_secs(10),
            roots_pem: None,
        }
    }
}

/// A parameter with its type (statements are sent unprepared, in one round trip).
type Param<'a> = (&'a (dyn ToSql + Sync), Type);

impl Inner {
    fn unavailable(&self, action: &'static str, detail: String) -> CoordError {
        CoordError::Unavailable {
            store: self.store.clone(),
            action,
            detail: self.redactor.redact(detail),
        }
    }

    fn corrupt(&self, detail: String) -> CoordError {
        CoordError::Corrupt {
            store: self.store.clone(),
            detail,
        }
    }

    /// What a driver error means for the caller.
    fn fail(&self, action: &'static str, e: &tokio_postgres::Error) -> CoordError {
        let Some(db) = e.as_db_error() else {
            // I/O, a closed connection, TLS, a protocol error: the store is not reachable.
            return self.unavailable(action, error_chain(e));
        };
        let code = db.code().code();
        let detail = self
            .redactor
            .redact(format!("{} (SQLSTATE {code})", db.message()));
        match &code[..2] {
            // Bad credentials, unknown database, missing privileges.
            "28" | "3D" => CoordError::Config(format!("{}: {detail}", self.store)),
            "42" if code == "42501" => CoordError::Config(format!("{}: {detail}", self.store)),
            // Data the store refused, or tables that are not what this build made.
            "22" | "23" | "42" => self.corrupt(format!("while {action}: {detail}")),
            // Connection trouble, shutdown, timeouts and cancels, lock waits, conflicts,
            // resources: worth trying again.
            _ => CoordError::Unavailable {
                store: self.store.clone(),
                action,
                detail,
            },
        }
    }

    fn get_fail(&self, action: &'static str, e: GetError) -> CoordError {
        match e {
            GetError::Connect(e) => self.fail(action, &e),
            GetError::Timeout(t) => {
                self.unavailable(action, format!("could not connect within {t:?}"))
            }
        }
    }

    /// A pooled connection within the connect timeout.
    async fn conn(&self, action: &'static str) -> Result<Conn, CoordError> {
        match tokio::time::timeout(self.connect_timeout, self.pool.get()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => {
                self.pool.drain_idle();
                Err(self.get_fail(action, e))
            }
            Err(_) => Err(self.unavailable(
                action,
                format!(
                    "no connection within {:?} (the pool is busy or the database slow)",
                    self.connect_timeout
                ),
            )),
        }
    }

    /// Runs one statement (its own transaction) and returns its rows.
    async fn rows(
        &self,
        action: &'static str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>, CoordError> {
        let mut conn = self.conn(action).await?;
        let answer =
            tokio::time::timeout(self.query_timeout, conn.client().query_typed(sql, params)).await;
        match answer {
            Ok(Ok(rows)) => {
                conn.keep();
                Ok(rows)
            }
            Ok(Err(e)) => {
                if reusable_after(&e) && !conn.client().is_closed() {
                    conn.keep();
                } else {
                    self.pool.drain_idle();
                }
                Err(self.fail(action, &e))
            }
            Err(_) => {
                // The connection is dropped mid-statement (closed, never reused).
                self.pool.drain_idle();
                Err(self.unavailable(action, format!("no answer within {:?}", self.query_timeout)))
            }
        }
    }

    async fn migrate(&self) -> Result<(), CoordError> {
        let action = "creating or migrating the tables";
        let mut conn = self.conn(action).await?;
        // Another process may hold the migration lock for a moment.
        let limit = self.query_timeout * 2;
        match tokio::time::timeout(limit, schema::migrate(conn.client(), &self.store)).await {
            Ok(Ok(())) => {
                conn.keep();
                Ok(())
            }
            Ok(Err(Ok(refusal))) => Err(refusal),
            Ok(Err(Err(e))) => Err(self.fail(action, &e)),
            Err(_) => Err(self.unavailable(action, format!("no answer within {limit:?}"))),
        }
    }

    fn col<'r, T: FromSql<'r>>(&self, row: &'r Row, i: usize, what: &str) -> Result<T, CoordError> {
        row.try_get(i)
            .map_err(|e| self.corrupt(format!("{what}: {e}")))
    }

    fn generation(&self, value: i64, what: &str) -> Result<u64, CoordError> {
        u64::try_from(value).map_err(|_| self.corrupt(format!("{what} is {value}")))
    }

    /// A name read back: as bounded as when it was written.
    fn name(&self, value: String, what: &str) -> Result<String, CoordError> {
        if value.is_empty() || value.len() > MAX_NAME_LEN {
            return Err(self.corrupt(format!("a {what} of {} bytes", value.len())));
        }
        Ok(value)
    }

    /// Reads the fencing check's answer: `current` is the live generation, if any.
    fn fenced(&self, lease: &Lease, current: Option<i64>) -> CoordError {
        CoordError::Fenced {
            identity: lease.identity.clone(),
            generation: lease.generation,
            current: current.and_then(|g| u64::try_from(g).ok()),
        }
    }

    /// A document column read back, `CASE`-bounded to [`MAX_DOC_LEN`] by the statement:
    /// `(bytes, length)`.
    fn bounded_doc(
        &self,
        row: &Row,
        bytes_at: usize,
        what: &str,
    ) -> Result<Option<Vec<u8>>, CoordError> {
        let len: Option<i32> = self.col(row, bytes_at + 1, what)?;
        let bytes: Option<Vec<u8>> = self.col(row, bytes_at, what)?;
        match (len, bytes) {
            (None, _) => Ok(None),
            (Some(len), Some(bytes)) if bytes.len() == len as usize => Ok(Some(bytes)),
            (Some(len), _) => Err(self.corrupt(format!(
                "{what} of {len} bytes is larger than the {MAX_DOC_LEN} allowed"
            ))),
        }
    }
}

/// Whether a connection can be used again after `e` (a statement's error, not the
/// connection's).
fn reusable_after(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| !matches!(db.severity(), "FATAL" | "PANIC"))
}

/// An error with its causes (the driver's `Display` leaves some out).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

fn micros(d: Duration) -> i64 {
    d.min(MAX_TTL).as_micros() as i64
}

fn duration_from_micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

/// A lease's generation as the database stores it (one that cannot be stored matches no row).
fn db_generation(lease: &Lease) -> i64 {
    i64::try_from(lease.generation).unwrap_or(-1)
}

/// Whether `lease` (identity $1, holder $2, generation $3) is the current, live lease —
/// locked `FOR SHARE` until the statement's transaction ends, so no other holder can take
/// it in between.
const LIVE_LEASE: &str = "SELECT 1 FROM ibauth_leases
    WHERE identity = $1 AND holder = $2 AND generation = $3 AND expires_at > clock_timestamp()
    FOR SHARE";

/// The live generation of identity $1, for a fencing error's message.
const CURRENT_GENERATION: &str = "SELECT generation FROM ibauth_leases
    WHERE identity = $1 AND holder IS NOT NULL AND expires_at > clock_timestamp()";

impl Coordinator for PgCoordinator {
    fn describe(&self) -> String {
        self.inner.store.clone()
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
            let inner = &self.inner;
            let action = "taking the lease";
            let ttl_us = micros(ttl);
            // A free, expired or own lease is (re)granted in one statement: a new holder gets
            // the next generation, the same live holder keeps its own. Rows are never
            // deleted, so a generation is never granted twice.
            const TAKE: &str =
                "INSERT INTO ibauth_leases AS l (identity, holder, generation, expires_at)
                VALUES ($1, $2, 1, clock_timestamp() + $3::float8 * interval '1 microsecond')
                ON CONFLICT (identity) DO UPDATE SET
                    holder = EXCLUDED.holder,
                    generation = CASE
                        WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp()
                        THEN l.generation ELSE l.generation + 1 END,
                    expires_at = EXCLUDED.expires_at
                WHERE l.holder IS NULL OR l.expires_at <= clock_timestamp()
                    OR l.holder = EXCLUDED.holder
                RETURNING generation";
            const HELD: &str = "SELECT left(holder, 201), generation,
                    (EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000000)::int8
                FROM ibauth_leases
                WHERE identity = $1 AND holder IS NOT NULL AND expires_at > clock_timestamp()";
            // Held, then freed before it could be read: try again (a few times).
            for _ in 0..5 {
                let rows = inner
                    .rows(
                        action,
                        TAKE,
                        &[
                            (&identity, Type::TEXT),
                            (&holder, Type::TEXT),
                            (&ttl_us, Type::INT8),
                        ],
                    )
                    .await?;
                if let Some(row) = rows.first() {
                    let generation = inner.col::<i64>(row, 0, "ibauth_leases.generation")?;
                    return Ok(Acquired::Granted(Lease {
                        identity: identity.to_owned(),
                        holder: holder.to_owned(),
                        generation: inner.generation(generation, "ibauth_leases.generation")?,
                    }));
                }
                let rows = inner
                    .rows("reading the lease", HELD, &[(&identity, Type::TEXT)])
                    .await?;
                if let Some(row) = rows.first() {
                    let holder = inner.col::<String>(row, 0, "ibauth_leases.holder")?;
                    let generation = inner.col::<i64>(row, 1, "ibauth_leases.generation")?;
                    let left = inner.col::<i64>(row, 2, "ibauth_leases.expires_at")?;
                    return Ok(Acquired::Held(LeaseInfo {
                        holder: inner.name(holder, "lease holder")?,
                        generation: inner.generation(generation, "ibauth_leases.generation")?,
                        expires_in: duration_from_micros(left),
                    }));
                }
            }
            Err(inner.unavailable(action, "the lease kept changing hands".into()))
        })
    }

    fn renew<'a>(&'a self, lease: &'a Lease, ttl: Duration) -> CoordFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let generation = db_generation(lease);
            let ttl_us = micros(ttl);
            let sql = format!(
                "WITH renewed AS (
                    UPDATE ibauth_leases
                    SET expires_at = clock_timestamp() + $4::float8 * interval '1 microsecond'
                    WHERE identity = $1 AND holder = $2 AND generation = $3
                        AND expires_at > clock_timestamp()
                    RETURNING 1)
                SELECT EXISTS (SELECT 1 FROM renewed), ({CURRENT_GENERATION})"
            );
            let rows = inner
                .rows(
                    "renewing the lease",
                    &sql,
                    &[
                        (&lease.identity, Type::TEXT),
                        (&lease.holder, Type::TEXT),
                        (&generation, Type::INT8),
                        (&ttl_us, Type::INT8),
                    ],
                )
                .await?;
            let row = rows
                .first()
                .ok_or_else(|| inner.corrupt("renewing answered no row".into()))?;
            if inner.col::<bool>(row, 0, "renewed")? {
                Ok(())
            } else {
                Err(inner.fenced(lease, inner.col(row, 1, "generation")?))
            }
        })
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> CoordFuture<'a, ()> {
        Box::pin(async move {
            let generation = db_generation(lease);
            // The row stays (holder NULL) so the generation keeps counting; a stale release
            // matches nothing and is a no-op.
            let sql = format!(
                "WITH released AS (
                    UPDATE ibauth_leases SET holder = NULL, expires_at = clock_timestamp()
                    WHERE identity = $1 AND holder = $2 AND generation = $3
                        AND expires_at > clock_timestamp()
                    RETURNING identity),
                told AS (SELECT pg_notify('{CHANNEL}', 'R::' || identity) FROM released)
                SELECT count(*) FROM told"
            );
            self.inner
                .rows(
                    "releasing the lease",
                    &sql,
                    &[
                        (&lease.identity, Type::TEXT),
                        (&lease.holder, Type::TEXT),
                        (&generation, Type::INT8),
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn lease_info<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, Option<LeaseInfo>> {
        Box::pin(async move {
            check_name("identity", identity)?;
            let inner = &self.inner;
            let rows = inner
                .rows(
                    "reading the lease",
                    "SELECT left(holder, 201), generation, GREATEST(0,
                        (EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000000)::int8)
                    FROM ibauth_leases WHERE identity = $1 AND holder IS NOT NULL",
                    &[(&identity, Type::TEXT)],
                )
                .await?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let holder = inner.col::<String>(row, 0, "ibauth_leases.holder")?;
            let generation = inner.col::<i64>(row, 1, "ibauth_leases.generation")?;
            let left = inner.col::<i64>(row, 2, "ibauth_leases.expires_at")?;
            Ok(Some(LeaseInfo {
                holder: inner.name(holder, "lease holder")?,
                generation: inner.generation(generation, "ibauth_leases.generation")?,
                expires_in: duration_from_micros(left),
            }))
        })
    }

    fn load<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, Option<SealedDoc>> {
        Box::pin(async move {
            check_name("identity", identity)?;
            let inner = &self.inner;
            let max = MAX_DOC_LEN as i32;
            // An oversized document is not even sent: only its length.
            let rows = inner
                .rows(
                    "loading the session",
                    "SELECT left(key_id, 201),
                        CASE WHEN octet_length(sealed) <= $2 THEN sealed END,
                        octet_length(sealed), version, generation
                    FROM ibauth_sessions WHERE identity = $1 AND sealed IS NOT NULL",
                    &[(&identity, Type::TEXT), (&max, Type::INT4)],
                )
                .await?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let key_id = inner.col::<String>(row, 0, "ibauth_sessions.key_id")?;
            let bytes = inner
                .bounded_doc(row, 1, "the session document")?
                .ok_or_else(|| inner.corrupt("a session without its document".into()))?;
            let version = inner.col::<i64>(row, 3, "ibauth_sessions.version")?;
            let generation = inner.col::<i64>(row, 4, "ibauth_sessions.generation")?;
            Ok(Some(SealedDoc {
                key_id: inner.name(key_id, "key id")?,
                bytes,
                version: inner.generation(version, "ibauth_sessions.version")?,
                generation: inner.generation(generation, "ibauth_sessions.generation")?,
            }))
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
            let inner = &self.inner;
            let generation = db_generation(lease);
            // The lease check, the write and the notification commit together or not at all.
            let sql = format!(
                "WITH lease AS ({LIVE_LEASE}),
                saved AS (
                    INSERT INTO ibauth_sessions AS s
                        (identity, key_id, sealed, version, generation, updated_at)
                    SELECT $1, $4, $5, 1, $3, clock_timestamp() FROM lease
                    ON CONFLICT (identity) DO UPDATE SET
                        key_id = EXCLUDED.key_id, sealed = EXCLUDED.sealed,
                        version = s.version + 1, generation = EXCLUDED.generation,
                        updated_at = EXCLUDED.updated_at
                    RETURNING version),
                told AS (
                    SELECT pg_notify('{CHANNEL}', 'S:' || version || ':' || $1) FROM saved)
                SELECT (SELECT version FROM saved), (SELECT count(*) FROM told),
                    ({CURRENT_GENERATION})"
            );
            let rows = inner
                .rows(
                    "storing the session",
                    &sql,
                    &[
                        (&lease.identity, Type::TEXT),
                        (&lease.holder, Type::TEXT),
                        (&generation, Type::INT8),
                        (&doc.key_id, Type::TEXT),
                        (&doc.bytes, Type::BYTEA),
                    ],
                )
                .await?;
            let row = rows
                .first()
                .ok_or_else(|| inner.corrupt("storing answered no row".into()))?;
            match inner.col::<Option<i64>>(row, 0, "ibauth_sessions.version")? {
                Some(version) => inner.generation(version, "ibauth_sessions.version"),
                None => Err(inner.fenced(lease, inner.col(row, 2, "generation")?)),
            }
        })
    }

    fn remove<'a>(&'a self, lease: &'a Lease) -> CoordFuture<'a, ()> {
        Box::pin(async move {
            let inner = &self.inner;
            let generation = db_generation(lease);
            // A tombstone: the version stays, so it never goes back.
            let sql = format!(
                "WITH lease AS ({LIVE_LEASE}),
                removed AS (
                    UPDATE ibauth_sessions
                    SET key_id = NULL, sealed = NULL, updated_at = clock_timestamp()
                    WHERE identity = $1 AND sealed IS NOT NULL AND EXISTS (SELECT 1 FROM lease)
                    RETURNING 1),
                told AS (SELECT pg_notify('{CHANNEL}', 'D::' || $1) FROM removed)
                SELECT EXISTS (SELECT 1 FROM lease), (SELECT count(*) FROM told),
                    ({CURRENT_GENERATION})"
            );
            let rows = inner
                .rows(
                    "removing the session",
                    &sql,
                    &[
                        (&lease.identity, Type::TEXT),
                        (&lease.holder, Type::TEXT),
                        (&generation, Type::INT8),
                    ],
                )
                .await?;
            let row = rows
                .first()
                .ok_or_else(|| inner.corrupt("removing answered no row".into()))?;
            if inner.col::<bool>(row, 0, "lease")? {
                Ok(())
            } else {
                Err(inner.fenced(lease, inner.col(row, 2, "generation")?))
            }
        })
    }

    fn identities(&self) -> CoordFuture<'_, Vec<String>> {
        Box::pin(async move {
            let inner = &self.inner;
            let rows = inner
                .rows(
                    "listing sessions",
                    "SELECT left(identity, 201) FROM ibauth_sessions WHERE sealed IS NOT NULL
                    ORDER BY identity COLLATE \"C\" LIMIT $1",
                    &[(&MAX_IDENTITIES, Type::INT8)],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    let id = inner.col::<String>(row, 0, "ibauth_sessions.identity")?;
                    inner.name(id, "identity")
                })
                .collect()
        })
    }

    fn subscribe<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, Events> {
        Box::pin(async move {
            check_name("identity", identity)?;
            // The listener is connected from `connect` on; while it reconnects, subscribers
            // get Resync once it listens again.
            Ok(self.inner.hub.subscribe(identity))
        })
    }

    fn request_recovery<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, ()> {
        Box::pin(async move {
            check_name("identity", identity)?;
            self.inner
                .rows(
                    "asking for a recovery",
                    &format!("SELECT 1 FROM (SELECT pg_notify('{CHANNEL}', 'Q::' || $1)) told"),
                    &[(&identity, Type::TEXT)],
                )
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
            let about: String = member
                .about
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_ABOUT_LEN)
                .collect();
            let ttl_us = micros(ttl);
            // Also clears this identity's expired members (skipping rows another heartbeat
            // is clearing: no waits, no deadlocks).
            self.inner
                .rows(
                    "sending a heartbeat",
                    "WITH expired AS (
                        DELETE FROM ibauth_members WHERE (identity, member) IN (
                            SELECT identity, member FROM ibauth_members
                            WHERE identity = $1 AND member <> $2
                                AND expires_at <= clock_timestamp()
                            FOR UPDATE SKIP LOCKED))
                    INSERT INTO ibauth_members AS m
                        (identity, member, leader, about, seen_at, expires_at)
                    VALUES ($1, $2, $3, $4, clock_timestamp(),
                        clock_timestamp() + $5::float8 * interval '1 microsecond')
                    ON CONFLICT (identity, member) DO UPDATE SET
                        leader = EXCLUDED.leader, about = EXCLUDED.about,
                        seen_at = EXCLUDED.seen_at, expires_at = EXCLUDED.expires_at",
                    &[
                        (&identity, Type::TEXT),
                        (&member.id, Type::TEXT),
                        (&member.leader, Type::BOOL),
                        (&about, Type::TEXT),
                        (&ttl_us, Type::INT8),
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
                .rows(
                    "leaving",
                    "DELETE FROM ibauth_members WHERE identity = $1 AND member = $2",
                    &[(&identity, Type::TEXT), (&member_id, Type::TEXT)],
                )
                .await?;
            Ok(())
        })
    }

    fn members<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, Vec<Member>> {
        Box::pin(async move {
            check_name("identity", identity)?;
            let inner = &self.inner;
            let max_about = MAX_ABOUT_LEN as i32;
            let rows = inner
                .rows(
                    "listing members",
                    "SELECT left(member, 201), leader, left(about, $2), GREATEST(0,
                        (EXTRACT(EPOCH FROM clock_timestamp() - seen_at) * 1000000)::int8)
                    FROM ibauth_members WHERE identity = $1 AND expires_at > clock_timestamp()
                    ORDER BY member COLLATE \"C\" LIMIT $3",
                    &[
                        (&identity, Type::TEXT),
                        (&max_about, Type::INT4),
                        (&MAX_MEMBERS, Type::INT8),
                    ],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    let id = inner.col::<String>(row, 0, "ibauth_members.member")?;
                    Ok(Member {
                        id: inner.name(id, "member")?,
                        leader: inner.col(row, 1, "ibauth_members.leader")?,
                        about: inner.col(row, 2, "ibauth_members.about")?,
                        seen_ago: duration_from_micros(inner.col(
                            row,
                            3,
                            "ibauth_members.seen_at",
                        )?),
                    })
                })
                .collect()
        })
    }

    fn pace<'a>(&'a self, account: &'a str) -> CoordFuture<'a, Box<dyn PaceTxn>> {
        Box::pin(async move {
            check_name("account", account)?;
            let inner = &self.inner;
            let action = "pacing";
            let conn = inner.conn(action).await?;
            let max = MAX_DOC_LEN as i32;
            let client = conn.client();
            let insert_params: [Param<'_>; 1] = [(&account, Type::TEXT)];
            let select_params: [Param<'_>; 2] = [(&account, Type::TEXT), (&max, Type::INT4)];
            // Sent together (one round trip); the row lock is held until commit or drop.
            let begun = futures_util::future::try_join3(
                client.batch_execute("BEGIN"),
                client.query_typed(
                    "INSERT INTO ibauth_pacing (account) VALUES ($1)
                    ON CONFLICT (account) DO NOTHING",
                    &insert_params,
                ),
                client.query_typed(
                    "SELECT CASE WHEN octet_length(doc) <= $2 THEN doc END, octet_length(doc)
                    FROM ibauth_pacing WHERE account = $1 FOR UPDATE",
                    &select_params,
                ),
            );
            // Waiting for another process's transaction is bounded by lock_timeout.
            let limit = inner.query_timeout + inner.pace_wait;
            let rows = match tokio::time::timeout(limit, begun).await {
                Ok(Ok(((), _, rows))) => rows,
                // Dropping `conn` closes it: the server rolls back.
                Ok(Err(e)) => {
                    if e.as_db_error().is_none() {
                        inner.pool.drain_idle();
                    }
                    return Err(inner.fail(action, &e));
                }
                Err(_) => {
                    return Err(inner.unavailable(action, format!("no answer within {limit:?}")));
                }
            };
            let row = rows
                .first()
                .ok_or_else(|| inner.corrupt("the pacing row vanished".into()))?;
            let current = inner.bounded_doc(row, 0, "the pacing document")?;
            Ok(Box::new(PgPace {
                conn: Some(conn),
                inner: self.inner.clone(),
                account: account.to_owned(),
                current,
            }) as Box<dyn PaceTxn>)
        })
    }
}

/// An open pacing transaction: the account's row is locked `FOR UPDATE` on `conn`.
struct PgPace {
    conn: Option<Conn>,
    inner: Arc<Inner>,
    account: String,
    current: Option<Vec<u8>>,
}

impl PaceTxn for PgPace {
    fn current(&self) -> Option<&[u8]> {
        self.current.as_deref()
    }

    fn commit(mut self: Box<Self>, bytes: Vec<u8>) -> CoordFuture<'static, ()> {
        Box::pin(async move {
            if bytes.len() > MAX_DOC_LEN {
                // Dropped: rolled back.
                return Err(CoordError::TooLarge { len: bytes.len() });
            }
            let inner = self.inner.clone();
            let action = "pacing";
            let Some(mut conn) = self.conn.take() else {
                return Err(inner.unavailable(action, "the transaction is over".into()));
            };
            let client = conn.client();
            let params: [Param<'_>; 2] = [(&self.account, Type::TEXT), (&bytes, Type::BYTEA)];
            let written = futures_util::future::join(
                client.query_typed(
                    "UPDATE ibauth_pacing SET doc = $2, updated_at = clock_timestamp()
                    WHERE account = $1",
                    &params,
                ),
                client.batch_execute("COMMIT"),
            );
            match tokio::time::timeout(inner.query_timeout, written).await {
                Ok((Ok(_), Ok(()))) => {
                    conn.keep();
                    Ok(())
                }
                // An update refused leaves an aborted transaction, which COMMIT rolls back.
                Ok((Err(e), _)) | Ok((Ok(_), Err(e))) => {
                    if reusable_after(&e) && !conn.client().is_closed() {
                        conn.keep();
                    } else {
                        inner.pool.drain_idle();
                    }
                    Err(inner.fail(action, &e))
                }
                Err(_) => Err(inner.unavailable(
                    action,
                    format!("no answer within {:?}", inner.query_timeout),
                )),
            }
        })
    }
}

impl Drop for PgPace {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        // Roll back off the caller's path and give the connection back clean; without a
        // runtime (or if the rollback fails) it is closed, which rolls back as well.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let limit = self.inner.query_timeout;
            runtime.spawn(async move {
                let rolled_back =
                    tokio::time::timeout(limit, conn.client().batch_execute("ROLLBACK")).await;
                if matches!(rolled_back, Ok(Ok(()))) {
                    conn.keep();
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_bounded_microseconds() {
        assert_eq!(micros(Duration::from_millis(1500)), 1_500_000);
        assert_eq!(micros(Duration::MAX), MAX_TTL.as_micros() as i64);
        assert_eq!(duration_from_micros(-5), Duration::ZERO);
        let lease = Lease {
            identity: "i".into(),
            holder: "h".into(),
            generation: u64::MAX,
        };
        assert_eq!(db_generation(&lease), -1, "matches no row");
    }

    #[tokio::test]
    async fn a_bad_url_fails_before_connecting() {
        let err = PgCoordinator::connect("http://user:pw-secret@db/x")
            .await
            .expect_err("not a postgres URL");
        assert!(matches!(err, CoordError::Config(_)), "{err}");
        assert!(!err.to_string().contains("pw-secret"));
    }

    #[tokio::test]
    async fn an_unreachable_database_is_unavailable_quickly() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://ib:pw-secret@127.0.0.1:{port}/x");
        let started = std::time::Instant::now();
        let err = PgCoordinator::connect(&url)
            .await
            .expect_err("nothing there");
        assert!(err.is_transient(), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
        let shown = err.to_string();
        assert!(!shown.contains("pw-secret"), "{shown}");
        assert!(
            shown.contains(&format!("postgres://ib@127.0.0.1:{port}/x")),
            "{shown}"
        );
    }
}
