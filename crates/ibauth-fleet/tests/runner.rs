//! Three runners (three pools on one real PostgreSQL, as three hosts would have) keep 300
//! third-party sessions alive against the sandbox over HTTP with compressed intervals: each
//! user logged in once, tickled on schedule, never by two runners at once; one runner dies
//! and the others take its sessions over within the hold.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ibauth::coord::{Coordinator, DEFAULT_CONSUMER, Keyring, StoreKey, WorkQueue};
use ibauth::oauth1a::{DhGroup, Oauth1aConfig};
use ibauth::secrecy::SecretString;
use ibauth_fleet::runner::{Grant, Runner};
use ibauth_postgres::PgCoordinator;
use ibauth_sandbox::{CredentialSet, Sandbox};
use ibauth_testsupport::postgres::PgServer;

/// RFC 2409's 768-bit MODP group: far too small for real use, but a login's cost here is the
/// sandbox's and the runner's CPU, not what is measured.
const OAKLEY_768: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A3620FFFFFFFFFFFFFFFF";

struct Dir(std::path::PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runners_keep_300_sessions_and_take_over_from_a_dead_one() {
    const N: usize = 300;
    let tickle_every = Duration::from_secs(2);
    let hold = Duration::from_secs(3);
    let poll = Duration::from_millis(200);

    let dir = Dir(std::env::temp_dir().join(format!("ibauth-fleet-runner-{}", std::process::id())));
    let set = CredentialSet::load_or_create(&dir.0).expect("credential set");
    let group = DhGroup::from_hex(OAKLEY_768, 2).expect("group");
    let sandbox = Sandbox::builder()
        .register_consumer(set.third_party_registration().dh_group(group.clone()))
        .start()
        .await
        .expect("sandbox");
    let issued = sandbox
        .issue_access_tokens(ibauth::oauth1a::TEST_CONSUMER, "fleet", N)
        .expect("a known consumer");
    let grants: Vec<Grant> = issued
        .iter()
        .map(|g| Grant {
            user: Some(g.user.clone()),
            consumer: None,
            access_token: g.oauth_token.clone(),
            access_token_secret: SecretString::from(g.oauth_token_secret.clone()),
        })
        .collect();
    let consumer = Oauth1aConfig::new(
        ibauth::oauth1a::TEST_CONSUMER,
        "",
        SecretString::from(String::new()),
        ibauth::SigningKey::from_pem_file(&dir.0.join("signature_key.pem")).expect("key"),
        ibauth::DecryptionKey::from_pem_file(&dir.0.join("encryption_key.pem")).expect("key"),
        group,
    )
    .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
    .expect("rest url");

    let pg = PgServer::start();
    let keyring = Keyring::new(vec![StoreKey::generate().expect("key")]).expect("keyring");
    let options = common::options(tickle_every, hold, poll);
    let mut runners = Vec::new();
    let mut queues = Vec::new();
    for _ in 0..3 {
        let queue = Arc::new(
            PgCoordinator::connect(&pg.url())
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", pg.log())),
        );
        queues.push(queue.clone());
        runners.push(
            Runner::new(queue, keyring.clone(), consumer.clone(), options.clone()).expect("runner"),
        );
    }
    let enrolled = runners[0].enroll(&grants).await.expect("enroll");
    assert_eq!((enrolled.stored, enrolled.queued), (N as u64, N as u64));
    let again = runners[1]
        .enroll(&grants[..10])
        .await
        .expect("enroll again");
    assert_eq!(
        (again.stored, again.kept, again.queued),
        (0, 10, 0),
        "enrolling again keeps what is stored"
    );

    let started = Instant::now();
    let tasks: Vec<_> = runners
        .iter()
        .map(|r| {
            let r = r.clone();
            tokio::spawn(async move { r.run(std::future::pending()).await })
        })
        .collect();

    // Everyone logged in, then steady tickling.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logged_in = sandbox.counters().live_session_tokens;
        if logged_in >= N as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {logged_in} of {N} logged in after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before_kill: Vec<_> = runners.iter().map(Runner::stats).collect();
    for (i, s) in before_kill.iter().enumerate() {
        assert!(s.tickles > 0, "runner {i} did nothing: {s:?}");
        assert_eq!(s.fenced, 0, "runner {i}: {s:?}");
    }
    // Steady state: nothing waited for a worker much past its due time.
    let steady = queues[0].queue_stats().await.expect("stats");
    assert!(
        steady.most_late < Duration::from_secs(1),
        "steady state: {steady:?}"
    );

    // Runner 0 dies; and a worker that claimed work and froze (a dead host's claims) is
    // played by claims that are never handed back.
    tasks[0].abort();
    let by_identity: std::collections::HashMap<String, String> = issued
        .iter()
        .map(|g| {
            (
                ibauth_fleet::runner::grant_identity(
                    ibauth::oauth1a::TEST_CONSUMER,
                    &g.oauth_token,
                ),
                g.user.clone(),
            )
        })
        .collect();
    let mut orphans = Vec::new(); // (user, tickles then, claimed at)
    let claiming = Instant::now();
    while orphans.len() < 40 && claiming.elapsed() < Duration::from_secs(4) {
        for c in queues[0]
            .claim("dead-worker", &[DEFAULT_CONSUMER.to_owned()], 5, hold)
            .await
            .expect("claim")
        {
            let user = by_identity[&c.lease.identity].clone();
            let then = sandbox.user_stats(&user).tickles;
            orphans.push((user, then, Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        orphans.len() >= 10,
        "only {} orphaned claims",
        orphans.len()
    );
    let mut takeover = Duration::ZERO;
    let wait_until = Instant::now() + hold + Duration::from_secs(5);
    for (user, then, at) in &orphans {
        loop {
            if sandbox.user_stats(user).tickles > *then {
                takeover = takeover.max(at.elapsed());
                break;
            }
            assert!(Instant::now() < wait_until, "{user} was never taken over");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let survivors: Vec<_> = runners[1..].iter().map(Runner::stats).collect();
    eprintln!(
        "{N} sessions logged in within {all_in:?}; {} orphaned claims tickled again within \
         {takeover:?} (hold {hold:?}); survivors: {survivors:?}",
        orphans.len()
    );
    for s in &survivors {
        assert_eq!(s.fenced, 0, "a survivor's save was refused: {s:?}");
    }
    assert!(
        takeover >= hold,
        "taken over before the hold ran out: {takeover:?}"
    );
    assert!(
        takeover <= hold + poll * 2 + Duration::from_secs(1),
        "taken over after {takeover:?}, hold {hold:?}"
    );
    tokio::time::sleep(tickle_every).await;
    let stats = queues[1].queue_stats().await.expect("stats");
    assert_eq!(stats.queued, N as u64);
    assert!(
        stats.most_late < Duration::from_secs(1),
        "after the takeover: {stats:?}"
    );

    // IBKR's nightly reset: every brokerage session ends, tokens stay valid. The runners open
    // them again with `ssodh/init` — no new login.
    sandbox.nightly_reset();
    let reset_at = Instant::now();
    loop {
        let users = sandbox.all_user_stats();
        if users.values().all(|s| s.brokerage_sessions == 1) {
            break;
        }
        assert!(
            reset_at.elapsed() < tickle_every * 2 + Duration::from_secs(3),
            "brokerage sessions not reopened after the reset"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(tickle_every).await;
    let reinits: u64 = runners[1..].iter().map(|r| r.stats().reinits).sum();
    assert_eq!(
        reinits, N as u64,
        "one ssodh/init per session after the reset"
    );

    for task in &tasks[1..] {
        task.abort();
    }
    // Ten users leave: out of the queue, logged out, their documents gone.
    // A session the stopped runners still held is busy until their claims run out.
    let mut gone = runners[1].retire(&grants[..10]).await.expect("retire");
    if gone.busy > 0 {
        tokio::time::sleep(hold + Duration::from_millis(200)).await;
        let again = runners[1].retire(&grants[..10]).await.expect("retire");
        assert_eq!(again.busy, 0, "{again:?}");
        assert_eq!(
            again.unknown, gone.retired,
            "retired ones are gone: {again:?}"
        );
        gone.retired += again.retired;
    }
    assert_eq!(gone.retired, 10, "{gone:?}");
    let stats = queues[1].queue_stats().await.expect("stats");
    assert_eq!(stats.queued, (N - 10) as u64);
    for g in &issued[..10] {
        let id =
            ibauth_fleet::runner::grant_identity(ibauth::oauth1a::TEST_CONSUMER, &g.oauth_token);
        assert_eq!(queues[1].load(&id).await.expect("load"), None);
        let s = sandbox.user_stats(&g.user);
        assert_eq!(
            s.brokerage_sessions, 0,
            "{} was not logged out: {s:?}",
            g.user
        );
    }
    let stats = sandbox.user_stats(&issued[10].user);
    assert_eq!(stats.brokerage_sessions, 1, "the others stay: {stats:?}");
    let ran = started.elapsed();
    let users = sandbox.all_user_stats();
    assert_eq!(users.len(), N);
    let least_expected = ((ran - all_in).as_secs_f64() / tickle_every.as_secs_f64()) as u64;
    // Upper bound: one tickle per interval since the first login, and the login's own.
    let most_expected = (ran.as_secs_f64() / tickle_every.as_secs_f64()).ceil() as u64 + 2;
    let retired: std::collections::HashSet<&str> =
        issued[..10].iter().map(|g| g.user.as_str()).collect();
    for (user, s) in &users {
        assert_eq!(s.live_session_tokens, 1, "{user} logged in again: {s:?}");
        if retired.contains(user.as_str()) {
            continue;
        }
        assert_eq!(s.max_live_sessions, 1, "{user}: {s:?}");
        assert_eq!(s.brokerage_sessions, 1, "{user}: {s:?}");
        assert_eq!(s.takeovers, 0, "{user}: {s:?}");
        assert_eq!(s.inits, 2, "{user}: the login's and the reset's: {s:?}");
        assert_eq!(s.max_concurrent_ticklers, 1, "{user}: {s:?}");
        // The dead runner's sessions miss about one hold's worth of tickles.
        let missed = (hold.as_secs_f64() / tickle_every.as_secs_f64()).ceil() as u64 + 1;
        assert!(
            s.tickles + missed >= least_expected && s.tickles <= most_expected,
            "{user}: {} tickles, expected {least_expected}..={most_expected} over {ran:?}",
            s.tickles
        );
    }
    assert_eq!(sandbox.counters().rejections, 0);
}
