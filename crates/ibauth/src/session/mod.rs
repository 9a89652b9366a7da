//! [`Session`]: the one way to *use* an authenticated IBKR session — from application code,
//! from every command of the `ibauth` binary, and from the keep-alive.
//!
//! A session is built from one configuration of any auth method ([`crate::AuthConfig`]). It
//! restores tokens from the token store and reuses them while valid; it logs in only when it
//! must, under the store's lock, adopting tokens another process refreshed meanwhile; it saves
//! every change. Calls to any Web API endpoint are authorised afresh on every attempt and paced
//! before they are sent. When IBKR refuses a call for authentication (401,
//! `authenticated:false`, `no bridge`), every task that hit it waits on *one* recovery —
//! status, then re-init, then a new login — and retries once; nothing else is ever repeated.
//! The handle is cheap to clone and can be used from many tasks at once.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // ./config.yaml (or $IBAUTH_CONFIG) and IBAUTH_* / IBIND_* variables; any auth method.
//! let session = ibauth::Session::from_config(None, None)?.build()?;
//! let accounts: serde_json::Value = session.get("portfolio/accounts").await?.json()?;
//! let snapshot = session
//!     .request(ibauth::Method::GET, "iserver/marketdata/snapshot")
//!     .query(&[("conids", "265598"), ("fields", "31,84,86")])
//!     .send()
//!     .await?;
//! println!("{accounts}\n{}", snapshot.text());
//! # Ok(()) }
//! ```

pub(crate) mod api;
mod builder;
mod fleet;
mod forward;
pub(crate) mod keepalive;
mod status;
pub(crate) mod sync;

pub use api::{ApiRequest, ApiResponse};
pub use builder::SessionBuilder;
pub use fleet::Role;
pub use forward::{Forward, ForwardBody};
pub use keepalive::KeepAlive;
pub use status::{FailReason, SessionState, Status};

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::Method;
use reqwest::header::HeaderValue;
use tokio::sync::watch;
use url::Url;

use self::sync as shared;
pub use self::sync::Source;
use crate::auth::AuthConfig;
use crate::brokerage::{AuthStatus, Authorizer, Logout, Tickle};
use crate::client::{AuthMethod, BoxFuture, Client};
use crate::error::{ConfigError, Error, Step};
use crate::http::HttpClient;
use crate::policy::Policy;
use crate::store::{StoredTokens, TokenStore};
use crate::tokens::TokenExpiry;

/// A handle on one authenticated session; clones share it.
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("method", &self.inner.method)
            .field("status", &*self.inner.status.borrow())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) method: AuthMethod,
    pub(crate) identity: String,
    /// The client: held while tokens or the brokerage session change (a login, a renewal, a
    /// recovery, a tickle). API calls do not take it; they sign with [`Current::auth`].
    pub(crate) client: tokio::sync::Mutex<Box<dyn Client>>,
    current: RwLock<Current>,
    pub(crate) http: HttpClient,
    pub(crate) store: Option<Arc<dyn TokenStore>>,
    /// The fleet this session is a member of (tokens in a shared store, one leader).
    pub(crate) fleet: Option<Arc<fleet::Fleet>>,
    pub(crate) policy: Policy,
    pub(crate) status: watch::Sender<Status>,
    /// Stored tokens are reused only while valid at least this much longer.
    pub(crate) reuse_margin: Duration,
    pub(crate) keepalive: AtomicBool,
}

/// What API calls need, updated whenever the client's tokens or host change.
#[derive(Clone)]
struct Current {
    /// Counts changes of tokens and completed recoveries: a caller that saw a refusal at
    /// epoch `e` recovers only if nobody has since.
    epoch: u64,
    auth: Option<Arc<dyn Authorizer>>,
    rest_base: Url,
    api_base: Url,
    /// The stored document the tokens were restored from or saved as.
    stored: Option<StoredTokens>,
}

