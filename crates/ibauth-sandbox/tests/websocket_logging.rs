//! Nothing the library hands to a logging library holds a secret, whatever the level: a
//! subscriber records every event at TRACE from every target — tungstenite's and
//! tokio-tungstenite's `log` records included, with no cap — while both auth methods log in and
//! open the WebSocket (over TLS for OAuth 2.0) against the sandbox. The record is then scanned
//! for every token the sandbox issued, the OAuth 1.0a access token (the socket's `oauth_token`)
//! and its secret, the session ids (the `api` cookie) and the keys.
//!
//! tungstenite logs the raw handshake request at TRACE; the library writes the handshake itself
//! so that request never reaches it. This binary holds one test: the subscriber is global.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ibauth::oauth1a::{DhGroup, Oauth1aClient, Oauth1aConfig};
use ibauth::secrecy::{ExposeSecret, SecretString};
use ibauth::{Config, DecryptionKey, Oauth2Client, SigningKey};
use ibauth_sandbox::{ClientRegistration, ConsumerRegistration, RFC3526_PRIME_2048, Sandbox};

#[derive(Clone, Default)]
struct Record(Arc<Mutex<Vec<u8>>>);

impl Write for Record {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Record {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

async fn read_two(ws: &mut ibauth::ws::IbkrWebSocket) -> Vec<String> {
    let mut messages = Vec::new();
    for _ in 0..2 {
        let text = tokio::time::timeout(Duration::from_secs(5), ws.next_text())
            .await
            .expect("a message within 5 s")
            .expect("socket open")
            .unwrap();
        messages.push(text);
    }
    messages
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_any_log_target_even_uncapped_at_trace() {
    let record = Record::default();
    let writer = record.clone();
    // `init` also routes the `log` crate (tungstenite's logger) into this subscriber.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_target(true)
        .with_writer(move || writer.clone())
        .init();

    // OAuth 2.0 over TLS: the bearer goes in `Authorization`, the session in the cookie.
    let key = SigningKey::generate().unwrap();
    let oauth2 = Sandbox::builder()
        .tls(true)
        .register(
            ClientRegistration::new("LOGCLIENT")
                .key("k1", &key)
                .credential("loguser"),
        )
        .start()
        .await
        .unwrap();
    let config = Config::builder()
        .client_id("LOGCLIENT")
        .client_key_id("k1")
        .credential("loguser")
        .private_key(key.clone())
        .base_url(oauth2.base_url())
        .public_ip(common::LOCALHOST)
        .ca_pem(oauth2.ca_pem().unwrap().as_bytes().to_vec())
        .build()
        .unwrap();
    let mut client = Oauth2Client::new(config).unwrap();
    client.connect().await.unwrap();
    let mut sessions = vec![client.tickle().await.unwrap().session];
    let mut ws = client.connect_websocket().await.unwrap();
    let mut stream = read_two(&mut ws).await;
    ws.close().await;

    // OAuth 1.0a: the access token goes in the URL's query.
    let (sig, enc) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let oauth1a = Sandbox::builder()
        .register_consumer(ConsumerRegistration::new("LOGCONSUM", &sig, &enc))
        .start()
        .await
        .unwrap();
    let (token, secret) = oauth1a.issue_access_token("LOGCONSUM", "loguser").unwrap();
    let config = Oauth1aConfig::new(
        "LOGCONSUM",
        token.clone(),
        SecretString::from(secret.clone()),
        sig.clone(),
        DecryptionKey::from_pem(&enc.to_pkcs8_pem()).unwrap(),
        DhGroup::from_hex(RFC3526_PRIME_2048, 2).unwrap(),
    )
    .rest_url(&format!("{}/v1/api/", oauth1a.base_url()))
    .unwrap();
    let mut client = Oauth1aClient::new(config).unwrap();
    client.connect().await.unwrap();
    sessions.push(client.tickle().await.unwrap().session);
    let lst = client
        .live_session_token()
        .unwrap()
        .token()
        .expose_secret()
        .to_owned();
    let mut ws = client.connect_websocket().await.unwrap();
    stream.extend(read_two(&mut ws).await);
    ws.close().await;
    // Let the close frames be logged too.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logged = record.text();
    // The record is what it claims to be: tungstenite's TRACE frames, uncapped, and ours.
    assert!(
        logged.contains("tungstenite") && logged.contains("TRACE"),
        "tungstenite's TRACE lines were recorded:\n{logged}"
    );
    assert!(logged.contains("received frame"), "{logged}");
    assert_eq!(logged.matches("WebSocket connected").count(), 2, "{logged}");
    assert!(stream.iter().any(|m| m.contains("\"sts\"")), "{stream:?}");

    let mut secrets: Vec<(String, String)> = Vec::new();
    for t in oauth2
        .issued_tokens()
        .into_iter()
        .chain(oauth1a.issued_tokens())
    {
        secrets.push(("an issued token".into(), t));
    }
    secrets.push(("the OAuth 1.0a access token".into(), token));
    secrets.push(("the access-token secret".into(), secret));
    secrets.push(("the live session token".into(), lst));
    for s in sessions {
        secrets.push(("a session id".into(), s));
    }
    for pem in [key.to_pkcs8_pem(), sig.to_pkcs8_pem(), enc.to_pkcs8_pem()] {
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            secrets.push(("key material".into(), line.to_owned()));
        }
    }
    assert!(secrets.len() >= 8, "{} secrets", secrets.len());
    for (what, value) in &secrets {
        assert!(value.len() >= 16, "{what} is long enough to search for");
        assert!(!logged.contains(value.as_str()), "{what} reached the log");
    }
    assert!(
        !logged.contains("oauth_token="),
        "the socket's query reached the log"
    );
    assert!(!logged.contains("api="), "the cookie reached the log");
}
