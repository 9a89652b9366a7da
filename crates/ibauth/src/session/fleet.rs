//! A session that is one member of a fleet: tokens in a shared store ([`crate::coord`]),
//! sealed with the fleet's key; one leader per identity, the holder of its lease, logs in,
//! renews, recovers and saves; followers only adopt what it saved, and ask it to recover when
//! their calls are refused. Every write goes through the lease (compare-and-set on its
//! generation), so a leader that lost its lease — paused, partitioned — cannot overwrite its
//! successor: the write is refused and it steps down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::sync::Source;
use super::{Inner, SessionState, login_then_init};
use crate::brokerage::AuthStatus;
use crate::client::Client;
use crate::coord::{Acquired, CoordError, Coordinator, Events, Keyring, Lease, Member};
use crate::error::Error;
use crate::store::StoredTokens;

/// A session's part in a fleet, as its status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This process holds the lease: it logs in, tickles and recovers for the fleet.
    Leader {
        /// The lease's fencing generation.
        generation: u64,
    },
    /// Another process leads; this one signs its calls with the tokens it stored.
    Follower,
}

/// A lease as this process holds it: valid, as far as it knows, until `until` (measured from
/// before the call that granted or renewed it, so never later than the store's expiry).
#[derive(Debug, Clone)]
struct Held {
    lease: Lease,
    until: Instant,
}

/// How a session takes part in a fleet.
pub(crate) struct Fleet {
    pub(crate) coord: Arc<dyn Coordinator>,
    pub(crate) keyring: Keyring,
    /// This session's name as a lease holder and member.
    pub(crate) member: String,
    pub(crate) ttl: Duration,
    /// How long a follower waits for its leader's tokens.
    pub(crate) wait: Duration,
    held: Mutex<Option<Held>>,
    /// A keep-alive runs: the lease is kept between calls instead of given back after a login.
    pub(crate) keep: AtomicBool,
    /// The version of the stored document the client's tokens came from or were saved as.
    version: AtomicU64,
    pub(crate) role: watch::Sender<Option<Role>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("store", &self.coord.describe())
            .field("member", &self.member)
            .field("role", &*self.role.borrow())
            .finish_non_exhaustive()
    }
}

/// What a follower's wait ended with.
enum Waited {
    /// The leader's tokens (a newer document), restored into the client.
    Adopted(Box<StoredTokens>),
    /// The lease came free and is ours now.
    Lead(Lease),
}

impl Fleet {
    pub(crate) fn new(
        coord: Arc<dyn Coordinator>,
        keyring: Keyring,
        ttl: Duration,
        wait: Duration,
    ) -> Self {
        Self {
            coord,
            keyring,
            member: crate::coord::holder_name(),
            ttl,
            wait,
            held: Mutex::new(None),
            keep: AtomicBool::new(false),
            version: AtomicU64::new(0),
            role: watch::channel(None).0,
        }
    }

    fn held(&self) -> MutexGuard<'_, Option<Held>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lease, if this process holds it and it has not run out by the local clock.
    pub(crate) fn lease(&self) -> Option<Lease> {
        self.held()
            .as_ref()
            .filter(|h| h.until > Instant::now())
            .map(|h| h.lease.clone())
    }

    /// Whether this process believes it holds the lease, even past its local expiry (the
    /// store decides at the next renewal).
    pub(crate) fn holds(&self) -> bool {
        self.held().is_some()
    }

    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    fn set_role(&self, role: Role) {
        self.role.send_if_modified(|r| {
            let changed = r.as_ref() != Some(&role);
            *r = Some(role);
            changed
        });
    }

    fn lost(&self, why: &str) {
        let was = self.held().take();
        if let Some(was) = was {
            tracing::warn!(
                generation = was.lease.generation,
                reason = why,
                "fleet: lease lost; stepping down to follower"
            );
        }
        self.set_role(Role::Follower);
    }

