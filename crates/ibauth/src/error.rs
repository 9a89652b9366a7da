//! One error type for the whole client, every variant naming the step that failed.
//!
//! Messages never carry a secret: IBKR's own message is kept (it is what users search for), but
//! request bodies, tokens and key material never reach an error.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A step of the login or of the brokerage session, as named in errors and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Looking up the caller's public IP address.
    PublicIp,
    /// `POST /oauth2/api/v1/token`: client assertion → access token.
    AccessToken,
    /// `POST /gw/api/v1/sso-sessions`: access token + signed SSO request → bearer token.
    SsoSession,
    /// `GET /v1/api/sso/validate`.
    Validate,
    /// `POST /v1/api/iserver/auth/ssodh/init`: open the brokerage session.
    SsodhInit,
    /// `POST /v1/api/iserver/auth/status`.
    AuthStatus,
    /// `POST /v1/api/tickle`.
    Tickle,
    /// `POST /v1/api/logout`.
    Logout,
    /// `POST /v1/api/oauth/live_session_token` (OAuth 1.0a).
    LiveSessionToken,
    /// The WebSocket handshake or stream (`/v1/api/ws`).
    WebSocket,
    /// `POST /v1/api/oauth/request_token` (OAuth 1.0a third party).
    RequestToken,
    /// The user's authorisation in the browser (OAuth 1.0a third party).
    Authorize,
    /// `POST /v1/api/oauth/access_token` (OAuth 1.0a third party).
    OauthAccessToken,
    /// A Web API call made through the session (any endpoint).
    Api,
}

impl Step {
    /// Short machine-friendly name (`access_token`, `tickle`, …), used in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Step::PublicIp => "public_ip",
            Step::AccessToken => "access_token",
            Step::SsoSession => "sso_session",
            Step::Validate => "validate",
            Step::SsodhInit => "ssodh_init",
            Step::AuthStatus => "auth_status",
            Step::Tickle => "tickle",
            Step::Logout => "logout",
            Step::LiveSessionToken => "live_session_token",
            Step::WebSocket => "websocket",
            Step::RequestToken => "request_token",
            Step::Authorize => "authorize",
            Step::OauthAccessToken => "oauth_access_token",
            Step::Api => "api",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Step::PublicIp => "public IP lookup",
            Step::AccessToken => "access token (POST /oauth2/api/v1/token)",
            Step::SsoSession => "SSO session (POST /gw/api/v1/sso-sessions)",
            Step::Validate => "SSO validate (GET /v1/api/sso/validate)",
            Step::SsodhInit => "brokerage session init (POST /v1/api/iserver/auth/ssodh/init)",
            Step::AuthStatus => "auth status (POST /v1/api/iserver/auth/status)",
            Step::Tickle => "tickle (POST /v1/api/tickle)",
            Step::Logout => "logout (POST /v1/api/logout)",
            Step::LiveSessionToken => "live session token (POST /v1/api/oauth/live_session_token)",
            Step::WebSocket => "WebSocket (/v1/api/ws)",
            Step::RequestToken => "request token (POST /v1/api/oauth/request_token)",
            Step::Authorize => "authorisation in the browser",
            Step::OauthAccessToken => "access token (POST /v1/api/oauth/access_token)",
            Step::Api => "API call",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Everything that can go wrong talking to IBKR.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is incomplete or wrong; nothing was sent.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// IBKR answered, and said no (an error status, or HTTP 200 with an `error` field).
    #[error("{step}: IBKR answered HTTP {status}: {message}{}", Hint(*.hint))]
    Rejected {
        /// The step that failed.
        step: Step,
        /// HTTP status code.
        status: u16,
        /// IBKR's own message, as sent (trimmed and shortened).
        message: String,
        /// What usually fixes it, when known.
        hint: Option<&'static str>,
        /// How long the server asked us to wait (`Retry-After`), when it did.
        retry_after: Option<Duration>,
    },

