//! Several usernames: two first-party consumers (each with its own consumer key, keys and
//! realm, as ibind users have) × 50 users, plus 50 third-party grants of the default consumer,
//! kept alive by two runners on one PostgreSQL — one runner lacks consumer `beta` and never
//! claims its sessions, which the other logs in at once; when that one stops, a third runner that has `beta` takes them
//! over without a new login.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ibauth::coord::{DEFAULT_CONSUMER, Keyring, StoreKey, WorkQueue};
use ibauth::oauth1a::{DhGroup, Oauth1aConfig};
use ibauth::secrecy::SecretString;
use ibauth::{DecryptionKey, SigningKey};
use ibauth_fleet::runner::{Grant, Runner};
use ibauth_postgres::PgCoordinator;
use ibauth_sandbox::{ConsumerRegistration, CredentialSet, IssuedAccessToken, Sandbox};
use ibauth_testsupport::postgres::PgServer;

/// RFC 2409's 768-bit MODP group: too small for real use, fine for a test's logins.
const OAKLEY_768: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A3620FFFFFFFFFFFFFFFF";

struct Dir(std::path::PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A first-party consumer of its own: consumer key, signature and encryption keys.
struct FirstParty {
    key: &'static str,
    signature: SigningKey,
    encryption: SigningKey,
}

impl FirstParty {
    fn new(key: &'static str) -> Self {
        Self {
            key,
            signature: SigningKey::generate().expect("key"),
            encryption: SigningKey::generate().expect("key"),
        }
    }

    fn config(&self, group: &DhGroup, base: &str) -> Oauth1aConfig {
        Oauth1aConfig::new(
            self.key,
            "",
            SecretString::from(String::new()),
            SigningKey::from_pem(&self.signature.to_pkcs8_pem()).expect("key"),
            DecryptionKey::from_pem(&self.encryption.to_pkcs8_pem()).expect("key"),
            group.clone(),
        )
        .rest_url(&format!("{base}/v1/api/"))
        .expect("rest url")
    }
}

fn grants(issued: &[IssuedAccessToken], consumer: Option<&str>) -> Vec<Grant> {
    issued
        .iter()
        .map(|g| Grant {
            user: Some(g.user.clone()),
            consumer: consumer.map(str::to_owned),
            access_token: g.oauth_token.clone(),
            access_token_secret: SecretString::from(g.oauth_token_secret.clone()),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_consumers_share_a_fleet_and_missing_ones_are_left_to_others() {
    const N: usize = 50;
    let tickle_every = Duration::from_secs(2);
    let hold = Duration::from_secs(3);
    let poll = Duration::from_millis(200);

    let dir =
        Dir(std::env::temp_dir().join(format!("ibauth-fleet-consumers-{}", std::process::id())));
    let set = CredentialSet::load_or_create(&dir.0).expect("credential set");
    let group = DhGroup::from_hex(OAKLEY_768, 2).expect("group");
    let alpha = FirstParty::new("ALPHACK");
    let beta = FirstParty::new("BETACK");
    let sandbox = Sandbox::builder()
        .register_consumer(set.third_party_registration().dh_group(group.clone()))
        .register_consumer(
            ConsumerRegistration::new(alpha.key, &alpha.signature, &alpha.encryption)
                .dh_group(group.clone()),
        )
        .register_consumer(
            ConsumerRegistration::new(beta.key, &beta.signature, &beta.encryption)
                .dh_group(group.clone()),
        )
        .start()
        .await
        .expect("sandbox");
    let base = sandbox.base_url().to_owned();
    let tp = sandbox
        .issue_access_tokens(ibauth::oauth1a::TEST_CONSUMER, "tp", N)
        .expect("a known consumer");
    let a = sandbox
        .issue_access_tokens(alpha.key, "alpha", N)
        .expect("a known consumer");
    let b = sandbox
        .issue_access_tokens(beta.key, "beta", N)
        .expect("a known consumer");
    let mut all = grants(&tp, None);
    all.extend(grants(&a, Some("alpha")));
    all.extend(grants(&b, Some("beta")));
    let total = all.len();

    let default = Oauth1aConfig::new(
        ibauth::oauth1a::TEST_CONSUMER,
        "",
        SecretString::from(String::new()),
        SigningKey::from_pem_file(&dir.0.join("signature_key.pem")).expect("key"),
        DecryptionKey::from_pem_file(&dir.0.join("encryption_key.pem")).expect("key"),
        group.clone(),
    )
    .rest_url(&format!("{base}/v1/api/"))
    .expect("rest url");

    let pg = PgServer::start();
    let keyring = Keyring::new(vec![StoreKey::generate().expect("key")]).expect("keyring");
    let options = common::options(tickle_every, hold, poll);
    let connect = || async {
        Arc::new(
            PgCoordinator::connect(&pg.url())
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", pg.log())),
        )
    };
    let queue = connect().await;
    let with = |names: &[&str], queue: Arc<PgCoordinator>| {
        let named = names
            .iter()
            .map(|&n| {
                let fp = if n == "alpha" { &alpha } else { &beta };
                (n.to_owned(), fp.config(&group, &base))
            })
            .collect();
        Runner::with_consumers(
            queue,
            keyring.clone(),
            default.clone(),
            named,
            options.clone(),
        )
        .expect("runner")
    };
    // Two names for one consumer key would make two names for one identity.
    assert!(
        Runner::with_consumers(
            queue.clone(),
            keyring.clone(),
            default.clone(),
            vec![
                ("x".into(), alpha.config(&group, &base)),
                ("y".into(), alpha.config(&group, &base)),
            ],
            options.clone(),
        )
        .is_err()
    );
    let full = with(&["alpha", "beta"], queue.clone());
    let partial = with(&["alpha"], connect().await);

    let enrolled = full.enroll(&all).await.expect("enroll");
    assert_eq!(
        (enrolled.stored, enrolled.queued),
        (total as u64, total as u64),
        "one identity per grant, consumers apart"
    );
    // A process without `beta` cannot enroll its grants (no consumer key to key them by).
    let err = partial
        .enroll(&all[2 * N..2 * N + 1])
        .await
        .expect_err("no beta");
    assert!(err.to_string().contains("--consumer beta="), "{err}");

    let started = Instant::now();
    let run = |r: &Runner| {
        let r = r.clone();
        tokio::spawn(async move { r.run(std::future::pending()).await })
    };
    let full_task = run(&full);
    let partial_task = run(&partial);
    let deadline = Instant::now() + Duration::from_secs(20);
    while sandbox.counters().live_session_tokens < total as u64 {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} logged in after 20 s: full {:?}, partial {:?}",
            sandbox.counters().live_session_tokens,
            full.stats(),
            partial.stats()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_in = started.elapsed();
    // Claims only take a runner's own consumers' identities: the partial runner never
    // claims beta's, so the full one logs them in at once (no starvation behind a runner
    // that keeps claiming them and handing them back).
    assert_eq!(partial.stats().foreign, 0, "{:?}", partial.stats());
    assert!(
        all_in < Duration::from_secs(10),
        "all {total} logged in after {all_in:?}: full {:?}, partial {:?}",
        full.stats(),
        partial.stats()
    );
    tokio::time::sleep(tickle_every * 3).await;
    let (fs, ps) = (full.stats(), partial.stats());
    eprintln!("{total} sessions in {all_in:?}; full {fs:?}; partial {ps:?}");
    assert!(
        ps.tickles > 0 && fs.tickles > 0,
        "both worked: {fs:?} {ps:?}"
    );
    assert_eq!(
        ps.foreign, 0,
        "the partial runner never claims beta's sessions: {ps:?}"
    );
    assert_eq!(fs.foreign, 0, "{fs:?}");
    assert!(
        fs.logins >= N as u64,
        "beta's sessions were logged in by the full runner: {fs:?}"
    );
    for s in [&fs, &ps] {
        assert_eq!((s.failures, s.fenced), (0, 0), "{s:?}");
    }
    let steady = queue.queue_stats().await.expect("stats");
    assert_eq!(steady.queued, total as u64);
    let ran = started.elapsed();
    let least = ((ran - all_in).as_secs_f64() / tickle_every.as_secs_f64()) as u64;
    for g in tp.iter().chain(&a).chain(&b) {
        let s = sandbox.user_stats(&g.user);
        assert_eq!(s.live_session_tokens, 1, "{}: {s:?}", g.user);
        assert_eq!(s.max_concurrent_ticklers, 1, "{}: {s:?}", g.user);
        assert_eq!(s.takeovers, 0, "{}: {s:?}", g.user);
        assert!(
            s.tickles + 1 >= least,
            "{}: {} tickles, {least} expected",
            g.user,
            s.tickles
        );
    }

    // The full runner stops: alpha's and the default's sessions move to the partial one after
    // the hold; beta's wait — never claimed by it.
    full_task.abort();
    tokio::time::sleep(hold + tickle_every * 2).await;
    let beta_then: Vec<u64> = b
        .iter()
        .map(|g| sandbox.user_stats(&g.user).tickles)
        .collect();
    let alpha_then: Vec<u64> = a
        .iter()
        .map(|g| sandbox.user_stats(&g.user).tickles)
        .collect();
    tokio::time::sleep(tickle_every * 2).await;
    for (g, then) in b.iter().zip(&beta_then) {
        assert_eq!(
            sandbox.user_stats(&g.user).tickles,
            *then,
            "{} was tickled by a runner without its consumer",
            g.user
        );
    }
    for (g, then) in a.iter().zip(&alpha_then) {
        assert!(
            sandbox.user_stats(&g.user).tickles > *then,
            "{} not taken over",
            g.user
        );
    }
    let ps = partial.stats();
    assert_eq!((ps.failures, ps.fenced, ps.foreign), (0, 0, 0), "{ps:?}");

    // A row queued under another consumer than its document's (as rows queued before the
    // queue recorded consumers may be): one of beta's, queued as the default consumer's. The
    // partial runner (the only one running) claims it, counts it foreign once and queues it
    // again under beta, never to claim it again; the late runner takes it on below.
    let moved = ibauth_fleet::runner::grant_identity(beta.key, &b[0].oauth_token);
    assert_eq!(
        queue
            .enroll(
                std::slice::from_ref(&moved),
                DEFAULT_CONSUMER,
                Duration::ZERO
            )
            .await
            .expect("enroll"),
        0
    );
    let deadline = Instant::now() + tickle_every * 3;
    while partial.stats().foreign == 0 {
        assert!(Instant::now() < deadline, "not met: {:?}", partial.stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(tickle_every * 2).await;
    assert_eq!(
        partial.stats().foreign,
        1,
        "queued again under beta, not claimed again"
    );
    assert_eq!(
        sandbox.user_stats(&b[0].user).tickles,
        beta_then[0],
        "handed back unworked"
    );

    // A runner with beta arrives: it takes beta's sessions on, with their stored tokens.
    let late = with(&["beta"], connect().await);
    let late_task = run(&late);
    let deadline = Instant::now() + tickle_every * 3;
    for (g, then) in b.iter().zip(&beta_then) {
        while sandbox.user_stats(&g.user).tickles <= *then {
            assert!(
                Instant::now() < deadline,
                "{} not taken on: {:?}",
                g.user,
                late.stats()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    partial_task.abort();
    late_task.abort();
    let ls = late.stats();
    assert_eq!((ls.logins, ls.failures), (0, 0), "no new login: {ls:?}");
    for g in tp.iter().chain(&a).chain(&b) {
        let s = sandbox.user_stats(&g.user);
        assert_eq!(s.live_session_tokens, 1, "{}: {s:?}", g.user);
        assert_eq!(s.max_concurrent_ticklers, 1, "{}: {s:?}", g.user);
    }
    assert_eq!(sandbox.counters().rejections, 0);
}
