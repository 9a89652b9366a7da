//! Errors starting the sandbox or preparing its files.

use std::net::SocketAddr;

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
    /// A Diffie-Hellman group is unusable.
    #[error("DH group: {0}")]
    DhGroup(#[source] ibauth::oauth1a::LstError),
}
