//! The session manager against the sandbox: one test per recovery path, asserting the state
//! sequence and that the session ends authenticated (or `Failed` with the right reason).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ibauth::manager::{Policy, SessionManager, SessionState, Status, TokenKind};
use ibauth::oauth1a::{DhGroup, Oauth1aClient, Oauth1aConfig};
use ibauth::secrecy::SecretString;
use ibauth::store::{FileStore, TokenStore};
use ibauth::{Config, DecryptionKey, Oauth2Client, SigningKey};
use ibauth_sandbox::{
    ClientRegistration, ConsumerRegistration, FailWith, Lifetimes, RFC3526_PRIME_2048, Sandbox,
};
use tokio::sync::watch;

const USER: &str = "mallory";

/// Fast turns for tests. Unpaced: these sandboxes do not enforce IBKR's limits, and the tests
/// log in again within seconds of each other (`sso/validate` is 1 per minute); pacing has its
/// own tests against a sandbox that does enforce them.
fn policy() -> Policy {
    Policy {
        pacing: ibauth::pacing::PacingRules::unlimited(),
        tickle_interval: Duration::from_millis(20),
        jitter: Duration::ZERO,
        max_failed_logins: 3,
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(40),
        ..Policy::default()
    }
}

fn key() -> SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().unwrap()).clone()
}

async fn sandbox(lifetimes: Lifetimes) -> Sandbox {
    Sandbox::builder()
        .register(
            ClientRegistration::new("MCLIENT")
                .key("k", &key())
                .credential(USER),
        )
        .lifetimes(lifetimes)
        .start()
        .await
        .unwrap()
}

fn client(base_url: &str, credential: &str) -> Oauth2Client {
    let config = Config::builder()
        .client_id("MCLIENT")
        .client_key_id("k")
        .credential(credential)
        .private_key(key())
        .base_url(base_url)
        .public_ip("127.0.0.1".parse().unwrap())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    Oauth2Client::new(config).unwrap()
}

async fn setup(credential: &str) -> (Sandbox, Oauth2Client) {
    let sandbox = sandbox(Lifetimes::default()).await;
    let client = client(sandbox.base_url(), credential);
    (sandbox, client)
}

/// Records every distinct state the manager goes through.
fn record(mut rx: watch::Receiver<Status>) -> Arc<Mutex<Vec<SessionState>>> {
    let seen = Arc::new(Mutex::new(vec![rx.borrow().state.clone()]));
    let out = seen.clone();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let state = rx.borrow().state.clone();
            let mut seen = out.lock().unwrap();
            if seen.last() != Some(&state) {
                seen.push(state);
            }
        }
    });
    seen
}

async fn wait_until(rx: &mut watch::Receiver<Status>, what: impl Fn(&Status) -> bool) -> Status {
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| what(s)))
        .await
        .expect("within 10 s")
        .expect("manager alive")
        .clone()
}

#[tokio::test]
async fn keeps_the_session_alive_and_logs_out_once_on_shutdown() {
    let (sandbox, client) = setup(USER).await;
    let manager = SessionManager::new(client, policy());
    let mut rx = manager.watch();
    let seen = record(manager.watch());
    let running = manager.spawn().unwrap();
    let status = wait_until(&mut rx, |s| s.tickles >= 3).await;
    assert_eq!(status.state, SessionState::Authenticated);
    assert!(status.session.is_some() && status.last_rtt.is_some());
    assert!(running.shutdown().await.is_some());
    assert_eq!(
        *seen.lock().unwrap(),
        [
            SessionState::Connecting,
            SessionState::Authenticated,
            SessionState::LoggedOut
        ]
    );
    assert_eq!(sandbox.counters().logouts, 1);
    assert_eq!(sandbox.counters().access_tokens, 1);
}

#[tokio::test]
async fn a_dropped_session_is_re_initialised_without_a_new_login() {
    let (sandbox, client) = setup(USER).await;
    let manager = SessionManager::new(client, policy());
    let mut rx = manager.watch();
    let seen = record(manager.watch());
    let running = manager.spawn().unwrap();
    wait_until(&mut rx, |s| s.tickles >= 1).await;
    sandbox.drop_session(USER);
    let inits_before = sandbox.counters().inits;
    wait_until(&mut rx, |s| {
        s.tickles >= 4 && s.state == SessionState::Authenticated
    })
    .await;
    assert!(
        seen.lock()
            .unwrap()
            .contains(&SessionState::Reauthenticating)
    );
    assert!(sandbox.counters().inits > inits_before, "re-initialised");
    assert_eq!(sandbox.counters().access_tokens, 1, "no new login needed");
    running.shutdown().await;
}

