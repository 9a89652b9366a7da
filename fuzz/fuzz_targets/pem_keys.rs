//! PEM private keys: `SigningKey::from_pem` and `DecryptionKey::from_pem`, through the PEM
//! reader, the PKCS#1 → PKCS#8 wrapping and aws-lc's DER parser.
//!
//! Input: a mode byte, then either PEM text (mode 0: as a user's file) or DER that is wrapped
//! in a PEM block with one of the labels ibauth tells apart (so DER is mutated directly).
#![no_main]

use ibauth::{DecryptionKey, SigningKey};
use libfuzzer_sys::fuzz_target;

const LABELS: [&str; 8] = [
    "RSA PRIVATE KEY",
    "PRIVATE KEY",
    "ENCRYPTED PRIVATE KEY",
    "EC PRIVATE KEY",
    "PUBLIC KEY",
    "RSA PUBLIC KEY",
    "CERTIFICATE",
    "OPENSSH PRIVATE KEY",
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = match mode % 3 {
        0 => match std::str::from_utf8(rest) {
            Ok(text) => text.to_owned(),
            Err(_) => return,
        },
        _ => ibauth::pem_encode(LABELS[usize::from(mode / 3) % LABELS.len()], rest),
    };
    if let Some((label, _, der)) = ibauth::fuzzing::pem_block(&text) {
        // What was encoded is what is read back.
        if mode % 3 != 0 {
            assert_eq!(der, rest);
            assert_eq!(label, LABELS[usize::from(mode / 3) % LABELS.len()]);
        }
    }
    match SigningKey::from_pem(&text) {
        Ok(key) => {
            assert!(key.bits() >= 2048, "{} bits", key.bits());
            assert_eq!(
                format!("{key:?}"),
                format!("SigningKey(RSA {} bits)", key.bits())
            );
            let signature = key.sign_sha256(b"fuzz");
            assert_eq!(signature.len() * 8, key.bits());
            let again = SigningKey::from_pem(&key.to_pkcs8_pem()).expect("own PKCS#8 re-read");
            assert_eq!(again.public_key_der(), key.public_key_der());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    match DecryptionKey::from_pem(&text) {
        Ok(key) => {
            let _ = format!("{key:?}");
            let _ = key.decrypt(rest);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
