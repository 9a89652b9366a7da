//! Every source of settings put together, first found wins:
//!
//! 1. what the caller sets ([`Overrides`]: the command line's flags);
//! 2. the environment: IBeam's variables ([`IbeamEnv`]) for the gateway; for the session,
//!    ibauth's own (`IBAUTH_*`, ibind's `IBIND_*`) and then IBeam's where they mean the same
//!    (`IBEAM_MAINTENANCE_INTERVAL` is `tickle_interval`, `IBEAM_MAX_FAILED_AUTH` is
//!    `max_failed_logins`);
//! 3. the files: the gateway's `conf.yaml` ([`CpConf`]) for the gateway; ibauth's config file
//!    for the session — whose host setting (`base_url`, `domain`, `rest_url`) wins over
//!    `proxyRemoteHost` when it names another host than api.ibkr.com;
//! 4. the defaults: HTTPS with a self-signed certificate on port 5000 (IPv4 and IPv6), health
//!    on 5001, this machine and private networks allowed.
//!
//! ```
//! use std::path::PathBuf;
//! use ibauth_gateway::conf::CpConf;
//! use ibauth_gateway::env::IbeamEnv;
//! use ibauth_gateway::{Overrides, Setup, TlsMode};
//!
//! let conf = CpConf::parse("listenPort: 5050\nlistenSsl: true\n", "conf.yaml".as_ref())?;
//! let ibeam = IbeamEnv::from_vars(&[("IBEAM_GATEWAY_BASE_URL", "http://localhost:5060")])?;
//! let setup = Setup::resolve(Overrides::default(), &ibeam, Some(&conf), PathBuf::from("/var/lib/ibauth"));
//! // The environment wins over conf.yaml: plain HTTP on 5060.
//! assert_eq!(setup.options.listen[0].port(), 5060);
//! assert_eq!(setup.options.tls, TlsMode::Plain);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ibauth::policy::Policy;
use ibauth::{AuthConfig, AuthMethod, ConfigError};
use url::Url;

use crate::conf::{CpConf, DEFAULT_REMOTE_HOST};
use crate::env::{self, IbeamEnv};
use crate::options::{DEFAULT_HEALTH_PORT, DEFAULT_PORT, GatewayOptions, LogoutMode, TlsMode};

/// What the caller (the command line) sets; each wins over the environment and conf.yaml.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Where clients connect (`--listen`, repeatable); empty: from the environment or conf.yaml.
    pub listen: Vec<SocketAddr>,
    /// `--plain` or `--cert`/`--key`; `None`: from the environment or conf.yaml (HTTPS with a
    /// self-signed certificate by default).
    pub tls: Option<TlsMode>,
    /// Where the self-signed certificate (and, unless ibauth's settings name one, the token
    /// file) is kept (`--state-dir`).
    pub state_dir: Option<PathBuf>,
    /// `--health ADDR` (`Some(Some(addr))`) or `--health off` (`Some(None)`).
    pub health: Option<Option<SocketAddr>>,
    /// `--logout`.
    pub logout: Option<LogoutMode>,
    /// `--max-wait`.
    pub max_wait: Option<Duration>,
    /// `--inactive` (`Some(false)`).
    pub start_active: Option<bool>,
}

/// The gateway's settings, and what the session needs from the same sources.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The gateway's options.
    pub options: GatewayOptions,
    /// Where the gateway keeps its state.
    pub state_dir: PathBuf,
    /// `proxyRemoteHost`, when conf.yaml names one.
    pub remote_host: Option<Url>,
    /// The session's `tickle_interval` from IBeam's variable, unless ibauth's own is set.
    pub tickle_interval: Option<Duration>,
    /// The session's `max_failed_logins` from IBeam's variable, unless ibauth's own is set.
    pub max_failed_logins: Option<u32>,
    /// `IBEAM_LOG_LEVEL`.
    pub log_level: Option<tracing::Level>,
    /// What the sources say that is not used, or not as written, and why (no values).
    pub notes: Vec<String>,
}

/// ibauth's state folder (where the token file lives by default): `$XDG_STATE_HOME/ibauth`,
/// `~/.local/state/ibauth`, … — see [`ibauth::store::default_token_file`].
pub fn default_state_dir() -> Option<PathBuf> {
    ibauth::store::default_token_file().and_then(|f| f.parent().map(Path::to_path_buf))
}

/// Every interface, IPv6 and IPv4 (one dual-stack socket).
fn everywhere(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))
}

