//! IBKR's limits as data, and which limit a request counts against.

use std::borrow::Cow;
use std::time::Duration;

use reqwest::Method;

use super::Limit;

/// `/trsrv/secdef` takes at most this many conids per request (the one row of IBKR's pacing
/// table that limits a request's size, not its rate; split bigger look-ups).
pub const SECDEF_MAX_CONIDS: usize = 200;

/// A per-endpoint limit, on top of the global one.
///
/// ```
/// use ibauth::pacing::{Limit, Rule};
/// use ibauth::pacing::Method;
///
/// let rule = Rule::new(Some(Method::GET), "/iserver/account/orders", "1/5s".parse()?)
///     .also("/iserver/orders");
/// assert_eq!(rule.to_string(), "GET /iserver/account/orders (also /iserver/orders): 1/5s");
/// # Ok::<(), ibauth::pacing::ParseLimitError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The method it applies to; `None`: any method.
    pub method: Option<Method>,
    /// The endpoint, without the `/v1/api` prefix: an exact path (`/portfolio/accounts`) or
    /// everything under a prefix (`/fyi/*`).
    pub path: String,
    /// More paths that share this rule's budget (the same endpoint under another name).
    pub also: Vec<String>,
    /// The limit.
    pub limit: Limit,
}

impl Rule {
    /// A rule for `method` (`None`: any) on `path`.
    pub fn new(method: Option<Method>, path: impl Into<String>, limit: Limit) -> Self {
        Self {
            method,
            path: path.into(),
            also: Vec::new(),
            limit,
        }
    }

    /// Adds a path that counts against the same budget.
    pub fn also(mut self, path: impl Into<String>) -> Self {
        self.also.push(path.into());
        self
    }

    /// The bucket's name: method (or `*`) and path, as in logs and [`Paced`](super::Paced).
    pub(crate) fn bucket_name(&self) -> String {
        let method = self.method.as_ref().map_or("*", Method::as_str);
        format!("{method} /{}", normalize(&self.path))
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.bucket_name())?;
        if !self.also.is_empty() {
            let also: Vec<String> = self
                .also
                .iter()
                .map(|p| format!("/{}", normalize(p)))
                .collect();
            write!(f, " (also {})", also.join(", "))?;
        }
        write!(f, ": {}", self.limit)
    }
}

/// Limits as data: a global limit per session, per-endpoint limits on top, and how long a call
/// may wait for its turn.
///
/// ```
/// use ibauth::pacing::{Method, PacingRules, Rule};
///
/// let rules = PacingRules::gateway()
///     .with_endpoint(Rule::new(Some(Method::GET), "/iserver/marketdata/snapshot", "20/s".parse()?));
/// assert_eq!(rules.global, Some("10/s".parse()?));
/// assert_eq!(rules.rule_for(&Method::GET, "/v1/api/iserver/marketdata/snapshot?conids=1")
///     .map(|r| r.limit.to_string()), Some("20/s".into()));
/// # Ok::<(), ibauth::pacing::ParseLimitError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacingRules {
    /// Every request counts against this (`None`: no global limit).
    pub global: Option<Limit>,
    /// Per-endpoint limits; a request counts against the best match too (an exact path beats
    /// a `prefix/*`, a longer prefix a shorter one, a rule for its method one for any method).
    pub endpoints: Vec<Rule>,
    /// Longest a call waits for its turn before it fails with [`Paced`](super::Paced).
    pub max_wait: Duration,
    /// Added to every rate window, so jitter between our send and IBKR's arrival cannot bring
    /// two requests closer than the window.
    pub margin: Duration,
    /// How long a budget pauses after a 429 without `Retry-After`.
    pub pause_without_retry_after: Duration,
}

/// `(method, path, limit)` rows of IBKR's table (docs: "Pacing Limitations"), global aside.
const IBKR_ENDPOINTS: &[(Option<&str>, &str, &str)] = &[
    (Some("GET"), "/iserver/marketdata/snapshot", "10/s"),
    (Some("GET"), "/iserver/scanner/params", "1/15min"),
    (Some("POST"), "/iserver/scanner/run", "1/s"),
    (Some("GET"), "/iserver/trades", "1/5s"),
    // Also below: `/iserver/orders` is the same endpoint under its older name.
    (Some("GET"), "/iserver/account/orders", "1/5s"),
    (Some("GET"), "/iserver/account/pnl/partitioned", "1/5s"),
    (Some("GET"), "/portfolio/accounts", "1/5s"),
    (Some("GET"), "/portfolio/subaccounts", "1/5s"),
    (Some("POST"), "/pa/performance", "1/15min"),
    (Some("POST"), "/pa/summary", "1/15min"),
    (Some("POST"), "/pa/transactions", "1/15min"),
    (None, "/fyi/*", "1/s"),
    (Some("GET"), "/tickle", "1/s"),
    (Some("GET"), "/sso/validate", "1/min"),
    (Some("GET"), "/iserver/marketdata/history", "5 concurrent"),
];

