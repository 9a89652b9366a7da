//! # ibauth-sandbox
//!
//! A local emulator of the Interactive Brokers Web API's authentication endpoints, with IBKR's
//! paths and answer shapes, that really verifies what it receives: RS256 client assertions
//! against the registered key for their `kid`, the SSO session's IP binding, token expiry, and a
//! bearer token on every brokerage-session call. It runs in-process for tests and as
//! `ibauth sandbox` from the shell, over HTTP or HTTPS (with a CA it generates).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ibauth_sandbox::{ClientRegistration, Sandbox};
//!
//! let key = ibauth::SigningKey::generate()?;
//! let sandbox = Sandbox::builder()
//!     .register(ClientRegistration::new("MYCLIENT").key("main", &key).credential("alice"))
//!     .start()
//!     .await?;
//!
//! let config = ibauth::Config::builder()
//!     .client_id("MYCLIENT")
//!     .client_key_id("main")
//!     .credential("alice")
//!     .private_key(key)
//!     .base_url(sandbox.base_url())
//!     .public_ip("127.0.0.1".parse()?)
//!     .build()?;
//! let mut client = ibauth::Oauth2Client::new(config)?;
//! assert!(client.connect().await?.status.authenticated);
//! assert_eq!(sandbox.counters().access_tokens, 1);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod brokerage;
mod credentials;
mod faults;
mod jwt;
mod oauth1a;
mod oauth2;
mod reply;
mod state;
mod third_party;
pub mod tls;
mod ws;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State as AxumState};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ibauth::{Clock, SigningKey, SystemClock};
use serde_json::Value;
use tokio::sync::oneshot;

pub use credentials::{
    CredentialSet, SANDBOX_CLIENT_ID, SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL, SANDBOX_KEY_ID,
    SANDBOX_PASSWORD,
};
pub use faults::FailWith;
pub use jwt::JwtError;
pub use oauth1a::RFC3526_PRIME_2048;
pub use state::{Counters, Flags, Lifetimes, RegisteredClient};

use crate::reply::Reject;
use crate::state::State;

pub(crate) type Shared = Arc<Mutex<State>>;

