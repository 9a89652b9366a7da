//! IBeam's `IBEAM_*` variables, for a `compose.yaml` that swaps the IBeam image for this one
//! and keeps its environment.
//!
//! Those that still mean something are read: `IBEAM_GATEWAY_BASE_URL` (the scheme and port
//! clients use), `IBEAM_HEALTH_SERVER_PORT`, `IBEAM_MAX_FAILED_AUTH` (the session's
//! `max_failed_logins`), `IBEAM_MAINTENANCE_INTERVAL` (its `tickle_interval`),
//! `IBEAM_START_ACTIVE` and `IBEAM_LOG_LEVEL`. Every other `IBEAM_*` variable drives the browser
//! login or IBeam's own processes, and is named in a note — never with its value
//! (`IBEAM_PASSWORD`).
//!
//! ```
//! use std::time::Duration;
//! use ibauth_gateway::env::IbeamEnv;
//! let env = IbeamEnv::from_vars(&[
//!     ("IBEAM_GATEWAY_BASE_URL", "http://localhost:5050"),
//!     ("IBEAM_MAINTENANCE_INTERVAL", "30"),
//!     ("IBEAM_PASSWORD", "hunter2"),
//! ])?;
//! assert_eq!(env.listen_port, Some(5050));
//! assert_eq!(env.tls, Some(false));
//! assert_eq!(env.maintenance_interval, Some(Duration::from_secs(30)));
//! assert!(env.notes.iter().any(|n| n.contains("IBEAM_PASSWORD") && !n.contains("hunter2")));
//! # Ok::<(), ibauth_gateway::env::EnvError>(())
//! ```

use std::time::Duration;

use url::Url;

/// `IBEAM_GATEWAY_BASE_URL`.
pub const GATEWAY_BASE_URL: &str = "IBEAM_GATEWAY_BASE_URL";
/// `IBEAM_HEALTH_SERVER_PORT`.
pub const HEALTH_SERVER_PORT: &str = "IBEAM_HEALTH_SERVER_PORT";
/// `IBEAM_MAX_FAILED_AUTH`.
pub const MAX_FAILED_AUTH: &str = "IBEAM_MAX_FAILED_AUTH";
/// `IBEAM_MAINTENANCE_INTERVAL`.
pub const MAINTENANCE_INTERVAL: &str = "IBEAM_MAINTENANCE_INTERVAL";
/// `IBEAM_START_ACTIVE`.
pub const START_ACTIVE: &str = "IBEAM_START_ACTIVE";
/// `IBEAM_LOG_LEVEL`.
pub const LOG_LEVEL: &str = "IBEAM_LOG_LEVEL";

/// What IBeam's variables set; `None` where unset (or empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IbeamEnv {
    /// From `IBEAM_GATEWAY_BASE_URL`'s scheme: HTTPS (`https://`) or plain HTTP.
    pub tls: Option<bool>,
    /// From `IBEAM_GATEWAY_BASE_URL`'s port (the scheme's default when it names none).
    pub listen_port: Option<u16>,
    /// `IBEAM_HEALTH_SERVER_PORT`.
    pub health_port: Option<u16>,
    /// `IBEAM_MAX_FAILED_AUTH`: consecutive rejected logins before the session gives up
    /// (the session's `max_failed_logins`), so a bad credential cannot lock the account.
    pub max_failed_auth: Option<u32>,
    /// `IBEAM_MAINTENANCE_INTERVAL` (seconds): the keep-alive's tickle interval.
    pub maintenance_interval: Option<Duration>,
    /// `IBEAM_START_ACTIVE`: start logged in, or dormant until `/activate`.
    pub start_active: Option<bool>,
    /// `IBEAM_LOG_LEVEL` (Python's names: DEBUG, INFO, WARNING, ERROR, CRITICAL).
    pub log_level: Option<tracing::Level>,
    /// One line per variable read differently from IBeam, or not at all, and why.
    pub notes: Vec<String>,
}

/// Why an `IBEAM_*` variable cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?}: {reason}")]
pub struct EnvError {
    /// The variable.
    pub name: &'static str,
    /// Its value (only the variables read here, none of which is secret).
    pub value: String,
    /// What would do.
    pub reason: &'static str,
}

