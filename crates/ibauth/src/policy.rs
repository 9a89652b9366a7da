//! What the session manager does and how often: in code, or from the config file and the
//! environment (`IBAUTH_*`, and ibind's `IBIND_*` switches so an ibind user changes nothing).
//!
//! ```
//! # fn main() -> Result<(), ibauth::ConfigError> {
//! use std::time::Duration;
//! use ibauth::policy::Policy;
//!
//! let policy = Policy::load_with_env(None, &[("IBAUTH_TICKLE_INTERVAL", "30"), ("IBIND_SHUTDOWN_OAUTH", "false")])?;
//! assert_eq!(policy.tickle_interval, Duration::from_secs(30));
//! assert!(!policy.logout_on_shutdown);
//! assert!(policy.init_oauth && policy.init_brokerage_session && policy.maintain);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{DEFAULT_CONFIG_FILE, OneOrMany, is_empty_yaml, parse_yaml, read_file};
use crate::error::ConfigError;
use crate::pacing::{PacingRules, PacingSettings, SettingValue};
use crate::settings::{SETTINGS, is_policy_key};

/// What the manager does, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Time between tickles (`tickle_interval`, default 60 s; IBKR drops an idle session after
    /// about 5 minutes).
    pub tickle_interval: Duration,
    /// Up to this much is added at random to each interval.
    pub jitter: Duration,
    /// Take the session over from other logins (`compete`, default true).
    pub compete: bool,
    /// Consecutive failed logins before giving up (`max_failed_logins`, default 5), so a bad
    /// credential cannot lock the account.
    pub max_failed_logins: u32,
    /// First backoff after a transient error; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest backoff (a server's `Retry-After` may ask for longer, up to an hour).
    pub max_backoff: Duration,
    /// Log in when started (`init_oauth`). Off: start from the tokens the client already holds.
    pub init_oauth: bool,
    /// Open the brokerage session (`init_brokerage_session`). Off: `ssodh/init` is never
    /// called, and a tickle only proves the OAuth session alive.
    pub init_brokerage_session: bool,
    /// Run the tickle loop with its recovery (`maintain`). Off: log in, then wait for shutdown.
    pub maintain: bool,
    /// Log out when shut down (`logout_on_shutdown`).
    pub logout_on_shutdown: bool,
    /// Renew tokens this long before they expire (`renew_margin`, default 10 min; at most half
    /// a token's lifetime).
    pub renew_margin: Duration,
    /// Hosts to move to, in turn, after `410 Gone` (`failover_hosts`: host names such as
    /// `1.api.ibkr.com`, or base URLs). Empty: stay and log in again.
    pub failover_hosts: Vec<String>,
    /// Longest wait for the logout on shutdown.
    pub shutdown_timeout: Duration,
    /// IBKR's limits, applied before every request (`pacing:` section, `IBAUTH_PACING=off|ibkr|gateway`,
    /// `IBAUTH_PACING_MAX_WAIT`; default [`PacingRules::ibkr`]).
    pub pacing: PacingRules,
    /// Where tokens are kept between runs (`token_file`, `IBAUTH_TOKEN_FILE`); `None`: the
    /// platform's default ([`crate::store::default_token_file`]). Read by whoever builds the
    /// store (the CLI does); the manager itself takes a store, not a path.
    pub token_file: Option<PathBuf>,
    /// A fleet's shared store instead of the token file (`store`, `IBAUTH_STORE`:
    /// `postgres://…` or `redis://…`); see [`crate::coord`].
    pub store: Option<crate::coord::StoreUrl>,
    /// The key file that seals documents in the shared store (`store_key_file`,
    /// `IBAUTH_STORE_KEY_FILE`; `IBAUTH_STORE_KEY` may hold the keys instead).
    pub store_key_file: Option<PathBuf>,
    /// How long a fleet's lease lasts without renewal (`lease_ttl`, `IBAUTH_LEASE_TTL`,
    /// default 15 s): a dead leader is replaced within it.
    pub lease_ttl: Duration,
    /// The largest answer body, and WebSocket message, read (`max_body`, `IBAUTH_MAX_BODY`:
    /// bytes, or with a `KiB`/`MiB` suffix; default [`crate::http::DEFAULT_MAX_BODY`], 16 MiB).
    /// A larger or endless answer is an error, read no further than this.
    pub max_body: usize,
}