/// Errors starting the sandbox or preparing its files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation or TLS setup failed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// A credential file cannot be read or written.
    #[error("{what} {}: {source}", .path.display())]
    File {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key is unusable.
    #[error(transparent)]
    Key(#[from] ibauth::KeyError),
}

/// A client to register: id, public keys by `kid`, and the credentials (usernames) it serves.
#[derive(Debug, Clone)]
pub struct ClientRegistration(RegisteredClient);

impl ClientRegistration {
    /// A client with no keys and no users yet.
    pub fn new(client_id: impl Into<String>) -> Self {
        Self(RegisteredClient {
            client_id: client_id.into(),
            keys: HashMap::new(),
            credentials: HashSet::new(),
        })
    }

    /// Registers the public half of `key` under `kid`.
    pub fn key(mut self, kid: impl Into<String>, key: &SigningKey) -> Self {
        self.0.keys.insert(kid.into(), key.public_key_der());
        self
    }

    /// Allows sessions for `credential` (an IBKR username).
    pub fn credential(mut self, credential: impl Into<String>) -> Self {
        self.0.credentials.insert(credential.into());
        self
    }
}

/// An OAuth 1.0a consumer to register: key, realm, and the public halves of its signature and
/// encryption keys.
#[derive(Debug, Clone)]
pub struct ConsumerRegistration(oauth1a::RegisteredConsumer);

impl ConsumerRegistration {
    /// A consumer with the realm IBKR expects for it (`test_realm` for `TESTCONS`, otherwise
    /// `limited_poa`).
    pub fn new(
        consumer_key: impl Into<String>,
        signature_key: &SigningKey,
        encryption_key: &SigningKey,
    ) -> Self {
        let consumer_key = consumer_key.into();
        let test_consumer = consumer_key_is_test(&consumer_key);
        let realm = if consumer_key == ibauth::oauth1a::TEST_CONSUMER {
            "test_realm"
        } else {
            "limited_poa"
        };
        Self(oauth1a::RegisteredConsumer {
            consumer_key,
            realm: realm.to_owned(),
            signature_key: signature_key.public_key_der(),
            encryption_key: encryption_key.public_key_der(),
            third_party: test_consumer,
            callback: None,
        })
    }

    /// Allows the third-party flow (`request_token` → `/authorize` → `access_token`), with
    /// `callback` as the registered callback URL (`None`: out-of-band only). `TESTCONS` has
    /// it by default.
    pub fn third_party(mut self, callback: Option<&str>) -> Self {
        self.0.third_party = true;
        self.0.callback = callback.map(str::to_owned);
        self
    }
}

fn consumer_key_is_test(consumer_key: &str) -> bool {
    consumer_key == ibauth::oauth1a::TEST_CONSUMER
}

/// Configures and starts a [`Sandbox`].
#[derive(Debug)]
pub struct SandboxBuilder {
    listen: SocketAddr,
    tls: bool,
    lifetimes: Lifetimes,
    clock: Arc<dyn Clock>,
    ws_heartbeat: Duration,
    clients: Vec<RegisteredClient>,
    consumers: Vec<oauth1a::RegisteredConsumer>,
    users: Vec<(String, String, bool)>,
}

impl SandboxBuilder {
    /// Where to listen (default `127.0.0.1:0`, a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Serve HTTPS with a generated CA ([`Sandbox::ca_pem`]).
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Token lifetimes and verification windows.
    pub fn lifetimes(mut self, lifetimes: Lifetimes) -> Self {
        self.lifetimes = lifetimes;
        self
    }

    /// The sandbox's clock (default: system time). Share a [`ibauth::FixedClock`] with the
    /// client to test expiry without sleeping.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Interval of the WebSocket heartbeat messages (default 10 s).
    pub fn ws_heartbeat(mut self, interval: Duration) -> Self {
        self.ws_heartbeat = interval;
        self
    }

    /// Registers a client.
    pub fn register(mut self, client: ClientRegistration) -> Self {
        self.clients.push(client.0);
        self
    }

    /// Registers an OAuth 1.0a consumer.
    pub fn register_consumer(mut self, consumer: ConsumerRegistration) -> Self {
        self.consumers.push(consumer.0);
        self
    }

    /// A user who can log in on the authorisation page (third-party flow); `paper` marks a
    /// paper account (`is_paper` in `oauth/access_token`).
    pub fn user(mut self, username: &str, password: &str, paper: bool) -> Self {
        self.users
            .push((username.to_owned(), password.to_owned(), paper));
        self
    }

    /// Binds and serves in the background until the [`Sandbox`] is dropped or shut down.
    pub async fn start(self) -> Result<Sandbox, SandboxError> {
        let mut state = State::new(self.lifetimes, self.clock);
        state.ws_heartbeat = self.ws_heartbeat;
        for client in self.clients {
            state.clients.insert(client.client_id.clone(), client);
        }
        for consumer in self.consumers {
            state
                .oauth1a
                .consumers
                .insert(consumer.consumer_key.clone(), consumer);
        }
        for (username, password, paper) in self.users {
            if paper {
                state.paper_users.insert(username.clone());
            }
            state.users.insert(username, password);
        }
        let shared: Shared = Arc::new(Mutex::new(state));
        let app = router(shared.clone()).into_make_service_with_connect_info::<SocketAddr>();
        let bind_err = |source| SandboxError::Bind {
            addr: self.listen,
            source,
        };
        let listener = std::net::TcpListener::bind(self.listen).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let mut ca_pem = None;
        let task = if self.tls {
            let material = tls::generate().map_err(|e| SandboxError::Tls(e.to_string()))?;
            let config = axum_server::tls_rustls::RustlsConfig::from_pem(
                material.chain_pem.into_bytes(),
                material.key_pem.into_bytes(),
            )
            .await
            .map_err(|e| SandboxError::Tls(e.to_string()))?;
            ca_pem = Some(material.ca_pem);
            let handle = axum_server::Handle::new();
            // Without TCP_NODELAY, small HTTP/2 frames meet the client's delayed ACK and a
            // share of requests wait an extra ~40 ms (measured in docs/benchmarks.md).
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
                .acceptor(axum_server::accept::NoDelayAcceptor::new());
            let server = axum_server::from_tcp(listener)
                .map_err(bind_err)?
                .acceptor(acceptor)
                .handle(handle.clone());
            tokio::spawn(async move {
                let _ = stopped.await;
                handle.graceful_shutdown(Some(Duration::from_secs(1)));
            });
            tokio::spawn(async move {
                if let Err(e) = server.serve(app).await {
                    tracing::error!("sandbox server stopped: {e}");
                }
            })
        } else {
            let listener = tokio::net::TcpListener::from_std(listener).map_err(bind_err)?;
            tokio::spawn(async move {
                let shutdown = async {
                    let _ = stopped.await;
                };
                let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!("sandbox server stopped: {e}");
                }
            })
        };
        let host = match addr.ip() {
            ip if ip.is_unspecified() && addr.is_ipv4() => "127.0.0.1".to_owned(),
            ip if ip.is_unspecified() => "[::1]".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let scheme = if self.tls { "https" } else { "http" };
        let base_url = format!("{scheme}://{host}:{}", addr.port());
        tracing::info!(%base_url, "sandbox listening");
        lock(&shared).base_url = base_url.clone();
        Ok(Sandbox {
            control: Control {
                state: shared.clone(),
            },
            addr,
            base_url,
            ca_pem,
            state: shared,
            stop: Some(stop),
            task,
        })
    }
}

/// Fault injection and session control over a running sandbox (also reachable over HTTP at
/// `/__sandbox/…` for tests that drive another process).
#[derive(Debug, Clone)]
pub struct Control {
    state: Shared,
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

    /// Answers the next `n` API requests with `fail` instead of serving them.
    pub fn fail_next(&self, n: usize, fail: FailWith) {
        let mut state = lock(&self.state);
        state.faults.fail_next.extend(std::iter::repeat_n(fail, n));
    }

    /// Serves the next `n` API requests but closes the connection halfway through the answer.
    pub fn cut_next(&self, n: u32) {
        lock(&self.state).faults.cut_next += n;
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
        issue_access_token_in(&mut lock(&self.state), consumer_key, credential)
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

/// Issues an OAuth 1.0a access token for `credential` under `consumer_key` (see
/// [`Control::issue_access_token`]).
pub(crate) fn issue_access_token_in(
    state: &mut State,
    consumer_key: &str,
    credential: &str,
) -> Option<(String, String)> {
    let consumer = state.oauth1a.consumers.get(consumer_key)?.clone();
    let mut secret = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).ok()?;
    let encrypted = oauth1a::encrypt_secret(&consumer.encryption_key, &secret)?;
    let token = state::random_hex(10);
    state.oauth1a.tokens.insert(
        token.clone(),
        oauth1a::AccessGrant1a {
            consumer_key: consumer_key.to_owned(),
            secret,
            credential: credential.to_owned(),
        },
    );
    Some((token, encrypted))
}

/// A running sandbox. Dropping it stops the server. Derefs to its [`Control`].
#[derive(Debug)]
pub struct Sandbox {
    control: Control,
    addr: SocketAddr,
    base_url: String,
    ca_pem: Option<String>,
    state: Shared,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Starts configuring a sandbox.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
            lifetimes: Lifetimes::default(),
            clock: Arc::new(SystemClock),
            ws_heartbeat: Duration::from_secs(10),
            clients: Vec::new(),
            consumers: Vec::new(),
            users: Vec::new(),
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients use as `base_url` (`http://127.0.0.1:PORT` or `https://…`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The URL of the sandbox's public-IP endpoint (answers the caller's address, like ipify).
    pub fn ip_lookup_url(&self) -> String {
        format!("{}/ip", self.base_url)
    }

    /// The CA certificate to trust, when serving HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Registers a client while running.
    pub fn register(&self, client: ClientRegistration) {
        let client = client.0;
        self.lock().clients.insert(client.client_id.clone(), client);
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl std::ops::Deref for Sandbox {
    type Target = Control;
    fn deref(&self) -> &Control {
        &self.control
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) fn lock(state: &Shared) -> MutexGuard<'_, State> {
    // A panic in one handler must not take the whole sandbox down.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs one handler under the lock, counting and logging refusals.
fn answer(
    state: &Shared,
    endpoint: &str,
    ok: StatusCode,
    handler: impl FnOnce(&mut State) -> Result<Value, Reject>,
) -> Response {
    let mut state = lock(state);
    match handler(&mut state) {
        Ok(body) => (ok, axum::Json(body)).into_response(),
        Err(reject) => {
            state.counters.rejections += 1;
            tracing::info!(endpoint, ?reject, "sandbox refused a request");
            reject.into_response()
        }
    }
}

fn router(state: Shared) -> Router {
    Router::new()
        .route(
            "/oauth2/api/v1/token",
            post(
                |AxumState(s): AxumState<Shared>, headers: HeaderMap, body: Bytes| async move {
                    answer(&s, "token", StatusCode::OK, |st| {
                        oauth2::token(st, &headers, &body)
                    })
                },
            ),
        )
        .route(
            "/gw/api/v1/sso-sessions",
            post(
                |AxumState(s): AxumState<Shared>,
                 ConnectInfo(peer): ConnectInfo<SocketAddr>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    answer(&s, "sso-sessions", StatusCode::CREATED, |st| {
                        oauth2::sso_session(st, &headers, &body, peer.ip())
                    })
                },
            ),
        )
        .route("/v1/api/sso/validate", get(brokerage_handler))
        .route("/v1/api/iserver/auth/ssodh/init", post(brokerage_handler))
        .route(
            "/v1/api/iserver/auth/status",
            post(brokerage_handler).get(brokerage_handler),
        )
        .route(
            "/v1/api/tickle",
            post(brokerage_handler).get(brokerage_handler),
        )
        .route("/v1/api/logout", post(brokerage_handler))
        .route(
            "/v1/api/oauth/live_session_token",
            post(
                |AxumState(s): AxumState<Shared>,
                 ConnectInfo(peer): ConnectInfo<SocketAddr>,
                 uri: Uri,
                 headers: HeaderMap| async move {
                    answer(&s, "live_session_token", StatusCode::OK, |st| {
                        let url = format!("{}{}", st.base_url, uri.path());
                        let authorization = headers
                            .get(axum::http::header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok());
                        oauth1a::live_session_token_endpoint(st, authorization, &url, peer.ip())
                    })
                },
            ),
        )
        .route(
            "/v1/api/oauth/request_token",
            post(
                |AxumState(s): AxumState<Shared>, uri: Uri, headers: HeaderMap| async move {
                    answer(&s, "request_token", StatusCode::OK, |st| {
                        let url = format!("{}{}", st.base_url, uri.path());
                        third_party::request_token(st, authorization(&headers), &url)
                    })
                },
            ),
        )
        .route(
            "/v1/api/oauth/access_token",
            post(
                |AxumState(s): AxumState<Shared>, uri: Uri, headers: HeaderMap| async move {
                    answer(&s, "access_token", StatusCode::OK, |st| {
                        let url = format!("{}{}", st.base_url, uri.path());
                        third_party::access_token(st, authorization(&headers), &url)
                    })
                },
            ),
        )
        .route(
            "/authorize",
            get(
                |AxumState(s): AxumState<Shared>,
                 axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>| async move {
                    let token = query.get("oauth_token").cloned().unwrap_or_default();
                    decide(third_party::authorize_page(&mut lock(&s), &token))
                },
            )
            .post(|AxumState(s): AxumState<Shared>, body: Bytes| async move {
                let form: Vec<(String, String)> = url::form_urlencoded::parse(&body)
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                decide(third_party::authorize_submit(&mut lock(&s), &form))
            }),
        )
        .route(
            "/v1/api/ws",
            get(
                |AxumState(s): AxumState<Shared>,
                 upgrade: axum::extract::WebSocketUpgrade,
                 axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
                 headers: HeaderMap| async move {
                    ws::handler(s, upgrade, query, headers).await
                },
            ),
        )
        .route(
            "/ip",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.ip().to_canonical().to_string()
            }),
        )
        .route("/__sandbox/counters", get(admin_counters))
        .route("/__sandbox/{action}", post(admin_action))
        .fallback(|| async { Reject::ibkr(404, "Not Found").into_response() })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            faults::middleware,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            date_header,
        ))
        .with_state(state)
}

