//! Putting a [`Session`] together: the credentials (or a ready client), the settings, the
//! token store, the clock.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::watch;

use super::{Current, Inner, Session, Status};
use crate::auth::AuthConfig;
use crate::client::Client;
use crate::clock::{Clock, SystemClock};
use crate::coord::{Coordinator, DEFAULT_LEASE_TTL, Keyring};
use crate::error::Error;
use crate::http::{HttpClient, Observer};
use crate::oauth1a::{Authorize, GrantedClient, Oauth1aClient};
use crate::oauth2::Oauth2Client;
use crate::pacing::{PaceLedger, Pacer};
use crate::policy::Policy;
use crate::store::{FileStore, TokenStore, default_token_file};

/// Stored tokens are reused only if valid at least this much longer, so a call does not start
/// with a token about to run out.
pub const DEFAULT_REUSE_MARGIN: Duration = Duration::from_secs(60);

enum Source {
    Config(Box<AuthConfig>),
    Client(Box<dyn Client>),
}

enum StoreChoice {
    /// `policy.token_file`, else the platform's default file.
    Default,
    File(PathBuf),
    Given(Arc<dyn TokenStore>),
    /// Tokens live as long as the session.
    None,
}

/// The policy's pacing, shared through a ledger beside the token file when there is one (so
/// processes sharing the tokens share the budgets), else for this process.
fn pacer_for(policy: &Policy, token_file: Option<&std::path::Path>, identity: &str) -> Pacer {
    let rules = policy.pacing.clone();
    if rules.global.is_none() && rules.endpoints.is_empty() {
        return Pacer::new(rules);
    }
    match token_file.map(|file| PaceLedger::beside(file, identity)) {
        Some(Ok(ledger)) => Pacer::with_ledger(rules, ledger),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "pacing for this process only: the pacing ledger cannot be used");
            Pacer::new(rules)
        }
        None => Pacer::new(rules),
    }
}

/// Builds a [`Session`]; see [`Session::builder`] and [`Session::from_config`].
pub struct SessionBuilder {
    source: Source,
    policy: Policy,
    store: StoreChoice,
    clock: Arc<dyn Clock>,
    reuse_margin: Duration,
    authorize: Option<Box<dyn Authorize>>,
    grant_max_age: Option<Duration>,
    observer: Option<Observer>,
    max_body: Option<usize>,
    pacer: Option<Pacer>,
    fleet: Option<FleetChoice>,
    pub(crate) status: Option<watch::Sender<Status>>,
}

/// A shared store and what the session needs to take part in its fleet.
struct FleetChoice {
    coord: Arc<dyn Coordinator>,
    keyring: Keyring,
    ttl: Duration,
    wait: Duration,
}

/// How long a follower waits for its leader's tokens by default (beyond a lease's ttl).
pub const DEFAULT_FOLLOWER_WAIT: Duration = Duration::from_secs(30);

