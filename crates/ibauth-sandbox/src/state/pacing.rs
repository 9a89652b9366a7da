//! IBKR's pacing limits as data, and the bookkeeping that enforces them: a sliding window per
//! user and limit, and the penalty box per IP address.
//!
//! Semantics (what the sandbox promises a test):
//! - Every authenticated request to `/v1/api/*` except `oauth/*` counts against its user's
//!   budgets — `tickle`, `auth/status`, `ssodh/init`, `sso/validate`, `logout`, the WebSocket
//!   handshake and the Web API endpoints alike — once authentication has named the user and
//!   before the request is served.
//! - Windows are exact and sliding, on the arrival time of each request by a real monotonic
//!   clock (never the sandbox's injectable clock, which tests pin): a request violates a limit
//!   of `count` per `period` if `count` requests of that limit were already served in the last
//!   `period`. The global limit and every endpoint limit that matches apply at once.
//! - A violating request is refused with 429 and not served, and it is not added to any window;
//!   its IP address goes to the penalty box for the penalty length. While there, every
//!   `/v1/api/*` request from that address is refused the same way, before authentication.
//! - Memory stays bounded: a window keeps at most `count` timestamps and forgets those older
//!   than its period; expired penalties are dropped.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Longest penalty the sandbox applies, so no configured length can overflow the clock.
const MAX_PENALTY: Duration = Duration::from_secs(7 * 24 * 3600);

/// IBKR's published pacing limits (see `pacing.md`), or a variation for a test.
///
/// A global limit per authenticated user (IBKR: 50 requests per second; through the Client
/// Portal Gateway 10), per-endpoint limits on top of it, and the length of the penalty a
/// violation earns (IBKR: 10 minutes). Endpoint limits are matched on the method (or any
/// method) and the path relative to `/v1/api` without the query; a path ending in `/*`
/// matches every path under it and is one budget shared by all of them. Paths not listed
/// (such as those with an account id or conid in them) fall under the global limit only.
///
/// Left out of [`PacingLimits::ibkr`]: IBKR's "5 concurrent requests" on
/// `/iserver/marketdata/history` and "200 conids per request" on `/trsrv/secdef`, which are
/// not rates.
///
/// How the sandbox applies the limits: every authenticated `/v1/api/*` request except
/// `oauth/*` counts against its user's budgets, once authenticated and before it is served,
/// in exact sliding windows by arrival time on a monotonic clock. A request that finds `count`
/// requests of a limit already served in the last `period` gets 429 `{"error":"Too Many
/// Requests","statusCode":429}` with `Retry-After` (the seconds left in the penalty, rounded
/// up, at least 1), is not served and not counted, and puts the caller's IP address in the
/// penalty box: every `/v1/api/*` request from there gets the same 429 until the penalty ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacingLimits {
    global: Limit,
    endpoints: Vec<EndpointLimit>,
    penalty: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limit {
    count: u32,
    per: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct EndpointLimit {
    /// Upper-case method, `None` for any.
    method: Option<String>,
    /// Relative to `/v1/api`, with a leading `/`; `/*` at the end for a prefix.
    path: String,
    limit: Limit,
}

impl EndpointLimit {
    fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = self
            .method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method));
        let path_ok = match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == self.path,
        };
        method_ok && path_ok
    }
}

impl Default for PacingLimits {
    fn default() -> Self {
        Self::ibkr()
    }
}

impl PacingLimits {
    /// IBKR's limits for a Web API session: 50 requests per second per user, the endpoint
    /// table, a 10-minute penalty.
    pub fn ibkr() -> Self {
        const SECOND: Duration = Duration::from_secs(1);
        const FIVE_SECONDS: Duration = Duration::from_secs(5);
        const MINUTE: Duration = Duration::from_secs(60);
        const FIFTEEN_MINUTES: Duration = Duration::from_secs(15 * 60);
        let table: [(Option<&str>, &str, u32, Duration); 15] = [
            (Some("GET"), "/iserver/marketdata/snapshot", 10, SECOND),
            (Some("GET"), "/iserver/scanner/params", 1, FIFTEEN_MINUTES),
            (Some("POST"), "/iserver/scanner/run", 1, SECOND),
            (Some("GET"), "/iserver/trades", 1, FIVE_SECONDS),
            (Some("GET"), "/iserver/orders", 1, FIVE_SECONDS),
            (Some("GET"), "/iserver/account/orders", 1, FIVE_SECONDS),
            (
                Some("GET"),
                "/iserver/account/pnl/partitioned",
                1,
                FIVE_SECONDS,
            ),
            (Some("GET"), "/portfolio/accounts", 1, FIVE_SECONDS),
            (Some("GET"), "/portfolio/subaccounts", 1, FIVE_SECONDS),
            (Some("POST"), "/pa/performance", 1, FIFTEEN_MINUTES),
            (Some("POST"), "/pa/summary", 1, FIFTEEN_MINUTES),
            (Some("POST"), "/pa/transactions", 1, FIFTEEN_MINUTES),
            (None, "/fyi/*", 1, SECOND),
            (Some("GET"), "/tickle", 1, SECOND),
            (Some("GET"), "/sso/validate", 1, MINUTE),
        ];
        table.into_iter().fold(
            Self {
                global: Limit {
                    count: 50,
                    per: SECOND,
                },
                endpoints: Vec::new(),
                penalty: Duration::from_secs(600),
            },
            |limits, (method, path, count, per)| limits.endpoint(method, path, count, per),
        )
    }