/// A fleet as its store sees it ([`Session::fleet_status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetStatus {
    /// The store ([`crate::coord::Coordinator::describe`]).
    pub store: String,
    /// The identity the lease is on.
    pub identity: String,
    /// This session's name as a member.
    pub member: String,
    /// The live lease: its holder (the leader) and generation.
    pub lease: Option<crate::coord::LeaseInfo>,
    /// The members heard from lately, leader included.
    pub members: Vec<crate::coord::Member>,
    /// The stored session document, as far as can be told without opening it.
    pub document: Option<FleetDocument>,
}

/// The stored session document of a fleet, as [`FleetStatus`] shows it (never its content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetDocument {
    /// Counts its writes.
    pub version: u64,
    /// The lease generation it was written under.
    pub generation: u64,
    /// The id of the key that sealed it.
    pub key_id: String,
    /// Whether that key is this process's current key (otherwise the leader seals it again
    /// with the current one at its next save; until then the older key must stay).
    pub current_key: bool,
}

/// How [`Session::connect`] got its tokens, and what it did with the brokerage session.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Where the tokens came from: held already, the store, another process, or a new login.
    pub source: Source,
    /// The stored document behind the tokens (for their age), when there is a store.
    pub stored: Option<StoredTokens>,
    /// The flags of the `ssodh/init` that followed a new login.
    pub initialised: Option<AuthStatus>,
}

impl Session {
    /// Starts building a session for `config`.
    pub fn builder(config: impl Into<AuthConfig>) -> SessionBuilder {
        SessionBuilder::new(config.into())
    }

    /// Starts building a session over an existing client (any auth method).
    pub fn from_client(client: impl Client + 'static) -> SessionBuilder {
        SessionBuilder::from_client(Box::new(client))
    }

    /// Loads the credentials and the session settings from `path` (or `$IBAUTH_CONFIG`, or
    /// `./config.yaml`) and the environment; the method is `method`, or the one
    /// [`crate::auth`]'s rules choose.
    pub fn from_config(
        path: Option<&Path>,
        method: Option<AuthMethod>,
    ) -> Result<SessionBuilder, ConfigError> {
        let config = AuthConfig::load(path, method)?;
        let policy = Policy::load(path)?;
        Ok(SessionBuilder::new(config).policy(policy))
    }

    /// The auth method.
    pub fn method(&self) -> AuthMethod {
        self.inner.method
    }

    /// The fingerprint of the credentials (what the token store keys entries by).
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// The settings in force.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The token store, if any.
    pub fn store(&self) -> Option<&Arc<dyn TokenStore>> {
        self.inner.store.as_ref()
    }

    /// The fleet's shared store, when this session is a member of one
    /// ([`SessionBuilder::fleet`]).
    pub fn fleet_store(&self) -> Option<Arc<dyn crate::coord::Coordinator>> {
        self.inner.fleet.as_ref().map(|f| f.coord.clone())
    }

    /// This session's part in its fleet now: `None` outside a fleet.
    pub fn role(&self) -> Option<Role> {
        let fleet = self.inner.fleet.as_ref()?;
        Some(match fleet.lease() {
            Some(lease) => Role::Leader {
                generation: lease.generation,
            },
            None => Role::Follower,
        })
    }

    /// Who leads this session's fleet, with which lease generation, and who follows — read
    /// from the store (for `ibauth status`); `None` outside a fleet.
    pub async fn fleet_status(&self) -> Result<Option<FleetStatus>, Error> {
        let Some(fleet) = &self.inner.fleet else {
            return Ok(None);
        };
        let lease = fleet.coord.lease_info(&self.inner.identity).await?;
        let members = fleet.coord.members(&self.inner.identity).await?;
        let document = fleet
            .coord
            .load(&self.inner.identity)
            .await?
            .map(|doc| FleetDocument {
                version: doc.version,
                generation: doc.generation,
                current_key: !fleet.keyring.is_stale(&doc.key_id),
                key_id: doc.key_id,
            });
        Ok(Some(FleetStatus {
            store: fleet.coord.describe(),
            identity: self.inner.identity.clone(),
            member: fleet.member.clone(),
            lease: lease.filter(|l| !l.expires_in.is_zero()),
            members,
            document,
        }))
    }

    /// The HTTP client every request of this session goes through.
    pub fn http(&self) -> &HttpClient {
        &self.inner.http
    }

