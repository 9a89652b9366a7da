//! What the sandbox refuses when the library talks to it, and how the refusal reaches the
//! caller: `Error::Rejected` with the step, the HTTP status and the sandbox's own message
//! (problem+json `title: detail`, or the REST API's `error`). Expiry is driven by `FixedClock`s.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    T0, USER, assert_rejected, client, clock, config, http, other_key, sandbox, sandbox_with,
};
use ibauth::{FixedClock, Step};
use ibauth_sandbox::{Counters, Lifetimes};
use serde_json::Value;

/// The hint every access-token refusal carries.
const ACCESS_TOKEN_HINT: &str = "check client_id, client_key_id";

#[tokio::test]
async fn a_key_other_than_the_registered_one_is_refused_at_access_token() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let mut client = client(config(sandbox.base_url()).private_key(other_key()), &clock);

    let err = client.connect().await.unwrap_err();
    let hint = assert_rejected(
        &err,
        Step::AccessToken,
        401,
        "Unauthorized: invalid_client: signature does not verify with the key registered for kid `main`",
    );
    assert!(hint.unwrap().contains(ACCESS_TOKEN_HINT));
    assert!(client.access_token().is_none());
    assert_eq!(
        sandbox.counters(),
        Counters {
            rejections: 1,
            ..Counters::default()
        }
    );
}

#[tokio::test]
async fn an_unknown_kid_is_refused_at_access_token() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let mut client = client(config(sandbox.base_url()).client_key_id("spare"), &clock);

    let err = client.connect().await.unwrap_err();
    let hint = assert_rejected(
        &err,
        Step::AccessToken,
        401,
        "Unauthorized: invalid_client: unknown kid `spare`",
    );
    assert!(hint.unwrap().contains(ACCESS_TOKEN_HINT));
    assert_eq!(sandbox.counters().rejections, 1);
    assert_eq!(sandbox.counters().access_tokens, 0);
}

#[tokio::test]
async fn an_unknown_client_id_is_refused_at_access_token() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let mut client = client(config(sandbox.base_url()).client_id("NOBODY"), &clock);

    let err = client.connect().await.unwrap_err();
    let hint = assert_rejected(
        &err,
        Step::AccessToken,
        401,
        "Unauthorized: invalid_client: unknown client_id",
    );
    assert!(hint.unwrap().contains(ACCESS_TOKEN_HINT));
    assert!(!err.is_transient());
    assert_eq!(sandbox.counters().access_tokens, 0);
}

#[tokio::test]
async fn an_sso_session_for_another_ip_is_forbidden() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let mut client = client(
        config(sandbox.base_url()).public_ip("10.1.2.3".parse().unwrap()),
        &clock,
    );

    let err = client.connect().await.unwrap_err();
    let hint = assert_rejected(
        &err,
        Step::SsoSession,
        403,
        "Forbidden: ip claim 10.1.2.3 does not match the request's source address 127.0.0.1",
    );
    assert!(hint.unwrap().contains("public_ip"), "{hint:?}");
    assert!(client.access_token().is_some());
    assert!(client.bearer_token().is_none());
    assert_eq!(
        sandbox.counters(),
        Counters {
            access_tokens: 1,
            rejections: 1,
            ..Counters::default()
        }
    );
}

#[tokio::test]
async fn an_unknown_credential_is_refused_at_sso_session() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let mut client = client(config(sandbox.base_url()).credential("mallory"), &clock);

    let err = client.connect().await.unwrap_err();
    let hint = assert_rejected(
        &err,
        Step::SsoSession,
        401,
        "Unauthorized: unknown credential for this client",
    );
    assert!(hint.unwrap().contains("credential"), "{hint:?}");
    // The message never echoes the credential that was tried.
    assert!(!err.to_string().contains("mallory"));
    assert_eq!(sandbox.counters().sso_sessions, 0);
    assert_eq!(sandbox.counters().rejections, 1);
}

