//! The sandbox's JWT reading: compact RS256 JWS split, decoded and its header checked
//! (`alg`, `kid`, `crit`), the claims peeked at, the signature verified.
//!
//! Input: a mode byte, then either a whole token, or (mode a multiple of 4) a header and
//! claims (JSON, separated by a NUL byte) that are signed here with the verifying key, so the
//! claims behind a good signature are reached too.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let key = ibauth_fuzz::key();
    let (token, signed) = if mode % 4 == 0 {
        let Some(at) = rest.iter().position(|b| *b == 0) else {
            return;
        };
        let (header, claims) = (&rest[..at], &rest[at + 1..]);
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = URL_SAFE_NO_PAD.encode(key.sign_sha256(input.as_bytes()));
        (format!("{input}.{signature}"), true)
    } else {
        match std::str::from_utf8(rest) {
            Ok(text) => (text.to_owned(), false),
            Err(_) => return,
        }
    };
    let unverified = match ibauth_sandbox::fuzzing::jwt_parse(&token) {
        Ok(unverified) => unverified,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(!unverified.kid.is_empty());
    let peeked = ibauth_sandbox::fuzzing::jwt_peek(&unverified);
    match unverified.verify::<serde_json::Value>(&key.public_key_der()) {
        // A good signature: the claims are what peeking showed.
        Ok(claims) => assert_eq!(Some(claims), peeked),
        Err(e) => {
            assert!(!signed || peeked.is_none(), "{e}");
        }
    }
});
