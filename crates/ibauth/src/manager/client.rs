//! What the session manager needs of a client, implemented for both auth methods.

use std::future::Future;

use crate::error::{ConfigError, Error};
use crate::oauth1a::Oauth1aClient;
use crate::oauth2::Oauth2Client;
use crate::session::{AuthStatus, Logout, Tickle};
use crate::store::StoredTokens;

/// A token the manager keeps fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// OAuth 2.0 access token (opens SSO sessions).
    AccessToken,
    /// OAuth 2.0 SSO bearer token (authorises the brokerage session).
    Bearer,
    /// OAuth 1.0a live session token (keys every request's HMAC).
    LiveSessionToken,
}

impl TokenKind {
    /// Short machine-friendly name (`access_token`, `bearer`, `live_session_token`).
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::AccessToken => "access_token",
            TokenKind::Bearer => "bearer",
            TokenKind::LiveSessionToken => "live_session_token",
        }
    }
}

/// When a held token was obtained and when it expires (Unix seconds, the client's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenExpiry {
    /// Which token.
    pub kind: TokenKind,
    /// When it was obtained.
    pub obtained_at: u64,
    /// When it expires.
    pub expires_at: u64,
}

impl TokenExpiry {
    /// Whether to renew it now: within `margin` of expiry, where the margin is at most half
    /// the token's lifetime (so a short-lived token is not renewed on every turn).
    pub fn due(&self, now: u64, margin: std::time::Duration) -> bool {
        let lifetime = self.expires_at.saturating_sub(self.obtained_at);
        let margin = margin.as_secs().min(lifetime / 2);
        self.expires_at.saturating_sub(now) <= margin
    }
}

/// What the manager needs of a client; implemented for [`Oauth2Client`] and
/// [`Oauth1aClient`].
pub trait Client: Send {
    /// Gets fresh tokens (access token + bearer, or a live session token).
    fn login(&mut self) -> impl Future<Output = Result<(), Error>> + Send;
    /// `ssodh/init` with `compete`.
    fn init(&mut self, compete: bool) -> impl Future<Output = Result<AuthStatus, Error>> + Send;
    /// `iserver/auth/status`.
    fn status(&mut self) -> impl Future<Output = Result<AuthStatus, Error>> + Send;
    /// `tickle`.
    fn tickle(&mut self) -> impl Future<Output = Result<Tickle, Error>> + Send;
    /// `logout`.
    fn logout(&mut self) -> impl Future<Output = Result<Logout, Error>> + Send;
    /// Renews the given tokens (and whatever they depend on) without a full re-login where
    /// possible.
    fn renew(&mut self, kinds: &[TokenKind]) -> impl Future<Output = Result<(), Error>> + Send;
    /// The tokens held, with their expiries.
    fn tokens(&self) -> Vec<TokenExpiry>;
    /// Whether the client holds what brokerage calls need (a bearer or a live session token).
    fn has_session_token(&self) -> bool;
    /// Now, in Unix seconds, on the client's clock.
    fn now_unix(&self) -> u64;
    /// The API base URL in use.
    fn api_base(&self) -> String;
    /// Moves to another API host: a host name (`1.api.ibkr.com`) or a base URL.
    fn switch_host(&mut self, host: &str) -> Result<(), ConfigError>;
    /// A fingerprint of the credentials, which stored tokens must match.
    fn identity(&self) -> String;
    /// The tokens held, as a document to store (`created_at` = `now`).
    fn stored_tokens(&self, now: u64) -> Option<StoredTokens>;
    /// Takes over stored tokens; false (and nothing changed) if they are not this client's.
    fn restore_tokens(&mut self, stored: &StoredTokens) -> bool;
}

