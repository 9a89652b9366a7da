//! Requests passed on as they came (a gateway's clients'): the session authorises and paces
//! them, and streams their bodies both ways.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use reqwest::Method;
use reqwest::header::{self, HeaderMap, HeaderName};
use url::Url;

use super::Session;
use super::api::endpoint_url;
use crate::error::{Error, Step};
use crate::http::{BoxError, ForwardBodyInner, Streamed};

/// A request to pass on: its method, its path and query as the client sent them (absolute,
/// under `/v1/`: `/v1/api/portfolio/accounts?x=1`, `/v1/portal/…`), the client's headers, and
/// its body.
#[derive(Debug)]
pub struct Forward {
    /// The method.
    pub method: Method,
    /// Path and query, under `/v1/`.
    pub path_and_query: String,
    /// The client's headers: hop-by-hop ones, `Host`, and the client's own `Authorization`
    /// and `Cookie` are never passed on (the session authorises the request).
    pub headers: HeaderMap,
    /// The body.
    pub body: ForwardBody,
}

/// A forwarded request's body.
#[derive(Debug)]
pub enum ForwardBody {
    /// None.
    Empty,
    /// Held whole (small): the request can be sent again after a recovery.
    Full(Bytes),
    /// Streamed as it arrives (chunked): sent once, never again.
    Stream(ForwardBodyInner),
}

impl ForwardBody {
    /// A body streamed from `stream` as it arrives, sent chunked.
    pub fn from_stream<S, E>(stream: S) -> Self
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        use futures_util::TryStreamExt;
        let frames = stream.map_ok(http_body::Frame::data).map_err(Into::into);
        ForwardBody::Stream(http_body_util::StreamBody::new(frames).boxed_unsync())
    }

    /// The body for one sending; `self` keeps what a second sending would need (nothing, for
    /// a stream).
    fn take(&mut self) -> (ForwardBodyInner, bool) {
        let full = |bytes: Bytes| {
            http_body_util::Full::new(bytes)
                .map_err(|never| match never {})
                .boxed_unsync()
        };
        match std::mem::replace(self, ForwardBody::Empty) {
            // Zero-sized: boxed without an allocation (most forwarded requests are GETs).
            ForwardBody::Empty => (
                http_body_util::Empty::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
                true,
            ),
            ForwardBody::Full(bytes) => {
                *self = ForwardBody::Full(bytes.clone());
                (full(bytes), true)
            }
            ForwardBody::Stream(stream) => (stream, false),
        }
    }
}

/// Headers that belong to one connection, not to the request (RFC 9110 §7.6.1), and the ones
/// the session sets itself.
const NOT_PASSED_ON: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::HOST,
    header::CONTENT_LENGTH,
    header::AUTHORIZATION,
    header::COOKIE,
];