/// `Date` from the sandbox's own clock, so a clock shifted for a test shows in the header as a
/// real server's would (clients measure their skew from it).
async fn date_header(
    AxumState(s): AxumState<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let now = lock(&s).now();
    let mut response = next.run(request).await;
    let date = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(now));
    if let Ok(value) = axum::http::HeaderValue::from_str(&date) {
        response
            .headers_mut()
            .insert(axum::http::header::DATE, value);
    }
    response
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The authorisation page's answer over HTTP.
fn decide(decision: third_party::Decision) -> Response {
    match decision {
        third_party::Decision::Redirect(to) => axum::response::Redirect::to(&to).into_response(),
        third_party::Decision::Page(status, html) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
            axum::response::Html(html),
        )
            .into_response(),
    }
}

/// `GET /__sandbox/counters`: what the sandbox has answered (for tests in other processes).
async fn admin_counters(AxumState(s): AxumState<Shared>) -> Response {
    axum::Json(Control { state: s }.counters()).into_response()
}

/// `POST /__sandbox/{action}` with a JSON body: the fault-injection handle over HTTP, for
/// tests that drive a separate process. Sandbox only; it never exists on IBKR.
async fn admin_action(
    AxumState(s): AxumState<Shared>,
    axum::extract::Path(action): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let args: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return Reject::ibkr(400, "body is not JSON").into_response(),
        }
    };
    let text = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_owned);
    let number = |k: &str| args.get(k).and_then(Value::as_u64);
    let handle = Control { state: s };
    match action.as_str() {
        "fail_next" => {
            let Some(status) = number("status").and_then(|n| u16::try_from(n).ok()) else {
                return Reject::ibkr(400, "status missing").into_response();
            };
            let mut fail = FailWith::new(status, text("message").unwrap_or_default());
            if let Some(secs) = number("retry_after") {
                fail = fail.retry_after(secs);
            }
            handle.fail_next(number("n").unwrap_or(1) as usize, fail);
        }
        "delay" => {
            handle.delay_responses(number("ms").filter(|ms| *ms > 0).map(Duration::from_millis))
        }
        "drop_session" | "competing" | "rotate_session" | "disconnect" => {
            let Some(credential) = text("credential") else {
                return Reject::ibkr(400, "credential missing").into_response();
            };
            match action.as_str() {
                "drop_session" => handle.drop_session(&credential),
                "competing" => handle.report_competing(&credential),
                "disconnect" => handle.disconnect(&credential),
                _ => handle.rotate_session(&credential),
            }
        }
        "cut" => handle.cut_next(number("n").unwrap_or(1) as u32),
        "expire_tokens" => handle.expire_tokens_now(),
        "nightly_reset" => handle.nightly_reset(),
        _ => {
            return Reject::ibkr(404, format!("unknown sandbox action `{action}`")).into_response();
        }
    }
    axum::Json(serde_json::json!({ "ok": true })).into_response()
}

/// The brokerage-session endpoints, authorised by bearer token or OAuth 1.0a signature.
async fn brokerage_handler(
    AxumState(s): AxumState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let endpoint = path.trim_start_matches("/v1/api/");
    answer(&s, endpoint, StatusCode::OK, |state| {
        let req = brokerage::Req {
            method: method.as_str(),
            url: format!("{}{path}", state.base_url),
            headers: &headers,
        };
        match endpoint {
            "sso/validate" => brokerage::validate(state, &req),
            "iserver/auth/ssodh/init" => brokerage::init(state, &req, &body),
            "iserver/auth/status" => brokerage::status(state, &req),
            "tickle" => brokerage::tickle(state, &req),
            "logout" => brokerage::logout(state, &req),
            _ => Err(Reject::ibkr(404, "Not Found")),
        }
    })
}
