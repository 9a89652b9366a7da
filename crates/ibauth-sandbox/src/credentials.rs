//! A ready-to-use credential set for the sandbox: an RSA key pair registered under a fixed
//! client id, and a config file that points `ibauth` (or the Python ibauth) at the sandbox.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ibauth::SigningKey;

use crate::{ClientRegistration, SandboxError};

/// Client id of the generated credential set.
pub const SANDBOX_CLIENT_ID: &str = "SANDBOXCLIENT";
/// Key id of the generated credential set.
pub const SANDBOX_KEY_ID: &str = "main";
/// The sandbox user (the `credential`).
pub const SANDBOX_CREDENTIAL: &str = "sandboxuser";

const PRIVATE_KEY_FILE: &str = "private_key.pem";
const PUBLIC_KEY_FILE: &str = "public_key.pem";
const CA_FILE: &str = "ca.pem";
const CONFIG_FILE: &str = "config.yaml";

/// Keys and files of a sandbox credential set in one folder.
#[derive(Debug, Clone)]
pub struct CredentialSet {
    dir: PathBuf,
    key: SigningKey,
}

impl CredentialSet {
    /// Reuses `dir/private_key.pem` if present (so a restarted sandbox keeps its users'
    /// credentials), otherwise generates one; writes `public_key.pem` beside it.
    pub fn load_or_create(dir: &Path) -> Result<Self, SandboxError> {
        std::fs::create_dir_all(dir).map_err(|source| SandboxError::File {
            what: "cannot create",
            path: dir.to_owned(),
            source,
        })?;
        let key_path = dir.join(PRIVATE_KEY_FILE);
        let key = if key_path.exists() {
            SigningKey::from_pem_file(&key_path)?
        } else {
            let key = SigningKey::generate()?;
            write_private(&key_path, key.to_pkcs8_pem().as_bytes(), 0o600)?;
            key
        };
        write_private(
            &dir.join(PUBLIC_KEY_FILE),
            key.public_key_pem().as_bytes(),
            0o644,
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            key,
        })
    }

    /// The set's signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The registration to give the sandbox.
    pub fn registration(&self) -> ClientRegistration {
        ClientRegistration::new(SANDBOX_CLIENT_ID)
            .key(SANDBOX_KEY_ID, &self.key)
            .credential(SANDBOX_CREDENTIAL)
    }

    /// Writes `config.yaml` (and `ca.pem` for HTTPS) pointing at `base_url`; returns its path.
    pub fn write_config(
        &self,
        base_url: &str,
        ca_pem: Option<&str>,
    ) -> Result<PathBuf, SandboxError> {
        let mut yaml = format!(
            "# Written by `ibauth sandbox`: credentials registered with the local sandbox.\n\
             # The first five keys are the Python ibauth's; the rest point at the sandbox.\n\
             client_id: {SANDBOX_CLIENT_ID}\n\
             client_key_id: {SANDBOX_KEY_ID}\n\
             credential: {SANDBOX_CREDENTIAL}\n\
             private_key_file: {PRIVATE_KEY_FILE}\n\
             domain: api.ibkr.com\n\
             base_url: {base_url}\n\
             public_ip: 127.0.0.1\n"
        );
        if let Some(ca) = ca_pem {
            write_private(&self.dir.join(CA_FILE), ca.as_bytes(), 0o644)?;
            yaml.push_str(&format!("ca_file: {CA_FILE}\n"));
        }
        let path = self.dir.join(CONFIG_FILE);
        write_private(&path, yaml.as_bytes(), 0o600)?;
        Ok(path)
    }
}

/// Writes via a temporary file and a rename, so a reader never sees half a file.
fn write_private(path: &Path, contents: &[u8], mode: u32) -> Result<(), SandboxError> {
    let err = |source| SandboxError::File {
        what: "cannot write",
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
