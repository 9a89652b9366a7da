//! The session manager: keeps a brokerage session alive over either auth method — a tickle
//! loop with jitter, recovery when the session drops (status → re-init → full re-login, each
//! only if the previous did not help), backoff on transient errors, a cap on failed logins,
//! and one logout on shutdown. Its state is watchable.
//!
//! ```no_run
//! # async fn run() -> Result<(), ibauth::Error> {
//! use ibauth::manager::{Policy, SessionManager, SessionState};
//! let client = ibauth::Oauth2Client::new(ibauth::Config::load(None)?)?;
//! let manager = SessionManager::new(client, Policy::default());
//! let mut state = manager.watch();
//! let running = manager.spawn();
//! state.wait_for(|s| s.state == SessionState::Authenticated).await.ok();
//! running.shutdown().await; // logs out once
//! # Ok(()) }
//! ```

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::error::Error;
use crate::oauth1a::Oauth1aClient;
use crate::oauth2::Oauth2Client;
use crate::session::{AuthStatus, Logout, Tickle};

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

/// The observable status: state plus the last tickle. `Debug` shows only the start of the
/// session id (it doubles as the WebSocket cookie).
#[derive(Clone, PartialEq, Eq)]
pub struct Status {
    /// The state.
    pub state: SessionState,
    /// The session id from the last tickle.
    pub session: Option<String>,
    /// Round-trip time of the last successful tickle.
    pub last_rtt: Option<Duration>,
    /// Successful tickles so far.
    pub tickles: u64,
    /// Full logins so far (the first included).
    pub logins: u64,
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Status")
            .field("state", &self.state)
            .field(
                "session",
                &self.session.as_deref().map(crate::session::short_id),
            )
            .field("last_rtt", &self.last_rtt)
            .field("tickles", &self.tickles)
            .field("logins", &self.logins)
            .finish()
    }
}

/// What the manager does, and how often.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Time between tickles (IBKR: about 60 s).
    pub tickle_interval: Duration,
    /// Up to this much is added at random to each interval.
    pub jitter: Duration,
    /// Take the session over from other logins.
    pub compete: bool,
    /// Consecutive failed logins before giving up (`Failed`).
    pub max_failed_logins: u32,
    /// First backoff after a transient error; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest backoff.
    pub max_backoff: Duration,
    /// Log out when the manager is shut down.
    pub logout_on_shutdown: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            tickle_interval: Duration::from_secs(60),
            jitter: Duration::from_secs(5),
            compete: true,
            max_failed_logins: 5,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            logout_on_shutdown: true,
        }
    }
}

/// What the manager needs of a client; implemented for both auth methods.
pub trait Client: Send {
    /// Gets fresh tokens (access token + bearer, or a live session token).
    fn login(&mut self) -> impl Future<Output = Result<(), Error>> + Send;
    /// `ssodh/init` with `compete`.
    fn init(&mut self, compete: bool) -> impl Future<Output = Result<AuthStatus, Error>> + Send;
    /// `iserver/auth/status`.
    fn status(&mut self) -> impl Future<Output = Result<AuthStatus, Error>> + Send;
    /// `tickle`.
    fn tickle(&mut self) -> impl Future<Output = Result<Tickle, Error>> + Send;
    /// `logout`.
    fn logout(&mut self) -> impl Future<Output = Result<Logout, Error>> + Send;
}

impl Client for Oauth2Client {
    async fn login(&mut self) -> Result<(), Error> {
        self.request_access_token().await?;
        self.create_sso_session().await?;
        self.validate().await.map(|_| ())
    }
    async fn init(&mut self, compete: bool) -> Result<AuthStatus, Error> {
        self.init_brokerage_session_with(compete).await
    }
    async fn status(&mut self) -> Result<AuthStatus, Error> {
        self.auth_status().await
    }
    async fn tickle(&mut self) -> Result<Tickle, Error> {
        Oauth2Client::tickle(self).await
    }
    async fn logout(&mut self) -> Result<Logout, Error> {
        Oauth2Client::logout(self).await
    }
}

impl Client for Oauth1aClient {
    async fn login(&mut self) -> Result<(), Error> {
        self.request_live_session_token().await.map(|_| ())
    }
    async fn init(&mut self, compete: bool) -> Result<AuthStatus, Error> {
        self.init_brokerage_session_with(compete).await
    }
    async fn status(&mut self) -> Result<AuthStatus, Error> {
        self.auth_status().await
    }
    async fn tickle(&mut self) -> Result<Tickle, Error> {
        Oauth1aClient::tickle(self).await
    }
    async fn logout(&mut self) -> Result<Logout, Error> {
        Oauth1aClient::logout(self).await
    }
}

/// Keeps one brokerage session alive.
pub struct SessionManager<C: Client> {
    client: C,
    policy: Policy,
    status: watch::Sender<Status>,
    failed_logins: u32,
    backoff: Duration,
}

/// A running manager; [`shutdown`](Running::shutdown) stops it and logs out once.
pub struct Running<C: Client> {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<C>,
}

