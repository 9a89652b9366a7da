//! The pacer end to end, on a hand-moved clock: no test sleeps or reads the wall clock.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::schedule::tests::{Rng, violation};
use super::*;

const GET: Method = Method::GET;
const ACCOUNTS: &str = "/v1/api/portfolio/accounts";
const T0: u64 = 1_700_000_000_000;

fn pacer(rules: PacingRules, ledger: Option<PaceLedger>) -> (Pacer, Arc<ManualClock>) {
    let clock = ManualClock::at(T0);
    (pacer_on(rules, ledger, &clock), clock)
}

fn pacer_on(rules: PacingRules, ledger: Option<PaceLedger>, clock: &Arc<ManualClock>) -> Pacer {
    Pacer::build(
        rules,
        ledger.map(Backend::File),
        PaceClock::Manual(clock.clone()),
    )
}

/// Lets spawned tasks run until they block (single-threaded test runtime).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// `(tag, Ok((reserved time, waited)) or Err(Paced))` from [`spawn_acquire`].
type Turn = (usize, Result<(u64, Duration), Paced>);

/// Acquires in a task; reports `(tag, result)` with the reserved time when it gets its turn.
fn spawn_acquire(
    pacer: &Pacer,
    path: &'static str,
    max_wait: Duration,
    tag: usize,
    done: &mpsc::UnboundedSender<Turn>,
) -> JoinHandle<()> {
    let pacer = pacer.clone();
    let done = done.clone();
    tokio::spawn(async move {
        let got = pacer.acquire_within(&GET, path, max_wait).await;
        let _ = done.send((tag, got.map(|p| (p.at, p.waited))));
    })
}

/// Fails instead of hanging if `f` would wait on the manual clock.
async fn now_or_fail<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .expect("should not wait")
}

fn accounts_rules() -> PacingRules {
    PacingRules::ibkr() // GET /portfolio/accounts: 1/5s, margin 100 ms → 5.1 s apart
}

#[tokio::test]
async fn equal_requests_get_their_turns_in_order_one_window_apart() {
    let (pacer, clock) = pacer(accounts_rules(), None);
    let (tx, mut rx) = mpsc::unbounded_channel();
    for tag in 0..4 {
        spawn_acquire(&pacer, ACCOUNTS, Duration::from_secs(60), tag, &tx);
        settle().await;
    }
    let mut order = Vec::new();
    for step in 0..4u64 {
        settle().await;
        while let Ok((tag, got)) = rx.try_recv() {
            let (at, waited) = got.unwrap();
            assert_eq!(at, T0 + 5100 * tag as u64, "turn of caller {tag}");
            assert_eq!(waited, Duration::from_millis(5100 * tag as u64));
            order.push(tag);
        }
        assert_eq!(order.len() as u64, step + 1, "one turn per window");
        clock.advance(5100);
    }
    assert_eq!(order, vec![0, 1, 2, 3]);
}

#[tokio::test]
async fn a_slow_endpoint_waiter_does_not_delay_other_requests() {
    let (pacer, _clock) = pacer(accounts_rules(), None);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _ = now_or_fail(pacer.acquire(&GET, ACCOUNTS)).await.unwrap();
    let slow = spawn_acquire(&pacer, ACCOUNTS, Duration::from_secs(60), 1, &tx);
    settle().await;
    assert!(
        rx.try_recv().is_err() && !slow.is_finished(),
        "the second waits 5.1 s"
    );
    // Global-only requests (and other endpoints) go now, many of them.
    for path in [
        "/iserver/accounts",
        "/portfolio/U1/positions/0",
        "/iserver/trades",
    ] {
        let permit = now_or_fail(pacer.acquire(&GET, path)).await.unwrap();
        assert_eq!((permit.at, permit.waited), (T0, Duration::ZERO), "{path}");
    }
    slow.abort();
}

