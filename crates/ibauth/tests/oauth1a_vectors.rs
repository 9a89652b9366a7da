//! Byte-exact compatibility with ibind 0.2.2 (`../shared/spec/vectors/oauth1a.json`): prepend,
//! DH challenge, base strings, `Authorization` headers, both LST cases (with and without
//! Java's sign byte), the LST signature, and the HMAC-SHA256-signed requests.

use std::collections::BTreeMap;

use ibauth::oauth1a::{
    DhGroup, DhSecret, Nonce, Signer, authorize, base_string, live_session_token, lst_matches,
    oauth_params, prepend,
};
use ibauth::secrecy::{ExposeSecret, SecretSlice, SecretString};
use ibauth::{DecryptionKey, SigningKey};
use serde_json::Value;

fn v() -> Value {
    serde_json::from_str(include_str!("vectors/oauth1a.json")).unwrap()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {key}"))
}

fn nonce(v: &Value) -> Nonce {
    Nonce {
        nonce: s(v, "nonce").to_owned(),
        timestamp: s(v, "timestamp").parse().unwrap(),
    }
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn group(v: &Value) -> DhGroup {
    DhGroup::from_hex(
        s(v, "dh_prime_hex"),
        v["dh_generator"].as_u64().unwrap() as u32,
    )
    .unwrap()
}

fn the_prepend(v: &Value) -> SecretString {
    let key = DecryptionKey::from_pem(s(v, "encryption_key_pem")).unwrap();
    prepend(
        &key,
        &SecretString::from(s(v, "access_token_secret").to_owned()),
    )
    .unwrap()
}

#[test]
fn prepend_is_the_decrypted_secret_in_hex() {
    let v = v();
    let prepend = the_prepend(&v);
    assert_eq!(prepend.expose_secret(), s(&v, "prepend"));
    assert_eq!(
        prepend.expose_secret(),
        s(&v, "access_token_secret_plain_hex")
    );
}

#[test]
fn challenge_matches() {
    let v = v();
    let secret = DhSecret::from_be_bytes(&unhex(s(&v, "dh_random_hex")));
    assert_eq!(
        group(&v).challenge(&secret),
        s(&v, "diffie_hellman_challenge")
    );
}

#[test]
fn live_session_token_request_is_signed_like_ibind() {
    let v = v();
    let url = format!("{}oauth/live_session_token", s(&v, "base_url"));
    let params = oauth_params(
        s(&v, "consumer_key"),
        Some(s(&v, "access_token")),
        &nonce(&v),
        "RSA-SHA256",
        &[(
            "diffie_hellman_challenge",
            s(&v, "diffie_hellman_challenge"),
        )],
    );
    let prepend = the_prepend(&v);
    assert_eq!(
        format!(
            "{}{}",
            prepend.expose_secret(),
            base_string("POST", &url, &params)
        ),
        s(&v, "lst_base_string")
    );
    let key = SigningKey::from_pem(s(&v, "signature_key_pem")).unwrap();
    let signer = Signer::RsaSha256 {
        key: &key,
        prepend: &prepend,
    };
    assert_eq!(
        authorize(&signer, s(&v, "realm"), "POST", &url, &params),
        s(&v, "lst_authorization")
    );
}

#[test]
fn both_lst_cases_with_and_without_the_sign_byte() {
    let v = v();
    let secret = DhSecret::from_be_bytes(&unhex(s(&v, "dh_random_hex")));
    let prepend = the_prepend(&v);
    let cases = v["lst_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for case in cases {
        let name = s(case, "name");
        let k = group(&v)
            .shared_secret(s(case, "diffie_hellman_response"), &secret)
            .unwrap();
        assert_eq!(hex(k.expose_secret()), s(case, "K_bytes_hex"), "{name}");
        let lst = live_session_token(&k, &prepend).unwrap();
        assert_eq!(lst.expose_secret(), s(case, "live_session_token"), "{name}");
        assert!(
            lst_matches(
                &lst,
                s(&v, "consumer_key"),
                s(case, "live_session_token_signature")
            ),
            "{name}"
        );
        assert!(!lst_matches(
            &lst,
            "OTHERCONS",
            s(case, "live_session_token_signature")
        ));
    }
    // The sign-byte case really has the extra 0x00 (a plain big-endian K would be wrong).
    assert!(s(&cases[1], "K_bytes_hex").starts_with("00"));
    assert!(!s(&cases[1], "K_hex").starts_with("00"));
}

#[test]
fn third_party_token_requests_are_signed_without_prepend() {
    let v = v();
    let key = SigningKey::from_pem(s(&v, "signature_key_pem")).unwrap();
    let no_prepend = SecretString::from(String::new());
    let signer = Signer::RsaSha256 {
        key: &key,
        prepend: &no_prepend,
    };
    let base = s(&v, "base_url");
    let request = oauth_params(
        "TESTCONS",
        None,
        &nonce(&v),
        "RSA-SHA256",
        &[("oauth_callback", "oob")],
    );
    let url = format!("{base}oauth/request_token");
    assert_eq!(
        base_string("POST", &url, &request),
        s(&v, "request_token_base_string")
    );
    assert_eq!(
        authorize(&signer, "test_realm", "POST", &url, &request),
        s(&v, "request_token_authorization")
    );
    let access = oauth_params(
        "TESTCONS",
        Some(s(&v, "access_token_request_token")),
        &nonce(&v),
        "RSA-SHA256",
        &[("oauth_verifier", s(&v, "access_token_verifier"))],
    );
    let url = format!("{base}oauth/access_token");
    assert_eq!(
        base_string("POST", &url, &access),
        s(&v, "access_token_base_string")
    );
    assert_eq!(
        authorize(&signer, "test_realm", "POST", &url, &access),
        s(&v, "access_token_authorization")
    );
}

#[test]
fn later_requests_are_signed_with_hmac_sha256_of_the_lst() {
    let v = v();
    // The vectors' signed requests use the LST of the sign-byte case.
    let lst = s(&v["lst_cases"][1], "live_session_token");
    let lst_bytes = SecretSlice::from(base64_decode(lst));
    let signer = Signer::HmacSha256 { lst: &lst_bytes };
    let base = s(&v, "base_url");
    let requests = v["signed_requests_with_lst"].as_object().unwrap();
    let mut checked = 0;
    for (name, expected) in requests {
        let expected = expected.as_str().unwrap();
        let mut words = name.split(' ');
        let (method, path) = (words.next().unwrap(), words.next().unwrap());
        let params = oauth_params(
            s(&v, "consumer_key"),
            Some(s(&v, "access_token")),
            &nonce(&v),
            "HMAC-SHA256",
            &[],
        );
        if name.ends_with("base_string") {
            assert_eq!(
                base_string(method, &format!("{base}{path}"), &params),
                expected,
                "{name}"
            );
        } else if name.ends_with("authorization") {
            assert_eq!(
                authorize(
                    &signer,
                    s(&v, "realm"),
                    method,
                    &format!("{base}{path}"),
                    &params
                ),
                expected,
                "{name}"
            );
        } else {
            // IBKR's samples sign query parameters too (ibind does not): the same code, given them.
            let mut with_query: BTreeMap<String, String> = params.clone();
            with_query.insert("conids".into(), "265598,8314".into());
            with_query.insert("fields".into(), "31,84".into());
            let url = format!("{base}iserver/marketdata/snapshot?conids=265598,8314&fields=31,84");
            assert_eq!(base_string(method, &url, &with_query), expected, "{name}");
        }
        checked += 1;
    }
    assert_eq!(checked, 9);
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

#[test]
fn bad_inputs_say_what_to_check() {
    use ibauth::oauth1a::LstError;
    let v = v();
    let key = DecryptionKey::from_pem(s(&v, "encryption_key_pem")).unwrap();
    let err = prepend(&key, &SecretString::from("not base64!".to_owned())).unwrap_err();
    assert_eq!(err, LstError::SecretNotBase64);
    assert!(err.to_string().contains("copy it again"));

    // The right ciphertext under the wrong key (the signature key) does not decrypt.
    let wrong = DecryptionKey::from_pem(s(&v, "signature_key_pem")).unwrap();
    let secret = SecretString::from(s(&v, "access_token_secret").to_owned());
    let err = prepend(&wrong, &secret).unwrap_err();
    assert_eq!(err, LstError::SecretDoesNotDecrypt);
    assert!(err.to_string().contains("encryption key"));

    assert!(matches!(
        DhGroup::from_hex("zz", 2),
        Err(LstError::BadPrime(_))
    ));
    assert!(matches!(
        DhGroup::from_hex(&"ff".repeat(32), 2),
        Err(LstError::BadPrime(_))
    ));
    assert!(matches!(
        DhGroup::from_hex(&format!("{}fe", "ff".repeat(255)), 2),
        Err(LstError::BadPrime("even"))
    ));
    let group = group(&v);
    let secret = DhSecret::random();
    for bad in ["", "0", "1", "xyz", &"ff".repeat(300)] {
        assert!(
            matches!(
                group.shared_secret(bad, &secret),
                Err(LstError::BadResponse(_))
            ),
            "{bad:?}"
        );
    }
    // Nothing secret in Debug.
    assert_eq!(format!("{secret:?}"), "DhSecret([REDACTED])");
    assert_eq!(format!("{group:?}"), "DhGroup(2048 bits)");
    assert_eq!(format!("{key:?}"), "DecryptionKey(RSA 2048 bits)");
}

#[test]
fn random_exchanges_agree_on_both_sides() {
    // Both halves of the exchange with fresh secrets: the server's K equals the client's.
    let v = v();
    let group = group(&v);
    for _ in 0..5 {
        let (a, b) = (DhSecret::random(), DhSecret::random());
        let (big_a, big_b) = (group.challenge(&a), group.challenge(&b));
        let k_client = group.shared_secret(&big_b, &a).unwrap();
        let k_server = group.shared_secret(&big_a, &b).unwrap();
        assert_eq!(k_client.expose_secret(), k_server.expose_secret());
        assert_eq!(k_client.expose_secret()[0] & 0x80, 0, "sign byte rule");
    }
}
