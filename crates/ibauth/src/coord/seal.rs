//! Documents encrypted at rest: AES-256-GCM through aws-lc-rs, a random 96-bit nonce per
//! document, the identity bound in as associated data (a document copied onto another
//! identity does not open), and the key's id stored beside it so keys can be rotated: the
//! first key of a [`Keyring`] seals, every key opens, and a document sealed with an older key
//! is sealed again with the current one on its next save.
//!
//! ```
//! use ibauth::coord::{Keyring, StoreKey};
//! # fn main() -> Result<(), ibauth::coord::KeyringError> {
//! let old = StoreKey::generate()?;
//! let new = StoreKey::generate()?;
//! let sealed = Keyring::new(vec![old.clone()])?.seal("identity-1", b"{\"tokens\":1}")?;
//! // Rotated: the new key seals, the old one still opens what it sealed.
//! let ring = Keyring::new(vec![new.clone(), old.clone()])?;
//! assert_eq!(&ring.open("identity-1", &sealed.key_id, &sealed.bytes)?[..], b"{\"tokens\":1}");
//! assert!(ring.open("identity-2", &sealed.key_id, &sealed.bytes).is_err()); // bound to its identity
//! assert_eq!(ring.seal("identity-1", b"x")?.key_id, new.id());
//! # Ok(()) }
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::SealedDoc;

/// A store key's length: 32 bytes (AES-256).
pub const KEY_LEN: usize = 32;

/// What the associated data starts with: a document of another format or purpose never opens.
const AAD_PREFIX: &[u8] = b"ibauth/sealed-doc/v1\0";

/// How to make a key, for every message that asks for one.
const MAKE_ONE: &str = "make one with `ibauth store-key store.key` (a new file, mode 0600; or `head -c 32 /dev/urandom | base64 > store.key && chmod 600 store.key`), give every host of the fleet the same file, and point IBAUTH_STORE_KEY_FILE (or `store_key_file:` in the YAML) at it";

/// A key problem: none given, unreadable, malformed, or a document that does not open.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// A shared store was asked for without a key.
    #[error(
        "a shared token store needs an encryption key (tokens are never stored in clear there): {MAKE_ONE}"
    )]
    Missing,
    /// The key file cannot be read.
    #[error("store key file {}: cannot read it: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file can be read by other users.
    #[error("store key file {} is readable by other users (mode {mode:o}): run `chmod 600 {}`", .path.display(), .path.display())]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key is not 32 bytes of base64.
    #[error("store key {which} is not {KEY_LEN} bytes of base64 ({detail}); {MAKE_ONE}")]
    Malformed {
        /// Where it came from (`IBAUTH_STORE_KEY`, `line 2 of …`).
        which: String,
        /// What is wrong (never the key).
        detail: String,
    },
    /// A document is sealed with a key this process does not have.
    #[error(
        "a stored document is sealed with key {key_id}, which this process does not have (its keys: {known}); give it the same key file as the rest of the fleet (the current key first, older ones after it)"
    )]
    UnknownKey {
        /// The document's key id.
        key_id: String,
        /// The ids this process has.
        known: String,
    },
    /// A document did not open: damaged, or sealed for another identity.
    #[error(
        "a stored document sealed with key {key_id} does not open (damaged, tampered with, or copied from another identity); it is ignored and will be replaced at the next login"
    )]
    Open {
        /// Its key id.
        key_id: String,
    },
    /// The system's random generator failed.
    #[error("cannot draw random bytes for a nonce or key")]
    Random,
    /// A new key file would replace an existing one.
    #[error(
        "store key file {} exists already: a new key there would lock the fleet out of every document sealed with the old one. Choose another path, or rotate with `ibauth store-key --rotate {}`", .path.display(), .path.display()
    )]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The key file cannot be written.
    #[error("store key file {}: cannot write it: {source}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The first line of a key file ibauth writes (comments are skipped when it is read).
const KEY_FILE_HEADER: &str =
    "# ibauth store keys, one per line: the first seals, every one opens (docs/fleet.md)\n";

/// Creates `path` with mode 0600 (never over an existing file, never through a symbolic link)
/// holding `text`, flushed to disk.
fn write_new_private(path: &Path, text: &str) -> Result<(), KeyringError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyringError::Exists {
                path: path.to_owned(),
            }
        } else {
            KeyringError::Write {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyringError::Write {
            path: path.to_owned(),
            source,
        })
}

