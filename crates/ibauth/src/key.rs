//! RSA private keys: loaded once, checked hard, never printed.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};

use crate::error::KeyError;
use crate::pem;

/// An RSA private key for RS256 / RSA-SHA256 signatures (2048 bits or more).
///
/// Cloning is cheap (shared). `Debug` shows only the key size.
#[derive(Clone)]
pub struct SigningKey {
    pair: Arc<RsaKeyPair>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(RSA {} bits)", self.bits())
    }
}

impl SigningKey {
    /// Reads a PEM key file (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`).
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => KeyError::NotFound {
                path: path.to_owned(),
            },
            _ => KeyError::Unreadable {
                path: path.to_owned(),
                source,
            },
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses PEM text (PKCS#1 or PKCS#8).
    ///
    /// ```
    /// let err = ibauth::SigningKey::from_pem("not a key").unwrap_err();
    /// assert!(err.to_string().contains("not a usable PEM private key"));
    /// ```
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        Self::parse(text, "(inline PEM)")
    }

    /// Generates a fresh 2048-bit key (for the sandbox and tests).
    pub fn generate() -> Result<Self, KeyError> {
        let pair = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(|_| {
            KeyError::Malformed {
                origin: "(generated)".into(),
                detail: "key generation failed".into(),
            }
        })?;
        Ok(Self {
            pair: Arc::new(pair),
        })
    }

    fn parse(text: &str, origin: &str) -> Result<Self, KeyError> {
        let malformed = |detail: String| KeyError::Malformed {
            origin: origin.to_owned(),
            detail,
        };
        let block = pem::first_block(text).map_err(|e| malformed(e.to_string()))?;
        if block.encrypted_header || block.label.contains("ENCRYPTED") {
            return Err(KeyError::Encrypted {
                origin: origin.to_owned(),
            });
        }
        let parsed = match block.label.as_str() {
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&block.der),
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&block.der),
            "EC PRIVATE KEY" => return Err(not_rsa(origin, "an EC key")),
            "DSA PRIVATE KEY" => return Err(not_rsa(origin, "a DSA key")),
            "OPENSSH PRIVATE KEY" => return Err(not_rsa(origin, "an OpenSSH-format key")),
            "PUBLIC KEY" | "RSA PUBLIC KEY" => {
                return Err(KeyError::NotPrivate {
                    origin: origin.to_owned(),
                    found: "public key",
                });
            }
            "CERTIFICATE" => {
                return Err(KeyError::NotPrivate {
                    origin: origin.to_owned(),
                    found: "certificate",
                });
            }
            other => return Err(malformed(format!("unexpected PEM label `{other}`"))),
        };
        let pair = parsed.map_err(|rejected| match rejected.description_() {
            "TooSmall" => KeyError::TooSmall {
                origin: origin.to_owned(),
            },
            "WrongAlgorithm" => not_rsa(origin, "not an RSA key"),
            other => malformed(format!("the key was rejected: {other}")),
        })?;
        Ok(Self {
            pair: Arc::new(pair),
        })
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.pair.public_modulus_len() * 8
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `msg` (deterministic).
    pub fn sign_sha256(&self, msg: &[u8]) -> Vec<u8> {
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        // Signing with a validated key into a correctly sized buffer cannot fail; aws-lc-rs
        // ignores the RNG for PKCS#1 v1.5.
        if self
            .pair
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
            .is_err()
        {
            sig.clear();
        }
        sig
    }

    /// The public key as SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.pair
            .public_key()
            .as_der()
            .map(|d| d.as_ref().to_vec())
            .unwrap_or_default()
    }

    /// The public key as SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), the form
    /// IBKR's portal asks for.
    pub fn public_key_pem(&self) -> String {
        pem::encode("PUBLIC KEY", &self.public_key_der())
    }

    /// The private key as PKCS#8 PEM. Callers must write it only to files they protect (0600).
    pub fn to_pkcs8_pem(&self) -> String {
        let der = self
            .pair
            .as_der()
            .map(|d| d.as_ref().to_vec())
            .unwrap_or_default();
        pem::encode("PRIVATE KEY", &der)
    }
}

fn not_rsa(origin: &str, found: &'static str) -> KeyError {
    KeyError::NotRsa {
        origin: origin.to_owned(),
        found,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_through_pem_without_leaking_in_debug() {
        let key = SigningKey::generate().unwrap();
        let pem = key.to_pkcs8_pem();
        let again = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(again.public_key_pem(), key.public_key_pem());
        assert_eq!(again.bits(), 2048);
        let debug = format!("{again:?}");
        assert_eq!(debug, "SigningKey(RSA 2048 bits)");
    }

    #[test]
    fn public_key_is_refused_as_private() {
        let key = SigningKey::generate().unwrap();
        let err = SigningKey::from_pem(&key.public_key_pem()).unwrap_err();
        assert!(matches!(err, KeyError::NotPrivate { .. }), "{err}");
    }
}
