//! Pacing enforcement over real HTTP, logged in by both methods: IBKR's per-endpoint and
//! global limits in exact sliding windows, 429 with `Retry-After`, the penalty box for the
//! violating address, nothing refused while pacing is off, and the admin switch for tests that
//! drive another process.

mod api_common;
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_common::{Auth, BOTH, Reply, Session, builder, sandbox, start};
use axum::http::Method;
use ibauth::FixedClock;
use ibauth_sandbox::PacingLimits;
use serde_json::{Value, json};

const SNAPSHOT: &str = "iserver/marketdata/snapshot?conids=265598,8314&fields=31,84,86";

#[track_caller]
fn assert_too_many(reply: &Reply) -> u64 {
    assert_eq!(reply.status, 429, "{reply:?}");
    assert_eq!(
        reply.body,
        json!({"error": "Too Many Requests", "statusCode": 429})
    );
    reply
        .retry_after
        .as_deref()
        .and_then(|s| s.parse().ok())
        .expect("a Retry-After in seconds")
}

#[tokio::test]
async fn nothing_is_refused_while_pacing_is_off() {
    for auth in BOTH {
        let session = Session::connect(auth, sandbox().await).await;
        for _ in 0..30 {
            assert_eq!(session.get(SNAPSHOT).await.status, 200);
        }
        for _ in 0..5 {
            assert_eq!(session.get("portfolio/accounts").await.status, 200);
            assert_eq!(session.get("iserver/account/orders").await.status, 200);
            assert_eq!(session.get("tickle").await.status, 200);
            assert_eq!(session.get("sso/validate").await.status, 200);
        }
        let c = session.sandbox.counters();
        assert_eq!((c.pacing_violations, c.penalty_rejections), (0, 0));
        assert_eq!(c.api_calls, 40);
    }
}

#[tokio::test]
async fn the_eleventh_snapshot_in_a_second_is_refused_and_boxes_the_address() {
    let penalty = Duration::from_millis(1500);
    for auth in BOTH {
        let sandbox = start(builder().pacing(PacingLimits::ibkr().penalty(penalty))).await;
        let session = Session::connect(auth, sandbox).await;
        let started = Instant::now();
        let mut replies = Vec::new();
        for _ in 0..11 {
            replies.push(session.get(SNAPSHOT).await);
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "11 requests took {:?}: too slow to test a per-second limit",
            started.elapsed()
        );
        for reply in &replies[..10] {
            assert_eq!(reply.status, 200, "{auth:?}: {reply:?}");
        }
        let retry_after = assert_too_many(&replies[10]);
        assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
        assert_eq!(session.sandbox.counters().pacing_violations, 1);

        // The penalty box refuses everything from this address, even a tickle, even without
        // authentication; the sandbox's own API stays open.
        let tickle = session.call(Method::POST, "tickle", None).await;
        assert!(assert_too_many(&tickle) >= 1);
        let url = session.url("portfolio/accounts");
        let anonymous = session.send(Method::GET, &url, None, None).await;
        assert_too_many(&anonymous);
        let counters: Value =
            reqwest::get(format!("{}/__sandbox/counters", session.sandbox.base_url()))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        assert_eq!(counters["pacing_violations"], json!(1));
        assert_eq!(counters["penalty_rejections"], json!(2));

        // Once the penalty is over, requests are served again.
        tokio::time::sleep(penalty + Duration::from_millis(200)).await;
        assert_eq!(session.get(SNAPSHOT).await.status, 200);
        assert_eq!(session.call(Method::POST, "tickle", None).await.status, 200);
        let c = session.sandbox.counters();
        assert_eq!(
            (c.pacing_violations, c.penalty_rejections),
            (1, 2),
            "{auth:?}"
        );
        assert_eq!(c.api_calls, 11);
        assert_eq!(
            c.rejections, 0,
            "pacing refusals are not counted as rejections"
        );
    }
}

