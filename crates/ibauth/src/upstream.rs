//! The connections forwarded requests go over, on hyper's connection API: per host, either one
//! HTTP/2 connection that carries every request (what IBKR offers by ALPN), or HTTP/1.1
//! connections reused last-in first-out, each handed back when its answer's body is done.
//!
//! hyper-util's pooled client did the same with more work a request than a proxy needs: a
//! hashed pool key, a checkout racing a connect, and for HTTP/1.1 a task spawned for every
//! request only to wait for the connection to be ready again. Here a request takes the pool's
//! lock once, and an HTTP/1.1 connection goes back from the answer's body when it ends.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri, header};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::http::{BoxError, ForwardBodyInner};

/// TCP (`TCP_NODELAY`, the connect timeout) with rustls over it for `https`.
pub(crate) type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// How long an HTTP/1.1 connection may sit unused and still be taken again.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Unused HTTP/1.1 connections kept a host; more are closed as they come back.
const MAX_IDLE: usize = 64;

/// How many times a request refused unsent by a pooled connection goes again on another.
const MAX_RESENDS: usize = 4;

/// Why a forwarded request got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// The URI has no scheme or host (the session always gives both).
    #[error("`{0}` is not an absolute URI")]
    NotAbsolute(Uri),
    /// No connection could be made (TCP, TLS).
    #[error("cannot connect")]
    Connect(#[source] BoxError),
    /// The connection failed during the handshake or the exchange.
    #[error("the exchange failed")]
    Exchange(#[source] hyper::Error),
}

/// The pool: one entry a host, never removed (a session talks to one or two hosts), so an
/// answer can name its host by index.
pub(crate) struct Upstream {
    connector: Connector,
    hosts: Mutex<Vec<Host>>,
}

struct Host {
    scheme: Scheme,
    authority: Authority,
    /// `Host` for HTTP/1.1 requests: the authority without a default port.
    host_header: HeaderValue,
    /// The host's HTTP/2 connection, shared by every request.
    h2: Option<http2::SendRequest<ForwardBodyInner>>,
    /// The last connection made here negotiated HTTP/2: the next connect is made once, by
    /// one request, while the others wait for it.
    known_h2: bool,
    connecting: Arc<tokio::sync::Mutex<()>>,
    /// Unused HTTP/1.1 connections, the most recently used last.
    idle: VecDeque<Idle>,
}

struct Idle {
    sender: http1::SendRequest<ForwardBodyInner>,
    since: Instant,
}

enum Sender {
    H1(http1::SendRequest<ForwardBodyInner>),
    H2(http2::SendRequest<ForwardBodyInner>),
}

/// A connection to send on.
struct Checkout {
    sender: Sender,
    /// It served a request before: a request it refuses unsent (closed meanwhile) goes again on
    /// another; on a new connection such a refusal is the answer.
    reused: bool,
    host: usize,
    host_header: HeaderValue,
}

impl Upstream {
    pub(crate) fn new(connector: Connector) -> Arc<Self> {
        Arc::new(Self {
            connector,
            hosts: Mutex::new(Vec::new()),
        })
    }

    fn hosts(&self) -> MutexGuard<'_, Vec<Host>> {
        // The pool holds no invariant a panic elsewhere could break half-way.
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `request` (an absolute URI) on a pooled connection to its host, or a new one, and
    /// returns the answer with its body unread.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut request: Request<ForwardBodyInner>,
    ) -> Result<Response<Answer>, UpstreamError> {
        let uri = request.uri().clone();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(UpstreamError::NotAbsolute(uri));
        };
        let mut resends = 0;
        loop {
            let checkout = self.checkout(scheme, authority, &uri).await?;
            // A connection that served before may have closed meanwhile: the request goes
            // again, a few times at most (a new connection's refusal is the answer).
            let reused = checkout.reused && resends < MAX_RESENDS;
            resends += 1;
            let (sent, back) = match checkout.sender {
                Sender::H2(mut h2) => {
                    *request.uri_mut() = uri.clone();
                    (h2.try_send_request(request).await, None)
                }
                Sender::H1(mut h1) => {
                    if let Err(e) = h1.ready().await {
                        if !reused {
                            return Err(UpstreamError::Exchange(e));
                        }
                        // Closed while idle, the request untouched: another connection.
                        continue;
                    }
                    // Origin form (`/v1/api/…?…`) and `Host`, as HTTP/1.1 servers expect.
                    *request.uri_mut() = match uri.path_and_query() {
                        Some(pq) => Uri::from(pq.clone()),
                        None => Uri::from_static("/"),
                    };
                    request
                        .headers_mut()
                        .entry(header::HOST)
                        .or_insert(checkout.host_header);
                    let sent = h1.try_send_request(request).await;
                    (sent, Some((checkout.host, h1)))
                }
            };
            match sent {
                Ok(response) => {
                    let back = back.map(|(host, sender)| Back {
                        upstream: self.clone(),
                        host,
                        sender,
                    });
                    return Ok(response.map(|body| Answer::new(body, back)));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        tracing::debug!(error = %e.error(), "a pooled connection closed before the request went: another one");
                        request = unsent;
                    }
                    _ => return Err(UpstreamError::Exchange(e.into_error())),
                },
            }
        }
    }

    /// A connection to `scheme://authority`: the host's HTTP/2 connection, its most recently
    /// used idle HTTP/1.1 one, or a new one.
    async fn checkout(
        &self,
        scheme: &Scheme,
        authority: &Authority,
        uri: &Uri,
    ) -> Result<Checkout, UpstreamError> {
        let mut gate = None;
        loop {
            let (host, host_header, connecting) = {
                let mut hosts = self.hosts();
                let index = match hosts
                    .iter()
                    .position(|h| h.scheme == *scheme && h.authority == *authority)
                {
                    Some(index) => index,
                    None => {
                        hosts.push(Host::new(scheme.clone(), authority.clone())?);
                        hosts.len() - 1
                    }
                };
                let host = &mut hosts[index];
                if let Some(h2) = &host.h2 {
                    if !h2.is_closed() {
                        return Ok(Checkout {
                            sender: Sender::H2(h2.clone()),
                            reused: true,
                            host: index,
                            host_header: host.host_header.clone(),
                        });
                    }
                    host.h2 = None;
                }
                let now = Instant::now();
                while let Some(idle) = host.idle.pop_back() {
                    if !idle.sender.is_closed()
                        && now.saturating_duration_since(idle.since) < IDLE_TIMEOUT
                    {
                        return Ok(Checkout {
                            sender: Sender::H1(idle.sender),
                            reused: true,
                            host: index,
                            host_header: host.host_header.clone(),
                        });
                    }
                }
                (
                    index,
                    host.host_header.clone(),
                    (host.known_h2 && gate.is_none()).then(|| host.connecting.clone()),
                )
            };
            // An HTTP/2 host: one request connects, the others wait and share its connection.
            if let Some(connecting) = connecting {
                gate = Some(connecting.lock_owned().await);
                continue;
            }
            // Boxed: rare, and its future (TCP, TLS, the handshake) large; inline, every
            // request's future would be as large.
            let sender = Box::pin(self.connect(host, uri)).await?;
            return Ok(Checkout {
                sender,
                reused: false,
                host,
                host_header,
            });
        }
    }

    /// A new connection to the host of `uri` (index `host`): HTTP/2 when the server offers it
    /// by ALPN (kept as the host's shared one), HTTP/1.1 otherwise.
    async fn connect(&self, host: usize, uri: &Uri) -> Result<Sender, UpstreamError> {
        use tower_service::Service;
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(UpstreamError::Connect)?;
        let io = connector
            .call(uri.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(UpstreamError::Exchange)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "an upstream HTTP/2 connection ended");
                }
            });
            let mut hosts = self.hosts();
            if let Some(entry) = hosts.get_mut(host) {
                entry.known_h2 = true;
                if entry.h2.as_ref().is_none_or(|h2| h2.is_closed()) {
                    entry.h2 = Some(sender.clone());
                }
            }
            Ok(Sender::H2(sender))
        } else {
            let (sender, connection) = http1::Builder::new()
                // A request's head and small body in one buffer, one `write` (as the gateway's
                // server does its answers): cheaper than queueing them for `writev`.
                .writev(false)
                .handshake(io)
                .await
                .map_err(UpstreamError::Exchange)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "an upstream HTTP/1.1 connection ended");
                }
            });
            if let Some(entry) = self.hosts().get_mut(host) {
                entry.known_h2 = false;
            }
            Ok(Sender::H1(sender))
        }
    }

    /// An HTTP/1.1 connection whose answer is done, back to its host's idle ones — once it can
    /// take the next request. It almost always can by then; when it cannot (the request's body
    /// still going out after an early answer), a task waits for it, so no request waits on it
    /// while another connection is free.
    fn give_back(self: Arc<Self>, host: usize, mut sender: http1::SendRequest<ForwardBodyInner>) {
        if sender.is_ready() {
            self.put(host, sender);
            return;
        }
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                self.put(host, sender);
            }
        });
    }

    fn put(&self, host: usize, sender: http1::SendRequest<ForwardBodyInner>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut hosts = self.hosts();
        let Some(entry) = hosts.get_mut(host) else {
            return;
        };
        // The oldest are at the front: those unused too long are closed (dropped) here.
        while entry
            .idle
            .front()
            .is_some_and(|i| now.saturating_duration_since(i.since) >= IDLE_TIMEOUT)
        {
            entry.idle.pop_front();
        }
        if entry.idle.len() < MAX_IDLE {
            entry.idle.push_back(Idle { sender, since: now });
        }
    }

    /// Connections held now: HTTP/2 ones and idle HTTP/1.1 ones (for tests).
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let hosts = self.hosts();
        (
            hosts.iter().filter(|h| h.h2.is_some()).count(),
            hosts.iter().map(|h| h.idle.len()).sum(),
        )
    }
}