impl<C: Client + 'static> SessionManager<C> {
    /// A manager for `client` (not started).
    pub fn new(client: C, policy: Policy) -> Self {
        let backoff = policy.min_backoff;
        let (status, _) = watch::channel(Status {
            state: SessionState::Connecting,
            session: None,
            last_rtt: None,
            tickles: 0,
            logins: 0,
        });
        Self {
            client,
            policy,
            status,
            failed_logins: 0,
            backoff,
        }
    }

    /// A receiver of every status change.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Runs the loop on the runtime until shut down.
    pub fn spawn(self) -> Running<C> {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(self.run(stopped));
        Running {
            stop: Some(stop),
            task,
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

    async fn run(mut self, mut stopped: oneshot::Receiver<()>) -> C {
        let mut next = Duration::ZERO;
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tokio::time::sleep(next) => {}
            }
            next = match self.step().await {
                Some(wait) => wait,
                None => break,
            };
        }
        if self.policy.logout_on_shutdown
            && !matches!(self.status.borrow().state, SessionState::Failed(_))
        {
            match self.client.logout().await {
                Ok(_) => self.set(SessionState::LoggedOut, "shutdown"),
                Err(e) => tracing::warn!(error = %e, "logout on shutdown failed"),
            }
        }
        self.client
    }

    fn interval(&self) -> Duration {
        let jitter_ms = self.policy.jitter.as_millis() as u64;
        let extra = if jitter_ms == 0 {
            0
        } else {
            let mut b = [0u8; 8];
            let _ = aws_lc_rs::rand::fill(&mut b);
            u64::from_le_bytes(b) % jitter_ms
        };
        self.policy.tickle_interval + Duration::from_millis(extra)
    }

    /// One turn of the loop; the wait before the next, or `None` to stop.
    async fn step(&mut self) -> Option<Duration> {
        let state = self.status.borrow().state.clone();
        match state {
            SessionState::Connecting | SessionState::Reauthenticating => self.full_login().await,
            SessionState::Failed(_) | SessionState::LoggedOut => None,
            _ => Some(self.tickle_and_recover().await),
        }
    }

    async fn full_login(&mut self) -> Option<Duration> {
        let result = async {
            self.client.login().await?;
            self.client.init(self.policy.compete).await
        }
        .await;
        match result {
            Ok(status) => {
                self.failed_logins = 0;
                self.backoff = self.policy.min_backoff;
                self.status.send_modify(|s| s.logins += 1);
                self.apply_flags(&status, "logged in");
                Some(self.interval())
            }
            Err(e) => {
                self.failed_logins += 1;
                if !e.is_transient() || self.failed_logins >= self.policy.max_failed_logins {
                    self.set(
                        SessionState::Failed(FailReason {
                            permanent: !e.is_transient(),
                            message: e.to_string(),
                        }),
                        "login failed",
                    );
                    return None;
                }
                Some(self.back_off(&e))
            }
        }
    }

    fn apply_flags(&self, status: &AuthStatus, why: &str) {
        let state = if status.authenticated {
            SessionState::Authenticated
        } else if status.competing {
            SessionState::Competing
        } else {
            SessionState::Reauthenticating
        };
        self.set(state, why);
    }

    fn back_off(&mut self, e: &Error) -> Duration {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.policy.max_backoff);
        tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "transient failure, backing off");
        wait
    }

    async fn tickle_and_recover(&mut self) -> Duration {
        let started = Instant::now();
        match self.client.tickle().await {
            Ok(tickle) => {
                self.backoff = self.policy.min_backoff;
                let rtt = started.elapsed();
                self.status.send_modify(|s| {
                    s.tickles += 1;
                    s.last_rtt = Some(rtt);
                    s.session = Some(tickle.session.clone());
                });
                let flags = tickle.auth_status().clone();
                if flags.authenticated {
                    self.set(SessionState::Authenticated, "tickle");
                } else if flags.competing && !self.policy.compete {
                    self.set(SessionState::Competing, "another login holds the session");
                } else {
                    self.recover("tickle: not authenticated").await;
                }
                self.interval()
            }
            Err(e) if e.status() == Some(401) => {
                self.set(
                    SessionState::Reauthenticating,
                    "401: tokens no longer valid",
                );
                Duration::ZERO
            }
            Err(e) if e.is_transient() => {
                self.set(SessionState::Disconnected, "transient failure");
                self.back_off(&e)
            }
            Err(e) => {
                tracing::warn!(error = %e, "tickle failed; recovering");
                self.recover("tickle failed").await;
                self.interval()
            }
        }
    }

    /// Status, then re-init, then a full re-login — each only if the previous did not help.
    async fn recover(&mut self, why: &str) {
        self.set(SessionState::Reauthenticating, why);
        if let Ok(status) = self.client.status().await
            && status.authenticated
        {
            self.set(SessionState::Authenticated, "status: still authenticated");
            return;
        }
        match self.client.init(self.policy.compete).await {
            Ok(status) if status.authenticated => {
                self.set(SessionState::Authenticated, "re-initialised");
            }
            // Still Reauthenticating: the next step logs in again.
            _ => {}
        }
    }
}

impl<C: Client> Running<C> {
    /// Stops the loop, logs out once (if the policy says so), and returns the client.
    pub async fn shutdown(mut self) -> Option<C> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.ok()
    }
}