#[tokio::test]
async fn an_expired_access_token_opens_no_sso_session() {
    let clock = clock();
    let lifetimes = Lifetimes::default();
    let sandbox = sandbox_with(&clock, lifetimes).await;
    let mut client = client(config(sandbox.base_url()), &clock);
    let ttl = lifetimes.access_token.as_secs();

    client.request_access_token().await.unwrap();
    assert_eq!(client.access_token().unwrap().expires_at, Some(T0 + ttl));

    // One second before expiry it still works.
    clock.set(T0 + ttl - 1);
    client.create_sso_session().await.unwrap();

    // Past expiry it does not.
    clock.set(T0 + ttl + 1);
    let err = client.create_sso_session().await.unwrap_err();
    assert_rejected(
        &err,
        Step::SsoSession,
        401,
        "Unauthorized: access token expired",
    );
    let counters = sandbox.counters();
    assert_eq!(counters.access_tokens, 1);
    assert_eq!(counters.sso_sessions, 1);
    assert_eq!(counters.rejections, 1);

    // A fresh access token fixes it.
    client.request_access_token().await.unwrap();
    client.create_sso_session().await.unwrap();
    assert_eq!(sandbox.counters().sso_sessions, 2);
}

#[tokio::test]
async fn an_expired_sso_session_fails_tickle_with_401_and_drops_the_brokerage_session() {
    let clock = clock();
    let lifetimes = Lifetimes {
        sso_session: Duration::from_secs(600),
        ..Lifetimes::default()
    };
    let sandbox = sandbox_with(&clock, lifetimes).await;
    let mut client = client(config(sandbox.base_url()), &clock);
    client.connect().await.unwrap();
    assert_eq!(client.bearer_token().unwrap().expires_at, T0 + 600);

    clock.advance(599);
    let tickle = client.tickle().await.unwrap();
    assert_eq!(tickle.sso_expires_ms, Some(1000));
    assert!(tickle.auth_status().authenticated);

    clock.advance(2);
    let err = client.tickle().await.unwrap_err();
    let hint = assert_rejected(&err, Step::Tickle, 401, "not authenticated");
    assert!(hint.unwrap().contains("log in again"), "{hint:?}");
    assert!(!sandbox.has_brokerage_session(USER));
    let err = client.auth_status().await.unwrap_err();
    assert_rejected(&err, Step::AuthStatus, 401, "not authenticated");

    // Logging in again works (the access token is still valid).
    assert!(client.connect().await.unwrap().status.authenticated);
    assert!(client.tickle().await.unwrap().auth_status().authenticated);
    let counters = sandbox.counters();
    assert_eq!(counters.sso_sessions, 2);
    assert_eq!(counters.tickles, 2);
    assert_eq!(counters.rejections, 2);
}

#[tokio::test]
async fn brokerage_endpoints_without_a_valid_bearer_answer_401_not_authenticated() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let http = http();
    let endpoints = [
        ("POST", "/v1/api/tickle"),
        ("GET", "/v1/api/tickle"),
        ("POST", "/v1/api/iserver/auth/status"),
        ("GET", "/v1/api/iserver/auth/status"),
        ("GET", "/v1/api/sso/validate"),
        ("POST", "/v1/api/logout"),
        ("POST", "/v1/api/iserver/auth/ssodh/init"),
    ];
    // No header, an unknown token, an empty token, and another scheme.
    let authorizations = [
        None,
        Some("Bearer 0123abcd"),
        Some("Bearer "),
        Some("Basic YTpi"),
    ];
    let mut refused = 0;
    for (method, path) in endpoints {
        for authorization in authorizations {
            let url = format!("{}{path}", sandbox.base_url());
            let mut request = match method {
                "GET" => http.reqwest().get(&url),
                _ => http.reqwest().post(&url),
            };
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            if path.ends_with("ssodh/init") {
                request = request
                    .header("content-type", "application/json")
                    .body(r#"{"publish":true,"compete":true}"#);
            }
            let response = request.send().await.unwrap();
            let what = format!("{method} {path} with {authorization:?}");
            assert_eq!(response.status().as_u16(), 401, "{what}");
            let content_type = response.headers()["content-type"].to_str().unwrap();
            assert_eq!(content_type, "application/json", "{what}");
            let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"error": "not authenticated", "statusCode": 401}),
                "{what}"
            );
            refused += 1;
        }
    }
    assert_eq!(
        sandbox.counters(),
        Counters {
            rejections: refused,
            ..Counters::default()
        }
    );
}

