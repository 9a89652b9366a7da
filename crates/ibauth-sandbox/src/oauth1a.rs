//! OAuth 1.0a on the sandbox: `POST /v1/api/oauth/live_session_token` (RSA-SHA256 over the
//! prepend and the base string, then Diffie-Hellman) and HMAC-SHA256 verification of every
//! later request. The URL in the base string is the one the sandbox advertises, never the
//! `Host` header.

use std::collections::BTreeMap;
use std::net::IpAddr;

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ibauth::oauth1a::{DhSecret, Signer, base_string, live_session_token, lst_signature};
use ibauth::secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde_json::{Value, json};

use crate::reply::Reject;
use crate::state::{AccessGrant1a, LstGrant, SsoSession, State, random_hex, session_key};

/// RFC 3526 group 14 (2048-bit MODP), the group IBKR's `dhparam.pem` files use.
pub const RFC3526_PRIME_2048: &str = ibauth::oauth1a::RFC3526_PRIME_2048;

/// The parameters of an `Authorization: OAuth …` header (values percent-decoded).
pub(crate) fn parse_header(value: &str) -> Option<BTreeMap<String, String>> {
    let rest = value.trim().strip_prefix("OAuth ")?;
    let mut params = BTreeMap::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let v = v.trim().strip_prefix('"')?.strip_suffix('"')?;
        let decoded =
            url::form_urlencoded::parse(format!("v={}", v.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())?;
        params.insert(k.trim().to_owned(), decoded);
    }
    Some(params)
}

pub(crate) fn invalid_consumer() -> Reject {
    Reject::ibkr(401, "id: 1, error: invalid consumer")
}

/// Checks realm, consumer, timestamp window and nonce; returns the signed parameters (without
/// realm and signature) and the signature.
pub(crate) fn check_common(
    state: &mut State,
    header: &BTreeMap<String, String>,
    method: &str,
) -> Result<(BTreeMap<String, String>, String), Reject> {
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
    let nonce = header
        .get("oauth_nonce")
        .filter(|n| n.len() >= 8)
        .ok_or_else(|| Reject::ibkr(401, "invalid nonce"))?;
    state
        .oauth1a
        .nonces
        .retain(|_, t| t.saturating_add(2 * skew) >= now);
    let nonce_key = format!("{consumer_key}:{nonce}");
    if state.oauth1a.nonces.contains_key(&nonce_key) {
        return Err(Reject::ibkr(401, "nonce already used"));
    }
    state.oauth1a.nonces.insert(nonce_key, timestamp);
    let signature = header
        .get("oauth_signature")
        .cloned()
        .ok_or_else(|| Reject::ibkr(401, "missing signature"))?;
    let params = header
        .iter()
        .filter(|(k, _)| *k != "realm" && *k != "oauth_signature")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok((params, signature))
}