    /// Takes the lease, or renews it if this process holds it; `None` when another process
    /// holds it.
    pub(crate) async fn lead(&self, identity: &str) -> Result<Option<Lease>, Error> {
        let started = Instant::now();
        match self.coord.acquire(identity, &self.member, self.ttl).await? {
            Acquired::Granted(lease) => {
                let fresh = self
                    .lease()
                    .is_none_or(|l| l.generation != lease.generation);
                if fresh {
                    tracing::info!(
                        generation = lease.generation,
                        store = %self.coord.describe(),
                        "fleet: took the lease; leading"
                    );
                }
                *self.held() = Some(Held {
                    lease: lease.clone(),
                    until: started + self.ttl,
                });
                self.set_role(Role::Leader {
                    generation: lease.generation,
                });
                Ok(Some(lease))
            }
            Acquired::Held(info) => {
                if self.held().is_some() {
                    self.lost("another process holds the lease");
                } else {
                    self.set_role(Role::Follower);
                }
                tracing::debug!(leader = %info.holder, generation = info.generation, "fleet: following");
                Ok(None)
            }
        }
    }

    /// Confirms the lease with the store before acting as leader (a renewal): `None` when
    /// this process does not hold it, or no longer does (then it steps down).
    pub(crate) async fn confirm(&self) -> Result<Option<Lease>, Error> {
        let Some(held) = self.held().clone() else {
            return Ok(None);
        };
        let started = Instant::now();
        match self.coord.renew(&held.lease, self.ttl).await {
            Ok(()) => {
                if let Some(h) = self.held().as_mut().filter(|h| h.lease == held.lease) {
                    h.until = started + self.ttl;
                }
                Ok(Some(held.lease))
            }
            Err(CoordError::Fenced { current, .. }) => {
                tracing::warn!(
                    generation = held.lease.generation,
                    current,
                    "fleet: the store refused this process's lease renewal (a stale write): another process leads now"
                );
                self.lost("renewal refused");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lease back, unless a keep-alive keeps it.
    pub(crate) async fn let_go(&self) {
        if !self.keep.load(Ordering::SeqCst) {
            self.release().await;
        }
    }

    /// Gives the lease back (followers take over at once).
    pub(crate) async fn release(&self) {
        let held = self.held().take();
        if let Some(held) = held {
            if let Err(e) = self.coord.release(&held.lease).await {
                tracing::warn!(error = %e, "fleet: cannot release the lease; it expires by itself");
            }
            self.set_role(Role::Follower);
        }
    }

    /// The stored document of `identity` and its version: `None` when there is none, or when
    /// it does not open (damaged: it is replaced at the next login). A document sealed with a
    /// key this process lacks is an error: using it blind would log in over the fleet.
    async fn load(&self, identity: &str) -> Result<Option<(StoredTokens, u64)>, Error> {
        let Some(sealed) = self.coord.load(identity).await? else {
            return Ok(None);
        };
        let plain = match self.keyring.open(identity, &sealed.key_id, &sealed.bytes) {
            Ok(plain) => plain,
            Err(e @ crate::coord::KeyringError::UnknownKey { .. }) => {
                return Err(CoordError::Key(e).into());
            }
            Err(e) => {
                tracing::warn!(error = %e, "fleet: ignoring the stored document");
                return Ok(None);
            }
        };
        match serde_json::from_slice::<StoredTokens>(&plain) {
            Ok(doc) if doc.identity == identity => Ok(Some((doc, sealed.version))),
            Ok(_) => {
                tracing::warn!("fleet: the stored document names another identity; ignored");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(error = %e, "fleet: the stored document does not parse; ignored");
                Ok(None)
            }
        }
    }

    /// Whether a session document is stored for `identity` (a logout removes it); `false`
    /// when the store cannot say.
    pub(crate) async fn has_document(&self, identity: &str) -> bool {
        matches!(self.coord.load(identity).await, Ok(Some(_)))
    }

    /// Seals and stores `doc` under `lease`; a refused write means the lease is lost.
    pub(crate) async fn save(&self, lease: &Lease, doc: &StoredTokens) -> Result<u64, Error> {
        let plain =
            zeroize::Zeroizing::new(serde_json::to_vec(doc).map_err(|e| CoordError::Corrupt {
                store: self.coord.describe(),
                detail: format!("cannot encode the session document: {e}"),
            })?);
        let sealed = self
            .keyring
            .seal(&lease.identity, &plain)
            .map_err(CoordError::from)?;
        match self.coord.store(lease, &sealed).await {
            Ok(version) => {
                self.version.store(version, Ordering::SeqCst);
                Ok(version)
            }
            Err(e @ CoordError::Fenced { .. }) => {
                tracing::warn!(error = %e, "fleet: the store refused a write under a stale lease");
                self.lost("write refused");
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends a heartbeat as a member of `identity`'s fleet.
    pub(crate) async fn beat(&self, identity: &str) -> Result<(), Error> {
        let member = Member {
            id: self.member.clone(),
            leader: self.lease().is_some(),
            about: format!("{} pid {}", crate::coord::hostname(), std::process::id()),
            seen_ago: Duration::ZERO,
        };
        // Listed for two renewal periods: one missed beat does not drop a member.
        self.coord
            .heartbeat(identity, &member, self.ttl)
            .await
            .map_err(Error::from)
    }

    /// Whether other members of `identity` are alive (a leader stopping hands over to them
    /// instead of logging out).
    pub(crate) async fn others_alive(&self, identity: &str) -> bool {
        match self.coord.members(identity).await {
            Ok(members) => members.iter().any(|m| m.id != self.member),
            Err(e) => {
                tracing::warn!(error = %e, "fleet: cannot list the members; assuming others run");
                true
            }
        }
    }
}

/// Whether `stored` can serve `client` now (its credentials, valid beyond `margin`).
fn fits(client: &dyn Client, stored: &StoredTokens, margin: Duration) -> bool {
    let now = client.now_unix();
    stored.identity == client.identity()
        && stored.usable(now, 0)
        && !stored.expiries().iter().any(|t| t.due(now, margin))
}

impl Inner {
    /// Restores the stored tokens into `client` if they fit and are newer than `after` (a
    /// version) or other than the ones it holds; checks the public IP an OAuth 2.0 session is
    /// bound to first.
    pub(crate) async fn fleet_restore(
        &self,
        fleet: &Fleet,
        client: &mut Box<dyn Client>,
        after: Option<u64>,
    ) -> Result<Option<StoredTokens>, Error> {
        let Some((doc, version)) = fleet.load(&self.identity).await? else {
            return Ok(None);
        };
        client.adopt_credentials(&doc);
        let ours = client.stored_tokens(client.now_unix());
        let other = ours.as_ref().is_none_or(|o| !o.same_session_token(&doc));
        let newer = after.is_some_and(|v| version > v);
        if !(other || newer) || !fits(&**client, &doc, self.reuse_margin) {
            return Ok(None);
        }
        if let Some(bearer) = &doc.bearer
            && let Some(here) = client.bound_ip().await?
            && here != bearer.ip
        {
            return Err(Error::IpBound {
                session_ip: bearer.ip,
                here,
            });
        }
        if !client.restore_tokens(&doc) {
            return Ok(None);
        }
        fleet.version.store(version, Ordering::SeqCst);
        Ok(Some(doc))
    }

    /// Waits until the leader stores tokens newer than `after` (then restores them), or
    /// until the lease comes free (then takes it) — at most the fleet's wait, plus a lease's
    /// ttl (a leader that died must run out first).
    async fn follow(
        &self,
        fleet: &Fleet,
        client: &mut Box<dyn Client>,
        after: Option<u64>,
        mut events: Option<Events>,
    ) -> Result<Waited, Error> {
        let started = Instant::now();
        let deadline = started + fleet.wait + fleet.ttl;
        let poll = (fleet.ttl / 3).max(Duration::from_millis(100));
        loop {
            if let Some(doc) = self.fleet_restore(fleet, client, after).await? {
                return Ok(Waited::Adopted(Box::new(doc)));
            }
            if let Some(lease) = fleet.lead(&self.identity).await? {
                return Ok(Waited::Lead(lease));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CoordError::NoLeader {
                    identity: self.identity.clone(),
                    waited: now - started,
                }
                .into());
            }
            let nap = poll.min(deadline - now);
            match events.as_mut() {
                Some(feed) => {
                    // Any event is a reason to look again; a quiet store is polled.
                    let _ = tokio::time::timeout(nap, feed.recv()).await;
                }
                None => tokio::time::sleep(nap).await,
            }
        }
    }

    /// A login for the fleet: by the leader (taking the lease if it is free), adopting what a
    /// previous leader stored if it is still good; a follower waits for its leader's tokens.
    pub(crate) async fn fleet_log_in(
        &self,
        fleet: &Fleet,
        client: &mut Box<dyn Client>,
        force: bool,
        after: Option<u64>,
    ) -> Result<(Source, Option<StoredTokens>, Option<AuthStatus>), Error> {
        // Subscribed before anything is read, so no save between the two is missed.
        let events = match fleet.coord.subscribe(&self.identity).await {
            Ok(events) => Some(events),
            Err(e) => {
                tracing::warn!(error = %e, "fleet: no change feed; polling");
                None
            }
        };
        let lease = match fleet.lead(&self.identity).await? {
            Some(lease) => lease,
            None if force => {
                return Err(Error::NotReady {
                    step: crate::error::Step::Api,
                    reason: "another process leads this fleet's session: a forced login must run on the leader (or stop it first)",
                });
            }
            None => match self.follow(fleet, client, after, events).await? {
                Waited::Adopted(doc) => {
                    tracing::info!("fleet: using the leader's tokens");
                    return Ok((Source::Adopted, Some(*doc), None));
                }
                Waited::Lead(lease) => lease,
            },
        };
        let result = self.lead_login(fleet, client, &lease, force, after).await;
        fleet.let_go().await;
        result
    }

    /// The leader's login: tokens a previous leader stored are adopted if they are good and
    /// not the ones just refused; otherwise a login (and `ssodh/init`), saved under the lease.
    async fn lead_login(
        &self,
        fleet: &Fleet,
        client: &mut Box<dyn Client>,
        lease: &Lease,
        force: bool,
        after: Option<u64>,
    ) -> Result<(Source, Option<StoredTokens>, Option<AuthStatus>), Error> {
        if !force && let Some(doc) = self.fleet_restore(fleet, client, after).await? {
            tracing::info!("fleet: continuing with the stored tokens (no new login)");
            return Ok((Source::Stored, Some(doc), None));
        }
        // The lease is confirmed right before the login: a process paused since it took it
        // must not log in over its successor.
        if fleet.confirm().await?.is_none() {
            return Err(CoordError::Fenced {
                identity: lease.identity.clone(),
                generation: lease.generation,
                current: None,
            }
            .into());
        }
        let login = login_then_init(self.policy.init_brokerage_session, self.policy.compete);
        let initialised = login(client).await?;
        let Some(doc) = client.stored_tokens(client.now_unix()) else {
            return Err(CoordError::Corrupt {
                store: fleet.coord.describe(),
                detail: "the login left the client without tokens".into(),
            }
            .into());
        };
        fleet.save(lease, &doc).await?;
        Ok((Source::Refreshed, Some(doc), initialised))
    }

    /// Recovery of a refused session in a fleet: the leader (or whoever finds the lease free)
    /// revives it and saves (so followers retry); a follower asks the leader and waits for it.
    pub(crate) async fn fleet_recover(
        &self,
        fleet: &Fleet,
        client: &mut Box<dyn Client>,
        why: &str,
    ) -> Result<(), Error> {
        let seen = fleet.version();
        let lease = match fleet.confirm().await? {
            Some(lease) => Some(lease),
            None => fleet.lead(&self.identity).await?,
        };
        let Some(lease) = lease else {
            tracing::info!(
                reason = why,
                "fleet: asking the leader to recover the session"
            );
            if let Err(e) = fleet.coord.request_recovery(&self.identity).await {
                tracing::warn!(error = %e, "fleet: cannot reach the leader; waiting for it anyway");
            }
            self.fleet_log_in(fleet, client, false, Some(seen)).await?;
            self.publish(&**client, None);
            return Ok(());
        };
        let result = async {
            match self.revive(client, why).await {
                SessionState::Authenticated => {
                    // Same tokens, but followers waiting on a newer version retry now.
                    if let Some(doc) = client.stored_tokens(client.now_unix()) {
                        fleet.save(&lease, &doc).await?;
                    }
                    Ok(())
                }
                SessionState::Competing => Err(Error::NotReady {
                    step: crate::error::Step::SsodhInit,
                    reason: "another login holds the brokerage session and `compete` is off",
                }),
                _ => {
                    let again = self.status.borrow().logins > 0;
                    let login = self
                        .lead_login(fleet, client, &lease, false, Some(seen))
                        .await;
                    self.finish_login(&**client, login)?;
                    if again {
                        self.status.send_modify(|s| s.recoveries += 1);
                    }
                    Ok(())
                }
            }
        }
        .await;
        fleet.let_go().await;
        result
    }

    /// The leader's answer to a follower whose calls are refused: the session is checked
    /// (status, re-init, or a new login) and saved again, so waiting followers retry.
    pub(crate) async fn fleet_recover_for_followers(
        &self,
        client: &mut Box<dyn Client>,
    ) -> Result<(), Error> {
        let Some(fleet) = self.fleet.clone() else {
            return Ok(());
        };
        self.fleet_recover(&fleet, client, "a follower's calls are refused")
            .await
    }

    /// A leader's renewal of `due`, saved under the lease (the login's time and the session
    /// id kept); refused when this process no longer leads.
    pub(crate) async fn fleet_renew(
        &self,
        fleet: &Fleet,
        client: &mut Box<dyn Client>,
        due: &[crate::tokens::TokenKind],
    ) -> Result<Option<StoredTokens>, Error> {
        let Some(lease) = fleet.confirm().await? else {
            return Err(CoordError::Fenced {
                identity: self.identity.clone(),
                generation: 0,
                current: None,
            }
            .into());
        };
        client.renew(due).await?;
        let Some(mut doc) = client.stored_tokens(client.now_unix()) else {
            return Ok(None);
        };
        if let Some(stored) = self.current().stored {
            doc.created_at = stored.created_at;
            doc.session_id = stored.session_id;
        }
        fleet.save(&lease, &doc).await?;
        Ok(Some(doc))
    }

    /// Saves the client's tokens for the fleet if this process leads (a session id learnt
    /// from a tickle); followers never write.
    pub(crate) async fn fleet_save_if_leading(&self, fleet: &Fleet, doc: &StoredTokens) {
        let Some(lease) = fleet.lease() else {
            return;
        };
        if let Err(e) = fleet.save(&lease, doc).await {
            tracing::warn!(error = %e, "fleet: cannot store the session");
        }
    }

    /// An explicit logout in a fleet: it ends the session every member uses, so it runs under
    /// the lease (taken if free); while another process leads, it is refused with what to do.
    pub(crate) async fn fleet_logout(
        &self,
        fleet: &Fleet,
        client: &mut Box<dyn Client>,
    ) -> Result<Option<crate::brokerage::Logout>, Error> {
        let lease = match fleet.confirm().await? {
            Some(lease) => lease,
            None => match fleet.lead(&self.identity).await? {
                Some(lease) => lease,
                None => {
                    return Err(Error::NotReady {
                        step: crate::error::Step::Logout,
                        reason: "another process leads this fleet's session: stop it to log out (the last member to stop logs out)",
                    });
                }
            },
        };
        let result = async {
            if !client.has_session_token() {
                match self.fleet_restore(fleet, client, None).await? {
                    Some(stored) => self.publish(&**client, Some(stored)),
                    None => return Ok(None),
                }
            }
            self.logout_locked(client).await.map(Some)
        }
        .await;
        let _ = lease;
        fleet.release().await;
        result
    }

    /// After a logout: the stored document goes, if this process leads.
    pub(crate) async fn fleet_forget(&self, fleet: &Fleet) {
        if let Some(lease) = fleet.lease()
            && let Err(e) = fleet.coord.remove(&lease).await
        {
            tracing::warn!(error = %e, "fleet: cannot remove the stored session after logout");
        }
    }
}
