//! The stored document: which login the tokens belong to, when that login happened, the tokens
//! with their expiries, the session id and the API host. `Debug` never shows a token.

use std::net::Ipv4Addr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::SCHEMA_VERSION;

fn expose<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
    String::deserialize(d).map(SecretString::from)
}

/// The tokens of one login, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredTokens {
    /// Document version ([`SCHEMA_VERSION`] when written by this build).
    pub schema: u32,
    /// `oauth2`, `oauth1a` or `third_party`.
    pub method: String,
    /// A fingerprint of the credentials the tokens were issued to (a hash: no credential is
    /// stored); tokens of another account or consumer are never used.
    pub identity: String,
    /// When the login behind these tokens happened (Unix seconds); kept across renewals.
    pub created_at: u64,
    /// When the document was last written (Unix seconds).
    pub updated_at: u64,
    /// The API base URL the tokens were used with.
    pub api_base: String,
    /// The brokerage session id from the last tickle, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// OAuth 2.0 access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<StoredToken>,
    /// OAuth 2.0 SSO bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<StoredBearer>,
    /// OAuth 1.0a live session token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_session_token: Option<StoredLst>,
    /// OAuth 1.0a third party: the access token the user's authorisation granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<StoredGrant>,
}

/// A third-party grant: the access token and its secret as IBKR issued them (the secret is
/// still encrypted to the consumer's encryption key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredGrant {
    /// The consumer it was granted to.
    pub consumer_key: String,
    /// The access token.
    #[serde(serialize_with = "expose", deserialize_with = "secret")]
    pub access_token: SecretString,
    /// Its secret (base64 of an RSA ciphertext).
    #[serde(serialize_with = "expose", deserialize_with = "secret")]
    pub access_token_secret: SecretString,
    /// A paper-trading account.
    pub is_paper: bool,
    /// When the user authorised (Unix seconds); absent in files of ibauth 0.1, where the
    /// document's `created_at` stood for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_at: Option<u64>,
}

impl PartialEq for StoredGrant {
    fn eq(&self, other: &Self) -> bool {
        self.consumer_key == other.consumer_key
            && self.access_token.expose_secret() == other.access_token.expose_secret()
    }
}

/// An OAuth 2.0 access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredToken {
    /// The token.
    #[serde(serialize_with = "expose", deserialize_with = "secret")]
    pub token: SecretString,
    /// `token_type`.
    pub token_type: String,
    /// Granted scope.
    #[serde(default)]
    pub scope: Option<String>,
    /// When it was obtained (Unix seconds).
    pub obtained_at: u64,
    /// When it expires (Unix seconds), if IBKR said.
    #[serde(default)]
    pub expires_at: Option<u64>,
}

/// An OAuth 2.0 SSO bearer token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredBearer {
    /// The token.
    #[serde(serialize_with = "expose", deserialize_with = "secret")]
    pub token: SecretString,
    /// The public IP the SSO session is bound to.
    pub ip: Ipv4Addr,
    /// When it was obtained (Unix seconds).
    pub obtained_at: u64,
    /// When it expires (Unix seconds).
    pub expires_at: u64,
}

/// An OAuth 1.0a live session token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredLst {
    /// The token (base64).
    #[serde(serialize_with = "expose", deserialize_with = "secret")]
    pub token: SecretString,
    /// When it was obtained (Unix seconds).
    pub obtained_at: u64,
    /// When it expires (Unix milliseconds, from IBKR).
    pub expires_at_ms: u64,
}

// Equality compares the tokens themselves: "has another process stored a different token?"
impl PartialEq for StoredToken {
    fn eq(&self, other: &Self) -> bool {
        self.token.expose_secret() == other.token.expose_secret()
            && self.expires_at == other.expires_at
    }
}

impl PartialEq for StoredBearer {
    fn eq(&self, other: &Self) -> bool {
        self.token.expose_secret() == other.token.expose_secret()
            && self.expires_at == other.expires_at
    }
}

impl PartialEq for StoredLst {
    fn eq(&self, other: &Self) -> bool {
        self.token.expose_secret() == other.token.expose_secret()
            && self.expires_at_ms == other.expires_at_ms
    }
}

