//! OAuth 1.0a settings from the `oauth1a:` section of the YAML file, `IBAUTH_OAUTH1A_*`
//! variables, and ibind's own `IBIND_*` variables (so an ibind user switches with no
//! reconfiguration). Later sources override earlier ones: file, `IBIND_*`, `IBAUTH_OAUTH1A_*`.
//!
//! `timeout` (seconds, every call and the WebSocket handshake) follows the same rule, and when
//! none of those sets it, the top-level setting shared with OAuth 2.0 applies (`timeout:` in
//! the file, overridden by `IBAUTH_TIMEOUT`), then the 10 s default. So, first found wins:
//! `IBAUTH_OAUTH1A_TIMEOUT`, `oauth1a.timeout`, `IBAUTH_TIMEOUT`, top-level `timeout`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use super::{DhGroup, Oauth1aConfig};
use crate::config::{DEFAULT_CONFIG_FILE, did_you_mean, parse_timeout};
use crate::error::ConfigError;
use crate::key::{DecryptionKey, SigningKey};
use crate::pem;

/// Every setting: YAML key in the `oauth1a:` section, our variable, ibind's variable.
const SETTINGS: &[(&str, &str, &str)] = &[
    (
        "consumer_key",
        "IBAUTH_OAUTH1A_CONSUMER_KEY",
        "IBIND_OAUTH1A_CONSUMER_KEY",
    ),
    ("realm", "IBAUTH_OAUTH1A_REALM", "IBIND_OAUTH1A_REALM"),
    (
        "access_token",
        "IBAUTH_OAUTH1A_ACCESS_TOKEN",
        "IBIND_OAUTH1A_ACCESS_TOKEN",
    ),
    (
        "access_token_secret",
        "IBAUTH_OAUTH1A_ACCESS_TOKEN_SECRET",
        "IBIND_OAUTH1A_ACCESS_TOKEN_SECRET",
    ),
    (
        "signature_key",
        "IBAUTH_OAUTH1A_SIGNATURE_KEY",
        "IBIND_OAUTH1A_SIGNATURE_KEY",
    ),
    (
        "signature_key_file",
        "IBAUTH_OAUTH1A_SIGNATURE_KEY_FILE",
        "IBIND_OAUTH1A_SIGNATURE_KEY_FP",
    ),
    (
        "encryption_key",
        "IBAUTH_OAUTH1A_ENCRYPTION_KEY",
        "IBIND_OAUTH1A_ENCRYPTION_KEY",
    ),
    (
        "encryption_key_file",
        "IBAUTH_OAUTH1A_ENCRYPTION_KEY_FILE",
        "IBIND_OAUTH1A_ENCRYPTION_KEY_FP",
    ),
    (
        "dh_prime",
        "IBAUTH_OAUTH1A_DH_PRIME",
        "IBIND_OAUTH1A_DH_PRIME",
    ),
    ("dh_param_file", "IBAUTH_OAUTH1A_DH_PARAM_FILE", ""),
    (
        "dh_generator",
        "IBAUTH_OAUTH1A_DH_GENERATOR",
        "IBIND_OAUTH1A_DH_GENERATOR",
    ),
    (
        "rest_url",
        "IBAUTH_OAUTH1A_REST_URL",
        "IBIND_OAUTH1A_REST_URL",
    ),
    ("ws_url", "IBAUTH_OAUTH1A_WS_URL", "IBIND_OAUTH1A_WS_URL"),
    ("ca_file", "IBAUTH_OAUTH1A_CA_FILE", ""),
    ("callback_url", "IBAUTH_OAUTH1A_CALLBACK_URL", ""),
    ("authorize_url", "IBAUTH_OAUTH1A_AUTHORIZE_URL", ""),
    ("timeout", "IBAUTH_OAUTH1A_TIMEOUT", ""),
];