/// The smallest `max_body` accepted: below it an ordinary IBKR answer would be refused.
pub const MIN_MAX_BODY: usize = 4 * 1024;
/// The largest `max_body` accepted.
pub const MAX_MAX_BODY: usize = 1024 * 1024 * 1024;

impl Default for Policy {
    fn default() -> Self {
        Self {
            tickle_interval: Duration::from_secs(60),
            jitter: Duration::from_secs(5),
            compete: true,
            max_failed_logins: 5,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            init_oauth: true,
            init_brokerage_session: true,
            maintain: true,
            logout_on_shutdown: true,
            renew_margin: Duration::from_secs(600),
            failover_hosts: Vec::new(),
            shutdown_timeout: Duration::from_secs(5),
            pacing: PacingRules::ibkr(),
            token_file: None,
            store: None,
            store_key_file: None,
            lease_ttl: crate::coord::DEFAULT_LEASE_TTL,
            max_body: crate::http::DEFAULT_MAX_BODY,
        }
    }
}

impl Policy {
    /// Loads `path` (or `$IBAUTH_CONFIG`, or `./config.yaml` if present), then ibind's
    /// `IBIND_*` switches, then `IBAUTH_*` variables, over the defaults.
    pub fn load(path: Option<&Path>) -> Result<Policy, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    /// As [`load`](Self::load) with the given environment.
    pub fn load_with_env<K: AsRef<str>, V: AsRef<str>>(
        path: Option<&Path>,
        env: &[(K, V)],
    ) -> Result<Policy, ConfigError> {
        let var = |name: &str| {
            env.iter()
                .find(|(k, v)| k.as_ref() == name && !v.as_ref().trim().is_empty())
                .map(|(_, v)| v.as_ref().to_owned())
        };
        let file = path
            .map(Path::to_path_buf)
            .or_else(|| var("IBAUTH_CONFIG").map(PathBuf::from))
            .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()));
        // (value, where it came from) by key.
        let mut raw: BTreeMap<&'static str, (Vec<String>, String)> = BTreeMap::new();
        let mut pacing = PacingSettings::default();
        if let Some(file) = &file {
            pacing = read_yaml(file, &mut raw)?.unwrap_or_default();
        }
        // `off`/`false` switches pacing off; `ibkr`/`gateway`/`on` picks the limits.
        if let Some(v) = var(PACING_ENV) {
            match v.trim().to_ascii_lowercase().as_str() {
                "off" | "false" | "0" | "no" => pacing.enabled = Some(false),
                "on" | "true" | "1" | "yes" => pacing.enabled = Some(true),
                profile => {
                    pacing.enabled = Some(true);
                    pacing.profile = Some(profile.to_owned());
                }
            }
        }
        if let Some(v) = var(PACING_MAX_WAIT_ENV) {
            pacing.max_wait = Some(SettingValue::Text(v));
        }
        for (key, ours, ibind) in SETTINGS {
            for name in [*ibind, *ours] {
                if let Some(v) = var(name).filter(|_| !name.is_empty()) {
                    let values = if *key == "failover_hosts" {
                        v.split(',').map(|s| s.trim().to_owned()).collect()
                    } else {
                        vec![v]
                    };
                    raw.insert(key, (values, name.to_owned()));
                }
            }
        }
        let mut policy = build(&raw)?;
        policy.pacing = pacing.into_rules().map_err(|e| ConfigError::Invalid {
            key: e.key,
            reason: e.message,
        })?;
        Ok(policy)
    }
}

/// Switches pacing off (`off`) or picks its limits (`ibkr`, `gateway`).
const PACING_ENV: &str = "IBAUTH_PACING";
/// How long a call may wait for its turn.
const PACING_MAX_WAIT_ENV: &str = "IBAUTH_PACING_MAX_WAIT";

