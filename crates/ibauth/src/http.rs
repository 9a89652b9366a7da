//! The one HTTP layer: a shared reqwest client (rustls, timeouts, user agent, extra CA roots,
//! no redirects), and the mapping of transport failures and IBKR's error bodies onto [`Error`].

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ConfigError, Error, Step, hint_for};
use crate::pacing::{Pacer, Permit};
use crate::upstream::{Upstream, UpstreamError};

/// `ibauth/<version>`, sent on every request.
pub const USER_AGENT: &str = concat!("ibauth/", env!("CARGO_PKG_VERSION"));

/// The largest answer body read by default (16 MiB): far above any IBKR answer, far below the
/// memory a runaway or hostile server could otherwise make the process take.
pub const DEFAULT_MAX_BODY: usize = 16 * 1024 * 1024;

/// One finished HTTP exchange, as reported to an observer (no header or body: nothing secret).
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The step it belonged to.
    pub step: Step,
    /// The method.
    pub method: reqwest::Method,
    /// The path (without the query).
    pub path: String,
    /// The status, or `None` when no answer came.
    pub status: Option<u16>,
    /// From sending to the end of the body.
    pub elapsed: Duration,
}

/// Reports every exchange (for progress output and metrics).
pub type Observer = Arc<dyn Fn(&Exchange) + Send + Sync>;

/// What every clone of one client shares.
#[derive(Default)]
struct Hooks {
    observer: OnceLock<Observer>,
    max_body: OnceLock<usize>,
    pacer: OnceLock<Pacer>,
    /// The connections forwarded requests (a gateway's) go over, set up on the first one.
    forward: OnceLock<Arc<Upstream>>,
}

/// How long the session's own requests (a login's steps, tickles) may wait for their turn at
/// least: a login must not fail because `sso/validate` (1 per minute) is a few seconds off.
const INTERNAL_MAX_WAIT: Duration = Duration::from_secs(90);

/// A cheaply clonable HTTP client; build it once and share it.
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    timeout: Duration,
    hooks: Arc<Hooks>,
    /// Extra trusted roots, for the forwarding client built on first use.
    extra_ca_pem: Option<Arc<[u8]>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A complete answer: status, headers and body.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    /// The server's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

