//! Byte-exact compatibility with IBKR's reference client (`../shared/spec/vectors/oauth2.json`):
//! the vector key at the vector's clock gives the same JWT-A, JWT-B and request body.

use std::net::Ipv4Addr;

use ibauth::SigningKey;
use ibauth::oauth2::{
    client_assertion, client_assertion_with_jti, sso_session_request, sso_session_request_with_jti,
    token_request_body,
};
use ibauth::secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

fn vector() -> Value {
    serde_json::from_str(include_str!("vectors/oauth2.json")).unwrap()
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap()
}

fn check_with_key(key_field: &str) {
    let v = vector();
    let key = SigningKey::from_pem(text(&v, key_field)).unwrap();
    let now = v["now_unix"].as_u64().unwrap();
    let (kid, client_id) = (text(&v, "client_key_id"), text(&v, "client_id"));

    let jwt_a = client_assertion_with_jti(&key, kid, client_id, now, None);
    assert_eq!(jwt_a.expose_secret(), text(&v, "client_assertion"));
    assert_eq!(
        token_request_body(&jwt_a).expose_secret(),
        text(&v["token_request"], "body")
    );

    let ip: Ipv4Addr = text(&v, "ip").parse().unwrap();
    let credential = SecretString::from(text(&v, "credential").to_owned());
    let jwt_b = sso_session_request_with_jti(&key, kid, client_id, &credential, ip, now, None);
    assert_eq!(
        jwt_b.expose_secret(),
        text(&v["sso_session_request"], "body")
    );
}

#[test]
fn pkcs1_key_reproduces_the_vectors() {
    check_with_key("private_key_pkcs1_pem");
}

#[test]
fn pkcs8_key_reproduces_the_vectors() {
    check_with_key("private_key_pkcs8_pem");
}

#[test]
fn vector_public_key_matches_the_private_key() {
    let v = vector();
    let key = SigningKey::from_pem(text(&v, "private_key_pkcs8_pem")).unwrap();
    assert_eq!(key.public_key_pem(), text(&v, "public_key_pem"));
}

/// The payload of a compact JWS, as text.
fn payload(jwt: &str) -> String {
    use base64::Engine as _;
    let part = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// `reference` (the vector's claims) with a `jti` of 32 lowercase hex digits appended: the
/// jti found.
#[track_caller]
fn jti_appended_to(reference: &str, with_jti: &str) -> String {
    let head = reference.strip_suffix('}').unwrap();
    let rest = with_jti
        .strip_prefix(head)
        .unwrap_or_else(|| panic!("{with_jti} does not start with {head}"));
    let jti = rest
        .strip_prefix(",\"jti\":\"")
        .and_then(|r| r.strip_suffix("\"}"))
        .unwrap_or_else(|| panic!("no jti at the end of {with_jti}"));
    assert_eq!(jti.len(), 32, "{jti}");
    assert!(
        jti.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    jti.to_owned()
}

#[test]
fn the_default_jwts_add_a_fresh_jti_after_the_reference_claims() {
    let v = vector();
    let key = SigningKey::from_pem(text(&v, "private_key_pkcs8_pem")).unwrap();
    let now = v["now_unix"].as_u64().unwrap();
    let (kid, client_id) = (text(&v, "client_key_id"), text(&v, "client_id"));
    let reference_a = payload(text(&v, "client_assertion"));
    let a1 = payload(client_assertion(&key, kid, client_id, now).expose_secret());
    let a2 = payload(client_assertion(&key, kid, client_id, now).expose_secret());
    assert_ne!(
        jti_appended_to(&reference_a, &a1),
        jti_appended_to(&reference_a, &a2)
    );

    let ip: Ipv4Addr = text(&v, "ip").parse().unwrap();
    let credential = SecretString::from(text(&v, "credential").to_owned());
    let reference_b = payload(text(&v["sso_session_request"], "body"));
    let b1 = sso_session_request(&key, kid, client_id, &credential, ip, now);
    let b2 = sso_session_request(&key, kid, client_id, &credential, ip, now);
    assert_ne!(
        jti_appended_to(&reference_b, &payload(b1.expose_secret())),
        jti_appended_to(&reference_b, &payload(b2.expose_secret()))
    );
}
