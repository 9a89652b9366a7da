//! The brokerage session — `sso/validate`, `ssodh/init`, `auth/status`, `tickle`, `logout` —
//! written once and shared by every auth method through the [`Authorizer`] seam.

use std::fmt;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

use crate::error::{Error, Step};
use crate::http::{HttpClient, Reply};

/// Adds what a request needs to be authorised: the one place that knows the auth method.
pub trait Authorizer: Send + Sync {
    /// The `Authorization` header value for `method url` (marked sensitive).
    fn authorization(&self, method: &Method, url: &Url) -> Result<HeaderValue, Error>;

    /// The header value when it is the same for every request (a bearer token), so a caller
    /// can skip building the URL it would sign; `None` (the default): it depends on the
    /// request.
    fn fixed(&self) -> Option<HeaderValue> {
        None
    }
}

/// OAuth 2.0: `Authorization: Bearer <token>`.
#[derive(Clone)]
pub struct BearerAuthorizer {
    header: HeaderValue,
}

impl BearerAuthorizer {
    /// Authorises with `token`.
    pub fn new(token: &SecretString) -> Result<Self, Error> {
        let mut header = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| Error::Protocol {
                step: Step::SsoSession,
                status: 200,
                detail: "the bearer token contains characters not allowed in a header".into(),
            })?;
        header.set_sensitive(true);
        Ok(Self { header })
    }

    /// The header value (marked sensitive, so `Debug` hides it).
    pub fn header(&self) -> HeaderValue {
        self.header.clone()
    }
}

impl fmt::Debug for BearerAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerAuthorizer([REDACTED])")
    }
}

impl Authorizer for BearerAuthorizer {
    fn authorization(&self, _: &Method, _: &Url) -> Result<HeaderValue, Error> {
        Ok(self.header())
    }

    fn fixed(&self) -> Option<HeaderValue> {
        Some(self.header())
    }
}

/// Brokerage-session calls against one REST base (`https://{host}/v1/api/`).
#[derive(Debug, Clone)]
pub struct BrokerageClient {
    http: HttpClient,
    rest_base: Url,
}

impl BrokerageClient {
    /// A client for `rest_base` (a trailing `/` is added if missing).
    pub fn new(http: HttpClient, mut rest_base: Url) -> Self {
        if !rest_base.path().ends_with('/') {
            let path = format!("{}/", rest_base.path());
            rest_base.set_path(&path);
        }
        Self { http, rest_base }
    }

    /// The REST base every call goes to.
    pub fn rest_base(&self) -> &Url {
        &self.rest_base
    }

    async fn call(
        &self,
        step: Step,
        method: Method,
        path: &str,
        json: Option<serde_json::Value>,
        auth: &dyn Authorizer,
    ) -> Result<Reply, Error> {
        let url = self.rest_base.join(path).map_err(|e| Error::Protocol {
            step,
            status: 0,
            detail: format!("bad endpoint path {path}: {e}"),
        })?;
        let header = auth.authorization(&method, &url)?;
        let mut request = self
            .http
            .reqwest()
            .request(method, url)
            .header(AUTHORIZATION, header);
        request = match json {
            Some(body) => request.json(&body),
            // IBKR wants an explicit empty body on POSTs without one.
            None => request.header(reqwest::header::CONTENT_LENGTH, "0"),
        };
        self.http.send(step, request).await
    }

    /// `GET sso/validate`: the SSO session's details.
    pub async fn validate(&self, auth: &dyn Authorizer) -> Result<SsoValidation, Error> {
        self.call(Step::Validate, Method::GET, "sso/validate", None, auth)
            .await?
            .json(Step::Validate)
    }

    /// `POST iserver/auth/ssodh/init`: opens the brokerage session; `compete` takes it over from
    /// other logins of the same user.
    pub async fn init(
        &self,
        auth: &dyn Authorizer,
        publish: bool,
        compete: bool,
    ) -> Result<AuthStatus, Error> {
        let body = serde_json::json!({ "publish": publish, "compete": compete });
        self.call(
            Step::SsodhInit,
            Method::POST,
            "iserver/auth/ssodh/init",
            Some(body),
            auth,
        )
        .await?
        .json(Step::SsodhInit)
    }

    /// `POST iserver/auth/status`.
    pub async fn status(&self, auth: &dyn Authorizer) -> Result<AuthStatus, Error> {
        self.call(
            Step::AuthStatus,
            Method::POST,
            "iserver/auth/status",
            None,
            auth,
        )
        .await?
        .json(Step::AuthStatus)
    }