/// The longest timeout accepted, as for OAuth 2.0's `timeout`.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Whether the environment asks for OAuth 1.0a (any `IBAUTH_OAUTH1A_*`/`IBIND_OAUTH1A_*`
/// setting, or `IBIND_USE_OAUTH=true`).
pub fn requested_by_env<K: AsRef<str>, V: AsRef<str>>(env: &[(K, V)]) -> bool {
    env.iter().any(|(k, v)| {
        let (k, v) = (k.as_ref(), v.as_ref());
        (k.starts_with("IBAUTH_OAUTH1A_") || k.starts_with("IBIND_OAUTH1A_")) && !v.is_empty()
            || k == "IBIND_USE_OAUTH" && matches!(v.to_ascii_lowercase().as_str(), "true" | "1")
    })
}

/// Whether a YAML config file has an `oauth1a:` section.
pub fn file_has_section(path: &Path) -> bool {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Probe {
        oauth1a: Option<serde::de::IgnoredAny>,
    }
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_saphyr::from_str::<Probe>(&t).ok())
        .is_some_and(|p| p.oauth1a.is_some())
}

/// The settings from the file, then `IBIND_*`, then `IBAUTH_OAUTH1A_*`.
fn raw_settings<K: AsRef<str>, V: AsRef<str>>(
    path: Option<&Path>,
    env: &[(K, V)],
) -> Result<Raw, ConfigError> {
    let var = |name: &str| {
        env.iter()
            .find(|(k, v)| k.as_ref() == name && !v.as_ref().is_empty())
            .map(|(_, v)| v.as_ref().to_owned())
    };
    let named = path
        .map(Path::to_path_buf)
        .or_else(|| var("IBAUTH_CONFIG").map(PathBuf::from));
    let mut raw = Raw::default();
    let file = match named {
        Some(p) => Some(p),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
    };
    if let Some(file) = &file {
        read_yaml(file, &mut raw)?;
    }
    if let Some(v) = var("IBAUTH_TIMEOUT") {
        raw.fallback_timeout = Some((v, "IBAUTH_TIMEOUT".to_owned()));
    }
    let cwd = PathBuf::from(".");
    for (key, ours, ibind) in SETTINGS {
        if !ibind.is_empty()
            && let Some(v) = var(ibind)
        {
            raw.set(key, v, &cwd);
        }
        if let Some(v) = var(ours) {
            raw.set(key, v, &cwd);
        }
    }
    Ok(raw)
}

/// Raw settings (text as written, with the folder relative paths resolve against).
#[derive(Debug, Default)]
struct Raw {
    values: BTreeMap<&'static str, (String, PathBuf)>,
    /// The top-level `timeout` (shared with OAuth 2.0), used when the section sets none: the
    /// text and where it came from (for errors).
    fallback_timeout: Option<(String, String)>,
    warnings: Vec<String>,
}

impl Raw {
    fn set(&mut self, key: &'static str, value: String, base: &Path) {
        if !value.trim().is_empty() {
            self.values.insert(key, (value, base.to_owned()));
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.trim())
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        self.values.get(key).map(|(v, base)| base.join(v.trim()))
    }
}

/// Loads `path` (or `$IBAUTH_CONFIG`, or `./config.yaml` if present), then `IBIND_*` and
/// `IBAUTH_OAUTH1A_*` variables from `env`.
pub fn load_with_env<K: AsRef<str>, V: AsRef<str>>(
    path: Option<&Path>,
    env: &[(K, V)],
) -> Result<Oauth1aConfig, ConfigError> {
    let raw = raw_settings(path, env)?;
    for warning in &raw.warnings {
        tracing::warn!("{warning}");
    }
    build(&raw)
}