/// IBeam variables that drive what the gateway does not have, grouped by why.
const IGNORED: &[(&str, &str)] = &[
    (
        "IBEAM_ACCOUNT IBEAM_PASSWORD IBEAM_KEY IBEAM_SECRETS_SOURCE IBEAM_GCP_SECRETS_URL",
        "the session logs in with OAuth: its credentials go in ibauth's config (IBAUTH_* or IBIND_OAUTH1A_* variables), never a username and password",
    ),
    (
        "IBEAM_TWO_FA_HANDLER IBEAM_TWO_FA_SELECT_TARGET IBEAM_CHROME_DRIVER_PATH IBEAM_PAGE_LOAD_TIMEOUT IBEAM_OAUTH_TIMEOUT IBEAM_ERROR_SCREENSHOTS IBEAM_UI_SCALING IBEAM_INPUTS_DIR IBEAM_OUTPUTS_DIR",
        "they drive the browser login, and there is none",
    ),
    (
        "IBEAM_GATEWAY_DIR IBEAM_GATEWAY_STARTUP IBEAM_GATEWAY_PROCESS_MATCH IBEAM_SPAWN_NEW_PROCESSES IBEAM_RESTART_FAILED_SESSIONS IBEAM_RESTART_WAIT IBEAM_MIN_RESTART_INTERVAL",
        "they manage the Java gateway's process, and there is none",
    ),
    (
        "IBEAM_REAUTHENTICATE_WAIT IBEAM_MAX_REAUTHENTICATE_RETRIES IBEAM_MAX_IMMEDIATE_ATTEMPTS IBEAM_REQUEST_RETRIES IBEAM_REQUEST_TIMEOUT",
        "the session recovers on its own, with backoff (IBEAM_MAX_FAILED_AUTH still caps rejected logins)",
    ),
];

/// The `IBEAM_*` names read here.
const READ: &[&str] = &[
    GATEWAY_BASE_URL,
    HEALTH_SERVER_PORT,
    MAX_FAILED_AUTH,
    MAINTENANCE_INTERVAL,
    START_ACTIVE,
    LOG_LEVEL,
];

impl IbeamEnv {
    /// From the process environment.
    pub fn from_env() -> Result<Self, EnvError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::from_vars(&vars)
    }

    /// From the given variables (others than `IBEAM_*` are not looked at).
    pub fn from_vars<K: AsRef<str>, V: AsRef<str>>(vars: &[(K, V)]) -> Result<Self, EnvError> {
        let get = |name: &str| {
            vars.iter()
                .find(|(k, v)| k.as_ref() == name && !v.as_ref().trim().is_empty())
                .map(|(_, v)| v.as_ref().trim().to_owned())
        };
        let mut env = IbeamEnv::default();
        if let Some(value) = get(GATEWAY_BASE_URL) {
            let bad = |reason| EnvError {
                name: GATEWAY_BASE_URL,
                value: value.clone(),
                reason,
            };
            let url = Url::parse(&value)
                .map_err(|_| bad("must be the URL clients use, such as https://localhost:5000"))?;
            env.tls = Some(match url.scheme() {
                "https" => true,
                "http" => false,
                _ => return Err(bad("must start with https:// or http://")),
            });
            env.listen_port = url.port_or_known_default();
            // IBeam reached the gateway at this host from inside its container; the gateway
            // itself always listened on every interface, and so does this one.
            let host = url.host_str().unwrap_or_default();
            if !matches!(
                host,
                "localhost" | "127.0.0.1" | "[::1]" | "0.0.0.0" | "[::]"
            ) {
                env.notes.push(format!(
                    "{GATEWAY_BASE_URL}: only its scheme and port are used; the gateway listens on every interface (choose with --listen), not only on {host}"
                ));
            }
        }
        if let Some(value) = get(HEALTH_SERVER_PORT) {
            env.health_port = Some(value.parse().map_err(|_| EnvError {
                name: HEALTH_SERVER_PORT,
                value: value.clone(),
                reason: "must be a port number from 0 to 65535",
            })?);
        }
        if let Some(value) = get(MAX_FAILED_AUTH) {
            env.max_failed_auth = Some(
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| EnvError {
                        name: MAX_FAILED_AUTH,
                        value: value.clone(),
                        reason: "must be a whole number from 1 to 100",
                    })?,
            );
        }
        if let Some(value) = get(MAINTENANCE_INTERVAL) {
            env.maintenance_interval = Some(
                value
                    .trim_end_matches('s')
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && (0.01..=3600.0).contains(s))
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| EnvError {
                        name: MAINTENANCE_INTERVAL,
                        value: value.clone(),
                        reason: "must be a number of seconds from 0.01 to 3600",
                    })?,
            );
        }
        if let Some(value) = get(START_ACTIVE) {
            env.start_active = Some(match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    return Err(EnvError {
                        name: START_ACTIVE,
                        value,
                        reason: "must be true or false",
                    });
                }
            });
        }
        if let Some(value) = get(LOG_LEVEL) {
            env.log_level = Some(log_level(&value).ok_or_else(|| EnvError {
                name: LOG_LEVEL,
                value: value.clone(),
                reason: "must be DEBUG, INFO, WARNING, ERROR or CRITICAL",
            })?);
        }
        let mut ignored: Vec<(&str, Vec<&str>)> = Vec::new();
        let mut unknown: Vec<&str> = Vec::new();
        for (name, _) in vars {
            let name = name.as_ref();
            if !name.starts_with("IBEAM_") || READ.contains(&name) {
                continue;
            }
            match IGNORED
                .iter()
                .find(|(names, _)| names.split(' ').any(|n| n == name))
            {
                Some((_, why)) => match ignored.iter_mut().find(|(w, _)| w == why) {
                    Some((_, names)) => names.push(name),
                    None => ignored.push((why, vec![name])),
                },
                None => unknown.push(name),
            }
        }
        for (why, mut names) in ignored {
            names.sort_unstable();
            names.dedup();
            env.notes
                .push(format!("ignored {}, because {why}", names.join(", ")));
        }
        if !unknown.is_empty() {
            unknown.sort_unstable();
            unknown.dedup();
            env.notes.push(format!(
                "ignored {}, because the gateway does not use them (IBeam's browser login and processes are gone)",
                unknown.join(", ")
            ));
        }
        Ok(env)
    }
}

