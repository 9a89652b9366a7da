//! The live session token (LST): the access-token secret decrypted into the prepend, a
//! Diffie-Hellman exchange, and HMAC-SHA1 derivations, as IBKR computes them.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd, Resize};
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use crate::key::DecryptionKey;

/// The 2048-bit MODP prime of RFC 3526 (group 14), a safe prime, as hex — the group IBKR's
/// examples and the sandbox use.
pub const RFC3526_PRIME_2048: &str = "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f14374fe1356d6d51c245e485b576625e7ec6f44c42e9a637ed6b0bff5cb6f406b7edee386bfb5a899fa5ae9f24117c4b1fe649286651ece45b3dc2007cb8a163bf0598da48361c55d39a69163fa8fd24cf5f83655d23dca3ad961c62f356208552bb9ed529077096966d670c354e4abc9804f1746c08ca18217c32905e462e36ce3be39e772c180e86039b2783a2ec07a28fb5c55df06f4c52c9de2bcbf6955817183995497cea956ae515d2261898fa051015728e5a8aacaa68ffffffffffffffff";

/// Width of the DH secret exponent `a` (IBKR's clients use 256 random bits).
pub const DH_SECRET_BITS: u32 = 256;

pub use crate::error::LstError;

/// The prepend: lowercase hex of the decrypted access-token secret.
pub fn prepend(key: &DecryptionKey, secret_b64: &SecretString) -> Result<SecretString, LstError> {
    let ciphertext = STANDARD
        .decode(secret_b64.expose_secret().trim())
        .map_err(|_| LstError::SecretNotBase64)?;
    let plain = key
        .decrypt(&ciphertext)
        .ok_or(LstError::SecretDoesNotDecrypt)?;
    Ok(SecretString::from(hex(&plain)))
}

/// A Diffie-Hellman group: prime `p` (from hex or `dhparam.pem`) and generator `g`.
#[derive(Clone)]
pub struct DhGroup {
    params: BoxedMontyParams,
    generator: BoxedUint,
    bits: u32,
}

impl std::fmt::Debug for DhGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DhGroup({} bits)", self.bits)
    }
}

/// The secret exponent `a`; never printed.
pub struct DhSecret(BoxedUint);

impl std::fmt::Debug for DhSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DhSecret([REDACTED])")
    }
}

impl DhSecret {
    /// 256 fresh random bits.
    pub fn random() -> Self {
        let mut bytes = [0u8; (DH_SECRET_BITS / 8) as usize];
        // Without a working RNG no key exchange can be done safely.
        #[allow(clippy::expect_used)]
        aws_lc_rs::rand::fill(&mut bytes)
            .expect("the system random number generator is unavailable");
        Self::from_be_bytes(&bytes)
    }

    /// A fixed exponent (for reproducing vectors); at most 256 bits are used.
    pub fn from_be_bytes(bytes: &[u8]) -> Self {
        Self(BoxedUint::from_be_slice_truncated(bytes, DH_SECRET_BITS))
    }
}

impl DhGroup {
    /// A group from the prime's hex digits (whitespace and `:` separators allowed).
    pub fn from_hex(prime_hex: &str, generator: u32) -> Result<Self, LstError> {
        let clean: String = prime_hex
            .chars()
            .filter(|c| !c.is_whitespace() && *c != ':')
            .collect();
        let bytes = unhex(&clean).ok_or(LstError::BadPrime("not hexadecimal"))?;
        Self::from_be_bytes(&bytes, generator)
    }

    /// A group from the prime's big-endian bytes.
    pub fn from_be_bytes(prime: &[u8], generator: u32) -> Result<Self, LstError> {
        let prime = trim_zeros(prime);
        if prime.len() < 64 {
            return Err(LstError::BadPrime("shorter than 512 bits"));
        }
        let bits = (prime.len() * 8) as u32;
        let p =
            BoxedUint::from_be_slice(prime, bits).map_err(|_| LstError::BadPrime("too long"))?;
        let odd = Option::<Odd<BoxedUint>>::from(Odd::new(p)).ok_or(LstError::BadPrime("even"))?;
        if generator < 2 {
            return Err(LstError::BadPrime("generator must be at least 2"));
        }
        let generator = BoxedUint::from_be_slice(&generator.to_be_bytes(), bits)
            .map_err(|_| LstError::BadPrime("generator"))?;
        Ok(Self {
            params: BoxedMontyParams::new(odd),
            generator,
            bits,
        })
    }

