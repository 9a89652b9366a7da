//! Listening: the gateway's addresses (IPv6 and IPv4), HTTPS or plain HTTP, HTTP/1.1 and
//! HTTP/2; the health server; and a shutdown that drains in-flight requests, then logs out
//! once.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ibauth::Session;
use tokio::task::JoinHandle;

use crate::error::GatewayError;
use crate::options::{GatewayOptions, TlsMode};
use crate::state::{Shared, State};
use crate::tls;

/// A gateway over `session`, ready to start.
#[derive(Debug)]
pub struct Gateway {
    session: Session,
    options: GatewayOptions,
}

/// A running gateway: its addresses, and [`shutdown`](Self::shutdown).
pub struct Running {
    state: Shared,
    addrs: Vec<SocketAddr>,
    health: Option<SocketAddr>,
    certificate_pem: Option<String>,
    stop: Vec<axum_server::Handle<SocketAddr>>,
    tasks: Vec<JoinHandle<()>>,
    _anchor: AbortOnDrop,
}

/// Aborts its task when dropped (with the [`Running`] gateway that owns it).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the timer anchor fires (see [`timer_anchor`]): well inside any request's timeouts.
const ANCHOR_PERIOD: Duration = Duration::from_secs(1);

/// A timer that is always due within [`ANCHOR_PERIOD`]. tokio wakes its own I/O driver (a
/// `write` to an eventfd) whenever a timer is registered that falls due before every timer
/// the driver saw when it last looked, or when it saw none; every forwarded request registers
/// two (its timeout and the exchange's), and at saturation that was a `write`, and an extra
/// `epoll_wait` turn, every fourth request. With a timer always pending and due sooner than
/// any request's, a request's timers never need the wake-up; the anchor costs one a second.
fn timer_anchor() -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async {
        loop {
            tokio::time::sleep(ANCHOR_PERIOD).await;
        }
    }))
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addrs", &self.addrs)
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

/// Binds `addr`. `[::]` is one dual-stack socket with `IPV6_V6ONLY` off whatever the system's
/// default (`net.ipv6.bindv6only`), so IPv4 clients reach it too, as they reach IBKR's gateway
/// on `0.0.0.0`; where IPv6 is off (some containers) it falls back to `0.0.0.0`, same port.
fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, GatewayError> {
    let bound = if addr.is_ipv6() && addr.ip().is_unspecified() {
        dual_stack(addr).or_else(|e| {
            tracing::info!(error = %e, "no IPv6 here: listening on IPv4 only");
            std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port())))
        })
    } else {
        std::net::TcpListener::bind(addr)
    };
    let listener = bound.map_err(|source| GatewayError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| GatewayError::Bind { addr, source })?;
    Ok(listener)
}

