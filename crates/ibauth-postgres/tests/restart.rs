//! The database goes away mid-use and comes back: calls fail fast with `Unavailable` (never
//! hang past the timeouts), succeed again once it is back, and subscribers get `Resync` and
//! then new events.

mod common;

use std::time::{Duration, Instant};

use ibauth::coord::{CoordError, Coordinator, Event};
use ibauth_postgres::PgCoordinator;
use ibauth_testsupport::postgres::PgServer;

async fn quick(pg: &PgServer) -> PgCoordinator {
    PgCoordinator::builder(&pg.url())
        .connect_timeout(Duration::from_secs(1))
        .query_timeout(Duration::from_secs(1))
        .listener_ping(Duration::from_millis(500))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pg.log()))
}

/// Every kind of call fails with `Unavailable`, each within the timeouts.
async fn all_unavailable(coord: &PgCoordinator, lease: &ibauth::coord::Lease) {
    let id = lease.identity.as_str();
    let started = Instant::now();
    let results: Vec<(&str, Result<(), CoordError>)> = vec![
        (
            "acquire",
            coord
                .acquire(id, "other", Duration::from_secs(5))
                .await
                .map(drop),
        ),
        ("renew", coord.renew(lease, Duration::from_secs(5)).await),
        (
            "store",
            coord.store(lease, &common::doc(b"x")).await.map(drop),
        ),
        ("load", coord.load(id).await.map(drop)),
        ("lease_info", coord.lease_info(id).await.map(drop)),
        ("identities", coord.identities().await.map(drop)),
        ("request_recovery", coord.request_recovery(id).await),
        ("members", coord.members(id).await.map(drop)),
        ("pace", coord.pace("U1").await.map(drop)),
    ];
    for (call, result) in results {
        match result {
            Err(e @ CoordError::Unavailable { .. }) => assert!(e.is_transient()),
            other => panic!("{call} with the database down: {other:?}"),
        }
    }
    // Nine calls, each bounded by connect + query timeout (2 s); a refused connection is
    // immediate.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
}

async fn restart_mid_use(kill: bool) {
    let mut pg = PgServer::start();
    let coord = quick(&pg).await;
    let id = if kill {
        "oauth2:killed"
    } else {
        "oauth2:stopped"
    };
    let lease = common::granted(&coord, id, "leader", Duration::from_secs(60)).await;
    let mut events = coord.subscribe(id).await.unwrap();
    let v1 = coord.store(&lease, &common::doc(b"before")).await.unwrap();
    common::next_event(
        &mut events,
        |e| *e == Event::Saved(v1),
        Duration::from_secs(5),
    )
    .await;

    if kill {
        pg.kill();
    } else {
        pg.stop();
    }
    all_unavailable(&coord, &lease).await;

    pg.start_again();
    // Back: the pool reconnects on its own.
    let stored = common::eventually(Duration::from_secs(10), || coord.load(id)).await;
    assert_eq!(stored.unwrap().bytes, b"before", "nothing lost");
    // The listener reconnected: everyone re-reads, then hears of changes again.
    common::next_event(
        &mut events,
        |e| *e == Event::Resync,
        Duration::from_secs(10),
    )
    .await;
    let after = common::doc(b"after");
    let v2 = common::eventually(Duration::from_secs(5), || coord.store(&lease, &after)).await;
    assert!(v2 > v1);
    common::next_event(
        &mut events,
        |e| *e == Event::Saved(v2),
        Duration::from_secs(5),
    )
    .await;
    // The lease survived the restart (its expiry is the server's clock, which kept going).
    coord.renew(&lease, Duration::from_secs(60)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_stopped_and_started_again_mid_use() {
    restart_mid_use(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_crashed_and_came_back() {
    restart_mid_use(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_started_while_the_database_is_down_fails_fast_then_works() {
    let mut pg = PgServer::start();
    pg.stop();
    let started = Instant::now();
    let err = PgCoordinator::builder(&pg.url())
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .expect_err("down");
    assert!(err.is_transient(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    pg.start_again();
    let coord = quick(&pg).await;
    assert_eq!(coord.load("oauth2:none").await.unwrap(), None);
}