    /// The API host in use (`https://api.ibkr.com/`).
    pub fn api_base(&self) -> Url {
        self.inner.read(|c| c.api_base.clone())
    }

    /// The REST base in use (`https://api.ibkr.com/v1/api/`).
    pub fn rest_base(&self) -> Url {
        self.inner.read(|c| c.rest_base.clone())
    }

    /// The status now.
    pub fn status(&self) -> Status {
        self.inner.status.borrow().clone()
    }

    /// A receiver of every status change.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.inner.status.subscribe()
    }

    /// The tokens held and when they expire.
    pub fn tokens(&self) -> Vec<TokenExpiry> {
        self.inner.status.borrow().tokens.clone()
    }

    /// The stored document behind the tokens (its `created_at` is the login's time).
    pub fn stored(&self) -> Option<StoredTokens> {
        self.inner.read(|c| c.stored.clone())
    }

    /// Takes the stored tokens if they are valid, without logging in: `None` when there are
    /// none (a read-only look, for `ibauth status`).
    pub async fn restore(&self) -> Result<Option<StoredTokens>, Error> {
        let mut client = self.inner.client.lock().await;
        if client.has_session_token() {
            return Ok(self.inner.current().stored);
        }
        let restored = if let Some(fleet) = &self.inner.fleet {
            self.inner.fleet_restore(fleet, &mut client, None).await?
        } else if let Some(store) = self.inner.store.clone() {
            shared::restore(&mut **client, &store, self.inner.reuse_margin).await?
        } else {
            return Ok(None);
        };
        if let Some(stored) = &restored {
            self.inner.publish(&**client, Some(stored.clone()));
        }
        Ok(restored)
    }

    /// Valid tokens: held already, the stored ones, or a new login (under the store's lock,
    /// followed by `ssodh/init` when the settings say so).
    pub async fn connect(&self) -> Result<Connection, Error> {
        let mut client = self.inner.client.lock().await;
        self.inner.connect_locked(&mut client, false).await
    }

    /// As [`connect`](Self::connect); with `force`, a new login whatever is stored.
    pub async fn login(&self, force: bool) -> Result<Connection, Error> {
        let mut client = self.inner.client.lock().await;
        self.inner.connect_locked(&mut client, force).await
    }

    /// `ssodh/init` with the configured `compete`.
    pub async fn init(&self) -> Result<AuthStatus, Error> {
        let mut client = self.inner.client.lock().await;
        self.inner.connect_locked(&mut client, false).await?;
        let status = client.init(self.inner.policy.compete).await?;
        self.inner.apply_flags(&status, "ssodh/init");
        Ok(status)
    }

    /// `iserver/auth/status`.
    pub async fn auth_status(&self) -> Result<AuthStatus, Error> {
        let mut client = self.inner.client.lock().await;
        self.inner.connect_locked(&mut client, false).await?;
        client.status().await
    }

    /// One `tickle` with the tokens held (or restored, or a login): no recovery, so a dropped
    /// session shows in the answer. The session id is kept with the stored tokens.
    pub async fn tickle(&self) -> Result<Tickle, Error> {
        let mut client = self.inner.client.lock().await;
        self.inner.connect_locked(&mut client, false).await?;
        self.inner.tickle_locked(&mut client).await
    }

    /// A tickle that recovers what it can: stored tokens refused (401) → a new login (or the
    /// tokens another process got); the brokerage session not authenticated → `ssodh/init`.
    pub async fn tickle_and_init(&self) -> Result<Tickle, Error> {
        self.connect().await?;
        // After connecting: a login just now is not the recovery a 401 below asks for.
        let seen = self.inner.epoch();
        let tickle = match self.tickle().await {
            Err(e) if e.status() == Some(401) => {
                self.inner.recover_after(seen, "tickle: 401").await?;
                self.tickle().await?
            }
            other => other?,
        };
        if tickle.auth_status().authenticated {
            return Ok(tickle);
        }
        self.init().await?;
        self.tickle().await
    }

    /// Ends the session and forgets its stored tokens. `None` when there was nothing to end
    /// (no tokens held and no valid ones stored).
    pub async fn logout(&self) -> Result<Option<Logout>, Error> {
        let mut client = self.inner.client.lock().await;
        if let Some(fleet) = &self.inner.fleet {
            return self.inner.fleet_logout(fleet, &mut client).await;
        }
        if !client.has_session_token()
            && let Some(store) = &self.inner.store
        {
            match shared::restore(&mut **client, store, Duration::ZERO).await? {
                Some(stored) => self.inner.publish(&**client, Some(stored)),
                None => return Ok(None),
            }
        }
        if !client.has_session_token() {
            return Ok(None);
        }
        self.inner.logout_locked(&mut client).await.map(Some)
    }

    /// The `Authorization` value for `method url` with the tokens held (connecting first if
    /// needed): the bearer, or an OAuth 1.0a signature for exactly this request.
    pub async fn authorization(&self, method: &Method, url: &Url) -> Result<HeaderValue, Error> {
        let (_, auth, _) = self.inner.ready().await?;
        auth.authorization(method, url)
    }

    /// `path` on the API: relative to the REST base (`iserver/accounts`), or absolute on the
    /// host (`/v1/api/iserver/accounts`, `/v1/portal/…`).
    pub fn url(&self, path: &str) -> Result<Url, Error> {
        api::endpoint_url(&self.inner.read(|c| c.rest_base.clone()), path, &[])
    }

    /// A request to any Web API endpoint; see [`ApiRequest`].
    pub fn request(&self, method: Method, path: &str) -> ApiRequest {
        ApiRequest::new(self.clone(), method, path)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<ApiResponse, Error> {
        self.request(Method::GET, path).send().await
    }

    /// `POST path` with a JSON body.
    pub async fn post<B: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<ApiResponse, Error> {
        self.request(Method::POST, path).json(body).send().await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<ApiResponse, Error> {
        self.request(Method::DELETE, path).send().await
    }

    /// The authenticated WebSocket. It reconnects by itself when the server closes it, with
    /// whatever tokens the session holds then (after a fresh tickle for the session cookie).
    pub async fn websocket(&self) -> Result<crate::ws::IbkrWebSocket, Error> {
        let session = self.clone();
        let mut retarget: crate::ws::Retarget = Box::new(move || {
            let session = session.clone();
            Box::pin(async move {
                let tickle = session.tickle_and_init().await?;
                let endpoint = session.inner.client.lock().await.websocket()?;
                Ok(endpoint.target(tickle.session))
            })
        });
        let target = retarget().await?;
        let max_message = self.inner.http.max_body();
        Ok(
            crate::ws::connect_with_limit(&target, crate::ws::DEFAULT_PING_INTERVAL, max_message)
                .await?
                .with_reconnect(retarget),
        )
    }

    /// Runs the keep-alive in the background (tickle loop, renewal before expiry, recovery,
    /// one logout on shutdown) while the handle keeps making calls. One per session. Tokens
    /// the session already holds (restored by a call or [`connect`](Self::connect)) are
    /// checked with a tickle first: it logs in only when there are none or they are refused.
    pub fn keep_alive(&self) -> Result<KeepAlive, Error> {
        if self.inner.keepalive.swap(true, Ordering::SeqCst) {
            return Err(Error::NotReady {
                step: Step::Tickle,
                reason: "this session's keep-alive is already running",
            });
        }
        // Started again after a logout or a failure (a gateway reactivated): from the start.
        if matches!(
            self.inner.state(),
            SessionState::LoggedOut | SessionState::Failed(_)
        ) {
            self.inner
                .set(SessionState::Connecting, "keep-alive started again");
        }
        Ok(KeepAlive::spawn(self.clone()))
    }
}

/// A login, then `ssodh/init` when `init` (its flags returned).
fn login_then_init(
    init: bool,
    compete: bool,
) -> impl for<'a> FnOnce(&'a mut Box<dyn Client>) -> BoxFuture<'a, Result<Option<AuthStatus>, Error>>
+ Send {
    move |c| {
        Box::pin(async move {
            c.login().await?;
            if init {
                return c.init(compete).await.map(Some);
            }
            Ok(None)
        })
    }
}

