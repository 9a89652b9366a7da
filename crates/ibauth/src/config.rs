//! Configuration: a YAML file (the Python `ibauth` keys work unchanged), `IBAUTH_*` environment
//! variables over it, and a builder for code. Everything is checked in [`ConfigBuilder::build`],
//! so a bad setting fails before anything is sent.
//!
//! ```no_run
//! # fn main() -> Result<(), ibauth::ConfigError> {
//! // ./config.yaml (or $IBAUTH_CONFIG), overridden by IBAUTH_* variables:
//! let config = ibauth::Config::load(None)?;
//!
//! // or entirely in code:
//! let config = ibauth::Config::builder()
//!     .client_id("TESTCLIENT")
//!     .client_key_id("main")
//!     .credential("myusername")
//!     .private_key_file("private_key.pem")
//!     .domain("5.api.ibkr.com")
//!     .build()?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use crate::error::ConfigError;
use crate::key::SigningKey;

/// The default API host.
pub const DEFAULT_DOMAIN: &str = "api.ibkr.com";
/// The default timeout of every call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The config file used when none is named.
pub const DEFAULT_CONFIG_FILE: &str = "config.yaml";
/// Where the public IP is looked up, in order, when `public_ip` is not set.
pub const DEFAULT_IP_LOOKUP_URLS: [&str; 3] = [
    "https://api.ipify.org",
    "https://ifconfig.me/ip",
    "https://icanhazip.com",
];

/// Every setting: YAML key, environment variable, and whether the Python ibauth knows it.
const KEYS: &[(&str, &str)] = &[
    ("client_id", "IBAUTH_CLIENT_ID"),
    ("client_key_id", "IBAUTH_CLIENT_KEY_ID"),
    ("credential", "IBAUTH_CREDENTIAL"),
    ("private_key_file", "IBAUTH_PRIVATE_KEY_FILE"),
    ("domain", "IBAUTH_DOMAIN"),
    ("base_url", "IBAUTH_BASE_URL"),
    ("public_ip", "IBAUTH_PUBLIC_IP"),
    ("timeout", "IBAUTH_TIMEOUT"),
    ("ip_lookup_urls", "IBAUTH_IP_LOOKUP_URLS"),
    ("ca_file", "IBAUTH_CA_FILE"),
    ("publish", "IBAUTH_PUBLISH"),
    ("compete", "IBAUTH_COMPETE"),
];

/// Variables that are read elsewhere and must not be reported as unknown.
const OTHER_ENV: &[&str] = &["IBAUTH_CONFIG", "IBAUTH_LOG"];

fn env_name(key: &str) -> &'static str {
    KEYS.iter()
        .find(|(k, _)| *k == key)
        .map(|(_, e)| *e)
        .unwrap_or("IBAUTH_…")
}

/// The known keys of the YAML file, each read as written (strings, never guessed types).
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct RawYaml {
    client_id: Option<String>,
    client_key_id: Option<String>,
    credential: Option<String>,
    private_key_file: Option<String>,
    domain: Option<String>,
    base_url: Option<String>,
    public_ip: Option<String>,
    timeout: Option<String>,
    ip_lookup_urls: Option<OneOrMany>,
    ca_file: Option<String>,
    publish: Option<String>,
    compete: Option<String>,
}

/// The config file's text; a missing or unreadable file is an error naming it.
pub(crate) fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ConfigError::FileNotFound {
            path: path.to_owned(),
        },
        _ => ConfigError::FileUnreadable {
            path: path.to_owned(),
            source,
        },
    })
}

/// Whether a YAML document is empty: only comments, separators or `null` (an empty mapping).
pub(crate) fn is_empty_yaml(text: &str) -> bool {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .all(|l| matches!(l, "" | "---" | "..." | "~" | "null"))
}

/// `text` (the file at `path`) as `T`; the error names the file, never quotes its lines (they
/// can hold secrets).
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
) -> Result<T, ConfigError> {
    serde_saphyr::from_str(text).map_err(|e| ConfigError::MalformedYaml {
        path: path.to_owned(),
        detail: e.without_snippet().to_string(),
    })
}

/// A single string or a list of strings.
pub(crate) struct OneOrMany(pub(crate) Vec<String>);

impl<'de> serde::Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a URL or a list of URLs")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A complete, checked OAuth 2.0 configuration.
///
/// `Debug` never shows the credential or the key.
#[derive(Debug, Clone)]
pub struct Config {
    client_id: String,
    client_key_id: String,
    credential: SecretString,
    key: SigningKey,
    api_base: Url,
    public_ip: Option<Ipv4Addr>,
    timeout: Duration,
    ip_lookup_urls: Vec<Url>,
    ca_pem: Option<Vec<u8>>,
    publish: bool,
    compete: bool,
    warnings: Vec<String>,
}

