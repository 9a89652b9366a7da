//! The `pacing:` section of a config file, and its translation into [`PacingRules`].

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;

use super::limit::parse_span;
use super::{Limit, PacingRules, Rule};

/// The `pacing:` section of a config file; every key is optional.
///
/// ```
/// use std::time::Duration;
/// use ibauth::pacing::{Method, PacingSettings};
///
/// let settings: PacingSettings = serde_json::from_str(r#"{
///     "profile": "gateway",
///     "max_wait": 5,
///     "margin_ms": 50,
///     "endpoints": [
///         { "path": "/portfolio/accounts", "method": "GET", "limit": "1/10s" },
///         { "path": "/iserver/marketdata/snapshot", "limit": "20/s" }
///     ]
/// }"#).unwrap();
/// let rules = settings.into_rules()?;
/// assert_eq!(rules.global.map(|g| g.to_string()), Some("10/s".into()));
/// assert_eq!(rules.max_wait, Duration::from_secs(5));
/// let rule = rules.rule_for(&Method::GET, "/portfolio/accounts").unwrap();
/// assert_eq!(rule.limit.to_string(), "1/10s");
/// # Ok::<(), ibauth::pacing::PacingConfigError>(())
/// ```
///
/// In YAML:
///
/// ```yaml
/// pacing:
///   enabled: true            # false: nothing is paced
///   profile: ibkr            # or gateway (10/s overall)
///   global: 50/s
///   max_wait: 30             # seconds a call may wait for its turn (or 500ms, 2min)
///   margin_ms: 100           # added to every window
///   pause_without_retry_after: 60   # seconds a budget pauses after a bare 429
///   endpoints:
///     - { path: /portfolio/accounts, method: GET, limit: 1/5s }
///     - { path: /iserver/marketdata/snapshot, limit: 20/s }
///     - { path: /iserver/account/orders, method: GET, limit: 1/5s, also: [/iserver/orders] }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacingSettings {
    /// `false`: [`PacingRules::unlimited`].
    pub enabled: Option<bool>,
    /// `ibkr` (default) or `gateway`: the limits to start from.
    pub profile: Option<String>,
    /// The global limit, such as `50/s`.
    pub global: Option<SettingValue>,
    /// Seconds a call may wait for its turn (a number, or text with a unit: `500ms`, `2min`).
    pub max_wait: Option<SettingValue>,
    /// Milliseconds added to every window.
    pub margin_ms: Option<SettingValue>,
    /// Seconds a budget pauses after a 429 without `Retry-After`.
    pub pause_without_retry_after: Option<SettingValue>,
    /// Endpoint limits, added to the profile's (replacing its rule for the same method and
    /// path).
    pub endpoints: Option<Vec<EndpointSettings>>,
}

/// One entry of `pacing.endpoints`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSettings {
    /// `/portfolio/accounts`, or a prefix such as `/fyi/*`.
    pub path: Option<String>,
    /// `GET`, `POST`, …; absent or `*`: any method.
    pub method: Option<String>,
    /// `1/5s`, `10/s`, `1/min`, `5 concurrent`, …
    pub limit: Option<SettingValue>,
    /// More paths sharing this budget.
    #[serde(default)]
    pub also: Vec<String>,
}

/// A number or text, as YAML and JSON give them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SettingValue {
    /// A whole number.
    Int(u64),
    /// A number with a fraction.
    Float(f64),
    /// Text.
    Text(String),
}

impl std::fmt::Display for SettingValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SettingValue::Int(n) => write!(f, "{n}"),
            SettingValue::Float(x) => write!(f, "{x}"),
            SettingValue::Text(s) => f.write_str(s),
        }
    }
}

/// A `pacing:` setting that cannot be used; names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PacingConfigError {
    /// The key, such as `pacing.endpoints[1].limit`.
    pub key: String,
    /// What is wrong and what would do.
    pub message: String,
}

fn fail(key: impl Into<String>, message: impl Into<String>) -> PacingConfigError {
    PacingConfigError {
        key: key.into(),
        message: message.into(),
    }
}

fn limit(key: &str, value: &SettingValue) -> Result<Limit, PacingConfigError> {
    match value {
        SettingValue::Text(text) => text
            .parse()
            .map_err(|e: super::ParseLimitError| fail(key, e.to_string())),
        other => Err(fail(
            key,
            format!("`{other}` is not a limit such as 10/s, 1/5s, 1/min or 5 concurrent"),
        )),
    }
}

/// A duration: a bare number is in `unit`s, text may carry its own unit.
fn duration(
    key: &str,
    value: &SettingValue,
    unit: Duration,
    example: &str,
) -> Result<Duration, PacingConfigError> {
    let wrong = || {
        fail(
            key,
            format!("`{value}` is not a duration such as {example}"),
        )
    };
    match value {
        SettingValue::Int(n) => u32::try_from(*n)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(wrong),
        SettingValue::Float(x) if x.is_finite() && *x >= 0.0 => {
            Duration::try_from_secs_f64(x * unit.as_secs_f64()).map_err(|_| wrong())
        }
        SettingValue::Float(_) => Err(wrong()),
        SettingValue::Text(text) => parse_span(text, Some(unit)).ok_or_else(wrong),
    }
}

