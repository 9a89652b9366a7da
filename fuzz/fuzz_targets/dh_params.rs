//! Diffie-Hellman parameters: the prime as hex (`dh_prime`), `dhparam.pem` (PEM, then the
//! PKCS#3 DER reader), and what is done with a group: the challenge and a peer's value.
//!
//! Input: a mode byte, a generator byte, then hex text (mode 0), DER (mode 1) or PEM text
//! (mode 2).
#![no_main]

use ibauth::oauth1a::{DhGroup, DhSecret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [mode, generator, rest @ ..] = data else {
        return;
    };
    let generator = u32::from(*generator);
    let group = match mode % 3 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            DhGroup::from_hex(text, generator)
        }
        1 => {
            let Some((prime, g)) = ibauth::fuzzing::dhparam(rest) else {
                return;
            };
            DhGroup::from_be_bytes(&prime, if g == 0 { generator } else { g })
        }
        _ => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let Some((_, _, der)) = ibauth::fuzzing::pem_block(text) else {
                return;
            };
            let Some((prime, g)) = ibauth::fuzzing::dhparam(&der) else {
                return;
            };
            DhGroup::from_be_bytes(&prime, if g == 0 { generator } else { g })
        }
    };
    let Ok(group) = group else {
        return;
    };
    // Hex means hex digits (with the separators `dh_prime` allows), nothing else.
    if mode % 3 == 0 {
        let text = String::from_utf8_lossy(rest);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_hexdigit() || c.is_whitespace() || c == ':'),
            "a prime from non-hex text {text:?}"
        );
    }
    // `DhGroup(2048 bits)`: IBKR's primes are 2048 bits; a much bigger one only makes each
    // input slower (the exponentiation is quadratic in the size).
    let bits: usize = format!("{group:?}")
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0);
    if bits > 4096 {
        return;
    }
    let secret = DhSecret::from_be_bytes(&[0x5a; 32]);
    let challenge = group.challenge(&secret);
    assert!(!challenge.starts_with('0'), "{challenge}");
    // Our own challenge as the peer's value: accepted or refused, never a panic.
    if group.check_peer_value(&challenge).is_ok() {
        assert!(group.shared_secret(&challenge, &secret).is_ok());
    }
    for value in ["0", "1", "2", "ff", ""] {
        if group.check_peer_value(value).is_ok() {
            assert!(
                value.trim().chars().all(|c| c.is_ascii_hexdigit()),
                "{value:?}"
            );
        }
        let _ = group.shared_secret(value, &secret);
    }
    // The peer's value as the input gives it (the rest of the input as text).
    let value = String::from_utf8_lossy(rest);
    if group.check_peer_value(&value).is_ok() {
        assert!(
            value.trim().chars().all(|c| c.is_ascii_hexdigit()),
            "{value:?}"
        );
    }
});