#[tokio::test]
async fn portfolio_accounts_twice_within_five_seconds_is_a_violation() {
    for auth in BOTH {
        let session = Session::connect(auth, sandbox().await).await;
        session
            .sandbox
            .set_pacing(Some(PacingLimits::ibkr().penalty(Duration::ZERO)));
        assert_eq!(session.get("portfolio/accounts").await.status, 200);
        assert_too_many(&session.get("portfolio/accounts").await);
        // With no penalty box, other endpoints are still served.
        assert_eq!(session.get("iserver/accounts").await.status, 200);
        // The query is not part of the endpoint.
        assert_eq!(
            session
                .get("iserver/account/orders?force=true")
                .await
                .status,
            200
        );
        assert_too_many(&session.get("iserver/account/orders").await);
        let c = session.sandbox.counters();
        assert_eq!(
            (c.pacing_violations, c.penalty_rejections),
            (2, 0),
            "{auth:?}"
        );
    }
}

#[tokio::test]
async fn the_global_limit_counts_every_endpoint_of_one_user() {
    let sandbox = sandbox().await;
    let alice = Session::connect(Auth::Oauth2, sandbox.clone()).await;
    let bob = Session::connect(Auth::Oauth1a, sandbox.clone()).await;
    sandbox.set_pacing(Some(
        PacingLimits::ibkr()
            .global(5, Duration::from_secs(1))
            .penalty(Duration::ZERO),
    ));
    for session in [&alice, &bob] {
        let replies = [
            session.call(Method::POST, "tickle", None).await,
            session.get("iserver/accounts").await,
            session.get(SNAPSHOT).await,
            session
                .call(Method::POST, "iserver/auth/status", None)
                .await,
            session.get("sso/validate").await,
            session.get("iserver/accounts").await,
        ];
        for reply in &replies[..5] {
            assert_eq!(reply.status, 200, "{reply:?}");
        }
        // The sixth of this user; the other user has a budget of their own.
        assert_too_many(&replies[5]);
    }
    assert_eq!(sandbox.counters().pacing_violations, 2);

    // Through the Client Portal Gateway: 10 per second.
    sandbox.set_pacing(Some(PacingLimits::gateway().penalty(Duration::ZERO)));
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(alice.get("iserver/accounts").await.status);
    }
    assert_eq!(statuses[..10], [200; 10]);
    assert_eq!(statuses[10], 429);
}

#[tokio::test]
async fn a_refused_request_is_neither_served_nor_counted() {
    for auth in BOTH {
        let session = Session::connect(auth, sandbox().await).await;
        let account = session.expected_account().await;
        let path = format!("iserver/account/{account}/orders");
        let order = json!({"orders": [{"conid": 8314, "side": "BUY", "quantity": 1}]});
        let long = Duration::from_secs(30);
        session.sandbox.set_pacing(Some(
            PacingLimits::ibkr()
                .global(3, long)
                .endpoint(Some("GET"), "/iserver/marketdata/snapshot", 1, long)
                .penalty(Duration::ZERO),
        ));
        assert_eq!(session.get(SNAPSHOT).await.status, 200);
        assert_too_many(&session.get(SNAPSHOT).await);
        // Had the refused snapshot counted, the global budget of 3 would end here.
        assert_eq!(
            session.call(Method::POST, &path, Some(&order)).await.status,
            200
        );
        assert_eq!(
            session.call(Method::POST, &path, Some(&order)).await.status,
            200
        );
        assert_too_many(&session.call(Method::POST, &path, Some(&order)).await);
        assert_eq!(session.sandbox.orders().len(), 2, "{auth:?}");
        let c = session.sandbox.counters();
        assert_eq!((c.orders_placed, c.pacing_violations), (2, 2));
    }
}

