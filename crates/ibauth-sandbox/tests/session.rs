//! `ibauth::Session` against the sandbox over real HTTP: many tasks through one session while
//! the sandbox drops the session and expires every token (one re-login, no order sent twice),
//! bursts paced under IBKR's published limits (no violation the sandbox could count), 429s
//! that pause the budget, calls never repeated on a guess, the keep-alive sharing recovery with
//! the calls, and the WebSocket.

mod api_common;
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_common::{Auth, BOTH, CONSUMER, OAUTH1A_USER};
use ibauth::oauth1a::{DhGroup, Oauth1aConfig};
use ibauth::pacing::{PacingRules, Rule};
use ibauth::policy::Policy;
use ibauth::secrecy::SecretString;
use ibauth::store::MemoryStore;
use ibauth::{AuthConfig, DecryptionKey, Error, Method, Session, SessionBuilder};
use ibauth_sandbox::{FailWith, PacingLimits, RFC3526_PRIME_2048, Sandbox};
use serde_json::{Value, json};

/// IBKR's published limits, with `sso/validate` (1 per minute) opened up on both sides:
/// these tests log in again within seconds of the first login.
fn client_limits() -> PacingRules {
    PacingRules::ibkr().with_endpoint(Rule::new(
        Some(Method::GET),
        "/sso/validate",
        "10/s".parse().expect("limit"),
    ))
}

fn sandbox_limits() -> PacingLimits {
    PacingLimits::ibkr()
        .endpoint(Some("GET"), "/sso/validate", 10, Duration::from_secs(1))
        .penalty(Duration::from_secs(600))
}

async fn paced_sandbox() -> Arc<Sandbox> {
    api_common::start(api_common::builder().pacing(sandbox_limits())).await
}

/// A session of `auth`'s user on `sandbox`, paced by `rules`, tokens in memory.
fn session(auth: Auth, sandbox: &Sandbox, rules: PacingRules) -> Session {
    builder(auth, sandbox)
        .policy(Policy {
            pacing: rules,
            ..Policy::default()
        })
        .store(Arc::new(MemoryStore::new()))
        .build()
        .expect("session builds")
}

fn builder(auth: Auth, sandbox: &Sandbox) -> SessionBuilder {
    Session::builder(config(auth, sandbox))
}

/// `auth`'s user on `sandbox` (for OAuth 1.0a, a new access token each time: sessions that
/// must share tokens share one config).
fn config(auth: Auth, sandbox: &Sandbox) -> AuthConfig {
    match auth {
        Auth::Oauth2 => common::config(sandbox.base_url())
            .timeout(Duration::from_secs(5))
            .build()
            .expect("config builds")
            .into(),
        Auth::Oauth1a => {
            let (signature, encryption) = api_common::consumer_key_pair();
            let (token, secret) = sandbox
                .issue_access_token(CONSUMER, OAUTH1A_USER)
                .expect("consumer registered");
            Oauth1aConfig::new(
                CONSUMER,
                token,
                SecretString::from(secret),
                signature,
                DecryptionKey::from_pem(&encryption.to_pkcs8_pem()).expect("key"),
                DhGroup::from_hex(RFC3526_PRIME_2048, 2).expect("DH group"),
            )
            .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
            .expect("rest url")
            .ws_url(&format!(
                "{}/v1/api/ws",
                sandbox.base_url().replacen("http", "ws", 1)
            ))
            .expect("ws url")
            .timeout(Duration::from_secs(5))
            .into()
        }
    }
}

fn user(auth: Auth) -> &'static str {
    match auth {
        Auth::Oauth2 => common::USER,
        Auth::Oauth1a => OAUTH1A_USER,
    }
}

/// Logins the sandbox counted for `auth`: access tokens (OAuth 2.0) or live session tokens.
fn logins(sandbox: &Sandbox, auth: Auth) -> u64 {
    let c = sandbox.counters();
    match auth {
        Auth::Oauth2 => c.access_tokens,
        Auth::Oauth1a => c.live_session_tokens,
    }
}

