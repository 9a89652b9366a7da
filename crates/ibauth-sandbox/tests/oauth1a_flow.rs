//! OAuth 1.0a (first party) end to end against the sandbox over real HTTP: live session token
//! by Diffie-Hellman, then the brokerage session through the same `BrokerageClient` as OAuth
//! 2.0, every call HMAC-SHA256 signed and verified; and the sandbox's rejections.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ibauth::oauth1a::{DhGroup, LstError, Oauth1aClient, Oauth1aConfig};
use ibauth::secrecy::SecretString;
use ibauth::{Authorizer, DecryptionKey, Error, FixedClock, SigningKey, Step};
use ibauth_sandbox::{ConsumerRegistration, Lifetimes, RFC3526_PRIME_2048, Sandbox};

const CONSUMER: &str = "ABCDEFGHI";
const USER: &str = "alice";

struct Keys {
    signature: SigningKey,
    encryption: SigningKey,
    other: SigningKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        signature: SigningKey::generate().unwrap(),
        encryption: SigningKey::generate().unwrap(),
        other: SigningKey::generate().unwrap(),
    })
}

fn decryption(key: &SigningKey) -> DecryptionKey {
    DecryptionKey::from_pem(&key.to_pkcs8_pem()).unwrap()
}

async fn sandbox_with(clock: Option<Arc<FixedClock>>) -> Sandbox {
    let k = keys();
    let mut builder = Sandbox::builder()
        .register_consumer(ConsumerRegistration::new(
            CONSUMER,
            &k.signature,
            &k.encryption,
        ))
        .register_consumer(ConsumerRegistration::new(
            "TESTCONS",
            &k.signature,
            &k.encryption,
        ))
        .lifetimes(Lifetimes {
            sso_session: Duration::from_secs(3600),
            ..Lifetimes::default()
        });
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    builder.start().await.unwrap()
}

fn config(sandbox: &Sandbox, consumer: &str) -> Oauth1aConfig {
    let k = keys();
    let (token, secret) = sandbox.issue_access_token(consumer, USER).unwrap();
    Oauth1aConfig::new(
        consumer,
        token,
        SecretString::from(secret),
        k.signature.clone(),
        decryption(&k.encryption),
        DhGroup::from_hex(RFC3526_PRIME_2048, 2).unwrap(),
    )
    .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
    .unwrap()
}

fn http_client() -> ibauth::HttpClient {
    ibauth::HttpClient::new(Duration::from_secs(5), None).unwrap()
}

