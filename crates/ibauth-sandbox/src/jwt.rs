//! Verification of compact RS256 JWS, strictly: RS256 only, a `kid`, no critical extensions,
//! a valid signature over the exact bytes received.

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Why a JWS was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    /// `alg` is not RS256 (e.g. `none`, HS256).
    #[error("unsupported alg `{0}`: only RS256 is accepted")]
    Algorithm(String),
    /// No `kid` in the header.
    #[error("JWT header has no kid")]
    NoKid,
    /// The header has `crit`: extensions the verifier must understand (RFC 7515 §4.1.11),
    /// and the sandbox understands none.
    #[error("JWT header lists critical extensions (crit) the server does not understand")]
    Critical,
    /// The signature does not verify with the key.
    #[error("signature does not verify with the key registered for kid `{0}`")]
    BadSignature(String),
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// A JWS whose header was read but whose signature is not checked yet.
pub struct Unverified<'a> {
    /// The header's `kid`.
    pub kid: String,
    signing_input: &'a str,
    signature: Vec<u8>,
    payload: Vec<u8>,
}

/// Splits and decodes `token`, checking the header; the signature is checked by
/// [`Unverified::verify`] once the key for `kid` is known.
pub fn parse(token: &str) -> Result<Unverified<'_>, JwtError> {
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("expected three dot-separated parts"));
    };
    let decode = |part: &str, what| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| JwtError::Malformed(what))
    };
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&decode(h, "header is not base64url")?)
            .map_err(|_| JwtError::Malformed("header is not a JSON object"))?;
    // Present at all (even null or empty, which RFC 7515 forbids) means refused.
    let critical = header.contains_key("crit");
    let header: Header = serde_json::from_value(serde_json::Value::Object(header))
        .map_err(|_| JwtError::Malformed("header is not a JSON object with alg"))?;
    if header.alg != "RS256" {
        return Err(JwtError::Algorithm(header.alg));
    }
    if critical {
        return Err(JwtError::Critical);
    }
    let kid = header
        .kid
        .filter(|k| !k.is_empty())
        .ok_or(JwtError::NoKid)?;
    Ok(Unverified {
        kid,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature: decode(s, "signature is not base64url")?,
        payload: decode(p, "payload is not base64url")?,
    })
}

impl Unverified<'_> {
    /// The claims without checking the signature: only to find which key to verify with.
    pub(crate) fn peek<C: DeserializeOwned>(&self) -> Option<C> {
        serde_json::from_slice(&self.payload).ok()
    }

    /// Verifies the signature with `public_key_der` (SPKI or PKCS#1) and decodes the claims.
    pub fn verify<C: DeserializeOwned>(self, public_key_der: &[u8]) -> Result<C, JwtError> {
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key_der)
            .verify(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| JwtError::BadSignature(self.kid.clone()))?;
        serde_json::from_slice(&self.payload)
            .map_err(|_| JwtError::Malformed("claims are not the expected JSON object"))
    }
}