impl Config {
    /// Starts a builder with nothing set.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Loads `path` (or `$IBAUTH_CONFIG`, or `./config.yaml`), then applies `IBAUTH_*`
    /// variables from the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, env)
    }

    /// As [`Config::load`], with the environment given explicitly (for tests and embedding).
    pub fn load_with_env<I, K, V>(path: Option<&Path>, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let env: Vec<(String, String)> =
            env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        let named = path.map(Path::to_path_buf).or_else(|| {
            env.iter()
                .find(|(k, v)| k == "IBAUTH_CONFIG" && !v.is_empty())
                .map(|(_, v)| PathBuf::from(v))
        });
        let mut builder = ConfigBuilder::default();
        let mut default_missing = None;
        match named {
            Some(path) => builder = builder.yaml_file(&path)?,
            None => {
                let path = PathBuf::from(DEFAULT_CONFIG_FILE);
                if path.exists() {
                    builder = builder.yaml_file(&path)?;
                } else {
                    default_missing = Some(path);
                }
            }
        }
        let builder = builder.env_vars(env)?;
        match (builder.build(), default_missing) {
            // Without a file and without a complete environment, the missing file is the news.
            (Err(ConfigError::Missing { .. }), Some(path)) => {
                Err(ConfigError::FileNotFound { path })
            }
            (result, _) => result,
        }
    }

    /// The OAuth 2.0 client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
    /// The id of the registered public key (`kid`).
    pub fn client_key_id(&self) -> &str {
        &self.client_key_id
    }
    /// The IBKR username the SSO session is opened for.
    pub fn credential(&self) -> &SecretString {
        &self.credential
    }
    /// The signing key.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }
    /// Where requests go: `https://{domain}` or `base_url`.
    pub fn api_base(&self) -> &Url {
        &self.api_base
    }
    /// The public IP from the config, if set (otherwise it is looked up).
    pub fn public_ip(&self) -> Option<Ipv4Addr> {
        self.public_ip
    }
    /// Timeout of every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
    /// Public-IP lookup URLs, tried in order.
    pub fn ip_lookup_urls(&self) -> &[Url] {
        &self.ip_lookup_urls
    }
    /// Extra trusted CA certificates (PEM), e.g. the sandbox's.
    pub fn ca_pem(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref()
    }
    /// `publish` flag of `ssodh/init`.
    pub fn publish(&self) -> bool {
        self.publish
    }
    /// `compete` flag of `ssodh/init`: take the session over from other logins.
    pub fn compete(&self) -> bool {
        self.compete
    }
    /// Warnings found while loading (unknown keys, …); each was also logged.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Builds a [`Config`] from any mix of YAML, environment and code; later calls override earlier.
#[derive(Debug, Default, Clone)]
pub struct ConfigBuilder {
    client_id: Option<String>,
    client_key_id: Option<String>,
    credential: Option<SecretString>,
    private_key_file: Option<PathBuf>,
    private_key_blank: bool,
    key: Option<SigningKey>,
    domain: Option<String>,
    base_url: Option<String>,
    public_ip: Option<String>,
    timeout: Option<Duration>,
    ip_lookup_urls: Option<Vec<String>>,
    ca_file: Option<PathBuf>,
    ca_pem: Option<Vec<u8>>,
    publish: Option<bool>,
    compete: Option<bool>,
    warnings: Vec<String>,
}

impl ConfigBuilder {
    /// The private key file set so far (after `yaml_file`/`env_vars`), for diagnostics.
    pub fn private_key_path(&self) -> Option<&Path> {
        self.private_key_file.as_deref()
    }

