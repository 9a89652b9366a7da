//! An authenticated WebSocket to IBKR (`wss://…/v1/api/ws`), for either auth method: OAuth 1.0a
//! passes `?oauth_token=<access token>`, OAuth 2.0 the bearer token; both send the cookie
//! `api=<session id from tickle>`. TLS uses the same rustls and platform verifier as the REST
//! client, with the same extra CA roots.
//!
//! Logging: `tungstenite` prints the raw handshake (query, cookie, `Authorization`) at TRACE.
//! Keep its target at DEBUG or below in your subscriber; the `ibauth` binary always does.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::header::{AUTHORIZATION, COOKIE, HeaderValue};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use url::Url;

use crate::error::{Error, Step};

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

/// An open, authenticated IBKR WebSocket that sends `tic` keep-alives on an interval and, when
/// the server closes it (the session ended or changed), reconnects with the current session.
pub struct IbkrWebSocket {
    stream: Stream,
    ping: tokio::time::Interval,
    ping_interval: Duration,
    retarget: Option<Retarget>,
    reconnects: u64,
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

/// Opens the socket described by `target`.
pub async fn connect(target: &WsTarget, ping_interval: Duration) -> Result<IbkrWebSocket, Error> {
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ws_err(format!("bad WebSocket URL: {e}")))?;
    let cookie = HeaderValue::from_str(&format!("api={}", target.session))
        .map_err(|_| ws_err("the session id is not a valid cookie value"))?;
    request.headers_mut().insert(COOKIE, cookie);
    if let Some(auth) = &target.authorization {
        request.headers_mut().insert(AUTHORIZATION, auth.clone());
    }
    let connector = match target.url.scheme() {
        "wss" => Some(Connector::Rustls(Arc::new(tls_config(
            target.ca_pem.as_deref(),
        )?))),
        _ => Some(Connector::Plain),
    };
    let handshake =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector);
    let (stream, response) = tokio::time::timeout(target.timeout, handshake)
        .await
        .map_err(|_| Error::Timeout {
            step: Step::WebSocket,
            timeout: target.timeout,
        })?
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_deref()
                    .map(crate::http::ibkr_message)
                    .unwrap_or_else(|| "(empty body)".into());
                Error::Rejected {
                    step: Step::WebSocket,
                    status,
                    hint: crate::error::hint_for(Step::WebSocket, status, &body),
                    message: body,
                    retry_after: None,
                }
            }
            other => ws_err(format!("WebSocket handshake failed: {other}")),
        })?;
    tracing::info!(status = response.status().as_u16(), "WebSocket connected");
    let mut ping = tokio::time::interval(ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    Ok(IbkrWebSocket {
        stream,
        ping,
        ping_interval,
        retarget: None,
        reconnects: 0,
    })
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
                Ok(target) => connect(&target, self.ping_interval).await,
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
    Ok(connect(&target, DEFAULT_PING_INTERVAL)
        .await?
        .with_reconnect(retarget))
}

/// rustls with the platform verifier plus `extra_ca_pem`, as the REST client uses.
fn tls_config(extra_ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut extra = Vec::new();
    if let Some(pem) = extra_ca_pem {
        use rustls_pki_types::pem::PemObject;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            extra.push(cert.map_err(|e| ws_err(format!("bad CA certificate: {e}")))?);
        }
    }
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|e| ws_err(format!("TLS setup failed: {e}")))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ws_err(format!("TLS setup failed: {e}")))?
        .dangerous()
        // Not "dangerous": this is the platform verifier, the same one reqwest uses.
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}