fn ibkr_endpoints() -> Vec<Rule> {
    IBKR_ENDPOINTS
        .iter()
        .filter_map(|&(method, path, limit)| {
            // The table is a constant checked by a test; `filter_map` keeps a typo from
            // panicking in a library.
            let limit = limit.parse().ok()?;
            let method = method.and_then(|m| Method::from_bytes(m.as_bytes()).ok());
            let rule = Rule::new(method, path, limit);
            Some(if path == "/iserver/account/orders" {
                rule.also("/iserver/orders")
            } else {
                rule
            })
        })
        .collect()
}

impl PacingRules {
    /// IBKR's published limits for a Web API session: 50 requests per second overall, and
    /// every per-endpoint row of the table (the secdef row is [`SECDEF_MAX_CONIDS`]).
    pub fn ibkr() -> Self {
        Self {
            global: Some(Limit::Rate {
                count: 50,
                per: Duration::from_secs(1),
            }),
            endpoints: ibkr_endpoints(),
            max_wait: Duration::from_secs(30),
            margin: Duration::from_millis(100),
            // Long enough not to hammer a server that said no, short enough that a transient
            // per-endpoint 429 does not cost IBKR's full 10-minute penalty box.
            pause_without_retry_after: Duration::from_secs(60),
        }
    }

    /// The Client Portal Gateway's limits: 10 requests per second overall, the same endpoint
    /// rows as [`ibkr`](Self::ibkr).
    pub fn gateway() -> Self {
        Self::ibkr().with_global(Limit::Rate {
            count: 10,
            per: Duration::from_secs(1),
        })
    }

    /// Nothing paced (tests, benchmarks, a server that paces for you).
    pub fn unlimited() -> Self {
        Self {
            global: None,
            endpoints: Vec::new(),
            ..Self::ibkr()
        }
    }

    /// Adds `rule`, replacing the rule for the same method and path (or alias). A replaced
    /// rule's other paths keep its limit.
    pub fn with_endpoint(mut self, rule: Rule) -> Self {
        let taken: Vec<String> = std::iter::once(&rule.path)
            .chain(&rule.also)
            .map(|p| normalize(p).into_owned())
            .collect();
        let is_taken = |p: &str| taken.iter().any(|t| *t == normalize(p));
        self.endpoints.retain_mut(|old| {
            if old.method != rule.method {
                return true;
            }
            old.also.retain(|p| !is_taken(p));
            if !is_taken(&old.path) {
                return true;
            }
            if old.also.is_empty() {
                return false;
            }
            old.path = old.also.remove(0);
            true
        });
        self.endpoints.push(rule);
        self
    }

    /// Sets the global limit.
    pub fn with_global(mut self, limit: Limit) -> Self {
        self.global = Some(limit);
        self
    }

    /// The endpoint rule a request counts against, if any (besides the global limit).
    pub fn rule_for(&self, method: &Method, path: &str) -> Option<&Rule> {
        Matcher::new(&self.endpoints, |i| i)
            .bucket(method, path)
            .and_then(|i| self.endpoints.get(i))
    }
}

/// A rule's path, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    Exact(String),
    /// Everything at or under this path (`fyi/*` → `fyi`; `*` → everything).
    Under(String),
}

impl Pattern {
    pub(crate) fn new(path: &str) -> Self {
        let path = normalize(path);
        if path == "*" {
            Pattern::Under(String::new())
        } else if let Some(prefix) = path.strip_suffix("/*") {
            Pattern::Under(prefix.to_owned())
        } else {
            Pattern::Exact(path.into_owned())
        }
    }

    /// `None`: no match; else how specific the match is (higher wins).
    fn score(&self, path: &str) -> Option<usize> {
        match self {
            // Above every prefix match, whatever its length.
            Pattern::Exact(p) => (p == path).then_some(usize::MAX),
            Pattern::Under(p) if p.is_empty() => Some(0),
            Pattern::Under(p) => {
                let under = path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
                under.then_some(p.len().saturating_add(1))
            }
        }
    }
}

/// The compiled matcher the pacer uses on every request (no allocation per lookup).
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    /// `(bucket, method, pattern)`, exact paths first.
    entries: Vec<(usize, Option<Method>, Pattern)>,
}