/// The files the OAuth 1.0a settings name (signature key, encryption key, DH parameters), with
/// the setting that names each — resolved as [`load_with_env`] resolves them. For diagnostics:
/// nothing is read from the files.
pub fn files_with_env<K: AsRef<str>, V: AsRef<str>>(
    path: Option<&Path>,
    env: &[(K, V)],
) -> Result<Vec<(&'static str, PathBuf)>, ConfigError> {
    let raw = raw_settings(path, env)?;
    let mut files = Vec::new();
    for (inline, file) in [
        ("signature_key", "signature_key_file"),
        ("encryption_key", "encryption_key_file"),
    ] {
        match raw.get(inline) {
            // Inline PEM: no file to look at.
            Some(text) if text.contains("-----BEGIN") => {}
            Some(_) => files.extend(raw.path(inline).map(|p| (inline, p))),
            None => files.extend(raw.path(file).map(|p| (file, p))),
        }
    }
    if raw.get("dh_prime").is_none() {
        files.extend(raw.path("dh_param_file").map(|p| ("dh_param_file", p)));
    }
    Ok(files)
}

/// As [`load_with_env`] with the process environment.
pub fn load(path: Option<&Path>) -> Result<Oauth1aConfig, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_with_env(path, &env)
}

fn read_yaml(path: &Path, raw: &mut Raw) -> Result<(), ConfigError> {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct File {
        oauth1a: Option<BTreeMap<String, String>>,
        timeout: Option<String>,
    }
    let text = crate::config::read_file(path)?;
    let file: File = crate::config::parse_yaml(&text, path)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    for (key, value) in file.oauth1a.unwrap_or_default() {
        match SETTINGS.iter().find(|(k, _, _)| *k == key) {
            Some((k, _, _)) => raw.set(k, value, &dir),
            None => raw.warnings.push(
                match did_you_mean(&key, SETTINGS.iter().map(|(k, _, _)| *k)) {
                    Some(known) => format!(
                        "unknown key `oauth1a.{key}` in {} is ignored; did you mean `{known}`?",
                        path.display()
                    ),
                    None => format!(
                        "unknown key `oauth1a.{key}` in {} is ignored",
                        path.display()
                    ),
                },
            ),
        }
    }
    if let Some(v) = file.timeout.filter(|v| !v.trim().is_empty()) {
        raw.fallback_timeout = Some((v, format!("timeout (in {})", path.display())));
    }
    Ok(())
}

fn missing(key: &'static str) -> ConfigError {
    let env = SETTINGS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, e, _)| *e)
        .unwrap_or("IBAUTH_OAUTH1A_…");
    // Named as it is written in the file: inside the `oauth1a:` section.
    let key = match key {
        "consumer_key" => "oauth1a.consumer_key",
        "access_token" => "oauth1a.access_token",
        "access_token_secret" => "oauth1a.access_token_secret",
        "signature_key_file" => "oauth1a.signature_key_file",
        "encryption_key_file" => "oauth1a.encryption_key_file",
        "dh_prime" => "oauth1a.dh_prime",
        other => other,
    };
    ConfigError::Missing { key, env }
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: format!("oauth1a.{key}"),
        reason: reason.into(),
    }
}

/// A key given inline (PEM text) or as a file.
fn key_text(
    raw: &Raw,
    inline: &'static str,
    file: &'static str,
) -> Result<(String, String), ConfigError> {
    if let Some(text) = raw.get(inline) {
        if text.contains("-----BEGIN") {
            return Ok((text.to_owned(), format!("oauth1a.{inline}")));
        }
        // ibind's *_KEY variables may hold a path as well.
        let path = raw.path(inline).unwrap_or_default();
        return read_key(&path).map(|t| (t, path.display().to_string()));
    }
    let path = raw.path(file).ok_or_else(|| missing(file))?;
    read_key(&path).map(|t| (t, path.display().to_string()))
}

/// A private key file: refused if other users can access it (see [`crate::key`]).
fn read_key(path: &Path) -> Result<String, ConfigError> {
    Ok(crate::key::read_key_file(path)?)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| {
        ConfigError::Key(match source.kind() {
            std::io::ErrorKind::NotFound => crate::error::KeyError::NotFound {
                path: path.to_owned(),
            },
            _ => crate::error::KeyError::Unreadable {
                path: path.to_owned(),
                source,
            },
        })
    })
}