impl HttpClient {
    /// A client with `timeout` on every call; `extra_ca_pem` adds trusted roots (certificate
    /// verification stays on).
    pub fn new(timeout: Duration, extra_ca_pem: Option<&[u8]>) -> Result<Self, ConfigError> {
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(timeout)
            // An auth endpoint that redirects is misconfigured; following it could carry a
            // bearer token somewhere unexpected.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(pem) = extra_ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| ConfigError::Invalid {
                    key: "ca_file".into(),
                    reason: format!("not a PEM certificate bundle: {e}"),
                })?;
            if certs.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "ca_file".into(),
                    reason: "holds no certificate".into(),
                });
            }
            builder = builder.tls_certs_merge(certs);
        }
        let inner = builder.build().map_err(|e| ConfigError::Invalid {
            key: "tls".into(),
            reason: format!("cannot set up the HTTP client: {e}"),
        })?;
        Ok(Self {
            inner,
            timeout,
            hooks: Arc::default(),
            extra_ca_pem: extra_ca_pem.map(Arc::from),
        })
    }

    /// The underlying reqwest client, to build requests with.
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.inner
    }

    /// The timeout of every call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Reports every exchange of this client and its clones to `observer` (the first one set
    /// stays).
    pub fn observe(&self, observer: Observer) {
        let _ = self.hooks.observer.set(observer);
    }

    /// Caps every answer body of this client and its clones at `bytes` (the first cap set
    /// stays; default [`DEFAULT_MAX_BODY`]).
    pub fn limit_body(&self, bytes: usize) {
        let _ = self.hooks.max_body.set(bytes);
    }

    /// Paces every request of this client and its clones with `pacer` (the first one set
    /// stays): each waits for its turn before it is sent, and a 429 pauses its budget.
    pub fn pace(&self, pacer: Pacer) {
        let _ = self.hooks.pacer.set(pacer);
    }

    /// The pacer in use, if any.
    pub fn pacer(&self) -> Option<&Pacer> {
        self.hooks.pacer.get()
    }

    /// The cap on every answer body (and WebSocket message) of this client.
    pub fn max_body(&self) -> usize {
        self.hooks
            .max_body
            .get()
            .copied()
            .unwrap_or(DEFAULT_MAX_BODY)
    }

    fn report(&self, exchange: impl FnOnce() -> Exchange) {
        if let Some(observer) = self.hooks.observer.get() {
            observer(&exchange());
        }
    }

    /// Sends `request` and reads the whole body, mapping failures to `step`.
    pub(crate) async fn send(
        &self,
        step: Step,
        request: reqwest::RequestBuilder,
    ) -> Result<Reply, Error> {
        self.send_within(step, request, None).await
    }

    /// As [`send`](Self::send), waiting at most `max_wait` for a turn under the pacing limits
    /// (`None`: the rules' `max_wait` for API calls, longer for the session's own steps).
    pub(crate) async fn send_within(
        &self,
        step: Step,
        request: reqwest::RequestBuilder,
        max_wait: Option<Duration>,
    ) -> Result<Reply, Error> {
        let request = request.build().map_err(|e| self.transport(step, e))?;
        let method = request.method().clone();
        let path = request.url().path().to_owned();
        let pacer = self.hooks.pacer.get();
        let _permit = self.admit(step, &method, &path, max_wait).await?;
        let started = Instant::now();
        let answer = async {
            let mut response = self
                .inner
                .execute(request)
                .await
                .map_err(|e| self.transport(step, e))?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
            let limit = self.max_body();
            let declared = response.content_length().unwrap_or(0);
            if declared > limit as u64 {
                return Err(too_large(step, status, limit));
            }
            let mut body = Vec::with_capacity(usize::try_from(declared).unwrap_or(0).min(limit));
            while let Some(chunk) = match response.chunk().await {
                Ok(chunk) => chunk,
                Err(e) => {
                    let e = match e.url() {
                        Some(_) => e,
                        None => e.with_url(response.url().clone()),
                    };
                    return Err(self.transport(step, e));
                }
            } {
                if body.len().saturating_add(chunk.len()) > limit {
                    return Err(too_large(step, status, limit));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Reply {
                status,
                headers: std::mem::take(response.headers_mut()),
                body,
                retry_after,
            })
        }
        .await;
        let elapsed = started.elapsed();
        self.report(|| Exchange {
            step,
            method: method.clone(),
            path: path.clone(),
            status: answer.as_ref().ok().map(|r| r.status),
            elapsed,
        });
        let reply = answer?;
        if reply.status == 429
            && let Some(pacer) = pacer
        {
            paused(pacer, step, &method, &path, reply.retry_after);
        }
        tracing::trace!(
            step = step.name(),
            %method,
            path,
            status = reply.status,
            bytes = reply.body.len(),
            elapsed_ms = elapsed.as_millis() as u64,
            "http exchange"
        );
        Ok(reply)
    }

    /// Waits for the request's turn under the pacing limits, if this client is paced.
    async fn admit(
        &self,
        step: Step,
        method: &reqwest::Method,
        path: &str,
        max_wait: Option<Duration>,
    ) -> Result<Option<Permit>, Error> {
        let Some(pacer) = self.hooks.pacer.get() else {
            return Ok(None);
        };
        let rules = pacer.rules().max_wait;
        let wait = max_wait.unwrap_or(match step {
            Step::Api => rules,
            _ => rules.max(INTERNAL_MAX_WAIT),
        });
        let permit = pacer
            .acquire_within(method, path, wait)
            .await
            .map_err(|source| Error::Paced { step, source })?;
        if !permit.waited.is_zero() {
            tracing::debug!(
                step = step.name(),
                path,
                waited_ms = u64::try_from(permit.waited.as_millis()).unwrap_or(u64::MAX),
                "waited for a turn under the pacing limits"
            );
        }
        Ok(Some(permit))
    }

    /// The connections forwarded requests go over ([`Upstream`]): the same TLS as reqwest's
    /// (rustls, the platform verifier plus `ca_file`), HTTP/2 where the server offers it,
    /// pooled connections (90 s idle), `TCP_NODELAY` and the connect timeout — without
    /// reqwest's per-request work (URL re-parsing, cloning its service stack, a timer of its
    /// own).
    fn forward_client(&self) -> Result<&Arc<Upstream>, Error> {
        if let Some(client) = self.hooks.forward.get() {
            return Ok(client);
        }
        let tls =
            rustls_config(self.extra_ca_pem.as_deref()).map_err(|detail| Error::Protocol {
                step: Step::Api,
                status: 0,
                detail: format!("cannot set up TLS: {detail}"),
            })?;
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.timeout));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        Ok(self.hooks.forward.get_or_init(|| Upstream::new(connector)))
    }

    /// Sends a forwarded `request` when its turn comes and returns the answer with its body
    /// unread (a proxy streams it on), with the pacing permit to hold until the body is done
    /// (in-flight caps count it until then). The client's timeout bounds the whole exchange,
    /// body included, as for every other call. A 429 pauses the budget as
    /// [`send`](Self::send) does.
    pub(crate) async fn send_forward(
        &self,
        step: Step,
        mut request: http::Request<ForwardBodyInner>,
        max_wait: Option<Duration>,
    ) -> Result<Streamed, Error> {
        let client = self.forward_client()?;
        let headers = request.headers_mut();
        if !headers.contains_key(http::header::USER_AGENT) {
            headers.insert(
                http::header::USER_AGENT,
                http::HeaderValue::from_static(USER_AGENT),
            );
        }
        if !headers.contains_key(http::header::ACCEPT) {
            headers.insert(http::header::ACCEPT, http::HeaderValue::from_static("*/*"));
        }
        let method = request.method().clone();
        let uri = request.uri().clone();
        let permit = self.admit(step, &method, uri.path(), max_wait).await?;
        let started = Instant::now();
        // One timer for the exchange: it bounds the answer's headers here, then its body.
        let mut deadline = Box::pin(tokio::time::sleep(self.timeout));
        let answer = tokio::select! {
            biased;
            answer = client.send(request) => answer.map_err(|e| self.forward_failure(step, &uri, e)),
            () = deadline.as_mut() => Err(Error::Timeout { step, timeout: self.timeout }),
        };
        self.report(|| Exchange {
            step,
            method: method.clone(),
            path: uri.path().to_owned(),
            status: answer.as_ref().ok().map(|r| r.status().as_u16()),
            elapsed: started.elapsed(),
        });
        let response = answer?;
        if response.status().as_u16() == 429
            && let Some(pacer) = self.hooks.pacer.get()
        {
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
            paused(pacer, step, &method, uri.path(), retry_after);
        }
        let timeout = self.timeout;
        let response = response.map(|body| {
            http_body_util::BodyExt::boxed_unsync(Deadline {
                body,
                deadline,
                timeout,
            })
        });
        Ok(Streamed { response, permit })
    }

    /// The error for a forwarded request that got no answer, worded as for every other call.
    fn forward_failure(&self, step: Step, uri: &http::Uri, e: UpstreamError) -> Error {
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let detail = error_chain(&e);
        network(step, host, detail, Box::new(e))
    }

    /// The error for a failed exchange; the host is taken from the error (reqwest keeps the
    /// URL), so the successful path formats nothing for it.
    fn transport(&self, step: Step, e: reqwest::Error) -> Error {
        let host = e
            .url()
            .and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_owned(),
                })
            })
            .unwrap_or_default();
        if e.is_timeout() {
            return Error::Timeout {
                step,
                timeout: self.timeout,
            };
        }
        let detail = source_chain(&e);
        network(step, host, detail, Box::new(e))
    }
}