impl Inner {
    fn current(&self) -> Current {
        self.read(Current::clone)
    }

    /// One look at the current tokens and host, copying only what `f` takes.
    fn read<T>(&self, f: impl FnOnce(&Current) -> T) -> T {
        f(&self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.read(|c| c.epoch)
    }

    /// Takes the client's tokens and host as the ones API calls use (a new epoch: callers
    /// refused before now find the session recovered), and shows them in the status; `stored`
    /// replaces the stored document when given.
    pub(crate) fn publish(&self, client: &dyn Client, stored: Option<StoredTokens>) {
        let auth = client.authorizer().ok();
        {
            let mut current = self
                .current
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            current.epoch = current.epoch.wrapping_add(1);
            current.auth = auth;
            current.rest_base = client.rest_base().clone();
            current.api_base = client.api_base().clone();
            if stored.is_some() {
                current.stored = stored;
            } else if !client.has_session_token() {
                current.stored = None;
            }
        }
        self.show_tokens(client);
    }

    /// The client's tokens and host in the status, nothing else: the epoch stays.
    pub(crate) fn show_tokens(&self, client: &dyn Client) {
        let tokens = client.tokens();
        let api_base = client.api_base().to_string();
        self.status.send_if_modified(|s| {
            let changed = s.tokens != tokens || s.api_base != api_base;
            s.tokens = tokens;
            s.api_base = api_base;
            changed
        });
    }

    /// The state, with the reason logged when it changes.
    pub(crate) fn set(&self, state: SessionState, why: &str) {
        let changed = self.status.send_if_modified(|s| {
            let changed = s.state != state;
            s.state = state.clone();
            if changed {
                s.detail = None;
            }
            changed
        });
        if changed {
            tracing::info!(state = ?state, reason = why, "session state");
        }
    }

    pub(crate) fn state(&self) -> SessionState {
        self.status.borrow().state.clone()
    }

    pub(crate) fn apply_flags(&self, status: &AuthStatus, why: &str) {
        let state = if status.authenticated {
            SessionState::Authenticated
        } else if status.competing && !self.policy.compete {
            SessionState::Competing
        } else {
            SessionState::Reauthenticating
        };
        self.set(state, why);
    }

    /// What a call needs: the epoch, the authorizer and the REST base — connecting first when
    /// no tokens are held yet.
    pub(crate) async fn ready(&self) -> Result<(u64, Arc<dyn Authorizer>, Url), Error> {
        if let Some(ready) = self.signing() {
            return Ok(ready);
        }
        // Boxed: connecting (a login) is rare and its future large; inline, every call's
        // future would be as large, and copied whole when it is built.
        Box::pin(self.connect_for_ready()).await
    }

    async fn connect_for_ready(&self) -> Result<(u64, Arc<dyn Authorizer>, Url), Error> {
        let mut client = self.client.lock().await;
        self.connect_locked(&mut client, false).await?;
        match self.signing() {
            Some(ready) => Ok(ready),
            None => Err(client.authorizer().err().unwrap_or(Error::NotReady {
                step: Step::Api,
                reason: "no session token after connecting",
            })),
        }
    }

    /// Just what a call signs with (every call reads it: no more than that is copied).
    fn signing(&self) -> Option<(u64, Arc<dyn Authorizer>, Url)> {
        self.read(|c| Some((c.epoch, c.auth.clone()?, c.rest_base.clone())))
    }

    pub(crate) async fn connect_locked(
        &self,
        client: &mut Box<dyn Client>,
        force: bool,
    ) -> Result<Connection, Error> {
        if !force && client.has_session_token() {
            return Ok(Connection {
                source: Source::Held,
                stored: self.current().stored,
                initialised: None,
            });
        }
        let restored = match (&self.fleet, &self.store) {
            _ if force => None,
            (Some(fleet), _) => self.fleet_restore(fleet, client, None).await?,
            (None, Some(store)) => shared::restore(&mut **client, store, self.reuse_margin).await?,
            (None, None) => None,
        };
        if let Some(stored) = restored {
            self.publish(&**client, Some(stored.clone()));
            return Ok(Connection {
                source: Source::Stored,
                stored: Some(stored),
                initialised: None,
            });
        }
        let (source, stored, initialised) = self.log_in(client, force).await?;
        Ok(Connection {
            source,
            stored,
            initialised,
        })
    }

    /// A login (under the store's lock, adopting what another process stored meanwhile unless
    /// `force`), followed by `ssodh/init` when the settings say so — inside the lock, so other
    /// processes adopt an initialised session.
    pub(crate) async fn log_in(
        &self,
        client: &mut Box<dyn Client>,
        force: bool,
    ) -> Result<(Source, Option<StoredTokens>, Option<AuthStatus>), Error> {
        let init = self.policy.init_brokerage_session;
        let compete = self.policy.compete;
        let login = login_then_init(init, compete);
        let result = match (&self.fleet, &self.store) {
            (Some(fleet), _) => self.fleet_log_in(fleet, client, force, None).await,
            (None, Some(store)) if force => shared::replace(client, store, login)
                .await
                .map(|(doc, initialised)| (Source::Refreshed, Some(doc), initialised)),
            (None, Some(store)) => shared::refresh(client, store, self.reuse_margin, true, login)
                .await
                .map(|(source, doc, initialised)| (source, Some(doc), initialised.flatten())),
            (None, None) => login(client)
                .await
                .map(|initialised| (Source::Refreshed, None, initialised)),
        };
        self.finish_login(&**client, result)
    }

    /// After a login (or adopting another process's tokens): the tokens go to API calls, the
    /// count and the state follow.
    pub(crate) fn finish_login(
        &self,
        client: &dyn Client,
        result: Result<(Source, Option<StoredTokens>, Option<AuthStatus>), Error>,
    ) -> Result<(Source, Option<StoredTokens>, Option<AuthStatus>), Error> {
        self.publish(client, result.as_ref().ok().and_then(|(_, d, _)| d.clone()));
        let (source, stored, initialised) = result?;
        if source == Source::Refreshed {
            self.status.send_modify(|s| s.logins += 1);
        }
        match &initialised {
            Some(status) => self.apply_flags(status, "logged in"),
            None => self.set(SessionState::Authenticated, "logged in"),
        }
        Ok((source, stored, initialised))
    }

    pub(crate) async fn tickle_locked(
        &self,
        client: &mut Box<dyn Client>,
    ) -> Result<Tickle, Error> {
        let started = std::time::Instant::now();
        let tickle = client.tickle().await?;
        let rtt = started.elapsed();
        let new_session = self.status.borrow().session.as_deref() != Some(&tickle.session);
        self.status.send_modify(|s| {
            s.tickles += 1;
            s.last_rtt = Some(rtt);
            s.last_tickle = Some(std::time::SystemTime::now());
            s.session = Some(tickle.session.clone());
            s.tickle = Some(tickle.clone());
        });
        // A tickle may refine the token's expiry (OAuth 2.0's ssoExpires): shown, but the
        // tokens are the same, so callers refused before it still recover.
        self.show_tokens(&**client);
        let stored_id = self
            .current()
            .stored
            .and_then(|s| s.session_id)
            .filter(|id| *id == tickle.session);
        if (new_session || stored_id.is_none())
            && let Some(fleet) = &self.fleet
            && let Some(mut doc) = client.stored_tokens(client.now_unix())
        {
            doc.session_id = Some(tickle.session.clone());
            if let Some(stored) = self.current().stored {
                doc.created_at = stored.created_at;
            }
            self.fleet_save_if_leading(fleet, &doc).await;
            self.remember_session_id(&tickle.session);
        } else if (new_session || stored_id.is_none())
            && let Some(store) = &self.store
            && let Some(mut doc) = client.stored_tokens(client.now_unix())
        {
            doc.session_id = Some(tickle.session.clone());
            match shared::save(store, doc.clone()).await {
                Ok(()) => self.remember_session_id(&tickle.session),
                Err(e) => tracing::warn!(error = %e, "cannot store the session id"),
            }
        }
        Ok(tickle)
    }

    fn remember_session_id(&self, id: &str) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(stored) = current.stored.as_mut() {
            stored.session_id = Some(id.to_owned());
        }
    }

