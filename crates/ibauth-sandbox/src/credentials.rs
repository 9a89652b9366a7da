//! A ready-to-use credential set for the sandbox: an RSA key pair registered under a fixed
//! client id, and a config file that points `ibauth` (or the Python ibauth) at the sandbox.

use std::path::{Path, PathBuf};

use ibauth::SigningKey;
use ibauth::oauth1a::DhGroup;

use crate::dh_primes::{dhparam_pem, prime_for};
use crate::files::{create_dir, load_or_generate, write_private};
use crate::{ClientRegistration, ConsumerRegistration, SandboxError};

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
const SIGNATURE_KEY_FILE: &str = "signature_key.pem";
const ENCRYPTION_KEY_FILE: &str = "encryption_key.pem";
const DH_PARAM_FILE: &str = "dhparam.pem";
/// Where the configs written here keep their tokens: beside them, never in the user's real
/// token file (`~/.local/state/ibauth/tokens.json`). Relative paths in a config resolve
/// against its folder.
const TOKEN_FILE: &str = "tokens.json";

/// Consumer key of the generated OAuth 1.0a credential set (nine characters, like IBKR's).
pub const SANDBOX_CONSUMER_KEY: &str = "SANDBOXCK";
/// The password of [`SANDBOX_CREDENTIAL`] on the sandbox's authorisation page.
pub const SANDBOX_PASSWORD: &str = "sandbox";

/// Keys and files of a sandbox credential set in one folder.
#[derive(Debug, Clone)]
pub struct CredentialSet {
    dir: PathBuf,
    key: SigningKey,
    signature_key: SigningKey,
    encryption_key: SigningKey,
    dh_prime: &'static str,
    dh: DhGroup,
}

