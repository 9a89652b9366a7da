//! What the sandbox holds for OAuth 1.0a: registered consumers, issued access tokens, agreed
//! live session tokens, seen nonces and third-party request tokens.

use std::collections::HashMap;

use ibauth::oauth1a::DhGroup;

/// A registered OAuth 1.0a consumer.
#[derive(Debug, Clone)]
pub struct RegisteredConsumer {
    pub(crate) consumer_key: String,
    pub(crate) realm: String,
    pub(crate) signature_key: Vec<u8>,
    pub(crate) encryption_key: Vec<u8>,
    /// May use the third-party flow (`request_token` → `/authorize` → `access_token`).
    pub(crate) third_party: bool,
    /// The registered callback URL (`None`: out-of-band only).
    pub(crate) callback: Option<String>,
}

/// An access token the sandbox issued: its plain secret (the prepend) and its user.
#[derive(Clone)]
pub(crate) struct AccessGrant1a {
    pub consumer_key: String,
    pub secret: Vec<u8>,
    pub credential: String,
}

/// A live session token the sandbox agreed on.
pub(crate) struct LstGrant {
    pub key: Vec<u8>,
    pub expires_at: u64,
}

/// A request token on its way through the authorisation page (third party).
pub(crate) struct RequestGrant {
    pub consumer_key: String,
    /// `oob` or the registered callback URL.
    pub callback: String,
    pub expires_at: u64,
    /// Set once a user approved: (verifier, credential).
    pub approved: Option<(String, String)>,
    pub denied: bool,
}

/// Everything OAuth 1.0a the sandbox holds.
pub(crate) struct Oauth1aState {
    pub consumers: HashMap<String, RegisteredConsumer>,
    pub tokens: HashMap<String, AccessGrant1a>,
    pub lsts: HashMap<String, LstGrant>,
    pub nonces: HashMap<String, u64>,
    pub dh: Option<DhGroup>,
    pub request_tokens: HashMap<String, RequestGrant>,
}

impl Default for Oauth1aState {
    fn default() -> Self {
        Self {
            consumers: HashMap::new(),
            tokens: HashMap::new(),
            lsts: HashMap::new(),
            nonces: HashMap::new(),
            dh: DhGroup::from_hex(ibauth::oauth1a::RFC3526_PRIME_2048, 2).ok(),
            request_tokens: HashMap::new(),
        }
    }
}

/// The SSO-session key of an OAuth 1.0a access token in the shared session table, so OAuth
/// 1.0a and OAuth 2.0 sessions live side by side without colliding.
pub(crate) fn session_key(access_token: &str) -> String {
    format!("oauth1a:{access_token}")
}
