//! Soak: a session manager per auth method runs for minutes against a sandbox whose tokens
//! live about three seconds, while a seeded generator injects a random fault every 300 to 900
//! milliseconds (dropped and competing sessions, expired tokens, 401/410/429/500/503 answers,
//! slow answers, connections cut mid-response, nightly resets, session-id rotation). It must
//! never give up, and must end authenticated. The counts go to `soak-<method>.json` in the
//! test target folder and to the test output.
//!
//! `IBAUTH_SOAK_SECS` (default 120) sets the length and `IBAUTH_SOAK_SEED` the fault sequence;
//! a failing run prints its seed so it can be replayed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ibauth::manager::{Client, Policy, SessionManager, SessionState, Status};
use ibauth::oauth1a::{DhGroup, Oauth1aClient, Oauth1aConfig};
use ibauth::secrecy::SecretString;
use ibauth::{Config, DecryptionKey, Oauth2Client, SigningKey};
use ibauth_sandbox::{
    ClientRegistration, ConsumerRegistration, FailWith, Lifetimes, RFC3526_PRIME_2048, Sandbox,
};
use serde_json::json;

const USER: &str = "soaker";

/// SplitMix64: small, seedable, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn settings() -> (Duration, u64) {
    let secs = std::env::var("IBAUTH_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(120);
    let seed = std::env::var("IBAUTH_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0x1BA5_0A07);
    (Duration::from_secs(secs), seed)
}

/// Three seconds: the sandbox counts whole seconds, so a token lives 2–3 s — longer than a
/// login under the slowest injected delay (4 requests × 300 ms), shorter than anything real.
fn lifetimes() -> Lifetimes {
    Lifetimes {
        access_token: Duration::from_secs(3),
        sso_session: Duration::from_secs(3),
        ..Lifetimes::default()
    }
}

/// Unpaced: tokens here live three seconds, so logins come far faster than IBKR's limits
/// would allow (`sso/validate` 1 per minute); this sandbox does not enforce them.
fn policy() -> Policy {
    Policy {
        pacing: ibauth::pacing::PacingRules::unlimited(),
        tickle_interval: Duration::from_millis(100),
        jitter: Duration::from_millis(20),
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(500),
        // Bursts of scripted 5xx can fail a few logins in a row; the cap is for real outages.
        max_failed_logins: 25,
        renew_margin: Duration::from_secs(1),
        ..Policy::default()
    }
}

/// Injects one random fault; returns its name and how many scripted answers it queued.
///
/// Scripted answers wait in a queue for the next requests; while any is still waiting, only state faults are drawn, so bursts stay bursts instead of growing into an
/// outage that never ends (the client backs off, so it consumes them slower than a busy
/// generator could queue them).
fn inject(sandbox: &Sandbox, rng: &mut Rng, backlog: u64) -> (&'static str, u64) {
    let pick = if backlog > 0 {
        [0, 1, 2, 8, 10, 11][rng.below(6) as usize]
    } else {
        rng.below(12)
    };
    let script = |n: u64, fail: FailWith| {
        sandbox.fail_next(n as usize, fail);
        n
    };
    match pick {
        0 => {
            sandbox.drop_session(USER);
            ("drop_session", 0)
        }
        1 => {
            sandbox.report_competing(USER);
            ("competing", 0)
        }
        2 => {
            sandbox.expire_tokens_now();
            ("expire_tokens", 0)
        }
        3 => {
            let n = 1 + rng.below(2);
            ("401", script(n, FailWith::new(401, "not authenticated")))
        }
        4 => ("410", script(1, FailWith::new(410, "Gone"))),
        5 => {
            let wait = rng.below(2);
            let fail = FailWith::new(429, "Too Many Requests").retry_after(wait);
            ("429", script(1, fail))
        }
        6 => {
            let fail = FailWith::new(500, "Please query /accounts first");
            ("500", script(1, fail))
        }
        7 => {
            let n = 1 + rng.below(3);
            ("503", script(n, FailWith::new(503, "Service Unavailable")))
        }
        8 => {
            let delay = Duration::from_millis(50 + rng.below(250));
            sandbox.delay_responses(Some(delay));
            ("slow", 0)
        }
        9 => {
            let n = 1 + rng.below(2);
            sandbox.cut_next(n as u32);
            ("cut", n)
        }
        10 => {
            sandbox.nightly_reset();
            ("nightly_reset", 0)
        }
        _ => {
            sandbox.rotate_session(USER);
            ("rotate_session", 0)
        }
    }
}

async fn soak<C: Client + 'static>(method: &str, sandbox: Sandbox, client: C) {
    let (length, seed) = settings();
    // IBAUTH_SOAK_LOG=ibauth=info shows every transition and recovery action.
    if let Ok(filter) = std::env::var("IBAUTH_SOAK_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let manager = SessionManager::new(client, policy());
    let mut rx = manager.watch();
    let running = manager.spawn().unwrap();
    let failed = |s: &Status| matches!(s.state, SessionState::Failed(_));
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|s| s.state == SessionState::Authenticated),
    )
    .await
    .expect("first login")
    .unwrap();

    let mut rng = Rng(seed ^ method.len() as u64);
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    let mut slow_until: Option<Instant> = None;
    let mut queued = 0u64;
    let started = Instant::now();
    while started.elapsed() < length {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(600))).await;
        assert!(
            !failed(&rx.borrow()),
            "{method} gave up (seed {seed}): {:?}",
            rx.borrow()
        );
        if slow_until.is_some_and(|t| Instant::now() >= t) {
            sandbox.delay_responses(None);
            slow_until = None;
        }
        let backlog = queued.saturating_sub(sandbox.counters().faults_injected);
        let (kind, added) = inject(&sandbox, &mut rng, backlog);
        queued += added;
        if kind == "slow" {
            slow_until = Some(Instant::now() + Duration::from_millis(500 + rng.below(1000)));
        }
        *faults.entry(kind).or_default() += 1;
    }

    // Calm: no new faults; the session must be (or become) authenticated and stay so.
    sandbox.delay_responses(None);
    let calm = rx.borrow().tickles;
    let settled = tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|s| {
            failed(s) || (s.state == SessionState::Authenticated && s.tickles >= calm + 3)
        }),
    )
    .await
    .map(|r| r.map(|s| s.clone()));
    let end = match settled {
        Ok(Ok(end)) => end,
        _ => panic!(
            "{method} not authenticated 20 s after the faults stopped (seed {seed}): {:?}",
            rx.borrow()
        ),
    };
    assert_eq!(
        end.state,
        SessionState::Authenticated,
        "{method} (seed {seed}): {end:?}"
    );
    running.shutdown().await;

    let counters = sandbox.counters();
    let injected: u64 = faults.values().sum();
    let requests = counters.access_tokens
        + counters.sso_sessions
        + counters.validates
        + counters.inits
        + counters.statuses
        + counters.tickles
        + counters.logouts
        + counters.live_session_tokens
        + counters.rejections
        + counters.faults_injected;
    let report = json!({
        "method": method,
        "seed": seed,
        "seconds": length.as_secs(),
        "faults_injected": injected,
        "faults_by_kind": faults,
        "scripted_answers_served": counters.faults_injected,
        "requests_answered": requests,
        "requests_rejected": counters.rejections,
        "tickles": end.tickles,
        "logins": end.logins,
        "renewals": end.renewals,
        "recoveries": end.recoveries,
        "transient_failures": end.transient_failures,
        "final_state": "authenticated",
        "logouts": counters.logouts,
    });
    let path =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("soak-{method}.json"));
    let _ = std::fs::write(
        &path,
        serde_json::to_string_pretty(&report).unwrap_or_default(),
    );
    eprintln!("soak report ({}): {report}", path.display());

    // Hundreds of faults and token expiries over the default two minutes; proportionally
    // fewer for a shorter IBAUTH_SOAK_SECS.
    let secs = length.as_secs();
    assert!(injected >= secs, "about 1.6 faults a second: {report}");
    assert!(
        end.renewals + end.logins >= secs / 2,
        "tokens refreshed: {report}"
    );
    assert!(
        end.recoveries >= 1 && end.transient_failures >= 1,
        "{report}"
    );
    assert_eq!(counters.logouts, 1, "one logout at the end: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_soak_ends_authenticated() {
    let key = SigningKey::generate().unwrap();
    let sandbox = Sandbox::builder()
        .register(
            ClientRegistration::new("SOAK")
                .key("k", &key)
                .credential(USER),
        )
        .lifetimes(lifetimes())
        .start()
        .await
        .unwrap();
    let config = Config::builder()
        .client_id("SOAK")
        .client_key_id("k")
        .credential(USER)
        .private_key(key)
        .base_url(sandbox.base_url())
        .public_ip("127.0.0.1".parse().unwrap())
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let client = Oauth2Client::new(config).unwrap();
    soak("oauth2", sandbox, client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth1a_soak_ends_authenticated() {
    let signature = SigningKey::generate().unwrap();
    let encryption = SigningKey::generate().unwrap();
    let sandbox = Sandbox::builder()
        .register_consumer(ConsumerRegistration::new(
            "SOAKCONS",
            &signature,
            &encryption,
        ))
        .lifetimes(lifetimes())
        .start()
        .await
        .unwrap();
    let (token, secret) = sandbox.issue_access_token("SOAKCONS", USER).unwrap();
    let config = Oauth1aConfig::new(
        "SOAKCONS",
        token,
        SecretString::from(secret),
        signature,
        DecryptionKey::from_pem(&encryption.to_pkcs8_pem()).unwrap(),
        DhGroup::from_hex(RFC3526_PRIME_2048, 2).unwrap(),
    )
    .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
    .unwrap()
    .timeout(Duration::from_secs(2));
    let client = Oauth1aClient::new(config).unwrap();
    soak("oauth1a", sandbox, client).await;
}
