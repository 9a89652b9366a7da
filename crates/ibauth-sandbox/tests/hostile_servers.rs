//! The client against hostile servers: loopback servers written here answer garbage, huge and
//! endless bodies, a trickle, redirects to another host, escape codes, absurd token lifetimes
//! and out-of-range Diffie-Hellman values, over HTTP and the WebSocket. Each case must end in a
//! clean error (or a clamped value) quickly, with memory bounded, without a panic, and without a
//! tight loop: every server counts what it received and sent.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{USER, assert_rejected, client, clock, config, sandbox};
use ibauth::oauth1a::{
    DhGroup, DhSecret, LstError, Nonce, Oauth1aClient, Oauth1aConfig, RFC3526_PRIME_2048, Signer,
    authorize, live_session_token, lst_signature, oauth_params, prepend,
};
use ibauth::pacing::PacingRules;
use ibauth::policy::Policy;
use ibauth::secrecy::SecretString;
use ibauth::ws::WsTarget;
use ibauth::{DecryptionKey, Error, Oauth2Client, Session, SigningKey, Step};
use ibauth_sandbox::{ConsumerRegistration, Sandbox};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1024 * 1024;

/// One request as the server read it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    /// Path and query.
    target: String,
    /// Lowercase names.
    headers: Vec<(String, String)>,
}

impl Seen {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does with a request.
enum Reply {
    /// A complete answer.
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// Declares `declared` bytes, then sends zeros until the client hangs up.
    Huge { declared: u64 },
    /// A chunked body that never ends.
    Endless,
    /// A body of `len` bytes, one byte per `every`.
    Trickle { every: Duration, len: usize },
    /// Bytes that are not HTTP, then the connection closed.
    Raw(&'static [u8]),
}

fn json_reply(status: u16, value: Value) -> Reply {
    Reply::Full {
        status,
        headers: vec![("Content-Type", "application/json".into())],
        body: value.to_string().into_bytes(),
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A loopback HTTP/1.1 server: one request per connection, answered by the handler.
struct Server {
    base: String,
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Bytes of answer bodies the kernel accepted (the client's socket buffers included).
    sent: Arc<AtomicU64>,
}

impl Server {
    async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let (log, counter) = (seen.clone(), sent.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (handler, log, counter) = (handler.clone(), log.clone(), counter.clone());
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut stream).await else {
                        return;
                    };
                    log.lock().unwrap().push(request.clone());
                    answer(&mut stream, handler(&request), &counter).await;
                });
            }
        });
        Self {
            base: format!("http://{addr}"),
            addr,
            seen,
            sent,
        }
    }

    fn count(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path() == path)
            .count()
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

/// Reads one request head (at most 64 KiB) and its `Content-Length` body.
async fn read_request(stream: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
        .min(1 << 20);
    while buf.len() < end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(Seen {
        method,
        target,
        headers,
    })
}

async fn answer(stream: &mut TcpStream, reply: Reply, sent: &AtomicU64) {
    let zeros = vec![0u8; 64 * 1024];
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status} Status\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            if stream.write_all(&body).await.is_ok() {
                sent.fetch_add(body.len() as u64, Ordering::SeqCst);
            }
        }
        Reply::Huge { declared } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let mut left = declared;
            while left > 0 {
                let n = left.min(zeros.len() as u64);
                if stream.write_all(&zeros[..n as usize]).await.is_err() {
                    break;
                }
                sent.fetch_add(n, Ordering::SeqCst);
                left -= n;
            }
        }
        Reply::Endless => {
            let head =
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n";
            let _ = stream.write_all(head.as_bytes()).await;
            let mut chunk = format!("{:x}\r\n", zeros.len()).into_bytes();
            chunk.extend_from_slice(&zeros);
            chunk.extend_from_slice(b"\r\n");
            while stream.write_all(&chunk).await.is_ok() {
                sent.fetch_add(zeros.len() as u64, Ordering::SeqCst);
            }
        }
        Reply::Trickle { every, len } => {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
            let _ = stream.write_all(head.as_bytes()).await;
            for _ in 0..len {
                tokio::time::sleep(every).await;
                if stream.write_all(b" ").await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
        }
        Reply::Raw(bytes) => {
            let _ = stream.write_all(bytes).await;
        }
    }
    let _ = stream.shutdown().await;
}

/// No control character (ESC, BEL, CR, …) in `text`: nothing a terminal would act on.
#[track_caller]
fn assert_printable(text: &str) {
    assert!(
        !text.chars().any(char::is_control),
        "control characters in: {text:?}"
    );
}

