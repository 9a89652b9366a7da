//! Where a session stands, as every user of it can watch it.

use std::time::{Duration, SystemTime};

use crate::brokerage::Tickle;
use crate::tokens::TokenExpiry;

/// Where the brokerage session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionState {
    /// Logging in for the first time.
    Connecting,
    /// Authenticated and kept alive.
    Authenticated,
    /// Another login holds the session and `compete` is off.
    Competing,
    /// The last call failed for a transient reason; retrying with backoff.
    Disconnected,
    /// Recovering: re-checking status, re-initialising, or logging in again.
    Reauthenticating,
    /// Stopped retrying (see the reason).
    Failed(FailReason),
    /// Logged out on shutdown.
    LoggedOut,
}

/// Why the manager stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailReason {
    /// A rejection that retrying will not fix (bad credentials, …), as opposed to the cap on
    /// attempts being reached through transient trouble.
    pub permanent: bool,
    /// What happened.
    pub message: String,
}

/// The observable status. `Debug` shows only the start of the session id (it doubles as the
/// WebSocket cookie).
#[derive(Clone, PartialEq, Eq)]
pub struct Status {
    /// The state.
    pub state: SessionState,
    /// The session id from the last tickle.
    pub session: Option<String>,
    /// When the last successful tickle was answered.
    pub last_tickle: Option<SystemTime>,
    /// The last successful tickle's answer (its `raw` holds every field IBKR sent).
    pub tickle: Option<Tickle>,
    /// Round-trip time of the last successful tickle.
    pub last_rtt: Option<Duration>,
    /// The tokens held and when they expire.
    pub tokens: Vec<TokenExpiry>,
    /// The API base URL in use (it changes after `410 Gone` with failover hosts).
    pub api_base: String,
    /// Successful tickles so far.
    pub tickles: u64,
    /// Full logins so far (the first included).
    pub logins: u64,
    /// Token renewals before expiry so far.
    pub renewals: u64,
    /// Recoveries so far: a dropped session brought back by re-checking, re-initialising or
    /// logging in again.
    pub recoveries: u64,
    /// Transient failures so far (each followed by a backoff).
    pub transient_failures: u64,
    /// Why the session is in its state, when that is news: what failed and how long the
    /// keep-alive waits before trying again.
    pub detail: Option<String>,
    /// In a fleet: whether this process leads (holds the lease) or follows; `None` outside a
    /// fleet (or before the keep-alive learnt it).
    pub role: Option<super::Role>,
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Status")
            .field("state", &self.state)
            .field(
                "session",
                &self.session.as_deref().map(crate::brokerage::short_id),
            )
            .field("last_tickle", &self.last_tickle)
            .field("tickle", &self.tickle)
            .field("last_rtt", &self.last_rtt)
            .field("tokens", &self.tokens)
            .field("api_base", &self.api_base)
            .field("tickles", &self.tickles)
            .field("logins", &self.logins)
            .field("renewals", &self.renewals)
            .field("recoveries", &self.recoveries)
            .field("transient_failures", &self.transient_failures)
            .field("detail", &self.detail)
            .field("role", &self.role)
            .finish()
    }
}

impl SessionState {
    /// Short machine-friendly name (`connecting`, `authenticated`, …).
    pub fn name(&self) -> &'static str {
        match self {
            SessionState::Connecting => "connecting",
            SessionState::Authenticated => "authenticated",
            SessionState::Competing => "competing",
            SessionState::Disconnected => "disconnected",
            SessionState::Reauthenticating => "reauthenticating",
            SessionState::Failed(_) => "failed",
            SessionState::LoggedOut => "logged_out",
        }
    }
}

impl Status {
    pub(crate) fn new(tokens: Vec<TokenExpiry>, api_base: String) -> Self {
        Self {
            state: SessionState::Connecting,
            session: None,
            last_tickle: None,
            tickle: None,
            last_rtt: None,
            tokens,
            api_base,
            tickles: 0,
            logins: 0,
            renewals: 0,
            recoveries: 0,
            transient_failures: 0,
            detail: None,
            role: None,
        }
    }
}
