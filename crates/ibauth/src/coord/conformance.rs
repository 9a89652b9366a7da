//! The semantics every [`Coordinator`] must have, as tests: the in-memory coordinator runs
//! them, and so do the PostgreSQL and Redis implementations against real servers. Each check
//! panics with what went wrong; identities are fresh per run, so a store can be reused.
//!
//! `sleep` is how the caller lets time pass (a paused tokio clock, or a real sleep): leases in
//! these checks last [`SHORT_TTL`].

use std::sync::Arc;
use std::time::Duration;

use super::{
    Acquired, Claimed, Coordinator, DEFAULT_CONSUMER, Event, Events, Lease, Member, SealedDoc,
    WorkQueue,
};
use crate::client::BoxFuture;

/// The lease length the expiry checks use; `sleep` is asked for a little more than this.
pub const SHORT_TTL: Duration = Duration::from_millis(1500);

/// How long a check waits for a notification before it fails.
const EVENT_WAIT: Duration = Duration::from_secs(5);

/// How the caller lets time pass.
pub type Sleep<'s> = &'s (dyn Fn(Duration) -> BoxFuture<'static, ()> + Sync);

fn fresh(what: &str) -> String {
    let mut b = [0u8; 6];
    let _ = aws_lc_rs::rand::fill(&mut b);
    let tag: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("conformance-{what}-{tag}")
}

fn doc(bytes: &[u8]) -> SealedDoc {
    SealedDoc {
        key_id: "testkey".into(),
        bytes: bytes.to_vec(),
        version: 0,
        generation: 0,
    }
}

async fn granted(coord: &dyn Coordinator, identity: &str, holder: &str, ttl: Duration) -> Lease {
    match coord.acquire(identity, holder, ttl).await {
        Ok(Acquired::Granted(lease)) => lease,
        other => panic!("{identity}: expected the lease for {holder}, got {other:?}"),
    }
}

/// Waits for an event matching `want`, skipping others.
async fn expect_event(events: &mut Events, want: impl Fn(&Event) -> bool, what: &str) -> Event {
    let deadline = tokio::time::Instant::now() + EVENT_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if want(&event) => return event,
            Ok(Ok(_)) => continue,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => panic!("{what}: the event feed closed: {e}"),
            Err(_) => panic!("{what}: no event within {EVENT_WAIT:?}"),
        }
    }
}

/// Runs every check.
pub async fn run_all(coord: &dyn Coordinator, sleep: Sleep<'_>) {
    leases_are_exclusive_and_fenced(coord).await;
    leases_expire_and_generations_grow(coord, sleep).await;
    stores_are_compare_and_set(coord).await;
    changes_are_notified(coord).await;
    members_are_listed_while_alive(coord, sleep).await;
    pacing_transactions_are_exclusive(coord).await;
    names_and_sizes_are_bounded(coord).await;
}

/// One holder at a time; the holder renews; a release frees the lease for the next holder,
/// with a higher generation.
pub async fn leases_are_exclusive_and_fenced(coord: &dyn Coordinator) {
    let id = fresh("lease");
    let ttl = Duration::from_secs(30);
    assert_eq!(coord.lease_info(&id).await.expect("lease_info"), None);
    let a = granted(coord, &id, "holder-a", ttl).await;
    assert!(a.generation >= 1);
    match coord.acquire(&id, "holder-b", ttl).await.expect("acquire") {
        Acquired::Held(info) => {
            assert_eq!(info.holder, "holder-a");
            assert_eq!(info.generation, a.generation);
            assert!(info.expires_in > Duration::ZERO && info.expires_in <= ttl);
        }
        other => panic!("a live lease was granted twice: {other:?}"),
    }
    let again = granted(coord, &id, "holder-a", ttl).await;
    assert_eq!(again, a, "the holder renews its own lease, same generation");
    coord.renew(&a, ttl).await.expect("renew");
    let mut events = coord.subscribe(&id).await.expect("subscribe");
    coord.release(&a).await.expect("release");
    expect_event(&mut events, |e| *e == Event::Released, "release").await;
    let b = granted(coord, &id, "holder-b", ttl).await;
    assert!(b.generation > a.generation, "{b:?} after {a:?}");
    assert!(
        coord.renew(&a, ttl).await.is_err(),
        "the old lease is fenced"
    );
    coord.release(&a).await.expect("a stale release is a no-op");
    let info = coord.lease_info(&id).await.expect("info").expect("held");
    assert_eq!(
        (info.holder.as_str(), info.generation),
        ("holder-b", b.generation)
    );

    // Many contenders at once: exactly one wins.
    let id = fresh("race");
    let wins = futures_util::future::join_all((0..16).map(|n| {
        let id = id.clone();
        async move { coord.acquire(&id, &format!("racer-{n}"), ttl).await }
    }))
    .await
    .into_iter()
    .filter(|r| matches!(r, Ok(Acquired::Granted(_))))
    .count();
    assert_eq!(wins, 1, "one of 16 concurrent contenders gets the lease");
}

