//! OAuth 2.0 (`private_key_jwt`, RFC 7521/7523): client assertion → access token → SSO session
//! (bearer token) → the brokerage session.
//!
//! ```no_run
//! # async fn run() -> Result<(), ibauth::Error> {
//! let config = ibauth::Config::load(None)?;
//! let mut client = ibauth::Oauth2Client::new(config)?;
//! let session = client.connect().await?;
//! println!("authenticated: {}", session.status.authenticated);
//! let tickle = client.tickle().await?;
//! println!("session {}", tickle.session);
//! client.logout().await?;
//! # Ok(()) }
//! ```

mod assertion;
pub(crate) mod client;

pub use crate::brokerage::Connected;
pub use assertion::{
    ASSERTION_AUDIENCE, ASSERTION_BACKDATE_SECS, ASSERTION_LIFETIME_SECS,
    SSO_SESSION_LIFETIME_SECS, client_assertion, client_assertion_with_jti, sso_session_request,
    sso_session_request_with_jti,
};
pub use client::{AccessToken, BearerToken, Oauth2Client, token_request_body};

/// `client_assertion_type` of the token request.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// `scope` of the token request.
pub const SCOPE: &str = "sso-sessions.write";
/// Path of the token endpoint.
pub const TOKEN_PATH: &str = "/oauth2/api/v1/token";
/// Path of the SSO-session endpoint.
pub const SSO_SESSIONS_PATH: &str = "/gw/api/v1/sso-sessions";
/// Path of the REST API the brokerage session lives under.
pub const REST_PATH: &str = "/v1/api/";
