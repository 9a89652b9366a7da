//! The session manager and process signals: SIGTERM and SIGINT stop it with exactly one
//! logout, and a handler the application installed before still runs (the signal is chained,
//! not taken). One test in its own binary: signals are process-wide.
#![cfg(unix)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ibauth::manager::{Policy, SessionManager, SessionState};
use ibauth::{Config, Oauth2Client, SigningKey};
use ibauth_sandbox::{ClientRegistration, Sandbox};

static TERM_SEEN_BY_APP: AtomicUsize = AtomicUsize::new(0);
static INT_SEEN_BY_APP: AtomicUsize = AtomicUsize::new(0);

extern "C" fn app_handler(signal: libc::c_int) {
    // Only async-signal-safe work here: an atomic increment.
    if signal == libc::SIGTERM {
        TERM_SEEN_BY_APP.fetch_add(1, Ordering::SeqCst);
    } else {
        INT_SEEN_BY_APP.fetch_add(1, Ordering::SeqCst);
    }
}

/// The application's own handler, installed with plain `sigaction` before ibauth runs.
fn install_app_handler(signal: libc::c_int) {
    // SAFETY: a zeroed sigaction with a valid handler and an empty mask is a valid argument;
    // the handler only touches atomics.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = app_handler as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(
            libc::sigaction(signal, &action, std::ptr::null_mut()),
            0,
            "sigaction"
        );
    }
}

async fn stopped_by(signal: libc::c_int, client: Oauth2Client) {
    let manager = SessionManager::new(
        client,
        Policy {
            tickle_interval: Duration::from_millis(20),
            jitter: Duration::ZERO,
            ..Policy::default()
        },
    );
    let mut rx = manager.watch();
    let running = manager.spawn().unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|s| s.tickles >= 1 && s.state == SessionState::Authenticated),
    )
    .await
    .expect("authenticated")
    .unwrap();
    let stopping = tokio::spawn(running.shutdown_on_signal());
    // The listener registers when the task first runs; until the manager stops, keep
    // signalling (an early signal only reaches the application's handler).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !stopping.is_finished() {
        assert!(Instant::now() < deadline, "the manager never stopped");
        // SAFETY: signalling our own process.
        unsafe { libc::kill(libc::getpid(), signal) };
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stopping.await.unwrap().is_some(), "the client comes back");
    assert_eq!(rx.borrow().state, SessionState::LoggedOut);
}

#[tokio::test]
async fn sigterm_and_sigint_stop_the_manager_with_one_logout_and_chain_to_the_app() {
    install_app_handler(libc::SIGTERM);
    install_app_handler(libc::SIGINT);
    let key = SigningKey::generate().unwrap();
    let sandbox = Sandbox::builder()
        .register(
            ClientRegistration::new("SIGCLIENT")
                .key("k", &key)
                .credential("sig"),
        )
        .start()
        .await
        .unwrap();
    let client = || {
        let config = Config::builder()
            .client_id("SIGCLIENT")
            .client_key_id("k")
            .credential("sig")
            .private_key(key.clone())
            .base_url(sandbox.base_url())
            .public_ip("127.0.0.1".parse().unwrap())
            .build()
            .unwrap();
        Oauth2Client::new(config).unwrap()
    };

    stopped_by(libc::SIGTERM, client()).await;
    assert_eq!(sandbox.counters().logouts, 1);
    assert!(TERM_SEEN_BY_APP.load(Ordering::SeqCst) >= 1, "chained");

    stopped_by(libc::SIGINT, client()).await;
    assert_eq!(
        sandbox.counters().logouts,
        2,
        "one more, not one per signal"
    );
    assert!(INT_SEEN_BY_APP.load(Ordering::SeqCst) >= 1, "chained");
}
