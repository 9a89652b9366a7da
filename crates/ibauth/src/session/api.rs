//! Calls to any Web API endpoint through a [`Session`]: authorised afresh on every attempt,
//! paced before sending, recovered once when IBKR refuses them for authentication.

use std::borrow::Cow;

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use serde::de::DeserializeOwned;
use url::Url;

use super::Session;
use crate::error::{Error, Step, hint_for};
use crate::http::{Reply, ibkr_message};

/// A request being put together; [`send`](Self::send) sends it.
///
/// ```no_run
/// # async fn run(session: ibauth::Session) -> Result<(), ibauth::Error> {
/// let order = serde_json::json!({ "orders": [{ "conid": 265598, "side": "BUY", "quantity": 1,
///     "orderType": "MKT", "tif": "DAY", "cOID": "my-order-1" }] });
/// let reply = session
///     .request(ibauth::Method::POST, "iserver/account/U1234567/orders")
///     .json(&order)
///     .send()
///     .await?;
/// println!("{}: {}", reply.status(), reply.text());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ApiRequest {
    session: Session,
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    body: Option<Result<Vec<u8>, String>>,
    max_wait: Option<std::time::Duration>,
}

/// An answer: status, headers and body, whatever the status (like reqwest's). Use
/// [`json`](Self::json) for a typed body, which fails on an error status.
#[derive(Clone)]
pub struct ApiResponse {
    method: Method,
    path: String,
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl std::fmt::Debug for ApiResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiResponse")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("status", &self.status)
            .field("bytes", &self.body.len())
            .finish()
    }
}

impl ApiRequest {
    pub(crate) fn new(session: Session, method: Method, path: &str) -> Self {
        Self {
            session,
            method,
            path: path.to_owned(),
            query: Vec::new(),
            body: None,
            max_wait: None,
        }
    }

    /// Waits at most `max_wait` for a turn under the pacing limits (default: the session's
    /// `pacing.max_wait`); beyond it the call fails at once with [`Error::Paced`], unsent.
    pub fn max_wait(mut self, max_wait: std::time::Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// Adds query parameters (sent as given; not part of an OAuth 1.0a signature, as IBKR's
    /// production servers expect).
    pub fn query<K: AsRef<str>, V: AsRef<str>>(mut self, pairs: &[(K, V)]) -> Self {
        self.query.extend(
            pairs
                .iter()
                .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned())),
        );
        self
    }

    /// A JSON body.
    pub fn json<B: serde::Serialize + ?Sized>(mut self, body: &B) -> Self {
        self.body = Some(serde_json::to_vec(body).map_err(|e| e.to_string()));
        self
    }

    /// A body that is already JSON text (checked before sending).
    pub fn json_text(mut self, text: &str) -> Self {
        self.body = Some(
            serde_json::from_str::<serde_json::Value>(text)
                .map(|_| text.as_bytes().to_vec())
                .map_err(|e| e.to_string()),
        );
        self
    }

    /// Sends it: connects first if the session holds no tokens, waits for its turn under the
    /// pacing limits, and — only when IBKR refused it for authentication before acting on it —
    /// recovers the session once and sends it again. A timeout, a network error or a 5xx is
    /// returned as it is: an order is never sent twice on a guess.
    pub async fn send(self) -> Result<ApiResponse, Error> {
        let body = match self.body {
            Some(Ok(body)) => Some(body),
            Some(Err(e)) => {
                return Err(Error::Protocol {
                    step: Step::Api,
                    status: 0,
                    detail: format!("the request body is not JSON: {e}"),
                });
            }
            None => None,
        };
        let inner = &self.session.inner;
        let mut recovered = false;
        let mut paced_again = false;
        loop {
            let (epoch, auth, rest_base) = inner.ready().await?;
            let url = endpoint_url(&rest_base, &self.path, &self.query)?;
            let header = auth.authorization(&self.method, &url)?;
            let mut request = inner
                .http
                .reqwest()
                .request(self.method.clone(), url.clone())
                .header(AUTHORIZATION, header);
            request = match &body {
                Some(body) => request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone()),
                None if self.method != Method::GET && self.method != Method::HEAD => {
                    request.header(CONTENT_LENGTH, "0")
                }
                None => request,
            };
            let reply = inner
                .http
                .send_within(Step::Api, request, self.max_wait)
                .await?;
            if !recovered && let Some(why) = refused_for_authentication(&reply) {
                recovered = true;
                inner.recover_after(epoch, why).await?;
                continue;
            }
            // The pacer paused this budget for the server's Retry-After; one more try waits
            // for it (or fails at once with the wait needed, beyond the pacing bound).
            if reply.status == 429 && !paced_again && reply.retry_after.is_some() {
                paced_again = true;
                continue;
            }
            return Ok(ApiResponse {
                method: self.method,
                path: url.path().to_owned(),
                status: reply.status,
                headers: reply.headers,
                body: reply.body,
            });
        }
    }
}