/// `POST /v1/api/oauth/live_session_token`.
pub(crate) fn live_session_token_endpoint(
    state: &mut State,
    authorization: Option<&str>,
    url: &str,
    peer: IpAddr,
) -> Result<Value, Reject> {
    let header = authorization
        .and_then(parse_header)
        .ok_or_else(|| Reject::ibkr(401, "OAuth authorization header required"))?;
    let (params, signature) = check_common(state, &header, "RSA-SHA256")?;
    let token = params.get("oauth_token").cloned().unwrap_or_default();
    let grant = state
        .oauth1a
        .tokens
        .get(&token)
        .ok_or_else(|| Reject::ibkr(401, "LST failed, error: No access secret key found"))?;
    let consumer_key = params["oauth_consumer_key"].clone();
    if grant.consumer_key != consumer_key {
        return Err(Reject::ibkr(
            401,
            "LST failed, error: No access secret key found",
        ));
    }
    let consumer = &state.oauth1a.consumers[&consumer_key];
    let prepend = hex(&grant.secret);
    let message = format!("{prepend}{}", base_string("POST", url, &params));
    let signature = STANDARD
        .decode(signature)
        .map_err(|_| Reject::ibkr(401, "invalid signature"))?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &consumer.signature_key)
        .verify(message.as_bytes(), &signature)
        .map_err(|_| Reject::ibkr(401, "invalid signature"))?;
    let challenge = params
        .get("diffie_hellman_challenge")
        .ok_or_else(|| Reject::ibkr(400, "diffie_hellman_challenge missing"))?;
    let dh = state
        .oauth1a
        .dh
        .clone()
        .ok_or_else(|| Reject::ibkr(500, "sandbox DH group unavailable"))?;
    check_challenge(&dh, challenge)?;
    let b = DhSecret::random();
    let k = dh
        .shared_secret(challenge, &b)
        .map_err(|e| Reject::ibkr(400, format!("bad diffie_hellman_challenge: {e}")))?;
    let prepend_secret = SecretString::from(prepend);
    let lst = live_session_token(&k, &prepend_secret)
        .ok_or_else(|| Reject::ibkr(500, "LST derivation failed"))?;
    let lst_sig = lst_signature(&lst, &consumer_key)
        .ok_or_else(|| Reject::ibkr(500, "LST derivation failed"))?;
    let key = STANDARD
        .decode(lst.expose_secret())
        .map_err(|_| Reject::ibkr(500, "LST derivation failed"))?;
    let now = state.now();
    let expires_at = now + state.lifetimes.sso_session.as_secs();
    let credential = grant.credential.clone();
    state.issued.push(lst.expose_secret().to_owned());
    state
        .oauth1a
        .lsts
        .insert(token.clone(), LstGrant { key, expires_at });
    let ip = match peer {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => ip.to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::LOCALHOST),
    };
    state.sso.insert(
        session_key(&token),
        SsoSession {
            client_id: consumer_key,
            credential,
            ip,
            session_id: random_hex(16),
            created_at: now,
            expires_at,
        },
    );
    state.counters.live_session_tokens += 1;
    Ok(json!({
        "diffie_hellman_response": dh.challenge(&b),
        "live_session_token_signature": lst_sig,
        "live_session_token_expiration": expires_at * 1000,
    }))
}

/// A challenge `A` outside `[2, p − 2]` is refused, as IBKR must: `0`, `1`, `p − 1` or a
/// value `≥ p` pins the shared secret to one anyone can compute.
fn check_challenge(dh: &ibauth::oauth1a::DhGroup, challenge: &str) -> Result<(), Reject> {
    dh.check_peer_value(challenge)
        .map_err(|why| Reject::ibkr(400, format!("bad diffie_hellman_challenge: {why}")))
}

/// Verifies an HMAC-SHA256-signed request; returns the session key of its access token.
pub(crate) fn verify_signed_request(
    state: &mut State,
    authorization: &str,
    method: &str,
    url: &str,
) -> Result<String, Reject> {
    let header = parse_header(authorization).ok_or_else(Reject::unauthenticated)?;
    let (params, signature) = check_common(state, &header, "HMAC-SHA256")?;
    let token = params.get("oauth_token").cloned().unwrap_or_default();
    let lst = state
        .oauth1a
        .lsts
        .get(&token)
        .ok_or_else(Reject::unauthenticated)?;
    if lst.expires_at <= state.now() {
        return Err(Reject::ibkr(401, "live session token expired"));
    }
    let key = SecretSlice::from(lst.key.clone());
    let expected = Signer::HmacSha256 { lst: &key }.sign(&base_string(method, url, &params));
    // Constant-time comparison of the two signatures.
    let equal = aws_lc_rs::constant_time::verify_slices_are_equal(
        expected.as_bytes(),
        signature.as_bytes(),
    )
    .is_ok();
    if !equal {
        return Err(Reject::ibkr(401, "invalid signature"));
    }
    Ok(session_key(&token))
}

/// Issues an access token for `credential` under `consumer_key`, as IBKR's portal does: the
/// token and its random secret encrypted to the consumer's encryption key (base64). `None` if
/// the consumer is unknown.
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
    state.oauth1a.tokens.insert(
        token.clone(),
        AccessGrant1a {
            consumer_key: consumer_key.to_owned(),
            secret,
            credential: credential.to_owned(),
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