#[tokio::test]
async fn requests_spaced_just_over_the_period_are_never_refused() {
    for auth in BOTH {
        let session = Session::connect(auth, sandbox().await).await;
        session.sandbox.set_pacing(Some(
            PacingLimits::ibkr()
                .endpoint(
                    Some("GET"),
                    "/portfolio/accounts",
                    1,
                    Duration::from_millis(300),
                )
                .penalty(Duration::from_millis(500)),
        ));
        for _ in 0..5 {
            assert_eq!(session.get("portfolio/accounts").await.status, 200);
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        // Ten snapshots, a little over a second, ten more.
        for round in 0..2 {
            for _ in 0..10 {
                let reply = session.get(SNAPSHOT).await;
                assert_eq!(reply.status, 200, "{auth:?} round {round}: {reply:?}");
            }
            tokio::time::sleep(Duration::from_millis(1150)).await;
        }
        assert_eq!(session.sandbox.counters().pacing_violations, 0, "{auth:?}");
        // The limit is live: two at once are one too many.
        assert_eq!(session.get("portfolio/accounts").await.status, 200);
        assert_too_many(&session.get("portfolio/accounts").await);
    }
}

#[tokio::test]
async fn windows_slide_in_real_time_even_when_the_sandbox_clock_is_pinned() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let clock = Arc::new(FixedClock::new(now));
    for auth in BOTH {
        let sandbox = start(builder().clock(clock.clone())).await;
        let session = Session::connect(auth, sandbox).await;
        session.sandbox.set_pacing(Some(
            PacingLimits::ibkr()
                .endpoint(
                    Some("GET"),
                    "/portfolio/accounts",
                    1,
                    Duration::from_millis(300),
                )
                .penalty(Duration::ZERO),
        ));
        assert_eq!(session.get("portfolio/accounts").await.status, 200);
        assert_too_many(&session.get("portfolio/accounts").await);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            session.get("portfolio/accounts").await.status,
            200,
            "{auth:?}"
        );
    }
}

#[tokio::test]
async fn the_websocket_handshake_counts_too() {
    let mut session = Session::connect(Auth::Oauth2, sandbox().await).await;
    session.sandbox.set_pacing(Some(
        PacingLimits::ibkr()
            .global(2, Duration::from_secs(30))
            .penalty(Duration::ZERO),
    ));
    // A tickle (for the session cookie), then the handshake: the budget of two is spent.
    let ws = session.connect_websocket().await.expect("websocket");
    assert_eq!(session.sandbox.counters().ws_connections, 1);
    assert_too_many(&session.get("iserver/accounts").await);
    drop(ws);
}

