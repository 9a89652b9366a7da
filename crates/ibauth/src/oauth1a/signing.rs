//! OAuth 1.0a request signing as IBKR verifies it: one base string, one header format, and
//! two methods — RSA-SHA256 (with the prepend, for the live session token and the third-party
//! token requests) and HMAC-SHA256 keyed with the live session token (every later request).

use std::collections::BTreeMap;

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use crate::key::SigningKey;

/// Percent-encodes all but `A–Z a–z 0–9 - . _ ~`, with uppercase hex (RFC 5849 §3.6).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(byte));
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// `METHOD&enc(url)&enc(k1=v1&k2=v2…)`, parameters sorted by key. The URL is used without its
/// query; `realm` and `oauth_signature` are never part of `params`.
pub fn base_string(method: &str, url: &str, params: &BTreeMap<String, String>) -> String {
    let url = url.split('?').next().unwrap_or(url);
    let joined = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode(url),
        percent_encode(&joined)
    )
}

/// `OAuth realm="…", k="v", …` with keys sorted and the signature percent-encoded.
pub fn authorization_header(
    realm: &str,
    params: &BTreeMap<String, String>,
    signature: &str,
) -> String {
    let mut all: BTreeMap<&str, String> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    all.insert("oauth_signature", percent_encode(signature));
    let mut out = format!("OAuth realm=\"{realm}\"");
    for (k, v) in all {
        out.push_str(&format!(", {k}=\"{v}\""));
    }
    out
}

/// How a request is signed.
pub enum Signer<'a> {
    /// RSASSA-PKCS1-v1_5 SHA-256 over `prepend + base string` (prepend empty for request and
    /// access tokens).
    RsaSha256 {
        /// The consumer's signature key.
        key: &'a SigningKey,
        /// The decrypted access-token secret as lowercase hex, or empty.
        prepend: &'a SecretString,
    },
    /// HMAC-SHA256 keyed with the live session token's bytes; no prepend.
    HmacSha256 {
        /// `base64-decode(LST)`.
        lst: &'a SecretSlice<u8>,
    },
}

impl Signer<'_> {
    /// The `oauth_signature_method` value.
    pub fn method_name(&self) -> &'static str {
        match self {
            Signer::RsaSha256 { .. } => "RSA-SHA256",
            Signer::HmacSha256 { .. } => "HMAC-SHA256",
        }
    }

    /// The base64 signature of `base_string`.
    pub fn sign(&self, base_string: &str) -> String {
        match self {
            Signer::RsaSha256 { key, prepend } => {
                let mut message = prepend.expose_secret().as_bytes().to_vec();
                message.extend_from_slice(base_string.as_bytes());
                STANDARD.encode(key.sign_sha256(&message))
            }
            Signer::HmacSha256 { lst } => {
                let key = hmac::Key::new(hmac::HMAC_SHA256, lst.expose_secret());
                STANDARD.encode(hmac::sign(&key, base_string.as_bytes()).as_ref())
            }
        }
    }
}

/// Everything that varies per request attempt: a fresh nonce and timestamp each time.
#[derive(Debug, Clone)]
pub struct Nonce {
    /// `oauth_nonce`.
    pub nonce: String,
    /// `oauth_timestamp` (Unix seconds).
    pub timestamp: u64,
}

impl Nonce {
    /// A random 16-character alphanumeric nonce at `timestamp`.
    pub fn fresh(timestamp: u64) -> Self {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut bytes = [0u8; 16];
        // Without a working RNG no request can be signed safely.
        #[allow(clippy::expect_used)]
        aws_lc_rs::rand::fill(&mut bytes)
            .expect("the system random number generator is unavailable");
        let nonce = bytes
            .iter()
            .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
            .collect();
        Self { nonce, timestamp }
    }
}

/// The OAuth parameters of a request (without `realm` and the signature).
pub fn oauth_params(
    consumer_key: &str,
    token: Option<&str>,
    nonce: &Nonce,
    method: &str,
    extra: &[(&str, &str)],
) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    params.insert("oauth_consumer_key".to_owned(), consumer_key.to_owned());
    params.insert("oauth_nonce".to_owned(), nonce.nonce.clone());
    params.insert("oauth_signature_method".to_owned(), method.to_owned());
    params.insert("oauth_timestamp".to_owned(), nonce.timestamp.to_string());
    if let Some(token) = token {
        params.insert("oauth_token".to_owned(), token.to_owned());
    }
    for (k, v) in extra {
        params.insert((*k).to_owned(), (*v).to_owned());
    }
    params
}

/// Signs one request: returns the `Authorization` header value.
pub fn authorize(
    signer: &Signer<'_>,
    realm: &str,
    http_method: &str,
    url: &str,
    params: &BTreeMap<String, String>,
) -> String {
    let signature = signer.sign(&base_string(http_method, url, params));
    authorization_header(realm, params, &signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_matches_rfc5849() {
        assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(percent_encode("a b+/=&%"), "a%20b%2B%2F%3D%26%25");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn nonces_are_fresh_and_alphanumeric() {
        let a = Nonce::fresh(1);
        let b = Nonce::fresh(1);
        assert_ne!(a.nonce, b.nonce);
        assert_eq!(a.nonce.len(), 16);
        assert!(a.nonce.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
