//! The authenticated WebSocket for both auth methods against the sandbox: `system` and `sts`
//! messages, heartbeats, `tic` keep-alives, and the refusals (wrong cookie, no token).

use std::time::Duration;

use ibauth::oauth1a::{DhGroup, Oauth1aClient, Oauth1aConfig};
use ibauth::secrecy::SecretString;
use ibauth::ws::{WsTarget, connect};
use ibauth::{Config, DecryptionKey, Error, Oauth2Client, SigningKey, Step};
use ibauth_sandbox::{ClientRegistration, ConsumerRegistration, RFC3526_PRIME_2048, Sandbox};
use serde_json::Value;

async fn next_json(ws: &mut ibauth::ws::IbkrWebSocket) -> Value {
    let text = tokio::time::timeout(Duration::from_secs(5), ws.next_text())
        .await
        .expect("a message within 5 s")
        .expect("socket open")
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn oauth1a_socket_gets_system_sts_heartbeats_and_answers_tic() {
    let (sig, enc) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let sandbox = Sandbox::builder()
        .register_consumer(ConsumerRegistration::new("WSCONSUME", &sig, &enc))
        .ws_heartbeat(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let (token, secret) = sandbox.issue_access_token("WSCONSUME", "wsuser").unwrap();
    let config = Oauth1aConfig::new(
        "WSCONSUME",
        token,
        SecretString::from(secret),
        sig,
        DecryptionKey::from_pem(&enc.to_pkcs8_pem()).unwrap(),
        DhGroup::from_hex(RFC3526_PRIME_2048, 2).unwrap(),
    )
    .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
    .unwrap()
    .ws_url(&format!(
        "{}/v1/api/ws",
        sandbox.base_url().replacen("http", "ws", 1)
    ))
    .unwrap();
    let mut client = Oauth1aClient::new(config).unwrap();
    client.connect().await.unwrap();
    let mut ws = client.connect_websocket().await.unwrap();

    let system = next_json(&mut ws).await;
    assert_eq!(system["topic"], "system");
    assert_eq!(system["success"], "wsuser");
    let sts = next_json(&mut ws).await;
    assert_eq!(sts["topic"], "sts");
    assert_eq!(sts["args"]["authenticated"], true);
    let hb = next_json(&mut ws).await;
    assert_eq!(hb["topic"], "system");
    assert!(hb["hb"].as_u64().unwrap() > 0);
    ws.send_text("tic").await.unwrap();
    loop {
        let message = next_json(&mut ws).await;
        if message["topic"] == "tic" {
            assert_eq!(message["alive"], true);
            break;
        }
    }
    ws.close().await;
    assert_eq!(sandbox.counters().ws_connections, 1);
}

#[tokio::test]
async fn oauth2_socket_over_tls_with_the_bearer() {
    let key = SigningKey::generate().unwrap();
    let sandbox = Sandbox::builder()
        .tls(true)
        .register(
            ClientRegistration::new("WSCLIENT")
                .key("k", &key)
                .credential("bob"),
        )
        .start()
        .await
        .unwrap();
    let config = Config::builder()
        .client_id("WSCLIENT")
        .client_key_id("k")
        .credential("bob")
        .private_key(key)
        .base_url(sandbox.base_url())
        .public_ip("127.0.0.1".parse().unwrap())
        .ca_pem(sandbox.ca_pem().unwrap())
        .build()
        .unwrap();
    let mut client = Oauth2Client::new(config).unwrap();
    client.connect().await.unwrap();
    let mut ws = client.connect_websocket().await.unwrap();
    assert_eq!(next_json(&mut ws).await["topic"], "system");
    assert_eq!(next_json(&mut ws).await["args"]["authenticated"], true);
    ws.close().await;
}

#[tokio::test]
async fn a_wrong_cookie_or_no_token_is_refused_before_the_upgrade() {
    let key = SigningKey::generate().unwrap();
    let sandbox = Sandbox::builder()
        .register(
            ClientRegistration::new("WSCLIENT")
                .key("k", &key)
                .credential("bob"),
        )
        .start()
        .await
        .unwrap();
    let config = Config::builder()
        .client_id("WSCLIENT")
        .client_key_id("k")
        .credential("bob")
        .private_key(key)
        .base_url(sandbox.base_url())
        .public_ip("127.0.0.1".parse().unwrap())
        .build()
        .unwrap();
    let mut client = Oauth2Client::new(config).unwrap();
    client.connect().await.unwrap();
    let bearer = client.authorizer(Step::WebSocket).unwrap().header();
    let url = url::Url::parse(&format!(
        "{}/v1/api/ws",
        sandbox.base_url().replacen("http", "ws", 1)
    ))
    .unwrap();
    let target = |session: &str, authorization| WsTarget {
        url: url.clone(),
        session: session.to_owned(),
        authorization,
        ca_pem: None,
        timeout: Duration::from_secs(5),
    };
    for (t, expected) in [
        (
            target("not-the-session", Some(bearer.clone())),
            "api cookie does not match",
        ),
        (target("whatever", None), "not authenticated"),
    ] {
        match connect(&t, Duration::from_secs(30)).await {
            Err(Error::Rejected {
                step,
                status,
                message,
                ..
            }) => {
                assert_eq!((step, status), (Step::WebSocket, 401));
                assert!(message.contains(expected), "{message}");
            }
            Err(other) => panic!("expected Rejected, got {other:?}"),
            Ok(_) => panic!("expected a refusal"),
        }
    }
    assert_eq!(sandbox.counters().ws_connections, 0);
}

#[tokio::test]
async fn the_socket_reconnects_when_the_session_changes() {
    let key = SigningKey::generate().unwrap();
    let sandbox = Sandbox::builder()
        .register(
            ClientRegistration::new("WSCLIENT")
                .key("k", &key)
                .credential("carol"),
        )
        .ws_heartbeat(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let config = Config::builder()
        .client_id("WSCLIENT")
        .client_key_id("k")
        .credential("carol")
        .private_key(key)
        .base_url(sandbox.base_url())
        .public_ip("127.0.0.1".parse().unwrap())
        .build()
        .unwrap();
    let mut client = Oauth2Client::new(config).unwrap();
    client.connect().await.unwrap();
    let mut ws = client.connect_websocket().await.unwrap();
    assert_eq!(next_json(&mut ws).await["topic"], "system");
    let first_session = client.tickle().await.unwrap().session;

    // IBKR's nightly reset gives the session a new id: the server closes the old socket and
    // the client reopens it with the new session's cookie.
    sandbox.rotate_session("carol");
    let mut systems = 0;
    while systems < 1 {
        let message = next_json(&mut ws).await;
        if message["topic"] == "system" && message.get("success").is_some() {
            systems += 1;
        }
    }
    assert_eq!(ws.reconnects(), 1);
    assert_eq!(sandbox.counters().ws_connections, 2);
    assert_ne!(client.tickle().await.unwrap().session, first_session);
    ws.close().await;
}

#[tokio::test]
async fn keep_alives_are_sent_on_the_interval() {
    let key = SigningKey::generate().unwrap();
    let sandbox = Sandbox::builder()
        .register(
            ClientRegistration::new("WSCLIENT")
                .key("k", &key)
                .credential("dave"),
        )
        .start()
        .await
        .unwrap();
    let config = Config::builder()
        .client_id("WSCLIENT")
        .client_key_id("k")
        .credential("dave")
        .private_key(key)
        .base_url(sandbox.base_url())
        .public_ip("127.0.0.1".parse().unwrap())
        .build()
        .unwrap();
    let mut client = Oauth2Client::new(config).unwrap();
    client.connect().await.unwrap();
    let target = WsTarget {
        url: url::Url::parse(&format!(
            "{}/v1/api/ws",
            sandbox.base_url().replacen("http", "ws", 1)
        ))
        .unwrap(),
        session: client.tickle().await.unwrap().session,
        authorization: Some(client.authorizer(Step::WebSocket).unwrap().header()),
        ca_pem: None,
        timeout: Duration::from_secs(5),
    };
    // Nothing is sent by hand: the sandbox's "tic" answers prove the keep-alives went out.
    let mut ws = connect(&target, Duration::from_millis(50)).await.unwrap();
    let mut answers = 0;
    while answers < 2 {
        if next_json(&mut ws).await["topic"] == "tic" {
            answers += 1;
        }
    }
    ws.close().await;
}
