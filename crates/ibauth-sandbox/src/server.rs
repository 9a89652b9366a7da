//! Starting the sandbox: [`SandboxBuilder`] binds and serves (HTTP or HTTPS), [`Sandbox`] is
//! the running server's handle.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ibauth::{Clock, SystemClock};
use tokio::sync::oneshot;

use crate::control::Control;
use crate::error::SandboxError;
use crate::nightly::{self, NightlyReset};
use crate::registration::{ClientRegistration, ConsumerRegistration};
use crate::router::router;
use crate::state::{
    Lifetimes, Pacer, PacingLimits, RegisteredClient, RegisteredConsumer, Shared, State, lock,
};
use crate::tls;

/// Configures and starts a [`Sandbox`].
#[derive(Debug)]
pub struct SandboxBuilder {
    listen: SocketAddr,
    tls: bool,
    lifetimes: Lifetimes,
    clock: Arc<dyn Clock>,
    ws_heartbeat: Duration,
    clients: Vec<RegisteredClient>,
    consumers: Vec<RegisteredConsumer>,
    users: Vec<(String, String, bool)>,
    pacing: Option<PacingLimits>,
    admin: bool,
    nightly_reset: Option<NightlyReset>,
    bind_sso_ip: bool,
    tickler_window: Duration,
    host: Option<String>,
    tls_material: Option<tls::TlsMaterial>,
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

    /// Serve HTTPS with `material` instead of a generated CA: a sandbox restarted with the
    /// same material is trusted by the clients of the one before (an IBKR restart, as its
    /// clients see it). Its names must include the address clients use.
    pub fn tls_material(mut self, material: tls::TlsMaterial) -> Self {
        self.tls = true;
        self.tls_material = Some(material);
        self
    }

    /// The host name or IP address clients reach the sandbox at, when not the listening
    /// address (default: that address, `127.0.0.1` when it listens on every IPv4 address) —
    /// for clients in network namespaces or containers. It is the host of
    /// [`Sandbox::base_url`] (the URL OAuth 1.0a signatures are checked against) and, with
    /// [`tls`](Self::tls), the certificate is also for it.
    pub fn host(mut self, host: &str) -> Self {
        self.host = Some(host.to_owned());
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

    /// Enforces `limits` with a penalty box (default: off, so tests may log in as often as
    /// they like). See [`PacingLimits`] for what counts and how.
    pub fn pacing(mut self, limits: PacingLimits) -> Self {
        self.pacing = Some(limits);
        self
    }

    /// Serves the admin API under `/__sandbox/…` (default: on): counters, orders and fault
    /// injection over HTTP for tests that drive a separate process. It is for tests only —
    /// anyone who can reach the port can drop sessions or script failures — and IBKR has
    /// nothing like it; turn it off when the sandbox is reachable by others
    /// (`ibauth sandbox --no-admin`). [`Control`] works either way.
    pub fn admin(mut self, enabled: bool) -> Self {
        self.admin = enabled;
        self
    }

    /// Drops every brokerage session (and changes every session id) daily at `schedule`, as
    /// IBKR's nightly maintenance does at 01:00 regional time (default: never). Times are read
    /// from the sandbox's clock, so a test can move a [`ibauth::FixedClock`] past the reset.
    pub fn nightly_reset(mut self, schedule: NightlyReset) -> Self {
        self.nightly_reset = Some(schedule);
        self
    }

    /// Whether a bearer token (OAuth 2.0 SSO session) is refused when it comes from another
    /// source address than the one its SSO session was opened for (default: on, as IBKR binds
    /// the session to the `ip` of its JWT). The refusal is a plain 401 `not authenticated`,
    /// counted in [`Counters::ip_mismatches`](crate::Counters::ip_mismatches); it applies to
    /// every bearer-authenticated request, the WebSocket handshake included. OAuth 1.0a live
    /// session tokens work from any host, as on IBKR. Peers are compared as IPv4 (an
    /// IPv6-mapped IPv4 address is its IPv4 address), so a sandbox listening on `0.0.0.0`
    /// tells apart clients in different network namespaces.
    pub fn bind_sso_ip(mut self, bind: bool) -> Self {
        self.bind_sso_ip = bind;
        self
    }

    /// How close together tickles from two source addresses must be to count as concurrent
    /// ticklers of one user (default 60 s, IBKR's recommended tickle interval): see
    /// [`Control::max_concurrent_ticklers`](crate::Control::max_concurrent_ticklers). Make it
    /// at least the fleet's tickle interval, so two members tickling side by side always
    /// count as two, and shorter than the gap a clean handover leaves, so a handover counts
    /// as one.
    pub fn tickler_window(mut self, window: Duration) -> Self {
        self.tickler_window = window;
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
    pub async fn start(mut self) -> Result<Sandbox, SandboxError> {
        let mut state = State::new(self.lifetimes, self.clock);
        state.ws_heartbeat = self.ws_heartbeat;
        state.pacing = self.pacing.map(Pacer::new);
        state.bind_sso_ip = self.bind_sso_ip;
        state.activity.tickler_window = self.tickler_window;
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
        let app =
            router(shared.clone(), self.admin).into_make_service_with_connect_info::<SocketAddr>();
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
            let material = match self.tls_material.take() {
                Some(material) => material,
                None => tls::generate_for(self.host.as_slice())
                    .map_err(|e| SandboxError::Tls(e.to_string()))?,
            };
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
            _ if self.host.is_some() => match self.host.as_deref().unwrap_or_default() {
                v6 if v6.contains(':') && !v6.starts_with('[') => format!("[{v6}]"),
                name => name.to_owned(),
            },
            ip if ip.is_unspecified() && addr.is_ipv4() => "127.0.0.1".to_owned(),
            ip if ip.is_unspecified() => "[::1]".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let scheme = if self.tls { "https" } else { "http" };
        let base_url = format!("{scheme}://{host}:{}", addr.port());
        tracing::info!(%base_url, "sandbox listening");
        lock(&shared).base_url = base_url.clone();
        let nightly = self
            .nightly_reset
            .map(|schedule| nightly::spawn(shared.clone(), schedule));
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
            nightly,
        })
    }
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
    nightly: Option<tokio::task::JoinHandle<()>>,
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
            pacing: None,
            admin: true,
            nightly_reset: None,
            bind_sso_ip: true,
            tickler_window: crate::state::DEFAULT_TICKLER_WINDOW,
            host: None,
            tls_material: None,
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

    /// Stops the server and waits for it. Open WebSockets are closed (code 1001), so the port
    /// can be listened on again at once — a restart, for tests that need one.
    pub async fn shutdown(mut self) {
        if let Some(nightly) = self.nightly.take() {
            nightly.abort();
        }
        self.lock().stopping.send_replace(true);
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
        if let Some(nightly) = self.nightly.take() {
            nightly.abort();
        }
        self.lock().stopping.send_replace(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