/// The session keys of the file into `raw`; its `pacing:` section, if any.
fn read_yaml(
    path: &Path,
    raw: &mut BTreeMap<&'static str, (Vec<String>, String)>,
) -> Result<Option<PacingSettings>, ConfigError> {
    let text = read_file(path)?;
    if is_empty_yaml(&text) {
        return Ok(None);
    }
    // Values read as the text the user wrote (see `config`): only the keys of interest.
    let map: BTreeMap<String, serde::de::IgnoredAny> = parse_yaml(&text, path)?;
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct File {
        tickle_interval: Option<String>,
        compete: Option<String>,
        init_oauth: Option<String>,
        init_brokerage_session: Option<String>,
        maintain: Option<String>,
        maintain_oauth: Option<String>,
        logout_on_shutdown: Option<String>,
        shutdown_oauth: Option<String>,
        max_failed_logins: Option<String>,
        renew_margin: Option<String>,
        failover_hosts: Option<OneOrMany>,
        shutdown_timeout: Option<String>,
        token_file: Option<String>,
        store: Option<String>,
        store_key_file: Option<String>,
        lease_ttl: Option<String>,
        max_body: Option<String>,
        pacing: Option<PacingSettings>,
    }
    if !map.keys().any(|k| is_policy_key(k) || k == "pacing") {
        return Ok(None);
    }
    let file: File = parse_yaml(&text, path)?;
    let origin = path.display().to_string();
    let mut put = |key: &'static str, value: Option<String>| {
        if let Some(v) = value {
            raw.insert(key, (vec![v], origin.clone()));
        }
    };
    put("tickle_interval", file.tickle_interval);
    put("compete", file.compete);
    put("init_oauth", file.init_oauth);
    put("init_brokerage_session", file.init_brokerage_session);
    put("maintain", file.maintain_oauth);
    put("maintain", file.maintain);
    put("logout_on_shutdown", file.shutdown_oauth);
    put("logout_on_shutdown", file.logout_on_shutdown);
    put("max_failed_logins", file.max_failed_logins);
    put("renew_margin", file.renew_margin);
    put("shutdown_timeout", file.shutdown_timeout);
    put("max_body", file.max_body);
    put("store", file.store);
    put("lease_ttl", file.lease_ttl);
    // Relative to the config file's folder, as every path in it.
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
    let relative = |t: Option<String>| {
        t.filter(|t| !t.trim().is_empty()).map(|t| match folder {
            Some(folder) => folder.join(t.trim()).to_string_lossy().into_owned(),
            None => t.trim().to_owned(),
        })
    };
    put("token_file", relative(file.token_file));
    put("store_key_file", relative(file.store_key_file));
    if let Some(hosts) = file.failover_hosts {
        raw.insert("failover_hosts", (hosts.0, origin));
    }
    Ok(file.pacing)
}

