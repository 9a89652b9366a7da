//! Many sessions kept alive by a pool of workers: third-party (OAuth 1.0a) grants for
//! thousands of users, and first-party users each with their own consumer (named consumers,
//! [`Runner::with_consumers`]), each one's next tickle due in a shared [`WorkQueue`].
//!
//! Per identity the store keeps one sealed document — the grant (access token and its
//! encrypted secret) and the live session token with its expiry, about 520 bytes
//! sealed — and one row with its due time. A worker process holds nothing per identity
//! between visits: it claims a batch of due identities with their documents, in one statement
//! on PostgreSQL (a claim is the identity's lease, with a new fencing generation), and for each
//! opens the document, logs in if the live
//! session token is missing or near its end (Diffie-Hellman, then `ssodh/init`), tickles,
//! saves the document if it changed (fenced: refused once the claim is no longer current),
//! and hands the batch back due again after the tickle interval. A worker that dies leaves
//! its claims to run out after the hold; then any other worker claims them.
//!
//! Logins are rate-limited by IBKR, so they go through a limiter: fleet-wide by default (a
//! GCRA schedule kept in the store's pacing document [`LOGIN_PACING_ACCOUNT`], read and
//! written in one [`Coordinator::pace`](ibauth::coord::Coordinator::pace) transaction), or
//! per process. A login that cannot start within half the hold is not waited for: the
//! identity is handed back due again when its slot comes, so a storm of logins (a fleet's
//! first start, IBKR's nightly reset) spreads out instead of running claims out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use ibauth::coord::{
    Acquired, Claimed, CoordError, DEFAULT_CONSUMER, Keyring, KeyringError, Lease, SealedDoc,
    WorkQueue,
};
use ibauth::oauth1a::{HmacAuthorizer, Oauth1aClient, Oauth1aConfig};
use ibauth::secrecy::{ExposeSecret, SecretString};
use ibauth::{BrokerageClient, Clock, HttpClient, SystemClock};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// The pacing document the fleet-wide login limiter keeps its schedule in.
pub const LOGIN_PACING_ACCOUNT: &str = "ibauth-fleet-logins";

/// The longest line of a grants file (bytes).
pub const MAX_GRANT_LINE: usize = 16 * 1024;

/// What can go wrong running or enrolling; each says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    /// The store refused or could not be reached.
    #[error("fleet store: {0}")]
    Store(#[from] CoordError),
    /// A document could not be sealed or opened.
    #[error(
        "sealing a session document: {0} (check the store key file: the same keys on every host)"
    )]
    Seal(#[from] KeyringError),
    /// The grants input is malformed.
    #[error("grants, line {line}: {reason}")]
    Grants {
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the line's content: it holds secrets).
        reason: String,
    },
    /// A setting is out of range.
    #[error("fleet settings: {0}")]
    Settings(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(#[from] ibauth::ConfigError),
}

/// A third-party grant: an access token and its secret as IBKR's portal (or
/// `oauth/access_token`) gives it — encrypted to the consumer's encryption key, base64.
/// `Debug` shows neither.
#[derive(Clone)]
pub struct Grant {
    /// The user it is for, for logs and statistics (not a secret; optional).
    pub user: Option<String>,
    /// The named consumer it belongs to (see [`Runner::with_consumers`]); `None` for the
    /// runner's default consumer.
    pub consumer: Option<String>,
    /// The access token.
    pub access_token: String,
    /// The access token secret (encrypted, base64).
    pub access_token_secret: SecretString,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("user", &self.user)
            .field("consumer", &self.consumer)
            .field("access_token", &"[REDACTED]")
            .field("access_token_secret", &"[REDACTED]")
            .finish()
    }
}

#[derive(Deserialize)]
struct GrantLine {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    consumer: Option<String>,
    #[serde(alias = "access_token")]
    oauth_token: String,
    #[serde(alias = "access_token_secret")]
    oauth_token_secret: String,
}

/// Reads grants as JSON lines, one `{"user", "oauth_token", "oauth_token_secret"}` per line
/// (what the sandbox's `POST /__sandbox/bulk-grants` answers; `access_token` and
/// `access_token_secret` are accepted too), with an optional `"consumer": "NAME"` naming the
/// consumer it belongs to (the runner's default one without it). The secret is as IBKR's portal
/// or `oauth/access_token` gives it, encrypted to the consumer's encryption key (base64) —
/// for first-party consumers too: the `access_token_secret` of their `oauth1a:` section. Blank lines and lines starting with `#` are
/// skipped. Errors name the line, never its content.
///
/// ```
/// let grants = ibauth_fleet::runner::read_grants(
///     "# two users\n{\"user\":\"u0\",\"oauth_token\":\"t0\",\"oauth_token_secret\":\"czA=\"}\n\
///      {\"access_token\":\"t1\",\"access_token_secret\":\"czE=\"}\n",
/// )
/// .unwrap();
/// assert_eq!(grants.len(), 2);
/// assert_eq!(grants[0].user.as_deref(), Some("u0"));
/// assert!(!format!("{grants:?}").contains("t0"));
/// assert!(ibauth_fleet::runner::read_grants("{\"oauth_token\":\"t\"}").is_err());
/// ```
pub fn read_grants(text: &str) -> Result<Vec<Grant>, FleetError> {
    let mut grants = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: String| FleetError::Grants {
            line: line_no,
            reason,
        };
        if line.len() > MAX_GRANT_LINE {
            return Err(bad(format!(
                "longer than {MAX_GRANT_LINE} bytes: one grant per line"
            )));
        }
        let parsed: GrantLine = serde_json::from_str(line).map_err(|e| {
            // serde_json's message names the field or position, not the values.
            bad(format!(
                "not a grant ({}): expected {{\"user\", \"oauth_token\", \"oauth_token_secret\"}}",
                e.classify_message()
            ))
        })?;
        let user = parsed.user.filter(|u| !u.is_empty());
        if let Some(u) = &user
            && (u.len() > 200 || u.chars().any(char::is_control))
        {
            return Err(bad(
                "the user name is over 200 bytes or has control characters".into(),
            ));
        }
        let consumer = parsed.consumer.filter(|c| !c.is_empty());
        if let Some(c) = &consumer
            && !valid_consumer_name(c)
        {
            return Err(bad(
                "the consumer name is over 64 bytes or not letters, digits, '-', '_' or '.'".into(),
            ));
        }
        if parsed.oauth_token.is_empty()
            || parsed.oauth_token.len() > 200
            || !parsed.oauth_token.chars().all(|c| c.is_ascii_graphic())
        {
            return Err(bad(
                "the access token is empty, over 200 bytes or not printable ASCII".into(),
            ));
        }
        if parsed.oauth_token_secret.is_empty() || parsed.oauth_token_secret.len() > 4096 {
            return Err(bad(
                "the access token secret is empty or over 4096 bytes".into()
            ));
        }
        grants.push(Grant {
            user,
            consumer,
            access_token: parsed.oauth_token,
            access_token_secret: SecretString::from(parsed.oauth_token_secret),
        });
    }
    Ok(grants)
}