/// An unrenewed lease expires; the next holder gets a higher generation; the old holder's
/// renewals and writes are refused.
pub async fn leases_expire_and_generations_grow(coord: &dyn Coordinator, sleep: Sleep<'_>) {
    let id = fresh("expiry");
    let a = granted(coord, &id, "sleeper", SHORT_TTL).await;
    coord.store(&a, &doc(b"one")).await.expect("store");
    sleep(SHORT_TTL + Duration::from_millis(500)).await;
    let err = coord
        .store(&a, &doc(b"stale"))
        .await
        .expect_err("a write under an expired lease is refused");
    assert!(
        matches!(err, super::CoordError::Fenced { .. }),
        "fenced: {err}"
    );
    let b = granted(coord, &id, "taker", Duration::from_secs(30)).await;
    assert!(b.generation > a.generation);
    assert!(matches!(
        coord.renew(&a, SHORT_TTL).await,
        Err(super::CoordError::Fenced { .. })
    ));
    assert!(matches!(
        coord.store(&a, &doc(b"stale")).await,
        Err(super::CoordError::Fenced { .. })
    ));
    let stored = coord.load(&id).await.expect("load").expect("doc");
    assert_eq!(stored.bytes, b"one", "the fenced write changed nothing");
    assert_eq!(stored.generation, a.generation);
    assert!(matches!(
        coord.acquire(&id, "sleeper", SHORT_TTL).await,
        Ok(Acquired::Held(_))
    ));
}

/// Writes go through only under the current lease; versions grow with each write; a
/// removal needs the lease too.
pub async fn stores_are_compare_and_set(coord: &dyn Coordinator) {
    let id = fresh("cas");
    let ttl = Duration::from_secs(30);
    assert_eq!(coord.load(&id).await.expect("load"), None);
    let a = granted(coord, &id, "writer", ttl).await;
    let v1 = coord.store(&a, &doc(b"first")).await.expect("store");
    let v2 = coord.store(&a, &doc(b"second")).await.expect("store");
    assert!(v2 > v1, "versions grow: {v1} then {v2}");
    let stored = coord.load(&id).await.expect("load").expect("doc");
    assert_eq!(
        (stored.bytes.as_slice(), stored.version, stored.generation),
        (&b"second"[..], v2, a.generation)
    );
    assert_eq!(stored.key_id, "testkey");
    assert!(
        coord.identities().await.expect("identities").contains(&id),
        "listed"
    );
    let forged = Lease {
        generation: a.generation + 1,
        ..a.clone()
    };
    assert!(coord.store(&forged, &doc(b"forged")).await.is_err());
    let other = Lease {
        holder: "someone-else".into(),
        ..a.clone()
    };
    assert!(coord.store(&other, &doc(b"other")).await.is_err());
    assert!(coord.remove(&other).await.is_err());
    coord.remove(&a).await.expect("remove");
    assert_eq!(coord.load(&id).await.expect("load"), None);
    let v3 = coord.store(&a, &doc(b"third")).await.expect("store");
    assert!(v3 > v2, "versions never go back, even after a removal");
}