    /// `POST tickle`: keeps the session alive and reports its state.
    pub async fn tickle(&self, auth: &dyn Authorizer) -> Result<Tickle, Error> {
        let raw: serde_json::Value = self
            .call(Step::Tickle, Method::POST, "tickle", None, auth)
            .await?
            .json(Step::Tickle)?;
        let mut tickle: Tickle =
            serde_json::from_value(raw.clone()).map_err(|e| Error::Protocol {
                step: Step::Tickle,
                status: 200,
                detail: format!("cannot parse the JSON answer: {e}"),
            })?;
        tickle.raw = Some(raw);
        Ok(tickle)
    }

    /// `POST logout`. A 401 means the session was already gone, which is not an error here.
    pub async fn logout(&self, auth: &dyn Authorizer) -> Result<Logout, Error> {
        let reply = self
            .call(Step::Logout, Method::POST, "logout", None, auth)
            .await?;
        if reply.status == 401 {
            return Ok(Logout {
                status: false,
                already_gone: true,
            });
        }
        let mut logout: Logout = reply.json(Step::Logout)?;
        logout.already_gone = false;
        Ok(logout)
    }
}

/// The outcome of a client's `connect()`: the login and `ssodh/init`, the same for every auth
/// method.
#[derive(Debug, Clone)]
pub struct Connected {
    /// The SSO session's details (`sso/validate`; OAuth 2.0 validates as part of its login,
    /// OAuth 1.0a does not).
    pub validation: Option<SsoValidation>,
    /// The brokerage session's flags after `ssodh/init`.
    pub status: AuthStatus,
}

/// The brokerage session's flags, from `ssodh/init`, `auth/status` and `tickle`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct AuthStatus {
    /// The brokerage session is authenticated.
    #[serde(deserialize_with = "lenient_bool")]
    pub authenticated: bool,
    /// Another login of the same user holds the session.
    #[serde(deserialize_with = "lenient_bool")]
    pub competing: bool,
    /// Connected to the backend.
    #[serde(deserialize_with = "lenient_bool")]
    pub connected: bool,
    /// IBKR's message, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why authentication failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail: Option<String>,
    /// The backend's MAC address, as IBKR reports it.
    #[serde(rename = "MAC", skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Server name and version.
    #[serde(rename = "serverInfo", skip_serializing_if = "Option::is_none")]
    pub server_info: Option<ServerInfo>,
}

/// `serverInfo` of a status answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct ServerInfo {
    /// Server name.
    #[serde(rename = "serverName")]
    pub server_name: Option<String>,
    /// Server version.
    #[serde(rename = "serverVersion")]
    pub server_version: Option<String>,
}

/// The answer of `tickle`. `Debug` shows only the start of the session id (it doubles as the
/// WebSocket cookie).
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Tickle {
    /// The session id (also the `api` cookie for the WebSocket).
    pub session: String,
    /// Milliseconds until the SSO session expires.
    #[serde(rename = "ssoExpires", deserialize_with = "lenient_u64_opt")]
    pub sso_expires_ms: Option<u64>,
    /// IBKR's (misspelt) collision flag.
    #[serde(rename = "collission", deserialize_with = "lenient_bool")]
    pub collision: bool,
    /// The user id.
    #[serde(rename = "userId", deserialize_with = "lenient_u64_opt")]
    pub user_id: Option<u64>,
    /// The brokerage session's flags.
    pub iserver: IServer,
    /// The answer as IBKR sent it (every field, those above and the rest), for whoever passes
    /// it on (a gateway answering its clients' tickles).
    #[serde(skip)]
    pub raw: Option<serde_json::Value>,
}

impl fmt::Debug for Tickle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tickle")
            .field("session", &self.session_short())
            .field("sso_expires_ms", &self.sso_expires_ms)
            .field("collision", &self.collision)
            .field("user_id", &self.user_id)
            .field("iserver", &self.iserver)
            .finish()
    }
}

impl Tickle {
    /// The start of the session id: enough to tell sessions apart in logs, not enough to use.
    pub fn session_short(&self) -> String {
        short_id(&self.session)
    }

    /// Time left on the SSO session.
    pub fn sso_expires_in(&self) -> Option<Duration> {
        self.sso_expires_ms.map(Duration::from_millis)
    }

    /// The brokerage session's flags.
    pub fn auth_status(&self) -> &AuthStatus {
        &self.iserver.auth_status
    }
}

/// `iserver` of a tickle answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct IServer {
    /// The brokerage session's flags.
    #[serde(rename = "authStatus")]
    pub auth_status: AuthStatus,
}

/// The first characters of a session id, for logs and status output: enough to tell sessions
/// apart, not enough to use (the id doubles as the WebSocket cookie).
pub fn short_id(id: &str) -> String {
    format!("{}…", id.chars().take(6).collect::<String>())
}

