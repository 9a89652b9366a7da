//! The live session token (LST): the access-token secret decrypted into the prepend, a
//! Diffie-Hellman exchange, and HMAC-SHA1 derivations, as IBKR computes them.

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd};
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use crate::key::DecryptionKey;

/// Width of the DH secret exponent `a` (IBKR's clients use 256 random bits).
pub const DH_SECRET_BITS: u32 = 256;

/// Why a live-session-token computation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LstError {
    /// The access-token secret is not base64.
    #[error("the access-token secret is not valid base64; copy it again from IBKR's portal")]
    SecretNotBase64,
    /// The secret does not decrypt with the encryption key.
    #[error(
        "the access-token secret does not decrypt with the encryption key; check that the encryption key is the one registered with this consumer, and that the secret belongs to this access token"
    )]
    SecretDoesNotDecrypt,
    /// The DH prime is not usable.
    #[error("the Diffie-Hellman prime is invalid: {0}")]
    BadPrime(&'static str),
    /// IBKR's `live_session_token_signature` does not match the LST computed here.
    #[error(
        "the live session token does not validate: check the DH prime, the encryption key and the access-token secret"
    )]
    Mismatch,
    /// IBKR's DH response is not a usable number.
    #[error("IBKR's diffie_hellman_response is invalid: {0}")]
    BadResponse(&'static str),
}

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

    /// `K = B^a mod p` as Java's `BigInteger.toByteArray()`: minimal big-endian, plus a
    /// leading 0x00 when the top bit is set (half of all K; skipping it gives a wrong LST).
    pub fn shared_secret(
        &self,
        response_hex: &str,
        secret: &DhSecret,
    ) -> Result<SecretSlice<u8>, LstError> {
        let bytes = unhex(response_hex.trim()).ok_or(LstError::BadResponse("not hexadecimal"))?;
        let bytes = trim_zeros(&bytes);
        let b = BoxedUint::from_be_slice(bytes, self.bits)
            .map_err(|_| LstError::BadResponse("longer than the prime"))?;
        if bool::from(b.is_zero()) || bytes == [1] {
            return Err(LstError::BadResponse("degenerate value"));
        }
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

fn trim_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().take_while(|b| **b == 0).count();
    &bytes[start..]
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = if text.len() % 2 == 1 {
        format!("0{text}")
    } else {
        text.to_owned()
    };
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}
