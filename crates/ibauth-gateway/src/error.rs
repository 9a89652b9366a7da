//! What can stop a gateway from starting.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the gateway cannot start; every message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// An address cannot be listened on.
    #[error(
        "cannot listen on {addr}: {source}; is another gateway running there? choose another address with --listen"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate cannot be made or used.
    #[error(
        "TLS: {0}; check the certificate and key files, or remove the self-signed pair to have it made again"
    )]
    Tls(String),
    /// A file cannot be read or written.
    #[error("{what} {}: {source}", .path.display())]
    File {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A setting cannot be used.
    #[error("setting `{key}`: {reason}")]
    Config {
        /// The setting.
        key: String,
        /// What is wrong and what would do.
        reason: String,
    },
    /// The session cannot run.
    #[error(transparent)]
    Session(#[from] ibauth::Error),
}