impl Client for Oauth2Client {
    async fn login(&mut self) -> Result<(), Error> {
        self.request_access_token().await?;
        self.create_sso_session().await?;
        self.validate().await.map(|_| ())
    }
    async fn init(&mut self, compete: bool) -> Result<AuthStatus, Error> {
        self.init_brokerage_session_with(compete).await
    }
    async fn status(&mut self) -> Result<AuthStatus, Error> {
        self.auth_status().await
    }
    async fn tickle(&mut self) -> Result<Tickle, Error> {
        Oauth2Client::tickle(self).await
    }
    async fn logout(&mut self) -> Result<Logout, Error> {
        Oauth2Client::logout(self).await
    }
    async fn renew(&mut self, kinds: &[TokenKind]) -> Result<(), Error> {
        let now = self.now_unix();
        // A new bearer needs a live access token: renew it first if it is also running out.
        let access_stale = self
            .access_token()
            .is_none_or(|a| a.expires_at.is_some_and(|e| e <= now + 1));
        if kinds.contains(&TokenKind::AccessToken)
            || (kinds.contains(&TokenKind::Bearer) && access_stale)
        {
            self.request_access_token().await?;
        }
        if kinds.contains(&TokenKind::Bearer) {
            self.create_sso_session().await?;
            self.validate().await?;
        }
        Ok(())
    }
    fn tokens(&self) -> Vec<TokenExpiry> {
        let access = self.access_token().and_then(|a| {
            a.expires_at.map(|expires_at| TokenExpiry {
                kind: TokenKind::AccessToken,
                obtained_at: a.obtained_at,
                expires_at,
            })
        });
        let bearer = self.bearer_token().map(|b| TokenExpiry {
            kind: TokenKind::Bearer,
            obtained_at: b.obtained_at,
            expires_at: b.expires_at,
        });
        access.into_iter().chain(bearer).collect()
    }
    fn has_session_token(&self) -> bool {
        self.bearer_token().is_some()
    }
    fn now_unix(&self) -> u64 {
        self.clock().now_unix()
    }
    fn api_base(&self) -> String {
        Oauth2Client::api_base(self).to_string()
    }
    fn switch_host(&mut self, host: &str) -> Result<(), ConfigError> {
        if host.contains("://") {
            self.set_base_url(host)
        } else {
            self.set_domain(host)
        }
    }
    fn identity(&self) -> String {
        Self::identity(self)
    }
    fn stored_tokens(&self, now: u64) -> Option<StoredTokens> {
        Self::stored_tokens(self, now)
    }
    fn restore_tokens(&mut self, stored: &StoredTokens) -> bool {
        Self::restore_tokens(self, stored)
    }
}

impl Client for Oauth1aClient {
    async fn login(&mut self) -> Result<(), Error> {
        self.request_live_session_token().await.map(|_| ())
    }
    async fn init(&mut self, compete: bool) -> Result<AuthStatus, Error> {
        self.init_brokerage_session_with(compete).await
    }
    async fn status(&mut self) -> Result<AuthStatus, Error> {
        self.auth_status().await
    }
    async fn tickle(&mut self) -> Result<Tickle, Error> {
        Oauth1aClient::tickle(self).await
    }
    async fn logout(&mut self) -> Result<Logout, Error> {
        Oauth1aClient::logout(self).await
    }
    async fn renew(&mut self, kinds: &[TokenKind]) -> Result<(), Error> {
        if kinds.contains(&TokenKind::LiveSessionToken) {
            self.request_live_session_token().await?;
        }
        Ok(())
    }
    fn tokens(&self) -> Vec<TokenExpiry> {
        self.live_session_token()
            .filter(|t| t.expires_at_ms > 0)
            .map(|t| TokenExpiry {
                kind: TokenKind::LiveSessionToken,
                obtained_at: t.obtained_at,
                expires_at: t.expires_at_ms / 1000,
            })
            .into_iter()
            .collect()
    }
    fn has_session_token(&self) -> bool {
        self.live_session_token().is_some()
    }
    fn now_unix(&self) -> u64 {
        self.clock().now_unix()
    }
    fn api_base(&self) -> String {
        self.base_url().to_string()
    }
    fn switch_host(&mut self, host: &str) -> Result<(), ConfigError> {
        if host.contains("://") {
            self.set_base_url(host)
        } else {
            self.set_domain(host)
        }
    }
    fn identity(&self) -> String {
        Self::identity(self)
    }
    fn stored_tokens(&self, now: u64) -> Option<StoredTokens> {
        Self::stored_tokens(self, now)
    }
    fn restore_tokens(&mut self, stored: &StoredTokens) -> bool {
        Self::restore_tokens(self, stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renewal_is_due_within_the_margin_capped_at_half_the_lifetime() {
        let day = TokenExpiry {
            kind: TokenKind::Bearer,
            obtained_at: 1_000,
            expires_at: 1_000 + 86_400,
        };
        let margin = Duration::from_secs(600);
        assert!(!day.due(1_000, margin));
        assert!(!day.due(day.expires_at - 601, margin));
        assert!(day.due(day.expires_at - 600, margin));
        assert!(day.due(day.expires_at + 5, margin), "already expired");
        let short = TokenExpiry {
            kind: TokenKind::LiveSessionToken,
            obtained_at: 1_000,
            expires_at: 1_004,
        };
        assert!(!short.due(1_000, margin), "not renewed right after login");
        assert!(!short.due(1_001, margin));
        assert!(short.due(1_002, margin), "half its lifetime left");
    }
}