    /// Logs out and forgets the stored tokens (unless another process replaced them).
    pub(crate) async fn logout_locked(
        &self,
        client: &mut Box<dyn Client>,
    ) -> Result<Logout, Error> {
        let before = client.stored_tokens(client.now_unix());
        let result = client.logout().await;
        self.publish(&**client, None);
        let logout = result?;
        if let Some(fleet) = &self.fleet {
            self.fleet_forget(fleet).await;
        }
        if let (Some(store), Some(before)) = (&self.store, &before)
            && let Err(e) = shared::forget(store, before).await
        {
            tracing::warn!(error = %e, "cannot clear the stored tokens after logout");
        }
        self.set(SessionState::LoggedOut, "logged out");
        Ok(logout)
    }

    /// Status, then re-init: what brings a dropped brokerage session back without a login.
    /// The state after: `Authenticated`, `Competing`, or still `Reauthenticating` (a login is
    /// next).
    pub(crate) async fn revive(&self, client: &mut Box<dyn Client>, why: &str) -> SessionState {
        self.set(SessionState::Reauthenticating, why);
        if !self.policy.init_brokerage_session || !client.has_session_token() {
            return SessionState::Reauthenticating;
        }
        tracing::info!("recovery: re-checking the session status");
        if let Ok(status) = client.status().await
            && status.authenticated
            && status.connected
        {
            self.status.send_modify(|s| s.recoveries += 1);
            self.publish(&**client, None);
            self.set(SessionState::Authenticated, "status: still authenticated");
            return SessionState::Authenticated;
        }
        tracing::info!("recovery: re-initialising the brokerage session");
        match client.init(self.policy.compete).await {
            Ok(status) if status.authenticated => {
                self.status.send_modify(|s| s.recoveries += 1);
                self.publish(&**client, None);
                self.set(SessionState::Authenticated, "re-initialised");
                SessionState::Authenticated
            }
            Ok(status) if status.competing && !self.policy.compete => {
                self.set(SessionState::Competing, "another login holds the session");
                SessionState::Competing
            }
            _ => {
                tracing::info!("recovery: re-init did not help; logging in again");
                SessionState::Reauthenticating
            }
        }
    }