#[tokio::test]
async fn expired_tokens_lead_to_a_full_login() {
    let (sandbox, client) = setup(USER).await;
    let manager = SessionManager::new(client, policy());
    let mut rx = manager.watch();
    let seen = record(manager.watch());
    let running = manager.spawn().unwrap();
    wait_until(&mut rx, |s| s.tickles >= 1).await;
    sandbox.expire_tokens_now();
    let status = wait_until(&mut rx, |s| {
        s.logins >= 2 && s.state == SessionState::Authenticated
    })
    .await;
    assert_eq!(status.logins, 2);
    assert!(
        seen.lock()
            .unwrap()
            .contains(&SessionState::Reauthenticating)
    );
    assert_eq!(sandbox.counters().access_tokens, 2);
    running.shutdown().await;
}

#[tokio::test]
async fn transient_errors_back_off_and_never_stop_the_loop() {
    let (sandbox, client) = setup(USER).await;
    let manager = SessionManager::new(client, policy());
    let mut rx = manager.watch();
    let seen = record(manager.watch());
    let running = manager.spawn().unwrap();
    wait_until(&mut rx, |s| s.tickles >= 1).await;
    sandbox.fail_next(4, FailWith::new(503, "Service Unavailable"));
    let before = rx.borrow().tickles;
    wait_until(&mut rx, |s| {
        s.tickles >= before + 3 && s.state == SessionState::Authenticated
    })
    .await;
    assert!(seen.lock().unwrap().contains(&SessionState::Disconnected));
    assert_eq!(sandbox.counters().faults_injected, 4);
    assert_eq!(sandbox.counters().access_tokens, 1);
    running.shutdown().await;
}

#[tokio::test]
async fn competing_without_compete_is_reported_not_taken() {
    let (sandbox, client) = setup(USER).await;
    let manager = SessionManager::new(
        client,
        Policy {
            compete: false,
            ..policy()
        },
    );
    let mut rx = manager.watch();
    let running = manager.spawn().unwrap();
    wait_until(&mut rx, |s| s.tickles >= 1).await;
    sandbox.report_competing(USER);
    wait_until(&mut rx, |s| s.state == SessionState::Competing).await;
    running.shutdown().await;
}

#[tokio::test]
async fn a_bad_credential_fails_permanently_after_one_attempt() {
    let (sandbox, client) = setup("not-registered").await;
    let manager = SessionManager::new(client, policy());
    let mut rx = manager.watch();
    let running = manager.spawn().unwrap();
    let status = wait_until(&mut rx, |s| matches!(s.state, SessionState::Failed(_))).await;
    let SessionState::Failed(reason) = status.state else {
        unreachable!()
    };
    assert!(reason.permanent, "{reason:?}");
    assert!(reason.message.contains("SSO session"), "{}", reason.message);
    assert_eq!(
        sandbox.counters().access_tokens,
        1,
        "no hammering of the login"
    );
    running.shutdown().await;
    assert_eq!(sandbox.counters().logouts, 0);
}