impl PacingSettings {
    /// The rules these settings describe.
    ///
    /// ```
    /// use ibauth::pacing::PacingSettings;
    ///
    /// let settings: PacingSettings = serde_json::from_str(
    ///     r#"{ "endpoints": [ { "path": "/a", "limit": "1/5s" }, { "path": "/b", "limit": "10/x" } ] }"#,
    /// ).unwrap();
    /// assert_eq!(
    ///     settings.into_rules().unwrap_err().to_string(),
    ///     "pacing.endpoints[1].limit: `10/x` is not a limit such as 10/s, 1/5s, 1/min or 5 concurrent",
    /// );
    /// ```
    pub fn into_rules(self) -> Result<PacingRules, PacingConfigError> {
        let mut rules = match self.profile.as_deref().map(str::trim) {
            None | Some("ibkr") => PacingRules::ibkr(),
            Some("gateway") => PacingRules::gateway(),
            Some(other) => {
                return Err(fail(
                    "pacing.profile",
                    format!(
                        "`{other}` is not a profile; use ibkr (IBKR's 50/s per session) or gateway (the Client Portal Gateway's 10/s)"
                    ),
                ));
            }
        };
        if let Some(global) = &self.global {
            rules = rules.with_global(limit("pacing.global", global)?);
        }
        if let Some(v) = &self.max_wait {
            rules.max_wait = duration(
                "pacing.max_wait",
                v,
                Duration::from_secs(1),
                "30, 500ms or 2min",
            )?;
        }
        if let Some(v) = &self.margin_ms {
            rules.margin = duration("pacing.margin_ms", v, Duration::from_millis(1), "100 or 1s")?;
        }
        if let Some(v) = &self.pause_without_retry_after {
            rules.pause_without_retry_after = duration(
                "pacing.pause_without_retry_after",
                v,
                Duration::from_secs(1),
                "60 or 10min",
            )?;
        }
        for (i, endpoint) in self.endpoints.into_iter().flatten().enumerate() {
            let key = |field: &str| format!("pacing.endpoints[{i}].{field}");
            let path = endpoint
                .path
                .filter(|p| !p.trim().is_empty())
                .ok_or_else(|| fail(key("path"), "missing; every endpoint needs a path such as /portfolio/accounts or /fyi/*"))?;
            let method = match endpoint.method.as_deref().map(str::trim) {
                None | Some("*") | Some("") => None,
                Some(m) if m.eq_ignore_ascii_case("any") => None,
                Some(m) => Some(
                    Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                        fail(
                            key("method"),
                            format!(
                                "`{m}` is not an HTTP method such as GET or POST (or * for any)"
                            ),
                        )
                    })?,
                ),
            };
            let limit_value = endpoint.limit.ok_or_else(|| {
                fail(
                    key("limit"),
                    "missing; such as 10/s, 1/5s, 1/min or 5 concurrent",
                )
            })?;
            let mut rule = Rule::new(method, path, limit(&key("limit"), &limit_value)?);
            rule.also = endpoint.also;
            rules = rules.with_endpoint(rule);
        }
        if self.enabled == Some(false) {
            // Checked last, so a mistake in a section switched off still shows.
            return Ok(PacingRules {
                max_wait: rules.max_wait,
                ..PacingRules::unlimited()
            });
        }
        Ok(rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> PacingSettings {
        #[derive(Deserialize)]
        struct File {
            pacing: PacingSettings,
        }
        serde_saphyr::from_str::<File>(text).expect("YAML").pacing
    }

    #[test]
    fn the_documented_yaml_gives_the_documented_rules() {
        let rules = yaml(
            "pacing:\n  enabled: true\n  profile: ibkr\n  global: 40/s\n  max_wait: 30\n  margin_ms: 150\n  pause_without_retry_after: 2min\n  endpoints:\n    - { path: /portfolio/accounts, method: get, limit: 1/10s }\n    - { path: /iserver/marketdata/snapshot, limit: 20/s }\n    - { path: /x/*, method: '*', limit: 3 concurrent, also: [/y] }\n",
        )
        .into_rules()
        .unwrap();
        assert_eq!(rules.global, Some("40/s".parse().unwrap()));
        assert_eq!(rules.max_wait, Duration::from_secs(30));
        assert_eq!(rules.margin, Duration::from_millis(150));
        assert_eq!(rules.pause_without_retry_after, Duration::from_secs(120));
        let limit = |m: Method, p: &str| rules.rule_for(&m, p).map(|r| r.limit.to_string());
        assert_eq!(
            limit(Method::GET, "/portfolio/accounts"),
            Some("1/10s".into())
        );
        // The profile's GET rule stays for GET; the any-method rule adds to it.
        assert_eq!(
            limit(Method::GET, "/iserver/marketdata/snapshot"),
            Some("10/s".into())
        );
        assert_eq!(
            limit(Method::POST, "/iserver/marketdata/snapshot"),
            Some("20/s".into())
        );
        assert_eq!(limit(Method::PUT, "/x/1"), Some("3 concurrent".into()));
        assert_eq!(limit(Method::PUT, "/y"), Some("3 concurrent".into()));
        assert_eq!(
            rules.endpoints.len(),
            PacingRules::ibkr().endpoints.len() + 2
        );
    }

    #[test]
    fn an_empty_section_is_the_ibkr_profile_and_disabled_is_unlimited() {
        assert_eq!(
            PacingSettings::default().into_rules(),
            Ok(PacingRules::ibkr())
        );
        let gateway = yaml("pacing:\n  profile: gateway\n").into_rules().unwrap();
        assert_eq!(gateway, PacingRules::gateway());
        let off = yaml("pacing:\n  enabled: false\n  max_wait: 3\n")
            .into_rules()
            .unwrap();
        assert!(off.global.is_none() && off.endpoints.is_empty());
        assert_eq!(off.max_wait, Duration::from_secs(3));
    }

    #[test]
    fn durations_take_numbers_and_units() {
        for (text, want) in [
            ("max_wait: 2.5", Duration::from_millis(2500)),
            ("max_wait: '45'", Duration::from_secs(45)),
            ("max_wait: 500ms", Duration::from_millis(500)),
            ("max_wait: 2min", Duration::from_secs(120)),
            ("max_wait: 0", Duration::ZERO),
        ] {
            let rules = yaml(&format!("pacing:\n  {text}\n")).into_rules().unwrap();
            assert_eq!(rules.max_wait, want, "{text}");
        }
        let rules = yaml("pacing:\n  margin_ms: 1s\n").into_rules().unwrap();
        assert_eq!(rules.margin, Duration::from_secs(1));
    }

    #[test]
    fn every_error_names_its_key_and_the_fix() {
        let cases = [
            (
                "profile: fast",
                "pacing.profile: `fast` is not a profile; use ibkr",
            ),
            (
                "global: 50",
                "pacing.global: `50` is not a limit such as 10/s",
            ),
            (
                "global: 50/lightyear",
                "pacing.global: `50/lightyear` is not a limit",
            ),
            (
                "max_wait: soon",
                "pacing.max_wait: `soon` is not a duration such as 30, 500ms or 2min",
            ),
            ("max_wait: -1", "pacing.max_wait: `-1` is not a duration"),
            (
                "max_wait: 99999999999999",
                "pacing.max_wait: `99999999999999` is not a duration",
            ),
            (
                "margin_ms: lots",
                "pacing.margin_ms: `lots` is not a duration such as 100 or 1s",
            ),
            (
                "pause_without_retry_after: x",
                "pacing.pause_without_retry_after: `x` is not a duration",
            ),
            (
                "endpoints:\n    - { path: /a, limit: 1/s }\n    - { path: /b, limit: 10/x }",
                "pacing.endpoints[1].limit: `10/x` is not a limit such as 10/s, 1/5s, 1/min or 5 concurrent",
            ),
            (
                "endpoints:\n    - { limit: 1/s }",
                "pacing.endpoints[0].path: missing; every endpoint needs a path",
            ),
            (
                "endpoints:\n    - { path: /a }",
                "pacing.endpoints[0].limit: missing; such as 10/s",
            ),
            (
                "endpoints:\n    - { path: /a, limit: 0/s }",
                "pacing.endpoints[0].limit: `0/s` is not a limit such as 10/s, 1/5s, 1/min or 5 concurrent (the count must be at least 1)",
            ),
            (
                "endpoints:\n    - { path: /a, method: 'G T', limit: 1/s }",
                "pacing.endpoints[0].method: `G T` is not an HTTP method such as GET or POST (or * for any)",
            ),
            // A mistake in a switched-off section still shows.
            (
                "enabled: false\n  global: nope",
                "pacing.global: `nope` is not a limit",
            ),
        ];
        for (text, want) in cases {
            let err = yaml(&format!("pacing:\n  {text}\n"))
                .into_rules()
                .unwrap_err();
            assert!(
                err.to_string().starts_with(want),
                "{text}\n got: {err}\nwant: {want}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_the_reader() {
        #[derive(Debug, Deserialize)]
        struct File {
            #[allow(dead_code)]
            pacing: PacingSettings,
        }
        let err = serde_saphyr::from_str::<File>("pacing:\n  max_wiat: 3\n").unwrap_err();
        assert!(err.to_string().contains("max_wiat"), "{err}");
    }
}
