//! The keep-alive inside a [`Session`]: a tickle loop with jitter; tokens renewed a margin
//! before they expire; recovery when the session drops (status → re-init → full re-login, each
//! only if the previous did not help); backoff with jitter on transient errors, honouring
//! `Retry-After`, and never counted as failed logins; another host after `410 Gone`; a cap on
//! rejected logins; one bounded logout on shutdown, on a signal, or when dropped. Recovery is
//! shared with the session's API calls: whoever meets a dropped session first recovers it, the
//! other finds it done.

use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::fleet::{Fleet, Role};
use super::sync as shared;
use super::{Session, SessionState, Status};
use crate::client::Client;
use crate::coord::{Event, Events};
use crate::error::Error;
use crate::tokens::{TokenKind, min_renewal_spacing};

use super::FailReason;

/// The running keep-alive of a session. [`shutdown`](Self::shutdown) stops it and logs out
/// once (if the settings say so); dropping it does the same in the background (while the
/// runtime lives).
pub struct KeepAlive {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    session: Session,
}

impl std::fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeepAlive")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
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

struct Loop {
    session: Session,
    failed_logins: u32,
    backoff: Duration,
    /// The session's epoch when this step began: if it moved, another task (an API call's
    /// recovery) changed the tokens meanwhile, and what failed with the old ones is retried
    /// rather than recovered twice.
    seen_epoch: u64,
    /// When this loop last obtained tokens (a login, or the start of a renewal): the next
    /// renewal waits [`min_renewal_spacing`] after it, whatever lifetimes the server grants.
    last_tokens: Option<Instant>,
    /// Renewals were held back for the spacing (warned about once).
    spaced: bool,
    /// A follower asked this leader to recover the session.
    recovery_asked: bool,
}

impl KeepAlive {
    pub(crate) fn spawn(session: Session) -> Self {
        let (stop, stopped) = oneshot::channel();
        let keeper = Loop {
            backoff: session.inner.policy.min_backoff,
            seen_epoch: session.inner.epoch(),
            session: session.clone(),
            failed_logins: 0,
            last_tokens: None,
            spaced: false,
            recovery_asked: false,
        };
        let task = tokio::spawn(keeper.run(stopped));
        Self {
            stop: Some(stop),
            task,
            session,
        }
    }

    /// The session kept alive (clones share it).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// A receiver of every status change.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.session.watch()
    }

    /// Stops the loop, logs out once (if the settings say so, within `shutdown_timeout`), and
    /// returns the final status (`None` if the loop had panicked).
    pub async fn shutdown(mut self) -> Option<Status> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let done = (&mut self.task).await;
        self.session
            .inner
            .keepalive
            .store(false, std::sync::atomic::Ordering::SeqCst);
        done.ok().map(|()| self.session.status())
    }

    /// Waits for SIGINT or SIGTERM (Ctrl-C elsewhere), or for the keep-alive to fail, then
    /// shuts down as [`shutdown`](Self::shutdown) does. Handlers the application installed
    /// before still run: the signal is chained, not taken.
    pub async fn shutdown_on_signal(self) -> Option<Status> {
        let mut status = self.watch();
        tokio::select! {
            _ = crate::signal::shutdown_signal() => {}
            _ = status.wait_for(|s| matches!(s.state, SessionState::Failed(_))) => {}
        }
        self.shutdown().await
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        // The loop stops on the closed channel and logs out on its own (while the runtime runs).
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn random_below(limit: Duration) -> Duration {
    let ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Duration::ZERO;
    }
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    Duration::from_millis(u64::from_le_bytes(b) % ms)
}

impl Loop {
    fn inner(&self) -> &super::Inner {
        &self.session.inner
    }

    async fn run(self, stopped: oneshot::Receiver<()>) {
        match self.inner().fleet.clone() {
            Some(fleet) => self.run_fleet(stopped, fleet).await,
            None => self.run_alone(stopped).await,
        }
    }

    async fn run_alone(mut self, mut stopped: oneshot::Receiver<()>) {
        let mut next = Duration::ZERO;
        loop {
            // A dropped handle closes the channel, which stops the loop just the same.
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                _ = tokio::time::sleep(next) => {}
            }
            // A step in flight (a request, a login) is abandoned on shutdown: the logout
            // below must not wait behind it.
            self.seen_epoch = self.inner().epoch();
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
    }

