//! Pacing: keep a session inside IBKR's published limits by waiting *before* sending.
//!
//! IBKR answers a violation with 429 and may put the whole IP in a 10-minute penalty box, so
//! retrying after the fact is too late. A [`Pacer`] holds the limits ([`PacingRules`]: a global
//! rate per session plus per-endpoint rates and in-flight caps), and every request asks it for
//! its turn first:
//!
//! ```
//! use ibauth::pacing::{Method, Pacer, PacingRules};
//!
//! # async fn run() -> Result<(), ibauth::pacing::Paced> {
//! let pacer = Pacer::new(PacingRules::ibkr());
//! let permit = pacer.acquire(&Method::GET, "/v1/api/portfolio/accounts").await?;
//! // … send the request now, holding `permit` until the response arrives …
//! # let status = 200;
//! if status == 429 {
//!     pacer.pause(&Method::GET, "/v1/api/portfolio/accounts", None);
//! }
//! drop(permit);
//! # Ok(()) }
//! ```
//!
//! **How turns are given.** For a rate limit of `count` per `per`, every half-open window of
//! length `per + margin` holds at most `count` reserved send times (the margin absorbs jitter
//! between our send and IBKR's arrival). A request counts against the global limit and against
//! the best-matching endpoint rule; its send time is the earliest time from now that all its
//! limits allow, reserved at once (callers queue in order, with no thundering herd) and then
//! slept until. A time may go between reservations made earlier, so a request waiting on a slow
//! endpoint (`/portfolio/accounts` at 1/5s) never delays requests that only share the global
//! limit. A wait longer than `max_wait` reserves nothing and fails at once with [`Paced`]. After
//! a 429, [`Pacer::pause`] stops the budget the request counted against. Times are kept in
//! whole milliseconds.
//!
//! **Sharing.** A `Pacer` is a cheap [`Clone`] shared by every task of a session. Processes
//! sharing a session (or a token file) share rate budgets and pauses through a
//! [`PaceLedger`] file; in-flight caps ([`Limit::Concurrent`]) are per process.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod ledger;
mod limit;
mod rules;
mod schedule;
mod settings;

pub use ledger::{LedgerError, PaceLedger};
pub use limit::{Limit, ParseLimitError};
pub use reqwest::Method;
pub use rules::{PacingRules, Rule, SECDEF_MAX_CONIDS};
pub use settings::{EndpointSettings, PacingConfigError, PacingSettings, SettingValue};

use ledger::{Doc, Entry, Locked};
use rules::{Matcher, normalize};
use schedule::{Plan, Spec, Timeline};

/// The longest pause a 429 can cause, and the longest pause read from a ledger; the HTTP layer
/// honours `Retry-After` up to the same hour ([`crate::MAX_RETRY_AFTER`] is this).
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// How long a call waits for another process to release the ledger before pacing in-process
/// only (a holder takes microseconds; one stopped mid-transaction must not stop us).
const LEDGER_PATIENCE: Duration = Duration::from_secs(2);

/// A request that would wait longer than allowed for its turn. Nothing was reserved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "pacing: {request} would wait at least {wait:?} for its turn ({limit} on {bucket}{}), more than max_wait {max_wait:?}; slow down or raise pacing.max_wait",
    if *.paused { ", paused after HTTP 429" } else { "" }
)]
pub struct Paced {
    /// Method and endpoint, such as `GET /portfolio/accounts`.
    pub request: String,
    /// How long it would have waited (for an in-flight cap: how long it did wait).
    pub wait: Duration,
    /// The budget that made it wait: `global` or an endpoint rule such as
    /// `GET /portfolio/accounts`.
    pub bucket: String,
    /// That budget's limit, such as `1/5s`.
    pub limit: String,
    /// The budget is paused after a 429.
    pub paused: bool,
    /// The wait allowed.
    pub max_wait: Duration,
}

/// A request's turn. Send the request right away and hold the permit until its response
/// arrives: dropping it frees the in-flight slot of a [`Limit::Concurrent`] budget.
#[derive(Debug)]
#[must_use = "the permit is the request's turn: send the request while holding it"]
pub struct Permit {
    /// How long the call waited for its turn (for metrics).
    pub waited: Duration,
    /// The reserved send time on the pacer's clock (ms).
    #[cfg_attr(not(test), expect(dead_code, reason = "the tests check turns by it"))]
    at: u64,
    /// In-flight slots, endpoint then global.
    _slots: [Option<OwnedSemaphorePermit>; 2],
}