    /// No answer within the configured timeout.
    #[error("{step}: no answer within {}s; check the network, or raise `timeout`", .timeout.as_secs_f32())]
    Timeout {
        /// The step that failed.
        step: Step,
        /// The timeout in force.
        timeout: Duration,
    },

    /// The request could not be sent or the answer not received (DNS, TCP, TLS).
    #[error("{step}: cannot reach {host}: {detail}")]
    Network {
        /// The step that failed.
        step: Step,
        /// The host that was called.
        host: String,
        /// The transport's description of the failure.
        detail: String,
        /// The underlying error (reqwest's, or hyper's for a forwarded request).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// IBKR answered something this client cannot make sense of.
    #[error("{step}: unexpected answer (HTTP {status}): {detail}")]
    Protocol {
        /// The step that failed.
        step: Step,
        /// HTTP status code.
        status: u16,
        /// What was wrong with it.
        detail: String,
    },

    /// A step was called before the step it depends on.
    #[error("{step}: {reason}")]
    NotReady {
        /// The step that could not run.
        step: Step,
        /// What must happen first.
        reason: &'static str,
    },

    /// The live session token could not be computed or did not validate.
    #[error("{step}: {source}")]
    Lst {
        /// The step that failed.
        step: Step,
        /// What went wrong and what to check.
        #[source]
        source: LstError,
    },

    /// The token store failed (unreadable, exposed to other users, from a newer ibauth, …).
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The fleet's shared store failed, or this process may not act for the fleet (fenced,
    /// no leader, no key).
    #[error(transparent)]
    Fleet(#[from] crate::coord::CoordError),

    /// An OAuth 2.0 SSO session is bound to the public IP it was opened for, and this host's
    /// differs: IBKR would refuse its bearer token here.
    #[error(
        "the fleet's OAuth 2.0 session was opened for public IP {session_ip}, but this host's public IP is {here}: IBKR binds an SSO session to its IP and refuses its bearer token from anywhere else. Run every member of the fleet behind one egress address (the same NAT gateway or proxy), give this host its own login (another identity), or use OAuth 1.0a, whose live session token works from any host"
    )]
    IpBound {
        /// The IP the session was opened for.
        session_ip: std::net::Ipv4Addr,
        /// This host's public IP.
        here: std::net::Ipv4Addr,
    },

    /// A third-party login flow stopped (no terminal, timeout, callback, browser).
    #[error("third-party login: {0}")]
    Login(String),

    /// The request would have waited longer than allowed for its turn under IBKR's pacing
    /// limits; nothing was sent.
    #[error("{step}: {source}")]
    Paced {
        /// The step that would have waited.
        step: Step,
        /// Which budget, its limit, and the wait needed.
        #[source]
        source: crate::pacing::Paced,
    },

    /// Every public-IP lookup URL failed.
    #[error(
        "public IP lookup failed ({detail}); set `public_ip` in the config (or IBAUTH_PUBLIC_IP) to the address IBKR sees"
    )]
    PublicIp {
        /// What each lookup said.
        detail: String,
    },
}

impl Error {
    /// The step that failed, if the error happened at one.
    pub fn step(&self) -> Option<Step> {
        match self {
            Error::Config(_) | Error::Store(_) | Error::Fleet(_) | Error::IpBound { .. } => None,
            Error::Rejected { step, .. }
            | Error::Timeout { step, .. }
            | Error::Network { step, .. }
            | Error::Protocol { step, .. }
            | Error::NotReady { step, .. }
            | Error::Lst { step, .. }
            | Error::Paced { step, .. } => Some(*step),
            Error::PublicIp { .. } => Some(Step::PublicIp),
            Error::Login(_) => Some(Step::Authorize),
        }
    }