#[tokio::test]
async fn the_admin_endpoint_turns_pacing_on_and_off() {
    let session = Session::connect(Auth::Oauth1a, sandbox().await).await;
    let admin = reqwest::Client::new();
    let url = format!("{}/__sandbox/pacing", session.sandbox.base_url());
    let set = async |body: Value| {
        let reply = admin.post(&url).json(&body).send().await.unwrap();
        let status = reply.status().as_u16();
        (status, reply.json::<Value>().await.unwrap())
    };
    let on = json!({"enabled": true, "penalty_ms": 1000, "global_per_second": 3});
    assert_eq!(set(on).await, (200, json!({"ok": true})));
    for _ in 0..3 {
        assert_eq!(session.get("iserver/accounts").await.status, 200);
    }
    let retry_after = assert_too_many(&session.get("iserver/accounts").await);
    assert_eq!(retry_after, 1);
    assert_too_many(&session.get("iserver/accounts").await);

    // Off: the penalty box is emptied with the windows.
    assert_eq!(set(json!({"enabled": false})).await.0, 200);
    for _ in 0..20 {
        assert_eq!(session.get("iserver/accounts").await.status, 200);
    }

    // Endpoint limits and the gateway preset over HTTP.
    let on = json!({
        "enabled": true, "preset": "gateway", "penalty_ms": 0,
        "endpoints": [{"method": "GET", "path": "/iserver/accounts", "count": 1, "per_ms": 10000}]
    });
    assert_eq!(set(on).await.0, 200);
    assert_eq!(session.get("iserver/accounts").await.status, 200);
    assert_too_many(&session.get("iserver/accounts").await);
    // Nine snapshots fill the gateway's global ten per second; the tenth is one too many,
    // though the snapshot endpoint alone would allow it.
    for _ in 0..9 {
        assert_eq!(session.get(SNAPSHOT).await.status, 200);
    }
    assert_too_many(&session.get(SNAPSHOT).await);

    for bad in [
        json!({}),
        json!({"enabled": "yes"}),
        json!({"enabled": true, "global_per_second": -1}),
        json!({"enabled": true, "global_per_second": 5_000_000_000u64}),
        json!({"enabled": true, "penalty_ms": "1s"}),
        json!({"enabled": true, "preset": "tws"}),
        json!({"enabled": true, "bogus": 1}),
        json!({"enabled": true, "endpoints": [{"path": "/x", "count": 1}]}),
        json!({"enabled": true, "endpoints": [{"count": 1, "per_ms": 5}]}),
        json!({"enabled": true, "endpoints": {"path": "/x"}}),
    ] {
        let (status, body) = set(bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let c = session.sandbox.counters();
    assert_eq!((c.pacing_violations, c.penalty_rejections), (3, 1));
}

#[test]
fn the_limits_are_ibkrs_table() {
    let second = Duration::from_secs(1);
    let five = Duration::from_secs(5);
    let ibkr = PacingLimits::ibkr();
    assert_eq!(ibkr, PacingLimits::default());
    assert_eq!(ibkr.global_limit(), (50, second));
    assert_eq!(PacingLimits::gateway().global_limit(), (10, second));
    assert_eq!(ibkr.penalty_length(), Duration::from_secs(600));
    for (method, path, expected) in [
        ("GET", "/iserver/marketdata/snapshot", vec![(10, second)]),
        ("GET", "/portfolio/accounts", vec![(1, five)]),
        ("POST", "/portfolio/accounts", vec![]),
        ("GET", "/iserver/orders", vec![(1, five)]),
        ("GET", "/iserver/account/orders", vec![(1, five)]),
        ("POST", "/iserver/account/U1234567/orders", vec![]),
        ("GET", "/portfolio/U1234567/positions", vec![]),
        ("GET", "/fyi/unreadnumber", vec![(1, second)]),
        ("DELETE", "/fyi/deliveryoptions/1", vec![(1, second)]),
        ("GET", "/fyi", vec![]),
        ("GET", "/tickle", vec![(1, second)]),
        ("GET", "/sso/validate", vec![(1, Duration::from_secs(60))]),
        ("POST", "/pa/summary", vec![(1, Duration::from_secs(900))]),
        (
            "GET",
            "/iserver/scanner/params",
            vec![(1, Duration::from_secs(900))],
        ),
        ("POST", "/iserver/scanner/run", vec![(1, second)]),
        ("GET", "/iserver/trades", vec![(1, five)]),
        ("GET", "/iserver/account/pnl/partitioned", vec![(1, five)]),
        ("GET", "/portfolio/subaccounts", vec![(1, five)]),
        ("GET", "/iserver/accounts", vec![]),
    ] {
        assert_eq!(
            ibkr.endpoint_limits(method, path),
            expected,
            "{method} {path}"
        );
    }
    // Overrides replace, additions add; paths are normalised.
    let changed = ibkr
        .endpoint(Some("get"), "portfolio/accounts/", 3, second)
        .endpoint(None, "/v1/api/iserver/accounts", 2, five)
        .penalty(Duration::from_secs(30 * 24 * 3600));
    assert_eq!(
        changed.endpoint_limits("GET", "/portfolio/accounts"),
        vec![(3, second)]
    );
    assert_eq!(
        changed.endpoint_limits("POST", "/iserver/accounts"),
        vec![(2, five)]
    );
    assert_eq!(changed.penalty_length(), Duration::from_secs(7 * 24 * 3600));
}