impl ApiResponse {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The path that was called.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The answer as an error if its status is not 2xx ([`Error::Rejected`] with IBKR's
    /// message), else itself.
    pub fn error_for_status(self) -> Result<Self, Error> {
        if self.is_success() {
            return Ok(self);
        }
        let message = format!(
            "{} {}: {}",
            self.method,
            self.path,
            ibkr_message(&self.body)
        );
        Err(Error::Rejected {
            step: Step::Api,
            status: self.status,
            hint: hint_for(Step::Api, self.status, &message),
            message,
            retry_after: self
                .headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| crate::http::parse_retry_after(v, std::time::SystemTime::now())),
        })
    }

    /// The body as `T` (unknown fields ignored); an error status is [`Error::Rejected`],
    /// a body that is not `T` is [`Error::Protocol`].
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let checked = self.clone().error_for_status()?;
        serde_json::from_slice(&checked.body).map_err(|e| Error::Protocol {
            step: Step::Api,
            status: self.status,
            detail: format!(
                "{} {}: cannot parse the JSON answer: {e}",
                self.method, self.path
            ),
        })
    }
}

/// Why IBKR refused a call for authentication (before acting on it), if it did: 401, a
/// missing brokerage session (`no bridge`), or `authenticated: false`.
pub(crate) fn refused_for_authentication(reply: &Reply) -> Option<&'static str> {
    if reply.status == 401 {
        return Some("401: the session or its token is no longer valid");
    }
    // Every answer passes here: a successful one is not read for an error message, and only
    // its top-level `authenticated` is deserialised, the rest skipped (building whole bodies
    // into `Value`s, twice, was most of a call's own cost: docs/benchmarks.md).
    if !(200..300).contains(&reply.status)
        && ibkr_message(&reply.body)
            .to_ascii_lowercase()
            .contains("no bridge")
    {
        return Some("no bridge: the brokerage session is gone");
    }
    #[derive(serde::Deserialize)]
    struct Flags {
        authenticated: Option<serde_json::Value>,
    }
    // Most answers do not mention the flag at all: a byte search (SIMD) rules them out
    // without a parse. An object only: serde would also read a struct from an array,
    // positionally.
    let mentions = memchr::memmem::find(&reply.body, b"\"authenticated\"").is_some();
    let is_object = reply.body.trim_ascii_start().first() == Some(&b'{');
    if mentions
        && is_object
        && let Ok(flags) = serde_json::from_slice::<Flags>(&reply.body)
        && flags.authenticated == Some(serde_json::Value::Bool(false))
    {
        return Some("authenticated: false");
    }
    None
}