/// A failed exchange with `host`, worded the same for reqwest's calls and forwarded ones: an
/// untrusted certificate says what to set.
fn network(step: Step, host: String, mut detail: String, source: BoxError) -> Error {
    if crate::error::is_certificate_problem(&detail) {
        detail.push_str(
            " (the server's certificate is not trusted; for a sandbox or private CA set `ca_file` to its CA certificate)",
        );
    }
    Error::Network {
        step,
        host,
        detail,
        source,
    }
}

/// Any error a body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A forwarded request's or answer's body, as it goes over the wire.
pub type ForwardBodyInner = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;

/// rustls with the platform verifier plus `extra_ca_pem` (certificate verification on), the
/// configuration reqwest uses too.
pub(crate) fn rustls_config(extra_ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut extra = Vec::new();
    if let Some(pem) = extra_ca_pem {
        use rustls_pki_types::pem::PemObject;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            extra.push(cert.map_err(|e| format!("bad CA certificate: {e}"))?);
        }
    }
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| format!("TLS setup failed: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .dangerous()
        // Not "dangerous": this is the platform verifier, the same one reqwest uses.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// An answer's body that fails once the exchange's deadline has passed (as reqwest's timeout
/// does), the timer started with the request.
struct Deadline {
    body: crate::upstream::Answer,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

/// The answer's body was not done within the client's timeout.
#[derive(Debug, thiserror::Error)]
#[error("the answer's body did not arrive within {}s (the timeout)", .0.as_secs_f32())]
struct BodyTimeout(Duration);

impl http_body::Body for Deadline {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout(this.timeout).into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An answer whose body is still to be read, and the request's pacing permit.
#[derive(Debug)]
pub struct Streamed {
    /// The answer (status and headers read, body not).
    pub response: http::Response<ForwardBodyInner>,
    /// Hold it until the body is done: an in-flight cap counts the request until then.
    pub permit: Option<Permit>,
}

/// A 429 arrived: the budget the request counted against waits out `retry_after`.
fn paused(
    pacer: &Pacer,
    step: Step,
    method: &reqwest::Method,
    path: &str,
    retry_after: Option<Duration>,
) {
    tracing::warn!(
        step = step.name(),
        path,
        retry_after_s = retry_after.map(|d| d.as_secs()),
        "429 Too Many Requests: this budget is paused"
    );
    pacer.pause(method, path, retry_after);
}

fn too_large(step: Step, status: u16, limit: usize) -> Error {
    Error::Protocol {
        step,
        status,
        detail: format!(
            "the answer is larger than {limit} bytes; refused (a misbehaving server or proxy?)"
        ),
    }
}

/// The innermost causes, which say what happened ("connection refused", "invalid peer
/// certificate"), without reqwest's outer line.
fn source_chain(e: &reqwest::Error) -> String {
    let parts = causes(std::error::Error::source(e));
    if parts.is_empty() {
        return if e.is_connect() {
            "connection failed".to_owned()
        } else {
            "request failed".to_owned()
        };
    }
    parts.join(": ")
}

/// `e` and its causes, as [`source_chain`] words reqwest's (whose outer error is this one).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    causes(Some(e)).join(": ")
}

/// Each cause's text once, outermost first.
fn causes(mut cur: Option<&(dyn std::error::Error + 'static)>) -> Vec<String> {
    let mut parts = Vec::new();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        cur = inner.source();
    }
    parts
}

impl Reply {
    /// Parses a successful JSON answer leniently (unknown fields ignored). An error status, or
    /// HTTP 200 with an `error` field, is [`Error::Rejected`]; unparseable JSON is
    /// [`Error::Protocol`].
    pub(crate) fn json<T: DeserializeOwned>(&self, step: Step) -> Result<T, Error> {
        self.check(step)?;
        serde_json::from_slice(&self.body).map_err(|e| Error::Protocol {
            step,
            status: self.status,
            detail: format!("cannot parse the JSON answer: {e}"),
        })
    }

    /// Fails on an error status or an `{"error": …}` body.
    pub(crate) fn check(&self, step: Step) -> Result<(), Error> {
        let error_body = match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(map)) => map
                .get("error")
                .filter(|v| !v.is_null() && *v != &Value::Bool(false))
                .map(|_| ()),
            _ => None,
        };
        if (200..300).contains(&self.status) && error_body.is_none() {
            return Ok(());
        }
        let message = ibkr_message(&self.body);
        Err(Error::Rejected {
            step,
            status: self.status,
            hint: hint_for(step, self.status, &message),
            message,
            retry_after: self.retry_after,
        })
    }
}

