//! An authenticated WebSocket to IBKR (`wss://…/v1/api/ws`), for either auth method: OAuth 1.0a
//! passes `?oauth_token=<access token>`, OAuth 2.0 the bearer token; both send the cookie
//! `api=<session id from tickle>`. TLS uses the same rustls and platform verifier as the REST
//! client, with the same extra CA roots.
//!
//! The opening handshake is written and read here, not by `tungstenite`: tungstenite logs the
//! raw request it sends — URL query (`oauth_token`), cookie and `Authorization` — at TRACE, so
//! it is never given them. It only takes over the socket once the upgrade is done; its TRACE
//! lines then show frames — IBKR's messages, which name the user and carry account data, and
//! `tic` — never a token. Cap its targets at DEBUG if those messages must stay out of your logs
//! (the `ibauth` binary does). Every frame and message is capped ([`connect_with_limit`]); the
//! handshake answer is bounded too.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::header::HeaderValue;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::error::{Error, Step};
use crate::http::DEFAULT_MAX_BODY;

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How often to send IBKR's `tic` keep-alive on the socket.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);

/// Where and how to open the socket.
#[derive(Clone)]
pub struct WsTarget {
    /// `wss://…/v1/api/ws` (with `oauth_token` for OAuth 1.0a).
    pub url: Url,
    /// The session id from `tickle`, sent as the `api` cookie.
    pub session: String,
    /// `Authorization` for OAuth 2.0 (marked sensitive).
    pub authorization: Option<HeaderValue>,
    /// Extra trusted CA certificates (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// Timeout of the handshake.
    pub timeout: Duration,
}

impl std::fmt::Debug for WsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsTarget")
            .field("host", &self.url.host_str())
            .field("path", &self.url.path())
            .finish_non_exhaustive()
    }
}

/// Where and how to open a client's socket: everything but the session cookie, which comes
/// from a tickle just before connecting.
#[derive(Clone)]
pub struct WsEndpoint {
    /// `wss://…/v1/api/ws` (with `oauth_token` for OAuth 1.0a).
    pub url: Url,
    /// `Authorization` for OAuth 2.0 (marked sensitive).
    pub authorization: Option<HeaderValue>,
    /// Extra trusted CA certificates (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// Timeout of the handshake.
    pub timeout: Duration,
}

impl std::fmt::Debug for WsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsEndpoint")
            .field("host", &self.url.host_str())
            .field("path", &self.url.path())
            .finish_non_exhaustive()
    }
}

impl WsEndpoint {
    /// The target for the session `session` (the `api` cookie).
    pub fn target(self, session: String) -> WsTarget {
        WsTarget {
            url: self.url,
            session,
            authorization: self.authorization,
            ca_pem: self.ca_pem,
            timeout: self.timeout,
        }
    }
}

/// Produces a fresh [`WsTarget`] (a new tickle, so the current session id) for reconnecting.
pub type Retarget =
    Box<dyn FnMut() -> futures_util::future::BoxFuture<'static, Result<WsTarget, Error>> + Send>;

/// How many times in a row a closed socket is reopened before giving up.
const RECONNECT_ATTEMPTS: u32 = 5;

/// The longest handshake answer head read: IBKR's is a few hundred bytes; a server that sends
/// more is not one to talk to.
const MAX_HANDSHAKE_HEAD: usize = 16 * 1024;

/// The most of a refusal's body read for its message (the message is shortened anyway).
const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// Outgoing data queued while the server does not read: `tic` and subscriptions are tiny, so
/// anything near this means a server that stopped reading.
const MAX_WRITE_BUFFER: usize = 1024 * 1024;

/// An open, authenticated IBKR WebSocket that sends `tic` keep-alives on an interval and, when
/// the server closes it (the session ended or changed), reconnects with the current session.
pub struct IbkrWebSocket {
    stream: Stream,
    ping: tokio::time::Interval,
    ping_interval: Duration,
    retarget: Option<Retarget>,
    reconnects: u64,
    max_message: usize,
}

impl std::fmt::Debug for IbkrWebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IbkrWebSocket")
    }
}

