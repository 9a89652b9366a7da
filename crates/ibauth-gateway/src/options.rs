//! What the gateway does: where it listens, with which certificate, who may use it, and how it
//! treats what must not reach IBKR.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::access::AccessList;

/// The gateway's port, as IBKR's Client Portal Gateway's.
pub const DEFAULT_PORT: u16 = 5000;
/// The health server's port, as IBeam's.
pub const DEFAULT_HEALTH_PORT: u16 = 5001;

/// How clients connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// HTTPS with a self-signed certificate made at first start and kept in `dir` (as the
    /// Client Portal Gateway does; clients skip verification, or trust `dir/cert.pem`).
    SelfSigned {
        /// Where the certificate and its key are kept (0600 files in a 0700 folder).
        dir: PathBuf,
    },
    /// HTTPS with the user's own certificate chain and key (PEM files).
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// Plain HTTP (`listenSsl: false`), for clients that require it.
    Plain,
}

/// What a client's `logout` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogoutMode {
    /// Answered here: the session every other client uses goes on.
    #[default]
    Shared,
    /// Passed on: the session ends, for every client.
    Pass,
}

/// CORS for browser clients (the gateway's `cors:` section).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cors {
    /// `Access-Control-Allow-Origin` (`*` or an origin); `None`: no CORS headers.
    pub allowed_origin: Option<String>,
    /// `Access-Control-Allow-Credentials`.
    pub allow_credentials: bool,
}

/// Every setting of a gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Where clients connect (default `[::]:5000`: every IPv6 and IPv4 interface).
    pub listen: Vec<SocketAddr>,
    /// HTTPS (self-signed or own) or plain HTTP.
    pub tls: TlsMode,
    /// Who may use the gateway (and its health server).
    pub access: AccessList,
    /// What a client's `logout` does.
    pub logout: LogoutMode,
    /// Longest a client request waits for its turn under the pacing limits; beyond it the
    /// gateway answers 429 with `Retry-After` itself, so IBKR never sees a violation.
    pub max_wait: Duration,
    /// Longest a client waits for IBKR's answer to begin (then 504); an unreachable IBKR or a
    /// session that is down is answered at once (503).
    pub request_timeout: Duration,
    /// Request bodies up to this size are held whole (a request refused for authentication can
    /// be sent again after the recovery); larger ones are streamed, once.
    pub buffer_request_body: usize,
    /// The health server (`/livez`, `/readyz`, `/status`, `/activate`, `/deactivate`); `None`
    /// for none.
    pub health: Option<SocketAddr>,
    /// Start active (logged in, serving); off: dormant until `/activate`.
    pub start_active: bool,
    /// CORS headers for browser clients.
    pub cors: Cors,
    /// Longest wait for in-flight requests on shutdown, before the one logout.
    pub drain_timeout: Duration,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from((Ipv6Addr::UNSPECIFIED, DEFAULT_PORT))],
            tls: TlsMode::Plain,
            access: AccessList::default(),
            logout: LogoutMode::Shared,
            max_wait: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            buffer_request_body: 256 * 1024,
            health: Some(SocketAddr::from((
                Ipv6Addr::UNSPECIFIED,
                DEFAULT_HEALTH_PORT,
            ))),
            start_active: true,
            cors: Cors::default(),
            drain_timeout: Duration::from_secs(10),
        }
    }
}
