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

use crate::state::{AccessGrant1a, Shared, State, lock, random_hex};

pub(crate) use check::{check_common, header, invalid_consumer};
pub(crate) use hmac::verify_signed_request;
pub(crate) use lst::{agree as lst_agree, record as lst_record, verify as lst_verify};

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
    let key = EncryptionKey::from_der(&consumer.encryption_key)?;
    let (grant, encrypted) = key.new_grant(consumer_key, credential)?;
    let token = random_hex(10);
    insert_grant(state, token.clone(), grant);
    Some((token, encrypted))
}

/// An access token issued by [`Control::issue_access_tokens`](crate::Control::issue_access_tokens)
/// (and `POST /__sandbox/bulk-grants`): what IBKR's portal shows the user, under the names of
/// IBKR's `oauth/access_token` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IssuedAccessToken {
    /// The user (IBKR username) the grant is for.
    pub user: String,
    /// The access token (20 hex digits).
    pub oauth_token: String,
    /// Its secret, encrypted to the consumer's encryption key, base64.
    pub oauth_token_secret: String,
}

/// Issues access tokens under `consumer_key` for `n` new users named `prefix0` … `prefix{n−1}`.
/// The RSA encryption of each secret (a public-key operation, tens of microseconds) runs
/// without the lock; the grants go in under one short lock at the end. `None` if the consumer
/// is unknown.
pub(crate) fn issue_access_tokens(
    shared: &Shared,
    consumer_key: &str,
    prefix: &str,
    n: usize,
) -> Option<Vec<IssuedAccessToken>> {
    let der = lock(shared)
        .oauth1a
        .consumers
        .get(consumer_key)?
        .encryption_key
        .clone();
    let key = EncryptionKey::from_der(&der)?;
    let mut issued = Vec::with_capacity(n);
    let mut grants = Vec::with_capacity(n);
    for i in 0..n {
        let user = format!("{prefix}{i}");
        let (grant, encrypted) = key.new_grant(consumer_key, &user)?;
        let token = random_hex(10);
        grants.push((token.clone(), grant));
        issued.push(IssuedAccessToken {
            user,
            oauth_token: token,
            oauth_token_secret: encrypted,
        });
    }
    let mut state = lock(shared);
    // The consumer may have gone meanwhile only if the sandbox could unregister consumers; it
    // cannot, but a grant for an unknown consumer would be useless, so check.
    state.oauth1a.consumers.get(consumer_key)?;
    for (token, grant) in grants {
        insert_grant(&mut state, token, grant);
    }
    Some(issued)
}

/// Records `grant` under `token`, marked paper for a paper user.
fn insert_grant(state: &mut State, token: String, mut grant: AccessGrant1a) {
    grant.paper = state.paper_users.contains(&grant.credential);
    state.activity.user(&grant.credential).access_tokens += 1;
    state.oauth1a.tokens.insert(token, grant);
}

/// A consumer's encryption key, parsed once for any number of grants.
struct EncryptionKey(aws_lc_rs::rsa::Pkcs1PublicEncryptingKey);

impl EncryptionKey {
    fn from_der(public_der: &[u8]) -> Option<Self> {
        let key = aws_lc_rs::rsa::PublicEncryptingKey::from_der(public_der).ok()?;
        aws_lc_rs::rsa::Pkcs1PublicEncryptingKey::new(key)
            .ok()
            .map(Self)
    }

    /// A new grant for `credential` (not yet marked paper) with a random secret, and the
    /// secret encrypted to this key (RSAES-PKCS1-v1_5), base64.
    fn new_grant(&self, consumer_key: &str, credential: &str) -> Option<(AccessGrant1a, String)> {
        let mut secret = vec![0u8; 32];
        aws_lc_rs::rand::fill(&mut secret).ok()?;
        let mut out = vec![0u8; self.0.ciphertext_size()];
        let cipher = self.0.encrypt(&secret, &mut out).ok()?;
        let encrypted = STANDARD.encode(cipher);
        let grant = AccessGrant1a {
            consumer_key: consumer_key.to_owned(),
            secret,
            credential: credential.to_owned(),
            paper: false,
        };
        Some((grant, encrypted))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