/// A grant enrolled: its identity and 0 stored, 1 kept, 2 busy.
type EnrolledOne = Result<(String, u8), FleetError>;

/// The name a consumer's identities are queued under: its own, [`DEFAULT_CONSUMER`] for the
/// default one.
fn queue_consumer(consumer: &Option<String>) -> &str {
    consumer.as_deref().unwrap_or(DEFAULT_CONSUMER)
}

/// A consumer's name as `--consumer NAME=…` and grants lines give it: 1 to 64 ASCII letters,
/// digits, `-`, `_` or `.`.
pub fn valid_consumer_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

trait ClassifyMessage {
    fn classify_message(&self) -> &'static str;
}

impl ClassifyMessage for serde_json::Error {
    fn classify_message(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "a field is missing or not a string",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}

/// The identity a grant is kept under: `oauth1a-tp:` and a digest of the consumer key and the
/// access token (neither can be read back from it).
pub fn grant_identity(consumer_key: &str, access_token: &str) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"ibauth-fleet-grant\0");
    ctx.update(consumer_key.as_bytes());
    ctx.update(b"\0");
    ctx.update(access_token.as_bytes());
    let digest = ctx.finish();
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("oauth1a-tp:{hex}")
}

/// One identity's session as stored (sealed). Secrets are wiped when it is dropped.
#[derive(Serialize, Deserialize)]
struct SessionDoc {
    v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    /// The named consumer; `None` for the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    consumer: Option<String>,
    access_token: String,
    access_token_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lst: Option<String>,
    #[serde(default)]
    lst_expires_ms: u64,
}

impl Drop for SessionDoc {
    fn drop(&mut self) {
        self.access_token_secret.zeroize();
        if let Some(lst) = &mut self.lst {
            lst.zeroize();
        }
    }
}

/// Where the login limiter keeps its schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginPacing {
    /// One schedule for the whole fleet, in the store ([`LOGIN_PACING_ACCOUNT`]): the rate
    /// holds however many workers run. Hosts' clocks should agree within a second or so (the
    /// schedule is in wall-clock milliseconds).
    Fleet,
    /// A schedule per process: the fleet logs in at up to the rate times the processes.
    PerProcess,
}

/// How a [`Runner`] works.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Worker tasks in this process (default 2). Each claims and works its own batches.
    pub workers: usize,
    /// Identities a worker claims at once (default 200).
    pub batch: usize,
    /// Identities a worker handles at once within its batch (default 32).
    pub concurrency: usize,
    /// Time between two tickles of one session (default 60 s; IBKR's sessions time out after
    /// about 5 minutes without one).
    pub tickle_every: Duration,
    /// How long a claim lasts (default 30 s): a worker that dies holds its identities this
    /// long, and a batch must be handled within it.
    pub hold: Duration,
    /// How long an idle worker waits before claiming again (default 1 s).
    pub poll: Duration,
    /// When a failed tickle or login is tried again (default 15 s).
    pub retry_after: Duration,
    /// A live session token that expires within this is replaced (default 1 h).
    pub lst_margin: Duration,
    /// Logins per second the limiter allows (default 2).
    pub login_rate: f64,
    /// Logins allowed at once after a quiet spell (default 4).
    pub login_burst: u32,
    /// Where the limiter keeps its schedule (default [`LoginPacing::Fleet`]).
    pub login_pacing: LoginPacing,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            workers: 2,
            batch: 200,
            concurrency: 32,
            tickle_every: Duration::from_secs(60),
            hold: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            retry_after: Duration::from_secs(15),
            lst_margin: Duration::from_secs(3600),
            login_rate: 2.0,
            login_burst: 4,
            login_pacing: LoginPacing::Fleet,
        }
    }
}

impl RunnerOptions {
    fn check(&self) -> Result<(), FleetError> {
        let bad = |what: &str| Err(FleetError::Settings(what.to_owned()));
        if self.workers == 0 || self.workers > 1024 {
            return bad("workers must be 1 to 1024");
        }
        if self.batch == 0 || self.batch > ibauth_postgres_max_claim() {
            return bad("batch must be 1 to 10000");
        }
        if self.concurrency == 0 || self.concurrency > 4096 {
            return bad("concurrency must be 1 to 4096");
        }
        if self.tickle_every < Duration::from_millis(100) || self.hold < Duration::from_millis(500)
        {
            return bad("the tickle interval must be at least 100 ms and the hold at least 500 ms");
        }
        if !(self.login_rate.is_finite() && self.login_rate > 0.0 && self.login_rate <= 10_000.0) {
            return bad("the login rate must be above 0 and at most 10000 per second");
        }
        if self.login_burst == 0 {
            return bad("the login burst must be at least 1");
        }
        Ok(())
    }
}

const fn ibauth_postgres_max_claim() -> usize {
    10_000
}

/// Width of a lateness bucket, and how many (the last one takes everything later).
const LATE_BUCKET_MS: u64 = 10;
const LATE_BUCKETS: usize = 6000;

