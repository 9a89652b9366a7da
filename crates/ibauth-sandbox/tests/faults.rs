//! Fault injection: each fault seen by a real client over HTTP, and the session recovering
//! when the client does the right thing.

use std::time::{Duration, Instant};

use ibauth::{Config, Error, Oauth2Client, SigningKey, Step};
use ibauth_sandbox::{ClientRegistration, FailWith, Sandbox};

async fn setup() -> (Sandbox, Oauth2Client) {
    let key = SigningKey::generate().unwrap();
    let sandbox = Sandbox::builder()
        .register(
            ClientRegistration::new("FCLIENT")
                .key("k", &key)
                .credential("erin"),
        )
        .start()
        .await
        .unwrap();
    let config = Config::builder()
        .client_id("FCLIENT")
        .client_key_id("k")
        .credential("erin")
        .private_key(key)
        .base_url(sandbox.base_url())
        .public_ip("127.0.0.1".parse().unwrap())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut client = Oauth2Client::new(config).unwrap();
    client.connect().await.unwrap();
    (sandbox, client)
}

#[tokio::test]
async fn scripted_statuses_then_normal_service() {
    let (sandbox, mut client) = setup().await;
    sandbox.fail_next(1, FailWith::new(429, "Too many requests").retry_after(3));
    sandbox.fail_next(1, FailWith::new(500, "Please query /accounts first"));
    sandbox.fail_next(1, FailWith::new(503, "Service Unavailable"));
    sandbox.fail_next(1, FailWith::new(410, "Gone"));
    let mut seen = Vec::new();
    for _ in 0..4 {
        match client.tickle().await.unwrap_err() {
            Error::Rejected {
                step: Step::Tickle,
                status,
                message,
                hint,
                retry_after,
            } => seen.push((status, message, hint.is_some(), retry_after)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        seen[0],
        (
            429,
            "Too many requests".to_owned(),
            true,
            Some(Duration::from_secs(3))
        ),
        "the client reads Retry-After"
    );
    assert_eq!(seen[1].3, None);
    assert_eq!(seen[1].0, 500);
    assert!(seen[1].2, "a hint for 'Please query /accounts first'");
    assert_eq!(seen[2].0, 503);
    assert_eq!(seen[3].0, 410);
    assert!(client.tickle().await.unwrap().auth_status().authenticated);
    assert_eq!(sandbox.counters().faults_injected, 4);
}

#[tokio::test]
async fn retry_after_is_sent() {
    let (sandbox, _client) = setup().await;
    sandbox.fail_next(1, FailWith::new(429, "Too many requests").retry_after(7));
    let http = ibauth::HttpClient::new(Duration::from_secs(2), None).unwrap();
    let reply = http
        .reqwest()
        .post(format!("{}/v1/api/tickle", sandbox.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 429);
    assert_eq!(reply.headers()["retry-after"], "7");
}

#[tokio::test]
async fn a_dropped_session_recovers_with_ssodh_init() {
    let (sandbox, mut client) = setup().await;
    sandbox.drop_session("erin");
    let status = client.tickle().await.unwrap();
    assert!(!status.auth_status().authenticated);
    assert!(client.init_brokerage_session().await.unwrap().authenticated);
    assert!(client.tickle().await.unwrap().auth_status().authenticated);
}

#[tokio::test]
async fn a_competing_login_is_reported_and_compete_takes_it_back() {
    let (sandbox, mut client) = setup().await;
    sandbox.report_competing("erin");
    let status = client.tickle().await.unwrap();
    assert!(status.auth_status().competing && !status.auth_status().authenticated);
    assert!(client.init_brokerage_session().await.unwrap().authenticated);
}

#[tokio::test]
async fn expired_tokens_need_a_new_login() {
    let (sandbox, mut client) = setup().await;
    sandbox.expire_tokens_now();
    let err = client.tickle().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    client.connect().await.unwrap();
    assert!(client.tickle().await.unwrap().auth_status().authenticated);
}

#[tokio::test]
async fn the_nightly_reset_ends_the_brokerage_session_and_changes_the_session_id() {
    let (sandbox, mut client) = setup().await;
    let before = client.tickle().await.unwrap().session;
    sandbox.nightly_reset();
    let after = client.tickle().await.unwrap();
    assert_ne!(after.session, before);
    assert!(!after.auth_status().authenticated);
    let err = client.auth_status().await.unwrap_err();
    assert_eq!(err.status(), Some(400), "no bridge after the reset");
    client.init_brokerage_session().await.unwrap();
    assert!(client.auth_status().await.unwrap().authenticated);
}

#[tokio::test]
async fn delayed_responses_and_the_client_timeout() {
    let (sandbox, mut client) = setup().await;
    sandbox.delay_responses(Some(Duration::from_millis(300)));
    let t = Instant::now();
    client.tickle().await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    sandbox.delay_responses(Some(Duration::from_secs(3)));
    let err = client.tickle().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Timeout {
                step: Step::Tickle,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
    sandbox.delay_responses(None);
    assert!(client.tickle().await.is_ok());
}

#[tokio::test]
async fn the_admin_api_injects_the_same_faults_over_http() {
    let (sandbox, mut client) = setup().await;
    let http = ibauth::HttpClient::new(Duration::from_secs(2), None).unwrap();
    let admin = |action: &str, body: serde_json::Value| {
        http.reqwest()
            .post(format!("{}/__sandbox/{action}", sandbox.base_url()))
            .json(&body)
            .send()
    };
    let reply = admin(
        "fail_next",
        serde_json::json!({"n": 2, "status": 503, "message": "down"}),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 200);
    for _ in 0..2 {
        assert_eq!(client.tickle().await.unwrap_err().status(), Some(503));
    }
    admin("drop_session", serde_json::json!({"credential": "erin"}))
        .await
        .unwrap();
    assert!(!client.tickle().await.unwrap().auth_status().authenticated);
    let reply = admin("no_such_thing", serde_json::json!({})).await.unwrap();
    assert_eq!(reply.status(), 404);
    // Counts are bounded and never truncated: nothing is scripted by a refused request.
    for (action, body) in [
        (
            "fail_next",
            serde_json::json!({"n": 1u64 << 40, "status": 500}),
        ),
        ("fail_next", serde_json::json!({"n": -1, "status": 500})),
        ("cut", serde_json::json!({"n": (1u64 << 32) + 1})),
        ("cut", serde_json::json!({"n": 10_001})),
    ] {
        let reply = admin(action, body.clone()).await.unwrap();
        assert_eq!(reply.status(), 400, "{action} {body}");
    }
    assert!(client.tickle().await.is_ok(), "no fault was queued");
    let counters: serde_json::Value = http
        .reqwest()
        .get(format!("{}/__sandbox/counters", sandbox.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["faults_injected"], 2);
    assert_eq!(counters["tickles"], 2);
}

#[tokio::test]
async fn a_connection_closed_mid_response_is_a_transient_network_error() {
    let (sandbox, mut client) = setup().await;
    sandbox.cut_next(1);
    let err = client.tickle().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Network {
                step: Step::Tickle,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient(), "{err}");
    // The next request gets a new connection and a whole answer.
    assert!(client.tickle().await.unwrap().auth_status().authenticated);
    assert_eq!(sandbox.counters().faults_injected, 1);
}