/// A log level from Python's names (IBeam's), or tracing's.
pub fn log_level(text: &str) -> Option<tracing::Level> {
    Some(match text.trim().to_ascii_lowercase().as_str() {
        "trace" => tracing::Level::TRACE,
        "debug" => tracing::Level::DEBUG,
        "info" => tracing::Level::INFO,
        "warning" | "warn" => tracing::Level::WARN,
        "error" | "critical" | "fatal" => tracing::Level::ERROR,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_that_still_mean_something() {
        let env = IbeamEnv::from_vars(&[
            ("IBEAM_GATEWAY_BASE_URL", "https://localhost:5000"),
            ("IBEAM_HEALTH_SERVER_PORT", "5001"),
            ("IBEAM_MAX_FAILED_AUTH", "3"),
            ("IBEAM_MAINTENANCE_INTERVAL", "60"),
            ("IBEAM_START_ACTIVE", "False"),
            ("IBEAM_LOG_LEVEL", "WARNING"),
            ("PATH", "/usr/bin"),
        ])
        .unwrap();
        assert_eq!(
            env,
            IbeamEnv {
                tls: Some(true),
                listen_port: Some(5000),
                health_port: Some(5001),
                max_failed_auth: Some(3),
                maintenance_interval: Some(Duration::from_secs(60)),
                start_active: Some(false),
                log_level: Some(tracing::Level::WARN),
                notes: Vec::new(),
            }
        );
        // The scheme's port when none is given; another host is noted.
        let env = IbeamEnv::from_vars(&[("IBEAM_GATEWAY_BASE_URL", "http://gateway")]).unwrap();
        assert_eq!((env.tls, env.listen_port), (Some(false), Some(80)));
        assert!(
            env.notes[0].contains("not only on gateway"),
            "{:?}",
            env.notes
        );
        // Empty means unset.
        assert_eq!(
            IbeamEnv::from_vars(&[("IBEAM_MAX_FAILED_AUTH", " ")]).unwrap(),
            IbeamEnv::default()
        );
    }

    #[test]
    fn browser_only_variables_are_named_never_shown() {
        let env = IbeamEnv::from_vars(&[
            ("IBEAM_ACCOUNT", "someuser"),
            ("IBEAM_PASSWORD", "hunter2"),
            ("IBEAM_TWO_FA_HANDLER", "GOOGLE_MSG"),
            ("IBEAM_GATEWAY_DIR", "/srv/clientportal.gw"),
            ("IBEAM_REQUEST_RETRIES", "2"),
            ("IBEAM_SOMETHING_NEW", "x"),
        ])
        .unwrap();
        let notes = env.notes.join("\n");
        for name in [
            "IBEAM_ACCOUNT",
            "IBEAM_PASSWORD",
            "IBEAM_TWO_FA_HANDLER",
            "IBEAM_GATEWAY_DIR",
            "IBEAM_REQUEST_RETRIES",
            "IBEAM_SOMETHING_NEW",
        ] {
            assert_eq!(notes.matches(name).count(), 1, "{name}: {notes}");
        }
        for value in ["someuser", "hunter2", "GOOGLE_MSG", "/srv"] {
            assert!(!notes.contains(value), "{value}: {notes}");
        }
        assert!(
            notes.contains(
                "ignored IBEAM_ACCOUNT, IBEAM_PASSWORD, because the session logs in with OAuth"
            ),
            "{notes}"
        );
    }

    #[test]
    fn bad_values_name_the_variable_and_what_would_do() {
        for (name, value, expected) in [
            (GATEWAY_BASE_URL, "localhost:5000", "https://"),
            (GATEWAY_BASE_URL, "ftp://localhost", "https://"),
            (HEALTH_SERVER_PORT, "70000", "port number"),
            (MAX_FAILED_AUTH, "0", "1 to 100"),
            (MAINTENANCE_INTERVAL, "-5", "seconds"),
            (MAINTENANCE_INTERVAL, "NaN", "seconds"),
            (START_ACTIVE, "maybe", "true or false"),
            (LOG_LEVEL, "loud", "DEBUG, INFO"),
        ] {
            let err = IbeamEnv::from_vars(&[(name, value)]).unwrap_err();
            assert_eq!(err.name, name);
            let text = err.to_string();
            assert!(text.starts_with(name) && text.contains(expected), "{text}");
        }
    }
}
