//! What the sandbox knows: registered clients and users, issued tokens, brokerage sessions.
//! The lowest layer: plain data and small invariants, used by every handler and depending on
//! none of them.

mod faults;
mod oauth1a;
mod orders;
mod pacing;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ibauth::Clock;

pub use faults::FailWith;
pub(crate) use faults::Faults;
pub use oauth1a::RegisteredConsumer;
pub(crate) use oauth1a::{AccessGrant1a, LstGrant, Oauth1aState, RequestGrant, session_key};
pub(crate) use orders::OrderBook;
pub use orders::PlacedOrder;
pub(crate) use pacing::Pacer;
pub use pacing::PacingLimits;

/// The sandbox's state as every handler shares it: one lock, held briefly and never across an
/// `await`.
pub(crate) type Shared = Arc<Mutex<State>>;

/// Locks `state`.
pub(crate) fn lock(state: &Shared) -> MutexGuard<'_, State> {
    // A panic in one handler must not take the whole sandbox down.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Token lifetimes and verification windows. Short lifetimes make expiry testable in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Lifetime of an OAuth 2.0 access token (IBKR: 86399 s).
    pub access_token: Duration,
    /// Upper bound of an SSO session (bearer token); the JWT-B `exp` may shorten it.
    pub sso_session: Duration,
    /// Longest accepted `exp − iat` of a client assertion.
    pub max_assertion_lifetime: Duration,
    /// Longest accepted `exp − iat` of an SSO-session request (JWT-B), beyond the clock skew
    /// (clients ask for 86400 s).
    pub max_sso_request_lifetime: Duration,
    /// Tolerated clock difference for `iat`/`exp`.
    pub clock_skew: Duration,
    /// Lifetime of an OAuth 1.0a request token (third-party flow) until it is exchanged.
    pub request_token: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            access_token: Duration::from_secs(86_399),
            sso_session: Duration::from_secs(86_400),
            max_assertion_lifetime: Duration::from_secs(300),
            max_sso_request_lifetime: Duration::from_secs(86_400),
            clock_skew: Duration::from_secs(60),
            request_token: Duration::from_secs(300),
        }
    }
}

/// An OAuth 2.0 client registered with the sandbox.
#[derive(Debug, Clone)]
pub struct RegisteredClient {
    /// The client id.
    pub client_id: String,
    /// Public keys (SPKI DER) by key id.
    pub keys: HashMap<String, Vec<u8>>,
    /// Credentials (usernames) this client may open sessions for.
    pub credentials: HashSet<String>,
}

/// How many requests of each kind the sandbox has answered successfully, and how many it refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Access tokens issued.
    pub access_tokens: u64,
    /// SSO sessions (bearer tokens) opened.
    pub sso_sessions: u64,
    /// `sso/validate` answered.
    pub validates: u64,
    /// `ssodh/init` answered.
    pub inits: u64,
    /// `auth/status` answered.
    pub statuses: u64,
    /// `tickle` answered.
    pub tickles: u64,
    /// `logout` answered.
    pub logouts: u64,
    /// OAuth 1.0a live session tokens issued.
    pub live_session_tokens: u64,
    /// WebSocket connections accepted.
    pub ws_connections: u64,
    /// OAuth 1.0a request tokens issued (third party).
    pub request_tokens: u64,
    /// OAuth 1.0a access tokens issued through `oauth/access_token` (third party).
    pub oauth_access_tokens: u64,
    /// Requests refused (pacing refusals are counted only in `pacing_violations` and
    /// `penalty_rejections`).
    pub rejections: u64,
    /// Scripted failures answered (fault injection).
    pub faults_injected: u64,
    /// Non-auth Web API calls answered (accounts, market data, orders).
    pub api_calls: u64,
    /// Orders accepted (each order of a multi-order request counts).
    pub orders_placed: u64,
    /// Requests refused with 429 for exceeding a pacing limit (each puts its IP address in the
    /// penalty box, unless the penalty is zero).
    pub pacing_violations: u64,
    /// Requests refused with 429 because their IP sat in the penalty box.
    pub penalty_rejections: u64,
}

pub(crate) struct AccessGrant {
    pub client_id: String,
    pub expires_at: u64,
}

pub(crate) struct SsoSession {
    pub client_id: String,
    pub credential: String,
    pub ip: Ipv4Addr,
    pub session_id: String,
    pub created_at: u64,
    pub expires_at: u64,
    /// Opened for a paper account (the WebSocket's `isPaper`).
    pub paper: bool,
}

/// A user's brokerage session; only one per user, held by one SSO session.
pub(crate) struct Brokerage {
    pub owner_bearer: String,
    pub authenticated: bool,
    pub connected: bool,
}

/// The brokerage flags as seen from one SSO session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flags {
    /// `authenticated`.
    pub authenticated: bool,
    /// `competing`: another SSO session holds the user's brokerage session.
    pub competing: bool,
    /// `connected`.
    pub connected: bool,
}