impl CredentialSet {
    /// Reuses `dir/private_key.pem` if present (so a restarted sandbox keeps its users'
    /// credentials), otherwise generates one; writes `public_key.pem` beside it. The OAuth
    /// 1.0a consumers get one of [`SANDBOX_DH_PRIMES`](crate::SANDBOX_DH_PRIMES) (the same
    /// for the same signature key), written to `dhparam.pem`. No file is written or read
    /// through a symbolic link.
    pub fn load_or_create(dir: &Path) -> Result<Self, SandboxError> {
        create_dir(dir)?;
        let key = load_or_generate(&dir.join(PRIVATE_KEY_FILE))?;
        write_private(
            &dir.join(PUBLIC_KEY_FILE),
            key.public_key_pem().as_bytes(),
            0o644,
        )?;
        let signature_key = load_or_generate(&dir.join(SIGNATURE_KEY_FILE))?;
        let encryption_key = load_or_generate(&dir.join(ENCRYPTION_KEY_FILE))?;
        let dh_prime = prime_for(&signature_key.public_key_der());
        let dh = DhGroup::from_hex(dh_prime, 2).map_err(SandboxError::DhGroup)?;
        write_private(
            &dir.join(DH_PARAM_FILE),
            dhparam_pem(dh_prime).as_bytes(),
            0o644,
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            key,
            signature_key,
            encryption_key,
            dh_prime,
            dh,
        })
    }

    /// The DH prime of the set's consumers (hex; generator 2), as in its `dhparam.pem`.
    pub fn dh_prime_hex(&self) -> &'static str {
        self.dh_prime
    }

    /// The set's signing key.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The token file the written configs name (`token_file`), in the folder.
    pub fn token_file(&self) -> PathBuf {
        self.dir.join(TOKEN_FILE)
    }

    /// The registration to give the sandbox.
    pub fn registration(&self) -> ClientRegistration {
        ClientRegistration::new(SANDBOX_CLIENT_ID)
            .key(SANDBOX_KEY_ID, &self.key)
            .credential(SANDBOX_CREDENTIAL)
    }

    /// The OAuth 1.0a consumer registration to give the sandbox.
    pub fn consumer_registration(&self) -> ConsumerRegistration {
        ConsumerRegistration::new(
            SANDBOX_CONSUMER_KEY,
            &self.signature_key,
            &self.encryption_key,
        )
        .dh_group(self.dh.clone())
    }

    /// IBKR's demo consumer `TESTCONS` (realm `test_realm`) for the third-party flow, with this
    /// set's keys; out-of-band callback.
    pub fn third_party_registration(&self) -> ConsumerRegistration {
        ConsumerRegistration::new(
            ibauth::oauth1a::TEST_CONSUMER,
            &self.signature_key,
            &self.encryption_key,
        )
        .third_party(None)
        .dh_group(self.dh.clone())
    }

    /// Writes `config-third-party.yaml`: `TESTCONS` with this set's keys, the sandbox's REST
    /// base and authorisation page (log in there as [`SANDBOX_CREDENTIAL`] /
    /// [`SANDBOX_PASSWORD`]); returns its path.
    pub fn write_third_party_config(
        &self,
        base_url: &str,
        ca_pem: Option<&str>,
    ) -> Result<PathBuf, SandboxError> {
        let mut yaml = format!(
            "# Written by `ibauth sandbox`: OAuth 1.0a third party with IBKR's demo consumer.\n\
             # ibauth --config THIS --third-party login   (log in as {SANDBOX_CREDENTIAL} / {SANDBOX_PASSWORD})\n\
             # Tokens stay beside this file, out of your real token file.\n\
             token_file: {TOKEN_FILE}\n\
             oauth1a:\n  consumer_key: TESTCONS\n  realm: test_realm\n  signature_key_file: {SIGNATURE_KEY_FILE}\n  encryption_key_file: {ENCRYPTION_KEY_FILE}\n  dh_param_file: {DH_PARAM_FILE}\n  rest_url: {base_url}/v1/api/\n  authorize_url: {base_url}/authorize\n"
        );
        if ca_pem.is_some() {
            yaml.push_str(&format!("  ca_file: {CA_FILE}\n"));
        }
        let path = self.dir.join("config-third-party.yaml");
        write_private(&path, yaml.as_bytes(), 0o600)?;
        Ok(path)
    }

    /// Writes `config.yaml` (and `ca.pem` for HTTPS) pointing at `base_url`; returns its path.
    /// With `oauth1a` = (access token, encrypted secret), adds an `oauth1a:` section.
    pub fn write_config_with(
        &self,
        base_url: &str,
        ca_pem: Option<&str>,
        oauth1a: Option<(&str, &str)>,
    ) -> Result<PathBuf, SandboxError> {
        let path = self.write_config(base_url, ca_pem)?;
        let Some((token, secret)) = oauth1a else {
            return Ok(path);
        };
        let ws = base_url.replacen("http", "ws", 1);
        let mut section = format!(
            "oauth1a:\n  consumer_key: {SANDBOX_CONSUMER_KEY}\n  realm: limited_poa\n  access_token: \"{token}\"\n  access_token_secret: \"{secret}\"\n  signature_key_file: {SIGNATURE_KEY_FILE}\n  encryption_key_file: {ENCRYPTION_KEY_FILE}\n  dh_param_file: {DH_PARAM_FILE}\n  rest_url: {base_url}/v1/api/\n  ws_url: {ws}/v1/api/ws\n"
        );
        if ca_pem.is_some() {
            section.push_str(&format!("  ca_file: {CA_FILE}\n"));
        }
        let mut text = std::fs::read_to_string(&path).map_err(|source| SandboxError::File {
            what: "cannot read",
            path: path.clone(),
            source,
        })?;
        text.push_str(&section);
        write_private(&path, text.as_bytes(), 0o600)?;
        Ok(path)
    }

    /// Writes `config.yaml` (and `ca.pem` for HTTPS) pointing at `base_url`, with
    /// `token_file: tokens.json` beside it; returns its path.
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
             public_ip: 127.0.0.1\n\
             # Tokens stay beside this file, out of your real token file.\n\
             token_file: {TOKEN_FILE}\n"
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