/// What a runner did so far (this process). See [`Runner::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunnerStats {
    /// Claim calls made.
    pub claims: u64,
    /// Identities claimed.
    pub claimed: u64,
    /// Tickles answered with an authenticated session.
    pub tickles: u64,
    /// Logins (live session token and `ssodh/init`).
    pub logins: u64,
    /// Logins put off because the limiter had no slot within half the hold.
    pub logins_deferred: u64,
    /// Brokerage sessions opened again (`ssodh/init`) with a still-valid live session token,
    /// after a tickle found them gone (IBKR's nightly reset).
    pub reinits: u64,
    /// Tickles or logins that failed (tried again after `retry_after`).
    pub failures: u64,
    /// Saves refused because the claim was no longer current (another worker took over).
    pub fenced: u64,
    /// Identities claimed yet handed back unworked because their document names a consumer
    /// this process lacks — only rows queued under another consumer name than their
    /// document's (queued before the queue recorded consumers), since claims take only this
    /// process's consumers' identities. Each is queued again under its document's consumer,
    /// for a runner that has it; 0 otherwise.
    pub foreign: u64,
    /// Identities handed back unworked, due at once, because their batch had used up too
    /// much of the hold (a slow store or IBKR, or a batch too large for the hold).
    pub deferred: u64,
    /// Calls to the store (claim with the documents, save, renew, hand-back, each pacing
    /// transaction's two).
    pub store_calls: u64,
    /// How late (past due) identities were claimed: median, 99th percentile, most (ms; to 10
    /// ms, 60 s at most).
    pub late_p50_ms: u64,
    /// See `late_p50_ms`.
    pub late_p99_ms: u64,
    /// See `late_p50_ms`.
    pub late_max_ms: u64,
}

