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
    /// The consumer's own Diffie-Hellman group, as IBKR registers one per consumer.
    pub(crate) dh: DhGroup,
}

/// An access token the sandbox issued: its plain secret (the prepend) and its user.
#[derive(Clone)]
pub(crate) struct AccessGrant1a {
    pub consumer_key: String,
    pub secret: Vec<u8>,
    pub credential: String,
    /// A paper account's grant (`is_paper`; the WebSocket's `isPaper`).
    pub paper: bool,
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
#[derive(Default)]
pub(crate) struct Oauth1aState {
    pub consumers: HashMap<String, RegisteredConsumer>,
    pub tokens: HashMap<String, AccessGrant1a>,
    pub lsts: HashMap<String, LstGrant>,
    /// `consumer:nonce` → timestamp, for as long as the timestamp is acceptable.
    pub nonces: HashMap<String, u64>,
    /// The clock second `nonces` was last swept at (one sweep per second at most).
    pub nonces_swept_at: Option<u64>,
    pub request_tokens: HashMap<String, RequestGrant>,
}

/// The SSO-session key of an OAuth 1.0a access token in the shared session table, so OAuth
/// 1.0a and OAuth 2.0 sessions live side by side without colliding.
pub(crate) fn session_key(access_token: &str) -> String {
    format!("oauth1a:{access_token}")
}