impl Matcher {
    /// `bucket_of(rule index)` gives each rule's bucket.
    pub(crate) fn new(rules: &[Rule], bucket_of: impl Fn(usize) -> usize) -> Self {
        let mut entries = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            for path in std::iter::once(&rule.path).chain(&rule.also) {
                entries.push((bucket_of(i), rule.method.clone(), Pattern::new(path)));
            }
        }
        Self { entries }
    }

    /// The bucket of the best-matching rule for a (raw) path.
    pub(crate) fn bucket(&self, method: &Method, path: &str) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let path = normalize(path);
        let mut best: Option<((usize, bool), usize)> = None;
        for (bucket, m, pattern) in &self.entries {
            if m.as_ref().is_some_and(|m| m != method) {
                continue;
            }
            let Some(score) = pattern.score(&path) else {
                continue;
            };
            let key = (score, m.is_some());
            if best.is_none_or(|(b, _)| key > b) {
                best = Some((key, *bucket));
            }
        }
        best.map(|(_, b)| b)
    }
}

/// The endpoint part of a path or URL, without a leading or trailing slash: scheme and host,
/// the `/v1/api` or `/v1/portal` prefix, the query and the fragment are dropped, and repeated
/// slashes collapse (`https://h/v1/api//tickle/?x=1` → `tickle`).
pub(crate) fn normalize(raw: &str) -> Cow<'_, str> {
    let mut path = raw.trim();
    if let Some(i) = path.find("://") {
        let rest = &path[i.saturating_add(3)..];
        path = rest.find(['/', '?', '#']).map_or("", |j| &rest[j..]);
    }
    if let Some(j) = path.find(['?', '#']) {
        path = &path[..j];
    }
    let mut path = path.trim_matches('/');
    for prefix in ["v1/api", "v1/portal"] {
        if let Some(rest) = path.strip_prefix(prefix)
            && (rest.is_empty() || rest.starts_with('/'))
        {
            path = rest.trim_matches('/');
            break;
        }
    }
    if path.contains("//") {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        Cow::Owned(parts.join("/"))
    } else {
        Cow::Borrowed(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_from_every_form() {
        let cases = [
            ("/v1/api/iserver/accounts", "iserver/accounts"),
            ("/v1/portal/iserver/accounts", "iserver/accounts"),
            ("iserver/accounts", "iserver/accounts"),
            ("/iserver/accounts/", "iserver/accounts"),
            ("https://host/v1/api/tickle?x=1", "tickle"),
            ("https://host:5000/v1/api/tickle#frag", "tickle"),
            ("http://host", ""),
            ("http://host?x=1", ""),
            ("/v1/api", ""),
            ("/v1/apiary/x", "v1/apiary/x"),
            ("//v1/api//portfolio//accounts/", "portfolio/accounts"),
            (
                "/iserver/account/orders?force=true",
                "iserver/account/orders",
            ),
            ("  /tickle  ", "tickle"),
            ("v1/api/tickle", "tickle"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw), want, "{raw}");
        }
        assert!(matches!(normalize("/v1/api/tickle"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_ibkr_profile_has_every_row_of_the_table() {
        let rules = PacingRules::ibkr();
        assert_eq!(
            rules.endpoints.len(),
            IBKR_ENDPOINTS.len(),
            "every row parses"
        );
        let limit = |m: Method, p: &str| rules.rule_for(&m, p).map(|r| r.limit.to_string());
        assert_eq!(
            limit(Method::GET, "/iserver/marketdata/snapshot"),
            Some("10/s".into())
        );
        assert_eq!(
            limit(Method::GET, "/iserver/scanner/params"),
            Some("1/15min".into())
        );
        assert_eq!(
            limit(Method::POST, "/iserver/scanner/run"),
            Some("1/s".into())
        );
        assert_eq!(limit(Method::GET, "/iserver/trades"), Some("1/5s".into()));
        assert_eq!(limit(Method::GET, "/iserver/orders"), Some("1/5s".into()));
        assert_eq!(
            limit(Method::GET, "/iserver/account/orders?force=true"),
            Some("1/5s".into())
        );
        assert_eq!(
            limit(Method::GET, "/iserver/account/pnl/partitioned"),
            Some("1/5s".into())
        );
        assert_eq!(
            limit(Method::GET, "/portfolio/accounts"),
            Some("1/5s".into())
        );
        assert_eq!(
            limit(Method::GET, "/portfolio/subaccounts"),
            Some("1/5s".into())
        );
        for pa in ["/pa/performance", "/pa/summary", "/pa/transactions"] {
            assert_eq!(limit(Method::POST, pa), Some("1/15min".into()), "{pa}");
        }
        assert_eq!(limit(Method::GET, "/fyi/unreadnumber"), Some("1/s".into()));
        assert_eq!(limit(Method::PUT, "/fyi/settings/M8"), Some("1/s".into()));
        assert_eq!(
            limit(Method::DELETE, "/fyi/deliveryoptions/1"),
            Some("1/s".into())
        );
        assert_eq!(limit(Method::GET, "/tickle"), Some("1/s".into()));
        assert_eq!(limit(Method::GET, "/sso/validate"), Some("1/min".into()));
        assert_eq!(
            limit(Method::GET, "/iserver/marketdata/history"),
            Some("5 concurrent".into())
        );
        // Not listed, or another method: only the global limit.
        assert_eq!(limit(Method::POST, "/portfolio/accounts"), None);
        assert_eq!(limit(Method::GET, "/portfolio/U123/positions/0"), None);
        assert_eq!(limit(Method::GET, "/fyinot"), None);
        assert_eq!(limit(Method::POST, "/trsrv/secdef"), None);
        assert_eq!(rules.global.map(|g| g.to_string()), Some("50/s".into()));
        assert_eq!(
            PacingRules::gateway().global.map(|g| g.to_string()),
            Some("10/s".into())
        );
        assert_eq!(PacingRules::gateway().endpoints, rules.endpoints);
        let none = PacingRules::unlimited();
        assert!(none.global.is_none() && none.endpoints.is_empty());
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let rules = PacingRules::unlimited()
            .with_endpoint(Rule::new(None, "/a/*", "1/s".parse().unwrap()))
            .with_endpoint(Rule::new(None, "/a/b/*", "2/s".parse().unwrap()))
            .with_endpoint(Rule::new(None, "/a/b/c", "3/s".parse().unwrap()))
            .with_endpoint(Rule::new(
                Some(Method::GET),
                "/a/b/c",
                "4/s".parse().unwrap(),
            ))
            .with_endpoint(Rule::new(None, "*", "5/s".parse().unwrap()));
        let limit = |m: Method, p: &str| rules.rule_for(&m, p).map(|r| r.limit.to_string());
        assert_eq!(limit(Method::GET, "/a/b/c"), Some("4/s".into()));
        assert_eq!(limit(Method::POST, "/a/b/c"), Some("3/s".into()));
        assert_eq!(limit(Method::POST, "/a/b/d"), Some("2/s".into()));
        assert_eq!(limit(Method::POST, "/a/b"), Some("2/s".into()));
        assert_eq!(limit(Method::POST, "/a/x"), Some("1/s".into()));
        assert_eq!(limit(Method::POST, "/ab"), Some("5/s".into()));
        // The compiled matcher agrees with `rule_for` everywhere.
        let matcher = Matcher::new(&rules.endpoints, |i| i);
        for (m, p) in [
            (Method::GET, "/a/b/c"),
            (Method::POST, "/a/b/c"),
            (Method::POST, "/a/b/d"),
            (Method::POST, "/a/x"),
            (Method::POST, "/ab"),
        ] {
            let via_rules = rules.rule_for(&m, p).map(|r| r.to_string());
            let via_matcher = matcher
                .bucket(&m, p)
                .map(|i| rules.endpoints[i].to_string());
            assert_eq!(via_rules, via_matcher, "{m} {p}");
        }
    }

    #[test]
    fn with_endpoint_replaces_the_same_method_and_path() {
        let n = PacingRules::ibkr().endpoints.len();
        let rules = PacingRules::ibkr().with_endpoint(Rule::new(
            Some(Method::GET),
            "portfolio/accounts/",
            "2/s".parse().unwrap(),
        ));
        assert_eq!(rules.endpoints.len(), n);
        assert_eq!(
            rules
                .rule_for(&Method::GET, "/portfolio/accounts")
                .map(|r| r.limit),
            Some("2/s".parse().unwrap())
        );
        // Another method is another rule.
        let rules = rules.with_endpoint(Rule::new(
            None,
            "/portfolio/accounts",
            "3/s".parse().unwrap(),
        ));
        assert_eq!(rules.endpoints.len(), n + 1);
        // Replacing an alias takes it out of the old rule, which keeps its own path.
        let rules = PacingRules::ibkr().with_endpoint(Rule::new(
            Some(Method::GET),
            "/iserver/orders",
            "7/s".parse().unwrap(),
        ));
        assert_eq!(rules.endpoints.len(), n + 1);
        let limit = |p: &str| rules.rule_for(&Method::GET, p).map(|r| r.limit.to_string());
        assert_eq!(limit("/iserver/orders"), Some("7/s".into()));
        assert_eq!(limit("/iserver/account/orders"), Some("1/5s".into()));
    }
}