/// `path` on the API with `query`: relative to `rest_base` (`iserver/accounts`,
/// `/iserver/accounts`), or absolute on its host when it starts with `/v1/` (`/v1/api/…`,
/// `/v1/portal/…`). Calls go to the session's host, under the API, only: a full URL, a
/// scheme (`http:host`), a backslash (`\\host` is `//host` to URL parsers), `..` in any
/// spelling (`%2e%2e`), an encoded slash, or a control character (tabs and newlines are
/// dropped by URL parsers, so `.<TAB>.` would become `..`) is refused.
///
/// The URL is built by setting the path on `rest_base` — never by resolving `path` as a
/// reference, which could change the scheme or host — and the result is checked to be under
/// the API root whatever the checks before missed.
pub(crate) fn endpoint_url(
    rest_base: &Url,
    path: &str,
    query: &[(String, String)],
) -> Result<Url, Error> {
    let bad = |reason: &str| Error::Protocol {
        step: Step::Api,
        status: 0,
        detail: format!("`{}` {reason}", path.escape_debug()),
    };
    let trimmed = path.trim();
    if trimmed.contains("://") || trimmed.starts_with("//") {
        return Err(bad(
            "is a URL: give a path such as portfolio/accounts (calls go to the session's host)",
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(bad(
            "contains a control character: give a plain path such as portfolio/accounts",
        ));
    }
    // A fragment is never sent; what follows `#` is dropped, as a browser would.
    let trimmed = trimmed.split_once('#').map_or(trimmed, |(p, _)| p);
    let (relative, inline_query) = match trimmed.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (trimmed, None),
    };
    if relative.contains('\\') {
        return Err(bad(
            "contains a backslash, which URL parsers read as `/` (`\\\\host` is another host): use `/`",
        ));
    }
    if let Some((scheme, _)) = relative.split_once(':')
        && !scheme.contains('/')
    {
        return Err(bad(
            "starts with a scheme (`name:`): give a path such as portfolio/accounts (calls go to the session's host)",
        ));
    }
    if has_encoded_slash(relative) {
        return Err(bad(
            "contains an encoded slash (%2F or %5C), which a server may read as a separator: use `/`",
        ));
    }
    if relative.split('/').any(is_dot_dot) {
        return Err(bad("climbs out of the API with `..`"));
    }
    let base_path = rest_base.path().trim_end_matches('/');
    let root = rest_base
        .path()
        .strip_suffix("v1/api/")
        .unwrap_or("/")
        .trim_end_matches('/');
    // Every call builds one of these: no more than one allocation for the path.
    let (prefix, rest, under_len) = if relative.starts_with("/v1/") {
        (root, relative, root.len() + "/v1/".len())
    } else {
        (
            base_path,
            relative.trim_start_matches('/'),
            base_path.len() + 1,
        )
    };
    let mut full = String::with_capacity(prefix.len() + 1 + rest.len());
    full.push_str(prefix);
    if !rest.starts_with('/') {
        full.push('/');
    }
    full.push_str(rest);
    let under = full.get(..under_len).unwrap_or_default();
    let mut url = rest_base.clone();
    url.set_path(&full);
    // A backstop: whatever the checks above missed, the URL parser's own reading of the path
    // (dot segments resolved) must still be under the API on the session's host.
    if !url.path().starts_with(under)
        || url.host() != rest_base.host()
        || url.port_or_known_default() != rest_base.port_or_known_default()
        || url.scheme() != rest_base.scheme()
    {
        return Err(bad(
            "leaves the API: give a path such as portfolio/accounts",
        ));
    }
    url.set_query(inline_query.filter(|q| !q.is_empty()));
    if !query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in query {
            pairs.append_pair(k, v);
        }
    }
    url.set_fragment(None);
    Ok(url)
}

/// `%2F` or `%5C` in any case.
fn has_encoded_slash(path: &str) -> bool {
    path.as_bytes().windows(3).any(|w| {
        w[0] == b'%' && (w[1..].eq_ignore_ascii_case(b"2f") || w[1..].eq_ignore_ascii_case(b"5c"))
    })
}

