//! What each user (IBKR username) did, for judging a fleet of processes that share logins:
//! how often the user logged in, who kept its brokerage session alive, and whether its
//! brokerage session changed hands. Everything here is per user and small; nothing is ever
//! scanned across all users on a request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What one user did, as [`Control::user_stats`](crate::Control::user_stats) and
/// `GET /__sandbox/users/{user}` report it.
///
/// A *tickler* is a source IP address that called `tickle` for the user (the client port
/// is not stable under connection pooling; fleet members on separate hosts or network
/// namespaces have distinct addresses). Tickles count from the moment the request is
/// authenticated; WebSocket `tic` messages do not count.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UserStats {
    /// Logins: OAuth 2.0 SSO sessions (bearer tokens) opened plus OAuth 1.0a live session
    /// tokens issued for the user.
    pub logins: u64,
    /// OAuth 2.0 SSO sessions (bearer tokens) opened for the user.
    pub sso_sessions: u64,
    /// OAuth 1.0a live session tokens issued for the user.
    pub live_session_tokens: u64,
    /// OAuth 1.0a access tokens (grants) issued for the user: `oauth/access_token`,
    /// [`Control::issue_access_token`](crate::Control::issue_access_token) and bulk grants.
    pub access_tokens: u64,
    /// `ssodh/init` calls answered for the user.
    pub inits: u64,
    /// Brokerage sessions taken from another login with `compete` (the other one then sees
    /// `competing: true`). A fleet sharing one login never takes its own session over.
    pub takeovers: u64,
    /// `tickle` calls answered for the user.
    pub tickles: u64,
    /// The tickler addresses whose latest tickle is within the tickler window now, sorted.
    pub ticklers: Vec<IpAddr>,
    /// The most distinct tickler addresses ever seen within one tickler window.
    pub max_concurrent_ticklers: usize,
    /// The user's SSO sessions (bearers, or OAuth 1.0a access tokens with a live session
    /// token) alive now: opened, not expired, not logged out.
    pub live_sessions: usize,
    /// The most SSO sessions of the user alive at once (counted when one opens).
    pub max_live_sessions: usize,
    /// Brokerage sessions the user has now: 0 or 1. IBKR, like the sandbox, keeps one per
    /// user; a second login's `ssodh/init` with `compete` takes it over (see `takeovers`).
    pub brokerage_sessions: usize,
    /// Bearer tokens of the user refused because they came from another address than their
    /// SSO session was opened for.
    pub ip_mismatches: u64,
}

/// The running record behind [`UserStats`].
#[derive(Debug, Default)]
pub(crate) struct UserActivity {
    pub logins_oauth2: u64,
    pub logins_oauth1a: u64,
    pub access_tokens: u64,
    pub inits: u64,
    pub takeovers: u64,
    pub tickles: u64,
    pub ip_mismatches: u64,
    /// Each tickler address with the arrival of its latest tickle; only those within the
    /// window of the latest tickle are kept, so this holds a handful of entries.
    ticklers: Vec<(IpAddr, Instant)>,
    pub max_concurrent_ticklers: usize,
    /// Keys (in the SSO-session table) of the sessions opened for the user that may still be
    /// alive; pruned whenever one opens.
    pub sessions: Vec<String>,
    pub max_live_sessions: usize,
}

impl UserActivity {
    /// Records a tickle from `ip` at `at`; returns the number of distinct ticklers within
    /// `window` of it. Exact: a maximum over time of a sliding window's distinct count is
    /// reached in a window ending at some tickle.
    pub fn tickle(&mut self, ip: IpAddr, at: Instant, window: Duration) -> usize {
        self.tickles += 1;
        match self.ticklers.iter_mut().find(|(known, _)| *known == ip) {
            Some((_, last)) => *last = (*last).max(at),
            None => self.ticklers.push((ip, at)),
        }
        self.ticklers
            .retain(|(_, last)| at.saturating_duration_since(*last) <= window);
        let now = self.ticklers.len();
        self.max_concurrent_ticklers = self.max_concurrent_ticklers.max(now);
        now
    }

    /// The tickler addresses whose latest tickle is within `window` of `now`, sorted.
    pub fn ticklers(&self, now: Instant, window: Duration) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .ticklers
            .iter()
            .filter(|(_, last)| now.saturating_duration_since(*last) <= window)
            .map(|(ip, _)| *ip)
            .collect();
        ips.sort();
        ips
    }
}

/// Every user's activity, and the window that makes tickles concurrent.
#[derive(Debug)]
pub(crate) struct Activity {
    pub users: HashMap<String, UserActivity>,
    /// Tickles from two addresses this close together count as concurrent.
    pub tickler_window: Duration,
}

/// The default tickler window: IBKR's recommended tickle interval, so two processes that
/// each tickle about once a minute always show up as two ticklers, while a handover that
/// waits longer than a minute between the old tickler's last tickle and the new one's first
/// shows one.
pub(crate) const DEFAULT_TICKLER_WINDOW: Duration = Duration::from_secs(60);

impl Default for Activity {
    fn default() -> Self {
        Self {
            users: HashMap::new(),
            tickler_window: DEFAULT_TICKLER_WINDOW,
        }
    }
}

impl Activity {
    /// The record of `user`, created on first use.
    pub fn user(&mut self, user: &str) -> &mut UserActivity {
        self.users.entry(user.to_owned()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::UserActivity;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, Instant};

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn concurrency_is_distinct_addresses_within_one_window() {
        let window = Duration::from_secs(5);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut user = UserActivity::default();
        assert_eq!(user.tickle(ip(1), at(0), window), 1);
        assert_eq!(user.tickle(ip(1), at(3), window), 1);
        // A handover: the new tickler starts more than a window after the old one stopped.
        assert_eq!(user.tickle(ip(2), at(9), window), 1);
        assert_eq!(user.max_concurrent_ticklers, 1);
        // Split brain: the old one comes back.
        assert_eq!(user.tickle(ip(1), at(12), window), 2);
        assert_eq!(user.tickle(ip(3), at(14), window), 3);
        assert_eq!(user.max_concurrent_ticklers, 3);
        assert_eq!(user.ticklers(at(14), window), vec![ip(1), ip(2), ip(3)]);
        assert_eq!(user.ticklers(at(16), window), vec![ip(1), ip(3)]);
        assert_eq!(user.ticklers(at(30), window), Vec::<IpAddr>::new());
        assert_eq!(user.tickles, 5);
    }
}
