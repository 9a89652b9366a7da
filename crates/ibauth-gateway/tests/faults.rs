//! IBKR misbehaving behind the gateway, over real HTTP and WebSocket: the brokerage session
//! dropped, tokens expired, IBKR restarted on its port, IBKR unreachable or answering nothing.
//! Clients either see the gateway recover (a later request succeeds, with no action of theirs)
//! or get a 5xx with a JSON reason within the request timeout — never a hang. WebSocket clients
//! keep their connection and their subscriptions across upstream reconnects.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use ibauth_gateway::{Gateway, GatewayOptions, LOGIN_SUCCEEDS};
use ibauth_sandbox::FailWith;

/// The request timeout of `options()`, and the slack allowed on top of it.
const TIMEOUT: Duration = Duration::from_secs(2);
const SLACK: Duration = Duration::from_secs(2);

/// A fast failure: a 5xx with a JSON reason, within the request timeout.
fn assert_fast_5xx(what: &str, (status, body, elapsed): &(u16, serde_json::Value, Duration)) {
    assert!((500..600).contains(status), "{what}: {status} {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: a JSON reason: {body}"
    );
    assert_eq!(body["gateway"], "ibauth", "{what}: {body}");
    assert!(
        *elapsed < TIMEOUT + SLACK,
        "{what}: answered after {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_brokerage_session_is_recovered_by_the_next_request() {
    let sandbox = sandbox().await;
    // The keep-alive would notice at its next tickle, a minute away: the request itself must.
    let running = Gateway::new(
        session(&sandbox, policy(Duration::from_secs(60))),
        GatewayOptions {
            buffer_request_body: 1024,
            ..options()
        },
    )
    .start()
    .await
    .expect("gateway");
    ready(&running).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/api/iserver/accounts", base(&running));
    let (status, body, _) = get_json(&http, &url).await;
    assert_eq!(status, 200, "{body}");
    let inits = sandbox.counters().inits;

    sandbox.drop_session(USER);
    let (status, body, elapsed) = get_json(&http, &url).await;
    assert_eq!(
        status, 200,
        "the request after the drop is answered: {body}"
    );
    assert!(body["accounts"].is_array(), "{body}");
    assert!(elapsed < TIMEOUT + SLACK, "{elapsed:?}");
    assert_eq!(sandbox.counters().inits, inits + 1, "one re-init");
    assert_eq!(sandbox.counters().access_tokens, 1, "no new login");

    // A body held whole is sent again after the recovery too (an order placed once).
    let account = body["selectedAccount"]
        .as_str()
        .expect("account")
        .to_owned();
    sandbox.drop_session(USER);
    let placed = http
        .post(format!(
            "{}/v1/api/iserver/account/{account}/orders",
            base(&running)
        ))
        .json(
            &serde_json::json!({ "orders": [{ "conid": 1, "side": "BUY", "quantity": 1,
            "orderType": "MKT", "tif": "DAY", "cOID": "after-a-drop" }] }),
        )
        .send()
        .await
        .expect("order");
    assert_eq!(placed.status(), 200);
    let placed: serde_json::Value = placed.json().await.expect("JSON");
    assert_eq!(placed[0]["cOID"], "after-a-drop", "{placed}");
    assert_eq!(sandbox.counters().orders_placed, 1, "placed once");

    // A streamed body (over `buffer_request_body`) cannot be sent twice: the refusal is passed
    // on as IBKR gave it, and the session recovers in the background for the next request.
    sandbox.drop_session(USER);
    let big = serde_json::json!({ "orders": [{ "conid": 1, "side": "BUY", "quantity": 1,
        "orderType": "MKT", "tif": "DAY", "cOID": "streamed", "note": "x".repeat(4096) }] });
    let streamed = http
        .post(format!(
            "{}/v1/api/iserver/account/{account}/orders",
            base(&running)
        ))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter([
            Ok::<_, std::io::Error>(big.to_string()),
        ])))
        .send()
        .await
        .expect("order");
    assert_eq!(streamed.status(), 400);
    let refusal: serde_json::Value = streamed.json().await.expect("IBKR's answer");
    assert_eq!(refusal["error"], "Bad Request: no bridge", "{refusal}");
    eventually(
        Duration::from_secs(5),
        "recovered in the background",
        || {
            let request = get_json(&http, &url);
            async move { request.await.0 == 200 }
        },
    )
    .await;
    assert_eq!(
        sandbox.counters().orders_placed,
        1,
        "the refused order was not placed"
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ibkr_error_answers_reach_clients_whole() {
    let sandbox = sandbox().await;
    let running = Gateway::new(
        session(&sandbox, policy(Duration::from_secs(60))),
        options(),
    )
    .start()
    .await
    .expect("gateway");
    ready(&running).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/api/iserver/accounts", base(&running));
    // Small and large (past what the gateway reads to look for "no bridge"), and one whose
    // body IBKR cuts off halfway.
    for message in ["Service Unavailable".to_owned(), "y".repeat(100_000)] {
        sandbox.fail_next(1, FailWith::new(503, message.clone()).retry_after(7));
        let reply = http.get(&url).send().await.expect("answer");
        assert_eq!(reply.status(), 503);
        assert_eq!(
            reply.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"7"[..])
        );
        let body: serde_json::Value = reply.json().await.expect("IBKR's JSON, whole");
        assert_eq!(body["error"], message.as_str());
    }
    // Cut before its head reached the gateway: a 502 with a reason; after: cut for the client
    // too (never a whole-looking answer).
    sandbox.cut_next(1);
    let reply = http.get(&url).send().await.expect("answer");
    match reply.status().as_u16() {
        502 => {
            let body: serde_json::Value = reply.json().await.expect("JSON");
            assert_eq!(body["gateway"], "ibauth", "{body}");
        }
        200 => assert!(reply.bytes().await.is_err(), "cut for the client too"),
        other => panic!("a cut answer: {other}"),
    }
    assert_eq!(get_json(&http, &url).await.0, 200);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_tokens_are_renewed_for_the_request_that_meets_them() {
    let sandbox = sandbox().await;
    let running = Gateway::new(
        session(&sandbox, policy(Duration::from_secs(60))),
        options(),
    )
    .start()
    .await
    .expect("gateway");
    ready(&running).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/portal/iserver/accounts", base(&running));
    assert_eq!(get_json(&http, &url).await.0, 200);

    sandbox.expire_tokens_now();
    let (status, body, elapsed) = get_json(&http, &url).await;
    assert_eq!(status, 200, "{body}");
    assert!(elapsed < TIMEOUT + SLACK, "{elapsed:?}");
    assert_eq!(sandbox.counters().access_tokens, 2, "one new login");
    // The status page and the health server say so too.
    let page = http
        .get(format!("{}/", base(&running)))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(page.contains(LOGIN_SUCCEEDS), "{page}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_waiting_on_a_paced_login_is_told_so_within_the_timeout() {
    let sandbox = sandbox().await;
    // IBKR's own limits: a second login within the minute waits for `sso/validate`'s turn.
    let mut policy = policy(Duration::from_secs(60));
    policy.pacing = ibauth::pacing::PacingRules::ibkr();
    let running = Gateway::new(session(&sandbox, policy), options())
        .start()
        .await
        .expect("gateway");
    ready(&running).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/api/iserver/accounts", base(&running));
    assert_eq!(get_json(&http, &url).await.0, 200);

    sandbox.expire_tokens_now();
    let reply = get_json(&http, &url).await;
    assert_fast_5xx("recovering", &reply);
    let (status, body, _) = reply;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["state"], "reauthenticating", "{body}");
    // The next client is told at once.
    let (status, body, elapsed) = get_json(&http, &url).await;
    assert_eq!(
        (status, &body["state"]),
        (503, &serde_json::json!("reauthenticating"))
    );
    assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ibkr_restarted_on_its_port_gets_fast_errors_then_recovery_and_streams_resume() {
    logs_if_asked();
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
    let url = format!("{}/v1/api/iserver/accounts", base(&running));
    assert_eq!(get_json(&http, &url).await.0, 200);
    let mut ws = websocket(&running).await;
    subscribe_market_data(&mut ws, CONID).await;
    next_market_data(&mut ws, CONID, Duration::from_secs(5)).await;

    first.shutdown().await;
    // While IBKR is down: a 502 (refused connection) or a 503 (the keep-alive noticed), at once.
    for _ in 0..3 {
        assert_fast_5xx("IBKR down", &get_json(&http, &url).await);
    }
    let health = format!("{}/readyz", health(&running));
    eventually(
        Duration::from_secs(5),
        "/readyz 503 while IBKR is down",
        || {
            let probe = http.get(&health).send();
            async move { probe.await.is_ok_and(|r| r.status() == 503) }
        },
    )
    .await;

    // IBKR back on the same port, knowing nothing of the old tokens.
    let second = sandbox_on(addr).await;
    let restarted = Instant::now();
    eventually(Duration::from_secs(10), "a request succeeds again", || {
        let request = get_json(&http, &url);
        async move {
            let (status, body, elapsed) = request.await;
            assert!(elapsed < TIMEOUT + SLACK, "{status} after {elapsed:?}");
            if status != 200 {
                assert_fast_5xx("IBKR restarting", &(status, body, elapsed));
            }
            status == 200
        }
    })
    .await;
    assert_eq!(
        second.counters().access_tokens,
        1,
        "one login on the new IBKR"
    );
    // The WebSocket client kept its connection and its subscription: market data flows from
    // the new IBKR without it subscribing again.
    eventually(
        Duration::from_secs(10),
        "the upstream socket reopened",
        || {
            let opened = second.counters().ws_connections;
            async move { opened >= 1 }
        },
    )
    .await;
    for _ in 0..2 {
        next_market_data(&mut ws, CONID, Duration::from_secs(10)).await;
    }
    assert!(restarted.elapsed() < Duration::from_secs(20));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_clients_keep_their_subscriptions_when_the_upstream_socket_drops() {
    let sandbox = sandbox().await;
    let running = Gateway::new(
        session(&sandbox, policy(Duration::from_secs(60))),
        options(),
    )
    .start()
    .await
    .expect("gateway");
    ready(&running).await;
    let mut ws = websocket(&running).await;
    subscribe_market_data(&mut ws, CONID).await;
    let first = next_market_data(&mut ws, CONID, Duration::from_secs(5)).await;
    assert_eq!(first["conid"], CONID, "{first}");
    assert!(first["31"].is_string(), "the fields asked for: {first}");
    assert_eq!(sandbox.counters().ws_connections, 1);

    // IBKR ends the socket's session (a new session id; then its nightly reset, which also
    // drops the brokerage session): the gateway reconnects and subscribes again.
    for (round, fault) in ["rotate", "nightly reset"].into_iter().enumerate() {
        match fault {
            "rotate" => sandbox.rotate_session(USER),
            _ => sandbox.nightly_reset(),
        }
        let expected = round as u64 + 2;
        eventually(
            Duration::from_secs(10),
            &format!("{fault}: the upstream socket reopened"),
            || {
                let opened = sandbox.counters().ws_connections;
                async move { opened >= expected }
            },
        )
        .await;
        // Messages queued before the reconnect may still be read; two more prove the stream.
        for _ in 0..4 {
            next_market_data(&mut ws, CONID, Duration::from_secs(5)).await;
        }
    }
    // An unsubscription is passed on and not sent again after the next reconnect.
    ws.send(tokio_tungstenite::tungstenite::Message::text(format!(
        "umd+{CONID}+{{}}"
    )))
    .await
    .expect("unsubscribe");
    sandbox.rotate_session(USER);
    eventually(Duration::from_secs(10), "the socket reopened", || {
        let opened = sandbox.counters().ws_connections;
        async move { opened >= 4 }
    })
    .await;
    let quiet = tokio::time::timeout(
        Duration::from_millis(800),
        next_market_data(&mut ws, CONID, Duration::from_secs(5)),
    )
    .await;
    // Anything already in flight before the unsubscription may arrive; a stream may not.
    if quiet.is_ok() {
        let again = tokio::time::timeout(
            Duration::from_millis(800),
            next_market_data(&mut ws, CONID, Duration::from_secs(5)),
        )
        .await;
        assert!(again.is_err(), "market data still streamed after umd");
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_ibkr_is_answered_at_once() {
    let nowhere = closed_port();
    let running = Gateway::new(
        session_at(
            &format!("http://{nowhere}"),
            policy(Duration::from_millis(300)),
        ),
        options(),
    )
    .start()
    .await
    .expect("the gateway starts while IBKR is unreachable");
    let http = reqwest::Client::new();
    for path in [
        "/v1/api/iserver/accounts",
        "/v1/portal/portfolio/accounts",
        "/v1/api/tickle",
    ] {
        let reply = get_json(&http, &format!("{}{path}", base(&running))).await;
        assert_fast_5xx(path, &reply);
    }
    let ws =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/api/ws", running.addrs()[0])).await;
    match ws {
        Err(tokio_tungstenite::tungstenite::Error::Http(refusal)) => {
            assert_eq!(refusal.status(), 503)
        }
        other => panic!("the WebSocket is refused with 503: {other:?}"),
    }
    let ready = http
        .get(format!("{}/readyz", health(&running)))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let page = http
        .get(format!("{}/", base(&running)))
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text");
    assert!(!page.contains(LOGIN_SUCCEEDS), "{page}");
    let started = Instant::now();
    running.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "shutdown is bounded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ibkr_answering_nothing_is_cut_at_the_request_timeout() {
    let sandbox = sandbox().await;
    let addr = sandbox.addr();
    let running = Gateway::new(
        session(&sandbox, policy(Duration::from_secs(60))),
        options(),
    )
    .start()
    .await
    .expect("gateway");
    ready(&running).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/api/iserver/accounts", base(&running));
    assert_eq!(get_json(&http, &url).await.0, 200);

    // IBKR accepts and holds every request.
    sandbox.delay_responses(Some(Duration::from_secs(30)));
    let reply = get_json(&http, &url).await;
    assert_fast_5xx("IBKR slow", &reply);
    assert_eq!(reply.0, 504, "{}", reply.1);
    assert!(
        reply.2 >= TIMEOUT - Duration::from_millis(100),
        "{:?}",
        reply.2
    );
    sandbox.delay_responses(None);
    assert_eq!(get_json(&http, &url).await.0, 200, "served again");

    // A black hole on IBKR's port: connections accepted, never answered.
    sandbox.shutdown().await;
    let hole = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            held.push(socket);
        }
    });
    for _ in 0..2 {
        assert_fast_5xx("IBKR a black hole", &get_json(&http, &url).await);
    }
    holder.abort();
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_black_hole_at_login_leaves_the_gateway_answering() {
    let hole = tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .expect("bind");
    let addr = hole.local_addr().expect("addr");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            held.push(socket);
        }
    });
    let running = Gateway::new(
        session_at(
            &format!("http://{addr}"),
            policy(Duration::from_millis(300)),
        ),
        options(),
    )
    .start()
    .await
    .expect("gateway");
    let http = reqwest::Client::new();
    let url = format!("{}/v1/api/iserver/accounts", base(&running));
    for _ in 0..3 {
        assert_fast_5xx("login hanging", &get_json(&http, &url).await);
    }
    let started = Instant::now();
    let reauth = http
        .post(format!("{}/v1/api/iserver/reauthenticate", base(&running)))
        .send()
        .await
        .expect("reauthenticate");
    let status = reauth.status();
    let body = reauth.text().await.expect("body");
    assert!(started.elapsed() < TIMEOUT + SLACK);
    assert!(status.is_server_error(), "{status} {body}");
    holder.abort();
    let started = Instant::now();
    running.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown is bounded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_clients_outlast_an_ibkr_outage_longer_than_one_reconnect_round() {
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
    let mut ws = websocket(&running).await;
    subscribe_market_data(&mut ws, CONID).await;
    next_market_data(&mut ws, CONID, Duration::from_secs(5)).await;

    // IBKR away for longer than the upstream socket's own reconnection tries (about 8 s).
    first.shutdown().await;
    let outage = tokio::time::timeout(Duration::from_secs(10), async {
        use futures_util::StreamExt;
        loop {
            match ws.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                    return format!("closed: {frame:?}");
                }
                Some(Ok(_)) => continue,
                other => return format!("ended: {other:?}"),
            }
        }
    })
    .await;
    if let Ok(ended) = outage {
        panic!("the client's socket did not outlast the outage: {ended}");
    }
    let second = sandbox_on(addr).await;
    eventually(
        Duration::from_secs(15),
        "the upstream socket reopened",
        || {
            let opened = second.counters().ws_connections;
            async move { opened >= 1 }
        },
    )
    .await;
    for _ in 0..2 {
        next_market_data(&mut ws, CONID, Duration::from_secs(5)).await;
    }
    running.shutdown().await;
}