/// One budget.
#[derive(Debug)]
struct Bucket {
    /// `global`, or the rule's method and path.
    name: String,
    limit: Limit,
    spec: Spec,
    slots: Option<Arc<Semaphore>>,
}

/// Where pacing's time comes from: a monotonic clock in-process; the wall clock with a ledger
/// (processes share its times); a hand-moved clock in tests.
#[derive(Debug, Clone)]
enum PaceClock {
    Monotonic(tokio::time::Instant),
    Wall,
    #[cfg(test)]
    Manual(Arc<ManualClock>),
}

impl PaceClock {
    fn now_ms(&self) -> u64 {
        match self {
            PaceClock::Monotonic(start) => millis(start.elapsed()),
            PaceClock::Wall => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, millis),
            #[cfg(test)]
            PaceClock::Manual(clock) => clock.now.load(std::sync::atomic::Ordering::SeqCst),
        }
    }

    async fn sleep_until(&self, at: u64) {
        let now = self.now_ms();
        if at <= now {
            return;
        }
        let wait = Duration::from_millis(at - now);
        match self {
            PaceClock::Monotonic(start) => match start.checked_add(Duration::from_millis(at)) {
                // Against the start, so the time spent computing is not added to the wait.
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => tokio::time::sleep(wait).await,
            },
            PaceClock::Wall => tokio::time::sleep(wait).await,
            #[cfg(test)]
            PaceClock::Manual(clock) => clock.sleep_until(at).await,
        }
    }
}

/// A clock that moves only when told (tests): sleepers wake when it passes their time.
#[cfg(test)]
#[derive(Debug, Default)]
struct ManualClock {
    now: std::sync::atomic::AtomicU64,
    moved: tokio::sync::Notify,
}

#[cfg(test)]
impl ManualClock {
    fn at(ms: u64) -> Arc<Self> {
        let clock = Arc::new(Self::default());
        clock.now.store(ms, std::sync::atomic::Ordering::SeqCst);
        clock
    }

    fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
        self.moved.notify_waiters();
    }

    async fn sleep_until(&self, at: u64) {
        loop {
            // Registered before the check, so a move in between is not missed.
            let moved = self.moved.notified();
            if self.now.load(std::sync::atomic::Ordering::SeqCst) >= at {
                return;
            }
            moved.await;
        }
    }
}

/// Whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves timelines that are still consistent
    // (every change is a single insert or remove), so carry on with them.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The ledger and the in-process queue to it.
#[derive(Debug)]
struct Shared {
    ledger: Backend,
    /// One transaction at a time from this process, in arrival order (tokio's mutex is fair).
    turn: tokio::sync::Mutex<()>,
}

/// Where the shared budgets live: a file (processes on one machine) or a fleet's store
/// (processes on several).
enum Backend {
    File(PaceLedger),
    Store {
        coord: Arc<dyn crate::coord::Coordinator>,
        account: String,
    },
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::File(ledger) => ledger.fmt(f),
            Backend::Store { coord, .. } => write!(f, "Store({})", coord.describe()),
        }
    }
}

impl Backend {
    fn identity(&self) -> &str {
        match self {
            Backend::File(ledger) => ledger.identity(),
            Backend::Store { account, .. } => account,
        }
    }

    fn describe(&self) -> String {
        match self {
            Backend::File(ledger) => ledger.path().display().to_string(),
            Backend::Store { coord, .. } => coord.describe(),
        }
    }
}

/// The shared document under its lock: the file's, or a store transaction's.
enum LedgerTxn<'a> {
    File(Locked<'a>),
    Store {
        txn: Box<dyn crate::coord::PaceTxn>,
        written: Option<Vec<u8>>,
    },
}

impl LedgerTxn<'_> {
    fn read(&mut self) -> Doc {
        match self {
            LedgerTxn::File(locked) => locked.read(),
            LedgerTxn::Store { txn, .. } => match txn.current() {
                None => Doc::default(),
                Some(bytes) => Doc::parse(bytes).unwrap_or_else(|problem| {
                    tracing::warn!("pacing: the fleet's pacing document is unusable ({problem}); starting it afresh");
                    Doc::default()
                }),
            },
        }
    }

    fn write(&mut self, doc: &Doc) {
        match self {
            LedgerTxn::File(locked) => locked.write(doc),
            LedgerTxn::Store { written, .. } => match serde_json::to_vec(doc) {
                Ok(bytes) => *written = Some(bytes),
                Err(e) => tracing::warn!(error = %e, "pacing: cannot encode the pacing document"),
            },
        }
    }

    /// Ends the transaction: the file's lock goes at once; a store's commit is returned, to be
    /// awaited (nothing that is not `Send` is held across it).
    fn finish(self) -> Option<crate::coord::CoordFuture<'static, ()>> {
        match self {
            LedgerTxn::File(_) => None,
            LedgerTxn::Store {
                txn,
                written: Some(bytes),
            } => Some(txn.commit(bytes)),
            LedgerTxn::Store { written: None, .. } => None,
        }
    }
}

