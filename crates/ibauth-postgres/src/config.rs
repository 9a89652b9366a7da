//! The connection URL: what tokio-postgres is given, whether and how TLS is used, and how the
//! store is named in logs and errors (never with its password).

use std::net::IpAddr;
use std::str::FromStr;

use ibauth::coord::CoordError;
use rustls_pki_types::CertificateDer;
use tokio_postgres::config::{Host, SslMode};

/// Where TLS trust comes from.
#[derive(Debug, Clone)]
pub(crate) enum Roots {
    /// The platform's verifier (the system's trust store), as ibauth's HTTPS client uses.
    Platform,
    /// Only these certificates (`sslrootcert=FILE`, or the builder's PEM).
    Only(Vec<CertificateDer<'static>>),
}

/// A parsed URL.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) pg: tokio_postgres::Config,
    /// `None`: plain TCP or a unix socket.
    pub(crate) tls: Option<Roots>,
    pub(crate) describe: String,
    /// The password, to be blanked out of any message that might echo it.
    pub(crate) secret: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("store", &self.describe)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Target {
    /// Parses a `postgres://` (or `postgresql://`) URL.
    ///
    /// `sslmode`: `disable` (plain), `prefer` (TLS when the server offers it), `require`,
    /// `verify-ca`, `verify-full` (TLS or nothing). Whenever TLS is used the server's
    /// certificate chain *and* name are verified — `require` and `verify-ca` verify as much as
    /// `verify-full`. Without `sslmode`, loopback addresses and unix sockets are plain and
    /// every other host needs TLS. `sslrootcert=FILE` trusts only the CA certificates in FILE
    /// (PEM); `sslrootcert=system`, or none, the platform's trust store.
    pub(crate) fn parse(url: &str) -> Result<Target, CoordError> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| {
                CoordError::Config(
                    "a PostgreSQL store is a postgres://user:password@host:port/database URL"
                        .into(),
                )
            })?;
        let (base, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let mut sslmode = None;
        let mut rootcert = None;
        let mut kept = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => sslmode = Some(decode(value)),
                "sslrootcert" => rootcert = Some(decode(value)),
                _ => kept.push(pair),
            }
        }
        let mode = match sslmode.as_deref() {
            None => None,
            Some("disable") => Some(SslMode::Disable),
            Some("prefer") => Some(SslMode::Prefer),
            Some("require" | "verify-ca" | "verify-full") => Some(SslMode::Require),
            Some(other) => {
                return Err(CoordError::Config(format!(
                    "sslmode={other} is not supported (disable, prefer, require, verify-ca or verify-full; TLS is always verified)"
                )));
            }
        };
        let mut rebuilt = format!("postgres://{base}");
        if !kept.is_empty() {
            rebuilt.push('?');
            rebuilt.push_str(&kept.join("&"));
        }
        let mut pg = tokio_postgres::Config::from_str(&rebuilt).map_err(|e| {
            // The driver's parse errors name the option, never its value.
            CoordError::Config(format!("invalid PostgreSQL URL: {e}"))
        })?;
        if pg.get_hosts().is_empty() {
            return Err(CoordError::Config(
                "the PostgreSQL URL names no host (postgres://user@host:5432/database, or host=/path/to/socket/dir)".into(),
            ));
        }
        let local = pg.get_hosts().iter().all(is_local);
        let mode = mode.unwrap_or(if local {
            SslMode::Disable
        } else {
            SslMode::Require
        });
        pg.ssl_mode(mode);
        let tls = match mode {
            SslMode::Disable => None,
            _ => Some(match rootcert.as_deref() {
                None | Some("system") => Roots::Platform,
                Some(path) => Roots::Only(read_roots(path)?),
            }),
        };
        let secret = pg
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .filter(|p| !p.is_empty());
        let describe = describe(&pg);
        Ok(Target {
            pg,
            tls,
            describe,
            secret,
        })
    }

    /// Blanks the password out of messages (a driver or server message could echo it).
    pub(crate) fn redactor(&self) -> Redactor {
        Redactor(self.secret.clone())
    }
}

/// Blanks the URL's password out of messages.
#[derive(Clone, Default)]
pub(crate) struct Redactor(Option<String>);

impl Redactor {
    pub(crate) fn redact(&self, detail: String) -> String {
        match &self.0 {
            Some(secret) if secret.len() >= 3 && detail.contains(secret.as_str()) => {
                detail.replace(secret.as_str(), "***")
            }
            _ => detail,
        }
    }
}

