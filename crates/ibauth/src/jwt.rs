//! Compact RS256 JWS, built by hand so the bytes match what IBKR's reference client sends:
//! header keys in the order `alg, kid, typ` and claims in the order of the claim structs.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;

use crate::key::SigningKey;

#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    kid: &'a str,
    typ: &'static str,
}

/// Signs `claims` as a compact JWS: `b64(header).b64(claims).b64(signature)`.
pub(crate) fn sign_rs256<C: Serialize>(key: &SigningKey, kid: &str, claims: &C) -> String {
    let header = Header {
        alg: "RS256",
        kid,
        typ: "JWT",
    };
    // Serialising plain structs of strings and integers cannot fail.
    let header = serde_json::to_vec(&header).unwrap_or_default();
    let claims = serde_json::to_vec(claims).unwrap_or_default();
    let mut out = String::with_capacity(512 + claims.len() * 4 / 3);
    URL_SAFE_NO_PAD.encode_string(&header, &mut out);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(&claims, &mut out);
    let signature = key.sign_sha256(out.as_bytes());
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut out);
    out
}
