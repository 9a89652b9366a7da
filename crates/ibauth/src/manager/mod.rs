//! The session manager: keeps a brokerage session alive over either auth method — a tickle
//! loop with jitter; tokens renewed a margin before they expire; recovery when the session drops
//! (status → re-init → full re-login, each only if the previous did not help); backoff with
//! jitter on transient errors, honouring `Retry-After`; another host after `410 Gone`; a cap on
//! failed logins; one bounded logout on shutdown, on a signal, or when dropped. Its state is
//! watchable, and every transition and recovery action is a `tracing` event with its reason.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use ibauth::manager::{Policy, SessionManager, SessionState};
//! let client = ibauth::Oauth2Client::new(ibauth::Config::load(None)?)?;
//! let manager = SessionManager::new(client, Policy::load(None)?);
//! let mut state = manager.watch();
//! let running = manager.spawn();
//! state.wait_for(|s| s.state == SessionState::Authenticated).await?;
//! // … trade …
//! running.shutdown_on_signal().await; // SIGINT/SIGTERM: stop, and log out once
//! # Ok(()) }
//! ```

mod client;
pub(crate) mod policy;

pub use client::{Client, TokenExpiry, TokenKind};
pub use policy::Policy;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{oneshot, watch};

use crate::error::Error;
use crate::session::AuthStatus;
use crate::store::TokenStore;
use crate::store::shared::{self, Source};

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
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Status")
            .field("state", &self.state)
            .field(
                "session",
                &self.session.as_deref().map(crate::session::short_id),
            )
            .field("last_tickle", &self.last_tickle)
            .field("last_rtt", &self.last_rtt)
            .field("tokens", &self.tokens)
            .field("api_base", &self.api_base)
            .field("tickles", &self.tickles)
            .field("logins", &self.logins)
            .field("renewals", &self.renewals)
            .field("recoveries", &self.recoveries)
            .field("transient_failures", &self.transient_failures)
            .finish()
    }
}

/// Keeps one brokerage session alive.
pub struct SessionManager<C: Client> {
    client: C,
    policy: Policy,
    store: Option<Arc<dyn TokenStore>>,
    status: watch::Sender<Status>,
    failed_logins: u32,
    backoff: Duration,
}

/// A running manager. [`shutdown`](Running::shutdown) stops it and logs out once; dropping it
/// does the same in the background (while the runtime lives).
pub struct Running<C: Client> {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<C>,
    status: watch::Receiver<Status>,
}

/// What the loop does after a step.
enum Next {
    /// Run the next step after this wait.
    After(Duration),
    /// Nothing more to do until shut down (`maintain` off).
    Idle,
    /// Stop (failed).
    Stop,
}

