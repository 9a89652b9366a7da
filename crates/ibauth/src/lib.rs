//! # ibauth
//!
//! Authenticate to the Interactive Brokers (IBKR) Web API and keep the brokerage session: the
//! whole OAuth 2.0 (`private_key_jwt`) login — client assertion, access token, SSO session
//! bound to your public IP, `sso/validate`, `ssodh/init` — then `tickle` and `logout`.
//!
//! The layers mirror the protocol's three layers of state:
//!
//! * [`Config`] — credentials, from YAML, `IBAUTH_*` variables or a builder;
//! * [`Oauth2Client`] — turns credentials into tokens;
//! * [`BrokerageClient`] — the brokerage-session calls, shared by every auth method through
//!   the [`Authorizer`] seam.
//!
//! ```no_run
//! # async fn run() -> Result<(), ibauth::Error> {
//! let config = ibauth::Config::builder()
//!     .client_id("MYCLIENT")
//!     .client_key_id("main")
//!     .credential("myusername")
//!     .private_key_file("private_key.pem")
//!     .build()?;
//! let mut client = ibauth::Oauth2Client::new(config)?;
//! let connected = client.connect().await?;
//! assert!(connected.status.authenticated);
//! client.tickle().await?;
//! client.logout().await?;
//! # Ok(()) }
//! ```
//!
//! Secrets (the credential, tokens, assertions, keys) are held in [`secrecy`] types or in
//! wrappers whose `Debug` hides them, and never reach logs or errors.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod auth;
mod brokerage;
mod client;
mod clock;
mod config;
mod error;
pub mod http;
mod jwt;
mod key;
pub mod manager;
pub mod oauth1a;
pub mod oauth2;
pub mod pacing;
mod pem;
pub mod policy;
mod public_ip;
pub mod session;
mod settings;
pub mod signal;
pub mod store;
mod tokens;
pub mod ws;

pub use auth::AuthConfig;
pub use client::{AuthMethod, BoxFuture, Client};
pub use clock::{Clock, FixedClock, SystemClock};
pub use config::{
    Config, ConfigBuilder, DEFAULT_CONFIG_FILE, DEFAULT_DOMAIN, DEFAULT_IP_LOOKUP_URLS,
    DEFAULT_TIMEOUT,
};
pub use error::{ConfigError, Error, KeyError, Step};
pub use http::{HttpClient, MAX_RETRY_AFTER, USER_AGENT};
pub use key::{DecryptionKey, SigningKey};
pub use oauth2::Oauth2Client;
pub use reqwest::Method;
pub use secrecy;
pub use session::{ApiRequest, ApiResponse, KeepAlive, Session, SessionBuilder};
pub use tokens::{TokenExpiry, TokenKind};

/// PEM-encodes DER with 64-column lines (for tools that write keys and parameters).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode(label, der)
}
pub use brokerage::{
    AuthStatus, Authorizer, BearerAuthorizer, BrokerageClient, Connected, IServer, Logout,
    ServerInfo, SsoValidation, Tickle, short_id,
};

/// The README's library example, compiled as a doc test so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
