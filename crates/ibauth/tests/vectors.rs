//! Byte-exact compatibility with IBKR's reference client (`../shared/spec/vectors/oauth2.json`):
//! the vector key at the vector's clock gives the same JWT-A, JWT-B and request body.

use std::net::Ipv4Addr;

use ibauth::SigningKey;
use ibauth::oauth2::{client_assertion, sso_session_request, token_request_body};
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

    let jwt_a = client_assertion(&key, kid, client_id, now);
    assert_eq!(jwt_a.expose_secret(), text(&v, "client_assertion"));
    assert_eq!(
        token_request_body(&jwt_a).expose_secret(),
        text(&v["token_request"], "body")
    );

    let ip: Ipv4Addr = text(&v, "ip").parse().unwrap();
    let credential = SecretString::from(text(&v, "credential").to_owned());
    let jwt_b = sso_session_request(&key, kid, client_id, &credential, ip, now);
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