    /// OAuth 2.0 client id.
    pub fn client_id(mut self, value: impl Into<String>) -> Self {
        self.client_id = Some(value.into());
        self
    }
    /// Key id (`kid`) of the registered public key.
    pub fn client_key_id(mut self, value: impl Into<String>) -> Self {
        self.client_key_id = Some(value.into());
        self
    }
    /// The IBKR username.
    pub fn credential(mut self, value: impl Into<String>) -> Self {
        self.credential = Some(SecretString::from(value.into()));
        self
    }
    /// Path of the PEM private key (PKCS#1 or PKCS#8).
    pub fn private_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.private_key_blank = path.as_os_str().to_string_lossy().trim().is_empty();
        self.private_key_file = Some(path);
        self.key = None;
        self
    }
    /// An already loaded key (wins over `private_key_file`).
    pub fn private_key(mut self, key: SigningKey) -> Self {
        self.key = Some(key);
        self
    }
    /// API host, e.g. `api.ibkr.com` or `5.api.ibkr.com`.
    pub fn domain(mut self, value: impl Into<String>) -> Self {
        self.domain = Some(value.into());
        self
    }
    /// Full base URL (wins over `domain`); plain `http` only for loopback.
    pub fn base_url(mut self, value: impl Into<String>) -> Self {
        self.base_url = Some(value.into());
        self
    }
    /// The public IPv4 address IBKR sees (skips the lookup).
    pub fn public_ip(mut self, value: Ipv4Addr) -> Self {
        self.public_ip = Some(value.to_string());
        self
    }
    /// Timeout of every call.
    pub fn timeout(mut self, value: Duration) -> Self {
        self.timeout = Some(value);
        self
    }
    /// Public-IP lookup URLs, tried in order.
    pub fn ip_lookup_urls<I: IntoIterator<Item = S>, S: Into<String>>(mut self, urls: I) -> Self {
        self.ip_lookup_urls = Some(urls.into_iter().map(Into::into).collect());
        self
    }
    /// A PEM file of extra CA certificates to trust (verification stays on).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }
    /// Extra CA certificates to trust, as PEM text (wins over `ca_file`).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }
    /// `publish` flag of `ssodh/init` (default true).
    pub fn publish(mut self, value: bool) -> Self {
        self.publish = Some(value);
        self
    }
    /// `compete` flag of `ssodh/init` (default true).
    pub fn compete(mut self, value: bool) -> Self {
        self.compete = Some(value);
        self
    }

    /// Merges a YAML file. Relative paths in it resolve against the file's folder.
    pub fn yaml_file(self, path: &Path) -> Result<Self, ConfigError> {
        let text = read_file(path)?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        self.yaml_str(&text, path, &dir)
    }

    fn yaml_str(mut self, text: &str, path: &Path, dir: &Path) -> Result<Self, ConfigError> {
        // Without the snippet: it would quote the file's lines, which can hold secrets.
        let malformed = |e: serde_saphyr::Error| ConfigError::MalformedYaml {
            path: path.to_owned(),
            detail: e.without_snippet().to_string(),
        };
        // An empty, comment-only or null document is an empty mapping.
        if is_empty_yaml(text) {
            return Ok(self);
        }
        // Two passes: the key names (to warn about unknown ones), then the known keys read as
        // the text the user wrote — a generic value type would turn `credential: 00123` into
        // 123 and `client_id: 0x1F` into 31.
        let names: BTreeMap<String, serde::de::IgnoredAny> =
            serde_saphyr::from_str(text).map_err(malformed)?;
        let raw: RawYaml = serde_saphyr::from_str(text).map_err(malformed)?;
        for key in names.keys() {
            // The `oauth1a:` section belongs to `oauth1a::config`, the session manager's keys
            // to `policy::Policy`.
            if KEYS.iter().any(|(k, _)| k == key) || crate::settings::is_session_key(key) {
                continue;
            }
            let known = KEYS
                .iter()
                .map(|(k, _)| *k)
                .chain(crate::settings::session_keys());
            let warning = match did_you_mean(key, known) {
                Some(m) => format!(
                    "unknown key `{key}` in {} is ignored; did you mean `{m}`?",
                    path.display()
                ),
                None => format!("unknown key `{key}` in {} is ignored", path.display()),
            };
            self.warn(warning);
        }
        // Blank required values are caught by `build`; blank optional ones by their parsers.
        let or = |new: Option<String>, old: Option<String>| new.or(old);
        self.client_id = or(raw.client_id, self.client_id);
        self.client_key_id = or(raw.client_key_id, self.client_key_id);
        self.domain = or(raw.domain, self.domain);
        self.base_url = or(raw.base_url, self.base_url);
        self.public_ip = or(raw.public_ip, self.public_ip);
        if let Some(v) = raw.credential {
            self.credential = Some(SecretString::from(v));
        }
        if let Some(v) = raw.private_key_file {
            self.private_key_blank = v.trim().is_empty();
            self.private_key_file = Some(dir.join(v.trim()));
            self.key = None;
        }
        if let Some(v) = raw.timeout {
            self.timeout = Some(parse_timeout("timeout", &v)?);
        }
        if let Some(v) = raw.ip_lookup_urls {
            self.ip_lookup_urls = Some(v.0);
        }
        if let Some(v) = raw.ca_file {
            self.ca_file = Some(dir.join(v.trim()));
        }
        if let Some(v) = raw.publish {
            self.publish = Some(parse_bool("publish", &v)?);
        }
        if let Some(v) = raw.compete {
            self.compete = Some(parse_bool("compete", &v)?);
        }
        Ok(self)
    }

    /// Merges `IBAUTH_*` variables (other variables are ignored).
    pub fn env_vars<I, K, V>(mut self, vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        for (name, value) in vars {
            let (name, value): (String, String) = (name.into(), value.into());
            let Some(suffix) = name.strip_prefix("IBAUTH_") else {
                continue;
            };
            if OTHER_ENV.contains(&name.as_str())
                || crate::settings::is_session_env(&name) && name != "IBAUTH_COMPETE"
                || name.starts_with("IBAUTH_OAUTH1A_")
                || value.is_empty()
            {
                continue;
            }
            let key = suffix.to_ascii_lowercase();
            match key.as_str() {
                "client_id" => self.client_id = Some(value),
                "client_key_id" => self.client_key_id = Some(value),
                "credential" => self.credential = Some(SecretString::from(value)),
                "private_key_file" => self = self.private_key_file(value),
                "domain" => self.domain = Some(value),
                "base_url" => self.base_url = Some(value),
                "public_ip" => self.public_ip = Some(value),
                "timeout" => self.timeout = Some(parse_timeout(&name, &value)?),
                "ip_lookup_urls" => {
                    self.ip_lookup_urls = Some(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect(),
                    );
                }
                "ca_file" => self.ca_file = Some(PathBuf::from(value)),
                "publish" => self.publish = Some(parse_bool(&name, &value)?),
                "compete" => self.compete = Some(parse_bool(&name, &value)?),
                _ => {
                    let known = KEYS
                        .iter()
                        .map(|(_, e)| *e)
                        .chain(OTHER_ENV.iter().copied())
                        .chain(crate::settings::session_env());
                    let warning = match did_you_mean(&name, known) {
                        Some(m) => format!("unknown variable {name} is ignored; did you mean {m}?"),
                        None => format!("unknown variable {name} is ignored"),
                    };
                    self.warn(warning);
                }
            }
        }
        Ok(self)
    }

    /// Merges the process environment.
    pub fn env(self) -> Result<Self, ConfigError> {
        self.env_vars(std::env::vars())
    }

    fn warn(&mut self, warning: String) {
        tracing::warn!("{warning}");
        self.warnings.push(warning);
    }

    /// Checks everything and loads the key.
    pub fn build(self) -> Result<Config, ConfigError> {
        let required = |value: Option<String>, key: &'static str| {
            value
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.trim().to_owned())
                .ok_or(ConfigError::Missing {
                    key,
                    env: env_name(key),
                })
        };
        let client_id = required(self.client_id, "client_id")?;
        let client_key_id = required(self.client_key_id, "client_key_id")?;
        let credential = self.credential.ok_or(ConfigError::Missing {
            key: "credential",
            env: env_name("credential"),
        })?;
        if secrecy::ExposeSecret::expose_secret(&credential)
            .trim()
            .is_empty()
        {
            return Err(ConfigError::Missing {
                key: "credential",
                env: env_name("credential"),
            });
        }
        let key = match (self.key, self.private_key_file) {
            (Some(key), _) => key,
            (None, Some(path)) if !self.private_key_blank => SigningKey::from_pem_file(&path)?,
            (None, _) => {
                return Err(ConfigError::Missing {
                    key: "private_key_file",
                    env: env_name("private_key_file"),
                });
            }
        };
        let api_base = match (self.base_url, self.domain) {
            (Some(base), _) => parse_base_url("base_url", &base)?,
            (None, Some(domain)) => domain_url(&domain)?,
            (None, None) => domain_url(DEFAULT_DOMAIN)?,
        };
        let public_ip = self
            .public_ip
            .map(|ip| parse_public_ip("public_ip", &ip))
            .transpose()?;
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() || timeout > Duration::from_secs(600) {
            return Err(invalid(
                "timeout",
                "must be between 0 and 600 seconds (e.g. `timeout: 10`)",
            ));
        }
        let ip_lookup_urls = match self.ip_lookup_urls {
            Some(urls) if urls.is_empty() => {
                return Err(invalid(
                    "ip_lookup_urls",
                    "is empty; list at least one URL, or set `public_ip`",
                ));
            }
            Some(urls) => urls,
            None => DEFAULT_IP_LOOKUP_URLS.map(String::from).to_vec(),
        }
        .iter()
        .map(|u| parse_base_url("ip_lookup_urls", u))
        .collect::<Result<Vec<_>, _>>()?;
        let ca_pem = match self.ca_pem {
            Some(pem) => Some(pem),
            None => self
                .ca_file
                .map(|path| {
                    std::fs::read(&path).map_err(|e| {
                        invalid("ca_file", &format!("cannot read {}: {e}", path.display()))
                    })
                })
                .transpose()?,
        };
        Ok(Config {
            client_id,
            client_key_id,
            credential,
            key,
            api_base,
            public_ip,
            timeout,
            ip_lookup_urls,
            ca_pem,
            publish: self.publish.unwrap_or(true),
            compete: self.compete.unwrap_or(true),
            warnings: self.warnings,
        })
    }
}

