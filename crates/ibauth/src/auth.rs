//! One configuration for any of the three auth methods, and the rules that choose the method
//! from the configuration file and the environment.
//!
//! The method is, in order of precedence:
//!
//! 1. the one asked for in code or on the command line (`--oauth1a`, `--third-party`);
//! 2. the `auth:` key (`oauth2`, `oauth1a` or `third_party`), `IBAUTH_AUTH` over the file;
//! 3. OAuth 1.0a when the environment asks for it: `IBIND_USE_OAUTH=true`, or any
//!    `IBAUTH_OAUTH1A_*` / `IBIND_OAUTH1A_*` setting (so an ibind user changes nothing);
//! 4. OAuth 1.0a when the file has an `oauth1a:` section and no OAuth 2.0 `client_id`;
//! 5. OAuth 2.0 otherwise.
//!
//! Where rule 3 or 4 picks OAuth 1.0a, a section (or environment) without an `access_token` but
//! with a `callback_url` is the third-party method: a consumer waiting for its user's grant.
//!
//! ```
//! use ibauth::{AuthConfig, AuthMethod};
//! let env = [("IBIND_USE_OAUTH", "true")];
//! let method = AuthConfig::choose_method_with_env(None, None, &env)?;
//! assert_eq!(method, AuthMethod::OAuth1a);
//! # Ok::<(), ibauth::ConfigError>(())
//! ```

use std::path::{Path, PathBuf};

use crate::client::AuthMethod;
use crate::config::{Config, DEFAULT_CONFIG_FILE};
use crate::error::ConfigError;
use crate::oauth1a::{Oauth1aConfig, ThirdPartyConfig, config as oauth1a_config};

/// The credentials of one auth method.
#[derive(Debug, Clone)]
pub enum AuthConfig {
    /// OAuth 2.0.
    OAuth2(Config),
    /// OAuth 1.0a, first party.
    OAuth1a(Oauth1aConfig),
    /// OAuth 1.0a, third party (the consumer; the grant comes from the user).
    ThirdParty(ThirdPartyConfig),
}

impl From<Config> for AuthConfig {
    fn from(c: Config) -> Self {
        AuthConfig::OAuth2(c)
    }
}

impl From<Oauth1aConfig> for AuthConfig {
    fn from(c: Oauth1aConfig) -> Self {
        AuthConfig::OAuth1a(c)
    }
}

impl From<ThirdPartyConfig> for AuthConfig {
    fn from(c: ThirdPartyConfig) -> Self {
        AuthConfig::ThirdParty(c)
    }
}

impl AuthConfig {
    /// The method these credentials are for.
    pub fn method(&self) -> AuthMethod {
        match self {
            AuthConfig::OAuth2(_) => AuthMethod::OAuth2,
            AuthConfig::OAuth1a(_) => AuthMethod::OAuth1a,
            AuthConfig::ThirdParty(_) => AuthMethod::ThirdParty,
        }
    }

    /// Loads `path` (or `$IBAUTH_CONFIG`, or `./config.yaml`) and the process environment,
    /// for `method` or the one the rules above choose.
    pub fn load(path: Option<&Path>, method: Option<AuthMethod>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, method, &env)
    }

    /// As [`load`](Self::load) with the given environment.
    pub fn load_with_env<K: AsRef<str>, V: AsRef<str>>(
        path: Option<&Path>,
        method: Option<AuthMethod>,
        env: &[(K, V)],
    ) -> Result<Self, ConfigError> {
        let method = Self::choose_method_with_env(path, method, env)?;
        Ok(match method {
            AuthMethod::OAuth2 => {
                let env: Vec<(String, String)> = env
                    .iter()
                    .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
                    .collect();
                AuthConfig::OAuth2(Config::load_with_env(path, env)?)
            }
            AuthMethod::OAuth1a => AuthConfig::OAuth1a(oauth1a_config::load_with_env(path, env)?),
            AuthMethod::ThirdParty => {
                AuthConfig::ThirdParty(oauth1a_config::load_third_party_with_env(path, env)?)
            }
        })
    }

    /// The method the rules choose (see the module docs), `asked` winning when given.
    pub fn choose_method_with_env<K: AsRef<str>, V: AsRef<str>>(
        path: Option<&Path>,
        asked: Option<AuthMethod>,
        env: &[(K, V)],
    ) -> Result<AuthMethod, ConfigError> {
        if let Some(method) = asked {
            return Ok(method);
        }
        let var = |name: &str| {
            env.iter()
                .find(|(k, v)| k.as_ref() == name && !v.as_ref().trim().is_empty())
                .map(|(_, v)| v.as_ref().to_owned())
        };
        let file = config_file(path, &var);
        let probe = match &file {
            Some(file) => Probe::read(file)?,
            None => Probe::default(),
        };
        if let Some(value) = var(crate::settings::AUTH.1) {
            return value.parse().map_err(|_| ConfigError::Invalid {
                key: format!("auth (from {})", crate::settings::AUTH.1),
                reason: format!(
                    "`{value}` is not an auth method: use oauth2, oauth1a or third_party"
                ),
            });
        }
        if let Some(value) = &probe.auth {
            return value.parse().map_err(|_| ConfigError::Invalid {
                key: format!(
                    "auth (in {})",
                    file.as_deref().unwrap_or(Path::new("?")).display()
                ),
                reason: format!(
                    "`{value}` is not an auth method: use oauth2, oauth1a or third_party"
                ),
            });
        }
        let by_env = oauth1a_config::requested_by_env(env);
        let by_file = probe.oauth1a.is_some() && probe.client_id.is_none();
        if !(by_env || by_file) {
            return Ok(AuthMethod::OAuth2);
        }
        let section = probe.oauth1a.unwrap_or_default();
        let set = |key: &str, env_names: &[&str]| {
            section.get(key).is_some_and(|v| !v.trim().is_empty())
                || env_names.iter().any(|n| var(n).is_some())
        };
        let has_token = set(
            "access_token",
            &["IBAUTH_OAUTH1A_ACCESS_TOKEN", "IBIND_OAUTH1A_ACCESS_TOKEN"],
        );
        let has_callback = set("callback_url", &["IBAUTH_OAUTH1A_CALLBACK_URL"]);
        Ok(if !has_token && has_callback {
            AuthMethod::ThirdParty
        } else {
            AuthMethod::OAuth1a
        })
    }
}

