//! What the sandbox tells about a fleet of processes sharing logins: a bearer token used from
//! another address than its SSO session's is refused (as IBKR binds the session to the JWT's
//! `ip`), who tickles each user and how many at once, logins and takeovers per user, and
//! thousands of third-party grants issued at once and usable.
//!
//! Other source addresses come from 127.0.0.0/8: Linux routes all of it to the loopback
//! interface, so a client socket bound to 127.0.0.2 reaches a sandbox on 127.0.0.1.

mod hand_signed;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hand_signed::{Call, Reply, TempSet, hand_made_lst, http, reply};
use ibauth::oauth1a::{Oauth1aClient, Oauth1aConfig};
use ibauth::secrecy::{ExposeSecret, SecretString};
use ibauth::{Config, Oauth2Client};
use ibauth_sandbox::{
    IssuedAccessToken, SANDBOX_CLIENT_ID, SANDBOX_CREDENTIAL, SANDBOX_KEY_ID, Sandbox,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const ELSEWHERE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const THIRD: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// An OAuth 2.0 client of the set's registered client, public IP 127.0.0.1, calling `base`.
fn oauth2_client(set: &TempSet, base: &str) -> Oauth2Client {
    let config = Config::builder()
        .client_id(SANDBOX_CLIENT_ID)
        .client_key_id(SANDBOX_KEY_ID)
        .credential(SANDBOX_CREDENTIAL)
        .private_key(set.set.key().clone())
        .base_url(base)
        .public_ip(Ipv4Addr::LOCALHOST)
        .build()
        .expect("config");
    Oauth2Client::new(config).expect("client")
}

/// A reqwest client whose connections come from `from`.
fn http_from(from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .local_address(from)
        .build()
        .expect("http client")
}

/// `method base path` with `bearer`, from `from`.
async fn with_bearer(from: IpAddr, method: &str, url: &str, bearer: &str) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    reply(
        http_from(from)
            .request(method, url)
            .bearer_auth(bearer)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("the sandbox answers"),
    )
    .await
}

/// The status of a WebSocket handshake to `addr` with `bearer`, from `from` (101 accepted).
async fn ws_handshake_from(from: IpAddr, addr: SocketAddr, bearer: &str) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    let stream = socket.connect(addr).await.expect("connect");
    let mut request = format!("ws://{addr}/v1/api/ws")
        .into_client_request()
        .expect("a WebSocket URL");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {bearer}").parse().expect("a header value"),
    );
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("handshake failed: {other}"),
    }
}