#[derive(Default)]
struct Counters {
    claims: AtomicU64,
    claimed: AtomicU64,
    tickles: AtomicU64,
    logins: AtomicU64,
    logins_deferred: AtomicU64,
    reinits: AtomicU64,
    failures: AtomicU64,
    fenced: AtomicU64,
    foreign: AtomicU64,
    deferred: AtomicU64,
    store_calls: AtomicU64,
    late_max_ms: AtomicU64,
    late: Vec<AtomicU64>,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What [`Runner::enroll`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Enrolled {
    /// Documents written (new grants, or grants whose access token changed).
    pub stored: u64,
    /// Grants already stored as they are (kept, with their live session token).
    pub kept: u64,
    /// Grants skipped because a worker holds the identity now (already enrolled).
    pub busy: u64,
    /// Identities newly queued (the others were queued already).
    pub queued: u64,
}

/// What [`Runner::retire`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Retired {
    /// Sessions logged out (best effort), documents removed, out of the queue.
    pub retired: u64,
    /// Grants with no stored document (taken out of the queue all the same).
    pub unknown: u64,
    /// Grants a worker holds right now: left as they are; retire them again after the hold.
    pub busy: u64,
}

/// One consumer this process has: its settings and a client on its REST base.
struct Consumer {
    config: Oauth1aConfig,
    http: HttpClient,
    brokerage: BrokerageClient,
}

impl Consumer {
    fn new(config: Oauth1aConfig) -> Result<Self, FleetError> {
        let http = HttpClient::new(consumer_timeout(&config), config.ca())?;
        let brokerage = BrokerageClient::new(http.clone(), config.rest_base().clone());
        Ok(Self {
            config,
            http,
            brokerage,
        })
    }
}

struct Inner {
    queue: Arc<dyn WorkQueue>,
    keyring: Keyring,
    /// By name; `None` is the default consumer.
    consumers: HashMap<Option<String>, Consumer>,
    /// Their names as the queue has them (the default one's is [`DEFAULT_CONSUMER`]): claims
    /// only take identities of these.
    consumer_names: Vec<String>,
    /// Consumer names already logged as missing here (logged once each).
    missing_logged: Mutex<HashSet<Option<String>>>,
    clock: Arc<dyn Clock>,
    options: RunnerOptions,
    name: String,
    counters: Counters,
    /// The per-process login schedule (GCRA: the theoretical arrival time).
    local_tat: Mutex<Option<Instant>>,
}

/// Keeps many third-party sessions alive from one process; run one in each of several
/// processes to share the work (see the [module docs](self)).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use ibauth::coord::Keyring;
/// use ibauth_fleet::runner::{Runner, RunnerOptions, read_grants};
///
/// let queue = Arc::new(ibauth_postgres::PgCoordinator::connect("postgres://ibauth@db/ibauth").await?);
/// let keyring = Keyring::from_env(None)?; // IBAUTH_STORE_KEY_FILE or IBAUTH_STORE_KEY
/// // The consumer: its keys, DH group and REST URL (the access token is filled per grant).
/// let consumer = ibauth::oauth1a::config::load_third_party(None)?.template().clone();
/// let runner = Runner::new(queue, keyring, consumer, RunnerOptions::default())?;
/// runner.enroll(&read_grants(&std::fs::read_to_string("grants.jsonl")?)?).await?;
/// runner.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
/// println!("{:?}", runner.stats());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Runner {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("store", &self.inner.queue.describe())
            .field("name", &self.inner.name)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

enum Tickled {
    Authenticated,
    /// Answered, but the brokerage session is gone.
    NotAuthenticated,
    /// The token was refused (or there is none).
    Refused,
}

enum Outcome {
    /// Hand it back, due after this.
    Again(Duration),
    /// The claim is no longer ours: leave it.
    Lost,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Runner {
    /// A runner on `queue` (its documents sealed with `keyring`) for the third-party consumer
    /// `consumer` (keys, DH group, REST URL, timeout; its access token is not used).
    pub fn new(
        queue: Arc<dyn WorkQueue>,
        keyring: Keyring,
        consumer: Oauth1aConfig,
        options: RunnerOptions,
    ) -> Result<Self, FleetError> {
        Self::with_consumers(queue, keyring, consumer, Vec::new(), options)
    }

    /// A runner with named consumers besides the default one: first-party consumers (each
    /// user's own consumer key, keys, DH group and realm, as ibind users have) or other
    /// third-party ones. A grant names its consumer ([`Grant::consumer`]); the keys stay in
    /// this process, the store only records the name, in the document and in the queue: this
    /// runner claims only identities of its consumers, and leaves the others to runners that
    /// have them (see [`RunnerStats::foreign`] for rows queued before the queue recorded it).
    pub fn with_consumers(
        queue: Arc<dyn WorkQueue>,
        keyring: Keyring,
        default: Oauth1aConfig,
        named: Vec<(String, Oauth1aConfig)>,
        options: RunnerOptions,
    ) -> Result<Self, FleetError> {
        options.check()?;
        let mut consumers = HashMap::new();
        let mut keys = HashSet::new();
        keys.insert(default.consumer_key().to_owned());
        consumers.insert(None, Consumer::new(default)?);
        for (name, config) in named {
            if !valid_consumer_name(&name) {
                return Err(FleetError::Settings(format!(
                    "consumer name {name:?}: 1 to 64 letters, digits, '-', '_' or '.'"
                )));
            }
            if !keys.insert(config.consumer_key().to_owned()) {
                return Err(FleetError::Settings(format!(
                    "consumer {name}: its consumer key is another consumer's too (one name per consumer key)"
                )));
            }
            if consumers
                .insert(Some(name.clone()), Consumer::new(config)?)
                .is_some()
            {
                return Err(FleetError::Settings(format!(
                    "consumer {name} is given twice"
                )));
            }
        }
        let counters = Counters {
            late: (0..LATE_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            ..Counters::default()
        };
        Ok(Self {
            inner: Arc::new(Inner {
                queue,
                keyring,
                consumer_names: consumers
                    .keys()
                    .map(|c| queue_consumer(c).to_owned())
                    .collect(),
                consumers,
                missing_logged: Mutex::new(HashSet::new()),
                clock: Arc::new(SystemClock),
                options,
                name: ibauth::coord::holder_name(),
                counters,
                local_tat: Mutex::new(None),
            }),
        })
    }

    /// This process's name in the store (claims are held as `NAME/wN`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Stores each grant's document (sealed) and queues its identity, due now. A grant stored
    /// already with the same access token is kept as it is (with its live session token);
    /// one a worker holds right now is skipped. Returns the counts.
    /// Every consumer the grants name must be one of this process's (checked before anything
    /// is stored).
    pub async fn enroll(&self, grants: &[Grant]) -> Result<Enrolled, FleetError> {
        let inner = &self.inner;
        // Every grant's consumer first: nothing is stored unless all are known here.
        for grant in grants {
            self.identity(grant)?;
        }
        let holder = format!("{}/enroll", inner.name);
        let results: Vec<(&str, EnrolledOne)> = futures_util::stream::iter(grants.iter())
            .map(|grant| {
                let holder = holder.clone();
                async move {
                    (
                        queue_consumer(&grant.consumer),
                        self.enroll_one(grant, &holder).await,
                    )
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let mut out = Enrolled::default();
        // Queued under their consumer's name, so only runners that have it claim them.
        let mut ids: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (consumer, r) in results {
            let (id, what) = r?;
            match what {
                0 => out.stored += 1,
                1 => out.kept += 1,
                _ => out.busy += 1,
            }
            ids.entry(consumer).or_default().push(id);
        }
        for (consumer, ids) in &ids {
            out.queued += inner.queue.enroll(ids, consumer, Duration::ZERO).await?;
        }
        tracing::info!(
            stored = out.stored,
            kept = out.kept,
            busy = out.busy,
            queued = out.queued,
            "grants enrolled"
        );
        Ok(out)
    }

    /// 0 stored, 1 kept, 2 busy.
    async fn enroll_one(&self, grant: &Grant, holder: &str) -> EnrolledOne {
        let inner = &self.inner;
        let id = self.identity(grant)?;
        let lease = match inner
            .queue
            .acquire(&id, holder, Duration::from_secs(30))
            .await?
        {
            Acquired::Granted(lease) => lease,
            Acquired::Held(_) => return Ok((id, 2)),
        };
        let result = async {
            if let Some(sealed) = inner.queue.load(&id).await? {
                let same = inner
                    .keyring
                    .open(&id, &sealed.key_id, &sealed.bytes)
                    .ok()
                    .and_then(|plain| serde_json::from_slice::<SessionDoc>(&plain).ok())
                    .is_some_and(|doc| {
                        doc.access_token_secret == *grant.access_token_secret.expose_secret()
                            && doc.consumer == grant.consumer
                    });
                if same {
                    return Ok(1);
                }
            }
            let doc = SessionDoc {
                v: 1,
                user: grant.user.clone(),
                consumer: grant.consumer.clone(),
                access_token: grant.access_token.clone(),
                access_token_secret: grant.access_token_secret.expose_secret().to_owned(),
                lst: None,
                lst_expires_ms: 0,
            };
            self.save(&lease, &doc).await?;
            Ok::<u8, FleetError>(0)
        }
        .await;
        // Best effort: an unreleased lease just runs out.
        let _ = inner.queue.release(&lease).await;
        Ok((id, result?))
    }

    /// Takes each grant out: no longer queued, its session logged out at IBKR (best effort)
    /// and its document removed. A grant a worker holds right now is left (counted as busy):
    /// run it again after the hold. Returns how many were retired.
    pub async fn retire(&self, grants: &[Grant]) -> Result<Retired, FleetError> {
        let inner = &self.inner;
        for grant in grants {
            self.identity(grant)?;
        }
        let holder = format!("{}/retire", inner.name);
        let mut out = Retired::default();
        for grant in grants {
            let id = self.identity(grant)?;
            let lease = match inner
                .queue
                .acquire(&id, &holder, Duration::from_secs(30))
                .await?
            {
                Acquired::Granted(lease) => lease,
                Acquired::Held(_) => {
                    out.busy += 1;
                    continue;
                }
            };
            let result = async {
                // Out of the queue first: no worker claims it again.
                inner.queue.retire(&id).await?;
                let Some(sealed) = inner.queue.load(&id).await? else {
                    return Ok::<bool, FleetError>(false);
                };
                if let Some(doc) = inner
                    .keyring
                    .open(&id, &sealed.key_id, &sealed.bytes)
                    .ok()
                    .and_then(|plain| serde_json::from_slice::<SessionDoc>(&plain).ok())
                    && let Some(consumer) = inner.consumers.get(&doc.consumer)
                    && let Some(auth) = self.authorizer(consumer, &doc)
                    && let Err(e) = consumer.brokerage.logout(&auth).await
                {
                    tracing::warn!(identity = %id, "logging the session out failed (it ends by itself): {e}");
                }
                inner.queue.remove(&lease).await?;
                Ok(true)
            }
            .await;
            let _ = inner.queue.release(&lease).await;
            if result? {
                out.retired += 1;
            } else {
                out.unknown += 1;
            }
        }
        tracing::info!(
            retired = out.retired,
            unknown = out.unknown,
            busy = out.busy,
            "grants retired"
        );
        Ok(out)
    }

    /// The identity `grant` is kept under: by its consumer's key, so the same user (or token)
    /// under two consumers is two identities.
    fn identity(&self, grant: &Grant) -> Result<String, FleetError> {
        let Some(consumer) = self.inner.consumers.get(&grant.consumer) else {
            let name = grant.consumer.as_deref().unwrap_or_default();
            return Err(FleetError::Settings(format!(
                "a grant names consumer {name}, which this process does not have: pass --consumer {name}=CONFIG"
            )));
        };
        Ok(grant_identity(
            consumer.config.consumer_key(),
            &grant.access_token,
        ))
    }

    async fn save(&self, lease: &Lease, doc: &SessionDoc) -> Result<(), FleetError> {
        let inner = &self.inner;
        let plain = zeroize::Zeroizing::new(serde_json::to_vec(doc).map_err(|e| {
            FleetError::Settings(format!("cannot serialise a session document: {e}"))
        })?);
        let sealed = inner.keyring.seal(&lease.identity, &plain)?;
        bump(&inner.counters.store_calls);
        inner.queue.store(lease, &sealed).await?;
        Ok(())
    }

    /// What this process did so far.
    pub fn stats(&self) -> RunnerStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counts: Vec<u64> = c.late.iter().map(get).collect();
        let total: u64 = counts.iter().sum();
        let pct = |p: f64| -> u64 {
            if total == 0 {
                return 0;
            }
            let want = ((total as f64) * p).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= want {
                    return (i as u64 + 1) * LATE_BUCKET_MS;
                }
            }
            LATE_BUCKETS as u64 * LATE_BUCKET_MS
        };
        RunnerStats {
            claims: get(&c.claims),
            claimed: get(&c.claimed),
            tickles: get(&c.tickles),
            logins: get(&c.logins),
            logins_deferred: get(&c.logins_deferred),
            reinits: get(&c.reinits),
            failures: get(&c.failures),
            fenced: get(&c.fenced),
            foreign: get(&c.foreign),
            deferred: get(&c.deferred),
            store_calls: get(&c.store_calls),
            late_p50_ms: pct(0.5),
            late_p99_ms: pct(0.99),
            late_max_ms: get(&c.late_max_ms),
        }
    }

    /// Runs the workers until `stop` completes; each then finishes and hands back its batch.
    /// Store outages and damaged rows are waited out (logged, tried again after `poll`, at
    /// least a second); only a refusal to use the store at all (configuration, schema) ends
    /// the run with an error.
    pub async fn run(&self, stop: impl Future<Output = ()>) -> Result<(), FleetError> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut workers = tokio::task::JoinSet::new();
        for n in 0..self.inner.options.workers {
            let me = self.clone();
            let rx = rx.clone();
            workers.spawn(async move { me.worker(n, rx).await });
        }
        tracing::info!(
            runner = %self.inner.name,
            workers = self.inner.options.workers,
            store = %self.inner.queue.describe(),
            "fleet runner started"
        );
        tokio::pin!(stop);
        let mut failed = None;
        loop {
            tokio::select! {
                () = &mut stop => break,
                done = workers.join_next() => match done {
                    Some(Ok(Err(e))) => { failed = Some(e); break; }
                    Some(_) => {}
                    None => break,
                },
            }
        }
        let _ = tx.send(true);
        while let Some(done) = workers.join_next().await {
            if let Ok(Err(e)) = done {
                failed.get_or_insert(e);
            }
        }
        tracing::info!(runner = %self.inner.name, stats = ?self.stats(), "fleet runner stopped");
        failed.map_or(Ok(()), Err)
    }

    async fn worker(
        &self,
        n: usize,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), FleetError> {
        let inner = &self.inner;
        let me = format!("{}/w{n}", inner.name);
        let opts = &inner.options;
        while !*stop.borrow() {
            bump(&inner.counters.store_calls);
            bump(&inner.counters.claims);
            let claimed = match inner
                .queue
                .claim_with_docs(&me, &inner.consumer_names, opts.batch, opts.hold)
                .await
            {
                Ok(claimed) => claimed,
                // A store that refuses us (credentials, privileges, a newer schema) ends the
                // run; anything else — an outage, a damaged row — is waited out.
                Err(e @ (CoordError::Config(_) | CoordError::Schema { .. })) => {
                    return Err(e.into());
                }
                Err(e) => {
                    tracing::warn!(worker = %me, "claiming due sessions failed, trying again: {e}");
                    let _ =
                        tokio::time::timeout(opts.poll.max(Duration::from_secs(1)), stop.changed())
                            .await;
                    continue;
                }
            };
            let full = claimed.len() == opts.batch;
            if !claimed.is_empty() {
                self.work(claimed).await;
            }
            if !full {
                let _ = tokio::time::timeout(opts.poll, stop.changed()).await;
            }
        }
        Ok(())
    }

    async fn work(&self, claimed: Vec<(Claimed, Option<SealedDoc>)>) {
        let inner = &self.inner;
        let c = &inner.counters;
        c.claimed.fetch_add(claimed.len() as u64, Ordering::Relaxed);
        for (one, _) in &claimed {
            let ms = one.late.as_millis() as u64;
            let bucket = ((ms / LATE_BUCKET_MS) as usize).min(LATE_BUCKETS - 1);
            bump(&c.late[bucket]);
            c.late_max_ms.fetch_max(ms, Ordering::Relaxed);
        }
        // Work starts only well inside the hold (a login by half of it, a tickle by three
        // quarters), so it ends before the claim runs out; the rest is handed back due now.
        let claimed_at = Instant::now();
        let done: Vec<(Lease, Duration)> = futures_util::stream::iter(claimed)
            .map(|(one, doc)| async move {
                match self.handle(&one.lease, doc, claimed_at).await {
                    Outcome::Again(wait) => Some((one.lease, wait)),
                    Outcome::Lost => None,
                }
            })
            .buffer_unordered(inner.options.concurrency)
            .filter_map(std::future::ready)
            .collect()
            .await;
        bump(&c.store_calls);
        match inner.queue.reschedule(&done).await {
            Ok(n) if (n as usize) < done.len() => {
                tracing::warn!(
                    handed_back = n,
                    of = done.len(),
                    "some claims ran out before the batch was handed back: raise the hold or lower the batch"
                );
            }
            Ok(_) => {}
            // The claims run out after the hold; another worker picks them up.
            Err(e) => tracing::warn!("handing back {} sessions failed: {e}", done.len()),
        }
    }

    async fn handle(
        &self,
        lease: &Lease,
        sealed: Option<SealedDoc>,
        claimed_at: Instant,
    ) -> Outcome {
        let inner = &self.inner;
        let c = &inner.counters;
        let opts = &inner.options;
        let id = &lease.identity;
        let deadline = claimed_at + opts.hold / 2;
        if Instant::now() > claimed_at + opts.hold * 3 / 4 {
            bump(&c.deferred);
            return Outcome::Again(Duration::ZERO);
        }
        let Some(sealed) = sealed else {
            tracing::warn!(identity = %id, "queued without a session document: enroll its grant again");
            bump(&c.failures);
            return Outcome::Again(opts.retry_after.max(Duration::from_secs(600)));
        };
        let doc = inner
            .keyring
            .open(id, &sealed.key_id, &sealed.bytes)
            .map_err(|e| e.to_string())
            .and_then(|plain| {
                serde_json::from_slice::<SessionDoc>(&plain)
                    .map_err(|_| "the document is not a fleet session".to_owned())
            });
        let mut doc = match doc {
            Ok(doc) => doc,
            Err(why) => {
                tracing::warn!(identity = %id, "cannot open the session document ({why}): check the store keys, or enroll the grant again");
                bump(&c.failures);
                return Outcome::Again(opts.retry_after.max(Duration::from_secs(600)));
            }
        };
        let Some(consumer) = inner.consumers.get(&doc.consumer) else {
            // Claims only take our consumers' identities, so this is a row queued under
            // another name than its document's (queued before the queue recorded consumers):
            // it is queued again under its document's and handed back due at once, for a
            // runner that has that consumer (due after `poll` if that fails).
            bump(&c.foreign);
            let wait = match inner
                .queue
                .enroll(
                    std::slice::from_ref(id),
                    queue_consumer(&doc.consumer),
                    Duration::ZERO,
                )
                .await
            {
                Ok(_) => Duration::ZERO,
                Err(e) => {
                    tracing::warn!(identity = %id, "queueing a session under its consumer failed: {e}");
                    opts.poll
                }
            };
            let first = inner
                .missing_logged
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(doc.consumer.clone());
            if first {
                tracing::warn!(
                    consumer = doc.consumer.as_deref().unwrap_or(""),
                    "sessions of a consumer this process does not have are handed back for a runner that has it (pass --consumer NAME=CONFIG here to keep them too); logged once"
                );
            }
            return Outcome::Again(wait);
        };
        let fresh = doc.lst.is_some()
            && doc.lst_expires_ms > unix_ms().saturating_add(opts.lst_margin.as_millis() as u64);
        if fresh {
            match self.tickle(consumer, &doc).await {
                Ok(Tickled::Authenticated) => {
                    bump(&c.tickles);
                    return Outcome::Again(opts.tickle_every);
                }
                // The brokerage session ended (IBKR's nightly reset, a competing login) but
                // the token is good: `ssodh/init` again, no new login.
                Ok(Tickled::NotAuthenticated) => match self.reinit(consumer, &doc).await {
                    Ok(true) => {
                        bump(&c.reinits);
                        bump(&c.tickles);
                        return Outcome::Again(opts.tickle_every);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(identity = %id, user = doc.user.as_deref().unwrap_or(""), "ssodh/init failed: {e}");
                        bump(&c.failures);
                        return Outcome::Again(retry_wait(&e, opts.retry_after));
                    }
                },
                // The token was refused: log in again below.
                Ok(Tickled::Refused) => {}
                Err(e) => {
                    tracing::warn!(identity = %id, user = doc.user.as_deref().unwrap_or(""), "tickle failed: {e}");
                    bump(&c.failures);
                    return Outcome::Again(retry_wait(&e, opts.retry_after));
                }
            }
        }
        // A login: only with a slot from the limiter by the deadline.
        let Some(max_wait) = deadline.checked_duration_since(Instant::now()) else {
            bump(&c.deferred);
            return Outcome::Again(Duration::ZERO);
        };
        let wait = match self.login_slot(max_wait).await {
            Ok(Some(wait)) => wait,
            Ok(None) => {
                bump(&c.logins_deferred);
                return Outcome::Again(opts.poll.max(max_wait).min(opts.tickle_every));
            }
            Err(e) => {
                tracing::warn!("the login limiter's store failed: {e}");
                bump(&c.failures);
                return Outcome::Again(opts.retry_after);
            }
        };
        tokio::time::sleep(wait).await;
        // A login takes round trips and IBKR's time: the claim is renewed for a whole hold
        // first, so one that started late in the batch still ends inside it.
        bump(&c.store_calls);
        match inner.queue.renew(lease, opts.hold).await {
            Ok(()) => {}
            Err(CoordError::Fenced { .. }) => {
                bump(&c.fenced);
                return Outcome::Lost;
            }
            Err(e) => {
                tracing::warn!(identity = %id, "renewing the claim before a login failed: {e}");
                bump(&c.failures);
                return Outcome::Again(opts.retry_after);
            }
        }
        match self.login(consumer, &mut doc).await {
            Ok(()) => {
                bump(&c.logins);
                bump(&c.tickles);
            }
            Err(e) => {
                tracing::warn!(identity = %id, user = doc.user.as_deref().unwrap_or(""), "login failed: {e}");
                bump(&c.failures);
                return Outcome::Again(retry_wait(&e, opts.retry_after));
            }
        }
        match self.save(lease, &doc).await {
            Ok(()) => Outcome::Again(opts.tickle_every),
            Err(FleetError::Store(CoordError::Fenced { .. })) => {
                tracing::warn!(identity = %id, "the claim ran out during the login: another worker has it now");
                bump(&c.fenced);
                Outcome::Lost
            }
            Err(e) => {
                tracing::warn!(identity = %id, "saving the new session failed: {e}");
                bump(&c.failures);
                Outcome::Again(opts.retry_after)
            }
        }
    }

    fn authorizer(&self, consumer: &Consumer, doc: &SessionDoc) -> Option<HmacAuthorizer> {
        let inner = &self.inner;
        let lst = SecretString::from(doc.lst.clone()?);
        HmacAuthorizer::from_token(
            &consumer.config,
            &doc.access_token,
            &lst,
            inner.clock.clone(),
        )
    }

    async fn tickle(
        &self,
        consumer: &Consumer,
        doc: &SessionDoc,
    ) -> Result<Tickled, ibauth::Error> {
        let Some(auth) = self.authorizer(consumer, doc) else {
            return Ok(Tickled::Refused);
        };
        match consumer.brokerage.tickle(&auth).await {
            Ok(t) if t.auth_status().authenticated => Ok(Tickled::Authenticated),
            Ok(_) => Ok(Tickled::NotAuthenticated),
            Err(e) if e.status() == Some(401) => Ok(Tickled::Refused),
            Err(e) => Err(e),
        }
    }

    /// `ssodh/init` with the stored token: `Ok(false)` when it is refused (a login is needed).
    async fn reinit(&self, consumer: &Consumer, doc: &SessionDoc) -> Result<bool, ibauth::Error> {
        let Some(auth) = self.authorizer(consumer, doc) else {
            return Ok(false);
        };
        let compete = consumer.config.competes();
        match consumer
            .brokerage
            .init(&auth, consumer.config.publishes(), compete)
            .await
        {
            Ok(status) => Ok(status.authenticated),
            Err(e) if e.status() == Some(401) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn login(&self, consumer: &Consumer, doc: &mut SessionDoc) -> Result<(), ibauth::Error> {
        let inner = &self.inner;
        // The secret is stored as given (encrypted to this consumer's key), first or third
        // party alike: the client decrypts it.
        let config = consumer.config.clone().with_access_token(
            &doc.access_token,
            SecretString::from(doc.access_token_secret.clone()),
        );
        let mut client =
            Oauth1aClient::with_http(config, inner.clock.clone(), consumer.http.clone())?;
        let connected = client.connect().await?;
        if !connected.status.authenticated {
            return Err(ibauth::Error::Login(
                "ssodh/init answered not authenticated: the grant may be revoked; ask the user to authorise again".into(),
            ));
        }
        let Some(lst) = client.live_session_token() else {
            return Err(ibauth::Error::Login(
                "no live session token after the login".into(),
            ));
        };
        if let Some(old) = &mut doc.lst {
            old.zeroize();
        }
        doc.lst = Some(lst.token().expose_secret().to_owned());
        doc.lst_expires_ms = lst.expires_at_ms;
        let tickled = client.tickle().await?;
        if !tickled.auth_status().authenticated {
            return Err(ibauth::Error::Login(
                "the first tickle after the login was not authenticated".into(),
            ));
        }
        Ok(())
    }

    /// A slot for a login: how long to wait for it, or `None` when it would be later than
    /// `max_wait` (nothing reserved then).
    async fn login_slot(&self, max_wait: Duration) -> Result<Option<Duration>, CoordError> {
        let inner = &self.inner;
        let opts = &inner.options;
        let interval_ms = (1000.0 / opts.login_rate).max(0.001);
        let tolerance_ms = interval_ms * f64::from(opts.login_burst.saturating_sub(1));
        match opts.login_pacing {
            LoginPacing::PerProcess => {
                let now = Instant::now();
                let mut tat = inner.local_tat.lock().unwrap_or_else(|p| p.into_inner());
                let at = tat.unwrap_or(now).max(now);
                let start = at
                    .checked_sub(Duration::from_secs_f64(tolerance_ms / 1000.0))
                    .unwrap_or(now)
                    .max(now);
                let wait = start - now;
                if wait > max_wait {
                    return Ok(None);
                }
                *tat = Some(at + Duration::from_secs_f64(interval_ms / 1000.0));
                Ok(Some(wait))
            }
            LoginPacing::Fleet => {
                inner.counters.store_calls.fetch_add(2, Ordering::Relaxed);
                let txn = inner.queue.pace(LOGIN_PACING_ACCOUNT).await?;
                let now = unix_ms() as f64;
                let tat = txn
                    .current()
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(|t| t.trim().parse::<f64>().ok())
                    .filter(|t| t.is_finite())
                    .unwrap_or(0.0)
                    .max(now);
                let wait_ms = (tat - tolerance_ms - now).max(0.0);
                if wait_ms > max_wait.as_millis() as f64 {
                    return Ok(None); // dropped: nothing changes
                }
                txn.commit(format!("{:.3}", tat + interval_ms).into_bytes())
                    .await?;
                Ok(Some(Duration::from_secs_f64(wait_ms / 1000.0)))
            }
        }
    }
}

/// When to try again after `e`: `retry_after`, or longer if IBKR said so (a 429's
/// `Retry-After`: its penalty box is per address, so hammering it again helps no one).
fn retry_wait(e: &ibauth::Error, retry_after: Duration) -> Duration {
    e.retry_after()
        .map_or(retry_after, |asked| asked.max(retry_after))
}

fn consumer_timeout(consumer: &Oauth1aConfig) -> Duration {
    consumer.timeout_in_use()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_hide_the_token_and_differ_per_consumer() {
        let a = grant_identity("CONSUMER", "token-abc");
        assert!(a.starts_with("oauth1a-tp:") && a.len() == 11 + 32, "{a}");
        assert!(!a.contains("token"));
        assert_ne!(a, grant_identity("OTHER", "token-abc"));
        assert_eq!(a, grant_identity("CONSUMER", "token-abc"));
    }

    #[test]
    fn grant_errors_name_the_line_not_the_secret() {
        let text = "{\"oauth_token\":\"t\",\"oauth_token_secret\":\"s3cr3t\"}\n{\"oauth_token\":\"x y\",\"oauth_token_secret\":\"s3cr3t\"}";
        let err = read_grants(text).expect_err("a space in a token");
        let shown = err.to_string();
        assert!(shown.contains("line 2"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let err = read_grants("{\"oauth_token\":\"t\",\"oauth_token_secret\":").expect_err("cut");
        assert!(err.to_string().contains("line 1"));
        let long = format!(
            "{{\"oauth_token\":\"t\",\"oauth_token_secret\":\"{}\"}}",
            "a".repeat(MAX_GRANT_LINE)
        );
        assert!(read_grants(&long).is_err());
    }

    #[test]
    fn a_grant_may_name_its_consumer() {
        let grants = read_grants(
            "{\"user\":\"u\",\"consumer\":\"alice-1\",\"oauth_token\":\"t\",\"oauth_token_secret\":\"czA=\"}\n\
             {\"user\":\"u\",\"consumer\":\"\",\"oauth_token\":\"t\",\"oauth_token_secret\":\"czA=\"}",
        )
        .expect("grants");
        assert_eq!(grants[0].consumer.as_deref(), Some("alice-1"));
        assert_eq!(grants[1].consumer, None, "empty is the default consumer");
        let err = read_grants(
            "{\"consumer\":\"a b\",\"oauth_token\":\"t\",\"oauth_token_secret\":\"czA=\"}",
        )
        .expect_err("a space in a consumer name");
        assert!(err.to_string().contains("consumer name"), "{err}");
    }

    #[test]
    fn a_document_round_trips_and_wipes_on_drop() {
        let doc = SessionDoc {
            v: 1,
            user: Some("u".into()),
            consumer: Some("b".into()),
            access_token: "t".into(),
            access_token_secret: "s".into(),
            lst: Some("bHN0".into()),
            lst_expires_ms: 5,
        };
        let bytes = serde_json::to_vec(&doc).unwrap();
        let back: SessionDoc = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.lst.as_deref(), Some("bHN0"));
        assert!(bytes.len() < 200, "{}", bytes.len());
    }

    fn runner(pacing: LoginPacing) -> Runner {
        let key = ibauth::SigningKey::generate().expect("key");
        let decrypt = ibauth::DecryptionKey::from_pem(&key.to_pkcs8_pem()).expect("key");
        let group = ibauth::oauth1a::DhGroup::from_hex(ibauth::oauth1a::RFC3526_PRIME_2048, 2)
            .expect("group");
        let consumer = Oauth1aConfig::new(
            "CONSUMER1",
            "",
            SecretString::from(String::new()),
            key,
            decrypt,
            group,
        );
        let keyring =
            Keyring::new(vec![ibauth::coord::StoreKey::generate().expect("key")]).expect("keyring");
        let options = RunnerOptions {
            login_rate: 10.0,
            login_burst: 3,
            login_pacing: pacing,
            ..RunnerOptions::default()
        };
        Runner::new(
            Arc::new(ibauth::coord::MemoryCoordinator::new()),
            keyring,
            consumer,
            options,
        )
        .expect("runner")
    }

    #[test]
    fn one_token_under_two_consumers_is_two_identities_and_names_are_checked() {
        let base = runner(LoginPacing::PerProcess);
        let other = |key: &str| {
            let sk = ibauth::SigningKey::generate().expect("key");
            let decrypt = ibauth::DecryptionKey::from_pem(&sk.to_pkcs8_pem()).expect("key");
            let group = ibauth::oauth1a::DhGroup::from_hex(ibauth::oauth1a::RFC3526_PRIME_2048, 2)
                .expect("group");
            Oauth1aConfig::new(
                key,
                "",
                SecretString::from(String::new()),
                sk,
                decrypt,
                group,
            )
        };
        let default = base.inner.consumers[&None].config.clone();
        let make = |named: Vec<(String, Oauth1aConfig)>| {
            Runner::with_consumers(
                base.inner.queue.clone(),
                base.inner.keyring.clone(),
                default.clone(),
                named,
                RunnerOptions::default(),
            )
        };
        let r = make(vec![("alice".into(), other("ALICECK"))]).expect("runner");
        let grant = |consumer: Option<&str>| Grant {
            user: Some("same-user".into()),
            consumer: consumer.map(str::to_owned),
            access_token: "token".into(),
            access_token_secret: SecretString::from("czA=".to_owned()),
        };
        let a = r.identity(&grant(None)).expect("default");
        let b = r.identity(&grant(Some("alice"))).expect("alice");
        assert_ne!(a, b);
        assert!(r.identity(&grant(Some("bob"))).is_err());
        assert!(
            make(vec![("a b".into(), other("X"))]).is_err(),
            "a bad name"
        );
        assert!(
            make(vec![("x".into(), other("CONSUMER1"))]).is_err(),
            "the default's consumer key again"
        );
    }

    #[tokio::test]
    async fn the_login_limiter_allows_a_burst_then_spaces_logins() {
        for pacing in [LoginPacing::PerProcess, LoginPacing::Fleet] {
            let r = runner(pacing);
            let long = Duration::from_secs(10);
            let mut waits = Vec::new();
            for _ in 0..5 {
                waits.push(r.login_slot(long).await.expect("slot").expect("granted"));
            }
            let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
            // 10/s with a burst of 3: three at once, then one per 100 ms.
            assert!(ms[..3].iter().all(|&w| w <= 5), "{pacing:?}: {ms:?}");
            assert!((90..=110).contains(&ms[3]), "{pacing:?}: {ms:?}");
            assert!((190..=210).contains(&ms[4]), "{pacing:?}: {ms:?}");
            // A slot later than the caller can wait is refused, and nothing is reserved.
            assert_eq!(
                r.login_slot(Duration::from_millis(150))
                    .await
                    .expect("slot"),
                None,
                "{pacing:?}"
            );
            let next = r.login_slot(long).await.expect("slot").expect("granted");
            assert!(
                (280..=310).contains(&next.as_millis()),
                "{pacing:?}: {next:?}"
            );
        }
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        let bad = [
            RunnerOptions {
                workers: 0,
                ..Default::default()
            },
            RunnerOptions {
                batch: 0,
                ..Default::default()
            },
            RunnerOptions {
                login_rate: 0.0,
                ..Default::default()
            },
            RunnerOptions {
                login_rate: f64::NAN,
                ..Default::default()
            },
            RunnerOptions {
                hold: Duration::from_millis(10),
                ..Default::default()
            },
        ];
        for options in bad {
            assert!(options.check().is_err(), "{options:?}");
        }
        assert!(RunnerOptions::default().check().is_ok());
    }
}