    /// The HTTP status IBKR answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Rejected { status, .. } | Error::Protocol { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long the server asked to wait before trying again (`Retry-After` on a 429 or 503).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Rejected { retry_after, .. } => *retry_after,
            Error::Paced { source, .. } => Some(source.wait),
            _ => None,
        }
    }

    /// Whether trying again later may help without changing anything (timeouts, network
    /// trouble, 5xx, 429) — as opposed to a rejection that needs a fix.
    pub fn is_transient(&self) -> bool {
        match self {
            // A certificate that fails verification is a misconfiguration, not bad luck.
            Error::Network { detail, .. } => !is_certificate_problem(detail),
            Error::Timeout { .. } | Error::PublicIp { .. } | Error::Paced { .. } => true,
            Error::Rejected { status, .. } | Error::Protocol { status, .. } => {
                *status == 429 || *status >= 500
            }
            Error::Fleet(e) => e.is_transient(),
            Error::Config(_)
            | Error::IpBound { .. }
            | Error::NotReady { .. }
            | Error::Lst { .. }
            | Error::Store(_)
            | Error::Login(_) => false,
        }
    }
}

pub(crate) fn is_certificate_problem(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("certificate") || d.contains("unknownissuer") || d.contains("unknown issuer")
}

struct Hint(Option<&'static str>);

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(hint) => write!(f, " (hint: {hint})"),
            None => Ok(()),
        }
    }
}

/// `invalid consumer` on the third-party token requests, where the causes differ from the
/// first-party ones.
const INVALID_CONSUMER_THIRD_PARTY: &str = "the consumer is unknown or not activated yet (activation waits for IBKR's weekend restart), registered for paper but used live (or the reverse), is TESTCONS used with your own keys, is a first-party consumer (request_token is for third-party consumers), or the realm is wrong";

/// What usually fixes a rejection, from the errors users hit in practice.
pub(crate) fn hint_for(step: Step, status: u16, message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    if m.contains("no bridge") {
        return Some("the brokerage session is not initialised: call ssodh/init first");
    }
    if m.contains("failed to generate sso dh token") {
        return Some(
            "the account is not entitled to OAuth, or is a new paper account; ask IBKR to enable Web API access",
        );
    }
    if m.contains("please query /accounts first") {
        return Some(
            "call GET iserver/accounts first; this often comes just before the session drops",
        );
    }
    if m.contains("invalid consumer") && matches!(step, Step::RequestToken | Step::OauthAccessToken)
    {
        return Some(INVALID_CONSUMER_THIRD_PARTY);
    }
    if m.contains("request token expired") {
        return Some("request tokens live a few minutes and work once: log in again");
    }
    if m.contains("denied") {
        return Some(
            "the authorisation was denied in the browser: log in again and choose Approve",
        );
    }
    if m.contains("oauth_verifier") || m.contains("verifier") {
        return Some("the verifier belongs to another login: paste the redirect of this login");
    }
    if m.contains("does not match the registered callback") {
        return Some(
            "set `oauth1a.callback_url` to exactly the callback registered for the consumer (scheme, host, port, path, case)",
        );
    }
    if m.contains("invalid consumer") {
        return Some(
            "consumer key unknown or not active yet (activation waits for IBKR's weekend restart), or realm / paper-vs-live mismatch",
        );
    }
    if m.contains("access token expired") {
        return Some("the access token expired: request a new one (log in again)");
    }
    if m.contains("in the future") || m.contains("clock") {
        return Some("the system clock looks wrong: sync it (e.g. with NTP)");
    }
    if step == Step::AccessToken && m.contains("expired") {
        return Some("the client assertion was already expired on arrival: check the system clock");
    }
    match (step, status) {
        (_, 429) => Some("too many requests: back off (IBKR allows about 10 requests/s)"),
        (_, 410) => Some("try a numbered host (e.g. domain: 5.api.ibkr.com) or log in again"),
        (Step::AccessToken, 400 | 401 | 403) => Some(
            "check client_id, client_key_id and that the public key for this private key is registered with IBKR",
        ),
        (Step::SsoSession, 400 | 401 | 403) => Some(
            "check `credential` (your IBKR username) and `public_ip` (IBKR must see requests from that address)",
        ),
        (Step::Logout, 401) => Some("the session is already gone"),
        (_, 401) => Some("the session or token is no longer valid: log in again"),
        (_, 500..=599) => Some("IBKR-side trouble: retry later"),
        _ => None,
    }
}

