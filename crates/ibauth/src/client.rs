//! One interface over every auth method: what a [`crate::Session`] (and the session manager,
//! and applications that choose the method at run time) needs of a client. It is
//! dyn-compatible, so `Box<dyn Client>` is a value like any other.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use url::Url;

use crate::brokerage::{AuthStatus, Authorizer, Logout, Tickle};
use crate::error::{ConfigError, Error};
use crate::http::HttpClient;
use crate::store::StoredTokens;
use crate::tokens::{TokenExpiry, TokenKind};
use crate::ws::WsEndpoint;

/// A boxed, sendable future: what the dyn-compatible [`Client`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The auth method behind a client or session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// OAuth 2.0 (`private_key_jwt`): access token → SSO session bound to the public IP.
    OAuth2,
    /// OAuth 1.0a, first party: live session token by Diffie-Hellman, HMAC-signed requests.
    OAuth1a,
    /// OAuth 1.0a, third party: the user authorises a consumer in the browser first.
    ThirdParty,
}

impl AuthMethod {
    /// `oauth2`, `oauth1a` or `third_party`: the value of the `auth:` setting, and the name
    /// stored with tokens.
    pub fn name(self) -> &'static str {
        match self {
            AuthMethod::OAuth2 => "oauth2",
            AuthMethod::OAuth1a => "oauth1a",
            AuthMethod::ThirdParty => "third_party",
        }
    }

    /// For people: `OAuth 2.0`, `OAuth 1.0a`, `OAuth 1.0a third party`.
    pub fn label(self) -> &'static str {
        match self {
            AuthMethod::OAuth2 => "OAuth 2.0",
            AuthMethod::OAuth1a => "OAuth 1.0a",
            AuthMethod::ThirdParty => "OAuth 1.0a third party",
        }
    }
}

impl std::fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for AuthMethod {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "oauth2" | "oauth_2" | "oauth2.0" => Ok(AuthMethod::OAuth2),
            "oauth1a" | "oauth1" | "oauth_1a" | "first_party" => Ok(AuthMethod::OAuth1a),
            "third_party" | "oauth1a_third_party" => Ok(AuthMethod::ThirdParty),
            _ => Err(ConfigError::Invalid {
                key: "auth".into(),
                reason: format!("`{s}` is not an auth method: use oauth2, oauth1a or third_party"),
            }),
        }
    }
}

/// What a session needs of a client, the same for every auth method.
///
/// The brokerage calls (`init`, `status`, `tickle`, `logout`) are here because a client keeps
/// what they return (OAuth 2.0 refines the bearer's expiry from a tickle); API calls need only
/// [`authorizer`](Self::authorizer), so they never wait on a login in progress.
pub trait Client: Send + std::fmt::Debug {
    /// The auth method.
    fn method(&self) -> AuthMethod;
    /// Gets fresh tokens (access token + bearer, or a live session token).
    fn login(&mut self) -> BoxFuture<'_, Result<(), Error>>;
    /// Renews the given tokens (and whatever they depend on) without a full re-login where
    /// possible.
    fn renew<'a>(&'a mut self, kinds: &'a [TokenKind]) -> BoxFuture<'a, Result<(), Error>>;
    /// `ssodh/init` with `compete`.
    fn init(&mut self, compete: bool) -> BoxFuture<'_, Result<AuthStatus, Error>>;
    /// `iserver/auth/status`.
    fn status(&mut self) -> BoxFuture<'_, Result<AuthStatus, Error>>;
    /// `tickle`.
    fn tickle(&mut self) -> BoxFuture<'_, Result<Tickle, Error>>;
    /// `logout`; the session token is forgotten.
    fn logout(&mut self) -> BoxFuture<'_, Result<Logout, Error>>;
    /// Signs requests with the tokens held now; `Error::NotReady` before a login.
    fn authorizer(&self) -> Result<Arc<dyn Authorizer>, Error>;
    /// Where and how to open the WebSocket (without the session cookie, which a tickle gives).
    fn websocket(&self) -> Result<WsEndpoint, Error>;
    /// The tokens held, with their expiries.
    fn tokens(&self) -> Vec<TokenExpiry>;
    /// Whether the client holds what brokerage calls need (a bearer or a live session token).
    fn has_session_token(&self) -> bool;
    /// Now, in Unix seconds, on the client's clock.
    fn now_unix(&self) -> u64;
    /// The API host in use (`https://api.ibkr.com/`).
    fn api_base(&self) -> &Url;
    /// The REST base in use (`https://api.ibkr.com/v1/api/`).
    fn rest_base(&self) -> &Url;
    /// Moves to another API host: a host name (`1.api.ibkr.com`) or a base URL.
    fn switch_host(&mut self, host: &str) -> Result<(), ConfigError>;
    /// A fingerprint of the credentials, which stored tokens must match.
    fn identity(&self) -> String;
    /// The tokens held, as a document to store (`created_at` = `now`).
    fn stored_tokens(&self, now: u64) -> Option<StoredTokens>;
    /// Takes over stored tokens; false (and nothing changed) if they are not this client's
    /// or hold no session token.
    fn restore_tokens(&mut self, stored: &StoredTokens) -> bool;
    /// Takes whatever long-lived credentials a stored document carries even when its tokens are
    /// stale (a third-party grant); nothing for the first-party methods.
    fn adopt_credentials(&mut self, _stored: &StoredTokens) {}
    /// The public IP this host's session tokens are bound to (OAuth 2.0: the SSO session's
    /// address, from the config or looked up); `None` for methods whose tokens work from any
    /// host. A fleet member checks it before using tokens another host stored.
    fn bound_ip(&mut self) -> BoxFuture<'_, Result<Option<std::net::Ipv4Addr>, Error>> {
        Box::pin(std::future::ready(Ok(None)))
    }
    /// The HTTP client every request goes through.
    fn http(&self) -> &HttpClient;
    /// The `publish` flag for `ssodh/init`.
    fn publish(&self) -> bool;
}

