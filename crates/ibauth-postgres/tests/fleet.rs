//! Two coordinator instances on one database stand for two processes of a fleet: fencing,
//! notifications and pacing across them, and pacing rows that a dead or frozen process held.

mod common;

use std::time::{Duration, Instant};

use ibauth::coord::{Acquired, CoordError, Coordinator, Event, Lease};
use ibauth_postgres::PgCoordinator;
use ibauth_testsupport::postgres::PgServer;

async fn process(pg: &PgServer) -> PgCoordinator {
    PgCoordinator::connect(&pg.url())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pg.log()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_leader_is_fenced_after_another_process_took_over() {
    let pg = PgServer::start();
    let (a, b) = (process(&pg).await, process(&pg).await);
    let id = "oauth2:fenced";
    let old = common::granted(&a, id, "process-a", Duration::from_millis(800)).await;
    let v1 = a.store(&old, &common::doc(b"from a")).await.unwrap();
    // B cannot take a live lease…
    match b
        .acquire(id, "process-b", Duration::from_secs(30))
        .await
        .unwrap()
    {
        Acquired::Held(info) => {
            assert_eq!(
                (info.holder.as_str(), info.generation),
                ("process-a", old.generation)
            )
        }
        other => panic!("{other:?}"),
    }
    // …but takes it once A, paused, let it expire.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let new = common::granted(&b, id, "process-b", Duration::from_secs(30)).await;
    assert!(new.generation > old.generation);
    let v2 = b.store(&new, &common::doc(b"from b")).await.unwrap();
    assert!(v2 > v1);

    // A wakes up and writes under its old lease: refused, nothing changed.
    for attempt in [
        a.store(&old, &common::doc(b"stale")).await.map(drop),
        a.renew(&old, Duration::from_secs(30)).await,
        a.remove(&old).await,
    ] {
        match attempt {
            Err(CoordError::Fenced {
                generation,
                current,
                ..
            }) => assert_eq!(
                (generation, current),
                (old.generation, Some(new.generation))
            ),
            other => panic!("a stale leader's write: {other:?}"),
        }
    }
    // A stale release is a no-op: B still holds it.
    a.release(&old).await.unwrap();
    let stored = a.load(id).await.unwrap().unwrap();
    assert_eq!(
        (stored.bytes.as_slice(), stored.version, stored.generation),
        (&b"from b"[..], v2, new.generation)
    );
    let info = b.lease_info(id).await.unwrap().unwrap();
    assert_eq!(info.holder, "process-b");
    // A forged lease (B's generation under A's name) is refused too.
    let forged = Lease {
        holder: "process-a".into(),
        ..new.clone()
    };
    assert!(matches!(
        a.store(&forged, &common::doc(b"forged")).await,
        Err(CoordError::Fenced { .. })
    ));
    // Generations keep growing across releases.
    b.release(&new).await.unwrap();
    assert_eq!(b.lease_info(id).await.unwrap(), None, "released");
    let next = common::granted(&a, id, "process-a", Duration::from_secs(30)).await;
    assert!(next.generation > new.generation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_other_processes_only_for_committed_changes() {
    let pg = PgServer::start();
    let (leader, follower) = (process(&pg).await, process(&pg).await);
    let id = "oauth2:notified";
    let mut events = follower.subscribe(id).await.unwrap();
    let mut own = leader.subscribe(id).await.unwrap();
    let lease = common::granted(&leader, id, "leader", Duration::from_secs(30)).await;
    let wait = Duration::from_secs(5);

    let v = leader.store(&lease, &common::doc(b"tokens")).await.unwrap();
    assert_eq!(
        common::next_event(&mut events, |_| true, wait).await,
        Event::Saved(v)
    );
    assert_eq!(
        common::next_event(&mut own, |_| true, wait).await,
        Event::Saved(v)
    );
    // The follower reads what it was told of.
    assert_eq!(follower.load(id).await.unwrap().unwrap().version, v);

    follower.request_recovery(id).await.unwrap();
    assert_eq!(
        common::next_event(&mut own, |_| true, wait).await,
        Event::RecoveryRequested
    );
    // A refused write notifies nobody.
    let stale = Lease {
        generation: lease.generation + 7,
        ..lease.clone()
    };
    assert!(leader.store(&stale, &common::doc(b"no")).await.is_err());
    leader.remove(&lease).await.unwrap();
    // Removing nothing twice tells nothing the second time.
    leader.remove(&lease).await.unwrap();
    leader.release(&lease).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(common::next_event(&mut events, |_| true, wait).await);
    }
    assert_eq!(
        seen,
        [Event::RecoveryRequested, Event::Removed, Event::Released],
        "in commit order, the refused write absent"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(events.try_recv().is_err(), "nothing more");
    // The follower takes over at once.
    let taken = common::granted(&follower, id, "follower", Duration::from_secs(30)).await;
    assert!(taken.generation > lease.generation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_is_exclusive_across_processes() {
    let pg = PgServer::start();
    let (a, b) = (process(&pg).await, process(&pg).await);
    let first = a.pace("U123").await.unwrap();
    assert_eq!(first.current(), None);
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        let txn = b.pace("U123").await.unwrap();
        let seen = txn.current().map(<[u8]>::to_vec);
        txn.commit(b"b".to_vec()).await.unwrap();
        (seen, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    first.commit(b"a".to_vec()).await.unwrap();
    let (seen, waited) = waiter.await.unwrap();
    assert_eq!(seen.as_deref(), Some(&b"a"[..]));
    assert!(waited >= Duration::from_millis(350), "{waited:?}");
    let txn = a.pace("U123").await.unwrap();
    assert_eq!(txn.current(), Some(&b"b"[..]));
    // Too large to commit: refused, and the row is left as it was.
    let err = txn
        .commit(vec![0; ibauth::coord::MAX_DOC_LEN + 1])
        .await
        .expect_err("too large");
    assert!(matches!(err, CoordError::TooLarge { .. }));
    assert_eq!(a.pace("U123").await.unwrap().current(), Some(&b"b"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pacing_wait_is_bounded() {
    let pg = PgServer::start();
    let a = process(&pg).await;
    let b = PgCoordinator::builder(&pg.url())
        .pace_wait(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    let _held = a.pace("U9").await.unwrap();
    let started = Instant::now();
    let err = b.pace("U9").await.err().expect("still held");
    assert!(err.is_transient(), "{err}");
    assert!(
        (Duration::from_millis(400)..Duration::from_secs(3)).contains(&started.elapsed()),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_connection_mid_pacing_frees_the_row() {
    let pg = PgServer::start();
    let (a, b) = (process(&pg).await, process(&pg).await);
    let txn = a.pace("U7").await.unwrap();
    // A's connection dies (its process crashed, a proxy cut it): the server ends it.
    let admin = common::admin(&pg).await;
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE state = 'idle in transaction' AND application_name = 'ibauth'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    let started = Instant::now();
    let other = b.pace("U7").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    other.commit(b"b".to_vec()).await.unwrap();
    // A's late commit fails, and changes nothing.
    let err = txn
        .commit(b"a".to_vec())
        .await
        .expect_err("its connection is gone");
    assert!(err.is_transient(), "{err}");
    assert_eq!(b.pace("U7").await.unwrap().current(), Some(&b"b"[..]));
    // A works again (the broken connection was not put back).
    let again = common::eventually(Duration::from_secs(5), || a.pace("U7")).await;
    assert_eq!(again.current(), Some(&b"b"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_process_mid_pacing_loses_the_row_after_the_hold_limit() {
    let pg = PgServer::start();
    let frozen = PgCoordinator::builder(&pg.url())
        .pace_hold(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let b = process(&pg).await;
    // Never committed nor dropped: the connection stays open, idle in its transaction.
    std::mem::forget(frozen.pace("U8").await.unwrap());
    let started = Instant::now();
    let txn = b.pace("U8").await.unwrap();
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(500)..Duration::from_secs(3)).contains(&waited),
        "{waited:?}"
    );
    txn.commit(b"b".to_vec()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pacing_transaction_gives_its_connection_back_clean() {
    let pg = PgServer::start();
    let coord = PgCoordinator::builder(&pg.url())
        .pool_size(2)
        .connect()
        .await
        .unwrap();
    for round in 0..10u8 {
        let txn = coord.pace("U5").await.unwrap();
        if round % 2 == 0 {
            drop(txn);
        } else {
            txn.commit(vec![round]).await.unwrap();
        }
    }
    assert_eq!(coord.pace("U5").await.unwrap().current(), Some(&[9u8][..]));
    // No connection was left inside a transaction.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let admin = common::admin(&pg).await;
    let open: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'ibauth' AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0);
    let total: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ibauth'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(total <= 3, "pool of 2 plus the listener: {total}");
}