/// Subscribers hear of saves, removals, releases and recovery requests.
pub async fn changes_are_notified(coord: &dyn Coordinator) {
    let id = fresh("notify");
    let ttl = Duration::from_secs(30);
    let mut events = coord.subscribe(&id).await.expect("subscribe");
    let mut second = coord.subscribe(&id).await.expect("subscribe");
    let other = fresh("other");
    let mut unrelated = coord.subscribe(&other).await.expect("subscribe");
    let a = granted(coord, &id, "leader", ttl).await;
    let v = coord.store(&a, &doc(b"x")).await.expect("store");
    expect_event(&mut events, |e| *e == Event::Saved(v), "save").await;
    expect_event(
        &mut second,
        |e| *e == Event::Saved(v),
        "save, second subscriber",
    )
    .await;
    coord.request_recovery(&id).await.expect("request");
    expect_event(&mut events, |e| *e == Event::RecoveryRequested, "recovery").await;
    coord.remove(&a).await.expect("remove");
    expect_event(&mut events, |e| *e == Event::Removed, "removal").await;
    coord.release(&a).await.expect("release");
    expect_event(&mut events, |e| *e == Event::Released, "release").await;
    assert!(
        !matches!(unrelated.try_recv(), Ok(Event::Saved(_) | Event::Released)),
        "events are per identity"
    );
}

/// Members are listed while their heartbeats are fresh, and not after they leave or go quiet.
pub async fn members_are_listed_while_alive(coord: &dyn Coordinator, sleep: Sleep<'_>) {
    let id = fresh("members");
    let member = |name: &str, leader| Member {
        id: name.into(),
        leader,
        about: format!("{name} on host-1, pid 42"),
        seen_ago: Duration::ZERO,
    };
    coord
        .heartbeat(&id, &member("m-1", true), Duration::from_secs(30))
        .await
        .expect("heartbeat");
    coord
        .heartbeat(&id, &member("m-2", false), SHORT_TTL)
        .await
        .expect("heartbeat");
    coord
        .heartbeat(&id, &member("m-3", false), Duration::from_secs(30))
        .await
        .expect("heartbeat");
    let listed = coord.members(&id).await.expect("members");
    let names: Vec<&str> = listed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(names, ["m-1", "m-2", "m-3"]);
    assert!(listed[0].leader && !listed[1].leader);
    assert_eq!(listed[0].about, "m-1 on host-1, pid 42");
    coord.leave(&id, "m-3").await.expect("leave");
    sleep(SHORT_TTL + Duration::from_millis(500)).await;
    let listed = coord.members(&id).await.expect("members");
    let names: Vec<&str> = listed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(names, ["m-1"], "m-2 went quiet, m-3 left");
    assert!(listed[0].seen_ago >= SHORT_TTL, "{:?}", listed[0].seen_ago);
}

/// A pacing transaction excludes others on the same account until it commits or is dropped;
/// a dropped one changes nothing.
pub async fn pacing_transactions_are_exclusive(coord: &dyn Coordinator) {
    let account = fresh("pace");
    let first = coord.pace(&account).await.expect("pace");
    assert_eq!(first.current(), None);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let waiter = {
        let order = order.clone();
        async move {
            let txn = coord.pace(&account).await.expect("pace");
            let seen = txn.current().map(<[u8]>::to_vec);
            order
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push("second");
            txn.commit(b"second".to_vec()).await.expect("commit");
            seen
        }
    };
    let holder = {
        let order = order.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            order
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push("first");
            first.commit(b"first".to_vec()).await.expect("commit");
        }
    };
    let (seen, ()) = tokio::join!(waiter, holder);
    assert_eq!(
        seen.as_deref(),
        Some(&b"first"[..]),
        "the second saw the first's write"
    );
    assert_eq!(
        *order.lock().unwrap_or_else(|p| p.into_inner()),
        ["first", "second"]
    );
    let account2 = fresh("pace-drop");
    let txn = coord.pace(&account2).await.expect("pace");
    txn.commit(b"kept".to_vec()).await.expect("commit");
    let txn = coord.pace(&account2).await.expect("pace");
    drop(txn);
    let txn = coord.pace(&account2).await.expect("pace after a drop");
    assert_eq!(txn.current(), Some(&b"kept"[..]));
}