/// A configuration problem: which key or file, and how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file named explicitly does not exist.
    #[error(
        "config file {} not found; pass --config PATH, set IBAUTH_CONFIG, or supply every setting as IBAUTH_* variables",
        .path.display()
    )]
    FileNotFound {
        /// The file.
        path: PathBuf,
    },
    /// The config file exists but cannot be read.
    #[error("cannot read config file {}: {source}", .path.display())]
    FileUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid YAML, or not a mapping of keys to values.
    #[error("config file {} is not valid YAML: {detail}", .path.display())]
    MalformedYaml {
        /// The file.
        path: PathBuf,
        /// Where and what.
        detail: String,
    },
    /// A required setting is missing.
    #[error(
        "missing setting `{key}`: add `{key}: …` to the config file, set {env}, or use the builder"
    )]
    Missing {
        /// The YAML key.
        key: &'static str,
        /// The environment variable that also supplies it.
        env: &'static str,
    },
    /// A setting has a value that cannot be used.
    #[error("setting `{key}` is invalid: {reason}")]
    Invalid {
        /// The key (YAML key or environment variable).
        key: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The private key cannot be used.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A private key that cannot be used, and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file does not exist.
    #[error("private key file {} not found; check `private_key_file` (relative paths are resolved against the config file's folder)", .path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The key file can be read or written by other users (Unix: any group/other permission
    /// bit); it is refused, not used, as the token file is.
    #[error(
        "private key file {} is accessible to other users (mode {mode:o}); anyone who can read it can log in as you: run `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file exists but cannot be read.
    #[error("cannot read private key file {}: {source}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The PEM is passphrase-protected.
    #[error(
        "private key {origin} is encrypted; ibauth needs it unencrypted: `openssl pkey -in KEY.pem -out key-plain.pem` (then chmod 600 key-plain.pem)"
    )]
    Encrypted {
        /// Where the key came from.
        origin: String,
    },
    /// The key is not an RSA key.
    #[error(
        "private key {origin} is {found}, but IBKR needs an RSA key (2048 bits or more): `openssl genrsa -out private_key.pem 2048`"
    )]
    NotRsa {
        /// Where the key came from.
        origin: String,
        /// What was found instead.
        found: &'static str,
    },
    /// The RSA key is shorter than 2048 bits.
    #[error(
        "private key {origin} is shorter than 2048 bits; generate a new one: `openssl genrsa -out private_key.pem 2048`"
    )]
    TooSmall {
        /// Where the key came from.
        origin: String,
    },
    /// A public key or certificate was given where a private key belongs.
    #[error(
        "{origin} holds a {found}, not a private key; point the setting at the private key file"
    )]
    NotPrivate {
        /// Where the key came from.
        origin: String,
        /// What was found.
        found: &'static str,
    },
    /// Not PEM, or PEM whose content cannot be parsed.
    #[error(
        "private key {origin} is not a usable PEM private key ({detail}); expected `-----BEGIN PRIVATE KEY-----` or `-----BEGIN RSA PRIVATE KEY-----`"
    )]
    Malformed {
        /// Where the key came from.
        origin: String,
        /// What was wrong.
        detail: String,
    },
}

/// Why a live-session-token computation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LstError {
    /// The access-token secret is not base64.
    #[error("the access-token secret is not valid base64; copy it again from IBKR's portal")]
    SecretNotBase64,
    /// The secret does not decrypt with the encryption key.
    #[error(
        "the access-token secret does not decrypt with the encryption key; check that the encryption key is the one registered with this consumer, and that the secret belongs to this access token"
    )]
    SecretDoesNotDecrypt,
    /// The DH prime is not usable.
    #[error("the Diffie-Hellman prime is invalid: {0}")]
    BadPrime(&'static str),
    /// IBKR's `live_session_token_signature` does not match the LST computed here.
    #[error(
        "the live session token does not validate: check the DH prime, the encryption key and the access-token secret"
    )]
    Mismatch,
    /// IBKR's DH response is not a usable number.
    #[error("IBKR's diffie_hellman_response is invalid: {0}")]
    BadResponse(&'static str),
}