/// Replaces the key file `path` with `text`: written to a new private file beside it, then
/// renamed over it, so a crash leaves the old file or the new one, never half of either.
fn replace_private(path: &Path, text: &str) -> Result<(), KeyringError> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".new-{}", std::process::id()));
    let temp = path.with_file_name(name);
    let _ = std::fs::remove_file(&temp);
    write_new_private(&temp, text)?;
    std::fs::rename(&temp, path).map_err(|source| {
        let _ = std::fs::remove_file(&temp);
        KeyringError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

/// Whether a key file's line holds a key (not blank, not a comment).
fn is_key_line(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty() && !line.starts_with('#')
}

/// One 256-bit key.
#[derive(Clone)]
pub struct StoreKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: String,
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl StoreKey {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(b"ibauth/store-key-id/v1\0");
        ctx.update(&bytes);
        let digest = ctx.finish();
        let id = digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self {
            bytes: Zeroizing::new(bytes),
            id,
        }
    }

    /// A key from base64 (standard alphabet, padding optional, surrounding space ignored).
    pub fn from_base64(text: &str, which: &str) -> Result<Self, KeyringError> {
        let malformed = |detail: String| KeyringError::Malformed {
            which: which.to_owned(),
            detail,
        };
        let text = text.trim();
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text)
                .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
                .map_err(|_| malformed("not base64".into()))?,
        );
        let bytes: [u8; KEY_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| malformed(format!("{} bytes", decoded.len())))?;
        Ok(Self::from_bytes(bytes))
    }

    /// A new random key.
    pub fn generate() -> Result<Self, KeyringError> {
        let mut bytes = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| KeyringError::Random)?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key as base64, to write to a key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(*self.bytes))
    }

    /// Its id: 12 hex digits of a hash of the key (stored with each document; reveals
    /// nothing about the key).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn aead(&self) -> LessSafeKey {
        // 32 bytes always make an AES-256 key.
        match UnboundKey::new(&AES_256_GCM, &*self.bytes) {
            Ok(key) => LessSafeKey::new(key),
            Err(_) => unreachable!("a 32-byte key is an AES-256 key"),
        }
    }
}

/// The keys a process seals and opens documents with: the first seals, all open.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: Vec<StoreKey>,
}

fn aad(identity: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + identity.len());
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(identity.as_bytes());
    aad
}

impl Keyring {
    /// A keyring of `keys`, the current one first.
    pub fn new(keys: Vec<StoreKey>) -> Result<Self, KeyringError> {
        if keys.is_empty() {
            return Err(KeyringError::Missing);
        }
        Ok(Self { keys })
    }

    /// The keys from `IBAUTH_STORE_KEY_FILE`, else `IBAUTH_STORE_KEY` (base64, several
    /// separated by commas or spaces, the current one first), else `file` (the YAML's
    /// `store_key_file:`); [`KeyringError::Missing`] when none is set.
    pub fn from_env(file: Option<&Path>) -> Result<Self, KeyringError> {
        if let Some(path) = std::env::var_os("IBAUTH_STORE_KEY_FILE").filter(|p| !p.is_empty()) {
            return Self::from_file(Path::new(&path));
        }
        if let Ok(value) = std::env::var("IBAUTH_STORE_KEY") {
            let value = Zeroizing::new(value);
            if !value.trim().is_empty() {
                return Self::parse(&value, "IBAUTH_STORE_KEY");
            }
        }
        match file {
            Some(path) => Self::from_file(path),
            None => Err(KeyringError::Missing),
        }
    }

