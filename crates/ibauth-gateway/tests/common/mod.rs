//! What the gateway's tests share: a sandbox for IBKR (restartable on its port), a session on
//! it with short intervals, a gateway on loopback, clients, and waiting on a condition with a
//! deadline instead of sleeping.
#![allow(dead_code)]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use ibauth::SigningKey;
use ibauth::pacing::{Method, PacingRules, Rule};
use ibauth::policy::Policy;
use ibauth_gateway::{GatewayOptions, Running};
use ibauth_sandbox::tls::TlsMaterial;
use ibauth_sandbox::{ClientRegistration, Sandbox, SandboxBuilder};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub const USER: &str = "gwuser";
pub const CLIENT: &str = "GWCLIENT";
/// The conid the market-data tests stream (AAPL at IBKR).
pub const CONID: u64 = 265598;

pub fn key() -> SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().expect("key"))
        .clone()
}

/// A sandbox for IBKR with the test client registered, listening on `addr` (port 0: any free
/// one; a port given: the same one again, for a restart), WebSocket heartbeats (and streamed
/// market data) every 200 ms.
pub async fn sandbox_on(addr: SocketAddr) -> Sandbox {
    sandbox_builder(addr).start().await.expect("sandbox")
}

/// The same over HTTPS (HTTP/2 by ALPN) with `material`: the same material again is the same
/// IBKR restarted, as its clients see it.
pub async fn https_sandbox_on(addr: SocketAddr, material: &TlsMaterial) -> Sandbox {
    sandbox_builder(addr)
        .tls_material(material.clone())
        .start()
        .await
        .expect("sandbox")
}

fn sandbox_builder(addr: SocketAddr) -> SandboxBuilder {
    Sandbox::builder()
        .listen(addr)
        .ws_heartbeat(Duration::from_millis(200))
        .register(
            ClientRegistration::new(CLIENT)
                .key("k", &key())
                .credential(USER),
        )
}

pub async fn sandbox() -> Sandbox {
    sandbox_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
}

/// A policy with short intervals: tickles every `tickle`, backoff from 100 ms to 500 ms, and
/// IBKR's pacing limits except one: `sso/validate` once a second, not once a minute. A test's
/// second login comes a second after its first, not hours, and would wait a minute for that
/// turn (the gateway answering 503 "reauthenticating" meanwhile).
pub fn policy(tickle: Duration) -> Policy {
    let validate = Rule::new(
        Some(Method::GET),
        "/sso/validate",
        "1/s".parse().expect("a limit"),
    );
    Policy {
        tickle_interval: tickle,
        jitter: Duration::ZERO,
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
        shutdown_timeout: Duration::from_secs(2),
        pacing: PacingRules::ibkr().with_endpoint(validate),
        ..Policy::default()
    }
}

/// A session on `base_url` (HTTP timeout 3 s) with `policy`.
pub fn session_at(base_url: &str, policy: Policy) -> ibauth::Session {
    session_trusting(base_url, None, policy)
}

/// A session on `base_url` that also trusts `ca_pem` (an HTTPS sandbox's CA).
pub fn session_trusting(base_url: &str, ca_pem: Option<&str>, policy: Policy) -> ibauth::Session {
    let mut config = ibauth::Config::builder()
        .client_id(CLIENT)
        .client_key_id("k")
        .credential(USER)
        .private_key(key())
        .base_url(base_url)
        .public_ip(Ipv4Addr::LOCALHOST)
        .timeout(Duration::from_secs(3));
    if let Some(ca_pem) = ca_pem {
        config = config.ca_pem(ca_pem.as_bytes().to_vec());
    }
    let config = config.build().expect("config");
    ibauth::Session::builder(config)
        .policy(policy)
        .no_store()
        .build()
        .expect("session")
}

pub fn session(sandbox: &Sandbox, policy: Policy) -> ibauth::Session {
    session_at(sandbox.base_url(), policy)
}

/// Plain HTTP on loopback, a health server beside it, a 2 s request timeout.
pub fn options() -> GatewayOptions {
    GatewayOptions {
        listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
        health: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        request_timeout: Duration::from_secs(2),
        max_wait: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(2),
        ..GatewayOptions::default()
    }
}

pub fn base(running: &Running) -> String {
    format!("http://{}", running.addrs()[0])
}

pub fn health(running: &Running) -> String {
    format!("http://{}", running.health_addr().expect("health server"))
}

/// Waits until `check` holds, polling every 25 ms; panics with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the health server says ready.
pub async fn ready(running: &Running) {
    let http = reqwest::Client::new();
    let url = format!("{}/readyz", health(running));
    eventually(Duration::from_secs(10), "the gateway ready", || {
        let request = http.get(&url).send();
        async move { request.await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
}

/// A status code and its body read as JSON (`Value::Null` when it is not JSON).
pub async fn get_json(http: &reqwest::Client, url: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let reply = http.get(url).send().await.expect("the gateway answers");
    let status = reply.status().as_u16();
    let body = reply.text().await.expect("a body");
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::Null),
        started.elapsed(),
    )
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client of the gateway, as ibind opens one: the session id from `/tickle` in the
/// `api` cookie.
pub async fn websocket(running: &Running) -> Ws {
    let tickle: Value = reqwest::Client::new()
        .get(format!("{}/v1/api/tickle", base(running)))
        .send()
        .await
        .expect("tickle")
        .json()
        .await
        .expect("tickle JSON");
    let id = tickle["session"].as_str().expect("a session id").to_owned();
    let mut request = format!("ws://{}/v1/api/ws", running.addrs()[0])
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "cookie",
        format!("api={{\"session\":\"{id}\"}}")
            .parse()
            .expect("cookie"),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the gateway accepts the WebSocket");
    socket
}

pub async fn subscribe_market_data(ws: &mut Ws, conid: u64) {
    ws.send(Message::text(format!(
        "smd+{conid}+{{\"fields\":[\"31\",\"84\",\"86\"]}}"
    )))
    .await
    .expect("subscribe");
}

/// The next market-data message for `conid` within `limit`, skipping everything else; panics if
/// the socket closes or nothing comes.
pub async fn next_market_data(ws: &mut Ws, conid: u64, limit: Duration) -> Value {
    let topic = format!("smd+{conid}");
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {topic} message within {limit:?}"));
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).expect("JSON from the gateway");
                if value["topic"] == topic.as_str() {
                    return value;
                }
            }
            Some(Ok(Message::Close(frame))) => panic!("the gateway closed the socket: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("the socket failed: {e}"),
            None => panic!("the socket ended"),
        }
    }
}

/// A free loopback port nobody listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("addr")
}

/// Logs to the test's output when `RUST_LOG` is set (for debugging a failure).
pub fn logs_if_asked() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