/// A loopback address, `localhost` or a unix socket: plain by default.
fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            let bare = name.trim_start_matches('[').trim_end_matches(']');
            name.eq_ignore_ascii_case("localhost")
                || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// `postgres://user@host:port/database`: no password, no options.
fn describe(pg: &tokio_postgres::Config) -> String {
    let ports = pg.get_ports();
    let hosts: Vec<String> = pg
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                Host::Tcp(name) if name.contains(':') && !name.starts_with('[') => {
                    format!("[{name}]")
                }
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => encode(&path.display().to_string()),
            };
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            format!("{name}:{port}")
        })
        .collect();
    let user = pg.get_user().map(|u| format!("{}@", encode(u)));
    format!(
        "postgres://{}{}/{}",
        user.unwrap_or_default(),
        hosts.join(","),
        encode(pg.get_dbname().or(pg.get_user()).unwrap_or(""))
    )
}

fn read_roots(path: &str) -> Result<Vec<CertificateDer<'static>>, CoordError> {
    let pem =
        std::fs::read(path).map_err(|e| CoordError::Config(format!("sslrootcert {path}: {e}")))?;
    parse_roots(&pem).map_err(|e| CoordError::Config(format!("sslrootcert {path}: {e}")))
}

/// The certificates of a PEM bundle (at least one).
pub(crate) fn parse_roots(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the PEM bundle".into());
    }
    Ok(certs)
}

/// Percent-decoding of a query value (`+` stays `+`, as in libpq).
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = value.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Target {
        Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn descriptions_never_carry_the_password() {
        let t = parse("postgres://ib:s3cret-pw@db.example:6543/fleet?application_name=x");
        assert_eq!(t.describe, "postgres://ib@db.example:6543/fleet");
        assert_eq!(
            t.redactor()
                .redact("server said s3cret-pw twice: s3cret-pw".into()),
            "server said *** twice: ***"
        );
        let t = parse("postgresql://u:p@h1:1,h2:2/d?sslmode=disable");
        assert_eq!(t.describe, "postgres://u@h1:1,h2:2/d");
        let t = parse("postgres://u@%2Ftmp%2Fpg dir:5433/d");
        assert_eq!(t.describe, "postgres://u@%2Ftmp%2Fpg%20dir:5433/d");
        assert!(t.tls.is_none(), "unix sockets are plain");
    }

    #[test]
    fn tls_is_required_off_the_loopback_and_plain_only_when_asked() {
        assert!(parse("postgres://u@127.0.0.1/d").tls.is_none());
        assert!(parse("postgres://u@localhost/d").tls.is_none());
        assert!(parse("postgres://u@[::1]:5432/d").tls.is_none());
        let remote = parse("postgres://u@db.example/d");
        assert!(matches!(remote.tls, Some(Roots::Platform)));
        assert_eq!(remote.pg.get_ssl_mode(), SslMode::Require);
        let plain = parse("postgres://u@db.example/d?sslmode=disable");
        assert!(plain.tls.is_none());
        assert_eq!(plain.pg.get_ssl_mode(), SslMode::Disable);
        for mode in ["require", "verify-ca", "verify-full"] {
            let t = parse(&format!("postgres://u@127.0.0.1/d?sslmode={mode}"));
            assert_eq!(t.pg.get_ssl_mode(), SslMode::Require, "{mode}");
            assert!(t.tls.is_some(), "{mode}");
        }
        assert_eq!(
            parse("postgres://u@db/d?sslmode=prefer").pg.get_ssl_mode(),
            SslMode::Prefer
        );
        assert!(matches!(
            Target::parse("postgres://u@db/d?sslmode=allow"),
            Err(CoordError::Config(_))
        ));
    }

    #[test]
    fn bad_urls_are_config_errors_that_do_not_echo_them() {
        for url in [
            "mysql://u:hunter22@db/d",
            "postgres://u:hunter22@db/d?bogus_option=1",
            "postgres://u:hunter22@db:notaport/d",
            "postgres://u:hunter22@db/d?sslrootcert=/nonexistent/ca.pem",
        ] {
            let err = Target::parse(url).expect_err(url).to_string();
            assert!(!err.contains("hunter22"), "{err}");
            assert!(
                matches!(Target::parse(url), Err(CoordError::Config(_))),
                "{err}"
            );
        }
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(decode("%2Fetc%2Fca.pem"), "/etc/ca.pem");
        assert_eq!(decode("a%zz%4"), "a%zz%4");
        assert_eq!(decode("plain"), "plain");
    }
}