fn ws_err(detail: impl Into<String>) -> Error {
    Error::Protocol {
        step: Step::WebSocket,
        status: 0,
        detail: detail.into(),
    }
}

/// Opens the socket described by `target`, with frames and messages capped at
/// [`DEFAULT_MAX_BODY`].
pub async fn connect(target: &WsTarget, ping_interval: Duration) -> Result<IbkrWebSocket, Error> {
    connect_with_limit(target, ping_interval, DEFAULT_MAX_BODY).await
}

/// Opens the socket described by `target`; a frame or message larger than `max_message` bytes
/// ends the stream with an error instead of being buffered.
pub async fn connect_with_limit(
    target: &WsTarget,
    ping_interval: Duration,
    max_message: usize,
) -> Result<IbkrWebSocket, Error> {
    let config = socket_config(max_message);
    let (stream, status) = tokio::time::timeout(target.timeout, handshake(target, config))
        .await
        .map_err(|_| Error::Timeout {
            step: Step::WebSocket,
            timeout: target.timeout,
        })??;
    tracing::info!(status, "WebSocket connected");
    let mut ping = tokio::time::interval(ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    Ok(IbkrWebSocket {
        stream,
        ping,
        ping_interval,
        retarget: None,
        reconnects: 0,
        max_message,
    })
}

/// Every frame and message capped at `max_message` bytes, and the outgoing buffer bounded.
pub(crate) fn socket_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .max_write_buffer_size(MAX_WRITE_BUFFER)
}

/// The opening handshake (RFC 6455 §4.1) over TCP or TLS, then the socket handed to
/// tungstenite. The request holds the tokens, so it is built and sent here and never logged.
async fn handshake(target: &WsTarget, config: WebSocketConfig) -> Result<(Stream, u16), Error> {
    let url = &target.url;
    let secure = match url.scheme() {
        "wss" => true,
        "ws" => false,
        other => return Err(ws_err(format!("bad WebSocket URL: scheme {other}"))),
    };
    let host = url
        .host()
        .ok_or_else(|| ws_err("bad WebSocket URL: no host"))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| ws_err("bad WebSocket URL: no port"))?;
    // As the Host header and in messages: `[::1]` for IPv6, with the port unless default.
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let tcp = match &host {
        url::Host::Domain(name) => TcpStream::connect((*name, port)).await,
        url::Host::Ipv4(ip) => TcpStream::connect((*ip, port)).await,
        url::Host::Ipv6(ip) => TcpStream::connect((*ip, port)).await,
    }
    .map_err(|e| ws_err(format!("cannot connect to {authority}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let mut stream = if secure {
        let name = match &host {
            url::Host::Domain(name) => rustls_pki_types::ServerName::try_from(name.to_string())
                .map_err(|e| ws_err(format!("bad WebSocket host {name}: {e}")))?,
            url::Host::Ipv4(ip) => std::net::IpAddr::V4(*ip).into(),
            url::Host::Ipv6(ip) => std::net::IpAddr::V6(*ip).into(),
        };
        let connector =
            tokio_rustls::TlsConnector::from(Arc::new(tls_config(target.ca_pem.as_deref())?));
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| ws_err(format!("TLS handshake with {authority} failed: {e}")))?;
        MaybeTlsStream::Rustls(tls)
    } else {
        MaybeTlsStream::Plain(tcp)
    };

    let key = generate_key();
    let request = upgrade_request(target, &authority, &key)?;
    stream
        .write_all(secrecy::ExposeSecret::expose_secret(&request))
        .await
        .map_err(|e| ws_err(format!("sending the WebSocket handshake failed: {e}")))?;
    drop(request);
    stream
        .flush()
        .await
        .map_err(|e| ws_err(format!("sending the WebSocket handshake failed: {e}")))?;
    read_answer(stream, &key, config).await
}