/// Names and documents are bounded before anything reaches the store.
pub async fn names_and_sizes_are_bounded(coord: &dyn Coordinator) {
    let ttl = Duration::from_secs(5);
    let long = "x".repeat(super::MAX_NAME_LEN + 1);
    assert!(coord.acquire(&long, "h", ttl).await.is_err());
    assert!(coord.acquire("", "h", ttl).await.is_err());
    assert!(coord.acquire("id\n", "h", ttl).await.is_err());
    let id = fresh("size");
    let lease = granted(coord, &id, "h", ttl).await;
    let big = doc(&vec![0u8; super::MAX_DOC_LEN + 1]);
    assert!(matches!(
        coord.store(&lease, &big).await,
        Err(super::CoordError::TooLarge { .. })
    ));
    assert_eq!(coord.load(&id).await.expect("load"), None);
}

/// Runs every check of a [`WorkQueue`].
pub async fn run_queue(queue: &dyn WorkQueue, sleep: Sleep<'_>) {
    claims_come_with_their_documents(queue).await;
    workers_share_due_work_without_overlap(queue).await;
    claims_run_out_and_stale_hand_backs_are_ignored(queue, sleep).await;
    claims_are_filtered_by_consumer(queue).await;
}

/// The consumers of a worker with the default consumer alone.
fn default_only() -> Vec<String> {
    vec![DEFAULT_CONSUMER.to_owned()]
}

/// A claim only returns identities of the consumers it names: a worker without a consumer
/// never takes its work, however overdue; enrolling again moves an identity to the consumer
/// it names (keeping its due time).
pub async fn claims_are_filtered_by_consumer(queue: &dyn WorkQueue) {
    let alpha = fresh("alpha");
    let beta = fresh("beta");
    let plain = fresh("plain");
    let of_alpha = fresh("of-alpha");
    let of_beta = fresh("of-beta");
    // The most overdue of the three: a claim that ignored consumers would take it first.
    queue
        .enroll(std::slice::from_ref(&of_beta), &beta, Duration::ZERO)
        .await
        .expect("enroll");
    queue
        .enroll(
            std::slice::from_ref(&plain),
            DEFAULT_CONSUMER,
            Duration::ZERO,
        )
        .await
        .expect("enroll");
    queue
        .enroll(std::slice::from_ref(&of_alpha), &alpha, Duration::ZERO)
        .await
        .expect("enroll");
    let ours = [plain.clone(), of_alpha.clone(), of_beta.clone()];
    let ours = &ours;
    let hold = Duration::from_secs(30);
    let claim = |worker: &'static str, consumers: Vec<String>| async move {
        let got = queue
            .claim(worker, &consumers, 1000, hold)
            .await
            .expect("claim");
        got.into_iter()
            .filter(|c| ours.contains(&c.lease.identity))
            .map(|c| c.lease)
            .collect::<Vec<_>>()
    };
    let got = claim("no-beta", vec![DEFAULT_CONSUMER.to_owned(), alpha.clone()]).await;
    let mut names: Vec<&str> = got.iter().map(|l| l.identity.as_str()).collect();
    names.sort_unstable();
    let mut want = vec![plain.as_str(), of_alpha.as_str()];
    want.sort_unstable();
    assert_eq!(names, want, "a claim without beta leaves beta's work");
    assert!(
        claim("nobody", Vec::new()).await.is_empty(),
        "a claim naming no consumer gets nothing"
    );
    let got = claim("has-beta", vec![beta.clone()]).await;
    assert_eq!(
        got.iter().map(|l| l.identity.as_str()).collect::<Vec<_>>(),
        [of_beta.as_str()],
        "beta's work is left for a worker with beta"
    );
    let back: Vec<(Lease, Duration)> = got.into_iter().map(|l| (l, Duration::ZERO)).collect();
    assert_eq!(queue.reschedule(&back).await.expect("reschedule"), 1);
    // Enrolled again under alpha: queued already (nothing added), now alpha's.
    assert_eq!(
        queue
            .enroll(
                std::slice::from_ref(&of_beta),
                &alpha,
                Duration::from_secs(3600)
            )
            .await
            .expect("enroll"),
        0
    );
    assert!(
        claim("has-beta", vec![beta.clone()]).await.is_empty(),
        "moved to alpha"
    );
    let got = claim("alpha-only", vec![alpha.clone()]).await;
    assert_eq!(
        got.iter().map(|l| l.identity.as_str()).collect::<Vec<_>>(),
        [of_beta.as_str()],
        "alpha's now, and still due (its due time kept)"
    );
    for id in ours {
        queue.retire(id).await.expect("retire");
    }
}