/// What both flows read: the consumer, its keys, the DH group, URLs and CA.
struct Consumer {
    consumer_key: String,
    signature_key: SigningKey,
    encryption_key: DecryptionKey,
    dh: DhGroup,
}

fn consumer(raw: &Raw) -> Result<Consumer, ConfigError> {
    let consumer_key = raw
        .get("consumer_key")
        .ok_or_else(|| missing("consumer_key"))?
        .to_owned();
    let (signature_pem, _) = key_text(raw, "signature_key", "signature_key_file")?;
    let signature_key = SigningKey::from_pem(&signature_pem)?;
    let (encryption_pem, _) = key_text(raw, "encryption_key", "encryption_key_file")?;
    let encryption_key = DecryptionKey::from_pem(&encryption_pem)?;
    let generator = match raw.get("dh_generator") {
        Some(g) => g
            .parse::<u32>()
            .map_err(|_| invalid("dh_generator", "must be a small integer, normally 2"))?,
        None => 2,
    };
    let dh = match (raw.get("dh_prime"), raw.path("dh_param_file")) {
        (Some(prime), _) if looks_hex(prime) => {
            DhGroup::from_hex(prime, generator).map_err(|e| invalid("dh_prime", e.to_string()))?
        }
        // ibind users sometimes point the prime at the dhparam.pem file itself.
        (Some(_), _) => dh_param_file(&raw.path("dh_prime").unwrap_or_default(), generator)?,
        (None, Some(path)) => dh_param_file(&path, generator)?,
        (None, None) => return Err(missing("dh_prime")),
    };
    Ok(Consumer {
        consumer_key,
        signature_key,
        encryption_key,
        dh,
    })
}

/// The timeout in force: the section's own (file, then variables), else the top-level one.
fn timeout(raw: &Raw) -> Result<Option<Duration>, ConfigError> {
    let (text, key) = match (raw.get("timeout"), &raw.fallback_timeout) {
        (Some(text), _) => (text, "oauth1a.timeout".to_owned()),
        (None, Some((text, key))) => (text.as_str(), key.clone()),
        (None, None) => return Ok(None),
    };
    let timeout = parse_timeout(&key, text)?;
    if timeout > MAX_TIMEOUT {
        return Err(ConfigError::Invalid {
            key,
            reason: "must be between 0 and 600 seconds (e.g. `timeout: 10`)".into(),
        });
    }
    Ok(Some(timeout))
}

/// Realm, URLs, timeout and CA over a config.
fn apply(raw: &Raw, mut config: Oauth1aConfig) -> Result<Oauth1aConfig, ConfigError> {
    if let Some(timeout) = timeout(raw)? {
        config = config.timeout(timeout);
    }
    if let Some(realm) = raw.get("realm") {
        config = config.realm(realm);
    }
    if let Some(url) = raw.get("rest_url") {
        config = config.rest_url(url)?;
    }
    if let Some(url) = raw.get("ws_url") {
        config = config.ws_url(url)?;
    }
    if let Some(path) = raw.path("ca_file") {
        let pem = std::fs::read(&path)
            .map_err(|e| invalid("ca_file", format!("cannot read {}: {e}", path.display())))?;
        config = config.ca_pem(pem);
    }
    Ok(config)
}

fn build(raw: &Raw) -> Result<Oauth1aConfig, ConfigError> {
    // Reported in the order a user fills them in.
    raw.get("consumer_key")
        .ok_or_else(|| missing("consumer_key"))?;
    let access_token = raw
        .get("access_token")
        .ok_or_else(|| missing("access_token"))?;
    let secret = raw
        .get("access_token_secret")
        .ok_or_else(|| missing("access_token_secret"))?;
    let c = consumer(raw)?;
    let config = Oauth1aConfig::new(
        c.consumer_key,
        access_token,
        SecretString::from(secret.to_owned()),
        c.signature_key,
        c.encryption_key,
        c.dh,
    );
    apply(raw, config)
}

