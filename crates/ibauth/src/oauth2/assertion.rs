//! The two signed JWTs of the OAuth 2.0 login, as pure functions of key, ids and time.
//!
//! Claim order and values match IBKR's reference client byte for byte (see the vectors test),
//! plus a random `jti` last: RFC 7523 §3 lets a server refuse a replayed assertion, and IBKR's
//! OpenAPI lists the claim, so two logins in the same second must not send identical bytes.
//! The `_with_jti(…, None)` forms give the reference client's exact bytes.

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
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
}

#[derive(Serialize)]
struct SsoSessionClaims<'a> {
    ip: String,
    credential: &'a str,
    iss: &'a str,
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
}

/// A fresh `jti`: 128 random bits as lowercase hex.
fn random_jti() -> String {
    let mut bytes = [0u8; 16];
    // Without a working RNG nothing can be signed safely.
    #[allow(clippy::expect_used)]
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random number generator is unavailable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// JWT-A, the `private_key_jwt` client assertion (RFC 7523) for the token endpoint, with a
/// fresh random `jti`.
///
/// ```
/// # let key = ibauth::SigningKey::generate().unwrap();
/// use secrecy::ExposeSecret;
/// let jwt = ibauth::oauth2::client_assertion(&key, "main", "TESTCLIENT", 1_700_000_000);
/// assert_eq!(jwt.expose_secret().split('.').count(), 3);
/// // Same key, ids and second, yet never the same bytes: a server may refuse a replay.
/// let again = ibauth::oauth2::client_assertion(&key, "main", "TESTCLIENT", 1_700_000_000);
/// assert_ne!(jwt.expose_secret(), again.expose_secret());
/// ```
pub fn client_assertion(
    key: &SigningKey,
    client_key_id: &str,
    client_id: &str,
    now_unix: u64,
) -> SecretString {
    client_assertion_with_jti(key, client_key_id, client_id, now_unix, Some(&random_jti()))
}

/// JWT-A with the given `jti` (`None`: no `jti` claim, byte for byte what IBKR's reference
/// client sends).
pub fn client_assertion_with_jti(
    key: &SigningKey,
    client_key_id: &str,
    client_id: &str,
    now_unix: u64,
    jti: Option<&str>,
) -> SecretString {
    let claims = ClientAssertionClaims {
        iss: client_id,
        sub: client_id,
        aud: ASSERTION_AUDIENCE,
        exp: now_unix.saturating_add(ASSERTION_LIFETIME_SECS),
        iat: now_unix.saturating_sub(ASSERTION_BACKDATE_SECS),
        jti,
    };
    SecretString::from(sign_rs256(key, client_key_id, &claims))
}

/// JWT-B, the SSO-session request, bound to the caller's public IP, with a fresh random `jti`
/// (so a second session opened in the same second is not mistaken for a replay).
pub fn sso_session_request(
    key: &SigningKey,
    client_key_id: &str,
    client_id: &str,
    credential: &SecretString,
    ip: Ipv4Addr,
    now_unix: u64,
) -> SecretString {
    sso_session_request_with_jti(
        key,
        client_key_id,
        client_id,
        credential,
        ip,
        now_unix,
        Some(&random_jti()),
    )
}

/// JWT-B with the given `jti` (`None`: no `jti` claim, byte for byte what IBKR's reference
/// client sends).
pub fn sso_session_request_with_jti(
    key: &SigningKey,
    client_key_id: &str,
    client_id: &str,
    credential: &SecretString,
    ip: Ipv4Addr,
    now_unix: u64,
    jti: Option<&str>,
) -> SecretString {
    let claims = SsoSessionClaims {
        ip: ip.to_string(),
        credential: credential.expose_secret(),
        iss: client_id,
        exp: now_unix.saturating_add(SSO_SESSION_LIFETIME_SECS),
        iat: now_unix,
        jti,
    };
    SecretString::from(sign_rs256(key, client_key_id, &claims))
}