fn build(raw: &BTreeMap<&'static str, (Vec<String>, String)>) -> Result<Policy, ConfigError> {
    let mut policy = Policy::default();
    let invalid = |key: &str, from: &str, reason: &str| ConfigError::Invalid {
        key: format!("{key} (from {from})"),
        reason: reason.to_owned(),
    };
    for (key, (values, from)) in raw {
        let text = values.first().map(|s| s.trim()).unwrap_or("");
        let boolean = || match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(invalid(key, from, "must be true or false")),
        };
        let seconds = |min: f64, max: f64| {
            text.trim_end_matches('s')
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= min && *s <= max)
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .ok_or_else(|| {
                    invalid(
                        key,
                        from,
                        &format!("must be a number of seconds from {min} to {max}"),
                    )
                })
        };
        match *key {
            "tickle_interval" => {
                let interval = seconds(0.01, 3600.0)?;
                if interval > Duration::from_secs(300) {
                    tracing::warn!(
                        seconds = interval.as_secs(),
                        "tickle_interval is longer than IBKR's ~5 min idle timeout: the session may drop between tickles"
                    );
                }
                policy.tickle_interval = interval;
                policy.jitter = (interval / 10).min(Duration::from_secs(5));
            }
            "compete" => policy.compete = boolean()?,
            "init_oauth" => policy.init_oauth = boolean()?,
            "init_brokerage_session" => policy.init_brokerage_session = boolean()?,
            "maintain" => policy.maintain = boolean()?,
            "logout_on_shutdown" => policy.logout_on_shutdown = boolean()?,
            "max_failed_logins" => {
                policy.max_failed_logins = text
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| invalid(key, from, "must be a whole number from 1 to 100"))?;
            }
            "renew_margin" => policy.renew_margin = seconds(0.0, 86_400.0)?,
            "shutdown_timeout" => policy.shutdown_timeout = seconds(0.1, 300.0)?,
            "token_file" => policy.token_file = Some(PathBuf::from(text)),
            "store" => {
                policy.store = Some(
                    crate::coord::StoreUrl::parse(text)
                        .map_err(|reason| invalid(key, from, &reason))?,
                );
            }
            "store_key_file" => policy.store_key_file = Some(PathBuf::from(text)),
            "lease_ttl" => policy.lease_ttl = seconds(1.0, 300.0)?,
            "max_body" => {
                policy.max_body = parse_bytes(text)
                    .filter(|n| (MIN_MAX_BODY..=MAX_MAX_BODY).contains(n))
                    .ok_or_else(|| {
                        invalid(
                            key,
                            from,
                            "must be a number of bytes from 4096 to 1073741824 (or 4 KiB to 1024 MiB)",
                        )
                    })?;
            }
            "failover_hosts" => {
                let hosts: Vec<String> = values
                    .iter()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .collect();
                for host in &hosts {
                    check_host(host).map_err(|reason| invalid(key, from, &reason))?;
                }
                policy.failover_hosts = hosts;
            }
            _ => {}
        }
    }
    Ok(policy)
}