/// A claim with documents gives each identity's stored document (none where none is stored),
/// under a lease that can write it.
pub async fn claims_come_with_their_documents(queue: &dyn WorkQueue) {
    let with = fresh("with-doc");
    let without = fresh("without-doc");
    let lease = granted(queue, &with, "enroller", Duration::from_secs(30)).await;
    let version = queue.store(&lease, &doc(b"sealed")).await.expect("store");
    queue.release(&lease).await.expect("release");
    queue
        .enroll(
            &[with.clone(), without.clone()],
            DEFAULT_CONSUMER,
            Duration::ZERO,
        )
        .await
        .expect("enroll");
    let mut got = std::collections::HashMap::new();
    for _ in 0..20 {
        for (c, d) in queue
            .claim_with_docs("doc-worker", &default_only(), 1000, Duration::from_secs(30))
            .await
            .expect("claim")
        {
            if c.lease.identity == with || c.lease.identity == without {
                got.insert(c.lease.identity.clone(), (c, d));
            }
        }
        if got.len() == 2 {
            break;
        }
    }
    let (c, d) = got.remove(&with).expect("claimed");
    let d = d.expect("its document");
    assert_eq!(
        (d.bytes.as_slice(), d.key_id.as_str(), d.version),
        (&b"sealed"[..], "testkey", version)
    );
    assert!(c.lease.generation > lease.generation);
    queue
        .store(&c.lease, &doc(b"again"))
        .await
        .expect("the claim writes");
    let (_, d) = got.remove(&without).expect("claimed");
    assert_eq!(d, None);
    queue.retire(&with).await.expect("retire");
    queue.retire(&without).await.expect("retire");
}

