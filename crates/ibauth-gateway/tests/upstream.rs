//! The connections the gateway forwards over, seen from the sandbox's side of the wire: an HTTPS
//! IBKR (the sandbox with its own CA, offering HTTP/2 by ALPN as api.ibkr.com does) gets every
//! client's requests on one connection, and a new one when it restarts (clients see a fast 5xx
//! meanwhile, never a hang); a plain HTTP/1.1 one gets pooled connections, reused.

mod common;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::*;
use ibauth_gateway::Gateway;
use serde_json::Value;

/// The established TCP connections to `port`, by their client's port (from the server's side:
/// the sandbox runs in this process, so these are all of them). The same set later means the
/// same connections, none replaced.
fn connections_to(port: u16) -> BTreeSet<u16> {
    let hex_port = |address: &str| {
        address
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|line| {
            // local `HEX_IP:HEX_PORT`, remote the same, then the state: 01 = ESTABLISHED
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(3) == Some(&"01") && fields.get(1).and_then(|l| hex_port(l)) == Some(port))
                .then(|| fields.get(2).and_then(|r| hex_port(r)))
                .flatten()
        })
        .collect()
}

fn port_of(base_url: &str) -> u16 {
    let authority = base_url.split("://").nth(1).unwrap().trim_end_matches('/');
    authority.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// `n` requests through the gateway at once, each on its own client connection; every one
/// must be answered with the accounts.
async fn at_once(base: &str, n: usize) {
    let requests = (0..n).map(|_| {
        // A client each: reqwest would otherwise queue them on few connections.
        let http = reqwest::Client::new();
        let url = format!("{base}/v1/api/iserver/accounts");
        async move {
            let reply = http.get(&url).send().await.expect("an answer");
            let status = reply.status().as_u16();
            let body: Value = reply.json().await.expect("JSON");
            (status, body)
        }
    });
    for (status, body) in futures_util::future::join_all(requests).await {
        assert_eq!(status, 200, "{body}");
        assert!(body["accounts"].is_array(), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_ibkr_gets_every_request_on_one_http2_connection() {
    let material = ibauth_sandbox::tls::generate().expect("certificates");
    let sandbox = https_sandbox_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), &material).await;
    let session = session_trusting(
        sandbox.base_url(),
        Some(&material.ca_pem),
        policy(Duration::from_secs(60)),
    );
    let running = Gateway::new(session, options()).start().await.unwrap();
    ready(&running).await;
    let base = base(&running);
    let port = port_of(sandbox.base_url());
    // The first request finds out that the host speaks HTTP/2; the next ones share its
    // connection, however many arrive at once.
    at_once(&base, 1).await;
    let before = connections_to(port);
    // The session's own (login, tickles) and the forwarding one.
    assert!(
        !before.is_empty() && before.len() <= 2,
        "{before:?} connections to the sandbox"
    );
    at_once(&base, 24).await;
    at_once(&base, 24).await;
    assert_eq!(
        connections_to(port),
        before,
        "48 requests, 24 at a time, on the connections already there"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_ibkr_restarted_gets_a_new_http2_connection_and_clients_see_no_hang() {
    let material = ibauth_sandbox::tls::generate().expect("certificates");
    let first = https_sandbox_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), &material).await;
    let addr = first.addr();
    let session = session_trusting(
        first.base_url(),
        Some(&material.ca_pem),
        policy(Duration::from_millis(300)),
    );
    let running = Gateway::new(session, options()).start().await.unwrap();
    ready(&running).await;
    let base = base(&running);
    at_once(&base, 8).await;

    // IBKR goes away (its HTTP/2 connection with it): answers within the request timeout.
    first.shutdown().await;
    let http = reqwest::Client::new();
    let url = format!("{base}/v1/api/iserver/accounts");
    for _ in 0..3 {
        let (status, body, elapsed) = get_json(&http, &url).await;
        assert!((500..600).contains(&status), "{status} {body}");
        assert_eq!(body["gateway"], "ibauth", "{body}");
        assert!(
            elapsed < Duration::from_secs(4),
            "answered after {elapsed:?}"
        );
    }

    // Back on the same port with the same certificate, knowing nothing of the old tokens: a
    // new connection, a new login, and requests succeed again.
    let second = https_sandbox_on(addr, &material).await;
    eventually(Duration::from_secs(15), "a request succeeds again", || {
        let request = get_json(&http, &url);
        async move {
            let (status, body, elapsed) = request.await;
            assert!(
                elapsed < Duration::from_secs(4),
                "{status} {body} after {elapsed:?}"
            );
            status == 200
        }
    })
    .await;
    assert_eq!(
        second.counters().access_tokens,
        1,
        "one login on the new IBKR"
    );
    at_once(&base, 24).await;
    let port = port_of(second.base_url());
    let now = connections_to(port);
    assert!(
        !now.is_empty() && now.len() <= 2,
        "one forwarding connection again: {now:?}"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_http1_ibkr_gets_pooled_connections_reused() {
    let sandbox = sandbox_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await;
    let session = session(&sandbox, policy(Duration::from_secs(60)));
    let running = Gateway::new(session, options()).start().await.unwrap();
    ready(&running).await;
    let base = base(&running);
    let port = port_of(sandbox.base_url());
    // HTTP/1.1 carries one request at a time: as many connections as requests at once (and
    // the session's own), not one a request.
    for _ in 0..6 {
        at_once(&base, 8).await;
    }
    let pooled = connections_to(port);
    assert!(pooled.len() > 1 && pooled.len() <= 8 + 1, "{pooled:?}");
    // One at a time, they go on the connections already there.
    for _ in 0..10 {
        at_once(&base, 1).await;
    }
    assert_eq!(connections_to(port), pooled, "reused, not replaced");
    running.shutdown().await;
}
