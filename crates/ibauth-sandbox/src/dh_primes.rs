//! Diffie-Hellman groups for the sandbox's consumers. IBKR registers a prime per consumer
//! (`openssl dhparam 2048`), so a client must read the consumer's `dhparam.pem` and never
//! assume RFC 3526. A 2048-bit safe prime takes seconds to minutes to generate, so a few were
//! generated once (`openssl dhparam -out dhN.pem 2048`, generator 2) and ship here as hex;
//! `tests/fidelity.rs` checks each is a 2048-bit safe prime other than RFC 3526's.

use ibauth::oauth1a::DhGroup;

/// Safe 2048-bit primes (generator 2) the sandbox gives its generated credential sets
/// ([`CredentialSet`](crate::CredentialSet)): none is RFC 3526's.
pub const SANDBOX_DH_PRIMES: [&str; 4] = [
    include_str!("dh_primes/1.hex").trim_ascii(),
    include_str!("dh_primes/2.hex").trim_ascii(),
    include_str!("dh_primes/3.hex").trim_ascii(),
    include_str!("dh_primes/4.hex").trim_ascii(),
];

/// RFC 3526 group 14, generator 2: the default of `ConsumerRegistration::new`.
pub(crate) fn rfc3526_group() -> DhGroup {
    static GROUP: std::sync::LazyLock<DhGroup> = std::sync::LazyLock::new(|| {
        // A constant of the library, parsed the same way every time (see the unit test).
        #[allow(clippy::expect_used)]
        DhGroup::from_hex(ibauth::oauth1a::RFC3526_PRIME_2048, 2).expect("RFC 3526 prime parses")
    });
    GROUP.clone()
}

/// The shipped prime for a credential set whose signature key has `public_der`: stable for
/// one key (so a restarted sandbox keeps its consumers' group) and spread over the primes.
pub(crate) fn prime_for(public_der: &[u8]) -> &'static str {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public_der);
    let pick = digest.as_ref().first().copied().unwrap_or(0);
    SANDBOX_DH_PRIMES[usize::from(pick) % SANDBOX_DH_PRIMES.len()]
}

/// `prime_hex` with generator 2 as an `openssl dhparam` file (PKCS#3 `SEQUENCE { p, g }`).
pub(crate) fn dhparam_pem(prime_hex: &str) -> String {
    let mut p = vec![0u8]; // INTEGER is signed and the prime's top bit is set.
    p.extend(
        (0..prime_hex.len())
            .step_by(2)
            .filter_map(|i| prime_hex.get(i..i + 2))
            .filter_map(|pair| u8::from_str_radix(pair, 16).ok()),
    );
    let mut body = der(0x02, &p);
    body.extend(der(0x02, &[2]));
    ibauth::pem_encode("DH PARAMETERS", &der(0x30, &body))
}

/// One DER item: tag, definite length, contents.
fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_primes_are_2048_bit_hex_and_not_rfc_3526() {
        let mut seen = std::collections::HashSet::new();
        for prime in SANDBOX_DH_PRIMES {
            assert_eq!(prime.len(), 512, "{prime}");
            assert!(prime.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(DhGroup::from_hex(prime, 2).is_ok());
            assert_ne!(prime, ibauth::oauth1a::RFC3526_PRIME_2048);
            assert!(seen.insert(prime), "shipped twice: {prime}");
        }
        // Parses, so the default group is never a panic.
        let _ = rfc3526_group();
    }

    #[test]
    fn a_key_keeps_its_prime() {
        assert_eq!(prime_for(b"one key"), prime_for(b"one key"));
        let spread: std::collections::HashSet<_> = (0u8..64).map(|i| prime_for(&[i])).collect();
        assert!(spread.len() > 1);
    }
}