/// A `..` segment, its dots written as `.` or `%2E` in any case.
fn is_dot_dot(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3 && rest[0] == b'%' && rest[1..3].eq_ignore_ascii_case(b"2e") {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    dots == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_dot_and_encoded_slashes_in_every_spelling() {
        for yes in ["..", "%2e%2e", ".%2E", "%2E."] {
            assert!(is_dot_dot(yes), "{yes}");
        }
        for no in [".", "...", "a..", "%2e", "%2f..", ""] {
            assert!(!is_dot_dot(no), "{no}");
        }
        assert!(has_encoded_slash("a%2Fb") && has_encoded_slash("a%5cb"));
        assert!(!has_encoded_slash("a%2eb") && !has_encoded_slash("%2"));
    }

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: body.as_bytes().to_vec(),
            retry_after: None,
        }
    }

    #[test]
    fn paths_resolve_against_the_rest_base() {
        let base = Url::parse("https://api.ibkr.com/v1/api/").unwrap();
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let url = |p: &str| endpoint_url(&base, p, &[]).unwrap().to_string();
        assert_eq!(
            url("iserver/accounts"),
            "https://api.ibkr.com/v1/api/iserver/accounts"
        );
        assert_eq!(
            url("/iserver/accounts"),
            "https://api.ibkr.com/v1/api/iserver/accounts"
        );
        assert_eq!(url("/v1/api/tickle"), "https://api.ibkr.com/v1/api/tickle");
        assert_eq!(
            url("/v1/portal/sso/validate"),
            "https://api.ibkr.com/v1/portal/sso/validate"
        );
        assert_eq!(
            endpoint_url(
                &base,
                "iserver/marketdata/snapshot?conids=1",
                &q(&[("fields", "31,84"), ("x", "a b&c")])
            )
            .unwrap()
            .to_string(),
            "https://api.ibkr.com/v1/api/iserver/marketdata/snapshot?conids=1&fields=31%2C84&x=a+b%26c"
        );
        let prefixed = Url::parse("http://127.0.0.1:5000/prefix/v1/api/").unwrap();
        assert_eq!(
            endpoint_url(&prefixed, "/v1/api/tickle", &[])
                .unwrap()
                .to_string(),
            "http://127.0.0.1:5000/prefix/v1/api/tickle"
        );
        for bad in [
            "https://evil.example/x",
            "//evil.example/x",
            "../../oauth2/api/v1/token",
            "/../../oauth2/api/v1/token",
            // `..` spelled so that only the URL parser sees it.
            "%2e%2e/%2e%2e/oauth2/api/v1/token",
            "iserver/%2E%2e/%2e%2e/%2e%2e/oauth2",
            "/v1/%2e%2e/oauth2/api/v1/token",
            "/v1/api/.%2e/.%2E/x",
            ".\t./.\t./.\t./x",
            "iserver/.\n./x",
            // Backslashes: `\\host` is `//host` to a URL parser; `\..\` climbs.
            "\\\\evil.example/x",
            "/\\evil.example/x",
            "iserver\\..\\..\\..\\x",
            // Schemes with no `//`.
            "http:evil.example/x",
            "HTTPS:/evil.example/x",
            "javascript:alert(1)",
            // Encoded separators a server may decode.
            "iserver/..%2f..%2fx",
            "iserver/..%5C..%5Cx",
            "\u{0}x",
        ] {
            let err = endpoint_url(&base, bad, &[]).unwrap_err().to_string();
            assert!(
                err.contains("portfolio/accounts")
                    || err.contains("`..`")
                    || err.contains("use `/`")
                    || err.contains("plain path"),
                "{bad:?}: {err}"
            );
        }
        // Confined: on the session's host, under the REST base.
        for (odd, confined) in [
            (
                "@evil.example/x",
                "https://api.ibkr.com/v1/api/@evil.example/x",
            ),
            (
                "/oauth2/api/v1/token",
                "https://api.ibkr.com/v1/api/oauth2/api/v1/token",
            ),
            ("/v1/@evil.example", "https://api.ibkr.com/v1/@evil.example"),
            ("/v1//evil.example", "https://api.ibkr.com/v1//evil.example"),
            (
                "iserver/./accounts",
                "https://api.ibkr.com/v1/api/iserver/accounts",
            ),
            (
                "a?b=../../c#frag",
                "https://api.ibkr.com/v1/api/a?b=../../c",
            ),
            (
                "iserver/contract/1:2/info",
                "https://api.ibkr.com/v1/api/iserver/contract/1:2/info",
            ),
        ] {
            assert_eq!(url(odd), confined, "{odd}");
        }
        // A REST base without its trailing slash still joins with one.
        let bare = Url::parse("https://api.ibkr.com/v1/api").unwrap();
        assert_eq!(
            endpoint_url(&bare, "tickle", &[]).unwrap().as_str(),
            "https://api.ibkr.com/v1/api/tickle"
        );
    }

    #[test]
    fn refusals_for_authentication_and_nothing_else() {
        assert!(refused_for_authentication(&reply(401, "")).is_some());
        assert!(
            refused_for_authentication(&reply(400, r#"{"error":"Bad Request: no bridge"}"#))
                .is_some()
        );
        assert!(
            refused_for_authentication(&reply(200, r#"{"authenticated":false,"x":1}"#)).is_some()
        );
        assert!(
            refused_for_authentication(&reply(
                200,
                r#" {"a":[1,{"b":null}],"authenticated":false,"competing":true}"#
            ))
            .is_some()
        );
        for (status, body) in [
            (200, r#"{"authenticated":true}"#),
            (200, r#"[{"authenticated":false}]"#),
            (200, "[false]"),
            (200, r#"{"authenticated":"false"}"#),
            (500, r#"{"error":"internal"}"#),
            (503, ""),
            (429, r#"{"error":"Too Many Requests"}"#),
            (200, r#"{"note":"no bridge here"}"#),
        ] {
            assert!(
                refused_for_authentication(&reply(status, body)).is_none(),
                "{status} {body}"
            );
        }
    }
}