async fn account(session: &Session) -> String {
    let accounts: Value = session
        .get("iserver/accounts")
        .await
        .expect("iserver/accounts")
        .json()
        .expect("accounts JSON");
    accounts["selectedAccount"]
        .as_str()
        .expect("an account")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_tasks_meet_a_dropped_session_and_expired_tokens_with_one_login() {
    for auth in BOTH {
        let sandbox = paced_sandbox().await;
        let session = session(auth, &sandbox, client_limits());
        let account = account(&session).await;
        assert_eq!(logins(&sandbox, auth), 1, "{auth:?}");

        // IBKR drops the brokerage session and revokes every token at once; then 50 tasks
        // call together, each placing one order and reading market data.
        sandbox.drop_session(user(auth));
        sandbox.expire_tokens_now();
        let start = Arc::new(tokio::sync::Barrier::new(50));
        let tasks: Vec<_> = (0..50)
            .map(|n| {
                let (session, start, account) = (session.clone(), start.clone(), account.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    let order = json!({ "orders": [{
                        "conid": 265598, "side": "BUY", "quantity": 1, "orderType": "MKT",
                        "tif": "DAY", "cOID": format!("task-{n}"),
                    }]});
                    let placed = session
                        .post(&format!("iserver/account/{account}/orders"), &order)
                        .await;
                    let snapshot = session
                        .request(Method::GET, "iserver/marketdata/snapshot")
                        .query(&[("conids", "265598,8314"), ("fields", "31,84,86")])
                        .send()
                        .await;
                    (n, placed, snapshot)
                })
            })
            .collect();
        let mut confirmed = BTreeMap::new();
        for task in tasks {
            let (n, placed, snapshot) = task.await.expect("task");
            // Every call ends in an answer or a typed error; here, with the faults recovered,
            // in success.
            let placed = placed.unwrap_or_else(|e| panic!("{auth:?} order {n}: {e}"));
            assert_eq!(
                placed.status(),
                200,
                "{auth:?} order {n}: {}",
                placed.text()
            );
            let reply: Value = placed.json().expect("order reply");
            confirmed.insert(n, reply[0]["order_id"].as_str().unwrap().to_owned());
            let quotes: Value = snapshot
                .unwrap_or_else(|e| panic!("{auth:?} snapshot {n}: {e}"))
                .json()
                .expect("snapshot");
            assert_eq!(quotes.as_array().map(Vec::len), Some(2), "{auth:?}");
        }
        assert_eq!(logins(&sandbox, auth), 2, "{auth:?}: exactly one re-login");

        // No order reached the book twice, and every confirmed order is there once.
        let orders = sandbox.orders();
        let mut by_coid: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for order in &orders {
            let coid = order.order["cOID"].as_str().unwrap_or("").to_owned();
            by_coid
                .entry(coid)
                .or_default()
                .push(order.order_id.clone());
        }
        assert_eq!(orders.len(), 50, "{auth:?}");
        for (n, order_id) in &confirmed {
            assert_eq!(
                by_coid.get(&format!("task-{n}")),
                Some(&vec![order_id.clone()]),
                "{auth:?} order {n}"
            );
        }
        let counters = sandbox.counters();
        assert_eq!(counters.pacing_violations, 0, "{auth:?}: {counters:?}");
        assert_eq!(counters.penalty_rejections, 0, "{auth:?}");
        let status = session.status();
        assert_eq!(status.recoveries, 1, "{auth:?}: {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_five_times_the_published_rate_earns_no_violation() {
    let sandbox = paced_sandbox().await;
    let session = session(Auth::Oauth2, &sandbox, client_limits());
    account(&session).await;
    let started = Instant::now();
    // 5× the allowed rate at once: five `portfolio/accounts` (1 per 5 s) and fifty snapshots
    // (10 per second), all from separate tasks.
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let session = session.clone();
        tasks.push(tokio::spawn(async move {
            let reply = session.get("portfolio/accounts").await?;
            Ok::<_, Error>((Instant::now(), "portfolio", reply.status()))
        }));
    }
    for _ in 0..50 {
        let session = session.clone();
        tasks.push(tokio::spawn(async move {
            let reply = session
                .request(Method::GET, "iserver/marketdata/snapshot")
                .query(&[("conids", "265598"), ("fields", "31")])
                .send()
                .await?;
            Ok((Instant::now(), "snapshot", reply.status()))
        }));
    }
    let mut done: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for task in tasks {
        let (at, what, status) = task.await.expect("task").expect("paced, not refused");
        assert_eq!(status, 200, "{what}");
        done.entry(what).or_default().push(at - started);
    }
    let counters = sandbox.counters();
    assert_eq!(counters.pacing_violations, 0, "{counters:?}");
    assert_eq!(counters.penalty_rejections, 0);
    // Paced, not bunched: five portfolio calls need four full windows between them.
    let portfolio = &done["portfolio"];
    assert!(
        portfolio.iter().max().unwrap() >= &Duration::from_secs(20),
        "{portfolio:?}"
    );
    let snapshots = &done["snapshot"];
    assert!(
        snapshots.iter().max().unwrap() >= &Duration::from_secs(4),
        "{snapshots:?}"
    );
}

#[tokio::test]
async fn a_call_that_would_wait_too_long_fails_at_once_with_the_wait_needed() {
    let sandbox = paced_sandbox().await;
    let session = session(Auth::Oauth2, &sandbox, client_limits());
    session.get("portfolio/accounts").await.expect("first");
    let started = Instant::now();
    let err = session
        .request(Method::GET, "portfolio/accounts")
        .max_wait(Duration::from_secs(1))
        .send()
        .await
        .expect_err("the second within 5 s would wait");
    assert!(started.elapsed() < Duration::from_millis(500), "at once");
    match &err {
        Error::Paced { source, .. } => {
            assert!(source.wait > Duration::from_secs(3), "{source:?}");
            assert_eq!(source.bucket, "GET /portfolio/accounts");
        }
        other => panic!("expected Error::Paced, got {other:?}"),
    }
    assert!(err.to_string().contains("max_wait"), "{err}");
    // Other endpoints are not held up by it.
    account(&session).await;
    assert_eq!(sandbox.counters().pacing_violations, 0);
}

#[tokio::test]
async fn a_429_pauses_the_budget_for_retry_after_then_the_call_goes_through() {
    let sandbox = api_common::sandbox().await;
    let session = session(Auth::Oauth2, &sandbox, client_limits());
    let account = account(&session).await;
    sandbox.fail_next(1, FailWith::new(429, "Too Many Requests").retry_after(1));
    let started = Instant::now();
    let reply = session
        .get(&format!("portfolio/{account}/summary"))
        .await
        .expect("answered");
    // The sandbox serves no summary: a 404 after the pause, not the 429.
    assert_eq!(reply.status(), 404, "{}", reply.text());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited out Retry-After"
    );
    assert_eq!(sandbox.counters().faults_injected, 1);
}

