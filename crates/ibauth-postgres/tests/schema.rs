//! The tables are created and migrated by the program: from an empty database, again
//! (idempotent), by several processes starting at once, and never over a newer schema.

mod common;

use ibauth::coord::{CoordError, Coordinator};
use ibauth_postgres::{PgCoordinator, SCHEMA_VERSION};
use ibauth_testsupport::postgres::PgServer;
use std::time::Duration;

const TABLES: [&str; 6] = [
    "ibauth_schema",
    "ibauth_leases",
    "ibauth_sessions",
    "ibauth_members",
    "ibauth_pacing",
    "ibauth_work",
];

async fn tables(admin: &tokio_postgres::Client) -> Vec<String> {
    let rows = admin
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = 'public' AND table_name LIKE 'ibauth%' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

async fn versions(admin: &tokio_postgres::Client) -> Vec<i64> {
    admin
        .query("SELECT version FROM ibauth_schema", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_database_gets_the_tables_and_a_second_start_changes_nothing() {
    let pg = PgServer::start();
    let admin = common::admin(&pg).await;
    assert!(tables(&admin).await.is_empty());

    let coord = PgCoordinator::connect(&pg.url()).await.unwrap();
    let mut expected: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
    expected.sort();
    assert_eq!(tables(&admin).await, expected);
    assert_eq!(versions(&admin).await, [SCHEMA_VERSION]);

    let lease = common::granted(&coord, "oauth2:kept", "h", Duration::from_secs(30)).await;
    let v = coord.store(&lease, &common::doc(b"kept")).await.unwrap();
    drop(coord);

    // Started again: the same schema, the data kept.
    let again = PgCoordinator::connect(&pg.url()).await.unwrap();
    assert_eq!(versions(&admin).await, [SCHEMA_VERSION]);
    let stored = again.load("oauth2:kept").await.unwrap().unwrap();
    assert_eq!((stored.bytes.as_slice(), stored.version), (&b"kept"[..], v));
    let info = again.lease_info("oauth2:kept").await.unwrap().unwrap();
    assert_eq!(info.generation, lease.generation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_processes_starting_at_once_make_one_schema() {
    let pg = PgServer::start();
    let url = pg.url();
    let started =
        futures_util::future::join_all((0..5).map(|_| PgCoordinator::connect(&url))).await;
    let coords: Vec<PgCoordinator> = started
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let admin = common::admin(&pg).await;
    assert_eq!(versions(&admin).await, [SCHEMA_VERSION]);
    assert_eq!(tables(&admin).await.len(), TABLES.len());
    // All of them work on it.
    for (i, coord) in coords.iter().enumerate() {
        coord
            .heartbeat(
                "oauth2:fleet",
                &ibauth::coord::Member {
                    id: format!("m{i}"),
                    leader: i == 0,
                    about: "test".into(),
                    seen_ago: Duration::ZERO,
                },
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
    assert_eq!(coords[4].members("oauth2:fleet").await.unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_ibauth_is_refused() {
    let pg = PgServer::start();
    drop(PgCoordinator::connect(&pg.url()).await.unwrap());
    let admin = common::admin(&pg).await;
    admin
        .execute(
            "UPDATE ibauth_schema SET version = $1",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap();
    let err = PgCoordinator::connect(&pg.url())
        .await
        .expect_err("a newer schema");
    match &err {
        CoordError::Schema {
            found, supported, ..
        } => assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION)),
        other => panic!("expected a schema error, got {other}"),
    }
    assert!(!err.is_transient());
    let shown = err.to_string();
    assert!(shown.contains("upgrade ibauth"), "{shown}");
    assert!(shown.contains(&pg.url()[..20]), "names the store: {shown}");
    // Nothing was touched.
    assert_eq!(versions(&admin).await, [SCHEMA_VERSION + 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_rows_are_reported_not_trusted() {
    let pg = PgServer::start();
    let coord = PgCoordinator::connect(&pg.url()).await.unwrap();
    let admin = common::admin(&pg).await;
    // A document larger than any ibauth writes: refused by length, never transferred.
    admin
        .execute(
            "INSERT INTO ibauth_sessions (identity, key_id, sealed, version, generation, updated_at)
             VALUES ('oauth2:big', 'k1', decode(repeat('00', 70000), 'hex'), 1, 1, now())",
            &[],
        )
        .await
        .unwrap();
    let err = coord.load("oauth2:big").await.expect_err("too large");
    assert!(matches!(err, CoordError::Corrupt { .. }), "{err}");
    // A key id longer than any name.
    admin
        .execute(
            "INSERT INTO ibauth_sessions (identity, key_id, sealed, version, generation, updated_at)
             VALUES ('oauth2:key', repeat('k', 500), '\\x01', 1, 1, now())",
            &[],
        )
        .await
        .unwrap();
    let err = coord.load("oauth2:key").await.expect_err("long key id");
    assert!(matches!(err, CoordError::Corrupt { .. }), "{err}");
    // A pacing document too large is refused too (and the row is not left locked).
    admin
        .execute(
            "INSERT INTO ibauth_pacing (account, doc) VALUES ('U1', decode(repeat('00', 70000), 'hex'))",
            &[],
        )
        .await
        .unwrap();
    assert!(matches!(
        coord.pace("U1").await.err(),
        Some(CoordError::Corrupt { .. })
    ));
    admin
        .execute(
            "UPDATE ibauth_pacing SET doc = '\\x02' WHERE account = 'U1'",
            &[],
        )
        .await
        .unwrap();
    let txn = coord.pace("U1").await.unwrap();
    assert_eq!(txn.current(), Some(&[2u8][..]));
}