fn dual_stack(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_only_v6(false)?;
    // As std's TcpListener::bind does on Unix: a restarted gateway gets its port back at once.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

impl Gateway {
    /// A gateway for `session` with `options`.
    pub fn new(session: Session, options: GatewayOptions) -> Self {
        Self { session, options }
    }

    /// Binds every address, starts the keep-alive (unless dormant) and serves in the
    /// background.
    pub async fn start(self) -> Result<Running, GatewayError> {
        let material = match &self.options.tls {
            TlsMode::Plain => None,
            TlsMode::SelfSigned { dir } => Some(tls::self_signed(dir)?),
            TlsMode::Files { cert, key } => Some(tls::load(cert, key)?),
        };
        let rustls_config = match &material {
            Some(m) => Some(axum_server::tls_rustls::RustlsConfig::from_config(
                Arc::new(tls::server_config(m)?),
            )),
            None => None,
        };
        let listeners: Vec<_> = self
            .options
            .listen
            .iter()
            .map(|addr| bind(*addr))
            .collect::<Result<_, _>>()?;
        let health_listener = self.options.health.map(bind).transpose()?;
        let state: Shared = Arc::new(State::new(self.session, self.options));
        if state.is_active() {
            state.activate().await?;
        }
        let mut addrs = Vec::new();
        let mut stop = Vec::new();
        let mut tasks = Vec::new();
        let app = crate::front::MakeFront::new(state.clone());
        for listener in listeners {
            let addr = listener.local_addr().map_err(|source| GatewayError::Bind {
                addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                source,
            })?;
            addrs.push(addr);
            let handle = axum_server::Handle::new();
            stop.push(handle.clone());
            let mut server = axum_server::from_tcp(listener)
                .map_err(|source| GatewayError::Bind { addr, source })?
                .handle(handle);
            // An answer's head and (small, JSON) body copied into one buffer and written with
            // one `write`: cheaper than hyper queueing them for `writev` (docs/benchmarks.md).
            server.http_builder().http1().writev(false);
            let app = app.clone();
            tasks.push(match &rustls_config {
                Some(config) => {
                    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config.clone())
                        .acceptor(axum_server::accept::NoDelayAcceptor::new());
                    let server = server.acceptor(acceptor);
                    tokio::spawn(async move {
                        if let Err(e) = server.serve(app).await {
                            tracing::error!(error = %e, "the gateway stopped serving");
                        }
                    })
                }
                None => {
                    let server = server.acceptor(axum_server::accept::NoDelayAcceptor::new());
                    tokio::spawn(async move {
                        if let Err(e) = server.serve(app).await {
                            tracing::error!(error = %e, "the gateway stopped serving");
                        }
                    })
                }
            });
        }
        let mut health = None;
        if let Some(listener) = health_listener {
            let addr = listener.local_addr().map_err(|source| GatewayError::Bind {
                addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                source,
            })?;
            health = Some(addr);
            let handle = axum_server::Handle::new();
            stop.push(handle.clone());
            let app = crate::health::router(state.clone())
                .into_make_service_with_connect_info::<SocketAddr>();
            let server = axum_server::from_tcp(listener)
                .map_err(|source| GatewayError::Bind { addr, source })?
                .handle(handle);
            tasks.push(tokio::spawn(async move {
                if let Err(e) = server.serve(app).await {
                    tracing::error!(error = %e, "the health server stopped");
                }
            }));
        }
        tracing::info!(?addrs, ?health, "gateway listening");
        Ok(Running {
            state,
            addrs,
            health,
            certificate_pem: material.map(|m| m.cert_pem),
            stop,
            tasks,
            _anchor: timer_anchor(),
        })
    }
}

impl Running {
    /// Where clients connect.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Where the health server listens, if it does.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health
    }

    /// The certificate clients see (HTTPS), to trust or pin.
    pub fn certificate_pem(&self) -> Option<&str> {
        self.certificate_pem.as_deref()
    }

    /// The session the gateway serves.
    pub fn session(&self) -> &Session {
        &self.state.session
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), then stops the
    /// keep-alive with one logout.
    pub async fn shutdown(self) {
        let drain: Duration = self.state.options.drain_timeout;
        for handle in &self.stop {
            handle.graceful_shutdown(Some(drain));
        }
        for task in self.tasks {
            let _ = tokio::time::timeout(drain + Duration::from_secs(1), task).await;
        }
        self.state.deactivate().await;
    }

    /// Serves until SIGINT or SIGTERM, then shuts down as [`shutdown`](Self::shutdown) does.
    pub async fn run_until_signal(self) {
        ibauth::signal::shutdown_signal().await;
        tracing::info!("signal: draining, then logging out once");
        self.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, TcpStream};

    #[tokio::test(flavor = "current_thread")]
    async fn the_timer_anchor_keeps_a_timer_due_and_stops_with_its_gateway() {
        let anchor = timer_anchor();
        let task = anchor.0.abort_handle();
        // It wakes once a period and goes back to sleep: still running after one.
        tokio::time::sleep(ANCHOR_PERIOD + Duration::from_millis(100)).await;
        assert!(!task.is_finished());
        drop(anchor);
        tokio::task::yield_now().await;
        assert!(task.is_finished(), "the anchor outlived its gateway");
    }

    #[test]
    fn the_unspecified_ipv6_address_serves_ipv4_clients_too() {
        let listener = bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))).unwrap();
        let port = listener.local_addr().unwrap().port();
        let v4 = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        assert!(v4.peer_addr().unwrap().is_ipv4());
        // IPv6 where the machine has it (a container may not).
        if listener.local_addr().unwrap().is_ipv6() {
            TcpStream::connect((Ipv6Addr::LOCALHOST, port)).unwrap();
        }
        listener.set_nonblocking(false).unwrap();
        let (_, peer) = listener.accept().unwrap();
        // Seen through the IPv6 socket as ::ffff:127.0.0.1, which the access list reads as
        // 127.0.0.1.
        assert_eq!(peer.ip().to_canonical(), Ipv4Addr::LOCALHOST);
    }
}