/// Loads the third-party settings (the `oauth1a:` section without an access token, plus
/// `callback_url` and `authorize_url`), from `path` and the environment as [`load_with_env`].
pub fn load_third_party_with_env<K: AsRef<str>, V: AsRef<str>>(
    path: Option<&Path>,
    env: &[(K, V)],
) -> Result<super::ThirdPartyConfig, ConfigError> {
    let raw = raw_settings(path, env)?;
    for warning in &raw.warnings {
        tracing::warn!("{warning}");
    }
    let c = consumer(&raw)?;
    // The grant fills the token in later; the template only carries the consumer's settings.
    let template = apply(
        &raw,
        Oauth1aConfig::new(
            c.consumer_key,
            "",
            SecretString::from(String::new()),
            c.signature_key,
            c.encryption_key,
            c.dh,
        ),
    )?;
    let mut config = super::ThirdPartyConfig::from_template(template);
    if let Some(url) = raw.get("callback_url") {
        config = config.callback_url(url)?;
    }
    if let Some(url) = raw.get("authorize_url") {
        config = config.authorize_url(url)?;
    }
    Ok(config)
}

/// As [`load_third_party_with_env`] with the process environment.
pub fn load_third_party(path: Option<&Path>) -> Result<super::ThirdPartyConfig, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_third_party_with_env(path, &env)
}

fn looks_hex(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c.is_whitespace() || c == ':')
}

/// Reads `dhparam.pem` (PKCS#3 `DHParameter ::= SEQUENCE { prime INTEGER, base INTEGER, … }`).
fn dh_param_file(path: &Path, fallback_generator: u32) -> Result<DhGroup, ConfigError> {
    let text = read(path)?;
    let bad = |why: &str| invalid("dh_param_file", format!("{}: {why}", path.display()));
    let block = pem::first_block(&text).map_err(|e| bad(&e.to_string()))?;
    if block.label != "DH PARAMETERS" {
        return Err(bad(
            "expected `-----BEGIN DH PARAMETERS-----` (openssl dhparam)",
        ));
    }
    let (prime, generator) =
        parse_dhparam(&block.der).ok_or_else(|| bad("not a PKCS#3 DHParameter"))?;
    let generator = if generator == 0 {
        fallback_generator
    } else {
        generator
    };
    DhGroup::from_be_bytes(&prime, generator).map_err(|e| bad(&e.to_string()))
}

/// `SEQUENCE { INTEGER p, INTEGER g, … }` → (p bytes, g).
pub(crate) fn parse_dhparam(der: &[u8]) -> Option<(Vec<u8>, u32)> {
    let (tag, body, _) = der_item(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, p, rest) = der_item(body)?;
    if tag != 0x02 {
        return None;
    }
    let (tag, g, _) = der_item(rest)?;
    if tag != 0x02 || g.len() > 4 {
        return None;
    }
    let g = g.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
    Some((p.to_vec(), g))
}

