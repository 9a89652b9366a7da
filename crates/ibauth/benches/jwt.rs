//! `cargo bench -p ibauth --bench jwt`: the cost of the login's local work — signing the two
//! JWTs and loading a key. A minimal harness (warm-up, then timed batches; median and spread)
//! keeps the dependency tree small; figures go to docs/benchmarks.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ibauth::SigningKey;
use ibauth::oauth2::{client_assertion, sso_session_request, token_request_body};
use ibauth::secrecy::SecretString;

fn bench(name: &str, mut f: impl FnMut()) {
    // Warm up for ~200 ms, then time batches until ~2 s have passed.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        f();
    }
    let mut per_op = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        let batch = 20;
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        per_op.push(t.elapsed().as_secs_f64() / f64::from(batch));
    }
    per_op.sort_by(f64::total_cmp);
    let pct = |p: f64| per_op[((per_op.len() - 1) as f64 * p) as usize] * 1e6;
    println!(
        "{name:<28} median {:>9.1} µs   p10 {:>9.1} µs   p90 {:>9.1} µs   ({} batches)",
        pct(0.5),
        pct(0.1),
        pct(0.9),
        per_op.len()
    );
}

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