impl<C: Client + 'static> SessionManager<C> {
    /// A manager for `client` (not started).
    pub fn new(client: C, policy: Policy) -> Self {
        let backoff = policy.min_backoff;
        let (status, _) = watch::channel(Status {
            state: SessionState::Connecting,
            session: None,
            last_tickle: None,
            last_rtt: None,
            tokens: client.tokens(),
            api_base: client.api_base(),
            tickles: 0,
            logins: 0,
            renewals: 0,
            recoveries: 0,
            transient_failures: 0,
        });
        Self {
            client,
            policy,
            store: None,
            status,
            failed_logins: 0,
            backoff,
        }
    }

    /// Keeps tokens in `store`: valid stored tokens are used instead of a first login, every
    /// login and renewal is saved, a refresh takes the store's lock and adopts what another
    /// process refreshed meanwhile, and the logout on shutdown clears them.
    pub fn with_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// A receiver of every status change.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Runs the loop on the runtime until shut down (or failed).
    pub fn spawn(self) -> Running<C> {
        let (stop, stopped) = oneshot::channel();
        let status = self.watch();
        let task = tokio::spawn(self.run(stopped));
        Running {
            stop: Some(stop),
            task,
            status,
        }
    }

    fn set(&self, state: SessionState, why: &str) {
        let changed = self.status.send_if_modified(|s| {
            let changed = s.state != state;
            s.state = state.clone();
            changed
        });
        if changed {
            tracing::info!(state = ?state, reason = why, "session state");
        }
    }

    fn state(&self) -> SessionState {
        self.status.borrow().state.clone()
    }

    fn refresh_tokens(&self) {
        let tokens = self.client.tokens();
        let api_base = self.client.api_base();
        self.status.send_if_modified(|s| {
            let changed = s.tokens != tokens || s.api_base != api_base;
            s.tokens = tokens;
            s.api_base = api_base;
            changed
        });
    }

    async fn run(mut self, mut stopped: oneshot::Receiver<()>) -> C {
        let mut next = Duration::ZERO;
        loop {
            // A dropped `Running` closes the channel, which stops the loop just the same.
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                _ = tokio::time::sleep(next) => {}
            }
            // A step in flight (a request, a login) is abandoned on shutdown: the logout
            // below must not wait behind it.
            let step = tokio::select! {
                biased;
                _ = &mut stopped => break,
                step = self.step() => step,
            };
            match step {
                Next::After(wait) => next = wait,
                Next::Idle => {
                    let _ = (&mut stopped).await;
                    break;
                }
                Next::Stop => break,
            }
        }
        self.log_out().await;
        self.client
    }

    async fn log_out(&mut self) {
        let state = self.state();
        if !self.policy.logout_on_shutdown
            || matches!(state, SessionState::Failed(_) | SessionState::LoggedOut)
            || !self.client.has_session_token()
        {
            return;
        }
        let before = self.client.stored_tokens(self.client.now_unix());
        let store = self.store.clone();
        let timeout = self.policy.shutdown_timeout;
        let logout = async {
            let result = self.client.logout().await;
            if let (Ok(_), Some(store), Some(before)) = (&result, &store, &before)
                && let Err(e) = shared::forget(store, before).await
            {
                tracing::warn!(error = %e, "cannot clear the stored tokens after logout");
            }
            result
        };
        match tokio::time::timeout(timeout, logout).await {
            Ok(Ok(_)) => self.set(SessionState::LoggedOut, "shutdown"),
            Ok(Err(e)) => tracing::warn!(error = %e, "logout on shutdown failed"),
            Err(_) => tracing::warn!(
                timeout_ms = self.policy.shutdown_timeout.as_millis() as u64,
                "logout on shutdown timed out"
            ),
        }
    }

    fn random_below(limit: Duration) -> Duration {
        let ms = limit.as_millis() as u64;
        if ms == 0 {
            return Duration::ZERO;
        }
        let mut b = [0u8; 8];
        let _ = aws_lc_rs::rand::fill(&mut b);
        Duration::from_millis(u64::from_le_bytes(b) % ms)
    }

    fn interval(&self) -> Duration {
        self.policy.tickle_interval + Self::random_below(self.policy.jitter)
    }

    /// One turn of the loop.
    async fn step(&mut self) -> Next {
        match self.state() {
            SessionState::Connecting if !self.policy.init_oauth => self.start_from_tokens().await,
            SessionState::Connecting | SessionState::Reauthenticating => self.full_login().await,
            SessionState::Failed(_) | SessionState::LoggedOut => Next::Stop,
            _ if !self.policy.maintain => Next::Idle,
            state => {
                if matches!(state, SessionState::Authenticated | SessionState::Competing)
                    && let Some(next) = self.renew_if_due().await
                {
                    return next;
                }
                self.tickle_and_recover().await
            }
        }
    }

    /// `init_oauth` off: use the tokens the client already holds.
    async fn start_from_tokens(&mut self) -> Next {
        if !self.client.has_session_token() {
            self.set(
                SessionState::Failed(FailReason {
                    permanent: true,
                    message: "init_oauth is off and the client holds no token: log in first, or turn init_oauth on".into(),
                }),
                "no token to start from",
            );
            return Next::Stop;
        }
        self.refresh_tokens();
        if !self.policy.init_brokerage_session {
            self.set(SessionState::Authenticated, "started from existing tokens");
            return self.after_start();
        }
        match self.client.init(self.policy.compete).await {
            Ok(status) => {
                self.apply_flags(&status, "started from existing tokens");
                self.after_start()
            }
            Err(e) => self.on_error(e, "init with existing tokens failed").await,
        }
    }

    fn after_start(&self) -> Next {
        if self.policy.maintain {
            Next::After(self.interval())
        } else {
            Next::Idle
        }
    }

    async fn full_login(&mut self) -> Next {
        tracing::info!(host = %self.client.api_base(), "logging in");
        let init = self.policy.init_brokerage_session;
        let compete = self.policy.compete;
        let store = self.store.clone();
        let margin = self.policy.renew_margin;
        let mut source = Source::Refreshed;
        let result = async {
            match &store {
                Some(store) => {
                    source = shared::refresh(
                        &mut self.client,
                        store,
                        margin,
                        true,
                        async |c: &mut C| c.login().await,
                    )
                    .await?
                    .0;
                }
                None => self.client.login().await?,
            }
            if init {
                self.client.init(compete).await.map(Some)
            } else {
                Ok(None)
            }
        }
        .await;
        self.refresh_tokens();
        match result {
            Ok(status) => {
                let again = self.status.borrow().logins > 0;
                self.failed_logins = 0;
                self.backoff = self.policy.min_backoff;
                let logged_in = source == Source::Refreshed;
                if !logged_in {
                    tracing::info!("using stored tokens (no new login)");
                }
                self.status.send_modify(|s| {
                    s.logins += u64::from(logged_in);
                    s.recoveries += u64::from(again);
                });
                match status {
                    Some(status) => self.apply_flags(&status, "logged in"),
                    None => self.set(
                        SessionState::Authenticated,
                        "logged in (no brokerage session)",
                    ),
                }
                self.after_start()
            }
            Err(e) => {
                self.failed_logins += 1;
                // 410 asks for another host or a fresh token: worth another try. So is any
                // rejection once these credentials have worked (IBKR answers oddly while it
                // restarts); the cap still stops a revoked key from hammering the login.
                let gone = e.status() == Some(410);
                let moved = gone && self.fail_over();
                let proven = self.status.borrow().logins > 0;
                let retry = e.is_transient() || gone || proven;
                if !retry || self.failed_logins >= self.policy.max_failed_logins {
                    let permanent = !e.is_transient() && !gone;
                    self.set(
                        SessionState::Failed(FailReason {
                            permanent,
                            message: e.to_string(),
                        }),
                        if retry {
                            "too many failed logins"
                        } else {
                            "login rejected"
                        },
                    );
                    return Next::Stop;
                }
                if moved {
                    return Next::After(Duration::ZERO);
                }
                self.status.send_modify(|s| s.transient_failures += 1);
                Next::After(self.back_off(&e))
            }
        }
    }

    fn apply_flags(&self, status: &AuthStatus, why: &str) {
        let state = if status.authenticated {
            SessionState::Authenticated
        } else if status.competing && !self.policy.compete {
            SessionState::Competing
        } else {
            SessionState::Reauthenticating
        };
        self.set(state, why);
    }

    /// The wait after a transient error: the server's `Retry-After` when it sent one (never
    /// less), otherwise exponential backoff with jitter ("equal jitter": half fixed, half random).
    fn back_off(&mut self, e: &Error) -> Duration {
        let base = self.backoff;
        self.backoff = (self.backoff * 2).min(self.policy.max_backoff);
        let wait = match e.retry_after() {
            Some(asked) => asked + Self::random_below(self.policy.min_backoff),
            None => base / 2 + Self::random_below(base / 2),
        };
        tracing::warn!(
            error = %e,
            wait_ms = wait.as_millis() as u64,
            retry_after_s = e.retry_after().map(|d| d.as_secs()),
            "transient failure, backing off"
        );
        wait
    }

    /// Moves to the next failover host after `410 Gone`; false if there is none to move to.
    fn fail_over(&mut self) -> bool {
        let hosts = &self.policy.failover_hosts;
        if hosts.is_empty() {
            return false;
        }
        let current = self.client.api_base();
        let at = hosts.iter().position(|h| same_host(&current, h));
        let next = at.map_or(0, |i| (i + 1) % hosts.len());
        if at == Some(next) {
            return false;
        }
        let host = hosts[next].clone();
        match self.client.switch_host(&host) {
            Ok(()) => {
                tracing::warn!(from = %current, to = %host, "410 Gone: moving to the next host");
                self.refresh_tokens();
                true
            }
            Err(e) => {
                tracing::error!(host = %host, error = %e, "cannot move to failover host");
                false
            }
        }
    }

    /// Renews tokens due within the margin; `None` when nothing was due.
    async fn renew_if_due(&mut self) -> Option<Next> {
        let now = self.client.now_unix();
        let due: Vec<TokenKind> = self
            .client
            .tokens()
            .iter()
            .filter(|t| t.due(now, self.policy.renew_margin))
            .map(|t| t.kind)
            .collect();
        if due.is_empty() {
            return None;
        }
        let held = self.state() == SessionState::Authenticated;
        let names: Vec<&str> = due.iter().map(|k| k.name()).collect();
        tracing::info!(tokens = ?names, "renewing tokens before they expire");
        let renewed = match self.store.clone() {
            Some(store) => {
                let margin = self.policy.renew_margin;
                let due = due.clone();
                shared::refresh(
                    &mut self.client,
                    &store,
                    margin,
                    false,
                    async |c: &mut C| c.renew(&due).await,
                )
                .await
                .map(|_| ())
            }
            None => self.client.renew(&due).await,
        };
        self.refresh_tokens();
        if let Err(e) = renewed {
            return Some(self.on_error(e, "token renewal failed").await);
        }
        self.status.send_modify(|s| s.renewals += 1);
        let session_token = due
            .iter()
            .any(|k| matches!(k, TokenKind::Bearer | TokenKind::LiveSessionToken));
        if session_token && held && self.policy.init_brokerage_session {
            // The brokerage session usually survives a new token; when it does not (a new
            // SSO session owns nothing yet), take it over: the session it competes with is
            // the one this manager held a moment ago.
            match self.client.status().await {
                Ok(status) if status.authenticated => {}
                _ => match self.client.init(true).await {
                    Ok(status) => self.apply_flags(&status, "re-initialised after renewal"),
                    Err(e) => return Some(self.on_error(e, "init after renewal failed").await),
                },
            }
        }
        Some(Next::After(Duration::ZERO))
    }

    async fn tickle_and_recover(&mut self) -> Next {
        let started = Instant::now();
        match self.client.tickle().await {
            Ok(tickle) => {
                self.backoff = self.policy.min_backoff;
                let rtt = started.elapsed();
                let was = self.state();
                let new_session = self.status.borrow().session.as_deref() != Some(&tickle.session);
                self.status.send_modify(|s| {
                    s.tickles += 1;
                    s.last_rtt = Some(rtt);
                    s.last_tickle = Some(SystemTime::now());
                    s.session = Some(tickle.session.clone());
                });
                if new_session
                    && let Some(store) = self.store.clone()
                    && let Some(mut doc) = self.client.stored_tokens(self.client.now_unix())
                {
                    doc.session_id = Some(tickle.session.clone());
                    if let Err(e) = shared::save(&store, doc).await {
                        tracing::warn!(error = %e, "cannot store the session id");
                    }
                }
                self.refresh_tokens();
                let flags = tickle.auth_status().clone();
                if flags.authenticated && flags.connected || !self.policy.init_brokerage_session {
                    if was == SessionState::Disconnected {
                        self.status.send_modify(|s| s.recoveries += 1);
                    }
                    self.set(SessionState::Authenticated, "tickle");
                } else if flags.competing && !self.policy.compete {
                    self.set(SessionState::Competing, "another login holds the session");
                } else if flags.authenticated {
                    self.recover("tickle: not connected").await;
                } else {
                    self.recover("tickle: not authenticated").await;
                }
                Next::After(self.interval())
            }
            Err(e) => self.on_error(e, "tickle failed").await,
        }
    }

    /// The one place errors of a running session are sorted: 410 moves host, 401 logs in
    /// again, transient trouble backs off, the rest goes through recovery.
    async fn on_error(&mut self, e: Error, what: &str) -> Next {
        match e.status() {
            Some(410) => {
                let moved = self.fail_over();
                let why = if moved {
                    "410 Gone: logging in on the next host"
                } else {
                    "410 Gone: logging in again"
                };
                tracing::warn!(error = %e, "{what}");
                self.set(SessionState::Reauthenticating, why);
                Next::After(Duration::ZERO)
            }
            Some(401) => {
                tracing::warn!(error = %e, "{what}");
                self.set(
                    SessionState::Reauthenticating,
                    "401: tokens no longer valid",
                );
                Next::After(Duration::ZERO)
            }
            // IBKR's way of saying the brokerage session is gone (or about to go), whatever
            // the status code: recover, do not just wait.
            _ if session_trouble(&e) => {
                tracing::warn!(error = %e, "{what}; recovering");
                self.recover(what).await;
                Next::After(self.interval())
            }
            _ if e.is_transient() => {
                self.status.send_modify(|s| s.transient_failures += 1);
                self.set(SessionState::Disconnected, "transient failure");
                Next::After(self.back_off(&e))
            }
            _ => {
                tracing::warn!(error = %e, "{what}; recovering");
                self.recover(what).await;
                Next::After(self.interval())
            }
        }
    }

    /// Status, then re-init, then a full re-login — each only if the previous did not help.
    async fn recover(&mut self, why: &str) {
        self.set(SessionState::Reauthenticating, why);
        if !self.policy.init_brokerage_session {
            return;
        }
        tracing::info!("recovery: re-checking the session status");
        if let Ok(status) = self.client.status().await
            && status.authenticated
            && status.connected
        {
            self.status.send_modify(|s| s.recoveries += 1);
            self.set(SessionState::Authenticated, "status: still authenticated");
            return;
        }
        tracing::info!("recovery: re-initialising the brokerage session");
        match self.client.init(self.policy.compete).await {
            Ok(status) if status.authenticated => {
                self.status.send_modify(|s| s.recoveries += 1);
                self.set(SessionState::Authenticated, "re-initialised");
            }
            Ok(status) if status.competing && !self.policy.compete => {
                self.set(SessionState::Competing, "another login holds the session");
            }
            // Still Reauthenticating: the next step logs in again.
            _ => tracing::info!("recovery: re-init did not help; logging in again"),
        }
    }
}