#[tokio::test]
async fn a_wait_beyond_max_wait_fails_at_once_and_reserves_nothing() {
    let (pacer, clock) = pacer(accounts_rules(), None);
    let _ = now_or_fail(pacer.acquire(&GET, ACCOUNTS)).await.unwrap();
    clock.advance(100);
    let paced = now_or_fail(pacer.acquire_within(&GET, ACCOUNTS, Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert_eq!(
        paced,
        Paced {
            request: "GET /portfolio/accounts".into(),
            wait: Duration::from_millis(5000),
            bucket: "GET /portfolio/accounts".into(),
            limit: "1/5s".into(),
            paused: false,
            max_wait: Duration::from_secs(1),
        }
    );
    let text = paced.to_string();
    assert!(
        text.contains("would wait at least 5s for its turn (1/5s on GET /portfolio/accounts)"),
        "{text}"
    );
    assert!(text.contains("raise pacing.max_wait"), "{text}");
    // Nothing was reserved: the next caller's turn is still 5.1 s after the first, not 10.2.
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_acquire(&pacer, ACCOUNTS, Duration::from_secs(60), 0, &tx);
    settle().await;
    clock.advance(5000);
    settle().await;
    let (_, got) = rx.try_recv().expect("its turn came at T0 + 5.1 s");
    assert_eq!(got.unwrap().0, T0 + 5100);
}

#[tokio::test]
async fn the_global_budget_paces_everything_and_the_endpoint_budget_adds_to_it() {
    let rules = PacingRules::unlimited()
        .with_global("3/s".parse().unwrap())
        .with_endpoint(Rule::new(None, "/tickle", "1/s".parse().unwrap()));
    let rules = PacingRules {
        margin: Duration::ZERO,
        ..rules
    };
    let (pacer, _clock) = pacer(rules, None);
    let wait = |p: &'static str| {
        let pacer = pacer.clone();
        async move {
            match pacer.acquire_within(&GET, p, Duration::ZERO).await {
                Ok(_) => None,
                Err(e) => Some((e.wait, e.bucket)),
            }
        }
    };
    assert_eq!(wait("/tickle").await, None);
    assert_eq!(
        wait("/tickle").await,
        Some((Duration::from_secs(1), "* /tickle".into()))
    );
    assert_eq!(wait("/a").await, None);
    assert_eq!(wait("/b").await, None);
    assert_eq!(
        wait("/c").await,
        Some((Duration::from_secs(1), "global".into()))
    );
}

#[tokio::test]
async fn a_429_pauses_the_endpoint_budget_for_retry_after() {
    let (pacer, clock) = pacer(accounts_rules(), None);
    pacer.pause(&GET, ACCOUNTS, Some(Duration::from_secs(30)));
    let paced = now_or_fail(pacer.acquire_within(&GET, ACCOUNTS, Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(paced.wait, Duration::from_secs(30));
    assert_eq!(paced.bucket, "GET /portfolio/accounts");
    assert!(paced.paused);
    assert!(
        paced.to_string().contains("paused after HTTP 429"),
        "{paced}"
    );
    // Other budgets carry on.
    let _ = now_or_fail(pacer.acquire_within(&GET, "/iserver/accounts", Duration::ZERO))
        .await
        .unwrap();
    clock.advance(30_000);
    let _ = now_or_fail(pacer.acquire_within(&GET, ACCOUNTS, Duration::ZERO))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_429_without_retry_after_pauses_the_global_budget_for_the_default() {
    let (pacer, _clock) = pacer(accounts_rules(), None);
    pacer.pause(&GET, "/iserver/accounts", None);
    for path in ["/iserver/accounts", "/portfolio/U1/ledger", ACCOUNTS] {
        let paced = now_or_fail(pacer.acquire_within(&GET, path, Duration::ZERO))
            .await
            .unwrap_err();
        assert_eq!(paced.wait, Duration::from_secs(60), "{path}");
        assert_eq!(
            (paced.bucket.as_str(), paced.paused),
            ("global", true),
            "{path}"
        );
    }
    // A Retry-After of years is capped at an hour.
    pacer.pause(&GET, "/x", Some(Duration::from_secs(10 * 365 * 86_400)));
    let paced = now_or_fail(pacer.acquire_within(&GET, "/x", Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(paced.wait, MAX_PAUSE);
    // Nothing to pause without limits: no panic, nothing paced.
    let (free, _) = super::tests::pacer(PacingRules::unlimited(), None);
    free.pause(&GET, "/x", None);
    let _ = now_or_fail(free.acquire_within(&GET, "/x", Duration::ZERO))
        .await
        .unwrap();
}

#[tokio::test]
async fn in_flight_slots_are_freed_when_the_permit_drops() {
    let (pacer, clock) = pacer(
        PacingRules::unlimited().with_endpoint(Rule::new(
            Some(GET),
            "/iserver/marketdata/history",
            Limit::Concurrent(2),
        )),
        None,
    );
    let history = "/iserver/marketdata/history?conid=1";
    let a = now_or_fail(pacer.acquire(&GET, history)).await.unwrap();
    let _b = now_or_fail(pacer.acquire(&GET, history)).await.unwrap();
    let paced = now_or_fail(pacer.acquire_within(&GET, history, Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(
        (paced.bucket.as_str(), paced.limit.as_str()),
        ("GET /iserver/marketdata/history", "2 concurrent")
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_acquire(
        &pacer,
        "/iserver/marketdata/history",
        Duration::from_secs(10),
        0,
        &tx,
    );
    settle().await;
    assert!(rx.try_recv().is_err(), "waits for a slot");
    drop(a);
    settle().await;
    assert!(rx.try_recv().expect("got the freed slot").1.is_ok());
    // (That task has ended and freed its slot; take it again so both are held.)
    let _c = now_or_fail(pacer.acquire(&GET, history)).await.unwrap();
    // A waiter that gets no slot within max_wait gives up with Paced.
    spawn_acquire(
        &pacer,
        "/iserver/marketdata/history",
        Duration::from_secs(2),
        1,
        &tx,
    );
    settle().await;
    clock.advance(2000);
    settle().await;
    let (_, got) = rx.try_recv().expect("gave up");
    assert_eq!(got.unwrap_err().wait, Duration::from_secs(2));
}

#[tokio::test]
async fn a_caller_that_stops_waiting_gives_its_turn_back() {
    let (pacer, _clock) = pacer(accounts_rules(), None);
    let (tx, _rx) = mpsc::unbounded_channel();
    let _ = now_or_fail(pacer.acquire(&GET, ACCOUNTS)).await.unwrap();
    let waiter = spawn_acquire(&pacer, ACCOUNTS, Duration::from_secs(60), 0, &tx);
    settle().await;
    let wait = |pacer: Pacer| async move {
        pacer
            .acquire_within(&GET, ACCOUNTS, Duration::ZERO)
            .await
            .unwrap_err()
            .wait
    };
    assert_eq!(wait(pacer.clone()).await, Duration::from_millis(10_200));
    waiter.abort();
    settle().await;
    assert_eq!(wait(pacer.clone()).await, Duration::from_millis(5100));
}

#[tokio::test]
async fn unlimited_rules_never_wait() {
    let (pacer, _clock) = pacer(PacingRules::unlimited(), None);
    for _ in 0..1000 {
        let permit = now_or_fail(pacer.acquire_within(&GET, ACCOUNTS, Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(permit.waited, Duration::ZERO);
    }
}

/// Random streams of requests from several callers (and, with a ledger, several pacers on
/// one file), each taking the turn it is given: no bucket's window ever holds too many.
async fn random_streams(seed: u64, pacers: usize, ledger: Option<&std::path::Path>) {
    let clock = ManualClock::at(T0);
    let rules = PacingRules::unlimited()
        .with_global("4/s".parse().unwrap())
        .with_endpoint(Rule::new(Some(GET), "/slow", "1/2s".parse().unwrap()))
        .with_endpoint(Rule::new(Some(GET), "/mid/*", "2/s".parse().unwrap()));
    let rules = PacingRules {
        margin: Duration::from_millis(50),
        ..rules
    };
    let pacers: Vec<Pacer> = (0..pacers)
        .map(|_| {
            let ledger = ledger.map(|p| PaceLedger::open(p, "me").unwrap());
            pacer_on(rules.clone(), ledger, &clock)
        })
        .collect();
    let paths = ["/slow", "/mid/a", "/mid/b", "/free/1", "/free/2"];
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut rng = Rng::new(seed);
    let mut tasks = Vec::new();
    for _ in 0..120 {
        let p = &pacers[rng.below(pacers.len() as u64) as usize];
        let path = paths[rng.below(paths.len() as u64) as usize];
        let max_wait = Duration::from_millis(rng.below(6000));
        let k = paths.iter().position(|x| *x == path).unwrap();
        tasks.push(spawn_acquire(p, path, max_wait, k, &tx));
        settle().await;
        clock.advance(rng.below(400));
    }
    for _ in 0..200 {
        settle().await;
        clock.advance(100);
    }
    drop(tx);
    let mut global = Vec::new();
    let mut slow = Vec::new();
    let mut mid = Vec::new();
    let mut refused = 0;
    while let Some((k, got)) = rx.recv().await {
        let Ok((at, _)) = got else {
            refused += 1;
            continue;
        };
        global.push(at);
        match k {
            0 => slow.push(at),
            1 | 2 => mid.push(at),
            _ => {}
        }
    }
    assert!(tasks.iter().all(JoinHandle::is_finished));
    assert!(
        refused > 0 && global.len() > 20,
        "seed {seed}: the stream exercises both outcomes"
    );
    assert_eq!(violation(&global, 4, 1050), None, "seed {seed}: global");
    assert_eq!(violation(&slow, 1, 2050), None, "seed {seed}: /slow");
    assert_eq!(violation(&mid, 2, 1050), None, "seed {seed}: /mid/*");
}

#[tokio::test]
async fn random_streams_keep_every_window_in_process() {
    for seed in 1..=6 {
        random_streams(seed, 1, None).await;
    }
}

#[tokio::test]
async fn random_streams_keep_every_window_across_pacers_sharing_a_ledger() {
    let path = ledger::tests::temp("random");
    for seed in 1..=4 {
        let _ = std::fs::remove_file(&path);
        random_streams(seed, 3, Some(&path)).await;
    }
}

#[tokio::test]
async fn two_pacers_on_one_ledger_wait_for_each_other_but_not_for_other_identities() {
    let path = ledger::tests::temp("two");
    let clock = ManualClock::at(T0);
    let open = |id: &str| Some(PaceLedger::open(&path, id).unwrap());
    let a = pacer_on(accounts_rules(), open("me"), &clock);
    let b = pacer_on(accounts_rules(), open("me"), &clock);
    let other = pacer_on(accounts_rules(), open("someone-else"), &clock);
    assert_eq!(now_or_fail(a.acquire(&GET, ACCOUNTS)).await.unwrap().at, T0);
    clock.advance(1000);
    let paced = now_or_fail(b.acquire_within(&GET, ACCOUNTS, Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(paced.wait, Duration::from_millis(4100));
    assert_eq!(
        now_or_fail(other.acquire(&GET, ACCOUNTS))
            .await
            .unwrap()
            .waited,
        Duration::ZERO
    );
    // A pause reaches the other pacer through the file.
    a.pause(&GET, "/iserver/accounts", Some(Duration::from_secs(7)));
    let paced = now_or_fail(b.acquire_within(&GET, "/iserver/accounts", Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!((paced.wait, paced.paused), (Duration::from_secs(7), true));
    // The file holds what it should: ours, per identity, in Unix ms.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        doc["ids"]["me"]["GET /portfolio/accounts"]["t"],
        serde_json::json!([[T0, 1]])
    );
    assert_eq!(doc["ids"]["me"]["GET /portfolio/accounts"]["w"], 5100);
    assert_eq!(doc["ids"]["me"]["global"]["p"], T0 + 1000 + 7000);
    assert_eq!(
        doc["ids"]["someone-else"]["GET /portfolio/accounts"]["t"],
        serde_json::json!([[T0 + 1000, 1]])
    );
}

#[tokio::test]
async fn a_corrupt_ledger_is_reset_and_pacing_goes_on() {
    let path = ledger::tests::temp("corrupt-pacer");
    let clock = ManualClock::at(T0);
    let a = pacer_on(
        accounts_rules(),
        Some(PaceLedger::open(&path, "me").unwrap()),
        &clock,
    );
    std::fs::write(&path, b"{\"v\":1,\"ids\":{\"me\":{\"glo").unwrap();
    let _ = now_or_fail(a.acquire(&GET, ACCOUNTS)).await.unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        doc["ids"]["me"]["GET /portfolio/accounts"]["t"],
        serde_json::json!([[T0, 1]])
    );
    // Our own reservations survive a reset: they are kept in-process too.
    std::fs::write(&path, b"garbage").unwrap();
    let paced = now_or_fail(a.acquire_within(&GET, ACCOUNTS, Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(paced.wait, Duration::from_millis(5100));
}

#[tokio::test]
async fn times_years_in_the_future_block_no_longer_than_the_cap() {
    let path = ledger::tests::temp("future");
    let clock = ManualClock::at(T0);
    let years = T0 + 10 * 365 * 86_400_000;
    let hostile = serde_json::json!({
        "v": 1,
        "ids": { "me": {
            "GET /portfolio/accounts": { "w": u64::MAX, "t": [[years, u32::MAX], [u64::MAX, 1]], "p": 0 },
            "global": { "w": 1, "t": [], "p": u64::MAX },
        } }
    });
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, hostile.to_string()).unwrap();
    let rules = accounts_rules();
    let a = pacer_on(
        rules.clone(),
        Some(PaceLedger::open(&path, "me").unwrap()),
        &clock,
    );
    // The longest window is /iserver/scanner/params' 15 min (+ margin); max_wait is 30 s.
    let horizon = Duration::from_millis(900_100);
    let paced = now_or_fail(a.acquire_within(&GET, ACCOUNTS, Duration::from_secs(365 * 86_400)))
        .await
        .unwrap_err();
    assert!(
        paced.wait <= MAX_PAUSE.max(horizon + Duration::from_millis(5100)),
        "{paced}"
    );
    assert!(
        paced.wait >= horizon,
        "the far times still count, at the cap: {paced}"
    );
    // The pause read from the file is capped at an hour.
    let paced = now_or_fail(a.acquire_within(&GET, "/iserver/accounts", Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!((paced.wait, paced.paused), (MAX_PAUSE, true));
    // And the file now holds the capped values, so others are not held up longer either.
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let t = &doc["ids"]["me"]["GET /portfolio/accounts"]["t"];
    assert_eq!(t[0][0], T0 + 900_100, "{doc}");
    assert_eq!(doc["ids"]["me"]["global"]["p"], T0 + 3_600_000, "{doc}");
    // Once the cap has passed, requests go again.
    clock.advance(3_600_000);
    let _ = now_or_fail(a.acquire_within(&GET, ACCOUNTS, Duration::ZERO))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_ledger_locked_elsewhere_for_long_falls_back_to_in_process() {
    let path = ledger::tests::temp("stuck");
    let clock = ManualClock::at(T0);
    let ledger = PaceLedger::open(&path, "me").unwrap();
    let holder = PaceLedger::open(&path, "me").unwrap();
    let a = pacer_on(accounts_rules(), Some(ledger), &clock);
    let held = holder.try_lock().unwrap().unwrap();
    // Real time here: the lock wait is the one wall-clock wait in the pacer (≈2 s).
    let permit = tokio::time::timeout(Duration::from_secs(10), a.acquire(&GET, ACCOUNTS))
        .await
        .expect("gives up on the lock")
        .unwrap();
    assert_eq!(permit.at, T0);
    drop(held);
    // The in-process reservation still counts, and reaches the file at the next transaction.
    let paced = now_or_fail(a.acquire_within(&GET, ACCOUNTS, Duration::ZERO))
        .await
        .unwrap_err();
    assert_eq!(paced.wait, Duration::from_millis(5100));
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        doc["ids"]["me"]["GET /portfolio/accounts"]["t"],
        serde_json::json!([[T0, 1]])
    );
}

#[test]
fn pacer_and_permit_are_send_sync_and_cheap_to_clone() {
    fn send_sync<T: Send + Sync + Clone>() {}
    send_sync::<Pacer>();
    fn send<T: Send>(_: &T) {}
    let pacer = Pacer::new(PacingRules::ibkr());
    send(&pacer.acquire(&GET, "/x"));
    assert!(Arc::ptr_eq(&pacer.clone().inner, &pacer.inner));
}
