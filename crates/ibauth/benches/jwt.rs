//! `cargo bench -p ibauth --bench jwt`: the cost of the login's local work — signing the two
//! JWTs and loading a key. A minimal harness (warm-up, then timed batches; median and spread)
//! keeps the dependency tree small; figures go to docs/benchmarks.md.

use std::hint::black_box;
mod common;

use common::bench;

use ibauth::SigningKey;
use ibauth::oauth2::{client_assertion, sso_session_request, token_request_body};
use ibauth::secrecy::SecretString;

fn main() {
    let pkcs8 = include_str!("../tests/vectors/oauth2.json");
    let vector: serde_json::Value = serde_json::from_str(pkcs8).expect("vector JSON");
    let pem = vector["private_key_pkcs8_pem"]
        .as_str()
        .expect("key")
        .to_owned();
    let key = SigningKey::from_pem(&pem).expect("vector key");
    let credential = SecretString::from("mycred".to_owned());
    let ip = "1.2.3.4".parse().expect("ip");

    bench("client_assertion (JWT-A)", || {
        black_box(client_assertion(&key, "main", "TESTCLIENT", 1_700_000_000));
    });
    bench("sso_session_request (JWT-B)", || {
        black_box(sso_session_request(
            &key,
            "main",
            "TESTCLIENT",
            &credential,
            ip,
            1_700_000_000,
        ));
    });
    let assertion = client_assertion(&key, "main", "TESTCLIENT", 1_700_000_000);
    bench("token_request_body", || {
        black_box(token_request_body(&assertion));
    });
    bench("load PKCS#8 key (PEM)", || {
        black_box(SigningKey::from_pem(&pem).expect("key"));
    });
}
