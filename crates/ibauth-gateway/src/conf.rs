//! The Client Portal Gateway's `conf.yaml` (`clientportal.gw/root/conf.yaml`), read unchanged:
//! a user moving from IBKR's gateway points `--conf` at the file they already have.
//!
//! Honoured: `listenPort`, `listenSsl`, `proxyRemoteHost` (the IBKR host the session talks to),
//! `cors` (`origin.allowed`, `allowCredentials`) and `ips` (`allow`, `deny`, with the gateway's
//! `*` wildcards, plus CIDR blocks and IPv6). Every other key is reported once in a note that
//! says why it means nothing here (most drive the browser login or the JVM).
//!
//! ```
//! use ibauth_gateway::conf::CpConf;
//! let text = "listenPort: 5000\nlistenSsl: false\nsslPwd: mywebapi\nips:\n  allow: [127.0.0.1, 192.*]\n";
//! let conf = CpConf::parse(text, "conf.yaml".as_ref())?;
//! assert_eq!(conf.listen_port, Some(5000));
//! assert_eq!(conf.listen_ssl, Some(false));
//! assert!(conf.access.as_ref().unwrap().allows("192.0.2.7".parse().unwrap()));
//! // Reported, and never with its value.
//! assert!(conf.notes.iter().any(|n| n.contains("sslPwd") && !n.contains("mywebapi")));
//! # Ok::<(), ibauth_gateway::conf::ConfError>(())
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde_json::Value;
use url::Url;

use crate::access::AccessList;
use crate::options::Cors;

/// The IBKR host the stock `conf.yaml` names, and the session's default.
pub const DEFAULT_REMOTE_HOST: &str = "https://api.ibkr.com";

/// What a `conf.yaml` sets that the gateway honours; `None` where the file is silent.
#[derive(Debug, Clone)]
pub struct CpConf {
    /// The file read (for messages).
    pub path: PathBuf,
    /// `listenPort`: the port clients connect to.
    pub listen_port: Option<u16>,
    /// `listenSsl`: HTTPS (true) or plain HTTP (false).
    pub listen_ssl: Option<bool>,
    /// `proxyRemoteHost`: the IBKR host requests go to (scheme, host and port only).
    pub remote_host: Option<Url>,
    /// `ips.allow` / `ips.deny`.
    pub access: Option<AccessList>,
    /// `cors`.
    pub cors: Option<Cors>,
    /// One line per thing the file says that the gateway does not do, and why (no values:
    /// the file holds the keystore password).
    pub notes: Vec<String>,
}

/// Why a `conf.yaml` cannot be used; each says which file and key, and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfError {
    /// The file cannot be read.
    #[error(
        "cannot read the gateway's conf.yaml {}: {source}; check the path given with --conf",
        .path.display()
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML, or not a mapping of settings.
    #[error(
        "{}: not a gateway conf.yaml ({detail}); fix the YAML, or start again from the stock clientportal.gw/root/conf.yaml",
        .path.display()
    )]
    Yaml {
        /// The file.
        path: PathBuf,
        /// What the parser said (without quoting the file: it holds a password).
        detail: String,
    },
    /// A setting has a value the gateway cannot use.
    #[error("{}: `{key}`: {reason}", .path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// The setting, dotted (`ips.allow`).
        key: String,
        /// What is wrong and what would do.
        reason: String,
    },
}

/// Keys read only by the Client Portal Gateway, grouped by why they mean nothing here.
const IGNORED: &[(&[&str], &str)] = &[
    (
        &["sslCert", "sslPwd"],
        "they name a Java keystore: give PEM files with --cert and --key, or let the gateway make its self-signed certificate in --state-dir",
    ),
    (
        &["ip2loc", "authDelay", "ccp"],
        "they drive the browser login, and the session logs in with OAuth instead",
    ),
    (
        &["ssoPing"],
        "it keeps the browser sign-on alive; the session's keep-alive does that (IBEAM_MAINTENANCE_INTERVAL or tickle_interval sets how often)",
    ),
    (
        &["svcEnvironment"],
        "only the production environment (/v1/…) is served through OAuth",
    ),
    (
        &["portalBaseURL", "webApps", "twsBaseURL"],
        "they serve the gateway's bundled web pages, which the gateway does not have",
    ),
    (
        &["serverOptions"],
        "they size Vert.x's thread pools; the gateway sizes its own",
    ),
];

