//! The third-party verifier: what a user pastes (`parse_verifier`: a redirect URL, its query
//! or the bare verifier) and the query of a request to the local callback.
//!
//! Input: this login's request token, a newline, then the pasted text or query.
#![no_main]

use ibauth::oauth1a::{RequestToken, VerifierError, parse_verifier};
use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (token, input) = text.split_once('\n').unwrap_or(("", text));
    let request = RequestToken {
        token: token.to_owned(),
        callback: "oob".to_owned(),
    };
    match parse_verifier(input, &request) {
        Ok(verifier) => assert!(!verifier.expose_secret().is_empty()),
        Err(VerifierError::OtherToken { expected, .. }) => assert_eq!(expected, token),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    // The callback answers only for this login's token.
    if let Some(answer) = ibauth::fuzzing::callback_answer(input, &request) {
        let _ = answer.map(|v| v.expose_secret().len());
        let sent = url::form_urlencoded::parse(input.as_bytes())
            .find(|(k, _)| k == "oauth_token")
            .map(|(_, v)| v.into_owned());
        assert_eq!(sent.as_deref(), Some(token), "{input:?}");
    }
});