/// "no bridge" (no brokerage session) and "Please query /accounts first" (which IBKR sends
/// just before dropping one).
fn session_trouble(e: &Error) -> bool {
    match e {
        Error::Rejected { message, .. } => {
            let m = message.to_ascii_lowercase();
            m.contains("no bridge") || m.contains("please query /accounts first")
        }
        _ => false,
    }
}

/// Whether `base` (a URL) is the failover entry `host` (a host name or a URL).
fn same_host(base: &str, host: &str) -> bool {
    let as_url = |s: &str| {
        let text = if s.contains("://") {
            s.to_owned()
        } else {
            format!("https://{s}")
        };
        url::Url::parse(&text).ok()
    };
    match (as_url(base), as_url(host)) {
        (Some(a), Some(b)) => {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
        }
        _ => false,
    }
}

impl<C: Client> Running<C> {
    /// A receiver of every status change.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Stops the loop, logs out once (if the policy says so, within its `shutdown_timeout`),
    /// and returns the client.
    pub async fn shutdown(mut self) -> Option<C> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.ok()
    }

    /// Waits for SIGINT or SIGTERM (Ctrl-C elsewhere), or for the manager to fail, then
    /// shuts down as [`shutdown`](Self::shutdown) does. Handlers the application installed
    /// before still run: the signal is chained, not taken.
    pub async fn shutdown_on_signal(self) -> Option<C> {
        let mut status = self.status.clone();
        tokio::select! {
            _ = crate::signal::shutdown_signal() => {}
            _ = status.wait_for(|s| matches!(s.state, SessionState::Failed(_))) => {}
        }
        self.shutdown().await
    }
}

impl<C: Client> Drop for Running<C> {
    fn drop(&mut self) {
        // Closing the channel stops the loop; the task logs out on its own (if the runtime
        // is still running it).
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_entries_match_hosts_and_urls() {
        assert!(same_host("https://api.ibkr.com/", "api.ibkr.com"));
        assert!(same_host(
            "https://1.api.ibkr.com",
            "https://1.api.ibkr.com:443"
        ));
        assert!(!same_host("https://1.api.ibkr.com", "2.api.ibkr.com"));
        assert!(same_host("http://127.0.0.1:9000/", "http://127.0.0.1:9000"));
        assert!(!same_host("http://127.0.0.1:9000", "http://127.0.0.1:9001"));
        assert!(
            !same_host("http://127.0.0.1:9000", "127.0.0.1:9000"),
            "https implied"
        );
    }
}