/// Three workers claiming at once get disjoint sets that cover what is due; claimed work is
/// not claimed again; handed back, it is due again after its wait; the most overdue goes
/// first; enrolling twice adds nothing.
pub async fn workers_share_due_work_without_overlap(queue: &dyn WorkQueue) {
    let prefix = fresh("queue");
    let ids: Vec<String> = (0..60).map(|n| format!("{prefix}-{n:03}")).collect();
    assert_eq!(
        queue
            .enroll(&ids, DEFAULT_CONSUMER, Duration::ZERO)
            .await
            .expect("enroll"),
        60
    );
    assert_eq!(
        queue
            .enroll(&ids[..10], DEFAULT_CONSUMER, Duration::ZERO)
            .await
            .expect("enroll"),
        0,
        "enrolling again adds nothing"
    );
    let hold = Duration::from_secs(30);
    let claims = futures_util::future::join_all((0..3).map(|w| async move {
        queue
            .claim(&format!("worker-{w}"), &default_only(), 25, hold)
            .await
    }))
    .await;
    let mut seen = std::collections::BTreeSet::new();
    let mut total = 0;
    for (w, claim) in claims.into_iter().enumerate() {
        let claim = claim.expect("claim");
        assert!(claim.len() <= 25);
        for c in claim {
            assert_eq!(c.lease.holder, format!("worker-{w}"));
            if c.lease.identity.starts_with(&prefix) {
                assert!(
                    seen.insert(c.lease.identity.clone()),
                    "claimed twice: {}",
                    c.lease.identity
                );
                total += 1;
            }
        }
    }
    // Other tests' work may share the store: only ours is counted.
    let mut rest = Vec::new();
    while seen.len() < 60 {
        let more = queue
            .claim("worker-x", &default_only(), 100, hold)
            .await
            .expect("claim");
        let ours: Vec<_> = more
            .into_iter()
            .filter(|c| c.lease.identity.starts_with(&prefix))
            .collect();
        assert!(
            !ours.is_empty(),
            "due work left unclaimed: {} of 60",
            seen.len()
        );
        for c in ours {
            assert!(seen.insert(c.lease.identity.clone()), "claimed twice");
            rest.push(c.lease);
        }
    }
    assert!(total > 0);
    let again = queue
        .claim("worker-y", &default_only(), 1000, hold)
        .await
        .expect("claim");
    assert!(
        again.iter().all(|c| !c.lease.identity.starts_with(&prefix)),
        "claimed work is not claimed again"
    );
    // Handed back due at once, in order: the first handed back is claimed first.
    let back: Vec<(Lease, Duration)> = rest.iter().map(|l| (l.clone(), Duration::ZERO)).collect();
    assert_eq!(
        queue.reschedule(&back).await.expect("reschedule") as usize,
        back.len()
    );
    let later = queue
        .claim("worker-z", &default_only(), 1000, hold)
        .await
        .expect("claim");
    let ours: Vec<&Claimed> = later
        .iter()
        .filter(|c| c.lease.identity.starts_with(&prefix))
        .collect();
    assert_eq!(ours.len(), back.len(), "handed back, due again");
    assert!(ours.iter().all(|c| c.lease.generation > 1));
    let stats = queue.queue_stats().await.expect("stats");
    assert!(stats.queued >= 60 && stats.claimed >= 60, "{stats:?}");
    for id in &ids {
        queue.retire(id).await.expect("retire");
    }
}

/// A claim that runs out frees its identity for another worker; the first worker's hand-back
/// and writes are then refused.
pub async fn claims_run_out_and_stale_hand_backs_are_ignored(
    queue: &dyn WorkQueue,
    sleep: Sleep<'_>,
) {
    let id = fresh("stall");
    queue
        .enroll(std::slice::from_ref(&id), DEFAULT_CONSUMER, Duration::ZERO)
        .await
        .expect("enroll");
    let mine = |claims: Vec<Claimed>| claims.into_iter().find(|c| c.lease.identity == id);
    let first = mine(
        queue
            .claim("staller", &default_only(), 1000, SHORT_TTL)
            .await
            .expect("claim"),
    )
    .expect("claimed");
    sleep(SHORT_TTL + Duration::from_millis(500)).await;
    let second = mine(
        queue
            .claim("taker", &default_only(), 1000, Duration::from_secs(30))
            .await
            .expect("claim"),
    )
    .expect("claimable again after the hold");
    assert!(second.lease.generation > first.lease.generation);
    assert!(second.late >= SHORT_TTL, "late: {:?}", second.late);
    assert!(matches!(
        queue.store(&first.lease, &doc(b"stale")).await,
        Err(super::CoordError::Fenced { .. })
    ));
    assert_eq!(
        queue
            .reschedule(&[(first.lease.clone(), Duration::ZERO)])
            .await
            .expect("reschedule"),
        0,
        "a stale hand-back changes nothing"
    );
    queue
        .store(&second.lease, &doc(b"fresh"))
        .await
        .expect("store");
    assert_eq!(
        queue
            .reschedule(&[(second.lease.clone(), Duration::from_secs(3600))])
            .await
            .expect("reschedule"),
        1
    );
    assert!(
        mine(
            queue
                .claim("other", &default_only(), 1000, Duration::from_secs(30))
                .await
                .expect("claim")
        )
        .is_none(),
        "not due for an hour"
    );
    queue.retire(&id).await.expect("retire");
}