#[tokio::test]
async fn transient_login_failures_back_off_without_counting_as_failed_logins() {
    let (sandbox, client) = setup(USER).await;
    // Twice the cap on failed logins (3): network trouble and 5xx say nothing about the
    // credentials, so the manager keeps trying and says why it waits.
    sandbox.fail_next(6, FailWith::new(503, "Service Unavailable"));
    let manager = SessionManager::new(client, policy());
    let mut rx = manager.watch();
    let seen = record(manager.watch());
    let waiting = Arc::new(Mutex::new(Vec::new()));
    {
        let mut rx = manager.watch();
        let waiting = waiting.clone();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                if let Some(detail) = rx.borrow().detail.clone() {
                    waiting.lock().unwrap().push(detail);
                }
            }
        });
    }
    let running = manager.spawn().unwrap();
    let status = wait_until(&mut rx, |s| s.state == SessionState::Authenticated).await;
    assert_eq!(
        sandbox.counters().faults_injected,
        6,
        "every attempt was answered"
    );
    assert_eq!(status.logins, 1);
    assert!(status.transient_failures >= 6, "{status:?}");
    assert!(
        !seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| matches!(s, SessionState::Failed(_))),
        "{seen:?}"
    );
    let waiting = waiting.lock().unwrap().clone();
    assert!(
        waiting
            .iter()
            .any(|d| d.contains("trying again in") && d.contains("503")),
        "{waiting:?}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn retry_after_is_honoured_before_the_next_request() {
    let (sandbox, client) = setup(USER).await;
    let manager = SessionManager::new(client, policy());
    let mut rx = manager.watch();
    let seen = record(manager.watch());
    let running = manager.spawn().unwrap();
    wait_until(&mut rx, |s| s.tickles >= 1).await;
    sandbox.fail_next(1, FailWith::new(429, "Too Many Requests").retry_after(1));
    // When the 429 went out, as closely as polling can tell.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sandbox.counters().faults_injected == 0 {
        assert!(Instant::now() < deadline, "the fault was never served");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let fault_seen = Instant::now();
    let tickles_then = sandbox.counters().tickles;
    while sandbox.counters().tickles == tickles_then {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let waited = fault_seen.elapsed();
    // The tickle interval is 20 ms and the backoff 5 ms: only Retry-After explains a wait
    // this long.
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
    let status = wait_until(&mut rx, |s| s.state == SessionState::Authenticated).await;
    assert_eq!(status.transient_failures, 1);
    assert!(seen.lock().unwrap().contains(&SessionState::Disconnected));
    assert_eq!(
        sandbox.counters().access_tokens,
        1,
        "no new login for a 429"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn oauth2_tokens_are_renewed_before_they_expire() {
    let sandbox = sandbox(Lifetimes {
        access_token: Duration::from_secs(4),
        sso_session: Duration::from_secs(4),
        ..Lifetimes::default()
    })
    .await;
    let manager = SessionManager::new(
        client(sandbox.base_url(), USER),
        Policy {
            tickle_interval: Duration::from_millis(50),
            renew_margin: Duration::from_secs(2),
            ..policy()
        },
    );
    let mut rx = manager.watch();
    let seen = record(manager.watch());
    let running = manager.spawn().unwrap();
    let first = wait_until(&mut rx, |s| s.state == SessionState::Authenticated).await;
    let kinds: Vec<TokenKind> = first.tokens.iter().map(|t| t.kind).collect();
    assert_eq!(kinds, [TokenKind::AccessToken, TokenKind::Bearer]);
    let bearer_expiry = first.tokens[1].expires_at;
    let status = tokio::time::timeout(
        Duration::from_secs(15),
        rx.wait_for(|s| s.renewals >= 2 && s.state == SessionState::Authenticated),
    )
    .await
    .expect("two renewals within 15 s")
    .unwrap()
    .clone();
    assert!(status.tokens[1].expires_at > bearer_expiry, "{status:?}");
    assert_eq!(
        *seen.lock().unwrap(),
        [SessionState::Connecting, SessionState::Authenticated],
        "renewal never let the session drop"
    );
    let counters = sandbox.counters();
    assert_eq!(
        counters.rejections, 0,
        "no request ever met an expired token"
    );
    // Each renewal renews whatever is due: both tokens, or one when their expiries fall in
    // different seconds (the bearer's is refined from IBKR's EXPIRES).
    assert!(
        counters.access_tokens + counters.sso_sessions >= 2 + 2 && counters.sso_sessions >= 2,
        "{counters:?}"
    );
    assert_eq!(status.logins, 1, "renewed, not logged in again");
    running.shutdown().await;
    assert_eq!(sandbox.counters().logouts, 1);
}

struct Oauth1aKeys {
    signature: SigningKey,
    encryption: SigningKey,
}

fn oauth1a_keys() -> &'static Oauth1aKeys {
    static KEYS: OnceLock<Oauth1aKeys> = OnceLock::new();
    KEYS.get_or_init(|| Oauth1aKeys {
        signature: SigningKey::generate().unwrap(),
        encryption: SigningKey::generate().unwrap(),
    })
}

async fn oauth1a_sandbox(lifetimes: Lifetimes) -> Sandbox {
    let k = oauth1a_keys();
    Sandbox::builder()
        .register_consumer(ConsumerRegistration::new(
            "MCONSUMER",
            &k.signature,
            &k.encryption,
        ))
        .lifetimes(lifetimes)
        .start()
        .await
        .unwrap()
}

fn oauth1a_client(sandbox: &Sandbox, token: &str, secret: &str) -> Oauth1aClient {
    let k = oauth1a_keys();
    let config = Oauth1aConfig::new(
        "MCONSUMER",
        token,
        SecretString::from(secret.to_owned()),
        k.signature.clone(),
        DecryptionKey::from_pem(&k.encryption.to_pkcs8_pem()).unwrap(),
        DhGroup::from_hex(RFC3526_PRIME_2048, 2).unwrap(),
    )
    .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
    .unwrap()
    .timeout(Duration::from_secs(2));
    Oauth1aClient::new(config).unwrap()
}

#[tokio::test]
async fn the_live_session_token_is_renewed_and_the_brokerage_session_kept() {
    let sandbox = oauth1a_sandbox(Lifetimes {
        sso_session: Duration::from_secs(4),
        ..Lifetimes::default()
    })
    .await;
    let (token, secret) = sandbox.issue_access_token("MCONSUMER", USER).unwrap();
    let manager = SessionManager::new(
        oauth1a_client(&sandbox, &token, &secret),
        Policy {
            tickle_interval: Duration::from_millis(50),
            renew_margin: Duration::from_secs(2),
            ..policy()
        },
    );
    let mut rx = manager.watch();
    let seen = record(manager.watch());
    let running = manager.spawn().unwrap();
    let status = tokio::time::timeout(
        Duration::from_secs(15),
        rx.wait_for(|s| s.renewals >= 2 && s.state == SessionState::Authenticated),
    )
    .await
    .expect("two renewals within 15 s")
    .unwrap()
    .clone();
    assert_eq!(status.tokens[0].kind, TokenKind::LiveSessionToken);
    assert_eq!(
        *seen.lock().unwrap(),
        [SessionState::Connecting, SessionState::Authenticated]
    );
    let counters = sandbox.counters();
    assert!(counters.live_session_tokens >= 3, "{counters:?}");
    assert_eq!(counters.inits, 1, "a new LST keeps the brokerage session");
    assert_eq!(counters.rejections, 0);
    running.shutdown().await;
}

#[tokio::test]
async fn gone_moves_to_the_next_failover_host() {
    let first = sandbox(Lifetimes::default()).await;
    let second = sandbox(Lifetimes::default()).await;
    let manager = SessionManager::new(
        client(first.base_url(), USER),
        Policy {
            failover_hosts: vec![first.base_url().to_owned(), second.base_url().to_owned()],
            ..policy()
        },
    );
    let mut rx = manager.watch();
    let seen = record(manager.watch());
    let running = manager.spawn().unwrap();
    wait_until(&mut rx, |s| s.tickles >= 1).await;
    first.fail_next(100, FailWith::new(410, "Gone"));
    let status = wait_until(&mut rx, |s| {
        s.state == SessionState::Authenticated && s.api_base.starts_with(second.base_url())
    })
    .await;
    assert_eq!(status.logins, 2);
    assert!(
        seen.lock()
            .unwrap()
            .contains(&SessionState::Reauthenticating)
    );
    assert_eq!(first.counters().faults_injected, 1, "left after one 410");
    assert_eq!(second.counters().access_tokens, 1);
    assert_eq!(second.counters().inits, 1);
    wait_until(&mut rx, |s| s.tickles >= status.tickles + 2).await;
    running.shutdown().await;
    assert_eq!(
        second.counters().logouts,
        1,
        "logged out where the session lives"
    );
    assert_eq!(first.counters().logouts, 0);
}

#[tokio::test]
async fn gone_moves_an_oauth1a_session_to_the_next_host() {
    let first = oauth1a_sandbox(Lifetimes::default()).await;
    let second = oauth1a_sandbox(Lifetimes::default()).await;
    let (token, secret) = first.issue_access_token("MCONSUMER", USER).unwrap();
    first.share_access_tokens_with(&second);
    let manager = SessionManager::new(
        oauth1a_client(&first, &token, &secret),
        Policy {
            failover_hosts: vec![first.base_url().to_owned(), second.base_url().to_owned()],
            ..policy()
        },
    );
    let mut rx = manager.watch();
    let running = manager.spawn().unwrap();
    wait_until(&mut rx, |s| s.tickles >= 1).await;
    first.fail_next(100, FailWith::new(410, "Gone"));
    let status = wait_until(&mut rx, |s| {
        s.state == SessionState::Authenticated && s.api_base.starts_with(second.base_url())
    })
    .await;
    assert_eq!(status.api_base, format!("{}/", second.base_url()));
    assert_eq!(second.counters().live_session_tokens, 1);
    wait_until(&mut rx, |s| s.tickles >= status.tickles + 2).await;
    assert_eq!(
        second.counters().rejections,
        0,
        "requests signed for the new host"
    );
    running.shutdown().await;
    assert_eq!(second.counters().logouts, 1);
}

#[tokio::test]
async fn gone_without_failover_hosts_logs_in_again_on_the_same_host() {
    let (sandbox, client) = setup(USER).await;
    let manager = SessionManager::new(client, policy());
    let mut rx = manager.watch();
    let running = manager.spawn().unwrap();
    wait_until(&mut rx, |s| s.tickles >= 1).await;
    sandbox.fail_next(1, FailWith::new(410, "Gone"));
    let status = wait_until(&mut rx, |s| {
        s.logins == 2 && s.state == SessionState::Authenticated
    })
    .await;
    assert_eq!(status.recoveries, 1);
    assert_eq!(sandbox.counters().access_tokens, 2);
    running.shutdown().await;
}

#[tokio::test]
async fn init_oauth_off_starts_from_the_tokens_the_client_holds() {
    let (sandbox, mut client) = setup(USER).await;
    client.connect().await.unwrap();
    let manager = SessionManager::new(
        client,
        Policy {
            init_oauth: false,
            ..policy()
        },
    );
    let mut rx = manager.watch();
    let running = manager.spawn().unwrap();
    let status = wait_until(&mut rx, |s| s.tickles >= 3).await;
    assert_eq!(status.state, SessionState::Authenticated);
    assert_eq!(status.logins, 0);
    assert_eq!(
        sandbox.counters().access_tokens,
        1,
        "only the caller's login"
    );
    running.shutdown().await;

    // With nothing to start from, it says so instead of logging in.
    let (sandbox, client) = setup(USER).await;
    let manager = SessionManager::new(
        client,
        Policy {
            init_oauth: false,
            ..policy()
        },
    );
    let mut rx = manager.watch();
    let running = manager.spawn().unwrap();
    let status = wait_until(&mut rx, |s| matches!(s.state, SessionState::Failed(_))).await;
    let SessionState::Failed(reason) = status.state else {
        unreachable!()
    };
    assert!(
        reason.permanent && reason.message.contains("init_oauth"),
        "{reason:?}"
    );
    assert_eq!(sandbox.counters().access_tokens, 0);
    running.shutdown().await;
}

#[tokio::test]
async fn maintain_off_logs_in_and_then_only_waits() {
    let (sandbox, client) = setup(USER).await;
    let manager = SessionManager::new(
        client,
        Policy {
            maintain: false,
            ..policy()
        },
    );
    let mut rx = manager.watch();
    let running = manager.spawn().unwrap();
    wait_until(&mut rx, |s| s.state == SessionState::Authenticated).await;
    // Fifteen tickle intervals.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sandbox.counters().tickles, 0);
    running.shutdown().await;
    assert_eq!(sandbox.counters().logouts, 1);
}

#[tokio::test]
async fn init_brokerage_session_off_never_calls_init() {
    let (sandbox, client) = setup(USER).await;
    let manager = SessionManager::new(
        client,
        Policy {
            init_brokerage_session: false,
            ..policy()
        },
    );
    let mut rx = manager.watch();
    let seen = record(manager.watch());
    let running = manager.spawn().unwrap();
    let status = wait_until(&mut rx, |s| s.tickles >= 5).await;
    assert_eq!(status.state, SessionState::Authenticated);
    assert_eq!(sandbox.counters().inits, 0);
    assert!(!sandbox.has_brokerage_session(USER));
    assert!(
        !seen
            .lock()
            .unwrap()
            .contains(&SessionState::Reauthenticating)
    );
    running.shutdown().await;
}

#[tokio::test]
async fn logout_on_shutdown_off_leaves_the_session() {
    let (sandbox, client) = setup(USER).await;
    let manager = SessionManager::new(
        client,
        Policy {
            logout_on_shutdown: false,
            ..policy()
        },
    );
    let mut rx = manager.watch();
    let running = manager.spawn().unwrap();
    wait_until(&mut rx, |s| s.tickles >= 1).await;
    running.shutdown().await;
    assert_eq!(sandbox.counters().logouts, 0);
    assert!(sandbox.has_brokerage_session(USER));
}

#[tokio::test]
async fn dropping_the_running_manager_logs_out_once() {
    let (sandbox, client) = setup(USER).await;
    let manager = SessionManager::new(client, policy());
    let mut rx = manager.watch();
    let running = manager.spawn().unwrap();
    wait_until(&mut rx, |s| s.tickles >= 1).await;
    drop(running);
    wait_until(&mut rx, |s| s.state == SessionState::LoggedOut).await;
    assert_eq!(sandbox.counters().logouts, 1);
    assert!(!sandbox.has_brokerage_session(USER));
}

#[tokio::test]
async fn shutdown_is_bounded_when_the_server_hangs() {
    let (sandbox, client) = setup(USER).await;
    let manager = SessionManager::new(
        client,
        Policy {
            shutdown_timeout: Duration::from_millis(200),
            ..policy()
        },
    );
    let mut rx = manager.watch();
    let running = manager.spawn().unwrap();
    wait_until(&mut rx, |s| s.tickles >= 1).await;
    // Every answer now takes longer than the client's 2 s timeout: a tickle is in flight
    // when shutdown comes, and the logout cannot finish.
    sandbox.delay_responses(Some(Duration::from_secs(30)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    assert!(running.shutdown().await.is_some());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    assert_ne!(rx.borrow().state, SessionState::LoggedOut);
}

#[tokio::test]
async fn managers_sharing_a_token_file_log_in_once_even_after_revocation() {
    let sandbox = sandbox(Lifetimes::default()).await;
    let dir = std::env::temp_dir().join(format!("ibauth-manager-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store: Arc<dyn TokenStore> = Arc::new(FileStore::new(dir.join("tokens.json")));
    let mut receivers = Vec::new();
    let mut running = Vec::new();
    for _ in 0..4 {
        let manager = SessionManager::new(client(sandbox.base_url(), USER), policy())
            .with_store(store.clone());
        receivers.push(manager.watch());
        running.push(manager.spawn().unwrap());
    }
    for rx in &mut receivers {
        wait_until(rx, |s| {
            s.tickles >= 2 && s.state == SessionState::Authenticated
        })
        .await;
    }
    assert_eq!(
        sandbox.counters().access_tokens,
        1,
        "one login for four managers"
    );
    let logins: u64 = receivers.iter().map(|rx| rx.borrow().logins).sum();
    assert_eq!(logins, 1, "the others adopted the stored tokens");

    // The server revokes every token: all four see 401 at once, one logs in again.
    sandbox.expire_tokens_now();
    for rx in &mut receivers {
        let before = rx.borrow().tickles;
        wait_until(rx, |s| {
            s.tickles >= before + 3 && s.state == SessionState::Authenticated
        })
        .await;
    }
    assert_eq!(sandbox.counters().access_tokens, 2, "exactly one new login");
    // All at once, as processes stopped together would: one logout ends the shared session.
    let stopping: Vec<_> = running
        .into_iter()
        .map(|r| tokio::spawn(r.shutdown()))
        .collect();
    for s in stopping {
        s.await.unwrap();
    }
    assert!(
        store.load_all().unwrap().is_empty(),
        "cleared by the logout that ended the shared session"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_lost_bridge_is_re_initialised() {
    let (sandbox, client) = setup(USER).await;
    let manager = SessionManager::new(client, policy());
    let mut rx = manager.watch();
    let seen = record(manager.watch());
    let running = manager.spawn().unwrap();
    wait_until(&mut rx, |s| s.tickles >= 1).await;
    let inits = sandbox.counters().inits;
    sandbox.disconnect(USER);
    let status = wait_until(&mut rx, |s| {
        s.recoveries >= 1 && s.state == SessionState::Authenticated
    })
    .await;
    assert!(
        seen.lock()
            .unwrap()
            .contains(&SessionState::Reauthenticating)
    );
    assert_eq!(sandbox.counters().inits, inits + 1, "re-initialised once");
    assert_eq!(sandbox.counters().access_tokens, 1);
    assert_eq!(status.logins, 1);
    running.shutdown().await;
}

#[tokio::test]
async fn please_query_accounts_first_starts_recovery_not_a_backoff() {
    let (sandbox, client) = setup(USER).await;
    let manager = SessionManager::new(client, policy());
    let mut rx = manager.watch();
    let seen = record(manager.watch());
    let running = manager.spawn().unwrap();
    wait_until(&mut rx, |s| s.tickles >= 1).await;
    let statuses = sandbox.counters().statuses;
    sandbox.fail_next(1, FailWith::new(500, "Please query /accounts first"));
    let status = wait_until(&mut rx, |s| {
        s.recoveries >= 1 && s.state == SessionState::Authenticated
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains(&SessionState::Reauthenticating), "{seen:?}");
    assert!(!seen.contains(&SessionState::Disconnected), "{seen:?}");
    assert_eq!(
        sandbox.counters().statuses,
        statuses + 1,
        "status re-checked first"
    );
    assert_eq!(status.transient_failures, 0);
    running.shutdown().await;
}

/// A store of the application's own, through the trait: here, memory that counts its calls.
#[derive(Default)]
struct CountingStore {
    inner: ibauth::store::MemoryStore,
    saves: std::sync::atomic::AtomicUsize,
    locks: std::sync::atomic::AtomicUsize,
}

impl TokenStore for CountingStore {
    fn load(
        &self,
        identity: &str,
    ) -> Result<Option<ibauth::store::StoredTokens>, ibauth::store::StoreError> {
        self.inner.load(identity)
    }
    fn load_all(&self) -> Result<Vec<ibauth::store::StoredTokens>, ibauth::store::StoreError> {
        self.inner.load_all()
    }
    fn save(&self, tokens: &ibauth::store::StoredTokens) -> Result<(), ibauth::store::StoreError> {
        self.saves.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.save(tokens)
    }
    fn clear(&self, identity: &str) -> Result<(), ibauth::store::StoreError> {
        self.inner.clear(identity)
    }
    fn lock(&self) -> Result<ibauth::store::StoreLock, ibauth::store::StoreError> {
        self.locks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.lock()
    }
}

#[tokio::test]
async fn a_custom_store_keeps_tokens_across_managers() {
    use std::sync::atomic::Ordering;
    let sandbox = sandbox(Lifetimes::default()).await;
    let store = Arc::new(CountingStore::default());
    let first = SessionManager::new(
        client(sandbox.base_url(), USER),
        Policy {
            logout_on_shutdown: false,
            ..policy()
        },
    )
    .with_store(store.clone());
    let mut rx = first.watch();
    let running = first.spawn().unwrap();
    wait_until(&mut rx, |s| s.tickles >= 2).await;
    running.shutdown().await;
    assert!(store.saves.load(Ordering::SeqCst) >= 1);
    let stored = store.load_all().unwrap().pop().expect("tokens kept");
    assert_eq!(stored.method, "oauth2");
    assert!(
        stored.session_id.is_some(),
        "the session id from the tickles"
    );

    // A second manager (a restart) starts from them: no new login.
    let second =
        SessionManager::new(client(sandbox.base_url(), USER), policy()).with_store(store.clone());
    let mut rx = second.watch();
    let running = second.spawn().unwrap();
    let status = wait_until(&mut rx, |s| s.tickles >= 2).await;
    assert_eq!(status.state, SessionState::Authenticated);
    assert_eq!(status.logins, 0);
    assert_eq!(sandbox.counters().access_tokens, 1);
    assert!(
        store.locks.load(Ordering::SeqCst) >= 2,
        "refreshes take the lock"
    );
    running.shutdown().await;
    assert!(store.load_all().unwrap().is_empty(), "cleared on logout");
}