pub(crate) struct State {
    pub lifetimes: Lifetimes,
    pub clock: Arc<dyn Clock>,
    pub clients: HashMap<String, RegisteredClient>,
    pub access: HashMap<String, AccessGrant>,
    pub sso: HashMap<String, SsoSession>,
    pub brokerage: HashMap<String, Brokerage>,
    pub seen_jtis: HashMap<String, u64>,
    pub counters: Counters,
    pub issued: Vec<String>,
    pub oauth1a: Oauth1aState,
    /// The base URL clients are told to use; OAuth 1.0a signatures are checked against it.
    pub base_url: String,
    /// Users who can log in on the authorisation page: username → password.
    pub users: HashMap<String, String>,
    /// Users whose accounts are paper accounts (`is_paper` in `oauth/access_token`).
    pub paper_users: HashSet<String>,
    /// Interval of the WebSocket heartbeat messages.
    pub ws_heartbeat: Duration,
    pub faults: Faults,
    pub orders: OrderBook,
    /// Pacing enforcement, when on.
    pub pacing: Option<Pacer>,
    /// Set when the sandbox stops: open WebSockets close.
    pub stopping: tokio::sync::watch::Sender<bool>,
}

impl State {
    pub fn new(lifetimes: Lifetimes, clock: Arc<dyn Clock>) -> Self {
        Self {
            lifetimes,
            clock,
            clients: HashMap::new(),
            access: HashMap::new(),
            sso: HashMap::new(),
            brokerage: HashMap::new(),
            seen_jtis: HashMap::new(),
            counters: Counters::default(),
            issued: Vec::new(),
            oauth1a: Default::default(),
            base_url: String::new(),
            users: HashMap::new(),
            paper_users: HashSet::new(),
            ws_heartbeat: Duration::from_secs(10),
            faults: Default::default(),
            orders: OrderBook::default(),
            pacing: None,
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }

    pub fn now(&self) -> u64 {
        self.clock.now_unix()
    }

    /// Records a JWT's replay key until `exp`; false if it was seen before (a replay).
    pub fn remember_jti(&mut self, jti: &str, exp: u64) -> bool {
        let now = self.now();
        let skew = self.lifetimes.clock_skew.as_secs();
        self.seen_jtis.retain(|_, e| e.saturating_add(skew) >= now);
        if self.seen_jtis.contains_key(jti) {
            return false;
        }
        self.seen_jtis.insert(jti.to_owned(), exp);
        true
    }

    /// A new random token, remembered for leak scans.
    pub fn issue(&mut self, bytes: usize) -> String {
        let token = random_hex(bytes);
        self.issued.push(token.clone());
        token
    }

    /// The flags for the SSO session of `bearer`.
    pub fn flags(&self, bearer: &str, credential: &str) -> Flags {
        match self.brokerage.get(credential) {
            Some(b) if b.owner_bearer == bearer => Flags {
                authenticated: b.authenticated,
                competing: false,
                connected: b.connected,
            },
            Some(b) => Flags {
                authenticated: false,
                competing: b.authenticated,
                connected: true,
            },
            None => Flags {
                authenticated: false,
                competing: false,
                connected: false,
            },
        }
    }

    /// Whether `bearer` holds its user's brokerage session and it is authenticated and
    /// connected: what `iserver/*` calls need.
    pub fn has_live_bridge(&self, bearer: &str, credential: &str) -> bool {
        self.brokerage
            .get(credential)
            .is_some_and(|b| b.owner_bearer == bearer && b.authenticated && b.connected)
    }

    /// The one account of `credential`: IBKR's shape, `DU…` for a paper account, `U…` else.
    pub fn account_id(&self, credential: &str) -> String {
        let prefix = if self.paper_users.contains(credential) {
            "DU"
        } else {
            "U"
        };
        format!("{prefix}{:07}", user_id(credential) % 10_000_000)
    }

    /// Whether `bearer` holds its user's brokerage session (the "bridge" exists).
    pub fn has_bridge(&self, bearer: &str, credential: &str) -> bool {
        self.brokerage
            .get(credential)
            .is_some_and(|b| b.owner_bearer == bearer)
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens and keys stay out of Debug output.
        f.debug_struct("State")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// `bytes` random bytes as lowercase hex.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // Without a working system RNG no token can be issued safely; stopping is the only option.
    #[allow(clippy::expect_used)]
    aws_lc_rs::rand::fill(&mut buf).expect("the system random number generator is unavailable");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stable user id for a credential.
pub(crate) fn user_id(credential: &str) -> u64 {
    credential.bytes().fold(10_000_000u64, |acc, b| {
        (acc.wrapping_mul(31).wrapping_add(u64::from(b))) % 90_000_000 + 10_000_000
    })
}