fn invalid(key: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

pub(crate) fn parse_timeout(key: &str, text: &str) -> Result<Duration, ConfigError> {
    text.trim()
        .trim_end_matches('s')
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| invalid(key, "must be a positive number of seconds, e.g. 10 or 2.5"))
}

fn parse_bool(key: &str, text: &str) -> Result<bool, ConfigError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(invalid(key, "must be true or false")),
    }
}

fn parse_public_ip(key: &str, text: &str) -> Result<Ipv4Addr, ConfigError> {
    match text.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Ok(ip),
        Ok(IpAddr::V6(_)) => Err(invalid(
            key,
            "is IPv6; IBKR binds the session to the public IPv4 address",
        )),
        Err(_) => Err(invalid(
            key,
            &format!("`{}` is not an IPv4 address", text.trim()),
        )),
    }
}

fn domain_url(domain: &str) -> Result<Url, ConfigError> {
    let domain = domain.trim();
    if domain.is_empty() || domain.contains('/') || domain.contains("://") {
        return Err(invalid(
            "domain",
            "must be a host name such as api.ibkr.com or 5.api.ibkr.com (use base_url for a full URL)",
        ));
    }
    parse_base_url("domain", &format!("https://{domain}"))
}

/// Whether a URL's host is on this machine (plain http is allowed only there).
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Parses and checks a base URL: https anywhere, http only on loopback; no query or fragment.
pub(crate) fn parse_base_url(key: &str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text.trim())
        .map_err(|e| invalid(key, &format!("`{}` is not a URL ({e})", text.trim())))?;
    if url.host().is_none() {
        return Err(invalid(key, "needs a host, e.g. https://api.ibkr.com"));
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(invalid(
                key,
                "plain http is refused for anything but loopback (127.0.0.1, ::1, localhost); use https",
            ));
        }
        other => {
            return Err(invalid(
                key,
                &format!("scheme `{other}` is not supported; use https"),
            ));
        }
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(key, "must not have a query or fragment"));
    }
    Ok(url)
}

