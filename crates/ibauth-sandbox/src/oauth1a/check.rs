//! What every OAuth 1.0a request must pass before its signature is looked at: a known
//! consumer in its realm, the expected signature method, a fresh timestamp and an unused
//! nonce. The nonce is only remembered once the signature verified, so a forged request can
//! neither fill the nonce table nor burn a nonce a real client is about to use.

use std::collections::BTreeMap;

use crate::reply::Reject;
use crate::state::State;

use super::header::{HeaderError, parse_header};

/// Longest nonce accepted: IBKR's guide uses 7 characters and ibind 16; the bound keeps the
/// nonce table small.
const MAX_NONCE: usize = 128;

/// A request whose header passed the checks, waiting for its signature to be verified.
pub(crate) struct Checked {
    /// The signed OAuth parameters (without `realm` and `oauth_signature`).
    pub params: BTreeMap<String, String>,
    /// `oauth_signature`, percent-decoded.
    pub signature: String,
    /// `consumer:nonce` and the timestamp, remembered by [`Checked::accept`].
    nonce: (String, u64),
}

impl Checked {
    /// The consumer key (checked to be registered).
    pub fn consumer_key(&self) -> &str {
        self.params
            .get("oauth_consumer_key")
            .map_or("", String::as_str)
    }

    /// Marks the nonce used: call once the signature verified.
    pub fn accept(self, state: &mut State) -> BTreeMap<String, String> {
        let (key, timestamp) = self.nonce;
        state.oauth1a.nonces.insert(key, timestamp);
        self.params
    }
}

pub(crate) fn invalid_consumer() -> Reject {
    Reject::ibkr(401, "id: 1, error: invalid consumer")
}

/// Parses `authorization`; `missing` is the refusal for an absent or malformed header.
pub(crate) fn header(
    authorization: Option<&str>,
    missing: fn() -> Reject,
) -> Result<BTreeMap<String, String>, Reject> {
    match authorization.map(parse_header) {
        None | Some(Err(HeaderError::Malformed)) => Err(missing()),
        Some(Err(HeaderError::Duplicate(key))) => Err(duplicate(&key)),
        Some(Ok(params)) => Ok(params),
    }
}

/// The refusal of a parameter given twice.
pub(crate) fn duplicate(key: &str) -> Reject {
    Reject::ibkr(401, format!("duplicate OAuth parameter `{key}`"))
}

/// Checks realm, consumer, signature method, timestamp window and nonce.
pub(crate) fn check_common(
    state: &mut State,
    header: &BTreeMap<String, String>,
    method: &str,
) -> Result<Checked, Reject> {
    let consumer_key = header
        .get("oauth_consumer_key")
        .ok_or_else(invalid_consumer)?;
    let consumer = state
        .oauth1a
        .consumers
        .get(consumer_key)
        .ok_or_else(invalid_consumer)?;
    if header.get("realm") != Some(&consumer.realm) {
        return Err(invalid_consumer());
    }
    if header.get("oauth_signature_method").map(String::as_str) != Some(method) {
        return Err(Reject::ibkr(
            401,
            format!("invalid signature method: expected {method}"),
        ));
    }
    let now = state.now();
    let skew = state.lifetimes.clock_skew.as_secs();
    let timestamp: u64 = header
        .get("oauth_timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| Reject::ibkr(401, "invalid timestamp"))?;
    if timestamp.saturating_add(skew) < now || timestamp > now.saturating_add(skew) {
        return Err(Reject::ibkr(401, "timestamp out of range"));
    }
    // Any non-empty nonce, as IBKR takes (its guide's examples use 7 characters).
    let nonce = header
        .get("oauth_nonce")
        .filter(|n| !n.is_empty() && n.len() <= MAX_NONCE)
        .ok_or_else(|| Reject::ibkr(401, "invalid nonce"))?;
    // A nonce is remembered as long as its timestamp is acceptable; older ones are refused
    // by the timestamp check, so they can be forgotten. The clock counts whole seconds, so one
    // sweep per second forgets exactly what a sweep on every request would, at a cost that
    // does not grow with the request rate.
    if state.oauth1a.nonces_swept_at != Some(now) {
        state
            .oauth1a
            .nonces
            .retain(|_, t| t.saturating_add(skew.saturating_mul(2)) >= now);
        state.oauth1a.nonces_swept_at = Some(now);
    }
    let nonce_key = format!("{consumer_key}:{nonce}");
    if state.oauth1a.nonces.contains_key(&nonce_key) {
        return Err(Reject::ibkr(401, "nonce already used"));
    }
    let signature = header
        .get("oauth_signature")
        .cloned()
        .ok_or_else(|| Reject::ibkr(401, "missing signature"))?;
    let params = header
        .iter()
        .filter(|(k, _)| *k != "realm" && *k != "oauth_signature")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Checked {
        params,
        signature,
        nonce: (nonce_key, timestamp),
    })
}