    /// Checks the group for `ibauth doctor`: a safe prime `p = 2q + 1` of at least 2048 bits
    /// and a generator in `[2, p − 2]`. RFC 3526's group is recognised at once; any other prime
    /// gets Miller–Rabin on `p` and `q` (fixed and random bases). What the group is, or what
    /// is wrong with it.
    pub fn audit(&self) -> Result<String, String> {
        let p = self.params.modulus().clone().get();
        let bits = p.bit_width();
        if bits < 2048 {
            return Err(format!("the prime has {bits} bits; IBKR's group has 2048"));
        }
        let one = BoxedUint::one_with_precision(p.bits_precision());
        let p_minus_2 = p.wrapping_sub(&one).wrapping_sub(&one);
        if self.generator < BoxedUint::from(2u32).resize(p.bits_precision())
            || self.generator > p_minus_2
        {
            return Err("the generator must be between 2 and p − 2".into());
        }
        let known = BoxedUint::from_be_slice(
            &unhex(RFC3526_PRIME_2048).unwrap_or_default(),
            p.bits_precision(),
        )
        .ok();
        if known.as_ref() == Some(&p) {
            return Ok(format!(
                "RFC 3526 group 14 (2048-bit safe prime), generator {}",
                self.generator_u32()
            ));
        }
        if !probably_prime(&p) {
            return Err(
                "the prime is not prime (a wrong or damaged dh_prime / dhparam.pem)".into(),
            );
        }
        let q = p.wrapping_sub(&one).shr(1);
        if !probably_prime(&q) {
            return Err("the prime is not a safe prime ((p − 1)/2 is composite); use the DH parameters from IBKR's portal".into());
        }
        Ok(format!(
            "{bits}-bit safe prime, generator {}",
            self.generator_u32()
        ))
    }

    fn generator_u32(&self) -> u64 {
        self.generator.as_words().first().copied().unwrap_or(0)
    }

    fn pow(&self, base: &BoxedUint, exponent: &DhSecret) -> BoxedUint {
        BoxedMontyForm::new(base.clone(), &self.params)
            .pow(&exponent.0)
            .retrieve()
    }

    /// The challenge `A = g^a mod p`, lowercase hex without leading zeros.
    pub fn challenge(&self, secret: &DhSecret) -> String {
        let a = self.pow(&self.generator, secret);
        hex(&a.to_be_bytes_trimmed_vartime())
            .trim_start_matches('0')
            .to_owned()
    }

    /// Checks a peer's public value (the server's `B`, or a client's `A` on a server) as hex:
    /// it must lie in `[2, p − 2]`. `0`, `1`, `p − 1` and anything `≥ p` would force the shared
    /// secret into a tiny, guessable set (`0`, `1` or `±1`), so a man in the middle could
    /// compute the LST. The reason, when refused.
    pub fn check_peer_value(&self, value_hex: &str) -> Result<(), &'static str> {
        self.peer_value(value_hex).map(|_| ())
    }

    fn peer_value(&self, value_hex: &str) -> Result<BoxedUint, &'static str> {
        let digits = value_hex.trim().trim_start_matches('0');
        // Checked before decoding, so a hostile multi-megabyte "number" costs nothing.
        if digits.len() > (self.bits as usize).div_ceil(4) {
            return Err("longer than the prime");
        }
        let bytes = unhex(digits).ok_or("not hexadecimal")?;
        let p = self.params.modulus().clone().get();
        let precision = p.bits_precision();
        let value = BoxedUint::from_be_slice(trim_zeros(&bytes), precision)
            .map_err(|_| "longer than the prime")?;
        let two = BoxedUint::from(2u32).resize(precision);
        let p_minus_2 = p.wrapping_sub(&two);
        if value < two || value > p_minus_2 {
            return Err("outside [2, p − 2] (0, 1, p − 1 and values ≥ p are refused)");
        }
        Ok(value)
    }

    /// `K = B^a mod p` as Java's `BigInteger.toByteArray()`: minimal big-endian, plus a
    /// leading 0x00 when the top bit is set (half of all K; skipping it gives a wrong LST).
    /// `B` outside `[2, p − 2]` is refused ([`check_peer_value`](Self::check_peer_value)).
    pub fn shared_secret(
        &self,
        response_hex: &str,
        secret: &DhSecret,
    ) -> Result<SecretSlice<u8>, LstError> {
        let b = self
            .peer_value(response_hex)
            .map_err(LstError::BadResponse)?;
        let k = self.pow(&b, secret);
        let mut out = k.to_be_bytes_trimmed_vartime().to_vec();
        if out.is_empty() || out[0] & 0x80 != 0 {
            out.insert(0, 0);
        }
        Ok(SecretSlice::from(out))
    }
}