#[tokio::test]
async fn an_order_is_never_sent_again_after_a_5xx_or_a_timeout() {
    let sandbox = api_common::sandbox().await;
    let session = session(Auth::Oauth2, &sandbox, PacingRules::unlimited());
    let account = account(&session).await;
    let order = |coid: &str| {
        json!({ "orders": [{ "conid": 1, "side": "SELL", "quantity": 1,
        "orderType": "MKT", "tif": "DAY", "cOID": coid }] })
    };
    let path = format!("iserver/account/{account}/orders");

    sandbox.fail_next(1, FailWith::new(503, "Service Unavailable"));
    let reply = session
        .post(&path, &order("after-503"))
        .await
        .expect("an answer");
    assert_eq!(reply.status(), 503, "returned, not retried");
    assert!(matches!(
        reply.json::<Value>(),
        Err(Error::Rejected { status: 503, .. })
    ));
    assert_eq!(sandbox.counters().orders_placed, 0);

    // No answer in time: whether the server acted is unknown, so the error is the caller's to
    // handle — a retry would have been answered at once, the delay being gone by then.
    sandbox.delay_responses(Some(Duration::from_secs(7)));
    let err = session
        .post(&path, &order("slow"))
        .await
        .expect_err("timed out");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    sandbox.delay_responses(None);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let placed = sandbox
        .orders()
        .into_iter()
        .filter(|o| o.order["cOID"] == "slow")
        .count();
    assert!(placed <= 1, "sent once at most: {placed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keep_alive_and_the_calls_share_one_recovery() {
    for auth in BOTH {
        let sandbox = api_common::sandbox().await;
        let session = builder(auth, &sandbox)
            .policy(Policy {
                pacing: PacingRules::unlimited(),
                tickle_interval: Duration::from_millis(50),
                jitter: Duration::ZERO,
                ..Policy::default()
            })
            .no_store()
            .build()
            .expect("session");
        let keep = session.keep_alive().expect("keep-alive");
        let mut status = session.watch();
        status
            .wait_for(|s| s.tickles >= 2)
            .await
            .expect("keep-alive runs");
        assert!(session.keep_alive().is_err(), "one keep-alive per session");
        sandbox.expire_tokens_now();
        let calls: Vec<_> = (0..10)
            .map(|_| {
                let session = session.clone();
                tokio::spawn(async move { session.get("iserver/accounts").await })
            })
            .collect();
        for call in calls {
            let reply = call.await.expect("task").expect("recovered");
            assert_eq!(reply.status(), 200, "{auth:?}");
        }
        let before = status.borrow().tickles;
        status
            .wait_for(|s| s.tickles >= before + 2)
            .await
            .expect("keeps going");
        assert_eq!(
            logins(&sandbox, auth),
            2,
            "{auth:?}: one re-login between them"
        );
        let end = keep.shutdown().await.expect("stopped");
        assert_eq!(
            end.state,
            ibauth::session::SessionState::LoggedOut,
            "{auth:?}"
        );
        assert_eq!(sandbox.counters().logouts, 1, "{auth:?}");
    }
}

#[tokio::test]
async fn stored_tokens_are_reused_and_a_session_from_another_process_adopted() {
    let sandbox = api_common::sandbox().await;
    let store = Arc::new(MemoryStore::new());
    let first = builder(Auth::Oauth2, &sandbox)
        .policy(Policy {
            pacing: PacingRules::unlimited(),
            ..Policy::default()
        })
        .store(store.clone())
        .build()
        .unwrap();
    let connection = first.connect().await.unwrap();
    assert_eq!(connection.source, ibauth::session::Source::Refreshed);
    assert!(connection.initialised.unwrap().authenticated);
    // A second session on the same store (another process, say): no login of its own.
    let second = builder(Auth::Oauth2, &sandbox)
        .store(store.clone())
        .build()
        .unwrap();
    assert_eq!(
        second.connect().await.unwrap().source,
        ibauth::session::Source::Stored
    );
    assert_eq!(second.get("iserver/accounts").await.unwrap().status(), 200);
    assert_eq!(sandbox.counters().access_tokens, 1);
    // Logging out ends the session and forgets it: a third session logs in afresh.
    assert!(second.logout().await.unwrap().is_some());
    assert!(
        second.logout().await.unwrap().is_none(),
        "nothing left to end"
    );
    let third = builder(Auth::Oauth2, &sandbox)
        .store(store)
        .build()
        .unwrap();
    assert!(third.restore().await.unwrap().is_none(), "forgotten");
}

/// Tokens a session restored before its keep-alive started have never been refused: the
/// keep-alive checks them with a tickle and logs in only when they are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_started_on_restored_tokens_tickles_them_instead_of_logging_in() {
    for auth in BOTH {
        let sandbox = api_common::sandbox().await;
        let store = Arc::new(MemoryStore::new());
        let config = config(auth, &sandbox);
        let policy = Policy {
            pacing: PacingRules::unlimited(),
            tickle_interval: Duration::from_millis(50),
            jitter: Duration::ZERO,
            ..Policy::default()
        };
        let first = Session::builder(config.clone())
            .policy(policy.clone())
            .store(store.clone())
            .build()
            .expect("session");
        first.connect().await.expect("login");
        assert_eq!(logins(&sandbox, auth), 1, "{auth:?}");

        // Good tokens: tickled, not replaced.
        let second = Session::builder(config.clone())
            .policy(policy.clone())
            .store(store.clone())
            .build()
            .expect("session");
        let source = second.connect().await.expect("restored").source;
        assert_eq!(source, ibauth::session::Source::Stored, "{auth:?}");
        let keep = second.keep_alive().expect("keep-alive");
        let mut status = second.watch();
        status
            .wait_for(|s| s.tickles >= 2)
            .await
            .expect("keep-alive runs");
        assert_eq!(
            status.borrow().state,
            ibauth::session::SessionState::Authenticated,
            "{auth:?}"
        );
        assert_eq!(
            logins(&sandbox, auth),
            1,
            "{auth:?}: no login over good tokens"
        );
        drop(status);
        let _ = keep.shutdown().await;

        // Tokens revoked after they were restored: the first tickle is refused, then a login.
        let store_again = store.clone();
        let third = Session::builder(config.clone())
            .policy(policy)
            .store(store)
            .build()
            .expect("session");
        // The second logged out as it stopped, and the store forgot its tokens: log in again.
        Session::builder(config.clone())
            .store(store_again.clone())
            .build()
            .expect("session")
            .connect()
            .await
            .expect("login");
        let before = logins(&sandbox, auth);
        assert_eq!(
            third.connect().await.expect("restored").source,
            ibauth::session::Source::Stored,
            "{auth:?}"
        );
        sandbox.expire_tokens_now();
        let keep = third.keep_alive().expect("keep-alive");
        let mut status = third.watch();
        status
            .wait_for(|s| s.tickles >= 1 && s.state == ibauth::session::SessionState::Authenticated)
            .await
            .expect("recovered");
        assert_eq!(
            logins(&sandbox, auth),
            before + 1,
            "{auth:?}: one login, after the refusal"
        );
        let _ = keep.shutdown().await;
    }
}