impl Setup {
    /// Puts the sources together (see the module docs); `default_state_dir` is used when
    /// `overrides` names none (see [`default_state_dir`]).
    pub fn resolve(
        overrides: Overrides,
        ibeam: &IbeamEnv,
        conf: Option<&CpConf>,
        default_state_dir: PathBuf,
    ) -> Setup {
        let mut notes: Vec<String> = conf.map(|c| c.notes.clone()).unwrap_or_default();
        notes.extend(ibeam.notes.iter().cloned());
        let conf_port = conf.and_then(|c| c.listen_port);
        let conf_ssl = conf.and_then(|c| c.listen_ssl);
        let conf_name = conf.map_or_else(String::new, |c| c.path.display().to_string());
        let listen = if !overrides.listen.is_empty() {
            if let Some(port) = ibeam.listen_port.or(conf_port) {
                notes.push(format!(
                    "--listen wins over the port {port} of {}",
                    if ibeam.listen_port.is_some() {
                        env::GATEWAY_BASE_URL.to_owned()
                    } else {
                        format!("{conf_name} (listenPort)")
                    }
                ));
            }
            overrides.listen
        } else {
            if let (Some(from_env), Some(from_conf)) = (ibeam.listen_port, conf_port)
                && from_env != from_conf
            {
                notes.push(format!(
                    "{}'s port {from_env} wins over listenPort {from_conf} of {conf_name}",
                    env::GATEWAY_BASE_URL
                ));
            }
            vec![everywhere(
                ibeam.listen_port.or(conf_port).unwrap_or(DEFAULT_PORT),
            )]
        };
        let state_dir = overrides.state_dir.unwrap_or(default_state_dir);
        let tls = match overrides.tls {
            Some(tls) => tls,
            None => match ibeam.tls.or(conf_ssl) {
                Some(false) => TlsMode::Plain,
                Some(true) | None => TlsMode::SelfSigned {
                    dir: state_dir.join("tls"),
                },
            },
        };
        let defaults = GatewayOptions::default();
        let options = GatewayOptions {
            listen,
            tls,
            access: conf.and_then(|c| c.access.clone()).unwrap_or_default(),
            logout: overrides.logout.unwrap_or_default(),
            max_wait: overrides.max_wait.unwrap_or(defaults.max_wait),
            health: overrides.health.unwrap_or_else(|| {
                Some(everywhere(ibeam.health_port.unwrap_or(DEFAULT_HEALTH_PORT)))
            }),
            start_active: overrides
                .start_active
                .or(ibeam.start_active)
                .unwrap_or(true),
            cors: conf.and_then(|c| c.cors.clone()).unwrap_or_default(),
            ..defaults
        };
        Setup {
            options,
            state_dir,
            remote_host: conf.and_then(|c| c.remote_host.clone()),
            tickle_interval: ibeam.maintenance_interval,
            max_failed_logins: ibeam.max_failed_auth,
            log_level: ibeam.log_level,
            notes,
        }
    }

    /// `env` with IBeam's session settings added as ibauth's variables, where ibauth's own
    /// (or ibind's) are not set — for [`Policy::load_with_env`].
    pub fn session_env<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        env: &[(K, V)],
    ) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        let set = |name: &str| {
            !name.is_empty()
                && env
                    .iter()
                    .any(|(k, v)| k.as_ref() == name && !v.as_ref().trim().is_empty())
        };
        let pairs = [
            (
                self.tickle_interval.map(|d| d.as_secs_f64().to_string()),
                env::MAINTENANCE_INTERVAL,
                "IBAUTH_TICKLE_INTERVAL",
                "IBIND_TICKLER_INTERVAL",
            ),
            (
                self.max_failed_logins.map(|n| n.to_string()),
                env::MAX_FAILED_AUTH,
                "IBAUTH_MAX_FAILED_LOGINS",
                "",
            ),
        ];
        for (value, ibeam, ours, ibind) in pairs {
            let Some(value) = value else { continue };
            match [ours, ibind].into_iter().find(|n| set(n)) {
                Some(winner) => self
                    .notes
                    .push(format!("{ibeam} is not used: {winner} is set, and wins")),
                None => out.push((ours.to_owned(), value)),
            }
        }
        out
    }

    /// The session's settings: ibauth's config file at `path` (or its defaults) and `env`
    /// (with IBeam's, see [`session_env`](Self::session_env)); the token file in the state
    /// folder unless they name one.
    pub fn policy<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        path: Option<&Path>,
        env: &[(K, V)],
    ) -> Result<Policy, ConfigError> {
        let env = self.session_env(env);
        let mut policy = Policy::load_with_env(path, &env)?;
        if policy.token_file.is_none() {
            policy.token_file = Some(self.state_dir.join("tokens.json"));
        }
        Ok(policy)
    }

    /// The session's credentials from ibauth's config file at `path` and `env`, for `method`
    /// (or the one ibauth's rules choose), talking to `proxyRemoteHost` when conf.yaml names
    /// another host than api.ibkr.com and ibauth's settings do not.
    pub fn auth_config<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        path: Option<&Path>,
        method: Option<AuthMethod>,
        env: &[(K, V)],
    ) -> Result<AuthConfig, ConfigError> {
        let config = AuthConfig::load_with_env(path, method, env)?;
        let Some(remote) = self.remote_host.clone() else {
            return Ok(config);
        };
        let current = api_origin(&config);
        let default = Url::parse(DEFAULT_REMOTE_HOST).map(|u| u.origin()).ok();
        if remote.origin() == current {
            return Ok(config);
        }
        if Some(&current) != default.as_ref() {
            self.notes.push(format!(
                "proxyRemoteHost {} is not used: ibauth's settings name {}, and win",
                remote.origin().ascii_serialization(),
                current.ascii_serialization()
            ));
            return Ok(config);
        }
        let host = remote.origin().ascii_serialization();
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        let method = config.method();
        env.push(match method {
            AuthMethod::OAuth2 => ("IBAUTH_BASE_URL".to_owned(), host),
            _ => (
                "IBAUTH_OAUTH1A_REST_URL".to_owned(),
                format!("{host}/v1/api/"),
            ),
        });
        AuthConfig::load_with_env(path, Some(method), &env)
    }
}