/// `16777216`, `16 MiB`, `64KiB`, `16m`: binary multiples; `None` when not a whole number or
/// too large for `usize`.
fn parse_bytes(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: usize = digits.parse().ok()?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// A failover entry is a host name (https is implied) or a base URL with the same rules as
/// `base_url`.
fn check_host(host: &str) -> Result<(), String> {
    let url = if host.contains("://") {
        host.to_owned()
    } else if host.contains('/') {
        return Err(format!(
            "`{host}` is neither a host name (1.api.ibkr.com) nor a URL"
        ));
    } else {
        format!("https://{host}")
    };
    crate::config::parse_base_url("failover_hosts", &url)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_yaml(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ibauth-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const NO_ENV: &[(&str, &str)] = &[];

    #[test]
    fn defaults_are_ibinds_four_switches_on() {
        let p = Policy::default();
        assert!(p.init_oauth && p.init_brokerage_session && p.maintain && p.logout_on_shutdown);
        assert_eq!(p.tickle_interval, Duration::from_secs(60));
        assert_eq!(p.max_failed_logins, 5);
        assert!(p.compete);
    }

    #[test]
    fn the_file_then_ibind_then_ours() {
        let path = temp_yaml(
            "layers.yaml",
            "client_id: X\ntickle_interval: 45\nmaintain_oauth: false\nfailover_hosts:\n  - 1.api.ibkr.com\n  - 2.api.ibkr.com\nrenew_margin: 120\n",
        );
        let p = Policy::load_with_env(Some(&path), NO_ENV).unwrap();
        assert_eq!(p.tickle_interval, Duration::from_secs(45));
        assert_eq!(p.jitter, Duration::from_millis(4500));
        assert!(!p.maintain, "ibind's key name in the file");
        assert_eq!(p.failover_hosts, ["1.api.ibkr.com", "2.api.ibkr.com"]);
        assert_eq!(p.renew_margin, Duration::from_secs(120));

        let env = [
            ("IBIND_TICKLER_INTERVAL", "30"),
            ("IBIND_MAINTAIN_OAUTH", "true"),
            ("IBIND_INIT_BROKERAGE_SESSION", "false"),
            ("IBAUTH_TICKLE_INTERVAL", "20"),
            (
                "IBAUTH_FAILOVER_HOSTS",
                "5.api.ibkr.com, https://127.0.0.1:9",
            ),
            ("IBAUTH_LOGOUT_ON_SHUTDOWN", "off"),
        ];
        let p = Policy::load_with_env(Some(&path), &env).unwrap();
        assert_eq!(
            p.tickle_interval,
            Duration::from_secs(20),
            "ours beat ibind's"
        );
        assert!(p.maintain);
        assert!(!p.init_brokerage_session);
        assert!(!p.logout_on_shutdown);
        assert_eq!(p.failover_hosts, ["5.api.ibkr.com", "https://127.0.0.1:9"]);
    }

    #[test]
    fn max_body_in_bytes_or_binary_units_within_bounds() {
        assert_eq!(Policy::default().max_body, 16 * 1024 * 1024);
        let path = temp_yaml("max_body.yaml", "max_body: 64 KiB\n");
        let p = Policy::load_with_env(Some(&path), NO_ENV).unwrap();
        assert_eq!(p.max_body, 64 * 1024);
        for (text, want) in [("1048576", 1 << 20), ("2m", 2 << 20), ("1 GiB", 1 << 30)] {
            let p = Policy::load_with_env(None, &[("IBAUTH_MAX_BODY", text)]).unwrap();
            assert_eq!(p.max_body, want, "{text}");
        }
        for text in [
            "100",
            "2 GiB",
            "-1",
            "lots",
            "1.5m",
            "99999999999999999999999",
        ] {
            let err = Policy::load_with_env(None, &[("IBAUTH_MAX_BODY", text)]).unwrap_err();
            assert!(err.to_string().contains("max_body"), "{text}: {err}");
        }
    }

    #[test]
    fn token_file_is_relative_to_the_config_file_and_overridable() {
        let path = temp_yaml("tokens.yaml", "token_file: state/tokens.json\n");
        let p = Policy::load_with_env(Some(&path), NO_ENV).unwrap();
        assert_eq!(
            p.token_file.unwrap(),
            path.parent().unwrap().join("state/tokens.json")
        );
        let p =
            Policy::load_with_env(Some(&path), &[("IBAUTH_TOKEN_FILE", "/tmp/t.json")]).unwrap();
        assert_eq!(p.token_file.unwrap(), PathBuf::from("/tmp/t.json"));
    }

    #[test]
    fn bad_values_name_the_setting_and_where_it_came_from() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "IBAUTH_TICKLE_INTERVAL",
                "0",
                "tickle_interval (from IBAUTH_TICKLE_INTERVAL)",
            ),
            ("IBAUTH_TICKLE_INTERVAL", "soon", "seconds"),
            (
                "IBIND_INIT_OAUTH",
                "maybe",
                "init_oauth (from IBIND_INIT_OAUTH)",
            ),
            ("IBAUTH_MAX_FAILED_LOGINS", "0", "1 to 100"),
            (
                "IBAUTH_FAILOVER_HOSTS",
                "api.ibkr.com/v1",
                "neither a host name",
            ),
            ("IBAUTH_FAILOVER_HOSTS", "http://example.com", "plain http"),
        ];
        for (name, value, expect) in cases {
            let err = Policy::load_with_env(None, &[(*name, *value)]).unwrap_err();
            assert!(
                err.to_string().contains(expect),
                "{name}={value}: {err} lacks {expect:?}"
            );
        }
        let path = temp_yaml("bad.yaml", "init_oauth: sometimes\n");
        let err = Policy::load_with_env(Some(&path), NO_ENV).unwrap_err();
        assert!(err.to_string().contains("bad.yaml"), "{err}");
    }

    #[test]
    fn a_file_without_policy_keys_or_an_empty_file_gives_the_defaults() {
        let path = temp_yaml("plain.yaml", "client_id: X\ncredential: 00123\n");
        assert_eq!(
            Policy::load_with_env(Some(&path), NO_ENV).unwrap(),
            Policy::default()
        );
        let path = temp_yaml("empty.yaml", "# nothing\n");
        assert_eq!(
            Policy::load_with_env(Some(&path), NO_ENV).unwrap(),
            Policy::default()
        );
    }
}