impl Host {
    fn new(scheme: Scheme, authority: Authority) -> Result<Self, UpstreamError> {
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        let host_header = match authority.port_u16() {
            Some(port) if port == default_port => HeaderValue::from_str(authority.host()),
            _ => HeaderValue::from_str(authority.as_str()),
        }
        .map_err(|e| UpstreamError::Connect(Box::new(e)))?;
        Ok(Self {
            scheme,
            authority,
            host_header,
            h2: None,
            known_h2: false,
            connecting: Arc::default(),
            idle: VecDeque::new(),
        })
    }
}

/// An HTTP/1.1 connection to hand back when its answer is done.
struct Back {
    upstream: Arc<Upstream>,
    host: usize,
    sender: http1::SendRequest<ForwardBodyInner>,
}

/// An answer's body; over HTTP/1.1 it hands its connection back to the pool once read to the
/// end (a body dropped before then takes its connection with it: hyper closes it).
pub(crate) struct Answer {
    body: Incoming,
    back: Option<Back>,
}

impl Answer {
    fn new(body: Incoming, back: Option<Back>) -> Self {
        let mut answer = Self { body, back };
        // Nothing to read (`Content-Length: 0`, a 204): the connection is free now.
        if answer.body.is_end_stream() {
            answer.give_back();
        }
        answer
    }