/// Where a configuration's requests go: scheme, host and port.
fn api_origin(config: &AuthConfig) -> url::Origin {
    match config {
        AuthConfig::OAuth2(c) => c.api_base().origin(),
        AuthConfig::OAuth1a(c) => c.rest_base().origin(),
        AuthConfig::ThirdParty(c) => c.rest_base().origin(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn conf(text: &str) -> CpConf {
        CpConf::parse(text, Path::new("conf.yaml")).unwrap()
    }

    fn ibeam(vars: &[(&str, &str)]) -> IbeamEnv {
        IbeamEnv::from_vars(vars).unwrap()
    }

    fn state() -> PathBuf {
        PathBuf::from("/state")
    }

    #[test]
    fn defaults_are_the_cp_gateways_https_on_5000_ipv4_and_ipv6_health_on_5001() {
        let setup = Setup::resolve(Overrides::default(), &IbeamEnv::default(), None, state());
        assert_eq!(setup.options.listen, vec![everywhere(5000)]);
        assert_eq!(
            setup.options.tls,
            TlsMode::SelfSigned {
                dir: PathBuf::from("/state/tls")
            }
        );
        assert_eq!(setup.options.health, Some(everywhere(5001)));
        assert!(setup.options.start_active);
        assert_eq!(setup.options.logout, LogoutMode::Shared);
        assert!(setup.options.access.allows(Ipv4Addr::LOCALHOST.into()));
        assert!(setup.notes.is_empty());
    }

    #[test]
    fn flags_win_over_the_environment_which_wins_over_conf_yaml() {
        let file = conf(
            "listenPort: 5050\nlistenSsl: true\ncors:\n  origin.allowed: '*'\nips:\n  allow: [10.*]\n",
        );
        // conf.yaml alone.
        let setup = Setup::resolve(
            Overrides::default(),
            &IbeamEnv::default(),
            Some(&file),
            state(),
        );
        assert_eq!(setup.options.listen, vec![everywhere(5050)]);
        assert!(matches!(setup.options.tls, TlsMode::SelfSigned { .. }));
        assert_eq!(setup.options.cors.allowed_origin.as_deref(), Some("*"));
        assert!(setup.options.access.allows("10.2.3.4".parse().unwrap()));
        // The environment over it.
        let env = ibeam(&[
            ("IBEAM_GATEWAY_BASE_URL", "http://localhost:5060"),
            ("IBEAM_HEALTH_SERVER_PORT", "5061"),
            ("IBEAM_START_ACTIVE", "false"),
        ]);
        let setup = Setup::resolve(Overrides::default(), &env, Some(&file), state());
        assert_eq!(setup.options.listen, vec![everywhere(5060)]);
        assert_eq!(setup.options.tls, TlsMode::Plain);
        assert_eq!(setup.options.health, Some(everywhere(5061)));
        assert!(!setup.options.start_active);
        assert!(
            setup
                .notes
                .iter()
                .any(|n| n.contains("5060 wins over listenPort 5050"))
        );
        // Flags over both.
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 7000));
        let overrides = Overrides {
            listen: vec![addr],
            tls: Some(TlsMode::Files {
                cert: "c.pem".into(),
                key: "k.pem".into(),
            }),
            state_dir: Some("/elsewhere".into()),
            health: Some(None),
            logout: Some(LogoutMode::Pass),
            max_wait: Some(Duration::from_secs(2)),
            start_active: Some(true),
        };
        let setup = Setup::resolve(overrides, &env, Some(&file), state());
        assert_eq!(setup.options.listen, vec![addr]);
        assert!(matches!(setup.options.tls, TlsMode::Files { .. }));
        assert_eq!(setup.options.health, None);
        assert!(setup.options.start_active);
        assert_eq!(setup.options.logout, LogoutMode::Pass);
        assert_eq!(setup.options.max_wait, Duration::from_secs(2));
        assert_eq!(setup.state_dir, PathBuf::from("/elsewhere"));
        assert!(setup.notes.iter().any(|n| n.contains("--listen wins")));
        // --listen alone: conf.yaml's TLS still applies.
        let overrides = Overrides {
            listen: vec![addr],
            ..Overrides::default()
        };
        let setup = Setup::resolve(
            overrides,
            &IbeamEnv::default(),
            Some(&conf("listenSsl: false\n")),
            state(),
        );
        assert_eq!(setup.options.tls, TlsMode::Plain);
    }

    #[test]
    fn ibeams_session_settings_give_way_to_ibauths_own_variables() {
        let env = ibeam(&[
            ("IBEAM_MAINTENANCE_INTERVAL", "30"),
            ("IBEAM_MAX_FAILED_AUTH", "2"),
        ]);
        let mut setup = Setup::resolve(Overrides::default(), &env, None, state());
        let policy = setup.policy(None, &[("IBAUTH_CONFIG", "")]).unwrap();
        assert_eq!(policy.tickle_interval, Duration::from_secs(30));
        assert_eq!(policy.max_failed_logins, 2);
        assert_eq!(policy.token_file, Some(PathBuf::from("/state/tokens.json")));
        let mut setup = Setup::resolve(Overrides::default(), &env, None, state());
        let policy = setup
            .policy(
                None,
                &[
                    ("IBIND_TICKLER_INTERVAL", "20"),
                    ("IBAUTH_MAX_FAILED_LOGINS", "7"),
                    ("IBAUTH_TOKEN_FILE", "/tmp/t.json"),
                ],
            )
            .unwrap();
        assert_eq!(policy.tickle_interval, Duration::from_secs(20));
        assert_eq!(policy.max_failed_logins, 7);
        assert_eq!(policy.token_file, Some(PathBuf::from("/tmp/t.json")));
        let notes = setup.notes.join("\n");
        assert!(
            notes.contains("IBEAM_MAINTENANCE_INTERVAL is not used: IBIND_TICKLER_INTERVAL is set"),
            "{notes}"
        );
        assert!(
            notes.contains("IBEAM_MAX_FAILED_AUTH is not used: IBAUTH_MAX_FAILED_LOGINS is set"),
            "{notes}"
        );
    }

    #[test]
    fn proxy_remote_host_is_the_sessions_host_unless_ibauth_names_one() {
        let dir = std::env::temp_dir().join(format!("ibauth-gw-setup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key.pem");
        let pem = ibauth::SigningKey::generate().unwrap().to_pkcs8_pem();
        std::fs::write(&key, pem).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let key = key.to_string_lossy().into_owned();
        let mut env = vec![
            ("IBAUTH_CLIENT_ID", "C"),
            ("IBAUTH_CLIENT_KEY_ID", "k"),
            ("IBAUTH_CREDENTIAL", "u"),
            ("IBAUTH_PRIVATE_KEY_FILE", key.as_str()),
        ];
        let base = |config: &AuthConfig| match config {
            AuthConfig::OAuth2(c) => c.api_base().origin().ascii_serialization(),
            _ => panic!("OAuth 2.0 expected"),
        };
        let file = conf("proxyRemoteHost: https://5.api.ibkr.com\n");
        let mut setup = Setup::resolve(
            Overrides::default(),
            &IbeamEnv::default(),
            Some(&file),
            state(),
        );
        let config = setup.auth_config(None, None, &env).unwrap();
        assert_eq!(base(&config), "https://5.api.ibkr.com");
        assert!(setup.notes.is_empty(), "{:?}", setup.notes);
        // The stock value changes nothing.
        let file = conf("proxyRemoteHost: https://api.ibkr.com\n");
        let mut setup = Setup::resolve(
            Overrides::default(),
            &IbeamEnv::default(),
            Some(&file),
            state(),
        );
        assert_eq!(
            base(&setup.auth_config(None, None, &env).unwrap()),
            "https://api.ibkr.com"
        );
        // ibauth's own setting wins, and says so.
        env.push(("IBAUTH_BASE_URL", "http://127.0.0.1:9"));
        let file = conf("proxyRemoteHost: https://5.api.ibkr.com\n");
        let mut setup = Setup::resolve(
            Overrides::default(),
            &IbeamEnv::default(),
            Some(&file),
            state(),
        );
        assert_eq!(
            base(&setup.auth_config(None, None, &env).unwrap()),
            "http://127.0.0.1:9"
        );
        assert!(
            setup.notes[0].contains("proxyRemoteHost https://5.api.ibkr.com is not used: ibauth's settings name http://127.0.0.1:9"),
            "{:?}",
            setup.notes
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
