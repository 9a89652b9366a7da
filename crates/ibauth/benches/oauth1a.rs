//! `cargo bench -p ibauth --bench oauth1a`: the local work of an OAuth 1.0a login — the DH
//! challenge and shared secret (constant-time, 256-bit exponent, 2048-bit prime), the LST
//! derivation, and signing one request with HMAC-SHA256.

mod common;

use std::hint::black_box;

use common::bench;
use ibauth::oauth1a::{
    DhGroup, DhSecret, Nonce, Signer, authorize, live_session_token, oauth_params,
};
use ibauth::secrecy::{SecretSlice, SecretString};

fn main() {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../tests/vectors/oauth1a.json")).expect("vectors");
    let text = |k: &str| v[k].as_str().expect("field").to_owned();
    let group = DhGroup::from_hex(&text("dh_prime_hex"), 2).expect("prime");
    let secret = DhSecret::random();
    let response = text("diffie_hellman_challenge");
    let prepend = SecretString::from(text("prepend"));

    bench("DH challenge g^a mod p", || {
        black_box(group.challenge(&secret));
    });
    bench("DH shared secret B^a mod p", || {
        black_box(group.shared_secret(&response, &secret).expect("K"));
    });
    let k = group.shared_secret(&response, &secret).expect("K");
    bench("LST = HMAC-SHA1(K, prepend)", || {
        black_box(live_session_token(&k, &prepend));
    });
    let lst = SecretSlice::from(vec![7u8; 20]);
    let signer = Signer::HmacSha256 { lst: &lst };
    let url = "https://api.ibkr.com/v1/api/tickle";
    bench("sign a request (HMAC-SHA256)", || {
        let params = oauth_params(
            "ABCDEFGHI",
            Some("0123456789abcdef0123"),
            &Nonce::fresh(1_700_000_000),
            "HMAC-SHA256",
            &[],
        );
        black_box(authorize(&signer, "limited_poa", "POST", url, &params));
    });
}