/// The server's answer to the upgrade request sent with `key`: a `101` that upgrades with the
/// matching `Sec-WebSocket-Accept` gives the socket (frames and messages capped by `config`);
/// anything else is an error, a refusal carrying its (bounded) message and `Retry-After`.
pub(crate) async fn read_answer<S>(
    mut stream: S,
    key: &str,
    config: WebSocketConfig,
) -> Result<(WebSocketStream<S>, u16), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (head, tail) = read_head(&mut stream).await?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut answer = httparse::Response::new(&mut headers);
    if !matches!(answer.parse(&head), Ok(httparse::Status::Complete(_))) {
        return Err(ws_err(
            "the WebSocket handshake answer is not an HTTP response",
        ));
    }
    let status = answer.code.unwrap_or(0);
    let header = |name: &str| {
        answer
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
    };
    if status != 101 {
        // A refusal (401, a redirect, …): never followed; its message is read within bounds.
        let length = header("content-length").and_then(|v| v.parse::<usize>().ok());
        let body = read_body(&mut stream, tail, length).await;
        let message = crate::http::ibkr_message(&body);
        let retry_after = header("retry-after")
            .and_then(|v| crate::http::parse_retry_after(&v, std::time::SystemTime::now()));
        return Err(Error::Rejected {
            step: Step::WebSocket,
            status,
            hint: crate::error::hint_for(Step::WebSocket, status, &message),
            message,
            retry_after,
        });
    }
    let upgrade = header("upgrade").unwrap_or_default();
    let connection = header("connection").unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case("websocket")
        || !connection
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    {
        return Err(ws_err(
            "the server answered 101 without upgrading to a WebSocket",
        ));
    }
    if header("sec-websocket-accept").as_deref() != Some(&derive_accept_key(key.as_bytes())) {
        return Err(ws_err(
            "the server's Sec-WebSocket-Accept does not match the key sent",
        ));
    }
    let stream =
        WebSocketStream::from_partially_read(stream, tail, Role::Client, Some(config)).await;
    Ok((stream, status))
}

/// `GET path?query HTTP/1.1` with the upgrade headers, the `api` cookie and the
/// `Authorization` (OAuth 2.0). Held as a secret: it carries the tokens.
fn upgrade_request(
    target: &WsTarget,
    authority: &str,
    key: &str,
) -> Result<secrecy::SecretSlice<u8>, Error> {
    // Built from a `HeaderValue` so a session id with CR/LF cannot add headers.
    let cookie = HeaderValue::from_str(&format!("api={}", target.session))
        .map_err(|_| ws_err("the session id is not a valid cookie value"))?;
    let target_path = match target.url.query() {
        Some(query) => format!("{}?{query}", target.url.path()),
        None => target.url.path().to_owned(),
    };
    let mut request = Vec::with_capacity(512);
    request.extend_from_slice(
        format!(
            "GET {target_path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nUser-Agent: {}\r\nCookie: ",
            crate::http::USER_AGENT
        )
        .as_bytes(),
    );
    request.extend_from_slice(cookie.as_bytes());
    if let Some(auth) = &target.authorization {
        request.extend_from_slice(b"\r\nAuthorization: ");
        request.extend_from_slice(auth.as_bytes());
    }
    request.extend_from_slice(b"\r\n\r\n");
    Ok(secrecy::SecretSlice::from(request))
}