    /// One recovery for every caller refused at epoch `seen`: the first to get here revives
    /// the session (status → re-init → login); the others find it done.
    pub(crate) async fn recover_after(&self, seen: u64, why: &str) -> Result<(), Error> {
        let mut client = self.client.lock().await;
        if self.epoch() != seen {
            return Ok(());
        }
        tracing::warn!(
            reason = why,
            "a call was refused for authentication; recovering"
        );
        if let Some(fleet) = &self.fleet {
            return self.fleet_recover(fleet, &mut client, why).await;
        }
        match self.revive(&mut client, why).await {
            SessionState::Authenticated => Ok(()),
            SessionState::Competing => Err(Error::NotReady {
                step: Step::SsodhInit,
                reason: "another login holds the brokerage session and `compete` is off",
            }),
            _ => {
                let again = self.status.borrow().logins > 0;
                self.log_in(&mut client, false).await?;
                if again {
                    self.status.send_modify(|s| s.recoveries += 1);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_and_its_parts_go_anywhere() {
        fn send_sync<T: Send + Sync + Clone + 'static>() {}
        send_sync::<Session>();
        fn send<T: Send + 'static>() {}
        send::<ApiRequest>();
        send::<ApiResponse>();
        send::<KeepAlive>();
        send::<Box<dyn Client>>();
    }

    #[test]
    fn debug_shows_no_token() {
        let config = crate::Config::builder()
            .client_id("C")
            .client_key_id("k")
            .credential("secret-user")
            .private_key(crate::SigningKey::generate().expect("key"))
            .base_url("http://127.0.0.1:9")
            .build()
            .expect("config");
        let session = Session::builder(config)
            .no_store()
            .build()
            .expect("session");
        let shown = format!("{session:?}");
        assert!(shown.contains("OAuth2"), "{shown}");
        assert!(!shown.contains("secret-user"), "{shown}");
    }
}
