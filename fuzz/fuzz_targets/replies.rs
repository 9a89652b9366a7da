//! Server replies, step by step: the JSON answer of every login and session step as the
//! client reads it (lenient numbers and flags, lifetimes clamped), IBKR's error bodies, the
//! `authenticated: false` check of every Web API answer, the public-IP answer and
//! `Retry-After`.
//!
//! Input: a step byte, a status byte, then the body (or header value).
#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use ibauth::fuzzing as f;
use ibauth::oauth1a::{DhGroup, DhSecret};
use ibauth::{
    AuthStatus, Logout, MAX_RETRY_AFTER, MAX_TOKEN_LIFETIME, SsoValidation, Step, Tickle,
};
use libfuzzer_sys::fuzz_target;
use secrecy::{ExposeSecret, SecretString};

/// The client's clock, fixed so an input always does the same (the vectors' time).
const NOW: u64 = 1_700_000_000;

/// The LST exchange of the test vectors (`crates/ibauth/tests/vectors/oauth1a.json`): the
/// seeds' answers of its `lst_cases` pass every check, so the fuzzer starts past them.
struct Lst {
    dh: DhGroup,
    secret: Vec<u8>,
    prepend: String,
    consumer_key: String,
}

fn lst() -> &'static Lst {
    static LST: OnceLock<Lst> = OnceLock::new();
    LST.get_or_init(|| {
        let v: serde_json::Value = serde_json::from_str(include_str!(
            "../../crates/ibauth/tests/vectors/oauth1a.json"
        ))
        .unwrap();
        let text = |k: &str| v[k].as_str().unwrap().to_owned();
        let secret = text("dh_random_hex");
        Lst {
            dh: DhGroup::from_hex(&text("dh_prime_hex"), 2).unwrap(),
            secret: (0..secret.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&secret[i..i + 2], 16).unwrap())
                .collect(),
            prepend: text("prepend"),
            consumer_key: text("consumer_key"),
        }
    })
}

const STATUSES: [u16; 16] = [
    201, 204, 400, 401, 403, 404, 410, 429, 500, 502, 503, 302, 100, 0, 999, 200,
];

/// An error's message must be safe for a terminal: no control characters from the server.
fn shown(e: &ibauth::Error) {
    let text = e.to_string();
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "control character in {text:?}"
    );
    let _ = format!("{e:?}");
}

fuzz_target!(|data: &[u8]| {
    let [step, status, body @ ..] = data else {
        return;
    };
    let status = if *status < 192 {
        200
    } else {
        STATUSES[usize::from(*status) % STATUSES.len()]
    };
    let lifetime = MAX_TOKEN_LIFETIME.as_secs();
    match step % 13 {
        0 => match f::access_token(status, body, NOW) {
            Ok(token) => {
                assert!(!token.token.expose_secret().is_empty());
                if let Some(at) = token.expires_at {
                    assert!(at >= NOW + 2 && at <= NOW + lifetime, "{at}");
                }
            }
            Err(e) => shown(&e),
        },
        1 => match f::bearer_token(status, body, Ipv4Addr::LOCALHOST, NOW) {
            Ok(token) => assert!(!token.token.expose_secret().is_empty()),
            Err(e) => shown(&e),
        },
        2 => match f::reply_json::<SsoValidation>(status, body, Step::Validate) {
            Ok(v) => {
                let _ = (v.expires_in(), format!("{v:?}"));
            }
            Err(e) => shown(&e),
        },
        3 | 4 => {
            let step = if step % 13 == 3 {
                Step::SsodhInit
            } else {
                Step::AuthStatus
            };
            match f::reply_json::<AuthStatus>(status, body, step) {
                Ok(s) => {
                    let _ = format!("{s:?}");
                }
                Err(e) => shown(&e),
            }
        }
        5 => match f::reply_json::<Tickle>(status, body, Step::Tickle) {
            Ok(t) => {
                let _ = (t.sso_expires_in(), t.session_short(), t.auth_status());
                let _ = format!("{t:?}");
            }
            Err(e) => shown(&e),
        },
        6 => match f::reply_json::<Logout>(status, body, Step::Logout) {
            Ok(l) => {
                let _ = format!("{l:?}");
            }
            Err(e) => shown(&e),
        },
        7 => {
            let lst = lst();
            let secret = DhSecret::from_be_bytes(&lst.secret);
            let prepend = SecretString::from(lst.prepend.clone());
            match f::live_session_token(
                status,
                body,
                &lst.dh,
                &secret,
                &prepend,
                &lst.consumer_key,
                NOW,
            ) {
                Ok(lst) => {
                    // Accepted only from hex, as IBKR sends it.
                    let answer: serde_json::Value = serde_json::from_slice(body).unwrap();
                    for field in ["diffie_hellman_response", "live_session_token_signature"] {
                        let text = answer[field].as_str().unwrap_or_default();
                        assert!(
                            text.trim().chars().all(|c| c.is_ascii_hexdigit()),
                            "{text:?}"
                        );
                    }
                    let ms = lst.expires_at_ms;
                    assert!(ms == 0 || ms / 1000 <= NOW + lifetime, "{ms}");
                    let _ = format!("{lst:?}");
                }
                Err(e) => shown(&e),
            }
        }
        8 => match f::request_token(status, body, "oob".to_owned()) {
            Ok(r) => assert_eq!(r.callback, "oob"),
            Err(e) => shown(&e),
        },
        9 => match f::access_grant(status, body) {
            Ok(g) => {
                let _ = format!("{g:?}");
            }
            Err(e) => shown(&e),
        },
        10 => {
            let message = f::ibkr_message(body);
            assert!(!message.chars().any(char::is_control), "{message:?}");
            assert!(message.chars().count() <= 301, "{}", message.len());
            let _ = f::refused_for_authentication(status, body);
        }
        11 => {
            let _ = f::public_ip(body);
        }
        _ => {
            let Ok(value) = std::str::from_utf8(body) else {
                return;
            };
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
            if let Some(wait) = f::retry_after(value, now) {
                assert!(wait <= MAX_RETRY_AFTER);
            }
        }
    }
});