/// The answer's head (through the blank line) and whatever came after it, at most
/// [`MAX_HANDSHAKE_HEAD`] bytes of head.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let searched = buf.len().saturating_sub(3);
        let n = stream.read(&mut chunk).await.map_err(|e| {
            ws_err(format!(
                "reading the WebSocket handshake answer failed: {e}"
            ))
        })?;
        if n == 0 {
            return Err(ws_err(
                "the server closed the connection during the WebSocket handshake",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(at) = buf[searched..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = searched + at + 4;
            if end > MAX_HANDSHAKE_HEAD {
                break;
            }
            let tail = buf.split_off(end);
            return Ok((buf, tail));
        }
        if buf.len() > MAX_HANDSHAKE_HEAD {
            break;
        }
    }
    Err(ws_err(format!(
        "the WebSocket handshake answer's head is larger than {MAX_HANDSHAKE_HEAD} bytes; refused"
    )))
}

/// A refusal's body: `length` bytes, at most [`MAX_REFUSAL_BODY`]; what could be read if the
/// connection fails. Without a length, only what came with the head: a server that keeps the
/// connection open would otherwise turn a clear refusal into a timeout.
async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut body: Vec<u8>,
    length: Option<usize>,
) -> Vec<u8> {
    let want = length.unwrap_or(body.len()).min(MAX_REFUSAL_BODY);
    let mut chunk = [0u8; 4096];
    while body.len() < want {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    body.truncate(want);
    body
}

impl IbkrWebSocket {
    /// Reconnect with targets from `retarget` when the server closes the socket.
    pub fn with_reconnect(mut self, retarget: Retarget) -> Self {
        self.retarget = Some(retarget);
        self
    }

    /// How many times the socket was reopened.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The next text message (IBKR sends JSON), sending `tic` keep-alives while waiting and
    /// reconnecting (if enabled) when the server closes the socket. `None` when the socket is
    /// closed for good.
    pub async fn next_text(&mut self) -> Option<Result<String, Error>> {
        loop {
            match self.next_text_once().await {
                None | Some(Err(_)) if self.retarget.is_some() => {
                    if let Err(e) = self.reconnect().await {
                        return Some(Err(e));
                    }
                }
                other => return other,
            }
        }
    }

    async fn reconnect(&mut self) -> Result<(), Error> {
        let mut delay = Duration::from_millis(250);
        let mut last = None;
        for attempt in 1..=RECONNECT_ATTEMPTS {
            let Some(retarget) = self.retarget.as_mut() else {
                break;
            };
            let result = match retarget().await {
                Ok(target) => {
                    connect_with_limit(&target, self.ping_interval, self.max_message).await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(fresh) => {
                    self.stream = fresh.stream;
                    self.ping = fresh.ping;
                    self.reconnects += 1;
                    tracing::info!(attempt, "WebSocket reconnected to the current session");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "WebSocket reconnect failed");
                    last = Some(e);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(8));
                }
            }
        }
        Err(last.unwrap_or_else(|| ws_err("the WebSocket closed")))
    }

    async fn next_text_once(&mut self) -> Option<Result<String, Error>> {
        loop {
            tokio::select! {
                _ = self.ping.tick() => {
                    if let Err(e) = self.stream.send(Message::text("tic")).await {
                        return Some(Err(ws_err(format!("sending the keep-alive failed: {e}"))));
                    }
                }
                message = self.stream.next() => {
                    match message? {
                        Ok(Message::Text(text)) => return Some(Ok(text.to_string())),
                        Ok(Message::Binary(bytes)) => {
                            return Some(Ok(String::from_utf8_lossy(&bytes).into_owned()));
                        }
                        Ok(Message::Close(_)) => return None,
                        Ok(_) => continue,
                        Err(e) => return Some(Err(ws_err(format!("WebSocket read failed: {e}")))),
                    }
                }
            }
        }
    }

    /// Sends a text message (a subscription such as `smd+265598+{…}`).
    pub async fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.stream
            .send(Message::text(text))
            .await
            .map_err(|e| ws_err(format!("WebSocket send failed: {e}")))
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }
}

/// Opens a socket for `auth`'s session at `endpoint` (a tickle gives the `api` cookie) that
/// reconnects by itself, after a fresh tickle, when the server closes it.
pub(crate) async fn open_reconnecting<A>(
    brokerage: crate::brokerage::BrokerageClient,
    auth: A,
    endpoint: WsEndpoint,
    max_message: usize,
) -> Result<IbkrWebSocket, Error>
where
    A: crate::brokerage::Authorizer + Clone + 'static,
{
    let mut retarget: Retarget = Box::new(move || {
        let (brokerage, auth, endpoint) = (brokerage.clone(), auth.clone(), endpoint.clone());
        Box::pin(async move {
            let tickle = brokerage.tickle(&auth).await?;
            Ok(endpoint.target(tickle.session))
        })
    });
    let target = retarget().await?;
    Ok(
        connect_with_limit(&target, DEFAULT_PING_INTERVAL, max_message)
            .await?
            .with_reconnect(retarget),
    )
}

/// rustls with the platform verifier plus `extra_ca_pem`, as the REST client uses.
fn tls_config(extra_ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, Error> {
    crate::http::rustls_config(extra_ca_pem).map_err(ws_err)
}