    /// The keys of a key file: one base64 key per line, the current one first; blank lines
    /// and `#` comments are skipped. A file other users can read is refused.
    pub fn from_file(path: &Path) -> Result<Self, KeyringError> {
        let read = |source| KeyringError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyringError::Exposed {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        if meta.len() > 64 * 1024 {
            return Err(KeyringError::Malformed {
                which: path.display().to_string(),
                detail: format!("a file of {} bytes", meta.len()),
            });
        }
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(read)?);
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let which = format!("on line {} of {}", n + 1, path.display());
            keys.push(StoreKey::from_base64(line, &which)?);
        }
        Self::new(keys)
    }

    /// Writes a new key file at `path` holding one new random key, with mode 0600; an
    /// existing file is never replaced ([`KeyringError::Exists`]). Returns the keyring it
    /// holds.
    pub fn create_file(path: &Path) -> Result<Self, KeyringError> {
        let key = StoreKey::generate()?;
        let text = Zeroizing::new(format!("{KEY_FILE_HEADER}{}\n", *key.to_base64()));
        write_new_private(path, &text)?;
        Self::new(vec![key])
    }

    /// Rotates the key file at `path`: a new random key goes first (it seals from now on),
    /// the keys it held stay after it (they still open what they sealed), comments are kept.
    /// The file is checked as [`from_file`](Self::from_file) checks it, and replaced at once
    /// (a new file renamed over it, mode 0600). Returns the keyring it holds now.
    pub fn rotate_file(path: &Path) -> Result<Self, KeyringError> {
        let old = Self::from_file(path)?;
        let text = Self::read_checked(path)?;
        let key = StoreKey::generate()?;
        let mut out = Zeroizing::new(String::with_capacity(text.len() + 64));
        let mut placed = false;
        for line in text.lines() {
            if !placed && is_key_line(line) {
                out.push_str(&key.to_base64());
                out.push('\n');
                placed = true;
            }
            out.push_str(line);
            out.push('\n');
        }
        replace_private(path, &out)?;
        let mut keys = vec![key];
        keys.extend(old.keys);
        Self::new(keys)
    }

    /// Retires the older keys of the key file at `path`: only its first (current) key is
    /// kept, with the comments. Run it once no stored document is sealed with an older key
    /// (`ibauth status` shows the document's key). Returns the keyring it holds now.
    pub fn retire_file(path: &Path) -> Result<Self, KeyringError> {
        let old = Self::from_file(path)?;
        let text = Self::read_checked(path)?;
        let mut out = Zeroizing::new(String::with_capacity(text.len()));
        let mut kept = false;
        for line in text.lines() {
            if is_key_line(line) {
                if kept {
                    continue;
                }
                kept = true;
            }
            out.push_str(line);
            out.push('\n');
        }
        replace_private(path, &out)?;
        Self::new(vec![old.current().clone()])
    }

    /// The text of a key file [`from_file`](Self::from_file) accepted.
    fn read_checked(path: &Path) -> Result<Zeroizing<String>, KeyringError> {
        std::fs::read_to_string(path)
            .map(Zeroizing::new)
            .map_err(|source| KeyringError::Read {
                path: path.to_owned(),
                source,
            })
    }

    fn parse(text: &str, which: &str) -> Result<Self, KeyringError> {
        let keys = text
            .split([',', ' ', '\n', '\t'])
            .filter(|k| !k.trim().is_empty())
            .enumerate()
            .map(|(n, k)| StoreKey::from_base64(k, &format!("{} of {which}", n + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    /// The key that seals.
    pub fn current(&self) -> &StoreKey {
        // `new` refuses an empty ring.
        &self.keys[0]
    }

    /// The ids of every key, the current one first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(StoreKey::id).collect()
    }

    /// Seals `plaintext` for `identity` with the current key.
    pub fn seal(&self, identity: &str, plaintext: &[u8]) -> Result<SealedDoc, KeyringError> {
        let key = self.current();
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| KeyringError::Random)?;
        let mut in_out = plaintext.to_vec();
        key.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(identity)),
                &mut in_out,
            )
            .map_err(|_| KeyringError::Random)?;
        let mut bytes = Vec::with_capacity(NONCE_LEN + in_out.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&in_out);
        Ok(SealedDoc {
            key_id: key.id().to_owned(),
            bytes,
            version: 0,
            generation: 0,
        })
    }

    /// Opens what [`seal`](Self::seal) sealed for `identity` with the key `key_id`.
    pub fn open(
        &self,
        identity: &str,
        key_id: &str,
        bytes: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
        let Some(key) = self.keys.iter().find(|k| k.id() == key_id) else {
            return Err(KeyringError::UnknownKey {
                key_id: key_id.chars().take(32).collect(),
                known: self.ids().join(", "),
            });
        };
        let refused = || KeyringError::Open {
            key_id: key.id().to_owned(),
        };
        let (nonce, sealed) = bytes.split_at_checked(NONCE_LEN).ok_or_else(refused)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
        let mut in_out = Zeroizing::new(sealed.to_vec());
        let len = key
            .aead()
            .open_in_place(nonce, Aad::from(aad(identity)), &mut in_out)
            .map_err(|_| refused())?
            .len();
        in_out.truncate(len);
        Ok(in_out)
    }

    /// Whether a document sealed with `key_id` should be sealed again (an older key).
    pub fn is_stale(&self, key_id: &str) -> bool {
        key_id != self.current().id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::new(vec![StoreKey::from_bytes([7; KEY_LEN])]).unwrap()
    }

    #[test]
    fn seals_and_opens_and_binds_the_identity() {
        let ring = ring();
        let sealed = ring.seal("id-a", b"hello tokens").unwrap();
        assert!(!sealed.bytes.windows(5).any(|w| w == b"hello"), "encrypted");
        assert_eq!(
            &*ring.open("id-a", &sealed.key_id, &sealed.bytes).unwrap(),
            b"hello tokens"
        );
        assert!(matches!(
            ring.open("id-b", &sealed.key_id, &sealed.bytes),
            Err(KeyringError::Open { .. })
        ));
        let again = ring.seal("id-a", b"hello tokens").unwrap();
        assert_ne!(again.bytes, sealed.bytes, "a fresh nonce every time");
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let ring = ring();
        let sealed = ring.seal("id", b"some document").unwrap();
        for i in 0..sealed.bytes.len() * 8 {
            let mut bytes = sealed.bytes.clone();
            bytes[i / 8] ^= 1 << (i % 8);
            assert!(ring.open("id", &sealed.key_id, &bytes).is_err(), "bit {i}");
        }
        assert!(ring.open("id", &sealed.key_id, &sealed.bytes[..5]).is_err());
        assert!(ring.open("id", &sealed.key_id, &[]).is_err());
    }

    #[test]
    fn rotation_opens_old_documents_and_seals_with_the_new_key() {
        let old = StoreKey::from_bytes([1; KEY_LEN]);
        let new = StoreKey::from_bytes([2; KEY_LEN]);
        let sealed = Keyring::new(vec![old.clone()])
            .unwrap()
            .seal("id", b"doc")
            .unwrap();
        let rotated = Keyring::new(vec![new.clone(), old.clone()]).unwrap();
        assert!(rotated.is_stale(&sealed.key_id));
        assert_eq!(
            &*rotated.open("id", &sealed.key_id, &sealed.bytes).unwrap(),
            b"doc"
        );
        let resealed = rotated.seal("id", b"doc").unwrap();
        assert_eq!(resealed.key_id, new.id());
        assert!(!rotated.is_stale(&resealed.key_id));
        let only_new = Keyring::new(vec![new]).unwrap();
        let err = only_new
            .open("id", &sealed.key_id, &sealed.bytes)
            .unwrap_err();
        assert!(err.to_string().contains(old.id()), "{err}");
    }

    #[test]
    fn key_files_are_created_private_never_overwritten_rotated_and_retired() {
        let dir =
            std::env::temp_dir().join(format!("ibauth-keyfile-rotation-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.key");
        let first = Keyring::create_file(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(Keyring::from_file(&path).unwrap().ids(), first.ids());
        let before = std::fs::read(&path).unwrap();
        let err = Keyring::create_file(&path).unwrap_err();
        assert!(matches!(err, KeyringError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("--rotate"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "left as it was");

        let sealed = first.seal("id", b"doc").unwrap();
        let rotated = Keyring::rotate_file(&path).unwrap();
        let read = Keyring::from_file(&path).unwrap();
        assert_eq!(read.ids(), rotated.ids());
        assert_eq!(read.ids().len(), 2);
        assert_eq!(
            read.ids()[1],
            first.current().id(),
            "the old key kept second"
        );
        assert_eq!(
            &*read.open("id", &sealed.key_id, &sealed.bytes).unwrap(),
            b"doc"
        );
        assert!(read.is_stale(&sealed.key_id));
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with("# ibauth store keys")
        );

        let retired = Keyring::retire_file(&path).unwrap();
        let read = Keyring::from_file(&path).unwrap();
        assert_eq!(read.ids(), vec![rotated.current().id()]);
        assert_eq!(retired.ids(), read.ids());
        assert!(read.open("id", &sealed.key_id, &sealed.bytes).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "still private after replacing");
        }
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary left"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keys_parse_from_base64_and_never_show() {
        let key = StoreKey::generate().unwrap();
        let text = key.to_base64();
        let back = StoreKey::from_base64(&text, "test").unwrap();
        assert_eq!(back.id(), key.id());
        assert_eq!(key.id().len(), 12);
        let shown = format!("{key:?} {:?}", Keyring::new(vec![key.clone()]).unwrap());
        assert!(!shown.contains(text.as_str()), "{shown}");
        let short = StoreKey::from_base64("c2hvcnQ=", "IBAUTH_STORE_KEY").unwrap_err();
        assert!(short.to_string().contains("5 bytes"), "{short}");
        assert!(short.to_string().contains("ibauth store-key"), "{short}");
        assert!(StoreKey::from_base64("!!!", "x").is_err());
        let two = Keyring::parse(
            &format!("{}, {}", *text, *StoreKey::generate().unwrap().to_base64()),
            "env",
        )
        .unwrap();
        assert_eq!(two.ids().len(), 2);
        assert_eq!(two.current().id(), key.id());
        assert!(matches!(Keyring::new(vec![]), Err(KeyringError::Missing)));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ibauth-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.key");
        let key = StoreKey::generate().unwrap();
        std::fs::write(&path, format!("# current\n{}\n\n", *key.to_base64())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Keyring::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Keyring::from_file(&path).unwrap().current().id(), key.id());
        std::fs::write(&path, "not a key\n").unwrap();
        let err = Keyring::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