/// One DER item: (tag, contents, rest).
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole OAuth 1.0a configuration from variables (inline keys), with `extra` over it.
    fn env(extra: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        static PEM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let pem = PEM.get_or_init(|| SigningKey::generate().unwrap().to_pkcs8_pem());
        let mut env = vec![
            ("IBAUTH_OAUTH1A_CONSUMER_KEY", "ABCDEFGHI".to_owned()),
            (
                "IBAUTH_OAUTH1A_ACCESS_TOKEN",
                "0123456789abcdef0123".to_owned(),
            ),
            ("IBAUTH_OAUTH1A_ACCESS_TOKEN_SECRET", "c2VjcmV0".to_owned()),
            ("IBAUTH_OAUTH1A_SIGNATURE_KEY", pem.clone()),
            ("IBAUTH_OAUTH1A_ENCRYPTION_KEY", pem.clone()),
            (
                "IBAUTH_OAUTH1A_DH_PRIME",
                super::super::RFC3526_PRIME_2048.to_owned(),
            ),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    }

    fn yaml(name: &str, text: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ibauth-o1a-unit-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn timeout_of(file: Option<&Path>, extra: &[(&'static str, &str)]) -> Duration {
        load_with_env(file, &env(extra)).unwrap().timeout_value()
    }

    #[test]
    fn timeout_from_the_section_its_variable_or_the_top_level_setting() {
        let s = Duration::from_secs;
        assert_eq!(timeout_of(None, &[]), crate::config::DEFAULT_TIMEOUT);
        let section = yaml("section", "oauth1a:\n  timeout: 1\n");
        assert_eq!(timeout_of(Some(&section), &[]), s(1));
        let top = yaml("top", "timeout: 2.5\noauth1a:\n  realm: limited_poa\n");
        assert_eq!(timeout_of(Some(&top), &[]), Duration::from_millis(2500));
        assert_eq!(timeout_of(None, &[("IBAUTH_TIMEOUT", "4")]), s(4));
        let both = yaml("both", "timeout: 2\noauth1a:\n  timeout: 3\n");
        // The section's own beats the shared one, wherever the shared one comes from …
        assert_eq!(timeout_of(Some(&both), &[]), s(3));
        assert_eq!(timeout_of(Some(&both), &[("IBAUTH_TIMEOUT", "4")]), s(3));
        // … and its variable beats the section, as every IBAUTH_OAUTH1A_* does.
        assert_eq!(
            timeout_of(Some(&both), &[("IBAUTH_OAUTH1A_TIMEOUT", "5")]),
            s(5)
        );
        // The shared variable beats the shared file setting, as for OAuth 2.0.
        assert_eq!(timeout_of(Some(&top), &[("IBAUTH_TIMEOUT", "4")]), s(4));
    }

    #[test]
    fn a_bad_timeout_names_the_setting() {
        for (file, extra, key) in [
            ("oauth1a:\n  timeout: soon\n", None, "oauth1a.timeout"),
            ("oauth1a:\n  timeout: 601\n", None, "oauth1a.timeout"),
            ("timeout: -1\n", None, "timeout (in "),
            ("", Some(("IBAUTH_TIMEOUT", "0")), "IBAUTH_TIMEOUT"),
        ] {
            let path = yaml("bad", file);
            let extra: Vec<(&'static str, &str)> = extra.into_iter().collect();
            let err = load_with_env(Some(&path), &env(&extra)).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, .. } if k.starts_with(key)),
                "{file:?} {extra:?}: {err}"
            );
            assert!(err.to_string().contains("seconds"), "{err}");
        }
    }

    #[test]
    fn unknown_keys_in_the_section_get_a_did_you_mean() {
        let path = yaml(
            "typo",
            "oauth1a:\n  timout: 3\n  relm: test_realm\n  zzzzzz: 1\n",
        );
        let raw = raw_settings(Some(&path), &env(&[])).unwrap();
        let warning = |key: &str| {
            raw.warnings
                .iter()
                .find(|w| w.contains(&format!("`oauth1a.{key}`")))
                .unwrap_or_else(|| panic!("no warning about {key}: {:?}", raw.warnings))
                .clone()
        };
        assert!(warning("timout").ends_with("did you mean `timeout`?"));
        assert!(warning("relm").ends_with("did you mean `realm`?"));
        assert!(!warning("zzzzzz").contains("did you mean"));
        // Ignored, not guessed: the typo does not set the timeout.
        assert_eq!(
            build(&raw).unwrap().timeout_value(),
            crate::config::DEFAULT_TIMEOUT
        );
    }
}