/// `LST = base64(HMAC-SHA1(key = K bytes, message = prepend bytes))`.
pub fn live_session_token(k: &SecretSlice<u8>, prepend: &SecretString) -> Option<SecretString> {
    let message = unhex(prepend.expose_secret())?;
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, k.expose_secret());
    Some(SecretString::from(
        STANDARD.encode(hmac::sign(&key, &message).as_ref()),
    ))
}

/// IBKR's `live_session_token_signature`: `hex(HMAC-SHA1(key = LST bytes, consumer key))`.
pub fn lst_signature(lst: &SecretString, consumer_key: &str) -> Option<String> {
    let lst = STANDARD.decode(lst.expose_secret()).ok()?;
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &lst);
    Some(hex(hmac::sign(&key, consumer_key.as_bytes()).as_ref()))
}

/// Checks IBKR's `live_session_token_signature` against the LST computed here.
pub fn lst_matches(lst: &SecretString, consumer_key: &str, signature_hex: &str) -> bool {
    let Ok(lst) = STANDARD.decode(lst.expose_secret()) else {
        return false;
    };
    let Some(expected) = unhex(signature_hex.trim()) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &lst);
    hmac::verify(&key, consumer_key.as_bytes(), &expected).is_ok()
}

/// Miller–Rabin with the first twelve primes and eight random bases as witnesses (variable
/// time: the numbers are public).
fn probably_prime(n: &BoxedUint) -> bool {
    let precision = n.bits_precision();
    let one = BoxedUint::one_with_precision(precision);
    let three = BoxedUint::from(3u32).resize(precision);
    let Some(odd) = Option::<Odd<BoxedUint>>::from(Odd::new(n.clone())) else {
        return false;
    };
    if *n <= three {
        return *n > one;
    }
    let params = BoxedMontyParams::new_vartime(odd);
    let n_minus_1 = n.wrapping_sub(&one);
    let s = n_minus_1.trailing_zeros();
    let d = n_minus_1.shr(s);
    // Random witnesses in [2, n − 2]: r mod (n − 3) + 2.
    let span = Option::<crypto_bigint::NonZero<BoxedUint>>::from(crypto_bigint::NonZero::new(
        n.wrapping_sub(&three),
    ));
    let mut bases: Vec<BoxedUint> = [2u32, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]
        .iter()
        .map(|b| BoxedUint::from(*b).resize(precision))
        .filter(|b| b < &n_minus_1)
        .collect();
    if let Some(span) = span {
        for _ in 0..8 {
            let mut bytes = vec![0u8; precision.div_ceil(8) as usize];
            let _ = aws_lc_rs::rand::fill(&mut bytes);
            if let Ok(r) = BoxedUint::from_be_slice(&bytes, precision) {
                bases.push(r.rem_vartime(&span).wrapping_add(&one).wrapping_add(&one));
            }
        }
    }
    'witness: for a in bases {
        let mut x = BoxedMontyForm::new(a, &params).pow(&d);
        let mut plain = x.retrieve();
        if plain == one || plain == n_minus_1 {
            continue;
        }
        for _ in 1..s {
            x = x.square();
            plain = x.retrieve();
            if plain == n_minus_1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

fn trim_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().take_while(|b| **b == 0).count();
    &bytes[start..]
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex digits (an odd count has a leading zero implied) as bytes; `None` for anything else.
/// Digits only: `u8::from_str_radix` alone would also take a sign (`+f`), so `+2` would pass
/// for the peer value 2 and `+f` pairs for digits of a prime.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    let nibble = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let digits = text.as_bytes();
    let (odd, pairs) = digits.split_at(digits.len() % 2);
    let mut out = Vec::with_capacity(digits.len().div_ceil(2));
    if let [d] = odd {
        out.push(nibble(*d)?);
    }
    for pair in pairs.chunks_exact(2) {
        out.push(nibble(pair[0])? << 4 | nibble(pair[1])?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u64) -> BoxedUint {
        BoxedUint::from(v).resize(128)
    }

    #[test]
    fn miller_rabin_separates_primes_from_composites() {
        for p in [5u64, 7, 97, 7919, 2_147_483_647, 1_000_000_007] {
            assert!(probably_prime(&n(p)), "{p} is prime");
        }
        // 561 and 41041 are Carmichael numbers: Fermat's test would pass them.
        for c in [9u64, 91, 561, 41_041, 1_000_000_011 * 3] {
            assert!(!probably_prime(&n(c)), "{c} is composite");
        }
    }

    #[test]
    fn peer_values_outside_2_to_p_minus_2_are_refused() {
        let group = DhGroup::from_hex(RFC3526_PRIME_2048, 2).unwrap();
        let p = BoxedUint::from_be_slice(&unhex(RFC3526_PRIME_2048).unwrap(), 2048).unwrap();
        let one = BoxedUint::one_with_precision(p.bits_precision());
        let as_hex = |n: BoxedUint| hex(&n.to_be_bytes_trimmed_vartime());
        let minus = |k: u32| as_hex((0..k).fold(p.clone(), |n, _| n.wrapping_sub(&one)));
        let p_plus_1 = {
            let wide = p.clone().resize(p.bits_precision() + 64);
            as_hex(wide.wrapping_add(one.clone().resize(wide.bits_precision())))
        };
        let secret = DhSecret::from_be_bytes(&[7; 32]);
        for (name, value) in [
            ("0", "0".to_owned()),
            ("1", "1".to_owned()),
            ("p - 1", minus(1)),
            ("p", RFC3526_PRIME_2048.to_owned()),
            ("p + 1", p_plus_1),
            ("2^2048", format!("1{}", "0".repeat(512))),
            ("huge", "f".repeat(100_000)),
        ] {
            assert!(group.check_peer_value(&value).is_err(), "{name} accepted");
            assert!(
                matches!(
                    group.shared_secret(&value, &secret),
                    Err(LstError::BadResponse(_))
                ),
                "{name}"
            );
        }
        assert_eq!(group.check_peer_value("2"), Ok(()));
        assert_eq!(
            group.check_peer_value(&minus(2)),
            Ok(()),
            "p − 2 is the largest"
        );
        assert_eq!(group.check_peer_value("xyz"), Err("not hexadecimal"));
        let b = group.challenge(&secret);
        assert!(group.shared_secret(&b, &secret).is_ok());
    }

    /// Found by fuzzing (`fuzz/`, target `dh_params`): `+` passed for a hex digit, so a
    /// prime, a peer's value (`+2`) or an LST signature could be written with signs.
    #[test]
    fn hex_is_digits_only() {
        assert_eq!(unhex("0aF"), Some(vec![0x00, 0xaf]));
        assert_eq!(unhex("f"), Some(vec![0x0f]));
        assert_eq!(unhex(""), Some(vec![]));
        for bad in ["+f", "+1+2", "-1", "0x", " 1", "1 ", "é1", "g0"] {
            assert_eq!(unhex(bad), None, "{bad:?}");
        }
        let signed = format!("+{}", &RFC3526_PRIME_2048[1..]);
        assert!(matches!(
            DhGroup::from_hex(&signed, 2),
            Err(LstError::BadPrime("not hexadecimal"))
        ));
        let group = DhGroup::from_hex(RFC3526_PRIME_2048, 2).unwrap();
        assert_eq!(group.check_peer_value("2"), Ok(()));
        assert_eq!(group.check_peer_value("+2"), Err("not hexadecimal"));
        // A token whose signature starts with `0`, which `+` stood for.
        let (lst, signature) = (0..=255u8)
            .map(|b| SecretString::from(STANDARD.encode([b; 20])))
            .find_map(|lst| {
                let signature = lst_signature(&lst, "TESTCONS")?;
                signature.starts_with('0').then_some((lst, signature))
            })
            .unwrap();
        assert!(lst_matches(&lst, "TESTCONS", &signature));
        assert!(!lst_matches(
            &lst,
            "TESTCONS",
            &format!("+{}", &signature[1..])
        ));
    }

    #[test]
    fn the_audit_knows_rfc3526_and_rejects_broken_groups() {
        let good = DhGroup::from_hex(RFC3526_PRIME_2048, 2).unwrap();
        let verdict = good.audit().unwrap();
        assert!(verdict.contains("RFC 3526"), "{verdict}");

        let bytes = unhex(RFC3526_PRIME_2048).unwrap();
        let mut minus_two = bytes.clone();
        *minus_two.last_mut().unwrap() -= 2;
        let err = DhGroup::from_be_bytes(&minus_two, 2)
            .unwrap()
            .audit()
            .unwrap_err();
        assert!(err.contains("not prime"), "{err}");

        let err = DhGroup::from_be_bytes(&bytes[..128], 2).unwrap_or_else(|_| unreachable!());
        let err = err.audit().unwrap_err();
        assert!(err.contains("1024 bits") || err.contains("bits"), "{err}");

        let err = DhGroup::from_be_bytes(&bytes, u32::MAX).unwrap().audit();
        assert!(err.is_ok(), "a large generator below p is fine: {err:?}");
    }
}
