//! # ibauth
//!
//! Authenticate to the Interactive Brokers (IBKR) Web API — OAuth 2.0 (`private_key_jwt`),
//! OAuth 1.0a first party (live session token by Diffie-Hellman) or third party — and *use* the
//! authenticated session: paced calls to any endpoint, one recovery shared by every caller, a
//! background keep-alive and the WebSocket.
//!
//! [`Session`] is the way in: built from one configuration of any method ([`AuthConfig`]), it
//! keeps tokens in a shared store ([`store`]) and logs in only when it must, and every request
//! waits for its turn under IBKR's published limits ([`pacing`]) before it is sent.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let session = ibauth::Session::from_config(None, None)?.build()?;
//! let accounts: serde_json::Value = session.get("portfolio/accounts").await?.json()?;
//! println!("{accounts}");
//! # Ok(()) }
//! ```
//!
//! The layers mirror the protocol's three layers of state, each usable on its own:
//!
//! * credentials — [`Config`] (OAuth 2.0), [`oauth1a::Oauth1aConfig`],
//!   [`oauth1a::ThirdPartyConfig`], one of them in an [`AuthConfig`];
//! * tokens — a [`Client`] per method ([`Oauth2Client`], [`oauth1a::Oauth1aClient`],
//!   [`oauth1a::GrantedClient`]), dyn-compatible so the method can be chosen at run time;
//! * the brokerage session — [`BrokerageClient`], shared by every method through the
//!   [`Authorizer`] seam, kept alive by the keep-alive ([`Session::keep_alive`],
//!   [`manager`]).
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
pub mod coord;
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
mod private_file;
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
pub use tokens::{
    MAX_TOKEN_LIFETIME, MIN_RENEWAL_SPACING, MIN_TOKEN_LIFETIME, TokenExpiry, TokenKind,
    min_renewal_spacing,
};

/// PEM-encodes DER with 64-column lines (for tools that write keys and parameters).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode(label, der)
}
pub use brokerage::{
    AuthStatus, Authorizer, BearerAuthorizer, BrokerageClient, Connected, IServer, Logout,
    ServerInfo, SsoValidation, Tickle, short_id,
};

/// The crate README's example, compiled as a doc test so it cannot rot (the repository README's
/// example is run against the sandbox by `tests/readme.rs`).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
