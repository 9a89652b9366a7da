//! OAuth 1.0a on the sandbox: the header (`header`), the checks every request passes
//! (`check`), the live session token by Diffie-Hellman (`lst`), HMAC-SHA256 verification of
//! every later request (`hmac`), and access tokens as IBKR's portal issues them. The URL in
//! a base string is the one the sandbox advertises, never the `Host` header.

mod check;
pub(crate) mod header;
mod hmac;
mod lst;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::state::{AccessGrant1a, State, random_hex};

pub(crate) use check::{check_common, header, invalid_consumer};
pub(crate) use hmac::verify_signed_request;
pub(crate) use lst::live_session_token_endpoint;

/// RFC 3526 group 14 (2048-bit MODP): what [`ConsumerRegistration::new`] registers unless
/// told otherwise. IBKR gives every consumer its own prime; see
/// [`ConsumerRegistration::dh_group`] and [`SANDBOX_DH_PRIMES`].
///
/// [`ConsumerRegistration::new`]: crate::ConsumerRegistration::new
/// [`ConsumerRegistration::dh_group`]: crate::ConsumerRegistration::dh_group
/// [`SANDBOX_DH_PRIMES`]: crate::SANDBOX_DH_PRIMES
pub const RFC3526_PRIME_2048: &str = ibauth::oauth1a::RFC3526_PRIME_2048;

/// Issues an access token for `credential` under `consumer_key`, as IBKR's portal does: the
/// token and its random secret encrypted to the consumer's encryption key (base64). `None` if
/// the consumer is unknown. The grant is a paper one if the user is a paper user.
pub(crate) fn issue_access_token(
    state: &mut State,
    consumer_key: &str,
    credential: &str,
) -> Option<(String, String)> {
    let consumer = state.oauth1a.consumers.get(consumer_key)?;
    let mut secret = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut secret).ok()?;
    let encrypted = encrypt_secret(&consumer.encryption_key, &secret)?;
    let token = random_hex(10);
    let paper = state.paper_users.contains(credential);
    state.oauth1a.tokens.insert(
        token.clone(),
        AccessGrant1a {
            consumer_key: consumer_key.to_owned(),
            secret,
            credential: credential.to_owned(),
            paper,
        },
    );
    Some((token, encrypted))
}

/// Encrypts `plain` to the consumer's encryption key (RSAES-PKCS1-v1_5), base64.
fn encrypt_secret(public_der: &[u8], plain: &[u8]) -> Option<String> {
    let key = aws_lc_rs::rsa::PublicEncryptingKey::from_der(public_der).ok()?;
    let key = aws_lc_rs::rsa::Pkcs1PublicEncryptingKey::new(key).ok()?;
    let mut out = vec![0u8; key.ciphertext_size()];
    let cipher = key.encrypt(plain, &mut out).ok()?;
    Some(STANDARD.encode(cipher))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
