//! The registry of top-level settings that are not OAuth 2.0 credentials — how the session is
//! kept ([`crate::policy::Policy`]), which auth method is used ([`crate::AuthConfig`]) and the
//! sections other modules read as a whole — so the credentials reader ([`crate::Config`]) can
//! warn about unknown keys without depending on the modules that read them.

/// How the session is kept: YAML key, our variable, ibind's variable (or "").
pub(crate) const SETTINGS: &[(&str, &str, &str)] = &[
    (
        "tickle_interval",
        "IBAUTH_TICKLE_INTERVAL",
        "IBIND_TICKLER_INTERVAL",
    ),
    ("compete", "IBAUTH_COMPETE", ""),
    ("init_oauth", "IBAUTH_INIT_OAUTH", "IBIND_INIT_OAUTH"),
    (
        "init_brokerage_session",
        "IBAUTH_INIT_BROKERAGE_SESSION",
        "IBIND_INIT_BROKERAGE_SESSION",
    ),
    ("maintain", "IBAUTH_MAINTAIN", "IBIND_MAINTAIN_OAUTH"),
    (
        "logout_on_shutdown",
        "IBAUTH_LOGOUT_ON_SHUTDOWN",
        "IBIND_SHUTDOWN_OAUTH",
    ),
    ("max_failed_logins", "IBAUTH_MAX_FAILED_LOGINS", ""),
    ("renew_margin", "IBAUTH_RENEW_MARGIN", ""),
    ("failover_hosts", "IBAUTH_FAILOVER_HOSTS", ""),
    ("shutdown_timeout", "IBAUTH_SHUTDOWN_TIMEOUT", ""),
    ("token_file", "IBAUTH_TOKEN_FILE", ""),
    ("max_body", "IBAUTH_MAX_BODY", ""),
    ("store", "IBAUTH_STORE", ""),
    ("store_key_file", "IBAUTH_STORE_KEY_FILE", ""),
    ("lease_ttl", "IBAUTH_LEASE_TTL", ""),
];

/// ibind's names for two of the keys, accepted in the YAML file too.
pub(crate) const ALIASES: &[(&str, &str)] = &[
    ("maintain_oauth", "maintain"),
    ("shutdown_oauth", "logout_on_shutdown"),
];

/// Pacing switches read from the environment (the `pacing:` section has the rest).
pub(crate) const PACING_ENV: &[&str] = &["IBAUTH_PACING", "IBAUTH_PACING_MAX_WAIT"];

/// Which auth method to use (`oauth2`, `oauth1a`, `third_party`).
pub(crate) const AUTH: (&str, &str) = ("auth", "IBAUTH_AUTH");

/// Sections read as a whole by their own module.
pub(crate) const SECTIONS: &[&str] = &["oauth1a", "pacing"];

/// Whether `key` is a top-level YAML key of the session manager's.
pub(crate) fn is_policy_key(key: &str) -> bool {
    SETTINGS.iter().any(|(k, _, _)| *k == key) || ALIASES.iter().any(|(a, _)| *a == key)
}

/// Whether `key` is a top-level YAML key read outside the credentials.
pub(crate) fn is_session_key(key: &str) -> bool {
    is_policy_key(key) || key == AUTH.0 || SECTIONS.contains(&key)
}

/// Whether `name` is an `IBAUTH_*` variable read outside the credentials.
pub(crate) fn is_session_env(name: &str) -> bool {
    SETTINGS.iter().any(|(_, ours, _)| *ours == name)
        || name == AUTH.1
        || PACING_ENV.contains(&name)
}

/// Every top-level key read outside the credentials (for did-you-mean suggestions).
pub(crate) fn session_keys() -> impl Iterator<Item = &'static str> {
    SETTINGS
        .iter()
        .map(|(k, _, _)| *k)
        .chain(std::iter::once(AUTH.0))
        .chain(SECTIONS.iter().copied())
}

/// Every `IBAUTH_*` variable read outside the credentials.
pub(crate) fn session_env() -> impl Iterator<Item = &'static str> {
    SETTINGS
        .iter()
        .map(|(_, e, _)| *e)
        .chain(std::iter::once(AUTH.1))
        .chain(PACING_ENV.iter().copied())
}