#[derive(Debug)]
struct Inner {
    rules: PacingRules,
    buckets: Vec<Bucket>,
    /// `buckets[i].spec`, contiguous for the planner.
    specs: Vec<Spec>,
    global: Option<usize>,
    matcher: Matcher,
    timelines: Mutex<Vec<Timeline>>,
    clock: PaceClock,
    shared: Option<Shared>,
    /// Latest a time read from the ledger may be, from now (ms); with a ledger, also the
    /// longest a call may wait.
    horizon: u64,
}

/// Paces requests before they are sent; see the [module docs](self). Cheap to clone: clones
/// share the budgets.
///
/// ```
/// use std::time::Duration;
/// use ibauth::pacing::{Limit, Method, Pacer, PacingRules, Rule};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let rules = PacingRules::ibkr()
///     .with_endpoint(Rule::new(Some(Method::GET), "/portfolio/accounts", "1/5s".parse().unwrap()));
/// let pacer = Pacer::new(rules);
/// let first = pacer.acquire(&Method::GET, "/portfolio/accounts").await.unwrap();
/// assert_eq!(first.waited, Duration::ZERO);
/// // The next one would wait ~5.1 s: more than allowed here, so it fails at once.
/// let paced = pacer
///     .acquire_within(&Method::GET, "/portfolio/accounts", Duration::from_secs(1))
///     .await
///     .unwrap_err();
/// assert_eq!(paced.bucket, "GET /portfolio/accounts");
/// assert!(paced.wait > Duration::from_secs(5));
/// // Other endpoints are not held up.
/// pacer.acquire(&Method::GET, "/iserver/accounts").await.unwrap();
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Pacer {
    inner: Arc<Inner>,
}

impl Pacer {
    /// A pacer for this process only.
    pub fn new(rules: PacingRules) -> Self {
        Self::build(
            rules,
            None,
            PaceClock::Monotonic(tokio::time::Instant::now()),
        )
    }

    /// A pacer sharing its rate budgets and pauses with every process using the same ledger
    /// file and identity. Times are wall-clock (processes share them). A ledger that cannot be
    /// read or locked in time is reported and the call is paced in-process only.
    pub fn with_ledger(rules: PacingRules, ledger: PaceLedger) -> Self {
        Self::build(rules, Some(Backend::File(ledger)), PaceClock::Wall)
    }

    /// A pacer sharing its rate budgets and pauses with every process of a fleet through its
    /// store ([`crate::coord::Coordinator::pace`]), for `account` (one budget per IBKR
    /// session, whatever the number of processes). Times are wall-clock: the hosts' clocks
    /// must agree (NTP) to well within [`PacingRules::margin`]. A store that cannot be
    /// reached in time is reported and the call is paced in-process only.
    pub fn shared(
        rules: PacingRules,
        coord: Arc<dyn crate::coord::Coordinator>,
        account: &str,
    ) -> Self {
        if rules.global.is_none() && rules.endpoints.is_empty() {
            return Self::new(rules);
        }
        Self::build(
            rules,
            Some(Backend::Store {
                coord,
                account: account.to_owned(),
            }),
            PaceClock::Wall,
        )
    }