#[tokio::test]
async fn auth_status_before_ssodh_init_is_400_no_bridge_with_a_hint() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let mut client = client(config(sandbox.base_url()), &clock);
    client.request_access_token().await.unwrap();
    client.create_sso_session().await.unwrap();
    client.validate().await.unwrap();

    let err = client.auth_status().await.unwrap_err();
    let hint = assert_rejected(&err, Step::AuthStatus, 400, "Bad Request: no bridge");
    let hint = hint.unwrap();
    assert!(hint.contains("ssodh/init"), "{hint}");
    assert!(err.to_string().contains("hint:"), "{err}");
    assert_eq!(sandbox.counters().statuses, 0);
    assert_eq!(sandbox.counters().rejections, 1);

    // The tickle still works, and reports no brokerage session.
    let tickle = client.tickle().await.unwrap();
    let flags = tickle.auth_status();
    assert!(!flags.authenticated && !flags.competing && !flags.connected);

    assert!(client.init_brokerage_session().await.unwrap().authenticated);
    assert!(client.auth_status().await.unwrap().authenticated);
    assert_eq!(sandbox.counters().statuses, 1);
}

/// A sandbox on its own clock at [`T0`] and a client whose clock is `offset` seconds off.
async fn skewed(offset: i64) -> (ibauth_sandbox::Sandbox, ibauth::Oauth2Client) {
    let sandbox_clock = clock();
    let sandbox = sandbox(&sandbox_clock).await;
    let client_clock = Arc::new(FixedClock::new(T0.checked_add_signed(offset).unwrap()));
    let client = client(config(sandbox.base_url()), &client_clock);
    (sandbox, client)
}

#[tokio::test]
async fn a_stale_client_assertion_is_refused_as_expired() {
    // Ten minutes behind: exp = now − 600 + 20 is far outside the 60 s skew.
    let (sandbox, mut client) = skewed(-600).await;
    let err = client.connect().await.unwrap_err();
    let hint = assert_rejected(
        &err,
        Step::AccessToken,
        401,
        "Unauthorized: client assertion expired",
    );
    assert!(hint.is_some());
    assert_eq!(sandbox.counters().access_tokens, 0);

    // The edge of the window: exp (now − 80 + 20) + 60 s of skew is just in time.
    let (sandbox, mut client) = skewed(-80).await;
    client.request_access_token().await.unwrap();
    assert_eq!(sandbox.counters().access_tokens, 1);
    let (_sandbox, mut client) = skewed(-81).await;
    let err = client.request_access_token().await.unwrap_err();
    assert_rejected(
        &err,
        Step::AccessToken,
        401,
        "Unauthorized: client assertion expired",
    );
}

#[tokio::test]
async fn a_client_assertion_from_the_future_is_refused() {
    // Ten minutes ahead: iat = now + 600 − 10.
    let (sandbox, mut client) = skewed(600).await;
    let err = client.connect().await.unwrap_err();
    assert_rejected(
        &err,
        Step::AccessToken,
        401,
        "Unauthorized: client assertion issued in the future (iat); check the clock",
    );
    assert_eq!(sandbox.counters().access_tokens, 0);

    // The edge: iat = now + 70 − 10 is within the 60 s skew, one second more is not.
    let (_sandbox, mut client) = skewed(70).await;
    client.request_access_token().await.unwrap();
    let (_sandbox, mut client) = skewed(71).await;
    let err = client.request_access_token().await.unwrap_err();
    assert_rejected(
        &err,
        Step::AccessToken,
        401,
        "Unauthorized: client assertion issued in the future (iat); check the clock",
    );
}

#[tokio::test]
async fn an_sso_session_request_from_the_future_is_refused() {
    let sandbox_clock = clock();
    let client_clock = clock();
    let sandbox = sandbox(&sandbox_clock).await;
    let mut client = client(config(sandbox.base_url()), &client_clock);
    client.request_access_token().await.unwrap();

    // The client's clock jumps ten minutes ahead between the two steps.
    client_clock.advance(600);
    let err = client.create_sso_session().await.unwrap_err();
    assert_rejected(
        &err,
        Step::SsoSession,
        401,
        "Unauthorized: SSO session request issued in the future (iat); check the clock",
    );
    assert_eq!(sandbox.counters().sso_sessions, 0);
}

#[tokio::test]
async fn an_access_token_from_one_sandbox_means_nothing_to_another() {
    let clock = clock();
    let a = sandbox(&clock).await;
    let b = sandbox(&clock).await;
    let mut client = client(config(a.base_url()), &clock);
    client.request_access_token().await.unwrap();

    client.set_base_url(b.base_url()).unwrap();
    let err = client.create_sso_session().await.unwrap_err();
    assert_rejected(
        &err,
        Step::SsoSession,
        401,
        "Unauthorized: invalid access token",
    );
    assert_eq!(b.counters().rejections, 1);
    assert_eq!(a.counters().sso_sessions, 0);
}