#[tokio::test]
async fn the_websocket_comes_from_the_session_and_reconnects_with_its_tokens() {
    let sandbox =
        api_common::start(api_common::builder().ws_heartbeat(Duration::from_millis(100))).await;
    let session = session(Auth::Oauth1a, &sandbox, PacingRules::unlimited());
    let mut ws = session.websocket().await.expect("socket");
    let first: Value = serde_json::from_str(&ws.next_text().await.unwrap().unwrap()).unwrap();
    assert_eq!(first["topic"], "system");
    // The session id changes (IBKR's nightly reset): the server closes the socket, the
    // session reconnects it with a fresh tickle and its current tokens.
    sandbox.rotate_session(OAUTH1A_USER);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ws.reconnects() == 0 && Instant::now() < deadline {
        ws.next_text().await.unwrap().unwrap();
    }
    assert_eq!(ws.reconnects(), 1);
    assert_eq!(sandbox.counters().ws_connections, 2);
    assert_eq!(sandbox.counters().live_session_tokens, 1, "no new login");
    ws.close().await;
}

#[tokio::test]
async fn the_method_is_chosen_from_the_configuration_at_run_time() {
    let sandbox = api_common::sandbox().await;
    let dir = common::TempDir::new("session-method");
    let (signature, encryption) = api_common::consumer_key_pair();
    let (token, secret) = sandbox
        .issue_access_token(CONSUMER, OAUTH1A_USER)
        .expect("consumer");
    std::fs::write(dir.path().join("key.pem"), common::key().to_pkcs8_pem()).unwrap();
    std::fs::write(dir.path().join("sig.pem"), signature.to_pkcs8_pem()).unwrap();
    std::fs::write(dir.path().join("enc.pem"), encryption.to_pkcs8_pem()).unwrap();
    #[cfg(unix)]
    for name in ["key.pem", "sig.pem", "enc.pem"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join(name),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let config = |auth: &str| {
        dir.write(
            &format!("{auth}.yaml"),
            &format!(
                "auth: {auth}\nclient_id: {}\nclient_key_id: {}\ncredential: {}\nprivate_key_file: key.pem\nbase_url: {}\npublic_ip: 127.0.0.1\npacing:\n  enabled: false\noauth1a:\n  consumer_key: {CONSUMER}\n  access_token: \"{token}\"\n  access_token_secret: \"{secret}\"\n  signature_key_file: sig.pem\n  encryption_key_file: enc.pem\n  dh_prime: {RFC3526_PRIME_2048}\n  rest_url: {}/v1/api/\n",
                common::CLIENT_ID,
                common::KID,
                common::USER,
                sandbox.base_url(),
                sandbox.base_url(),
            ),
        )
    };
    for (auth, method) in [
        ("oauth2", ibauth::AuthMethod::OAuth2),
        ("oauth1a", ibauth::AuthMethod::OAuth1a),
    ] {
        // The same code for both: the method is data.
        let session = Session::from_config(Some(&config(auth)), None)
            .unwrap()
            .no_store()
            .build()
            .unwrap();
        assert_eq!(session.method(), method);
        assert_eq!(session.get("iserver/accounts").await.unwrap().status(), 200);
    }
    let c = sandbox.counters();
    assert_eq!((c.access_tokens, c.live_session_tokens), (1, 1));
}