/// The longest wait taken from a `Retry-After`; a garbled or hostile value must not park a
/// keep-alive for days.
pub const MAX_RETRY_AFTER: Duration = crate::pacing::MAX_PAUSE;

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3), capped at
/// [`MAX_RETRY_AFTER`]; a date in the past means no wait.
pub(crate) fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// IBKR's message from an error body: `{"error": …}`, problem+json `title`/`detail`, or text.
pub(crate) fn ibkr_message(body: &[u8]) -> String {
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
        let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::trim);
        if let Some(error) = text("error").filter(|s| !s.is_empty()) {
            return shorten(error);
        }
        match (text("title"), text("detail")) {
            (Some(t), Some(d)) if !d.is_empty() => return shorten(&format!("{t}: {d}")),
            (Some(t), _) => return shorten(t),
            (None, Some(d)) => return shorten(d),
            _ => {}
        }
        for key in ["message", "error_description"] {
            if let Some(m) = text(key).filter(|s| !s.is_empty()) {
                return shorten(m);
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        "(empty body)".to_owned()
    } else {
        shorten(text.trim())
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 300;
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match clean.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &clean[..cut]),
        None => clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_from_every_ibkr_shape() {
        assert_eq!(
            ibkr_message(br#"{"error":"id: 7, error: invalid consumer","statusCode":401}"#),
            "id: 7, error: invalid consumer"
        );
        assert_eq!(
            ibkr_message(
                br#"{"type":"about:blank","title":"Unauthorized","status":401,"detail":"bad kid"}"#
            ),
            "Unauthorized: bad kid"
        );
        assert_eq!(
            ibkr_message(b"  Bad Request: no bridge \n"),
            "Bad Request: no bridge"
        );
        assert_eq!(ibkr_message(b""), "(empty body)");
        assert!(ibkr_message(&[b'x'; 1000]).ends_with('…'));
    }

    #[test]
    fn http_200_with_error_field_is_rejected() {
        let reply = Reply {
            status: 200,
            headers: Default::default(),
            body: br#"{"error":"not authenticated"}"#.to_vec(),
            retry_after: None,
        };
        let err = reply.json::<Value>(Step::Tickle).unwrap_err();
        assert!(
            matches!(err, Error::Rejected { status: 200, ref message, .. } if message == "not authenticated")
        );
        let ok = Reply {
            status: 200,
            headers: Default::default(),
            body: br#"{"session":"abc","extra":1}"#.to_vec(),
            retry_after: None,
        };
        assert!(ok.json::<Value>(Step::Tickle).is_ok());
        let garbled = Reply {
            status: 200,
            headers: Default::default(),
            body: b"<html>".to_vec(),
            retry_after: None,
        };
        assert!(matches!(
            garbled.json::<Value>(Step::Tickle),
            Err(Error::Protocol { .. })
        ));
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_and_capped() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means retry now"
        );
        assert_eq!(parse_retry_after("999999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn a_rejection_carries_retry_after() {
        let reply = Reply {
            status: 429,
            headers: Default::default(),
            body: br#"{"error":"Too Many Requests"}"#.to_vec(),
            retry_after: Some(Duration::from_secs(3)),
        };
        let err = reply.check(Step::Tickle).unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
        assert!(err.is_transient());
    }
}