/// The file the settings come from: named, `$IBAUTH_CONFIG`, or `./config.yaml` if present.
fn config_file(path: Option<&Path>, var: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    path.map(Path::to_path_buf)
        .or_else(|| var("IBAUTH_CONFIG").map(PathBuf::from))
        .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()))
}

/// Just what the rules look at in the file.
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct Probe {
    auth: Option<String>,
    client_id: Option<serde::de::IgnoredAny>,
    oauth1a: Option<std::collections::BTreeMap<String, String>>,
}

impl Probe {
    fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = match crate::config::read_file(path) {
            Ok(text) => text,
            // A missing file is reported by the loader, which knows whether it was needed.
            Err(ConfigError::FileNotFound { .. }) => return Ok(Self::default()),
            Err(e) => return Err(e),
        };
        if crate::config::is_empty_yaml(&text) {
            return Ok(Self::default());
        }
        crate::config::parse_yaml(&text, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_ENV: &[(&str, &str)] = &[];

    fn yaml(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ibauth-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn choose(path: Option<&Path>, env: &[(&str, &str)]) -> AuthMethod {
        AuthConfig::choose_method_with_env(path, None, env).unwrap()
    }

    #[test]
    fn the_rules_in_order() {
        let both = yaml(
            "both.yaml",
            "client_id: X\noauth1a:\n  consumer_key: ABCDEFGHI\n  access_token: t\n",
        );
        let only1a = yaml("only1a.yaml", "oauth1a:\n  consumer_key: ABCDEFGHI\n");
        let third = yaml(
            "third.yaml",
            "oauth1a:\n  consumer_key: TESTCONS\n  callback_url: https://127.0.0.1:8443/cb\n",
        );
        let explicit = yaml("explicit.yaml", "auth: oauth1a\nclient_id: X\n");
        assert_eq!(choose(Some(&both), NO_ENV), AuthMethod::OAuth2);
        assert_eq!(choose(Some(&only1a), NO_ENV), AuthMethod::OAuth1a);
        assert_eq!(choose(Some(&third), NO_ENV), AuthMethod::ThirdParty);
        assert_eq!(choose(Some(&explicit), NO_ENV), AuthMethod::OAuth1a);
        assert_eq!(
            choose(Some(&both), &[("IBIND_USE_OAUTH", "true")]),
            AuthMethod::OAuth1a,
            "ibind's switch"
        );
        assert_eq!(
            choose(Some(&explicit), &[("IBAUTH_AUTH", "oauth2")]),
            AuthMethod::OAuth2,
            "the variable beats the file"
        );
        assert_eq!(
            AuthConfig::choose_method_with_env(
                Some(&explicit),
                Some(AuthMethod::ThirdParty),
                &[("IBAUTH_AUTH", "oauth2")]
            )
            .unwrap(),
            AuthMethod::ThirdParty,
            "asked for beats everything"
        );
        assert_eq!(choose(None, NO_ENV), AuthMethod::OAuth2);
    }

    #[test]
    fn a_bad_auth_value_names_the_key_and_the_choices() {
        let bad = yaml("bad.yaml", "auth: kerberos\n");
        let err = AuthConfig::choose_method_with_env(Some(&bad), None, NO_ENV).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("auth (in") && text.contains("bad.yaml"),
            "{text}"
        );
        assert!(text.contains("oauth2, oauth1a or third_party"), "{text}");
        let err =
            AuthConfig::choose_method_with_env(None, None, &[("IBAUTH_AUTH", "x")]).unwrap_err();
        assert!(err.to_string().contains("IBAUTH_AUTH"), "{err}");
    }
}
