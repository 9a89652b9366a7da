//! The two signed JWTs of the OAuth 2.0 login, as pure functions of key, ids and time.
//!
//! Claim order and values match IBKR's reference client byte for byte (see the vectors test).

use std::net::Ipv4Addr;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use crate::jwt::sign_rs256;
use crate::key::SigningKey;

/// `aud` of the client assertion: the literal IBKR expects.
pub const ASSERTION_AUDIENCE: &str = "/token";
/// Lifetime of the client assertion (`exp` = now + 20 s).
pub const ASSERTION_LIFETIME_SECS: u64 = 20;
/// Back-dating of the client assertion (`iat` = now − 10 s), for clock skew.
pub const ASSERTION_BACKDATE_SECS: u64 = 10;
/// Lifetime requested for the SSO session (`exp` = now + 24 h).
pub const SSO_SESSION_LIFETIME_SECS: u64 = 86_400;

#[derive(Serialize)]
struct ClientAssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'static str,
    exp: u64,
    iat: u64,
}

#[derive(Serialize)]
struct SsoSessionClaims<'a> {
    ip: String,
    credential: &'a str,
    iss: &'a str,
    exp: u64,
    iat: u64,
}

/// JWT-A, the `private_key_jwt` client assertion (RFC 7523) for the token endpoint.
///
/// ```
/// # let key = ibauth::SigningKey::generate().unwrap();
/// use secrecy::ExposeSecret;
/// let jwt = ibauth::oauth2::client_assertion(&key, "main", "TESTCLIENT", 1_700_000_000);
/// assert_eq!(jwt.expose_secret().split('.').count(), 3);
/// ```
pub fn client_assertion(
    key: &SigningKey,
    client_key_id: &str,
    client_id: &str,
    now_unix: u64,
) -> SecretString {
    let claims = ClientAssertionClaims {
        iss: client_id,
        sub: client_id,
        aud: ASSERTION_AUDIENCE,
        exp: now_unix + ASSERTION_LIFETIME_SECS,
        iat: now_unix.saturating_sub(ASSERTION_BACKDATE_SECS),
    };
    SecretString::from(sign_rs256(key, client_key_id, &claims))
}

/// JWT-B, the SSO-session request, bound to the caller's public IP.
pub fn sso_session_request(
    key: &SigningKey,
    client_key_id: &str,
    client_id: &str,
    credential: &SecretString,
    ip: Ipv4Addr,
    now_unix: u64,
) -> SecretString {
    let claims = SsoSessionClaims {
        ip: ip.to_string(),
        credential: credential.expose_secret(),
        iss: client_id,
        exp: now_unix + SSO_SESSION_LIFETIME_SECS,
        iat: now_unix,
    };
    SecretString::from(sign_rs256(key, client_key_id, &claims))
}
