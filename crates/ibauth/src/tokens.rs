//! The tokens a login yields and when they run out — shared by the clients, the token store and
//! the session, so none of them depends on another for it.

use std::time::Duration;

/// A token the session keeps fresh.
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
    pub fn due(&self, now: u64, margin: Duration) -> bool {
        let lifetime = self.expires_at.saturating_sub(self.obtained_at);
        let margin = margin.as_secs().min(lifetime / 2);
        self.expires_at.saturating_sub(now) <= margin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