/// Runs `f` and checks it finished within `limit`.
async fn within<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = Instant::now();
    let out = tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("still running after {limit:?}"));
    (out, started.elapsed())
}

fn too_large(err: &Error, step: Step, limit: u64) {
    match err {
        Error::Protocol {
            step: s, detail, ..
        } => {
            assert_eq!(*s, step, "{err}");
            assert!(
                detail.contains(&format!("larger than {limit} bytes")),
                "{detail}"
            );
        }
        other => panic!("expected a refused oversized answer at {step:?}, got {other:?}"),
    }
}

// --- garbage, huge, endless and slow answers ---

#[tokio::test]
async fn garbage_instead_of_http_is_a_clean_network_error() {
    let server = Server::start(|_| Reply::Raw(b"\x00\xffSSH-2.0-nope\r\n\x1b[2J\r\n\r\n")).await;
    let mut client = client(config(&server.base), &clock());
    let (err, _) = within(Duration::from_secs(5), client.connect()).await;
    let err = err.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Network {
                step: Step::AccessToken,
                ..
            }
        ),
        "{err:?}"
    );
    assert_printable(&err.to_string());
    assert_eq!(server.count("/oauth2/api/v1/token"), 1, "no retry loop");
}

#[tokio::test]
async fn a_declared_gibibyte_is_refused_before_it_is_read() {
    let server = Server::start(|_| Reply::Huge { declared: 1 << 30 }).await;
    let mut client = client(config(&server.base), &clock());
    let (err, took) = within(Duration::from_secs(10), client.connect()).await;
    too_large(&err.unwrap_err(), Step::AccessToken, 16 * MIB);
    // What the server got rid of fits in the socket buffers: the body was not read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.sent() < 32 * MIB, "{} bytes sent", server.sent());
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn an_endless_chunked_answer_ends_at_the_default_cap() {
    let server = Server::start(|_| Reply::Endless).await;
    let mut client = client(config(&server.base), &clock());
    let (err, took) = within(Duration::from_secs(20), client.connect()).await;
    too_large(&err.unwrap_err(), Step::AccessToken, 16 * MIB);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = server.sent();
    assert!(
        (16 * MIB..48 * MIB).contains(&sent),
        "read up to the cap and stopped: {sent} bytes sent"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_eq!(server.count("/oauth2/api/v1/token"), 1);
}

#[tokio::test]
async fn the_cap_is_configurable_per_session() {
    let server = Server::start(|_| Reply::Endless).await;
    let session = Session::from_client(client(config(&server.base), &clock()))
        .no_store()
        .max_body(64 * 1024)
        .build()
        .unwrap();
    let (err, _) = within(Duration::from_secs(10), session.connect()).await;
    too_large(&err.unwrap_err(), Step::AccessToken, 64 * 1024);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(server.sent() < 16 * MIB, "{} bytes sent", server.sent());
    assert_eq!(session.http().max_body(), 64 * 1024);

    // And from the settings (`max_body` / IBAUTH_MAX_BODY).
    let policy = Policy::load_with_env(None, &[("IBAUTH_MAX_BODY", "32 KiB")]).unwrap();
    let session = Session::from_client(client(config(&server.base), &clock()))
        .no_store()
        .policy(policy)
        .build()
        .unwrap();
    let (err, _) = within(Duration::from_secs(10), session.connect()).await;
    too_large(&err.unwrap_err(), Step::AccessToken, 32 * 1024);
}

#[tokio::test]
async fn a_public_ip_service_that_never_stops_or_sends_a_gibibyte_is_refused() {
    let endless = Server::start(|_| Reply::Endless).await;
    let huge = Server::start(|_| Reply::Huge { declared: 1 << 30 }).await;
    let escapes = Server::start(|_| Reply::Full {
        status: 200,
        headers: vec![],
        body: b"\x1b]0;owned\x07 1.2.3.4".to_vec(),
    })
    .await;
    let config = common::config_without_public_ip(&endless.base).ip_lookup_urls([
        format!("{}/ip", endless.base),
        format!("{}/ip", huge.base),
        format!("{}/ip", escapes.base),
    ]);
    let mut client = client(config, &clock());
    client.http().limit_body(1024 * 1024);
    let (err, took) = within(Duration::from_secs(20), client.public_ip()).await;
    let err = err.unwrap_err();
    let text = err.to_string();
    match &err {
        Error::PublicIp { detail } => {
            assert_eq!(
                detail.matches("larger than 1048576 bytes").count(),
                2,
                "{detail}"
            );
            assert!(detail.contains("not an IPv4 address"), "{detail}");
        }
        other => panic!("expected Error::PublicIp, got {other:?}"),
    }
    assert_printable(&text);
    assert!(took < Duration::from_secs(10), "{took:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(endless.sent() < 32 * MIB && huge.sent() < 32 * MIB);
    assert_eq!((endless.count("/ip"), huge.count("/ip")), (1, 1));
}

#[tokio::test]
async fn a_trickling_answer_ends_within_the_timeout() {
    let server = Server::start(|_| Reply::Trickle {
        every: Duration::from_secs(1),
        len: 1000,
    })
    .await;
    let timeout = Duration::from_millis(1500);
    let mut client = client(config(&server.base).timeout(timeout), &clock());
    let (err, took) = within(Duration::from_secs(10), client.connect()).await;
    let err = err.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { step: Step::AccessToken, timeout: t } if t == timeout),
        "{err:?}"
    );
    assert!(
        took >= timeout && took < timeout + Duration::from_secs(2),
        "{took:?}"
    );
    assert!(server.sent() <= 3, "{} bytes trickled", server.sent());
}

// --- redirects and escape codes ---

#[tokio::test]
async fn redirects_are_never_followed_and_the_bearer_stays_with_its_host() {
    let elsewhere = Server::start(|_| json_reply(200, json!({"session": "stolen"}))).await;
    let location = format!("{}/v1/api/tickle", elsewhere.base);
    let redirecting = Server::start(move |_| Reply::Full {
        status: 302,
        headers: vec![("Location", location.clone())],
        body: vec![],
    })
    .await;

    // A real login on the sandbox; then the host moves to one that redirects.
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let mut client = client(config(sandbox.base_url()), &clock);
    client.connect().await.unwrap();
    let bearer = format!(
        "Bearer {}",
        ibauth::secrecy::ExposeSecret::expose_secret(&client.bearer_token().unwrap().token)
    );
    client.set_base_url(&redirecting.base).unwrap();
    let err = client.tickle().await.unwrap_err();
    assert_rejected(&err, Step::Tickle, 302, "(empty body)");
    let seen = redirecting.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("authorization"), Some(bearer.as_str()));

    // The token request (client assertion in the body) and the WebSocket handshake too.
    let mut fresh = common::client(config(&redirecting.base), &clock);
    let err = fresh.request_access_token().await.unwrap_err();
    assert_rejected(&err, Step::AccessToken, 302, "(empty body)");
    let target = WsTarget {
        url: format!(
            "ws://{}/v1/api/ws?oauth_token=SECRETTOKEN",
            redirecting.addr
        )
        .parse()
        .unwrap(),
        session: "SESSIONCOOKIE".into(),
        authorization: client.authorizer(Step::WebSocket).ok().map(|a| a.header()),
        ca_pem: None,
        timeout: Duration::from_secs(5),
    };
    let err = ibauth::ws::connect(&target, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_rejected(&err, Step::WebSocket, 302, "(empty body)");
    assert_eq!(redirecting.requests().len(), 3);
    assert_eq!(
        elsewhere.requests().len(),
        0,
        "nothing reached the redirect target"
    );
}

#[tokio::test]
async fn escape_codes_from_the_server_never_reach_an_error_message() {
    const NASTY: &str = "\u{1b}[2J\u{1b}]0;owned\u{7}\u{9b}31m bad\r\nX-Injected: 1";
    let server = Server::start(|seen| match seen.path() {
        "/oauth2/api/v1/token" => json_reply(401, json!({ "error": NASTY })),
        "/plain" => Reply::Full {
            status: 500,
            headers: vec![],
            body: NASTY.as_bytes().to_vec(),
        },
        _ => json_reply(
            403,
            json!({"type": "about:blank", "title": NASTY, "detail": NASTY}),
        ),
    })
    .await;
    let mut client = client(config(&server.base), &clock());
    let err = client.request_access_token().await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    let text = err.to_string();
    assert_printable(&text);
    assert!(text.contains("bad"), "{text}");

    let target = |path: &str| WsTarget {
        url: format!("ws://{}{path}", server.addr).parse().unwrap(),
        session: "s".into(),
        authorization: None,
        ca_pem: None,
        timeout: Duration::from_secs(5),
    };
    for path in ["/plain", "/v1/api/ws"] {
        let err = ibauth::ws::connect(&target(path), Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Rejected { .. }), "{err:?}");
        assert_printable(&err.to_string());
        assert!(err.to_string().contains("bad"), "{err}");
    }
}