/// The answer of `sso/validate` (IBKR's fields vary; these are the ones used). `Debug` hides
/// the user name, which is the login credential.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct SsoValidation {
    /// The IBKR username.
    #[serde(rename = "USER_NAME")]
    pub user_name: Option<String>,
    /// The user id.
    #[serde(rename = "USER_ID", deserialize_with = "lenient_u64_opt")]
    pub user_id: Option<u64>,
    /// Milliseconds until the SSO session expires.
    #[serde(rename = "EXPIRES", deserialize_with = "lenient_u64_opt")]
    pub expires_ms: Option<u64>,
    /// Whether the session is valid.
    #[serde(rename = "RESULT", deserialize_with = "lenient_bool")]
    pub result: bool,
    /// The IP address the session is bound to.
    #[serde(rename = "IP")]
    pub ip: Option<String>,
}

impl fmt::Debug for SsoValidation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SsoValidation")
            .field("user_name", &self.user_name.as_ref().map(|_| "[REDACTED]"))
            .field("user_id", &self.user_id)
            .field("expires_ms", &self.expires_ms)
            .field("result", &self.result)
            .field("ip", &self.ip)
            .finish()
    }
}

impl SsoValidation {
    /// Time left on the SSO session.
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_ms.map(Duration::from_millis)
    }
}

/// The answer of `logout`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Logout {
    /// IBKR's `status`.
    #[serde(deserialize_with = "lenient_bool")]
    pub status: bool,
    /// The session was already gone (HTTP 401).
    #[serde(skip_deserializing)]
    pub already_gone: bool,
}

/// `true`, `"true"`, `1` and `null` (false) all occur in IBKR's answers.
fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => b,
        serde_json::Value::String(s) => s.eq_ignore_ascii_case("true"),
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        _ => false,
    })
}

/// Numbers sometimes arrive as strings or floats; negative or non-numeric ones are taken as
/// absent (see [`crate::tokens::lenient_u64`]).
fn lenient_u64_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(crate::tokens::lenient_u64(&serde_json::Value::deserialize(
        d,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickle_parses_leniently() {
        let t: Tickle = serde_json::from_str(
            r#"{"session":"abc","ssoExpires":"540000","collission":false,"userId":123,
                "hmds":{"error":"no bridge"},"unknown":[1,2],
                "iserver":{"authStatus":{"authenticated":"true","competing":false,"connected":1,
                "message":"","MAC":"98:F2:B3:23:BF:A0","serverInfo":{"serverName":"X","serverVersion":"Y"}}}}"#,
        )
        .unwrap();
        assert_eq!(t.session, "abc");
        assert_eq!(t.sso_expires_in(), Some(Duration::from_secs(540)));
        assert!(t.auth_status().authenticated && t.auth_status().connected);
        assert!(!t.auth_status().competing);
        assert_eq!(t.user_id, Some(123));
        assert!(format!("{t:?}").contains("session: \"abc…\""));
    }

    #[test]
    fn absurd_numbers_neither_panic_nor_wrap() {
        for (raw, want) in [
            ("18446744073709551615", Some(u64::MAX)),
            ("1e300", Some(u64::MAX)),
            ("-1", None),
            ("\"-1\"", None),
            ("\"soon\"", None),
            ("true", None),
        ] {
            let t: Tickle =
                serde_json::from_str(&format!(r#"{{"session":"s","ssoExpires":{raw}}}"#)).unwrap();
            assert_eq!(t.sso_expires_ms, want, "{raw}");
            // Time left of u64::MAX ms is a Duration, not an overflow.
            let _ = t.sso_expires_in();
        }
    }

    #[test]
    fn validation_debug_hides_the_user_name() {
        let v: SsoValidation = serde_json::from_str(
            r#"{"USER_NAME":"alice","USER_ID":7,"EXPIRES":1000,"RESULT":true}"#,
        )
        .unwrap();
        assert_eq!(v.user_name.as_deref(), Some("alice"));
        assert!(!format!("{v:?}").contains("alice"));
        assert_eq!(v.expires_in(), Some(Duration::from_secs(1)));
    }

    #[test]
    fn bearer_authorizer_hides_the_token() {
        let auth = BearerAuthorizer::new(&SecretString::from("s3cr3t-token")).unwrap();
        assert!(!format!("{auth:?}").contains("s3cr3t"));
        let header = auth
            .authorization(&Method::GET, &Url::parse("https://x/").unwrap())
            .unwrap();
        assert!(header.is_sensitive());
        assert!(!format!("{header:?}").contains("s3cr3t"));
    }
}