impl StoredTokens {
    /// An empty document for `method` and `identity`, created `now`.
    pub fn new(method: &str, identity: String, api_base: String, now: u64) -> Self {
        Self {
            schema: SCHEMA_VERSION,
            method: method.to_owned(),
            identity,
            created_at: now,
            updated_at: now,
            api_base,
            session_id: None,
            access_token: None,
            bearer: None,
            live_session_token: None,
            grant: None,
        }
    }

    /// How long ago the login behind these tokens happened.
    pub fn token_age(&self, now: u64) -> std::time::Duration {
        std::time::Duration::from_secs(now.saturating_sub(self.created_at))
    }

    /// When the token that brokerage calls use (bearer or LST) expires (Unix seconds).
    pub fn session_token_expiry(&self) -> Option<u64> {
        match (&self.bearer, &self.live_session_token) {
            (Some(b), _) => Some(b.expires_at),
            (None, Some(l)) => Some(l.expires_at_ms / 1000),
            (None, None) => None,
        }
    }

    /// Whether the session token is still valid `margin` seconds from `now`.
    pub fn usable(&self, now: u64, margin: u64) -> bool {
        self.session_token_expiry()
            .is_some_and(|e| e > now.saturating_add(margin))
    }

    /// The stored tokens' expiries, as the session manager sees them.
    pub fn expiries(&self) -> Vec<crate::tokens::TokenExpiry> {
        use crate::tokens::{TokenExpiry, TokenKind};
        let access = self.access_token.as_ref().and_then(|a| {
            a.expires_at.map(|expires_at| TokenExpiry {
                kind: TokenKind::AccessToken,
                obtained_at: a.obtained_at,
                expires_at,
            })
        });
        let bearer = self.bearer.as_ref().map(|b| TokenExpiry {
            kind: TokenKind::Bearer,
            obtained_at: b.obtained_at,
            expires_at: b.expires_at,
        });
        let lst = self.live_session_token.as_ref().map(|l| TokenExpiry {
            kind: TokenKind::LiveSessionToken,
            obtained_at: l.obtained_at,
            expires_at: l.expires_at_ms / 1000,
        });
        access.into_iter().chain(bearer).chain(lst).collect()
    }

    /// Whether `other` holds the same session token (bearer or LST) as this document.
    pub fn same_session_token(&self, other: &StoredTokens) -> bool {
        self.bearer == other.bearer && self.live_session_token == other.live_session_token
    }
}

/// A short, stable fingerprint of `parts` (SHA-256, hex, 16 bytes): it names a set of
/// credentials without storing any of them.
pub(crate) fn fingerprint(parts: &[&str]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for part in parts {
        ctx.update(part.as_bytes());
        ctx.update(&[0]);
    }
    ctx.finish().as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredTokens {
        let mut t = StoredTokens::new(
            "oauth2",
            fingerprint(&["a", "b"]),
            "https://api.ibkr.com/".into(),
            1_000,
        );
        t.bearer = Some(StoredBearer {
            token: SecretString::from("bearer-secret-value"),
            ip: Ipv4Addr::LOCALHOST,
            obtained_at: 1_000,
            expires_at: 2_000,
        });
        t
    }

    #[test]
    fn round_trips_and_never_debugs_a_token() {
        let t = sample();
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains("bearer-secret-value"), "stored as written");
        let back: StoredTokens = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert!(!format!("{t:?}").contains("bearer-secret-value"));
    }

    #[test]
    fn usable_until_the_margin_and_aged_from_the_login() {
        let t = sample();
        assert!(t.usable(1_500, 60));
        assert!(!t.usable(1_950, 60));
        assert!(!t.usable(2_000, 0));
        assert_eq!(t.token_age(1_250).as_secs(), 250);
    }

    #[test]
    fn fingerprints_separate_their_parts() {
        assert_ne!(fingerprint(&["ab", "c"]), fingerprint(&["a", "bc"]));
        assert_eq!(fingerprint(&["x"]).len(), 32);
    }
}