impl<C: Client + ?Sized> Client for Box<C> {
    fn method(&self) -> AuthMethod {
        (**self).method()
    }
    fn login(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        (**self).login()
    }
    fn renew<'a>(&'a mut self, kinds: &'a [TokenKind]) -> BoxFuture<'a, Result<(), Error>> {
        (**self).renew(kinds)
    }
    fn init(&mut self, compete: bool) -> BoxFuture<'_, Result<AuthStatus, Error>> {
        (**self).init(compete)
    }
    fn status(&mut self) -> BoxFuture<'_, Result<AuthStatus, Error>> {
        (**self).status()
    }
    fn tickle(&mut self) -> BoxFuture<'_, Result<Tickle, Error>> {
        (**self).tickle()
    }
    fn logout(&mut self) -> BoxFuture<'_, Result<Logout, Error>> {
        (**self).logout()
    }
    fn authorizer(&self) -> Result<Arc<dyn Authorizer>, Error> {
        (**self).authorizer()
    }
    fn websocket(&self) -> Result<WsEndpoint, Error> {
        (**self).websocket()
    }
    fn tokens(&self) -> Vec<TokenExpiry> {
        (**self).tokens()
    }
    fn has_session_token(&self) -> bool {
        (**self).has_session_token()
    }
    fn now_unix(&self) -> u64 {
        (**self).now_unix()
    }
    fn api_base(&self) -> &Url {
        (**self).api_base()
    }
    fn rest_base(&self) -> &Url {
        (**self).rest_base()
    }
    fn switch_host(&mut self, host: &str) -> Result<(), ConfigError> {
        (**self).switch_host(host)
    }
    fn identity(&self) -> String {
        (**self).identity()
    }
    fn stored_tokens(&self, now: u64) -> Option<StoredTokens> {
        (**self).stored_tokens(now)
    }
    fn restore_tokens(&mut self, stored: &StoredTokens) -> bool {
        (**self).restore_tokens(stored)
    }
    fn adopt_credentials(&mut self, stored: &StoredTokens) {
        (**self).adopt_credentials(stored)
    }
    fn bound_ip(&mut self) -> BoxFuture<'_, Result<Option<std::net::Ipv4Addr>, Error>> {
        (**self).bound_ip()
    }
    fn http(&self) -> &HttpClient {
        (**self).http()
    }
    fn publish(&self) -> bool {
        (**self).publish()
    }
}
