//! [`Control`]: fault injection and session control over a running sandbox.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::oauth1a::{self, IssuedAccessToken};
use crate::state::{
    self, Counters, FailWith, Flags, Pacer, PacingLimits, PlacedOrder, Shared, UserStats, lock,
};

/// Fault injection and session control over a running sandbox (also reachable over HTTP at
/// `/__sandbox/…` for tests that drive another process).
#[derive(Debug, Clone)]
pub struct Control {
    pub(crate) state: Shared,
}

impl Control {
    /// What the sandbox has answered so far.
    pub fn counters(&self) -> Counters {
        let state = lock(&self.state);
        Counters {
            faults_injected: state.faults.injected,
            ..state.counters
        }
    }

    /// The orders placed so far, oldest first (the latest 10 000 at most; `orders_placed`
    /// counts all).
    pub fn orders(&self) -> Vec<PlacedOrder> {
        lock(&self.state).orders.all().cloned().collect()
    }

    /// Turns pacing enforcement on with `limits`, or off with `None`. Either way the windows
    /// and the penalty box start empty.
    pub fn set_pacing(&self, limits: Option<PacingLimits>) {
        lock(&self.state).pacing = limits.map(Pacer::new);
    }

    /// Answers the next `n` API requests with `fail` instead of serving them.
    pub fn fail_next(&self, n: usize, fail: FailWith) {
        let mut state = lock(&self.state);
        state.faults.fail_next.extend(std::iter::repeat_n(fail, n));
    }

    /// Serves the next `n` API requests but closes the connection halfway through the answer.
    pub fn cut_next(&self, n: u32) {
        let mut state = lock(&self.state);
        state.faults.cut_next = state.faults.cut_next.saturating_add(n);
    }

    /// Delays every API response by `delay` (`None` to stop).
    pub fn delay_responses(&self, delay: Option<Duration>) {
        lock(&self.state).faults.delay = delay;
    }

    /// Drops `credential`'s brokerage session as IBKR does: later calls see
    /// `authenticated: false` until `ssodh/init` again.
    pub fn drop_session(&self, credential: &str) {
        if let Some(b) = lock(&self.state).brokerage.get_mut(credential) {
            b.authenticated = false;
            b.connected = false;
        }
    }

    /// Loses `credential`'s bridge to the backend: still authenticated, `connected: false`
    /// until `ssodh/init` again.
    pub fn disconnect(&self, credential: &str) {
        if let Some(b) = lock(&self.state).brokerage.get_mut(credential) {
            b.connected = false;
        }
    }

    /// Hands `credential`'s brokerage session to another login: the current one sees
    /// `competing: true` until it initialises again with `compete`.
    pub fn report_competing(&self, credential: &str) {
        if let Some(b) = lock(&self.state).brokerage.get_mut(credential) {
            b.owner_bearer = "another-login".to_owned();
            b.authenticated = true;
        }
    }

    /// Expires every token now: access tokens, SSO sessions (bearers) and live session tokens.
    pub fn expire_tokens_now(&self) {
        let mut state = lock(&self.state);
        let now = state.now();
        state.access.values_mut().for_each(|g| g.expires_at = now);
        state.sso.values_mut().for_each(|s| s.expires_at = now);
        state
            .oauth1a
            .lsts
            .values_mut()
            .for_each(|l| l.expires_at = now);
    }

    /// IBKR's nightly reset: every brokerage session ends and every session id changes (open
    /// WebSockets close at their next heartbeat); tokens stay valid.
    pub fn nightly_reset(&self) {
        let mut state = lock(&self.state);
        state.brokerage.clear();
        for session in state.sso.values_mut() {
            session.session_id = state::random_hex(16);
        }
    }