// --- absurd token lifetimes ---

/// What a fake IBKR says about lifetimes.
#[derive(Clone)]
struct Lifetimes {
    expires_in: Value,
    validate_expires_ms: Value,
    tickle_sso_expires_ms: Value,
}

/// IBKR's OAuth 2.0 endpoints, answering with `lifetimes` and not checking anything.
fn fake_oauth2(lifetimes: Lifetimes) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    let flags = json!({"authenticated": true, "competing": false, "connected": true});
    move |seen| match (seen.method.as_str(), seen.path()) {
        ("POST", "/oauth2/api/v1/token") => json_reply(
            200,
            json!({"access_token": "hostile-access", "token_type": "Bearer",
                   "scope": "sso-sessions.write", "expires_in": lifetimes.expires_in}),
        ),
        ("POST", "/gw/api/v1/sso-sessions") => json_reply(
            200,
            json!({"access_token": "hostile-bearer", "active": true, "token_type": "Bearer"}),
        ),
        ("GET", "/v1/api/sso/validate") => json_reply(
            200,
            json!({"USER_ID": 7, "RESULT": true, "EXPIRES": lifetimes.validate_expires_ms}),
        ),
        ("POST", "/v1/api/iserver/auth/ssodh/init" | "/v1/api/iserver/auth/status") => {
            json_reply(200, flags.clone())
        }
        ("POST", "/v1/api/tickle") => json_reply(
            200,
            json!({"session": "hostile-session", "ssoExpires": lifetimes.tickle_sso_expires_ms,
                   "iserver": {"authStatus": flags}}),
        ),
        ("POST", "/v1/api/logout") => json_reply(200, json!({"status": true})),
        _ => json_reply(404, json!({"error": "no such endpoint"})),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

const MIN_LIFE: u64 = ibauth::MIN_TOKEN_LIFETIME.as_secs();
const MAX_LIFE: u64 = ibauth::MAX_TOKEN_LIFETIME.as_secs();

#[tokio::test]
async fn absurd_oauth2_lifetimes_are_clamped_without_overflow() {
    let absurd = [
        json!(0),
        json!(1),
        json!(u64::MAX),
        json!("18446744073709551615"),
        json!(1e300),
        json!(-1),
        json!("soon"),
    ];
    for value in absurd {
        let server = Server::start(fake_oauth2(Lifetimes {
            expires_in: value.clone(),
            validate_expires_ms: value.clone(),
            tickle_sso_expires_ms: value.clone(),
        }))
        .await;
        let mut client = Oauth2Client::new(config(&server.base).build().unwrap()).unwrap();
        // A debug build panicked here on `now + expires_in` before the clamp.
        client.connect().await.unwrap();
        client.tickle().await.unwrap();
        let now = now();
        let access = client.access_token().unwrap();
        if let Some(expires_at) = access.expires_at {
            let life = expires_at - access.obtained_at;
            assert!((MIN_LIFE..=MAX_LIFE).contains(&life), "{value}: {life}");
        } else {
            assert!(
                !value.is_u64() && value.as_f64().is_none_or(|f| f < 0.0),
                "{value}: a number must give an expiry"
            );
        }
        let bearer = client.bearer_token().unwrap();
        assert!(
            bearer.expires_at <= now + MAX_LIFE,
            "{value}: {}",
            bearer.expires_at
        );
    }
}

/// Runs a session's keep-alive over `base` for `run_for`; the final status (it fails the test
/// if the keep-alive panicked).
async fn keep_alive(base: &str, margin: Duration, run_for: Duration) -> ibauth::session::Status {
    let client = Oauth2Client::new(config(base).build().unwrap()).unwrap();
    run_keep_alive(Box::new(client), margin, run_for).await
}

async fn run_keep_alive(
    client: Box<dyn ibauth::Client>,
    margin: Duration,
    run_for: Duration,
) -> ibauth::session::Status {
    let session = Session::from_client(client)
        .no_store()
        .policy(Policy {
            tickle_interval: Duration::from_millis(100),
            jitter: Duration::from_millis(10),
            renew_margin: margin,
            // Unpaced, so nothing but the renewal spacing can hold a loop back.
            pacing: PacingRules::unlimited(),
            ..Policy::default()
        })
        .build()
        .unwrap();
    let running = session.keep_alive().unwrap();
    tokio::time::sleep(run_for).await;
    running
        .shutdown()
        .await
        .expect("the keep-alive did not panic")
}

#[tokio::test]
async fn tokens_that_expire_at_once_do_not_loop_the_keep_alive() {
    // Before the spacing, this server drew ~20 token requests a second from the keep-alive.
    let server = Server::start(fake_oauth2(Lifetimes {
        expires_in: json!(0),
        validate_expires_ms: json!(0),
        tickle_sso_expires_ms: json!(0),
    }))
    .await;
    let status = keep_alive(
        &server.base,
        Duration::from_secs(600),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(
        server.count("/oauth2/api/v1/token"),
        1,
        "the login's only: the next renewal waits half the 10 min margin"
    );
    assert_eq!(server.count("/gw/api/v1/sso-sessions"), 1);
    assert!(status.tickles >= 10, "the tickle loop went on: {status:?}");

    // A 2 s margin: renewals at most once a second.
    let server = Server::start(fake_oauth2(Lifetimes {
        expires_in: json!(0),
        validate_expires_ms: json!(0),
        tickle_sso_expires_ms: json!(0),
    }))
    .await;
    let status = keep_alive(
        &server.base,
        Duration::from_secs(2),
        Duration::from_millis(3500),
    )
    .await;
    let tokens = server.count("/oauth2/api/v1/token");
    assert!(tokens <= 5, "{tokens} token requests in 3.5 s");
    assert!(
        (1..=4).contains(&status.renewals),
        "renewals go on, once a second at most: {status:?}"
    );
}

#[tokio::test]
async fn lifetimes_beyond_u64_do_not_panic_the_keep_alive() {
    let server = Server::start(fake_oauth2(Lifetimes {
        expires_in: json!(u64::MAX),
        validate_expires_ms: json!(u64::MAX),
        tickle_sso_expires_ms: json!(1e300),
    }))
    .await;
    let status = keep_alive(
        &server.base,
        Duration::from_secs(600),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(server.count("/oauth2/api/v1/token"), 1);
    let now = now();
    for token in &status.tokens {
        assert!(token.expires_at <= now + MAX_LIFE, "{token:?}");
    }
}

// --- OAuth 1.0a: the live session token from a hostile server ---

struct Consumer {
    signature: SigningKey,
    encryption: SigningKey,
    token: String,
    secret: String,
    _portal: Sandbox,
}

/// A consumer with an access token and secret issued by a sandbox (standing in for IBKR's
/// portal); the hostile server below does the live session token.
async fn consumer() -> Consumer {
    let signature = SigningKey::generate().unwrap();
    let encryption = SigningKey::generate().unwrap();
    let portal = Sandbox::builder()
        .register_consumer(ConsumerRegistration::new(
            "HOSTILE01",
            &signature,
            &encryption,
        ))
        .start()
        .await
        .unwrap();
    let (token, secret) = portal.issue_access_token("HOSTILE01", USER).unwrap();
    Consumer {
        signature,
        encryption,
        token,
        secret,
        _portal: portal,
    }
}

impl Consumer {
    fn decryption_key(&self) -> DecryptionKey {
        DecryptionKey::from_pem(&self.encryption.to_pkcs8_pem()).unwrap()
    }

    fn client(&self, base: &str) -> Oauth1aClient {
        let config = Oauth1aConfig::new(
            "HOSTILE01",
            &self.token,
            SecretString::from(self.secret.clone()),
            self.signature.clone(),
            self.decryption_key(),
            DhGroup::from_hex(RFC3526_PRIME_2048, 2).unwrap(),
        )
        .rest_url(&format!("{base}/v1/api/"))
        .unwrap()
        .timeout(Duration::from_secs(5));
        Oauth1aClient::new(config).unwrap()
    }

    /// IBKR's live session token endpoint done right, except for what `response` and
    /// `expiration` say: `response` maps the correct `B` to the one sent.
    fn server(
        &self,
        response: impl Fn(String) -> String + Send + Sync + 'static,
        expiration: Value,
    ) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
        let prepend = prepend(
            &self.decryption_key(),
            &SecretString::from(self.secret.clone()),
        )
        .unwrap();
        let group = DhGroup::from_hex(RFC3526_PRIME_2048, 2).unwrap();
        let flags = json!({"authenticated": true, "competing": false, "connected": true});
        move |seen| match seen.path() {
            "/v1/api/oauth/live_session_token" => {
                let header = seen.header("authorization").unwrap_or_default();
                let Some(a) = header
                    .split("diffie_hellman_challenge=\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                else {
                    return json_reply(400, json!({"error": "no challenge"}));
                };
                let b = DhSecret::random();
                let k = group.shared_secret(a, &b).unwrap();
                let lst = live_session_token(&k, &prepend).unwrap();
                json_reply(
                    200,
                    json!({
                        "diffie_hellman_response": response(group.challenge(&b)),
                        "live_session_token_signature": lst_signature(&lst, "HOSTILE01").unwrap(),
                        "live_session_token_expiration": expiration,
                    }),
                )
            }
            "/v1/api/tickle" => json_reply(
                200,
                json!({"session": "hostile-session", "iserver": {"authStatus": flags}}),
            ),
            "/v1/api/iserver/auth/ssodh/init" | "/v1/api/iserver/auth/status" => {
                json_reply(200, flags.clone())
            }
            "/v1/api/logout" => json_reply(200, json!({"status": true})),
            _ => json_reply(404, json!({"error": "no such endpoint"})),
        }
    }
}

#[tokio::test]
async fn an_lst_expiring_now_in_the_past_or_absurdly_late_is_clamped_and_not_looped() {
    let consumer = consumer().await;
    let now_ms = now() * 1000;
    for (name, expiration, clamped_to) in [
        ("now", json!(now_ms), Some(MIN_LIFE)),
        ("an hour ago", json!(now_ms - 3_600_000), Some(MIN_LIFE)),
        ("1970", json!(0), Some(MIN_LIFE)),
        ("u64::MAX", json!(u64::MAX), Some(MAX_LIFE)),
        ("1e300", json!(1e300), Some(MAX_LIFE)),
        ("a day", json!(now_ms + 86_400_000), None),
    ] {
        let server = Server::start(consumer.server(|b| b, expiration.clone())).await;
        let mut client = consumer.client(&server.base);
        let lst = client.request_live_session_token().await.unwrap();
        let life = (lst.expires_at_ms / 1000).saturating_sub(lst.obtained_at);
        match clamped_to {
            Some(bound) => assert!(life.abs_diff(bound) <= 1, "{name}: {life}"),
            None => assert_eq!(Some(lst.expires_at_ms), expiration.as_u64(), "{name}"),
        }
    }

    // An LST that is already expired, every time: one LST request in 3 s, not a loop.
    let server = Server::start(consumer.server(|b| b, json!(now_ms - 3_600_000))).await;
    let status = run_keep_alive(
        Box::new(consumer.client(&server.base)),
        Duration::from_secs(600),
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(server.count("/v1/api/oauth/live_session_token"), 1);
    assert!(status.tickles >= 10, "{status:?}");
}

#[tokio::test]
async fn dh_responses_outside_2_to_p_minus_2_are_refused() {
    let consumer = consumer().await;
    let p = RFC3526_PRIME_2048.to_owned();
    // RFC 3526's p ends in 64 one bits, so p − 1 and p + 1 change only the last digits.
    let p_minus_1 = format!("{}e", &p[..p.len() - 1]);
    let p_plus_1 = {
        let head = p.trim_end_matches('f');
        let carried = u8::from_str_radix(&head[head.len() - 1..], 16).unwrap() + 1;
        format!(
            "{}{:x}{}",
            &head[..head.len() - 1],
            carried,
            "0".repeat(p.len() - head.len())
        )
    };
    let day = json!((now() + 86_400) * 1000);
    let cases: [(&str, String); 8] = [
        ("0", "0".into()),
        ("1", "1".into()),
        ("p - 1", p_minus_1),
        ("p", p.clone()),
        ("p + 1", p_plus_1),
        ("2^2048", format!("1{}", "0".repeat(512))),
        ("a megabyte of digits", "f".repeat(1 << 20)),
        ("not hex", "xyz".into()),
    ];
    for (name, value) in cases {
        let server = Server::start(consumer.server(move |_| value.clone(), day.clone())).await;
        let mut client = consumer.client(&server.base);
        let err = client.request_live_session_token().await.unwrap_err();
        match &err {
            Error::Lst {
                step: Step::LiveSessionToken,
                source: LstError::BadResponse(_),
            } => {}
            other => panic!("{name}: expected a refused DH response, got {other:?}"),
        }
        assert!(client.live_session_token().is_none(), "{name}");
        assert_eq!(server.count("/v1/api/oauth/live_session_token"), 1);
    }
    // The same server with an honest B works: the refusals above are the values'.
    let server = Server::start(consumer.server(|b| b, day.clone())).await;
    consumer
        .client(&server.base)
        .request_live_session_token()
        .await
        .unwrap();
}

#[tokio::test]
async fn the_sandbox_refuses_dh_challenges_outside_2_to_p_minus_2() {
    let signature = SigningKey::generate().unwrap();
    let encryption = SigningKey::generate().unwrap();
    let sandbox = Sandbox::builder()
        .register_consumer(ConsumerRegistration::new(
            "HOSTILE02",
            &signature,
            &encryption,
        ))
        .start()
        .await
        .unwrap();
    let (token, secret) = sandbox.issue_access_token("HOSTILE02", USER).unwrap();
    let decryption = DecryptionKey::from_pem(&encryption.to_pkcs8_pem()).unwrap();
    let prepend = prepend(&decryption, &SecretString::from(secret)).unwrap();
    let url = format!("{}/v1/api/oauth/live_session_token", sandbox.base_url());
    let http = reqwest::Client::new();
    let send = |challenge: String| {
        let params = oauth_params(
            "HOSTILE02",
            Some(&token),
            &Nonce::fresh(now()),
            "RSA-SHA256",
            &[("diffie_hellman_challenge", &challenge)],
        );
        let signer = Signer::RsaSha256 {
            key: &signature,
            prepend: &prepend,
        };
        let header = authorize(&signer, "limited_poa", "POST", &url, &params);
        http.post(&url)
            .header("Authorization", header)
            .header("Content-Length", "0")
            .send()
    };
    let p = RFC3526_PRIME_2048.to_owned();
    let p_minus_1 = format!("{}e", &p[..p.len() - 1]);
    for (name, challenge) in [
        ("0", "0".to_owned()),
        ("1", "1".to_owned()),
        ("p - 1", p_minus_1),
        ("p", p.clone()),
    ] {
        let reply = send(challenge).await.unwrap();
        assert_eq!(reply.status(), 400, "{name}");
        let body = reply.text().await.unwrap();
        assert!(
            body.contains("bad diffie_hellman_challenge") && body.contains("[2, p − 2]"),
            "{name}: {body}"
        );
    }
    assert_eq!(sandbox.counters().live_session_tokens, 0);
    // A real challenge passes the check.
    let group = DhGroup::from_hex(RFC3526_PRIME_2048, 2).unwrap();
    let reply = send(group.challenge(&DhSecret::random())).await.unwrap();
    assert_eq!(reply.status(), 200, "{}", reply.text().await.unwrap());
    assert_eq!(sandbox.counters().live_session_tokens, 1);
}

// --- the WebSocket ---

/// What a hostile WebSocket server does after reading the upgrade request.
#[derive(Clone, Copy)]
enum WsBehaviour {
    /// Upgrades, then announces one 1 GiB frame.
    HugeFrame,
    /// Upgrades, then sends fragments of one binary message forever.
    EndlessMessage,
    /// Answers with headers that never end.
    EndlessHead,
    /// Upgrades with a wrong `Sec-WebSocket-Accept`.
    WrongAccept,
    /// Sends the 101 line one byte per second.
    Trickle,
}

/// A loopback WebSocket server; returns its address and the bytes it sent after the handshake.
async fn ws_server(behaviour: WsBehaviour) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Some(request) = read_request(&mut stream).await else {
                    return;
                };
                let key = request.header("sec-websocket-key").unwrap_or_default();
                let accept = accept_key(key);
                let upgrade = |accept: &str| {
                    format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                    )
                };
                match behaviour {
                    WsBehaviour::HugeFrame => {
                        let mut bytes = upgrade(&accept).into_bytes();
                        // FIN + binary, 64-bit length: 1 GiB, then silence.
                        bytes.extend_from_slice(&[0x82, 127]);
                        bytes.extend_from_slice(&(1u64 << 30).to_be_bytes());
                        let _ = stream.write_all(&bytes).await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    WsBehaviour::EndlessMessage => {
                        let _ = stream.write_all(upgrade(&accept).as_bytes()).await;
                        let payload = vec![b'x'; 32 * 1024];
                        let mut opcode = 0x02; // binary, not final; continuations after
                        loop {
                            let mut frame = vec![opcode, 126];
                            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                            frame.extend_from_slice(&payload);
                            if stream.write_all(&frame).await.is_err() {
                                break;
                            }
                            counter.fetch_add(frame.len() as u64, Ordering::SeqCst);
                            opcode = 0x00;
                        }
                    }
                    WsBehaviour::EndlessHead => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 101 Switching Protocols\r\n")
                            .await;
                        let line = format!("X-Filler: {}\r\n", "y".repeat(1000));
                        while stream.write_all(line.as_bytes()).await.is_ok() {
                            counter.fetch_add(line.len() as u64, Ordering::SeqCst);
                        }
                    }
                    WsBehaviour::WrongAccept => {
                        let _ = stream
                            .write_all(upgrade("AAAAAAAAAAAAAAAAAAAAAAAAAAA=").as_bytes())
                            .await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    WsBehaviour::Trickle => {
                        for byte in upgrade(&accept).bytes() {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            if stream.write_all(&[byte]).await.is_err() {
                                break;
                            }
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
    });
    (addr, sent)
}

/// RFC 6455's `Sec-WebSocket-Accept` for `key`.
fn accept_key(key: &str) -> String {
    use base64::Engine as _;
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

fn ws_target(addr: SocketAddr, timeout: Duration) -> WsTarget {
    WsTarget {
        url: format!("ws://{addr}/v1/api/ws?oauth_token=0123456789abcdef0123")
            .parse()
            .unwrap(),
        session: "hostile-session".into(),
        authorization: None,
        ca_pem: None,
        timeout,
    }
}

#[tokio::test]
async fn a_websocket_frame_or_message_over_the_cap_ends_the_stream() {
    for behaviour in [WsBehaviour::HugeFrame, WsBehaviour::EndlessMessage] {
        let (addr, sent) = ws_server(behaviour).await;
        let target = ws_target(addr, Duration::from_secs(5));
        let mut ws = ibauth::ws::connect_with_limit(&target, Duration::from_secs(30), 256 * 1024)
            .await
            .unwrap();
        let (next, took) = within(Duration::from_secs(10), ws.next_text()).await;
        let err = next.expect("an error, not the end").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("too long"), "{text}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(sent.load(Ordering::SeqCst) < 32 * MIB);
    }
}

#[tokio::test]
async fn a_websocket_handshake_that_never_ends_or_lies_is_refused() {
    let (addr, sent) = ws_server(WsBehaviour::EndlessHead).await;
    let (err, _) = within(
        Duration::from_secs(10),
        ibauth::ws::connect(
            &ws_target(addr, Duration::from_secs(5)),
            Duration::from_secs(30),
        ),
    )
    .await;
    let err = err.unwrap_err().to_string();
    assert!(err.contains("larger than 16384 bytes"), "{err}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sent.load(Ordering::SeqCst) < 32 * MIB);

    let (addr, _) = ws_server(WsBehaviour::WrongAccept).await;
    let err = ibauth::ws::connect(
        &ws_target(addr, Duration::from_secs(5)),
        Duration::from_secs(30),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("Sec-WebSocket-Accept"), "{err}");

    let (addr, _) = ws_server(WsBehaviour::Trickle).await;
    let timeout = Duration::from_millis(1500);
    let (err, took) = within(
        Duration::from_secs(10),
        ibauth::ws::connect(&ws_target(addr, timeout), Duration::from_secs(30)),
    )
    .await;
    assert!(
        matches!(
            err,
            Err(Error::Timeout {
                step: Step::WebSocket,
                ..
            })
        ),
        "{err:?}"
    );
    assert!(took < timeout + Duration::from_secs(1), "{took:?}");
}

// --- memory ---

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// The probe run by [`huge_answers_keep_memory_flat`] in a process of its own (so no other
/// test's memory counts): every oversized answer at the default caps, then the peak RSS.
#[tokio::test]
#[ignore = "run by huge_answers_keep_memory_flat in a process of its own"]
async fn memory_probe() {
    let before = peak_rss();
    let endless = Server::start(|_| Reply::Endless).await;
    let huge = Server::start(|_| Reply::Huge { declared: 1 << 30 }).await;
    for server in [&endless, &huge] {
        let mut client = client(config(&server.base), &clock());
        too_large(
            &client.request_access_token().await.unwrap_err(),
            Step::AccessToken,
            16 * MIB,
        );
        let lookup = common::config_without_public_ip(&server.base)
            .ip_lookup_urls([format!("{}/ip", server.base)]);
        let err = common::client(lookup, &clock())
            .public_ip()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
    }
    let (addr, _) = ws_server(WsBehaviour::EndlessMessage).await;
    let mut ws = ibauth::ws::connect(
        &ws_target(addr, Duration::from_secs(5)),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert!(ws.next_text().await.unwrap().is_err());
    println!("PEAK_RSS_BEFORE={before}");
    println!("PEAK_RSS={}", peak_rss());
}

#[test]
fn huge_answers_keep_memory_flat() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "memory_probe",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value = |key: &str| -> u64 {
        stdout
            .lines()
            // libtest prints the test's name on the same line.
            .find_map(|l| l.split(key).nth(1))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in:\n{stdout}"))
    };
    let (before, peak) = (value("PEAK_RSS_BEFORE="), value("PEAK_RSS="));
    // Three 1 GiB-or-endless HTTP answers and an endless WebSocket message: at most a few
    // capped buffers (16 MiB each) on top of what the process had; reading any of them whole
    // would add a gibibyte.
    assert!(
        peak.saturating_sub(before) < 128 * MIB,
        "peak RSS grew by {} MiB (from {} MiB)",
        peak.saturating_sub(before) / MIB,
        before / MIB
    );
}