    async fn log_out(&mut self) {
        let inner = self.inner();
        let state = inner.state();
        if !inner.policy.logout_on_shutdown
            || matches!(state, SessionState::Failed(_) | SessionState::LoggedOut)
        {
            return;
        }
        let timeout = inner.policy.shutdown_timeout;
        let logout = async {
            let mut client = inner.client.lock().await;
            if !client.has_session_token() {
                return None;
            }
            Some(inner.logout_locked(&mut client).await)
        };
        match tokio::time::timeout(timeout, logout).await {
            Ok(None) | Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => tracing::warn!(error = %e, "logout on shutdown failed"),
            Err(_) => tracing::warn!(
                timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                "logout on shutdown timed out"
            ),
        }
    }

    fn interval(&self) -> Duration {
        let policy = &self.inner().policy;
        policy.tickle_interval + random_below(policy.jitter)
    }

    /// One turn of the loop.
    async fn step(&mut self) -> Next {
        let policy = &self.inner().policy;
        match self.inner().state() {
            SessionState::Connecting if !policy.init_oauth => self.start_from_tokens().await,
            // Tokens restored before the keep-alive started (a call, `connect`) have never
            // been refused: a tickle checks them, and only a refusal leads to a login.
            SessionState::Connecting if self.inner().signing().is_some() => {
                self.tickle_and_recover().await
            }
            SessionState::Connecting | SessionState::Reauthenticating => self.full_login().await,
            SessionState::Failed(_) | SessionState::LoggedOut => Next::Stop,
            _ if !policy.maintain => Next::Idle,
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

    fn after_start(&self) -> Next {
        if self.inner().policy.maintain {
            Next::After(self.interval())
        } else {
            Next::Idle
        }
    }

    /// `init_oauth` off: use the tokens the client holds or the store has, never a login.
    async fn start_from_tokens(&mut self) -> Next {
        let restored = self.session.restore().await;
        let session = self.session.clone();
        let inner = &session.inner;
        let mut client = inner.client.lock().await;
        if let Err(e) = restored {
            tracing::warn!(error = %e, "cannot read the stored tokens");
        }
        if !client.has_session_token() {
            inner.set(
                SessionState::Failed(FailReason {
                    permanent: true,
                    message: "init_oauth is off and there is no token to start from: log in first, or turn init_oauth on".into(),
                }),
                "no token to start from",
            );
            return Next::Stop;
        }
        if !inner.policy.init_brokerage_session {
            inner.set(SessionState::Authenticated, "started from existing tokens");
            return self.after_start();
        }
        match client.init(inner.policy.compete).await {
            Ok(status) => {
                inner.apply_flags(&status, "started from existing tokens");
                self.after_start()
            }
            Err(e) => {
                drop(client);
                self.on_error(e, "init with existing tokens failed").await
            }
        }
    }

    async fn full_login(&mut self) -> Next {
        let session = self.session.clone();
        let inner = &session.inner;
        let mut client = inner.client.lock().await;
        // An API call's recovery (or a connect) may have logged in since this step began:
        // verify with a tickle instead of logging in again.
        if inner.epoch() != self.seen_epoch && client.has_session_token() {
            inner.set(SessionState::Authenticated, "recovered by another task");
            return Next::After(Duration::ZERO);
        }
        tracing::info!(host = %client.api_base(), "logging in");
        let again = inner.status.borrow().logins > 0;
        match inner.log_in(&mut client, false).await {
            Ok((source, _, _)) => {
                self.last_tokens = Some(Instant::now());
                self.failed_logins = 0;
                self.backoff = inner.policy.min_backoff;
                if source != shared::Source::Refreshed {
                    tracing::info!("using stored tokens (no new login)");
                }
                if again {
                    inner.status.send_modify(|s| s.recoveries += 1);
                }
                self.after_start()
            }
            Err(e) => {
                // Network trouble and 5xx say nothing about the credentials: back off and keep
                // trying, without counting a failed login. Rejections count toward the cap.
                let transient = e.is_transient();
                if !transient {
                    self.failed_logins += 1;
                }
                // 410 asks for another host or a fresh token: worth another try. So is any
                // rejection once these credentials have worked (IBKR answers oddly while it
                // restarts); the cap still stops a revoked key from hammering the login.
                let gone = e.status() == Some(410);
                let moved = gone && self.fail_over(&mut client);
                let proven = inner.status.borrow().logins > 0;
                let retry = transient || gone || proven;
                if !retry || self.failed_logins >= inner.policy.max_failed_logins {
                    let permanent = !transient && !gone;
                    inner.set(
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
                inner.status.send_modify(|s| s.transient_failures += 1);
                let wait = self.back_off(&e);
                inner.status.send_modify(|s| {
                    s.detail = Some(format!(
                        "login failed, trying again in {:.1} s: {e}",
                        wait.as_secs_f64()
                    ));
                });
                Next::After(wait)
            }
        }
    }

    /// The wait after a transient error: the server's `Retry-After` when it sent one (never
    /// less), otherwise exponential backoff with jitter ("equal jitter": half fixed, half random).
    fn back_off(&mut self, e: &Error) -> Duration {
        let policy = &self.session.inner.policy;
        let base = self.backoff;
        self.backoff = (self.backoff.saturating_mul(2)).min(policy.max_backoff);
        let wait = match e.retry_after() {
            Some(asked) => asked + random_below(policy.min_backoff),
            None => base / 2 + random_below(base / 2),
        };
        tracing::warn!(
            error = %e,
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            retry_after_s = e.retry_after().map(|d| d.as_secs()),
            "transient failure, backing off"
        );
        wait
    }

    /// Moves to the next failover host after `410 Gone`; false if there is none to move to.
    fn fail_over(&self, client: &mut Box<dyn Client>) -> bool {
        let inner = self.inner();
        let hosts = &inner.policy.failover_hosts;
        if hosts.is_empty() {
            return false;
        }
        let current = client.api_base().to_string();
        let at = hosts.iter().position(|h| same_host(&current, h));
        let next = at.map_or(0, |i| (i + 1) % hosts.len());
        if at == Some(next) {
            return false;
        }
        let host = hosts[next].clone();
        match client.switch_host(&host) {
            Ok(()) => {
                tracing::warn!(from = %current, to = %host, "410 Gone: moving to the next host");
                inner.publish(&**client, None);
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
        let session = self.session.clone();
        let inner = &session.inner;
        let mut client = inner.client.lock().await;
        let now = client.now_unix();
        let margin = inner.policy.renew_margin;
        let due: Vec<TokenKind> = client
            .tokens()
            .iter()
            .filter(|t| t.due(now, margin))
            .map(|t| t.kind)
            .collect();
        if due.is_empty() {
            return None;
        }
        // Tokens due again this soon after the last were obtained: the server grants absurd
        // lifetimes (0 s, an LST already expired, `ssoExpires: 0`). Renewing now would loop;
        // the tickle goes on, and a token that really ran out is met by the 401 recovery.
        let spacing = min_renewal_spacing(margin);
        if let Some(at) = self.last_tokens
            && at.elapsed() < spacing
        {
            if !self.spaced {
                self.spaced = true;
                let names: Vec<&str> = due.iter().map(|k| k.name()).collect();
                tracing::warn!(
                    tokens = ?names,
                    since_ms = u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX),
                    spacing_ms = u64::try_from(spacing.as_millis()).unwrap_or(u64::MAX),
                    "tokens due again right after they were obtained: the server's lifetimes are implausible; renewing at most once per spacing"
                );
            }
            return None;
        }
        self.last_tokens = Some(Instant::now());
        let held = inner.state() == SessionState::Authenticated;
        let names: Vec<&str> = due.iter().map(|k| k.name()).collect();
        tracing::info!(tokens = ?names, "renewing tokens before they expire");
        let renewed = match (inner.fleet.clone(), inner.store.clone()) {
            (Some(fleet), _) => inner.fleet_renew(&fleet, &mut client, &due).await,
            (None, Some(store)) => {
                shared::refresh(&mut *client, &store, margin, false, renewal(due.clone()))
                    .await
                    .map(|(_, doc, _)| Some(doc))
            }
            (None, None) => client.renew(&due).await.map(|()| None),
        };
        match renewed {
            Ok(doc) => inner.publish(&**client, doc),
            Err(e) => {
                inner.show_tokens(&**client);
                drop(client);
                return Some(self.on_error(e, "token renewal failed").await);
            }
        }
        inner.status.send_modify(|s| s.renewals += 1);
        let session_token = due
            .iter()
            .any(|k| matches!(k, TokenKind::Bearer | TokenKind::LiveSessionToken));
        if session_token && held && inner.policy.init_brokerage_session {
            // The brokerage session usually survives a new token; when it does not (a new
            // SSO session owns nothing yet), take it over: the session it competes with is
            // the one this keep-alive held a moment ago.
            match client.status().await {
                Ok(status) if status.authenticated => {}
                _ => match client.init(true).await {
                    Ok(status) => inner.apply_flags(&status, "re-initialised after renewal"),
                    Err(e) => {
                        drop(client);
                        return Some(self.on_error(e, "init after renewal failed").await);
                    }
                },
            }
        }
        Some(Next::After(Duration::ZERO))
    }

    async fn tickle_and_recover(&mut self) -> Next {
        let session = self.session.clone();
        let inner = &session.inner;
        let mut client = inner.client.lock().await;
        match inner.tickle_locked(&mut client).await {
            Ok(tickle) => {
                self.backoff = inner.policy.min_backoff;
                let was = inner.state();
                let flags = tickle.auth_status().clone();
                if flags.authenticated && flags.connected || !inner.policy.init_brokerage_session {
                    if was == SessionState::Disconnected {
                        inner.status.send_modify(|s| s.recoveries += 1);
                    }
                    inner.set(SessionState::Authenticated, "tickle");
                } else if flags.competing && !inner.policy.compete {
                    inner.set(SessionState::Competing, "another login holds the session");
                } else if flags.authenticated {
                    inner.revive(&mut client, "tickle: not connected").await;
                } else {
                    inner.revive(&mut client, "tickle: not authenticated").await;
                }
                Next::After(self.interval())
            }
            Err(e) => {
                drop(client);
                self.on_error(e, "tickle failed").await
            }
        }
    }

    /// The one place errors of a running session are sorted: 410 moves host, 401 logs in
    /// again, transient trouble backs off, the rest goes through recovery.
    async fn on_error(&mut self, e: Error, what: &str) -> Next {
        let session = self.session.clone();
        let inner = &session.inner;
        if let Error::Fleet(problem) = &e {
            // The store, not IBKR: a lost lease makes this process a follower (the loop sees
            // it at once); an unreachable store is waited out.
            tracing::warn!(error = %e, "{what}");
            let wait = if problem.is_transient() {
                self.back_off(&e)
            } else {
                Duration::ZERO
            };
            return Next::After(wait);
        }
        if inner.epoch() != self.seen_epoch && !e.is_transient() {
            // The tokens changed while this step ran (another task recovered the session):
            // what failed used the old ones. Try again with the new.
            tracing::info!(error = %e, "{what}, but the session was recovered meanwhile");
            return Next::After(Duration::ZERO);
        }
        match e.status() {
            Some(410) => {
                let moved = {
                    let mut client = inner.client.lock().await;
                    self.fail_over(&mut client)
                };
                let why = if moved {
                    "410 Gone: logging in on the next host"
                } else {
                    "410 Gone: logging in again"
                };
                tracing::warn!(error = %e, "{what}");
                inner.set(SessionState::Reauthenticating, why);
                Next::After(Duration::ZERO)
            }
            Some(401) => {
                tracing::warn!(error = %e, "{what}");
                inner.set(
                    SessionState::Reauthenticating,
                    "401: tokens no longer valid",
                );
                Next::After(Duration::ZERO)
            }
            // IBKR's way of saying the brokerage session is gone (or about to go), whatever
            // the status code: recover, do not just wait.
            _ if session_trouble(&e) => {
                tracing::warn!(error = %e, "{what}; recovering");
                let mut client = inner.client.lock().await;
                inner.revive(&mut client, what).await;
                Next::After(self.interval())
            }
            _ if e.is_transient() => {
                inner.status.send_modify(|s| s.transient_failures += 1);
                inner.set(SessionState::Disconnected, "transient failure");
                let wait = self.back_off(&e);
                inner.status.send_modify(|s| {
                    s.detail = Some(format!(
                        "{what}, trying again in {:.1} s: {e}",
                        wait.as_secs_f64()
                    ));
                });
                Next::After(wait)
            }
            _ => {
                tracing::warn!(error = %e, "{what}; recovering");
                let mut client = inner.client.lock().await;
                inner.revive(&mut client, what).await;
                Next::After(self.interval())
            }
        }
    }
}

impl Loop {
    /// The keep-alive of a fleet member: a lease keeper runs beside it; while this process
    /// leads, the usual steps run (abandoned the moment the lease is lost); while it follows,
    /// it adopts what the leader stores as soon as it is stored, and asks for nothing else.
    /// On shutdown a leader hands over to live followers (releasing the lease) instead of
    /// logging out; the last member logs out.
    async fn run_fleet(mut self, mut stopped: oneshot::Receiver<()>, fleet: Arc<Fleet>) {
        fleet.keep.store(true, Ordering::SeqCst);
        let identity = self.inner().identity.clone();
        let (stop_keeper, keeper_stopped) = watch::channel(false);
        let keeper = tokio::spawn(keep_lease(fleet.clone(), identity.clone(), keeper_stopped));
        let mut role = fleet.role.subscribe();
        let mut events = fleet.coord.subscribe(&identity).await.ok();
        let mut next = Duration::ZERO;
        loop {
            let leading = fleet.lease().is_some();
            tokio::select! {
                biased;
                _ = &mut stopped => break,
                _ = tokio::time::sleep(next) => {}
                changed = role.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now = role.borrow_and_update().clone();
                    self.inner().status.send_if_modified(|s| {
                        let changed = s.role != now;
                        s.role = now.clone();
                        changed
                    });
                    next = Duration::ZERO;
                    continue;
                }
                event = next_event(&mut events) => {
                    match event {
                        Some(Event::RecoveryRequested) if leading => {
                            tracing::info!("fleet: a follower's calls are refused; checking the session now");
                            self.recovery_asked = true;
                            next = Duration::ZERO;
                        }
                        Some(Event::Saved(_) | Event::Resync | Event::Removed) if !leading => next = Duration::ZERO,
                        Some(_) => {}
                        None => {
                            // Closed or lagged: subscribe again, and look at the state now.
                            events = fleet.coord.subscribe(&identity).await.ok();
                            next = Duration::ZERO;
                        }
                    }
                    if !next.is_zero() {
                        continue;
                    }
                }
            }
            if fleet.lease().is_some() {
                self.seen_epoch = self.inner().epoch();
                let lost = role.clone();
                let step = tokio::select! {
                    biased;
                    _ = &mut stopped => break,
                    _ = lost_lease(lost) => Next::After(Duration::ZERO),
                    step = self.lead_step() => step,
                };
                match step {
                    Next::After(wait) => next = wait,
                    // Nothing to do until an event or a role change.
                    Next::Idle => next = Duration::from_secs(3600),
                    Next::Stop => break,
                }
            } else {
                next = self.follow_step(&fleet).await;
            }
        }
        let _ = stop_keeper.send(true);
        let _ = keeper.await;
        // Off the member list first, so that a member stopping at the same moment does not
        // hand the session over to this one.
        if let Err(e) = fleet.coord.leave(&identity, &fleet.member).await {
            tracing::debug!(error = %e, "fleet: cannot leave the member list; it expires");
        }
        let leading = fleet.lease().is_some() && fleet.confirm().await.ok().flatten().is_some();
        if leading {
            if fleet.others_alive(&identity).await {
                tracing::info!(
                    "fleet: stopping; handing the session over to the other members (no logout)"
                );
            } else {
                self.log_out().await;
            }
            fleet.release().await;
        } else {
            self.log_out_if_last(&fleet, &identity).await;
        }
        fleet.keep.store(false, Ordering::SeqCst);
    }

    /// A follower stopping: when no other member is left — the leader handed the session
    /// over to this one a moment ago, before the lease keeper could take it, or the leader is
    /// gone — this is the last member out, and it logs out under the lease. A session another
    /// member already logged out (its document removed) is left alone.
    async fn log_out_if_last(&mut self, fleet: &Fleet, identity: &str) {
        // A lease held while no member is listed is being let go: a leader stopping at the
        // same moment, deciding (or logging out) before it releases. Waited for a while.
        let deadline = Instant::now() + fleet.ttl.min(self.inner().policy.shutdown_timeout);
        loop {
            if fleet.others_alive(identity).await {
                return;
            }
            match fleet.lead(identity).await {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(None) => {
                    tracing::info!(
                        "fleet: the lease is still held by a process no longer listed; leaving the session to it"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fleet: cannot take the lease to log out; the session is left to expire");
                    return;
                }
            }
        }
        if fleet.has_document(identity).await {
            tracing::info!("fleet: the last member stopping; logging out");
            let inner = self.inner();
            {
                let mut client = inner.client.lock().await;
                // The leader may have stored tokens this member has not adopted yet.
                match inner
                    .fleet_restore(fleet, &mut client, Some(fleet.version()))
                    .await
                {
                    Ok(Some(stored)) => inner.publish(&**client, Some(stored)),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "fleet: cannot read the stored tokens before logging out")
                    }
                }
            }
            self.log_out().await;
        }
        fleet.release().await;
    }

    /// A leader's step; a follower's request for a recovery first checks the session.
    async fn lead_step(&mut self) -> Next {
        if std::mem::take(&mut self.recovery_asked)
            && matches!(
                self.inner().state(),
                SessionState::Authenticated | SessionState::Competing
            )
        {
            let session = self.session.clone();
            let inner = &session.inner;
            let mut client = inner.client.lock().await;
            if let Err(e) = inner.fleet_recover_for_followers(&mut client).await {
                drop(client);
                return self
                    .on_error(e, "recovery asked by a follower failed")
                    .await;
            }
        }
        self.step().await
    }

    /// A follower's step: adopt what the leader stored, show where the session stands.
    async fn follow_step(&mut self, fleet: &Fleet) -> Duration {
        let session = self.session.clone();
        let inner = &session.inner;
        let mut client = inner.client.lock().await;
        match inner
            .fleet_restore(fleet, &mut client, Some(fleet.version()))
            .await
        {
            Ok(Some(stored)) => {
                inner.publish(&**client, Some(stored));
                tracing::info!("fleet: using the leader's new tokens");
            }
            Ok(None) => {}
            Err(e @ Error::IpBound { .. }) => {
                inner.set(
                    SessionState::Failed(FailReason {
                        permanent: true,
                        message: e.to_string(),
                    }),
                    "the fleet's session is bound to another IP",
                );
                return Duration::from_secs(3600);
            }
            Err(e) => tracing::warn!(error = %e, "fleet: cannot read the leader's tokens"),
        }
        let now = client.now_unix();
        let usable = client.stored_tokens(now).is_some_and(|d| d.usable(now, 0));
        if usable {
            inner.set(SessionState::Authenticated, "following the fleet's leader");
        } else if !matches!(inner.state(), SessionState::Failed(_)) {
            inner.set(SessionState::Connecting, "waiting for the fleet's leader");
        }
        self.interval()
    }
}

/// The next event of a feed; `None` when it closed or lagged (or there is none: then never).
async fn next_event(events: &mut Option<Events>) -> Option<Event> {
    match events {
        Some(feed) => feed.recv().await.ok(),
        None => std::future::pending().await,
    }
}

/// Resolves when this process is no longer the leader.
async fn lost_lease(mut role: watch::Receiver<Option<Role>>) {
    let _ = role
        .wait_for(|r| !matches!(r, Some(Role::Leader { .. })))
        .await;
}

/// Holds (or takes) the lease and sends heartbeats every third of its ttl, and at once when
/// the lease is released or the store reconnects.
async fn keep_lease(fleet: Arc<Fleet>, identity: String, mut stop: watch::Receiver<bool>) {
    let period = (fleet.ttl / 3).max(Duration::from_millis(100));
    let mut events = fleet.coord.subscribe(&identity).await.ok();
    loop {
        let held = fleet.holds();
        let outcome = if held {
            fleet.confirm().await.map(|_| ())
        } else {
            fleet.lead(&identity).await.map(|_| ())
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "fleet: cannot reach the store to hold the lease");
        }
        if let Err(e) = fleet.beat(&identity).await {
            tracing::debug!(error = %e, "fleet: heartbeat failed");
        }
        let deadline = tokio::time::Instant::now() + period;
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => return,
                _ = tokio::time::sleep_until(deadline) => break,
                event = next_event(&mut events) => match event {
                    Some(Event::Released | Event::Resync) => break,
                    Some(_) => {}
                    None => {
                        events = fleet.coord.subscribe(&identity).await.ok();
                        break;
                    }
                },
            }
        }
    }
}

/// Renews `due` (for [`shared::refresh`]).
fn renewal(
    due: Vec<TokenKind>,
) -> impl for<'a> FnOnce(&'a mut Box<dyn Client>) -> crate::client::BoxFuture<'a, Result<(), Error>> + Send
{
    move |c| Box::pin(async move { c.renew(&due).await })
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