async fn admin_get(sandbox: &Sandbox, path: &str) -> Value {
    let answer = reply(
        http()
            .get(format!("{}/__sandbox/{path}", sandbox.base_url()))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body
}

#[tokio::test]
async fn a_bearer_used_from_another_address_is_refused_everywhere() {
    let set = TempSet::new("fleet-bearer-ip");
    let sandbox = set.builder().start().await.expect("sandbox");
    let mut client = oauth2_client(&set, sandbox.base_url());
    assert!(client.connect().await.expect("login").status.authenticated);
    let bearer = client
        .bearer_token()
        .expect("bearer")
        .token
        .expose_secret()
        .to_owned();
    let base = sandbox.base_url();

    let calls = [
        ("GET", "/v1/api/tickle"),
        ("POST", "/v1/api/tickle"),
        ("POST", "/v1/portal/tickle"),
        ("GET", "/v1/api/sso/validate"),
        ("POST", "/v1/api/iserver/auth/status"),
        ("POST", "/v1/api/iserver/auth/ssodh/init"),
        ("GET", "/v1/api/iserver/accounts"),
        ("POST", "/v1/api/logout"),
    ];
    for (method, path) in calls {
        let answer = with_bearer(ELSEWHERE, method, &format!("{base}{path}"), &bearer).await;
        // IBKR's plain refusal: nothing tells the caller why.
        assert_eq!(answer.status, 401, "{method} {path}: {answer:?}");
        assert_eq!(
            answer.body,
            json!({"error": "not authenticated", "statusCode": 401}),
            "{method} {path}"
        );
    }
    assert_eq!(
        ws_handshake_from(ELSEWHERE, sandbox.addr(), &bearer).await,
        401
    );
    let refused = calls.len() as u64 + 1;
    let counters = sandbox.counters();
    assert_eq!(counters.ip_mismatches, refused);
    assert_eq!(counters.rejections, refused);
    assert_eq!(
        sandbox.user_stats(SANDBOX_CREDENTIAL).ip_mismatches,
        refused
    );
    assert_eq!(
        admin_get(&sandbox, "counters").await["ip_mismatches"],
        refused
    );

    // The session is untouched: the logout from elsewhere did nothing, and from its own
    // address the bearer works for REST and the WebSocket alike.
    let tickle = with_bearer(HOME, "POST", &format!("{base}/v1/api/tickle"), &bearer).await;
    assert_eq!(tickle.status, 200, "{tickle:?}");
    assert_eq!(tickle.body["iserver"]["authStatus"]["authenticated"], true);
    assert!(
        client
            .tickle()
            .await
            .expect("tickle")
            .auth_status()
            .authenticated
    );
    assert_eq!(ws_handshake_from(HOME, sandbox.addr(), &bearer).await, 101);
    assert_eq!(sandbox.counters().ip_mismatches, refused);
}

#[tokio::test]
async fn an_oauth1a_live_session_token_works_from_any_host() {
    let set = TempSet::new("fleet-lst-anywhere");
    let sandbox = set.builder().start().await.expect("sandbox");
    let session = hand_made_lst(&sandbox, &set, "/v1/api", SANDBOX_CREDENTIAL)
        .await
        .expect("LST");
    for from in [HOME, ELSEWHERE, THIRD] {
        let answer = session.send_from(&Call::new("POST", "/tickle"), from).await;
        assert_eq!(answer.status, 200, "from {from}: {answer:?}");
    }
    assert_eq!(sandbox.counters().ip_mismatches, 0);
}

#[tokio::test]
async fn binding_can_be_turned_off() {
    let set = TempSet::new("fleet-unbound");
    let sandbox = set
        .builder()
        .bind_sso_ip(false)
        .start()
        .await
        .expect("sandbox");
    let mut client = oauth2_client(&set, sandbox.base_url());
    client.connect().await.expect("login");
    let bearer = client
        .bearer_token()
        .expect("bearer")
        .token
        .expose_secret()
        .to_owned();
    let url = format!("{}/v1/api/tickle", sandbox.base_url());
    let answer = with_bearer(ELSEWHERE, "POST", &url, &bearer).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(sandbox.counters().ip_mismatches, 0);
}

#[tokio::test]
async fn an_ipv6_mapped_peer_counts_as_its_ipv4_address() {
    let set = TempSet::new("fleet-mapped");
    // A dual-stack socket: IPv4 clients arrive as ::ffff:a.b.c.d.
    let Ok(sandbox) = set
        .builder()
        .listen("[::]:0".parse().expect("an address"))
        .start()
        .await
    else {
        eprintln!("no IPv6 on this host: skipped");
        return;
    };
    let base = format!("http://127.0.0.1:{}", sandbox.addr().port());
    let mut client = oauth2_client(&set, &base);
    let connected = match client.connect().await {
        Ok(connected) => connected,
        // A host with IPV6_V6ONLY on by default takes no IPv4 on `[::]`.
        Err(e) if e.step() != Some(ibauth::Step::SsoSession) => {
            eprintln!("no dual-stack socket on this host ({e}): skipped");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert!(connected.status.authenticated);
    let bearer = client
        .bearer_token()
        .expect("bearer")
        .token
        .expose_secret()
        .to_owned();
    let url = format!("{base}/v1/api/tickle");
    assert_eq!(with_bearer(HOME, "POST", &url, &bearer).await.status, 200);
    assert_eq!(
        with_bearer(ELSEWHERE, "POST", &url, &bearer).await.status,
        401
    );
    assert_eq!(sandbox.counters().ip_mismatches, 1);
}

#[tokio::test]
async fn ticklers_are_counted_by_source_address_within_the_window() {
    let set = TempSet::new("fleet-ticklers");
    let sandbox = set
        .builder()
        .tickler_window(Duration::from_secs(30))
        .start()
        .await
        .expect("sandbox");
    // Two users; one is kept alive from one address, the other from two.
    let steady = hand_made_lst(&sandbox, &set, "/v1/api", SANDBOX_CREDENTIAL)
        .await
        .expect("LST");
    let split = hand_made_lst(&sandbox, &set, "/v1/api", hand_signed::PAPER_USER)
        .await
        .expect("LST");
    for _ in 0..3 {
        let answer = steady.send_from(&Call::new("POST", "/tickle"), THIRD).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    for from in [HOME, ELSEWHERE, HOME] {
        let answer = split.send_from(&Call::new("POST", "/tickle"), from).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert_eq!(sandbox.max_concurrent_ticklers(SANDBOX_CREDENTIAL), 1);
    assert_eq!(sandbox.ticklers(SANDBOX_CREDENTIAL), vec![THIRD]);
    assert_eq!(sandbox.max_concurrent_ticklers(hand_signed::PAPER_USER), 2);
    assert_eq!(
        sandbox.ticklers(hand_signed::PAPER_USER),
        vec![HOME, ELSEWHERE]
    );
    assert_eq!(sandbox.max_concurrent_ticklers("nobody"), 0);
    let counters = sandbox.counters();
    assert_eq!((counters.tickles, counters.max_concurrent_ticklers), (6, 2));

    // The same over HTTP, for tests that drive a sandbox in another process.
    let user = admin_get(&sandbox, &format!("users/{}", hand_signed::PAPER_USER)).await;
    assert_eq!(user["max_concurrent_ticklers"], 2, "{user}");
    assert_eq!(
        user["ticklers"],
        json!(["127.0.0.1", "127.0.0.2"]),
        "{user}"
    );
    assert_eq!(user["tickles"], 3, "{user}");
    assert_eq!(user["logins"], 1, "{user}");
    assert_eq!(user["live_session_tokens"], 1, "{user}");
    let all = admin_get(&sandbox, "users").await;
    assert_eq!(
        all[SANDBOX_CREDENTIAL]["max_concurrent_ticklers"], 1,
        "{all}"
    );
    assert_eq!(all[SANDBOX_CREDENTIAL]["ticklers"], json!(["127.0.0.3"]));
    assert_eq!(admin_get(&sandbox, "users/nobody").await["tickles"], 0);
    assert_eq!(
        admin_get(&sandbox, "counters").await["max_concurrent_ticklers"],
        2
    );
}

#[tokio::test]
async fn a_handover_slower_than_the_window_is_one_tickler() {
    let set = TempSet::new("fleet-handover");
    let sandbox = set
        .builder()
        .tickler_window(Duration::from_millis(300))
        .start()
        .await
        .expect("sandbox");
    let session = hand_made_lst(&sandbox, &set, "/v1/api", SANDBOX_CREDENTIAL)
        .await
        .expect("LST");
    let tickle = |from| {
        let session = &session;
        async move {
            let answer = session.send_from(&Call::new("POST", "/tickle"), from).await;
            assert_eq!(answer.status, 200, "{answer:?}");
        }
    };
    tickle(HOME).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    tickle(ELSEWHERE).await;
    assert_eq!(sandbox.max_concurrent_ticklers(SANDBOX_CREDENTIAL), 1);
    assert_eq!(sandbox.ticklers(SANDBOX_CREDENTIAL), vec![ELSEWHERE]);
    // The window can be changed over HTTP; the old member coming back is split brain.
    let answer = http()
        .post(format!("{}/__sandbox/tickler_window", sandbox.base_url()))
        .json(&json!({"ms": 60_000}))
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status().as_u16(), 200);
    tickle(HOME).await;
    assert_eq!(sandbox.max_concurrent_ticklers(SANDBOX_CREDENTIAL), 2);
    // A test can measure one phase on its own.
    sandbox.reset_user_stats();
    assert_eq!(sandbox.max_concurrent_ticklers(SANDBOX_CREDENTIAL), 0);
    assert_eq!(sandbox.counters().max_concurrent_ticklers, 0);
    assert_eq!(sandbox.counters().tickles, 3);
}

#[tokio::test]
async fn logins_live_sessions_and_takeovers_per_user() {
    let set = TempSet::new("fleet-logins");
    let sandbox = set.builder().start().await.expect("sandbox");
    // Two processes that each log in (no sharing): two SSO sessions, the second init takes
    // the brokerage session over.
    let mut first = oauth2_client(&set, sandbox.base_url());
    let mut second = oauth2_client(&set, sandbox.base_url());
    first.connect().await.expect("first login");
    second.connect().await.expect("second login");
    let stats = sandbox.user_stats(SANDBOX_CREDENTIAL);
    assert_eq!(
        (
            stats.logins,
            stats.sso_sessions,
            stats.inits,
            stats.takeovers,
            stats.live_sessions,
            stats.max_live_sessions,
            stats.brokerage_sessions,
        ),
        (2, 2, 2, 1, 2, 2, 1),
        "{stats:?}"
    );
    assert_eq!(sandbox.counters().brokerage_takeovers, 1);
    first.logout().await.expect("logout");
    let stats = sandbox.user_stats(SANDBOX_CREDENTIAL);
    assert_eq!((stats.live_sessions, stats.max_live_sessions), (1, 2));

    // OAuth 1.0a: each live session token is a login; a new one replaces the old session.
    let k = &set;
    let (token, secret) = sandbox
        .issue_access_token(ibauth_sandbox::SANDBOX_CONSUMER_KEY, "oscar")
        .expect("grant");
    let config = Oauth1aConfig::new(
        ibauth_sandbox::SANDBOX_CONSUMER_KEY,
        token,
        SecretString::from(secret),
        k.signature_key(),
        k.decryption_key(),
        k.group(),
    )
    .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
    .expect("rest url");
    let mut client = Oauth1aClient::new(config).expect("client");
    client.connect().await.expect("login");
    client.request_live_session_token().await.expect("again");
    let stats = sandbox.user_stats("oscar");
    assert_eq!(
        (
            stats.access_tokens,
            stats.logins,
            stats.live_session_tokens,
            stats.live_sessions,
            stats.max_live_sessions
        ),
        (1, 2, 2, 1, 1),
        "{stats:?}"
    );
}

/// A client of the set's third-party consumer (`TESTCONS`) for a granted user.
fn third_party_client(
    set: &TempSet,
    sandbox: &Sandbox,
    grant: &IssuedAccessToken,
) -> Oauth1aClient {
    let config = Oauth1aConfig::new(
        ibauth::oauth1a::TEST_CONSUMER,
        grant.oauth_token.clone(),
        SecretString::from(grant.oauth_token_secret.clone()),
        set.signature_key(),
        set.decryption_key(),
        set.group(),
    )
    .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
    .expect("rest url");
    Oauth1aClient::new(config).expect("client")
}

#[tokio::test]
async fn ten_thousand_grants_at_once_and_usable() {
    const N: usize = 10_000;
    let set = TempSet::new("fleet-bulk");
    let sandbox = set.builder().start().await.expect("sandbox");
    let started = Instant::now();
    let grants = sandbox
        .issue_access_tokens(ibauth::oauth1a::TEST_CONSUMER, "fleet", N)
        .expect("a known consumer");
    let took = started.elapsed();
    eprintln!("{N} grants in {took:?}");
    assert!(took < Duration::from_secs(10), "{N} grants took {took:?}");
    assert_eq!(grants.len(), N);
    assert_eq!(grants[0].user, "fleet0");
    assert_eq!(grants[N - 1].user, format!("fleet{}", N - 1));
    let tokens: std::collections::HashSet<&str> =
        grants.iter().map(|g| g.oauth_token.as_str()).collect();
    assert_eq!(tokens.len(), N, "every token is distinct");
    assert!(grants.iter().all(|g| g.oauth_token.len() == 20));

    for grant in [&grants[0], &grants[N / 2], &grants[N - 1]] {
        let mut client = third_party_client(&set, &sandbox, grant);
        let status = client.connect().await.expect("login").status;
        assert!(status.authenticated, "{}", grant.user);
        assert!(
            client
                .tickle()
                .await
                .expect("tickle")
                .auth_status()
                .authenticated
        );
        let stats = sandbox.user_stats(&grant.user);
        assert_eq!(
            (
                stats.access_tokens,
                stats.logins,
                stats.tickles,
                stats.brokerage_sessions
            ),
            (1, 1, 1, 1)
        );
    }
    assert_eq!(sandbox.counters().rejections, 0);
    assert_eq!(sandbox.all_user_stats().len(), N);
}

#[tokio::test]
async fn bulk_grants_over_http() {
    let set = TempSet::new("fleet-bulk-http");
    let sandbox = set.builder().start().await.expect("sandbox");
    let url = format!("{}/__sandbox/bulk-grants", sandbox.base_url());
    let answer = http()
        .post(format!("{url}?consumer=TESTCONS&prefix=web&n=500"))
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(
        answer.headers()["content-type"].to_str().ok(),
        Some("application/x-ndjson")
    );
    let text = answer.text().await.expect("a body");
    let grants: Vec<IssuedAccessToken> = text
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("a JSON line");
            IssuedAccessToken {
                user: v["user"].as_str().expect("user").to_owned(),
                oauth_token: v["oauth_token"].as_str().expect("token").to_owned(),
                oauth_token_secret: v["oauth_token_secret"].as_str().expect("secret").to_owned(),
            }
        })
        .collect();
    assert_eq!(grants.len(), 500);
    assert_eq!(grants[499].user, "web499");
    let mut client = third_party_client(&set, &sandbox, &grants[123]);
    assert!(client.connect().await.expect("login").status.authenticated);

    // The same fields in a JSON body.
    let answer = http()
        .post(&url)
        .json(&json!({"consumer": "TESTCONS", "n": 2}))
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status().as_u16(), 200);
    assert_eq!(answer.text().await.expect("body").lines().count(), 2);

    for (query, why) in [
        ("consumer=NOSUCH&n=1", "unknown consumer"),
        ("consumer=TESTCONS", "`n` missing"),
        (
            "consumer=TESTCONS&n=0",
            "`n` must be a whole number from 1 to 100000",
        ),
        (
            "consumer=TESTCONS&n=100001",
            "`n` must be a whole number from 1 to 100000",
        ),
        ("consumer=TESTCONS&n=-1", "`n` must be a whole number"),
        ("n=1", "`consumer` missing"),
        (
            "consumer=TESTCONS&n=1&color=red",
            "unknown bulk-grants setting `color`",
        ),
    ] {
        let answer = reply(
            http()
                .post(format!("{url}?{query}"))
                .send()
                .await
                .expect("answer"),
        )
        .await;
        assert_eq!(answer.status, 400, "{query}: {answer:?}");
        assert_eq!(answer.body["error"], why, "{query}");
    }
    let long = "p".repeat(65);
    let answer = reply(
        http()
            .post(format!("{url}?consumer=TESTCONS&n=1&prefix={long}"))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(answer.status, 400, "{answer:?}");
}

/// Resident memory of this process, from `/proc/self/status` (kB).
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// RFC 2409's 768-bit MODP group (Oakley group 1): far too small for real use, and IBKR
/// registers 2048-bit primes, but the memory a session takes does not depend on the group,
/// and logins in it cost a tenth of a 2048-bit login.
const OAKLEY_768: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A3620FFFFFFFFFFFFFFFF";

/// Measures the sandbox's memory for `FLEET_USERS` (default 10 000) third-party users: the
/// grants, then a live session token, `ssodh/init` and a tickle each through the real flow
/// (in a 768-bit group, see [`OAKLEY_768`]). Each client is dropped after its login, so what
/// stays is the sandbox's state (and allocator slack). Slow in a debug build; run it alone:
/// `cargo test -p ibauth-sandbox --test fleet -- --ignored --nocapture memory`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, minutes in a debug build"]
async fn memory_for_ten_thousand_users() {
    let n: usize = std::env::var("FLEET_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let set = TempSet::new("fleet-memory");
    let group = ibauth::oauth1a::DhGroup::from_hex(OAKLEY_768, 2).expect("the group");
    let sandbox = Sandbox::builder()
        .register_consumer(set.set.third_party_registration().dh_group(group.clone()))
        .start()
        .await
        .expect("sandbox");
    let before = rss_kb();
    let started = Instant::now();
    let grants = sandbox
        .issue_access_tokens(ibauth::oauth1a::TEST_CONSUMER, "m", n)
        .expect("a known consumer");
    let grants_took = started.elapsed();
    let after_grants = rss_kb();
    let queue = Arc::new(std::sync::Mutex::new(grants));
    let encryption_pem =
        std::fs::read_to_string(set.dir.join("encryption_key.pem")).expect("encryption key");
    let keys = Arc::new((set.signature_key(), encryption_pem, group));
    let base = sandbox.base_url().to_owned();
    let http = ibauth::HttpClient::new(Duration::from_secs(30), None).expect("http client");
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (queue, keys, base, http) = (queue.clone(), keys.clone(), base.clone(), http.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().expect("queue").pop();
                let Some(grant) = next else { break };
                let config = Oauth1aConfig::new(
                    ibauth::oauth1a::TEST_CONSUMER,
                    grant.oauth_token.clone(),
                    SecretString::from(grant.oauth_token_secret.clone()),
                    keys.0.clone(),
                    ibauth::DecryptionKey::from_pem(&keys.1).expect("encryption key"),
                    keys.2.clone(),
                )
                .rest_url(&format!("{base}/v1/api/"))
                .expect("rest url");
                // One HTTP client for all, as a worker keeping many sessions would have.
                let mut client =
                    Oauth1aClient::with_http(config, Arc::new(ibauth::SystemClock), http.clone())
                        .expect("client");
                client
                    .connect()
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", grant.user));
                client
                    .tickle()
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", grant.user));
            }
        }));
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    let sessions_took = started.elapsed();
    let after_sessions = rss_kb();
    let counters = sandbox.counters();
    assert_eq!(counters.live_session_tokens, n as u64);
    assert_eq!(counters.tickles, n as u64);
    assert_eq!(counters.rejections, 0);
    // One user's stats with n users held: a lookup, not a scan.
    let started = Instant::now();
    let user = sandbox.user_stats("m0");
    assert_eq!(
        (user.logins, user.tickles, user.brokerage_sessions),
        (1, 1, 1)
    );
    let stats_took = started.elapsed();
    let per = |kb: u64| kb * 1024 / n as u64;
    eprintln!(
        "{n} users: grants {grants_took:?}, RSS +{} kB ({} B/grant); \
         LST+init+tickle each {sessions_took:?}, RSS +{} kB ({} B/session); \
         total RSS {after_sessions} kB; one user's stats read in {stats_took:?}",
        after_grants.saturating_sub(before),
        per(after_grants.saturating_sub(before)),
        after_sessions.saturating_sub(after_grants),
        per(after_sessions.saturating_sub(after_grants)),
    );
}