/// What can go wrong with a token store; every message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading, writing or locking failed.
    #[error("token file {}: cannot {action}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The file (or its folder) can be read by other users; it is refused, not used.
    #[error(
        "token file {} is readable by other users (mode {mode:o}); it holds live session tokens: run `chmod 600 {}` (and `chmod 700` on its folder), or delete it and log in again",
        .path.display(), .path.display()
    )]
    Exposed {
        /// The file or folder.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file was written by a newer ibauth.
    #[error(
        "token file {} has schema version {found}, newer than this ibauth understands ({supported}); upgrade ibauth, or point `token_file` elsewhere",
        .path.display()
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The file is not a token document (reported by
    /// [`FileStore::inspect`](crate::store::FileStore::inspect); loading moves such a file aside
    /// instead).
    #[error("token file {} is corrupt ({problem}); the next login moves it aside (kept) and writes a new one", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The token file (or its `.lock`) is not a regular file: a FIFO would hang every command,
    /// a symbolic link would send tokens or the lock wherever it points. Refused, left in place.
    #[error(
        "token file {} is {kind}, not a regular file; ibauth neither reads nor writes through it: remove it (`rm {}`) and log in again, or point `token_file` elsewhere",
        .path.display(), .path.display()
    )]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is ("a FIFO (named pipe)", "a symbolic link", …).
        kind: &'static str,
    },
    /// The token file (or its `.lock`) belongs to another user, who may have planted it.
    #[error(
        "token file {} belongs to uid {uid}, not to this user (uid {expected}); another user may have planted it: remove it (`rm {}`) and log in again, or point `token_file` into a folder of yours",
        .path.display(), .path.display()
    )]
    ForeignOwner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// This process's user.
        expected: u32,
    },
    /// The token file's folder lets other users replace the file (writable by group or others,
    /// or owned by another user).
    #[error(
        "the folder {} of the token file is unsafe ({problem}); other users could replace the token file: run `chmod 700 {}` on a folder of your own, or point `token_file` into one",
        .path.display(), .path.display()
    )]
    UnsafeFolder {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A custom store failed.
    #[error("token store: {0}")]
    Other(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_names_step_status_message_and_hint() {
        let err = Error::Rejected {
            step: Step::SsodhInit,
            status: 400,
            message: "Bad Request: no bridge".into(),
            hint: hint_for(Step::SsodhInit, 400, "Bad Request: no bridge"),
            retry_after: None,
        };
        let text = err.to_string();
        assert!(text.starts_with("brokerage session init (POST /v1/api/iserver/auth/ssodh/init)"));
        assert!(text.contains("HTTP 400: Bad Request: no bridge"));
        assert!(text.contains("hint: the brokerage session is not initialised"));
        assert_eq!(err.step(), Some(Step::SsodhInit));
        assert!(!err.is_transient());
    }

    #[test]
    fn hints_follow_the_spec_table() {
        assert!(
            hint_for(Step::Tickle, 429, "")
                .unwrap()
                .contains("back off")
        );
        assert!(
            hint_for(Step::SsodhInit, 410, "Gone")
                .unwrap()
                .contains("numbered host")
        );
        assert!(
            hint_for(Step::SsodhInit, 500, "failed to generate sso dh token")
                .unwrap()
                .contains("not entitled")
        );
        assert!(
            hint_for(Step::Tickle, 500, "Please query /accounts first")
                .unwrap()
                .contains("iserver/accounts")
        );
        assert_eq!(hint_for(Step::Validate, 200, "fine"), None);
    }

    #[test]
    fn transient_classification() {
        let rejected = |status| Error::Rejected {
            step: Step::Tickle,
            status,
            message: String::new(),
            hint: None,
            retry_after: None,
        };
        assert!(rejected(503).is_transient());
        assert!(rejected(429).is_transient());
        assert!(!rejected(401).is_transient());
        assert!(
            Error::Timeout {
                step: Step::Tickle,
                timeout: Duration::from_secs(1)
            }
            .is_transient()
        );
    }
}