    fn give_back(&mut self) {
        if let Some(back) = self.back.take() {
            back.upstream.give_back(back.host, back.sender);
        }
    }
}

impl http_body::Body for Answer {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.give_back(),
            // An error: the connection goes with the body.
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn upstream() -> Arc<Upstream> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let tls = crate::http::rustls_config(None).unwrap();
        Upstream::new(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_all_versions()
                .wrap_connector(http),
        )
    }

    fn get(uri: &str) -> Request<ForwardBodyInner> {
        let mut request = Request::new(
            http_body_util::Empty::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *request.uri_mut() = uri.parse().unwrap();
        request
    }

    /// A server that answers every request on a connection with `body`, counting connections
    /// and keeping what it was sent; after `close_after` answers on a connection it closes it.
    async fn server(
        body: &'static str,
        close_after: usize,
    ) -> (
        String,
        Arc<std::sync::atomic::AtomicUsize>,
        Arc<Mutex<Vec<String>>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (c, h) = (connections.clone(), heads.clone());
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let heads = h.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..close_after {
                        let head = loop {
                            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                                buf.drain(..end + 4);
                                break head;
                            }
                            let mut chunk = [0u8; 1024];
                            match socket.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        heads.lock().unwrap().push(head);
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if socket.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), connections, heads)
    }

    #[tokio::test]
    async fn http1_connections_are_reused_once_their_answer_is_read() {
        let (base, connections, heads) = server("hello", usize::MAX).await;
        let upstream = upstream();
        for _ in 0..3 {
            let answer = upstream
                .send(get(&format!("{base}/v1/api/one?x=1")))
                .await
                .unwrap();
            assert_eq!(upstream.held(), (0, 0), "in use, not idle");
            let body = answer.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"hello");
            assert_eq!(upstream.held(), (0, 1), "back once read");
        }
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
        let heads = heads.lock().unwrap();
        let first = heads[0].to_ascii_lowercase();
        assert!(
            first.starts_with("get /v1/api/one?x=1 http/1.1\r\n"),
            "{first}"
        );
        assert!(
            first.contains(&format!("host: {}", &base["http://".len()..])),
            "{first}"
        );
    }

    #[tokio::test]
    async fn an_answer_dropped_unread_takes_its_connection_with_it() {
        let (base, connections, _) = server("hello", usize::MAX).await;
        let upstream = upstream();
        let answer = upstream
            .send(get(&format!("{base}/v1/api/a")))
            .await
            .unwrap();
        drop(answer);
        assert_eq!(upstream.held(), (0, 0));
        let answer = upstream
            .send(get(&format!("{base}/v1/api/a")))
            .await
            .unwrap();
        answer.into_body().collect().await.unwrap();
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced_unseen() {
        // One answer a connection, then the server closes it.
        let (base, connections, _) = server("x", 1).await;
        let upstream = upstream();
        for _ in 0..4 {
            let answer = upstream
                .send(get(&format!("{base}/v1/api/a")))
                .await
                .unwrap();
            assert_eq!(answer.status(), 200);
            answer.into_body().collect().await.unwrap();
        }
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_connection_still_sending_a_body_after_an_early_answer_is_not_waited_on() {
        let (base, connections, _) = server("early", usize::MAX).await;
        let upstream = upstream();
        // A body that keeps coming (a slow upload) to a server that answers without reading it.
        let (more, chunks) =
            tokio::sync::mpsc::channel::<Result<http_body::Frame<bytes::Bytes>, BoxError>>(1);
        more.send(Ok(http_body::Frame::data(bytes::Bytes::from_static(
            b"part",
        ))))
        .await
        .unwrap();
        let mut request =
            Request::new(http_body_util::StreamBody::new(tokio_stream_of(chunks)).boxed_unsync());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = format!("{base}/v1/api/upload").parse().unwrap();
        let answer = upstream.send(request).await.unwrap();
        let body = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"early");
        assert_eq!(upstream.held(), (0, 0), "busy sending: not idle yet");
        // The next request does not wait for that upload: a connection of its own.
        let next = tokio::time::timeout(
            Duration::from_secs(2),
            upstream.send(get(&format!("{base}/v1/api/a"))),
        )
        .await
        .expect("not stuck behind the upload")
        .unwrap();
        next.into_body().collect().await.unwrap();
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2);
        drop(more);
    }

    /// `chunks` as a stream.
    fn tokio_stream_of<T: Send + 'static>(
        mut chunks: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Send + 'static {
        futures_util::stream::poll_fn(move |cx| chunks.poll_recv(cx))
    }

    #[tokio::test]
    async fn no_server_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let upstream = upstream();
        let e = upstream
            .send(get(&format!("http://{addr}/v1/api/a")))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, UpstreamError::Connect(_)), "{e:?}");
        let e = upstream.send(get("/v1/api/a")).await.err().unwrap();
        assert!(matches!(e, UpstreamError::NotAbsolute(_)), "{e:?}");
    }

    #[test]
    fn the_host_header_leaves_out_a_default_port() {
        for (scheme, authority, expected) in [
            (Scheme::HTTPS, "api.ibkr.com", "api.ibkr.com"),
            (Scheme::HTTPS, "api.ibkr.com:443", "api.ibkr.com"),
            (Scheme::HTTPS, "127.0.0.1:8443", "127.0.0.1:8443"),
            (Scheme::HTTP, "127.0.0.1:80", "127.0.0.1"),
            (Scheme::HTTP, "[::1]:5000", "[::1]:5000"),
        ] {
            let host = Host::new(scheme, authority.parse().unwrap()).unwrap();
            assert_eq!(host.host_header, expected);
        }
    }
}
