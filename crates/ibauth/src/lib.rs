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
mod upstream;
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

/// Entry points for the fuzz targets (`fuzz/`, built by `cargo fuzz` with `--cfg fuzzing`):
/// thin wrappers that call the crate's own parsers of outside input. Not part of the API.
#[cfg(fuzzing)]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod fuzzing {
    use std::net::Ipv4Addr;
    use std::time::{Duration, SystemTime};

    use secrecy::SecretString;

    pub use crate::oauth1a::client::LiveSessionToken;
    pub use crate::oauth2::client::{AccessToken, BearerToken};
    pub use tokio_tungstenite::WebSocketStream;

    fn reply(status: u16, body: &[u8]) -> crate::http::Reply {
        crate::http::Reply {
            status,
            headers: reqwest::header::HeaderMap::new(),
            body: body.to_vec(),
            retry_after: None,
        }
    }

    /// The first PEM block: (label, legacy encryption header, DER).
    pub fn pem_block(text: &str) -> Option<(String, bool, Vec<u8>)> {
        crate::pem::first_block(text)
            .ok()
            .map(|b| (b.label, b.encrypted_header, b.der))
    }

    /// `dhparam.pem`'s DER (PKCS#3 `DHParameter`): (prime, generator).
    pub fn dhparam(der: &[u8]) -> Option<(Vec<u8>, u32)> {
        crate::oauth1a::config::parse_dhparam(der)
    }

    pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
        crate::http::parse_retry_after(value, now)
    }

    pub fn ibkr_message(body: &[u8]) -> String {
        crate::http::ibkr_message(body)
    }

    /// An answer of `status` with `body`, parsed as `step`'s answer `T`.
    pub fn reply_json<T: serde::de::DeserializeOwned>(
        status: u16,
        body: &[u8],
        step: crate::Step,
    ) -> Result<T, crate::Error> {
        reply(status, body).json(step)
    }

    /// Why a Web API call's answer counts as refused for authentication, if it does.
    pub fn refused_for_authentication(status: u16, body: &[u8]) -> Option<&'static str> {
        crate::session::api::refused_for_authentication(&reply(status, body))
    }

    pub fn public_ip(body: &[u8]) -> Option<Ipv4Addr> {
        crate::public_ip::parse_answer(body)
    }

    pub fn access_token(status: u16, body: &[u8], now: u64) -> Result<AccessToken, crate::Error> {
        crate::oauth2::client::access_token_from(&reply(status, body), now)
    }

    pub fn bearer_token(
        status: u16,
        body: &[u8],
        ip: Ipv4Addr,
        now: u64,
    ) -> Result<BearerToken, crate::Error> {
        crate::oauth2::client::bearer_token_from(&reply(status, body), ip, now)
    }

    pub fn live_session_token(
        status: u16,
        body: &[u8],
        dh: &crate::oauth1a::DhGroup,
        secret: &crate::oauth1a::DhSecret,
        prepend: &SecretString,
        consumer_key: &str,
        now: u64,
    ) -> Result<LiveSessionToken, crate::Error> {
        crate::oauth1a::client::live_session_token_from(
            &reply(status, body),
            dh,
            secret,
            prepend,
            consumer_key,
            now,
        )
    }

    pub fn request_token(
        status: u16,
        body: &[u8],
        callback: String,
    ) -> Result<crate::oauth1a::RequestToken, crate::Error> {
        crate::oauth1a::third_party::request_token_from(&reply(status, body), callback)
    }

    pub fn access_grant(
        status: u16,
        body: &[u8],
    ) -> Result<crate::oauth1a::AccessGrant, crate::Error> {
        crate::oauth1a::third_party::access_grant_from(&reply(status, body))
    }

    /// The timeout an OAuth 1.0a configuration gives every call.
    pub fn oauth1a_timeout(config: &crate::oauth1a::Oauth1aConfig) -> Duration {
        config.timeout_value()
    }

    /// The third-party callback's reading of a request's query.
    pub fn callback_answer(
        query: &str,
        request: &crate::oauth1a::RequestToken,
    ) -> Option<Result<SecretString, crate::oauth1a::VerifierError>> {
        crate::oauth1a::login::answer(query, request)
    }

    /// The WebSocket handshake answer read from `stream` (the request was sent with `key`),
    /// then the socket as ibauth opens it: frames and messages capped at `max_message`.
    pub async fn ws_answer<S>(
        stream: S,
        key: &str,
        max_message: usize,
    ) -> Result<(WebSocketStream<S>, u16), crate::Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        crate::ws::read_answer(stream, key, crate::ws::socket_config(max_message)).await
    }
}