    /// Every token the sandbox has issued (for tests that scan output for leaks).
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state).issued.clone()
    }

    /// The brokerage flags as seen by the SSO session of `bearer`, if it is live.
    pub fn flags_for_bearer(&self, bearer: &str) -> Option<Flags> {
        let state = lock(&self.state);
        let session = state.sso.get(bearer)?;
        Some(state.flags(bearer, &session.credential))
    }

    /// Whether `credential` has a brokerage session.
    pub fn has_brokerage_session(&self, credential: &str) -> bool {
        lock(&self.state).brokerage.contains_key(credential)
    }

    /// Issues an OAuth 1.0a access token for `credential` under `consumer_key`: the token and
    /// its secret encrypted to the consumer's encryption key (base64), as IBKR's portal shows
    /// them. `None` if the consumer is unknown.
    pub fn issue_access_token(
        &self,
        consumer_key: &str,
        credential: &str,
    ) -> Option<(String, String)> {
        oauth1a::issue_access_token(&mut lock(&self.state), consumer_key, credential)
    }

    /// Issues OAuth 1.0a access tokens under `consumer_key` for `n` users named `prefix0` …
    /// `prefix{n−1}`, as [`Control::issue_access_token`] does for one: for a test that needs
    /// thousands of third-party grants at once (10 000 take well under a second: one RSA
    /// public-key encryption each, outside the sandbox's lock). A user may hold several grants;
    /// calling again with the same prefix gives those users another one. `None` if the
    /// consumer is unknown.
    pub fn issue_access_tokens(
        &self,
        consumer_key: &str,
        prefix: &str,
        n: usize,
    ) -> Option<Vec<IssuedAccessToken>> {
        oauth1a::issue_access_tokens(&self.state, consumer_key, prefix, n)
    }

    /// What `user` did so far: logins, ticklers, takeovers (all zero for a user never seen).
    pub fn user_stats(&self, user: &str) -> UserStats {
        lock(&self.state).user_stats(user)
    }

    /// [`UserStats`] of every user that did anything, by name. Reads every user: for a test's
    /// final check, not for a loop.
    pub fn all_user_stats(&self) -> BTreeMap<String, UserStats> {
        let state = lock(&self.state);
        state
            .activity
            .users
            .keys()
            .map(|user| (user.clone(), state.user_stats(user)))
            .collect()
    }

    /// The most distinct addresses that tickled `user` within one tickler window so far
    /// ([`SandboxBuilder::tickler_window`](crate::SandboxBuilder::tickler_window)): 1 for a
    /// fleet that keeps the user's session alive from one member at a time.
    pub fn max_concurrent_ticklers(&self, user: &str) -> usize {
        lock(&self.state)
            .activity
            .users
            .get(user)
            .map_or(0, |u| u.max_concurrent_ticklers)
    }

    /// The addresses whose latest tickle for `user` is within the tickler window now, sorted.
    pub fn ticklers(&self, user: &str) -> Vec<IpAddr> {
        let state = lock(&self.state);
        let window = state.activity.tickler_window;
        state
            .activity
            .users
            .get(user)
            .map(|u| u.ticklers(std::time::Instant::now(), window))
            .unwrap_or_default()
    }

    /// Changes the tickler window (see
    /// [`SandboxBuilder::tickler_window`](crate::SandboxBuilder::tickler_window)); the maxima
    /// seen so far stay.
    pub fn set_tickler_window(&self, window: Duration) {
        lock(&self.state).activity.tickler_window = window;
    }

    /// Forgets every user's activity ([`UserStats`]) and the activity counters
    /// (`ip_mismatches`, `brokerage_takeovers`, `max_concurrent_ticklers`), so a test can
    /// measure one phase on its own. Sessions, grants and the other counters stay.
    pub fn reset_user_stats(&self) {
        let mut state = lock(&self.state);
        state.activity.users.clear();
        state.counters.ip_mismatches = 0;
        state.counters.brokerage_takeovers = 0;
        state.counters.max_concurrent_ticklers = 0;
    }

    /// Lets `username` log in on the authorisation page with `password` (third-party flow).
    pub fn add_user(&self, username: &str, password: &str) {
        lock(&self.state)
            .users
            .insert(username.to_owned(), password.to_owned());
    }

    /// Copies this sandbox's OAuth 1.0a access tokens to `other`, as IBKR's numbered hosts
    /// share one account backend (for host-failover tests).
    pub fn share_access_tokens_with(&self, other: &Control) {
        let grants: Vec<_> = lock(&self.state)
            .oauth1a
            .tokens
            .iter()
            .map(|(token, grant)| (token.clone(), grant.clone()))
            .collect();
        lock(&other.state).oauth1a.tokens.extend(grants);
    }

    /// Gives every SSO session of `credential` a new session id, as IBKR's nightly reset does;
    /// open WebSockets of the old session are closed at their next heartbeat.
    pub fn rotate_session(&self, credential: &str) {
        let mut state = lock(&self.state);
        for session in state.sso.values_mut() {
            if session.credential == credential {
                session.session_id = state::random_hex(16);
            }
        }
    }
}