    /// As [`PacingLimits::ibkr`] with the Client Portal Gateway's global limit: 10 requests
    /// per second.
    pub fn gateway() -> Self {
        Self::ibkr().global(10, Duration::from_secs(1))
    }

    /// The penalty a violation earns (at most 7 days; zero: refused, but no penalty box).
    pub fn penalty(mut self, length: Duration) -> Self {
        self.penalty = length.min(MAX_PENALTY);
        self
    }

    /// The global limit: `count` requests per `per` for each user.
    pub fn global(mut self, count: u32, per: Duration) -> Self {
        self.global = Limit { count, per };
        self
    }

    /// Sets the limit of `method` (`None`: any method) on `path` (relative to `/v1/api`, e.g.
    /// `/portfolio/accounts`; `/fyi/*` for a prefix) to `count` requests per `per`, replacing
    /// the limit of that method and path if there is one.
    pub fn endpoint(mut self, method: Option<&str>, path: &str, count: u32, per: Duration) -> Self {
        let method = method.map(str::to_ascii_uppercase);
        let path = normalize(path);
        let limit = Limit { count, per };
        match self
            .endpoints
            .iter_mut()
            .find(|e| e.method == method && e.path == path)
        {
            Some(existing) => existing.limit = limit,
            None => self.endpoints.push(EndpointLimit {
                method,
                path,
                limit,
            }),
        }
        self
    }

    /// The penalty length.
    pub fn penalty_length(&self) -> Duration {
        self.penalty
    }

    /// The global limit: (count, period).
    pub fn global_limit(&self) -> (u32, Duration) {
        (self.global.count, self.global.per)
    }

    /// The endpoint limits that apply to `method path` (path relative to `/v1/api`, without
    /// the query): (count, period) each, besides the global one.
    pub fn endpoint_limits(&self, method: &str, path: &str) -> Vec<(u32, Duration)> {
        let path = normalize(path);
        self.endpoints
            .iter()
            .filter(|e| e.matches(method, &path))
            .map(|e| (e.limit.count, e.limit.per))
            .collect()
    }
}

/// `/v1/api/x/`, `x` and `/x` all as `/x`.
fn normalize(path: &str) -> String {
    let path = path.trim();
    let path = crate::paths::api_relative(path).unwrap_or(path);
    let path = path.trim_end_matches('/');
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

/// Which window a request is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Bucket {
    Global,
    /// Index into `PacingLimits::endpoints` (stable: the windows are reset with the limits).
    Endpoint(usize),
}

/// The limits in force and what has been served under them.
pub(crate) struct Pacer {
    limits: PacingLimits,
    /// Arrival times of the requests served, per (user, bucket), oldest first.
    windows: HashMap<(String, Bucket), VecDeque<Instant>>,
    /// Until when each penalised address is refused.
    penalty_box: HashMap<IpAddr, Instant>,
}

impl Pacer {
    pub fn new(limits: PacingLimits) -> Self {
        Self {
            limits,
            windows: HashMap::new(),
            penalty_box: HashMap::new(),
        }
    }

    /// How long `ip` still sits in the penalty box, if it does.
    pub fn penalty_left(&mut self, ip: IpAddr, now: Instant) -> Option<Duration> {
        self.penalty_box.retain(|_, until| *until > now);
        self.penalty_box
            .get(&ip)
            .map(|until| until.saturating_duration_since(now))
    }

    /// Counts a request of `credential` that arrived at `arrival`, or refuses it: then `ip`
    /// goes to the penalty box and the answer is how long it stays there.
    pub fn admit(
        &mut self,
        credential: &str,
        method: &str,
        path: &str,
        ip: IpAddr,
        arrival: Instant,
        now: Instant,
    ) -> Result<(), Duration> {
        let path = normalize(path);
        let buckets: Vec<(Bucket, Limit)> = std::iter::once((Bucket::Global, self.limits.global))
            .chain(
                self.limits
                    .endpoints
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.matches(method, &path))
                    .map(|(i, e)| (Bucket::Endpoint(i), e.limit)),
            )
            .collect();
        let mut violated = false;
        for &(bucket, limit) in &buckets {
            let served = match self.windows.get_mut(&(credential.to_owned(), bucket)) {
                Some(window) => {
                    window.retain(|t| arrival.saturating_duration_since(*t) < limit.per);
                    window.len()
                }
                None => 0,
            };
            violated |= served >= limit.count as usize;
        }
        if violated {
            let until = arrival.checked_add(self.limits.penalty).unwrap_or(arrival);
            if until > now {
                self.penalty_box.insert(ip, until);
            }
            return Err(until.saturating_duration_since(now));
        }
        for (bucket, limit) in buckets {
            let window = self
                .windows
                .entry((credential.to_owned(), bucket))
                .or_default();
            // Arrivals are stamped before the lock is taken, so they can come in slightly out
            // of order: keep the window sorted.
            let at = window.partition_point(|t| *t <= arrival);
            window.insert(at, arrival);
            while window.len() > limit.count as usize {
                window.pop_front();
            }
        }
        Ok(())
    }
}