impl CpConf {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Checks `text`, the file at `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfError> {
        let mut conf = CpConf {
            path: path.to_owned(),
            listen_port: None,
            listen_ssl: None,
            remote_host: None,
            access: None,
            cors: None,
            notes: Vec::new(),
        };
        let blank = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .all(|l| matches!(l, "" | "---" | "..."));
        if blank {
            return Ok(conf);
        }
        let yaml_error = |detail: String| ConfError::Yaml {
            path: path.to_owned(),
            detail,
        };
        let root: Value = serde_saphyr::from_str(text)
            .map_err(|e| yaml_error(e.without_snippet().to_string()))?;
        let map = match root {
            Value::Object(map) => map,
            Value::Null => return Ok(conf),
            _ => {
                return Err(yaml_error(
                    "the top level is not a mapping of settings".into(),
                ));
            }
        };
        let key_error = |key: &str, reason: String| ConfError::Key {
            path: path.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let mut remote_ssl = None;
        let mut ignored: Vec<(&str, Vec<String>)> = Vec::new();
        let mut unknown = Vec::new();
        for (key, value) in &map {
            match key.as_str() {
                "listenPort" => {
                    conf.listen_port = Some(
                        integer(value)
                            .and_then(|n| u16::try_from(n).ok())
                            .ok_or_else(|| {
                                key_error(key, "must be a port number from 0 to 65535".into())
                            })?,
                    );
                }
                "listenSsl" => {
                    conf.listen_ssl = Some(boolean(value).ok_or_else(|| {
                        key_error(key, "must be true (HTTPS) or false (plain HTTP)".into())
                    })?);
                }
                "proxyRemoteHost" => {
                    let text = value.as_str().unwrap_or_default();
                    conf.remote_host = Some(remote_host(text).map_err(|r| key_error(key, r))?);
                }
                "proxyRemoteSsl" => {
                    remote_ssl = Some(
                        boolean(value)
                            .ok_or_else(|| key_error(key, "must be true or false".into()))?,
                    );
                }
                "cors" => conf.cors = Some(cors(value, &mut conf.notes, path, &key_error)?),
                "ips" => {
                    conf.access = Some(ips(value, &mut conf.notes, path, &key_error)?);
                }
                other => match IGNORED.iter().find(|(keys, _)| keys.contains(&other)) {
                    Some((_, why)) => match ignored.iter_mut().find(|(w, _)| w == why) {
                        Some((_, keys)) => keys.push(other.to_owned()),
                        None => ignored.push((why, vec![other.to_owned()])),
                    },
                    None => unknown.push(other.to_owned()),
                },
            }
        }
        // `proxyRemoteSsl` only repeats what the host's scheme says; said otherwise, the scheme
        // wins (IBKR is only reached over HTTPS).
        let scheme_ssl = conf
            .remote_host
            .as_ref()
            .is_none_or(|u| u.scheme() == "https");
        if remote_ssl.is_some_and(|ssl| ssl != scheme_ssl) {
            conf.notes.push(format!(
                "{}: ignored proxyRemoteSsl, because the scheme of proxyRemoteHost decides ({})",
                path.display(),
                if scheme_ssl { "https" } else { "http" }
            ));
        }
        for (why, keys) in ignored {
            conf.notes.push(format!(
                "{}: ignored {}, because {why}",
                path.display(),
                keys.join(", ")
            ));
        }
        if !unknown.is_empty() {
            conf.notes.push(format!(
                "{}: ignored {}, because the gateway has no such setting",
                path.display(),
                unknown.join(", ")
            ));
        }
        Ok(conf)
    }
}

fn integer(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => Some(true),
            "false" | "no" | "off" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// `proxyRemoteHost`: an http(s) URL with a host and nothing after it.
fn remote_host(text: &str) -> Result<Url, String> {
    let hint = "must be the IBKR host as a URL, such as https://api.ibkr.com";
    let url = Url::parse(text.trim()).map_err(|e| format!("{hint} ({e})"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(hint.to_owned());
    }
    if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
        return Err(format!(
            "{hint}, without a path, query or user: the gateway adds /v1/api/… itself"
        ));
    }
    // The session's requests carry its tokens: in the clear only to this machine.
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        return Err(format!(
            "{hint}: plain http only to this machine (localhost), as IBKR is reached over https"
        ));
    }
    Ok(url)
}

fn cors<F>(
    value: &Value,
    notes: &mut Vec<String>,
    path: &Path,
    key_error: &F,
) -> Result<Cors, ConfError>
where
    F: Fn(&str, String) -> ConfError,
{
    let Value::Object(map) = value else {
        return Err(key_error(
            "cors",
            "must be a mapping with origin.allowed and allowCredentials".into(),
        ));
    };
    let mut cors = Cors::default();
    let mut other = Vec::new();
    for (key, value) in map {
        match key.as_str() {
            // The stock file writes `origin.allowed:` as one key; a nested `origin: {allowed:}`
            // means the same.
            "origin.allowed" => cors.allowed_origin = origin(value, key_error)?,
            "origin" => match value.get("allowed") {
                Some(v) => cors.allowed_origin = origin(v, key_error)?,
                None => other.push("cors.origin".to_owned()),
            },
            "allowCredentials" => {
                cors.allow_credentials = boolean(value).ok_or_else(|| {
                    key_error("cors.allowCredentials", "must be true or false".into())
                })?;
            }
            _ => other.push(format!("cors.{key}")),
        }
    }
    if !other.is_empty() {
        notes.push(format!(
            "{}: ignored {}, because the gateway sets only Access-Control-Allow-Origin and -Credentials",
            path.display(),
            other.join(", ")
        ));
    }
    Ok(cors)
}

fn origin<F>(value: &Value, key_error: &F) -> Result<Option<String>, ConfError>
where
    F: Fn(&str, String) -> ConfError,
{
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        // A header value: no control characters (a newline would split the header).
        Value::String(s) if !s.chars().any(char::is_control) => Ok(Some(s.trim().to_owned())),
        _ => Err(key_error(
            "cors.origin.allowed",
            "must be * or one origin, such as https://app.example".into(),
        )),
    }
}

fn ips<F>(
    value: &Value,
    notes: &mut Vec<String>,
    path: &Path,
    key_error: &F,
) -> Result<AccessList, ConfError>
where
    F: Fn(&str, String) -> ConfError,
{
    let Value::Object(map) = value else {
        return Err(key_error(
            "ips",
            "must be a mapping with allow and deny lists".into(),
        ));
    };
    let mut allow = entries(map.get("allow"), "ips.allow", notes, path, key_error)?;
    let deny = entries(map.get("deny"), "ips.deny", notes, path, key_error)?;
    let other: Vec<String> = map
        .keys()
        .filter(|k| !matches!(k.as_str(), "allow" | "deny"))
        .map(|k| format!("ips.{k}"))
        .collect();
    if !other.is_empty() {
        notes.push(format!(
            "{}: ignored {}, because only ips.allow and ips.deny exist",
            path.display(),
            other.join(", ")
        ));
    }
    if allow.is_empty() {
        return Err(key_error(
            "ips.allow",
            "is empty, so no client could use the gateway: list at least 127.0.0.1".into(),
        ));
    }
    let list = AccessList::new(&allow, &deny).map_err(|e| key_error("ips", e.to_string()))?;
    // IBKR's gateway listens on IPv4 only, so `localhost` always reached it as 127.0.0.1; this
    // one also listens on IPv6, where `localhost` is ::1 first (curl, browsers). The same
    // machine stays allowed.
    let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    if list.allows(v4) && !list.allows(v6) && !list.denies(v6) {
        allow.push("::1".to_owned());
        notes.push(format!(
            "{}: ips.allow lets in 127.0.0.1, so ::1 (the same machine over IPv6) is let in too",
            path.display()
        ));
        return AccessList::new(&allow, &deny).map_err(|e| key_error("ips", e.to_string()));
    }
    Ok(list)
}

/// A list of patterns; entries that no address can match (`212.90.324.10`, which the stock
/// file ships in `ips.deny`) are left out with a note rather than refused, as they change
/// nothing either way.
fn entries<F>(
    value: Option<&Value>,
    key: &str,
    notes: &mut Vec<String>,
    path: &Path,
    key_error: &F,
) -> Result<Vec<String>, ConfError>
where
    F: Fn(&str, String) -> ConfError,
{
    let items: Vec<&Value> = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(single @ Value::String(_)) => vec![single],
        Some(_) => {
            return Err(key_error(
                key,
                "must be a list of addresses or patterns (127.0.0.1, 192.*, 10.0.0.0/8)".into(),
            ));
        }
    };
    let mut out = Vec::new();
    for item in items {
        let text = match item {
            Value::String(s) => s.trim().to_owned(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(key_error(
                    key,
                    "must be a list of addresses or patterns (127.0.0.1, 192.*, 10.0.0.0/8)".into(),
                ));
            }
        };
        if let Err(e) = crate::access::AccessList::new(&[text.as_str()], &[] as &[&str]) {
            if matches_nothing(&text) {
                notes.push(format!(
                    "{}: {key} entry `{text}` is not an IPv4 address (an octet is over 255) and matches no client; left out",
                    path.display()
                ));
                continue;
            }
            return Err(key_error(key, e.to_string()));
        }
        out.push(text);
    }
    Ok(out)
}

/// Dotted decimal (optionally ending in `*`) with an octet over 255: the shape of an address
/// pattern, but one no address has.
fn matches_nothing(entry: &str) -> bool {
    let parts: Vec<&str> = entry.split('.').collect();
    let (last, numbers) = match parts.split_last() {
        Some((&"*", rest)) => (true, rest),
        _ => (false, &parts[..]),
    };
    let full = if last {
        (1..=3).contains(&numbers.len())
    } else {
        numbers.len() == 4
    };
    full && numbers
        .iter()
        .all(|p| !p.is_empty() && p.len() <= 10 && p.bytes().all(|b| b.is_ascii_digit()))
        && numbers
            .iter()
            .any(|p| p.parse::<u64>().is_ok_and(|n| n > 255))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STOCK: &str = include_str!("../tests/fixtures/conf.yaml");

    fn parse(text: &str) -> Result<CpConf, ConfError> {
        CpConf::parse(text, Path::new("root/conf.yaml"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_stock_file_reads_unchanged() {
        let conf = parse(STOCK).unwrap();
        assert_eq!(conf.listen_port, Some(5000));
        assert_eq!(conf.listen_ssl, Some(true));
        assert_eq!(
            conf.remote_host.as_ref().map(Url::as_str),
            Some("https://api.ibkr.com/")
        );
        assert_eq!(
            conf.cors,
            Some(Cors {
                allowed_origin: Some("*".into()),
                allow_credentials: false
            })
        );
        let access = conf.access.as_ref().unwrap();
        for yes in [
            "192.168.1.9",
            "131.216.4.5",
            "127.0.0.1",
            "::1",
            "::ffff:192.0.2.1",
        ] {
            assert!(access.allows(ip(yes)), "{yes}");
        }
        // The Docker bridge is not in the stock list: the top complaint, kept as IBKR ships it.
        for no in [
            "172.17.0.1",
            "10.0.0.2",
            "131.217.0.1",
            "fd00::1",
            "127.0.0.2",
        ] {
            assert!(!access.allows(ip(no)), "{no}");
        }
        let notes = conf.notes.join("\n");
        // Every other key, once, and no value (sslPwd is a password).
        for key in [
            "ip2loc",
            "ccp",
            "svcEnvironment",
            "sslCert",
            "sslPwd",
            "authDelay",
            "portalBaseURL",
            "serverOptions",
            "webApps",
        ] {
            assert_eq!(notes.matches(key).count(), 1, "{key}:\n{notes}");
        }
        assert!(!notes.contains("mywebapi"), "{notes}");
        assert!(
            !notes.contains("proxyRemoteSsl"),
            "agrees with https: {notes}"
        );
        assert!(notes.contains("`212.90.324.10`"), "{notes}");
        assert!(notes.contains("::1"), "{notes}");
        assert!(
            notes.lines().all(|l| l.starts_with("root/conf.yaml: ")),
            "{notes}"
        );
        assert!(
            notes.contains("ignored sslCert, sslPwd, because they name a Java keystore"),
            "{notes}"
        );
    }

    #[test]
    fn wildcards_cidr_and_ipv6() {
        let conf = parse(
            "ips:\n  allow:\n    - 10.*\n    - 172.16.0.0/12\n    - fd00::/8\n    - '*'\n  deny:\n    - 10.9.*\n    - 2001:db8::1\n",
        )
        .unwrap();
        let access = conf.access.unwrap();
        for yes in [
            "10.1.2.3",
            "172.20.0.1",
            "fd12::1",
            "8.8.8.8",
            "2001:db8::2",
        ] {
            assert!(access.allows(ip(yes)), "{yes}");
        }
        for no in ["10.9.0.1", "2001:db8::1", "::ffff:10.9.1.1"] {
            assert!(!access.allows(ip(no)), "{no}");
        }
        // A single entry rather than a list; ::1 not added when 127.0.0.1 is not allowed.
        let conf = parse("ips:\n  allow: 192.168.*\n").unwrap();
        let access = conf.access.unwrap();
        assert!(access.allows(ip("192.168.0.4")));
        assert!(!access.allows(ip("::1")) && !access.allows(ip("127.0.0.1")));
        assert!(conf.notes.is_empty(), "{:?}", conf.notes);
        // ::1 denied stays denied.
        let conf = parse("ips:\n  allow: [127.0.0.1]\n  deny: ['::1']\n").unwrap();
        assert!(!conf.access.unwrap().allows(ip("::1")));
    }

    #[test]
    fn unknown_and_ignored_keys_are_each_reported_once() {
        let conf = parse(
            "listenPort: 5050\ntst: false\nsomethingNew: 1\nssoPing: 5\nproxyRemoteSsl: false\ncors:\n  origin.allowed: https://app.example\n  maxAge: 10\nips:\n  allow: ['*']\n  other: []\n",
        )
        .unwrap();
        assert_eq!(conf.listen_port, Some(5050));
        assert_eq!(conf.listen_ssl, None);
        assert_eq!(
            conf.cors.unwrap().allowed_origin.as_deref(),
            Some("https://app.example")
        );
        let notes = conf.notes.join("\n");
        assert!(
            notes.contains("ignored somethingNew, tst, because the gateway has no such setting"),
            "{notes}"
        );
        for key in ["ssoPing", "proxyRemoteSsl", "cors.maxAge", "ips.other"] {
            assert_eq!(notes.matches(key).count(), 1, "{key}: {notes}");
        }
    }

    #[test]
    fn errors_name_the_file_and_key_and_say_what_to_do() {
        let cases = [
            ("listenPort: 99999\n", "`listenPort`: must be a port number"),
            ("listenPort: five\n", "`listenPort`"),
            ("listenSsl: maybe\n", "`listenSsl`: must be true (HTTPS)"),
            (
                "proxyRemoteHost: api.ibkr.com\n",
                "`proxyRemoteHost`: must be the IBKR host",
            ),
            (
                "proxyRemoteHost: http://api.ibkr.com\n",
                "plain http only to this machine",
            ),
            (
                "proxyRemoteHost: https://api.ibkr.com/v1/api\n",
                "without a path",
            ),
            (
                "ips:\n  allow: [192.*.1]\n",
                "`ips.allow`: `192.*.1` is not an address pattern",
            ),
            (
                "ips:\n  allow: [127.0.0.1]\n  deny: [host.example]\n",
                "`ips.deny`",
            ),
            ("ips:\n  allow: []\n", "list at least 127.0.0.1"),
            ("ips: [1, 2]\n", "`ips`: must be a mapping"),
            ("cors: yes\n", "`cors`"),
            ("cors:\n  origin.allowed: [a]\n", "`cors.origin.allowed`"),
            ("listenPort: [\n", "not a gateway conf.yaml"),
            ("- a\n- b\n", "not a mapping of settings"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with("root/conf.yaml"), "{text}: {err}");
            assert!(err.contains(expected), "{text}: {err}");
        }
        // The parser's complaint does not quote the file (the password is in it).
        let err = parse("sslPwd: secretpw\nlistenPort: [\n")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secretpw"), "{err}");
        let err = CpConf::load(Path::new("/nonexistent/conf.yaml")).unwrap_err();
        assert!(err.to_string().contains("--conf"), "{err}");
    }

    #[test]
    fn an_empty_file_sets_nothing() {
        for text in ["", "# nothing\n", "---\n", "~\n"] {
            let conf = parse(text).unwrap();
            assert!(conf.listen_port.is_none() && conf.access.is_none() && conf.notes.is_empty());
        }
    }

    #[test]
    fn unmatchable_entries_are_only_the_over_255_shape() {
        for yes in ["212.90.324.10", "300.*", "1.2.256.*", "999.1.1.1"] {
            assert!(matches_nothing(yes), "{yes}");
        }
        for no in [
            "1.2.3",
            "1.2.3.4.5",
            "a.b.c.d",
            "300",
            "*.300",
            "1..2.3",
            "300.1",
        ] {
            assert!(!matches_nothing(no), "{no}");
        }
    }
}