/// The closest known name, if it is close enough to be a typo.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    known: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    known
        .map(|k| (edit_distance(&word, &k.to_ascii_lowercase()), k))
        .filter(|(d, k)| *d <= 3.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_typos_only() {
        let known = || KEYS.iter().map(|(k, _)| *k);
        assert_eq!(did_you_mean("cliend_id", known()), Some("client_id"));
        assert_eq!(
            did_you_mean("private_key_path", known()),
            Some("private_key_file")
        );
        assert_eq!(did_you_mean("zzzzzzzzzzzz", known()), None);
    }

    #[test]
    fn base_urls_refuse_plain_http_off_loopback() {
        assert!(parse_base_url("base_url", "http://127.0.0.1:8080").is_ok());
        assert!(parse_base_url("base_url", "http://[::1]:8080").is_ok());
        assert!(parse_base_url("base_url", "http://localhost:1").is_ok());
        assert!(parse_base_url("base_url", "https://5.api.ibkr.com").is_ok());
        let err = parse_base_url("base_url", "http://api.ibkr.com").unwrap_err();
        assert!(err.to_string().contains("plain http is refused"), "{err}");
        assert!(parse_base_url("base_url", "ftp://x").is_err());
        assert!(parse_base_url("base_url", "https://x/?q=1").is_err());
    }

    #[test]
    fn scalars_and_durations() {
        assert_eq!(
            parse_timeout("timeout", "2.5").unwrap(),
            Duration::from_millis(2500)
        );
        assert!(parse_timeout("timeout", "-1").is_err());
        assert!(parse_timeout("timeout", "soon").is_err());
        assert!(parse_bool("compete", "no").is_ok_and(|b| !b));
        assert!(parse_public_ip("public_ip", " 1.2.3.4\n").is_ok());
        assert!(
            parse_public_ip("public_ip", "::1")
                .unwrap_err()
                .to_string()
                .contains("IPv6")
        );
    }
}
