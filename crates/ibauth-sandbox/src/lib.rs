//! # ibauth-sandbox
//!
//! A local emulator of the Interactive Brokers Web API's authentication endpoints, with IBKR's
//! paths and answer shapes, that really verifies what it receives: RS256 client assertions
//! against the registered key for their `kid`, the SSO session's IP binding, token expiry, and a
//! bearer token on every brokerage-session call. It runs in-process for tests and as
//! `ibauth sandbox` from the shell, over HTTP or HTTPS (with a CA it generates).
//!
//! Behind the same checks it serves a few Web API endpoints, so a client's API calls can be
//! tested for real: `iserver/accounts`, `portfolio/accounts`, `iserver/marketdata/snapshot`,
//! `iserver/account/{accountId}/orders` (placed orders are recorded, see [`Control::orders`])
//! and `iserver/account/orders`; its WebSocket streams market data (`smd+<conid>+…`) at every
//! heartbeat.
//!
//! With [`SandboxBuilder::pacing`] it enforces IBKR's rate limits ([`PacingLimits`]) with a
//! penalty box, so a test can prove a client never earns a 429.
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

// Layers, lowest first; each uses only the ones before it, so no module calls back up:
// `paths`, `dh_primes`, `files` (helpers) → `state` (data) → `jwt`, `oauth1a`, `oauth2`,
// `reply`, `ssodh` (verification, parameters, refusals) → `authn` (who calls), `pacing`
// (limits over HTTP) → `brokerage`, `api`, `third_party`, `ws`, `faults` (endpoints,
// middleware) → `v1`, `router`, `admin` (HTTP surface) → `control`, `nightly`, `server` (the
// public handles).
mod admin;
mod api;
mod authn;
mod brokerage;
mod control;
mod credentials;
mod dh_primes;
mod error;
mod faults;
mod files;
mod jwt;
mod nightly;
mod oauth1a;
mod oauth2;
mod pacing;
mod paths;
mod registration;
mod reply;
mod router;
mod server;
mod ssodh;
mod state;
mod third_party;
pub mod tls;
mod v1;
mod ws;

pub use control::Control;
pub use credentials::{
    CredentialSet, SANDBOX_CLIENT_ID, SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL, SANDBOX_KEY_ID,
    SANDBOX_PASSWORD,
};
pub use dh_primes::SANDBOX_DH_PRIMES;
pub use error::SandboxError;
pub use jwt::JwtError;
pub use nightly::{NightlyReset, NightlyResetError};
pub use oauth1a::RFC3526_PRIME_2048;
pub use registration::{ClientRegistration, ConsumerRegistration};
pub use server::{Sandbox, SandboxBuilder};
pub use state::{
    Counters, FailWith, Flags, Lifetimes, PacingLimits, PlacedOrder, RegisteredClient,
};

/// Entry points for the fuzz targets (`fuzz/`, built by `cargo fuzz` with `--cfg fuzzing`):
/// thin wrappers that call the sandbox's own parsers of what clients send. Not part of the API.
#[cfg(fuzzing)]
#[doc(hidden)]
#[allow(missing_docs)]
pub mod fuzzing {
    use std::collections::BTreeMap;

    pub use crate::jwt::{Unverified, parse as jwt_parse};

    /// The parameters of an `Authorization: OAuth …` header; the refusal as text.
    pub fn oauth_header(value: &str) -> Result<BTreeMap<String, String>, String> {
        crate::oauth1a::header::parse_header(value).map_err(|e| format!("{e:?}"))
    }

    /// A parsed JWT's claims, without checking the signature (how the sandbox finds the key).
    pub fn jwt_peek(token: &Unverified<'_>) -> Option<serde_json::Value> {
        token.peek()
    }
}