impl std::fmt::Debug for SessionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionBuilder")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl SessionBuilder {
    pub(crate) fn new(config: AuthConfig) -> Self {
        Self::with_source(Source::Config(Box::new(config)))
    }

    pub(crate) fn from_client(client: Box<dyn Client>) -> Self {
        Self::with_source(Source::Client(client))
    }

    fn with_source(source: Source) -> Self {
        Self {
            source,
            policy: Policy::default(),
            store: StoreChoice::Default,
            clock: Arc::new(SystemClock),
            reuse_margin: DEFAULT_REUSE_MARGIN,
            authorize: None,
            grant_max_age: None,
            observer: None,
            max_body: None,
            pacer: None,
            fleet: None,
            status: None,
        }
    }

    /// The settings: `compete`, what the keep-alive does, `token_file` (default
    /// [`Policy::default`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Keeps tokens in `store` (default: the file `policy.token_file`, else
    /// [`default_token_file`]).
    pub fn store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.store = StoreChoice::Given(store);
        self
    }

    /// Keeps tokens in the file at `path`.
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.store = StoreChoice::File(path.into());
        self
    }

    /// Keeps tokens only as long as the session lives.
    pub fn no_store(mut self) -> Self {
        self.store = StoreChoice::None;
        self
    }

    /// Makes the session a member of a fleet: its tokens live in `coord` (PostgreSQL, Redis,
    /// or [`MemoryCoordinator`](crate::coord::MemoryCoordinator)), sealed with `keyring`; one
    /// member at a time — the holder of the identity's lease — logs in, tickles and recovers,
    /// the others use what it stored (see [`crate::coord`]). Replaces the token file.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use ibauth::coord::{Keyring, MemoryCoordinator, StoreKey};
    /// # let config = ibauth::Config::builder().client_id("C").client_key_id("k").credential("u")
    /// #     .private_key(ibauth::SigningKey::generate()?).build()?;
    /// let keyring = Keyring::new(vec![StoreKey::generate()?])?;
    /// let session = ibauth::Session::builder(config)
    ///     .fleet(Arc::new(MemoryCoordinator::new()), keyring)
    ///     .build()?;
    /// assert!(session.fleet_store().is_some());
    /// # Ok(()) }
    /// ```
    pub fn fleet(mut self, coord: Arc<dyn Coordinator>, keyring: Keyring) -> Self {
        self.fleet = Some(FleetChoice {
            coord,
            keyring,
            ttl: DEFAULT_LEASE_TTL,
            wait: DEFAULT_FOLLOWER_WAIT,
        });
        self
    }

    /// In a fleet: how long the lease lasts without renewal — a dead leader is replaced
    /// within it (default 15 s; renewed every third of it).
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        if let Some(fleet) = self.fleet.as_mut() {
            fleet.ttl = ttl.max(Duration::from_millis(300));
        }
        self
    }

    /// In a fleet: how long a follower waits for its leader's tokens before failing
    /// (default 30 s, plus a lease's ttl).
    pub fn follower_wait(mut self, wait: Duration) -> Self {
        if let Some(fleet) = self.fleet.as_mut() {
            fleet.wait = wait;
        }
        self
    }

    /// The clock tokens are timed and requests signed with (tests pin it).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Stored tokens are reused only while valid at least `margin` longer (default 60 s).
    pub fn reuse_margin(mut self, margin: Duration) -> Self {
        self.reuse_margin = margin;
        self
    }

    /// Third party: how to ask the user for a grant when none is stored (without it, a missing
    /// grant is an error that says what to run).
    pub fn authorize_with(mut self, authorize: Box<dyn Authorize>) -> Self {
        self.authorize = Some(authorize);
        self
    }

    /// Third party: a stored grant older than this is not reused (default 7 days).
    pub fn grant_max_age(mut self, max_age: Duration) -> Self {
        self.grant_max_age = Some(max_age);
        self
    }

    /// Reports every HTTP exchange (step, method, path, status, time; nothing secret).
    pub fn observe(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Paces with `pacer` (share one between sessions of the same IBKR username) instead of
    /// one made from `policy.pacing` — which is shared, through a ledger beside the token file,
    /// with every process using the same file.
    pub fn pacer(mut self, pacer: Pacer) -> Self {
        self.pacer = Some(pacer);
        self
    }

    /// Caps every answer body and WebSocket message (default: the policy's `max_body`,
    /// [`crate::http::DEFAULT_MAX_BODY`] unless set).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = Some(bytes);
        self
    }

    /// The session (nothing is sent yet: the first call connects).
    pub fn build(mut self) -> Result<Session, Error> {
        let client: Box<dyn Client> = match self.source {
            Source::Client(client) => client,
            Source::Config(config) => {
                let (timeout, ca) = match &*config {
                    AuthConfig::OAuth2(c) => (c.timeout(), c.ca_pem().map(<[u8]>::to_vec)),
                    AuthConfig::OAuth1a(c) => (c.timeout_value(), c.ca().map(<[u8]>::to_vec)),
                    AuthConfig::ThirdParty(c) => (
                        c.template().timeout_value(),
                        c.template().ca().map(<[u8]>::to_vec),
                    ),
                };
                let http = HttpClient::new(timeout, ca.as_deref())?;
                match *config {
                    AuthConfig::OAuth2(c) => {
                        Box::new(Oauth2Client::with_http(c, self.clock.clone(), http))
                    }
                    AuthConfig::OAuth1a(c) => {
                        Box::new(Oauth1aClient::with_http(c, self.clock.clone(), http)?)
                    }
                    AuthConfig::ThirdParty(c) => {
                        let mut granted = GrantedClient::new(c, self.clock.clone(), http)?;
                        if let Some(authorize) = self.authorize {
                            granted = granted.with_authorize(authorize);
                        }
                        if let Some(max_age) = self.grant_max_age {
                            granted = granted.with_max_age(max_age);
                        }
                        Box::new(granted)
                    }
                }
            }
        };
        let http = client.http().clone();
        if let Some(observer) = self.observer {
            http.observe(observer);
        }
        // The builder's cap wins over the settings' (`max_body`, default 16 MiB).
        http.limit_body(self.max_body.unwrap_or(self.policy.max_body));
        let fleet = self
            .fleet
            .map(|f| Arc::new(super::fleet::Fleet::new(f.coord, f.keyring, f.ttl, f.wait)));
        if fleet.is_some() {
            // The shared store replaces the token file.
            self.store = StoreChoice::None;
        }
        let token_file = match &self.store {
            StoreChoice::File(path) => Some(path.clone()),
            StoreChoice::Default => self.policy.token_file.clone().or_else(default_token_file),
            StoreChoice::Given(_) | StoreChoice::None => None,
        };
        let store: Option<Arc<dyn TokenStore>> = match (self.store, &token_file) {
            (StoreChoice::Given(store), _) => Some(store),
            (StoreChoice::None, _) => None,
            (_, Some(path)) => Some(Arc::new(FileStore::new(path))),
            (_, None) => {
                tracing::warn!(
                    "no token_file and no home folder: tokens are not kept between runs"
                );
                None
            }
        };
        let pacer = match (self.pacer, &fleet) {
            (Some(pacer), _) => pacer,
            (None, Some(fleet)) => Pacer::shared(
                self.policy.pacing.clone(),
                fleet.coord.clone(),
                &client.identity(),
            ),
            (None, None) => pacer_for(&self.policy, token_file.as_deref(), &client.identity()),
        };
        http.pace(pacer);
        let status = match self.status {
            Some(sender) => {
                sender.send_modify(|s| {
                    s.tokens = client.tokens();
                    s.api_base = client.api_base().to_string();
                });
                sender
            }
            None => watch::channel(Status::new(client.tokens(), client.api_base().to_string())).0,
        };
        let current = Current {
            epoch: 0,
            auth: client.authorizer().ok(),
            rest_base: client.rest_base().clone(),
            api_base: client.api_base().clone(),
            stored: None,
        };
        Ok(Session {
            inner: Arc::new(Inner {
                method: client.method(),
                identity: client.identity(),
                client: tokio::sync::Mutex::new(client),
                current: std::sync::RwLock::new(current),
                http,
                store,
                fleet,
                policy: self.policy,
                status,
                reuse_margin: self.reuse_margin,
                keepalive: AtomicBool::new(false),
            }),
        })
    }
}
