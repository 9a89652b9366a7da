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
    /// Reads a PEM key file (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`). On Unix a
    /// file other users can access is refused ([`KeyError::Exposed`]): `chmod 600` it.
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        Self::parse(&read_key_file(path)?, &path.display().to_string())
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
        let der = pkcs8_der(text, origin)?;
        let pair = RsaKeyPair::from_pkcs8(&der).map_err(|r| rejected(origin, r))?;
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

/// Reads an RSA private key PEM into PKCS#8 DER, refusing encrypted, non-RSA and non-private
/// PEM with a message that says what to do.
fn pkcs8_der(text: &str, origin: &str) -> Result<Vec<u8>, KeyError> {
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
    match block.label.as_str() {
        "RSA PRIVATE KEY" => Ok(wrap_pkcs1(&block.der)),
        "PRIVATE KEY" => Ok(block.der),
        "EC PRIVATE KEY" => Err(not_rsa(origin, "an EC key")),
        "DSA PRIVATE KEY" => Err(not_rsa(origin, "a DSA key")),
        "OPENSSH PRIVATE KEY" => Err(not_rsa(origin, "an OpenSSH-format key")),
        "PUBLIC KEY" | "RSA PUBLIC KEY" => Err(KeyError::NotPrivate {
            origin: origin.to_owned(),
            found: "public key",
        }),
        "CERTIFICATE" => Err(KeyError::NotPrivate {
            origin: origin.to_owned(),
            found: "certificate",
        }),
        other => Err(malformed(format!("unexpected PEM label `{other}`"))),
    }
}

fn rejected(origin: &str, rejected: aws_lc_rs::error::KeyRejected) -> KeyError {
    match rejected.description_() {
        "TooSmall" => KeyError::TooSmall {
            origin: origin.to_owned(),
        },
        "WrongAlgorithm" => not_rsa(origin, "not an RSA key"),
        other => KeyError::Malformed {
            origin: origin.to_owned(),
            detail: format!("the key was rejected: {other}"),
        },
    }
}

/// PKCS#1 `RSAPrivateKey` DER → PKCS#8 `PrivateKeyInfo` DER (RFC 5208), so one loader serves
/// both forms (aws-lc-rs's decrypting key reads PKCS#8 only).
fn wrap_pkcs1(pkcs1: &[u8]) -> Vec<u8> {
    const RSA_ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(&RSA_ALGORITHM);
    body.push(0x04);
    der_length(pkcs1.len(), &mut body);
    body.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_length(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

fn der_length(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// An RSA private key for PKCS#1 v1.5 decryption (the OAuth 1.0a encryption key).
///
/// `Debug` shows only the key size.
pub struct DecryptionKey {
    key: aws_lc_rs::rsa::Pkcs1PrivateDecryptingKey,
}

impl fmt::Debug for DecryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DecryptionKey(RSA {} bits)", self.key.key_size_bits())
    }
}

impl DecryptionKey {
    /// Parses PEM text (PKCS#1 or PKCS#8).
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        Self::parse(text, "(inline PEM)")
    }

    /// Reads a PEM key file; on Unix a file other users can access is refused
    /// ([`KeyError::Exposed`]).
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        Self::parse(&read_key_file(path)?, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Self, KeyError> {
        let der = pkcs8_der(text, origin)?;
        let private = aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(&der)
            .map_err(|r| rejected(origin, r))?;
        let key = aws_lc_rs::rsa::Pkcs1PrivateDecryptingKey::new(private).map_err(|_| {
            KeyError::Malformed {
                origin: origin.to_owned(),
                detail: "not usable for PKCS#1 v1.5 decryption".into(),
            }
        })?;
        Ok(Self { key })
    }

    /// RSAES-PKCS1-v1_5 decryption; `None` if the ciphertext does not decrypt with this key.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Option<Vec<u8>> {
        let mut out = vec![0u8; self.key.min_output_size()];
        let plain = self.key.decrypt(ciphertext, &mut out).ok()?;
        Some(plain.to_vec())
    }
}

/// Reads a private key file, refusing (on Unix) one whose mode grants group or others any
/// permission: a key others can read lets them log in as the owner, so it is treated as the
/// token file is, not merely warned about. The mode is taken from the opened file, so what is
/// checked is what is read.
pub(crate) fn read_key_file(path: &Path) -> Result<String, KeyError> {
    use std::io::Read as _;
    let failed = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => KeyError::NotFound {
            path: path.to_owned(),
        },
        _ => KeyError::Unreadable {
            path: path.to_owned(),
            source,
        },
    };
    let mut file = std::fs::File::open(path).map_err(failed)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata().map_err(failed)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Exposed {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(failed)?;
    Ok(text)
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

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_access_is_refused_with_the_chmod_to_run() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ibauth-key-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key.pem");
        std::fs::write(&path, SigningKey::generate().unwrap().to_pkcs8_pem()).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o601] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = SigningKey::from_pem_file(&path).unwrap_err();
            assert!(
                matches!(&err, KeyError::Exposed { mode: m, .. } if *m == mode),
                "{mode:o}: {err:?}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!("chmod 600 {}", path.display())),
                "{text}"
            );
            assert!(DecryptionKey::from_pem_file(&path).is_err(), "{mode:o}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(SigningKey::from_pem_file(&path).is_ok(), "{mode:o}");
            assert!(DecryptionKey::from_pem_file(&path).is_ok(), "{mode:o}");
        }
    }

    #[test]
    fn public_key_is_refused_as_private() {
        let key = SigningKey::generate().unwrap();
        let err = SigningKey::from_pem(&key.public_key_pem()).unwrap_err();
        assert!(matches!(err, KeyError::NotPrivate { .. }), "{err}");
    }
}