    fn build(rules: PacingRules, ledger: Option<Backend>, clock: PaceClock) -> Self {
        // Rounded up, like the windows: never closer than asked.
        let margin = if rules.margin.is_zero() {
            0
        } else {
            Limit::per_ms(rules.margin)
        };
        let bucket = |name: String, limit: Limit| {
            let (spec, slots) = match limit {
                Limit::Rate { count, per } => (
                    Spec::rate(count, Limit::per_ms(per).saturating_add(margin)),
                    None,
                ),
                Limit::Concurrent(n) => (
                    Spec::pause_only(),
                    Some(Arc::new(Semaphore::new(
                        usize::try_from(n.max(1))
                            .unwrap_or(usize::MAX)
                            .min(Semaphore::MAX_PERMITS),
                    ))),
                ),
            };
            Bucket {
                name,
                limit,
                spec,
                slots,
            }
        };
        let mut buckets = Vec::new();
        let global = rules.global.map(|limit| {
            buckets.push(bucket("global".to_owned(), limit));
            buckets.len() - 1
        });
        let first_rule = buckets.len();
        for rule in &rules.endpoints {
            buckets.push(bucket(rule.bucket_name(), rule.limit));
        }
        let matcher = Matcher::new(&rules.endpoints, |i| first_rule + i);
        let specs: Vec<Spec> = buckets.iter().map(|b| b.spec).collect();
        let longest_window = specs.iter().map(Spec::window).max().unwrap_or(0);
        let horizon = longest_window.max(millis(rules.max_wait));
        Self {
            inner: Arc::new(Inner {
                timelines: Mutex::new(vec![Timeline::default(); buckets.len()]),
                buckets,
                specs,
                global,
                matcher,
                clock,
                shared: ledger.map(|ledger| Shared {
                    ledger,
                    turn: tokio::sync::Mutex::new(()),
                }),
                horizon,
                rules,
            }),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &PacingRules {
        &self.inner.rules
    }

    /// Waits for this request's turn, at most [`PacingRules::max_wait`].
    pub async fn acquire(&self, method: &Method, path: &str) -> Result<Permit, Paced> {
        self.acquire_within(method, path, self.inner.rules.max_wait)
            .await
    }

    /// Waits for this request's turn, at most `max_wait`: a longer wait fails at once with
    /// [`Paced`] and reserves nothing. Callers for the same budgets get their turns in the
    /// order they call (within a process). Dropping the future before its turn gives the turn
    /// back (in-process; a ledger keeps it, which only wastes it).
    ///
    /// With a ledger, `max_wait` is capped at the longest window or the rules' `max_wait`,
    /// whichever is longer (times in the ledger further out are treated as stale).
    pub async fn acquire_within(
        &self,
        method: &Method,
        path: &str,
        max_wait: Duration,
    ) -> Result<Permit, Paced> {
        let inner = &*self.inner;
        let endpoint = inner.matcher.bucket(method, path);
        let ids = [endpoint, inner.global];
        if ids == [None, None] {
            return Ok(Permit {
                waited: Duration::ZERO,
                at: 0,
                _slots: [None, None],
            });
        }
        let mut max_wait = millis(max_wait);
        if inner.shared.is_some() {
            max_wait = max_wait.min(inner.horizon);
        }
        let start = inner.clock.now_ms();
        let paced = |id: usize, wait: u64, paused: bool| {
            let bucket = inner.buckets.get(id);
            Paced {
                request: format!("{method} /{}", normalize(path)),
                wait: Duration::from_millis(wait),
                bucket: bucket.map(|b| b.name.clone()).unwrap_or_default(),
                limit: bucket.map(|b| b.limit.to_string()).unwrap_or_default(),
                paused,
                max_wait: Duration::from_millis(max_wait),
            }
        };

        // In-flight slots first: reserving a send time and then waiting for a slot could send
        // later than reserved. Endpoint before global, always, so two waiters never hold one
        // each of what the other needs.
        let mut slots = [None, None];
        for (slot, id) in slots.iter_mut().zip(ids) {
            let Some((id, sem)) =
                id.and_then(|id| Some((id, inner.buckets.get(id)?.slots.clone()?)))
            else {
                continue;
            };
            if let Ok(permit) = sem.clone().try_acquire_owned() {
                *slot = Some(permit);
                continue;
            }
            let deadline = start.saturating_add(max_wait);
            if inner.clock.now_ms() >= deadline {
                return Err(paced(id, max_wait, false));
            }
            tokio::select! {
                permit = sem.acquire_owned() => *slot = permit.ok(),
                () = inner.clock.sleep_until(deadline) => return Err(paced(id, max_wait, false)),
            }
        }

        // The buckets this request counts against, without allocating.
        let mut buf = [0usize; 2];
        let mut n = 0;
        for (slot, id) in buf.iter_mut().zip(ids.into_iter().flatten()) {
            *slot = id;
            n += 1;
        }
        let rate_ids = buf.get(..n).unwrap_or_default();
        let refuse = |plan: Plan| {
            let (id, paused) = plan
                .culprit
                .unwrap_or((rate_ids.first().copied().unwrap_or(0), false));
            paced(id, plan.at.saturating_sub(start), paused)
        };
        let at = match &inner.shared {
            None => {
                let now = inner.clock.now_ms();
                let left = max_wait.saturating_sub(now.saturating_sub(start));
                self.reserve(rate_ids, now, left, &refuse)?
            }
            Some(shared) => {
                let _turn = shared.turn.lock().await;
                // No await while the file's lock is held (its guard is not `Send`): a store's
                // commit is awaited after the block.
                let (at, commit) = {
                    let locked = self.lock_ledger(shared).await;
                    // Sampled after the lock: the queue and the lock take time.
                    let now = inner.clock.now_ms();
                    let left = max_wait.saturating_sub(now.saturating_sub(start));
                    match locked {
                        Some(mut file) => {
                            let at = self.transact(&mut file, now, rate_ids, |pacer| {
                                pacer.reserve(rate_ids, now, left, &refuse)
                            });
                            (at, file.finish())
                        }
                        None => {
                            let at = self.reserve(rate_ids, now, left, &refuse);
                            // Written at the next transaction that gets the lock.
                            let mut timelines = lock(&inner.timelines);
                            for &id in rate_ids {
                                if let Some(tl) = timelines.get_mut(id) {
                                    tl.dirty = true;
                                }
                            }
                            (at, None)
                        }
                    }
                };
                // Written before the wait, so other processes count this turn.
                if let Some(commit) = commit
                    && let Err(e) = commit.await
                {
                    tracing::warn!(error = %e, "pacing: cannot write the fleet's pacing document; other processes do not see this call");
                }
                at?
            }
        };

        if at > inner.clock.now_ms() {
            tracing::debug!(
                request = %format_args!("{method} /{}", normalize(path)),
                wait_ms = at.saturating_sub(inner.clock.now_ms()),
                "pacing: waiting for the turn"
            );
            // Gives the turn back if the caller stops waiting (in-process only: the ledger's
            // copy is another process's business by now).
            let mut hold = Unreserve {
                inner,
                ids: rate_ids,
                at,
                armed: inner.shared.is_none(),
            };
            inner.clock.sleep_until(at).await;
            hold.armed = false;
        }
        Ok(Permit {
            waited: Duration::from_millis(inner.clock.now_ms().saturating_sub(start)),
            at,
            _slots: slots,
        })
    }

    /// Plans and, within `left`, reserves a send time in the in-process timelines.
    fn reserve(
        &self,
        ids: &[usize],
        now: u64,
        left: u64,
        refuse: &dyn Fn(Plan) -> Paced,
    ) -> Result<u64, Paced> {
        let inner = &*self.inner;
        let mut timelines = lock(&inner.timelines);
        for &id in ids {
            if let (Some(tl), Some(spec)) = (timelines.get_mut(id), inner.specs.get(id)) {
                tl.prune(now, spec.window());
            }
        }
        let plan = schedule::plan(&timelines, &inner.specs, ids, now);
        if plan.at.saturating_sub(now) > left {
            return Err(refuse(plan));
        }
        for &id in ids {
            if let (Some(tl), Some(spec)) = (timelines.get_mut(id), inner.specs.get(id))
                && spec.rate.is_some()
            {
                tl.insert(plan.at);
            }
        }
        Ok(plan.at)
    }

    /// A 429 arrived: pauses the budget this request counted against — its endpoint rule if
    /// one matched, else the global one — for `retry_after` (capped at an hour), or for
    /// [`PacingRules::pause_without_retry_after`]. Calls waiting already keep their turns;
    /// new ones wait for the pause to end.
    pub fn pause(&self, method: &Method, path: &str, retry_after: Option<Duration>) {
        let inner = &*self.inner;
        let Some(id) = inner.matcher.bucket(method, path).or(inner.global) else {
            tracing::debug!("pacing: 429 on an unpaced request; nothing to pause");
            return;
        };
        let pause = retry_after
            .unwrap_or(inner.rules.pause_without_retry_after)
            .min(MAX_PAUSE);
        let now = inner.clock.now_ms();
        if let Some(tl) = lock(&inner.timelines).get_mut(id) {
            tl.pause(now.saturating_add(millis(pause)));
        }
        tracing::warn!(
            bucket = inner.buckets.get(id).map_or("", |b| b.name.as_str()),
            pause = ?pause,
            "pacing: IBKR answered 429 Too Many Requests; pausing this budget"
        );
        // Tell other processes now if the ledger is free; else the next call's transaction
        // does (the bucket is marked as changed).
        if let Some(shared) = &inner.shared
            && let Backend::File(ledger) = &shared.ledger
            && let Ok(_turn) = shared.turn.try_lock()
        {
            match ledger.try_lock() {
                Ok(Some(file)) => self.transact(&mut LedgerTxn::File(file), now, &[], |_| ()),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "pacing: ledger unavailable"),
            }
        }
    }

    /// Waits (a little) for the ledger's lock; `None`: pace in-process only this time.
    async fn lock_ledger<'a>(&self, shared: &'a Shared) -> Option<LedgerTxn<'a>> {
        let ledger = match &shared.ledger {
            Backend::File(ledger) => ledger,
            Backend::Store { coord, account } => {
                return match tokio::time::timeout(LEDGER_PATIENCE, coord.pace(account)).await {
                    Ok(Ok(txn)) => Some(LedgerTxn::Store { txn, written: None }),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "pacing: the fleet's store is unavailable; pacing this call in-process only");
                        None
                    }
                    Err(_) => {
                        tracing::warn!(
                            store = %coord.describe(),
                            "pacing: the fleet's pacing document stayed locked for {LEDGER_PATIENCE:?}; pacing this call in-process only"
                        );
                        None
                    }
                };
            }
        };
        let give_up = tokio::time::Instant::now() + LEDGER_PATIENCE;
        let mut backoff = Duration::from_micros(200);
        loop {
            match ledger.try_lock() {
                Ok(Some(locked)) => return Some(LedgerTxn::File(locked)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "pacing: ledger unavailable; pacing in-process only");
                    return None;
                }
            }
            if tokio::time::Instant::now() >= give_up {
                tracing::warn!(
                    file = %shared.ledger.describe(),
                    "pacing: the ledger stayed locked for {LEDGER_PATIENCE:?}; pacing this call in-process only"
                );
                return None;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(10));
        }
    }

    /// Under the ledger's lock: takes in what the file knows about `ids` (and about buckets
    /// changed here since the last write), runs `f`, writes those buckets back.
    fn transact<R>(
        &self,
        file: &mut LedgerTxn<'_>,
        now: u64,
        ids: &[usize],
        f: impl FnOnce(&Self) -> R,
    ) -> R {
        let inner = &*self.inner;
        let Some(shared) = &inner.shared else {
            return f(self);
        };
        let identity = shared.ledger.identity();
        let mut doc: Doc = file.read();
        let latest = now.saturating_add(inner.horizon);
        let pause_cap =
            now.saturating_add(millis(MAX_PAUSE.max(inner.rules.pause_without_retry_after)));
        let touched: Vec<usize> = {
            let mut timelines = lock(&inner.timelines);
            let touched: Vec<usize> = (0..timelines.len())
                .filter(|id| ids.contains(id) || timelines.get(*id).is_some_and(|t| t.dirty))
                .collect();
            for &id in &touched {
                let (Some(tl), Some(bucket)) = (timelines.get_mut(id), inner.buckets.get(id))
                else {
                    continue;
                };
                if let Some(entry) = doc.entry(identity, &bucket.name) {
                    tl.merge_max(&entry.clean_times(latest), entry.p.min(pause_cap));
                }
                // Our own times too: the wall clock may have jumped back since they were set.
                tl.clamp(latest, pause_cap);
            }
            touched
        };
        let result = f(self);
        {
            let mut timelines = lock(&inner.timelines);
            for &id in &touched {
                let (Some(tl), Some(bucket)) = (timelines.get_mut(id), inner.buckets.get(id))
                else {
                    continue;
                };
                tl.prune(now, bucket.spec.window());
                let w = doc
                    .entry(identity, &bucket.name)
                    .map_or(0, |e| e.w)
                    .max(bucket.spec.window())
                    .min(ledger::MAX_WINDOW_MS);
                doc.set(
                    identity,
                    &bucket.name,
                    Entry {
                        w,
                        t: tl.runs().collect(),
                        p: tl.paused_until,
                    },
                );
                tl.dirty = false;
            }
        }
        doc.prune(now);
        file.write(&doc);
        result
    }
}

/// Takes a reservation back when a waiting caller goes away.
struct Unreserve<'a> {
    inner: &'a Inner,
    ids: &'a [usize],
    at: u64,
    armed: bool,
}

impl Drop for Unreserve<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut timelines = lock(&self.inner.timelines);
        for &id in self.ids {
            if let (Some(tl), Some(spec)) = (timelines.get_mut(id), self.inner.specs.get(id))
                && spec.rate.is_some()
            {
                tl.remove(self.at);
            }
        }
    }
}

#[cfg(test)]
mod tests;