fn rejected(err: &Error) -> (Step, u16, &str) {
    match err {
        Error::Rejected {
            step,
            status,
            message,
            ..
        } => (*step, *status, message.as_str()),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn full_flow_through_the_shared_brokerage_client() {
    let sandbox = sandbox_with(None).await;
    let mut client = Oauth1aClient::new(config(&sandbox, CONSUMER)).unwrap();
    let status = client.connect().await.unwrap().status;
    assert!(status.authenticated && status.connected && !status.competing);
    let lst = client.live_session_token().unwrap();
    assert!(lst.expires_at_ms > 0);
    assert!(
        !format!("{lst:?}").contains(ibauth::secrecy::ExposeSecret::expose_secret(lst.token()))
    );
    let validation = client.validate().await.unwrap();
    assert_eq!(validation.user_name.as_deref(), Some(USER));
    let tickle = client.tickle().await.unwrap();
    assert!(tickle.auth_status().authenticated);
    assert!(client.auth_status().await.unwrap().authenticated);
    assert!(client.logout().await.unwrap().status);
    let c = sandbox.counters();
    assert_eq!(
        (
            c.live_session_tokens,
            c.inits,
            c.validates,
            c.tickles,
            c.statuses,
            c.logouts,
            c.rejections
        ),
        (1, 1, 1, 1, 1, 1, 0)
    );
    assert!(!sandbox.has_brokerage_session(USER));
    assert!(matches!(client.tickle().await, Err(Error::NotReady { .. })));
}

#[tokio::test]
async fn fifty_logins_in_a_row_never_mismatch() {
    // Random DH secrets on both sides: about half of all K need Java's sign byte.
    let sandbox = sandbox_with(None).await;
    let mut client = Oauth1aClient::new(config(&sandbox, CONSUMER)).unwrap();
    for i in 0..50 {
        client
            .request_live_session_token()
            .await
            .unwrap_or_else(|e| panic!("login {i}: {e}"));
        client.tickle().await.unwrap();
    }
    assert_eq!(sandbox.counters().live_session_tokens, 50);
    assert_eq!(sandbox.counters().rejections, 0);
}

#[tokio::test]
async fn testcons_works_with_test_realm() {
    let sandbox = sandbox_with(None).await;
    let mut client = Oauth1aClient::new(config(&sandbox, "TESTCONS")).unwrap();
    assert!(client.connect().await.unwrap().status.authenticated);
}

#[tokio::test]
async fn unknown_consumer_and_wrong_realm_get_ibkrs_invalid_consumer() {
    let sandbox = sandbox_with(None).await;
    let k = keys();
    let (token, secret) = sandbox.issue_access_token(CONSUMER, USER).unwrap();
    let unknown = Oauth1aConfig::new(
        "ZZZZZZZZZ",
        token,
        SecretString::from(secret),
        k.signature.clone(),
        decryption(&k.encryption),
        DhGroup::from_hex(RFC3526_PRIME_2048, 2).unwrap(),
    )
    .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
    .unwrap();
    for config in [
        unknown,
        config(&sandbox, CONSUMER).realm("test_realm"),
        config(&sandbox, "TESTCONS").realm("limited_poa"),
    ] {
        let err = Oauth1aClient::new(config)
            .unwrap()
            .connect()
            .await
            .unwrap_err();
        let (step, status, message) = rejected(&err);
        assert_eq!((step, status), (Step::LiveSessionToken, 401));
        assert_eq!(message, "id: 1, error: invalid consumer");
        assert!(
            err.to_string()
                .contains("hint: consumer key unknown or not active yet"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_wrong_signature_key_is_refused() {
    let sandbox = sandbox_with(None).await;
    let k = keys();
    let (token, secret) = sandbox.issue_access_token(CONSUMER, USER).unwrap();
    let config = Oauth1aConfig::new(
        CONSUMER,
        token,
        SecretString::from(secret),
        k.other.clone(),
        decryption(&k.encryption),
        DhGroup::from_hex(RFC3526_PRIME_2048, 2).unwrap(),
    )
    .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
    .unwrap();
    let err = Oauth1aClient::new(config)
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        rejected(&err),
        (Step::LiveSessionToken, 401, "invalid signature")
    );
}

#[tokio::test]
async fn a_wrong_encryption_key_fails_before_sending_and_says_what_to_check() {
    let sandbox = sandbox_with(None).await;
    let k = keys();
    let (token, secret) = sandbox.issue_access_token(CONSUMER, USER).unwrap();
    let config = Oauth1aConfig::new(
        CONSUMER,
        token,
        SecretString::from(secret),
        k.signature.clone(),
        decryption(&k.other),
        DhGroup::from_hex(RFC3526_PRIME_2048, 2).unwrap(),
    );
    let err = Oauth1aClient::new(config).unwrap_err();
    assert!(matches!(
        err,
        Error::Lst {
            step: Step::LiveSessionToken,
            source: LstError::SecretDoesNotDecrypt
        }
    ));
    assert!(err.to_string().contains("encryption key"));
    assert_eq!(sandbox.counters().live_session_tokens, 0);
}

#[tokio::test]
async fn an_unknown_access_token_is_refused_like_ibkr() {
    let sandbox = sandbox_with(None).await;
    let k = keys();
    let (_, secret) = sandbox.issue_access_token(CONSUMER, USER).unwrap();
    let config = Oauth1aConfig::new(
        CONSUMER,
        "00000000000000000000",
        SecretString::from(secret),
        k.signature.clone(),
        decryption(&k.encryption),
        DhGroup::from_hex(RFC3526_PRIME_2048, 2).unwrap(),
    )
    .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
    .unwrap();
    let err = Oauth1aClient::new(config)
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    let (_, status, message) = rejected(&err);
    assert_eq!(status, 401);
    assert!(
        message.starts_with("LST failed, error: No access secret key found"),
        "{message}"
    );
}

#[tokio::test]
async fn a_replayed_nonce_is_refused() {
    let sandbox = sandbox_with(None).await;
    let mut client = Oauth1aClient::new(config(&sandbox, CONSUMER)).unwrap();
    client.connect().await.unwrap();
    let url = client.brokerage().rest_base().join("tickle").unwrap();
    let header = client
        .authorizer(Step::Tickle)
        .unwrap()
        .authorization(&axum::http::Method::POST, &url)
        .unwrap();
    let http = http_client();
    let send = || {
        http.reqwest()
            .post(url.clone())
            .header("authorization", header.clone())
            .header("content-length", "0")
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    let again = send().await.unwrap();
    assert_eq!(again.status(), 401);
    assert!(again.text().await.unwrap().contains("nonce already used"));
    // The client signs afresh on every call, so its own calls never collide.
    for _ in 0..5 {
        client.tickle().await.unwrap();
    }
}

#[tokio::test]
async fn a_stale_timestamp_is_refused() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sandbox_clock = Arc::new(FixedClock::new(now));
    let sandbox = sandbox_with(Some(sandbox_clock.clone())).await;
    let client_clock = Arc::new(FixedClock::new(now - 600));
    let mut client = Oauth1aClient::with_clock(config(&sandbox, CONSUMER), client_clock).unwrap();
    let err = client.connect().await.unwrap_err();
    assert_eq!(
        rejected(&err),
        (Step::LiveSessionToken, 401, "timestamp out of range")
    );
}

#[tokio::test]
async fn an_expired_live_session_token_is_refused() {
    let now = 1_800_000_000;
    let clock = Arc::new(FixedClock::new(now));
    let sandbox = sandbox_with(Some(clock.clone())).await;
    let mut client = Oauth1aClient::with_clock(config(&sandbox, CONSUMER), clock.clone()).unwrap();
    client.connect().await.unwrap();
    clock.advance(3601);
    let err = client.tickle().await.unwrap_err();
    assert_eq!(
        rejected(&err),
        (Step::Tickle, 401, "live session token expired")
    );
    // A new LST brings the session back.
    client.connect().await.unwrap();
    assert!(client.tickle().await.unwrap().auth_status().authenticated);
}

#[tokio::test]
async fn a_signature_over_another_url_is_refused() {
    // The sandbox verifies against its advertised URL, so a request signed for another host
    // (or path) does not verify.
    let sandbox = sandbox_with(None).await;
    let mut client = Oauth1aClient::new(config(&sandbox, CONSUMER)).unwrap();
    client.connect().await.unwrap();
    let signed_for = url::Url::parse("https://api.ibkr.com/v1/api/tickle").unwrap();
    let header = client
        .authorizer(Step::Tickle)
        .unwrap()
        .authorization(&axum::http::Method::POST, &signed_for)
        .unwrap();
    let http = http_client();
    let reply = http
        .reqwest()
        .post(format!("{}/v1/api/tickle", sandbox.base_url()))
        .header("authorization", header)
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    assert!(reply.text().await.unwrap().contains("invalid signature"));
}

#[tokio::test]
async fn a_wrong_dh_prime_gives_a_validation_mismatch_that_says_what_to_check() {
    let sandbox = sandbox_with(None).await;
    let k = keys();
    let (token, secret) = sandbox.issue_access_token(CONSUMER, USER).unwrap();
    // Another odd 2048-bit modulus: both sides compute, and the LSTs differ.
    let wrong_prime = format!("{}fd", &RFC3526_PRIME_2048[..RFC3526_PRIME_2048.len() - 2]);
    let config = Oauth1aConfig::new(
        CONSUMER,
        token,
        SecretString::from(secret),
        k.signature.clone(),
        decryption(&k.encryption),
        DhGroup::from_hex(&wrong_prime, 2).unwrap(),
    )
    .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
    .unwrap();
    let err = Oauth1aClient::new(config)
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Lst {
                step: Step::LiveSessionToken,
                source: LstError::Mismatch
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("DH prime") && text.contains("encryption key"),
        "{text}"
    );
}

#[tokio::test]
async fn a_live_session_token_request_signed_with_a_wrong_prepend_is_refused() {
    use ibauth::oauth1a::{Nonce, Signer, authorize, oauth_params};
    let sandbox = sandbox_with(None).await;
    let (token, _) = sandbox.issue_access_token(CONSUMER, USER).unwrap();
    let url = format!("{}/v1/api/oauth/live_session_token", sandbox.base_url());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let params = oauth_params(
        CONSUMER,
        Some(&token),
        &Nonce::fresh(now),
        "RSA-SHA256",
        &[("diffie_hellman_challenge", "02")],
    );
    let wrong = SecretString::from("00".repeat(32));
    let signer = Signer::RsaSha256 {
        key: &keys().signature,
        prepend: &wrong,
    };
    let header = authorize(&signer, "limited_poa", "POST", &url, &params);
    let http = http_client();
    let reply = http
        .reqwest()
        .post(&url)
        .header("authorization", header)
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 401);
    assert!(reply.text().await.unwrap().contains("invalid signature"));
    assert_eq!(sandbox.counters().live_session_tokens, 0);
}
