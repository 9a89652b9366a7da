//! What IBeam deployments and container platforms do to a gateway: probe `/livez`, `/readyz`
//! and `/status` on the health port as often as they like (never a tickle to IBKR: the
//! answers are the keep-alive's cached state), see `/readyz` follow the session down and back,
//! and switch it dormant and active. And the access list: a refused address gets the Client
//! Portal Gateway's `404 Access Denied`, and the log says which address and what to change.

mod common;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use ibauth_gateway::{AccessList, Gateway, GatewayOptions};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Everything logged in this test binary at INFO and above, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// The log of this process, captured from the first call on.
fn log() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        captured
    })
}

fn from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_address_gets_access_denied_and_the_log_names_it() {
    let log = log();
    let sandbox = sandbox().await;
    let running = Gateway::new(
        session(&sandbox, policy(Duration::from_secs(60))),
        GatewayOptions {
            access: AccessList::new(&["127.0.0.1"], &["127.0.0.3"]).expect("access list"),
            ..options()
        },
    )
    .start()
    .await
    .expect("gateway");
    ready(&running).await;
    let calls = sandbox.counters().api_calls;
    for (ip, server) in [
        ([127, 0, 0, 2], base(&running)),
        ([127, 0, 0, 3], base(&running)),
        ([127, 0, 0, 2], health(&running)),
    ] {
        let path = if server == base(&running) {
            "/v1/api/iserver/accounts"
        } else {
            "/readyz"
        };
        let refused = from(ip)
            .get(format!("{server}{path}"))
            .send()
            .await
            .expect("an answer");
        assert_eq!(refused.status(), 404, "{ip:?} {path}");
        assert_eq!(refused.text().await.expect("body"), "Access Denied");
    }
    // The WebSocket too, before any upgrade.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 2], 0)))
        .expect("bind 127.0.0.2");
    let stream = socket.connect(running.addrs()[0]).await.expect("connect");
    let request = format!("ws://{}/v1/api/ws", running.addrs()[0])
        .into_client_request()
        .expect("request");
    match tokio_tungstenite::client_async(request, stream).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(refusal)) => {
            assert_eq!(refusal.status(), 404)
        }
        other => panic!("the WebSocket refused: {other:?}"),
    }
    // Allowed: served.
    let allowed = from([127, 0, 0, 1])
        .get(format!("{}/v1/api/iserver/accounts", base(&running)))
        .send()
        .await
        .expect("answer");
    assert_eq!(allowed.status(), 200);
    assert_eq!(
        sandbox.counters().api_calls,
        calls + 1,
        "refused requests never reach IBKR"
    );
    // The log names each refused address, and what would let it in.
    let text = log.text();
    let refusals: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("refused 127.0.0."))
        .collect();
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("refused 127.0.0.2: it is not in ips.allow")
                && l.contains("127.0.0.*")
                && l.contains("/v1/api/iserver/accounts")),
        "{refusals:#?}"
    );
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("refused 127.0.0.2") && l.contains("/readyz")),
        "the health server's refusals are logged too: {refusals:#?}"
    );
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("refused 127.0.0.2") && l.contains("/v1/api/ws")),
        "{refusals:#?}"
    );
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("refused 127.0.0.3: it matches ips.deny")),
        "{refusals:#?}"
    );
    assert!(!text.contains("refused 127.0.0.1"), "{refusals:#?}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn probing_readyz_and_status_never_tickles_ibkr() {
    let sandbox = sandbox().await;
    // The keep-alive's own tickle is a minute away: every tickle IBKR sees now is a probe's.
    let running = Gateway::new(
        session(&sandbox, policy(Duration::from_secs(60))),
        options(),
    )
    .start()
    .await
    .expect("gateway");
    ready(&running).await;
    let before = sandbox.counters();
    let http = reqwest::Client::new();
    let health = health(&running);
    for _ in 0..100 {
        for (path, status) in [("/readyz", 200), ("/livez", 200), ("/status", 200)] {
            let reply = http
                .get(format!("{health}{path}"))
                .send()
                .await
                .expect("probe");
            assert_eq!(reply.status(), status, "{path}");
        }
    }
    // And the status page clients and IBeam read, on the gateway's own port.
    for _ in 0..20 {
        let page = http
            .get(format!("{}/", base(&running)))
            .send()
            .await
            .expect("page");
        assert_eq!(page.status(), 200);
    }
    let status: Value = http
        .get(format!("{health}/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("JSON");
    assert_eq!(status["state"], "authenticated", "{status}");
    assert_eq!(status["active"], true, "{status}");
    let after = sandbox.counters();
    assert_eq!(after.tickles, before.tickles, "probes tickled IBKR");
    assert_eq!(
        (after.statuses, after.validates, after.api_calls),
        (before.statuses, before.validates, before.api_calls),
        "probes reached IBKR: {after:?}"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_follows_the_session_down_and_back_and_dormant_mode() {
    let first = sandbox().await;
    let addr = first.addr();
    let running = Gateway::new(
        session(&first, policy(Duration::from_millis(300))),
        options(),
    )
    .start()
    .await
    .expect("gateway");
    ready(&running).await;
    let http = reqwest::Client::new();
    let health = health(&running);
    let probe = |path: &'static str| {
        let request = http.get(format!("{health}{path}")).send();
        async move { request.await.expect("probe").status().as_u16() }
    };
    let accounts = format!("{}/v1/api/iserver/accounts", base(&running));

    // Dormant: logged out once, clients answered 503 with the reason, /readyz 503 at once.
    let deactivated: Value = http
        .post(format!("{health}/deactivate"))
        .send()
        .await
        .expect("deactivate")
        .json()
        .await
        .expect("JSON");
    assert_eq!(deactivated["active"], false);
    assert_eq!(probe("/readyz").await, 503);
    assert_eq!(probe("/livez").await, 200);
    assert_eq!(first.counters().logouts, 1);
    let (status, body, _) = get_json(&http, &accounts).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("dormant")),
        "{body}"
    );
    let status: Value = http
        .get(format!("{health}/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("JSON");
    assert_eq!(status["active"], false, "{status}");

    // Active again: a new login, ready, served.
    let activated = http
        .post(format!("{health}/activate"))
        .send()
        .await
        .expect("activate");
    assert_eq!(activated.status(), 200);
    eventually(
        Duration::from_secs(5),
        "/readyz 200 after /activate",
        || {
            let p = probe("/readyz");
            async move { p.await == 200 }
        },
    )
    .await;
    assert_eq!(get_json(&http, &accounts).await.0, 200);
    assert_eq!(first.counters().access_tokens, 2);

    // IBKR goes away: /readyz follows the keep-alive's next tickle down, /livez stays up.
    first.shutdown().await;
    eventually(Duration::from_secs(5), "/readyz 503 with IBKR gone", || {
        let p = probe("/readyz");
        async move { p.await == 503 }
    })
    .await;
    assert_eq!(probe("/livez").await, 200);
    // IBKR back (knowing nothing of the old tokens): ready again, without anyone's action.
    let second = sandbox_on(addr).await;
    eventually(
        Duration::from_secs(10),
        "/readyz 200 with IBKR back",
        || {
            let p = probe("/readyz");
            async move { p.await == 200 }
        },
    )
    .await;
    assert_eq!(get_json(&http, &accounts).await.0, 200);
    assert_eq!(second.counters().access_tokens, 1);
    running.shutdown().await;
    assert_eq!(second.counters().logouts, 1, "one logout at the end");
}

#[tokio::test(flavor = "multi_thread")]
async fn dormant_mode_closes_websocket_clients_and_logs_nobody_in() {
    let sandbox = sandbox().await;
    let running = Gateway::new(
        session(&sandbox, policy(Duration::from_millis(300))),
        options(),
    )
    .start()
    .await
    .expect("gateway");
    ready(&running).await;
    let mut ws = websocket(&running).await;
    subscribe_market_data(&mut ws, CONID).await;
    next_market_data(&mut ws, CONID, Duration::from_secs(5)).await;

    let http = reqwest::Client::new();
    let deactivated = http
        .post(format!("{}/deactivate", health(&running)))
        .send()
        .await
        .expect("deactivate");
    assert_eq!(deactivated.status(), 200);
    let logged_out = sandbox.counters();
    assert_eq!(logged_out.logouts, 1);
    // The client is told, at once: dormant means no stream.
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("a close frame, not {other:?}"),
            }
        }
    })
    .await
    .expect("the client's socket is closed when the gateway goes dormant");
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1001), "going away");
    // Nobody logs in while dormant: not the keep-alive, not a socket reconnecting upstream
    // (IBKR closes the old one within a heartbeat of the logout).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = sandbox.counters();
    assert_eq!(
        (
            later.access_tokens,
            later.sso_sessions,
            later.ws_connections,
            later.tickles
        ),
        (
            logged_out.access_tokens,
            logged_out.sso_sessions,
            logged_out.ws_connections,
            logged_out.tickles
        ),
        "dormant, yet IBKR was called: {later:?}"
    );
    running.shutdown().await;
}
