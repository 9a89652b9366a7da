//! The session manager against the sandbox: one test per recovery path, asserting the state
//! sequence and that the session ends authenticated (or `Failed` with the right reason).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ibauth::manager::{Policy, SessionManager, SessionState, Status};
use ibauth::{Config, Oauth2Client, SigningKey};
use ibauth_sandbox::{ClientRegistration, FailWith, Sandbox};
use tokio::sync::watch;

const USER: &str = "mallory";

fn policy() -> Policy {
    Policy {
        tickle_interval: Duration::from_millis(20),
        jitter: Duration::ZERO,
        compete: true,
        max_failed_logins: 3,
        min_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(40),
        logout_on_shutdown: true,
    }
}

async fn setup(credential: &str) -> (Sandbox, Oauth2Client) {
    let key = SigningKey::generate().unwrap();
    let sandbox = Sandbox::builder()
        .register(
            ClientRegistration::new("MCLIENT")
                .key("k", &key)
                .credential(USER),
        )
        .start()
        .await
        .unwrap();
    let config = Config::builder()
        .client_id("MCLIENT")
        .client_key_id("k")
        .credential(credential)
        .private_key(key)
        .base_url(sandbox.base_url())
        .public_ip("127.0.0.1".parse().unwrap())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    (sandbox, Oauth2Client::new(config).unwrap())
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
    let running = manager.spawn();
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
    let running = manager.spawn();
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
    let running = manager.spawn();
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
    let running = manager.spawn();
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
    let running = manager.spawn();
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
    let running = manager.spawn();
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
async fn transient_login_failures_stop_at_the_cap() {
    let (sandbox, client) = setup(USER).await;
    sandbox.fail_next(100, FailWith::new(503, "Service Unavailable"));
    let manager = SessionManager::new(client, policy());
    let mut rx = manager.watch();
    let running = manager.spawn();
    let status = wait_until(&mut rx, |s| matches!(s.state, SessionState::Failed(_))).await;
    let SessionState::Failed(reason) = status.state else {
        unreachable!()
    };
    assert!(!reason.permanent, "{reason:?}");
    assert_eq!(
        sandbox.counters().faults_injected,
        3,
        "exactly max_failed_logins attempts"
    );
    running.shutdown().await;
}