/// The client's headers worth passing on.
fn pass_on(headers: &HeaderMap) -> HeaderMap {
    // Whatever `Connection` names is hop-by-hop too.
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    // Room for what the session adds (`Authorization`, `User-Agent`, `Accept`): no regrowth.
    let mut out = HeaderMap::with_capacity(headers.len() + 3);
    for (name, value) in headers {
        if NOT_PASSED_ON.contains(name)
            || name.as_str() == "keep-alive"
            || name.as_str().starts_with("proxy-")
            || named.iter().any(|n| n == name.as_str())
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// Longest error answer read to look for IBKR's "no bridge" (IBKR's are a few dozen bytes); a
/// longer one is passed on as it is, its first part read and sent first.
const REFUSAL_PEEK: usize = 16 * 1024;

/// Whether IBKR refused a forwarded request for authentication — 401, or an error answer
/// saying `no bridge` (the brokerage session is gone), as [`Session::request`] recovers from
/// too — and the answer to pass on. An error answer is read (up to [`REFUSAL_PEEK`]) to tell,
/// and handed back with the same status, headers and body.
async fn refused_for_authentication(streamed: Streamed) -> (Streamed, Option<&'static str>) {
    let status = streamed.response.status();
    if status.as_u16() == 401 {
        return (streamed, Some("forwarded: 401"));
    }
    if status.is_success() || status.is_informational() || status.is_redirection() {
        return (streamed, None);
    }
    let Streamed { response, permit } = streamed;
    let (parts, mut body) = response.into_parts();
    let mut head: Vec<Bytes> = Vec::new();
    let mut read = 0usize;
    let mut failed = None;
    while read <= REFUSAL_PEEK {
        match body.frame().await {
            Some(Ok(frame)) => {
                // Trailers (none from IBKR) are not passed on, as before.
                if let Ok(chunk) = frame.into_data() {
                    read += chunk.len();
                    head.push(chunk);
                }
            }
            None => break,
            Some(Err(e)) => {
                failed = Some(e);
                break;
            }
        }
    }
    let no_bridge = read <= REFUSAL_PEEK
        && failed.is_none()
        && crate::http::ibkr_message(&head.concat())
            .to_ascii_lowercase()
            .contains("no bridge");
    let rebuilt = http::Response::from_parts(parts, rebuild(body, head, failed));
    let why = no_bridge.then_some("forwarded: no bridge (the brokerage session is gone)");
    (
        Streamed {
            response: rebuilt,
            permit,
        },
        why,
    )
}

/// `body` with the chunks already read put back in front of the rest (and the read error, if
/// one ended it, after them).
fn rebuild(body: ForwardBodyInner, head: Vec<Bytes>, failed: Option<BoxError>) -> ForwardBodyInner {
    use futures_util::StreamExt;
    let read = futures_util::stream::iter(
        head.into_iter()
            .map(|chunk| Ok::<_, BoxError>(http_body::Frame::data(chunk))),
    );
    match failed {
        // The body already failed: what was read, then the failure.
        Some(e) => http_body_util::StreamBody::new(
            read.chain(futures_util::stream::once(std::future::ready(Err(e)))),
        )
        .boxed_unsync(),
        None => http_body_util::StreamBody::new(
            read.chain(
                body.into_data_stream()
                    .map(|r| r.map(http_body::Frame::data)),
            ),
        )
        .boxed_unsync(),
    }
}

/// The URI `path_and_query` (under `/v1/`) goes to on `rest_base`'s host: exactly what
/// [`endpoint_url`] gives, built straight from the text when it is plain (nothing in it the URL
/// parser would encode, resolve or refuse), through the URL parser otherwise.
fn forward_uri(rest_base: &Url, path_and_query: &str) -> Result<http::Uri, Error> {
    match plain_uri(rest_base, path_and_query) {
        Some(uri) => Ok(uri),
        None => uri_of(
            endpoint_url(rest_base, path_and_query, &[])?,
            path_and_query,
        ),
    }
}

/// The URL's text as a URI, without a copy.
fn uri_of(url: Url, path_and_query: &str) -> Result<http::Uri, Error> {
    http::Uri::from_maybe_shared(Bytes::from(String::from(url))).map_err(|e| Error::Protocol {
        step: Step::Api,
        status: 0,
        detail: format!("`{}` is not a URI: {e}", path_and_query.escape_debug()),
    })
}

/// `rest_base`'s scheme, host and root followed by `path_and_query`, when that is plain: under
/// `/v1/`, only bytes a URL keeps as they are in a path or query (no space, quote, `<`, `>`,
/// `#`, backslash, control character or non-ASCII), no `%` in the path (encoded dots and
/// slashes are for [`endpoint_url`] to judge), no `.` or `..` segment, no `://`, no empty
/// query. Anything else: `None`.
fn plain_uri(rest_base: &Url, path_and_query: &str) -> Option<http::Uri> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    let plain = |b: &u8| {
        b.is_ascii_alphanumeric() || b"-._~!$&()*+,;=:@/".contains(b) || *b == b'%' || *b == b'?'
    };
    if !path.starts_with("/v1/")
        || !path_and_query.bytes().all(|b| plain(&b))
        || path.contains('%')
        || path.split('/').any(|s| s == "." || s == "..")
        || path_and_query.contains("://")
        || query == Some("")
    {
        return None;
    }
    let origin = &rest_base[..url::Position::BeforePath];
    let root = rest_base
        .path()
        .strip_suffix("v1/api/")
        .unwrap_or("/")
        .trim_end_matches('/');
    let mut text = String::with_capacity(origin.len() + root.len() + path_and_query.len());
    text.push_str(origin);
    text.push_str(root);
    text.push_str(path_and_query);
    http::Uri::from_maybe_shared(Bytes::from(text)).ok()
}

impl Session {
    /// Passes `request` on to the session's API host: authorised by the session, paced (at
    /// most `max_wait` for its turn), the answer returned with its body unread to stream on.
    /// A refusal for authentication (401, or an error answer saying `no bridge`) is recovered
    /// from once — and the request sent again when its body can be (empty or held whole); a
    /// streamed body is never sent twice, the recovery then serves the client's next request.
    /// An error answer's body is read (up to 16 KiB) to tell, and returned whole either way.
    pub async fn forward(
        &self,
        request: Forward,
        max_wait: Option<Duration>,
    ) -> Result<Streamed, Error> {
        if !request.path_and_query.starts_with("/v1/") {
            return Err(Error::Protocol {
                step: Step::Api,
                status: 0,
                detail: format!(
                    "`{}` is not under /v1/: only the Web API is passed on",
                    request.path_and_query.escape_debug()
                ),
            });
        }
        let mut body = request.body;
        let mut recovered = false;
        loop {
            let (epoch, auth, rest_base) = self.inner.ready().await?;
            let (uri, authorization) = match auth.fixed() {
                // A bearer token: the URI straight from the path when it is plain.
                Some(header) => (forward_uri(&rest_base, &request.path_and_query)?, header),
                None => {
                    let url = endpoint_url(&rest_base, &request.path_and_query, &[])?;
                    let authorization = auth.authorization(&request.method, &url)?;
                    (uri_of(url, &request.path_and_query)?, authorization)
                }
            };
            let (payload, replayable) = body.take();
            let mut built = http::Request::new(payload);
            *built.method_mut() = request.method.clone();
            *built.uri_mut() = uri;
            // Filtered afresh for a second sending: no copy kept for the (rare) recovery.
            *built.headers_mut() = pass_on(&request.headers);
            built
                .headers_mut()
                .insert(header::AUTHORIZATION, authorization);
            let streamed = self
                .inner
                .http
                .send_forward(Step::Api, built, max_wait)
                .await?;
            if recovered {
                return Ok(streamed);
            }
            let (streamed, why) = refused_for_authentication(streamed).await;
            let Some(why) = why else {
                return Ok(streamed);
            };
            recovered = true;
            if !replayable {
                // The body is gone: recover for the next request, in the background.
                let session = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = session.inner.recover_after(epoch, why).await {
                        tracing::warn!(error = %e, "recovery after a forwarded request's refusal failed");
                    }
                });
                return Ok(streamed);
            }
            drop(streamed);
            // Boxed: a recovery's future (a login's steps) is large and rare; inline, every
            // request's future would be as large, and copied whole when it is built.
            Box::pin(self.inner.recover_after(epoch, why)).await?;
        }
    }

    /// Recovers the session now, as a call refused for authentication would: status, then
    /// re-init, then a new login, each only if the previous did not help. Callers asking at the
    /// same time share one recovery.
    pub async fn recover(&self) -> Result<(), Error> {
        let seen = self.inner.epoch();
        self.inner.recover_after(seen, "asked").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    /// The URI built straight from a plain path is the one the URL parser gives; anything not
    /// plain goes through the parser (and its refusals).
    #[test]
    fn a_plain_path_gives_the_uri_the_url_parser_would() {
        let bases = [
            "https://api.ibkr.com/v1/api/",
            "http://127.0.0.1:5000/v1/api/",
            "https://API.ibkr.com:443/v1/api/",
            "http://[::1]:8080/prefix/v1/api/",
        ];
        let plain = [
            "/v1/api/iserver/accounts",
            "/v1/portal/sso/validate",
            "/v1/api/iserver/marketdata/snapshot?conids=265598,8314&fields=31,84",
            "/v1/api/x?q=a%20b&r=%2F",
            "/v1/api/a//b",
            "/v1/api/a:b@c;d=e",
            "/v1/api/x?next=?y",
            "/v1/api/...",
            "/v1/api/",
        ];
        let not_plain = [
            "/v1/api/x?",
            "/v1/api/./x",
            "/v1/api/a/../b",
            "/v1/api/a%2Fb",
            "/v1/api/%2e%2e/x",
            "/v1/api/a b",
            "/v1/api/a\\b",
            "/v1/api/x?u=http://h",
            "/v1/api/x#f",
            "/v1/api/\u{e9}",
            "/v1/api/x?q='a'",
            "/v1/api/{x}",
            "/v2/api/x",
        ];
        for base in bases {
            let base = Url::parse(base).unwrap();
            for path in plain {
                let direct = plain_uri(&base, path).unwrap_or_else(|| panic!("{path}"));
                let parsed = uri_of(endpoint_url(&base, path, &[]).unwrap(), path).unwrap();
                assert_eq!(direct, parsed, "{base} {path}");
                assert_eq!(forward_uri(&base, path).unwrap(), parsed);
            }
            for path in not_plain {
                assert!(plain_uri(&base, path).is_none(), "{path}");
                // As the parser has it: the same URI, or the same refusal.
                match endpoint_url(&base, path, &[]) {
                    Ok(url) => {
                        let parsed = uri_of(url, path).ok();
                        assert_eq!(forward_uri(&base, path).ok(), parsed, "{path}");
                    }
                    Err(e) => assert_eq!(
                        forward_uri(&base, path).unwrap_err().to_string(),
                        e.to_string()
                    ),
                }
            }
        }
    }

    #[test]
    fn hop_by_hop_and_credentials_stay_behind() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("authorization", "Bearer client-secret"),
            ("cookie", "api=x"),
            ("host", "localhost:5000"),
            ("proxy-connection", "keep-alive"),
            ("content-type", "application/json"),
            ("accept", "*/*"),
            ("user-agent", "ibind"),
        ] {
            h.append(
                HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let out = pass_on(&h);
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "accept", "user-agent"]);
    }
}
