//! The work queue across processes: three coordinators (three pools, as three hosts would
//! have) claiming from one database at once never hold the same identity together, and an
//! acquire and a claim exclude each other too.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ibauth::coord::{Acquired, Coordinator, DEFAULT_CONSUMER, WorkQueue};
use ibauth_postgres::PgCoordinator;
use ibauth_testsupport::postgres::PgServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_claimers_never_hold_one_identity_together() {
    let pg = PgServer::start();
    let mut coords = Vec::new();
    for _ in 0..3 {
        coords.push(
            PgCoordinator::connect(&pg.url())
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", pg.log())),
        );
    }
    let ids: Vec<String> = (0..600).map(|n| format!("share-{n:04}")).collect();
    assert_eq!(
        coords[0]
            .enroll(&ids, DEFAULT_CONSUMER, Duration::ZERO)
            .await
            .expect("enroll"),
        600
    );
    // identity → (worker, generation) while a worker holds it.
    let holding: Arc<Mutex<HashMap<String, (usize, u64)>>> = Arc::default();
    let handled: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut tasks = Vec::new();
    for (w, coord) in coords.iter().enumerate() {
        let (coord, holding, handled) = (coord.clone(), holding.clone(), handled.clone());
        tasks.push(tokio::spawn(async move {
            let me = format!("worker-{w}");
            let mut claims = 0u32;
            while Instant::now() < deadline {
                let got = coord
                    .claim(
                        &me,
                        &[DEFAULT_CONSUMER.to_owned()],
                        50,
                        Duration::from_secs(30),
                    )
                    .await
                    .expect("claim");
                claims += 1;
                {
                    let mut holding = holding.lock().unwrap();
                    let mut handled = handled.lock().unwrap();
                    for c in &got {
                        assert_eq!(c.lease.holder, me);
                        if let Some(other) =
                            holding.insert(c.lease.identity.clone(), (w, c.lease.generation))
                        {
                            panic!(
                                "{} claimed by worker {w} while worker {} holds it",
                                c.lease.identity, other.0
                            );
                        }
                        *handled.entry(c.lease.identity.clone()).or_default() += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                let back: Vec<_> = got
                    .iter()
                    .map(|c| (c.lease.clone(), Duration::from_millis(200)))
                    .collect();
                {
                    let mut holding = holding.lock().unwrap();
                    for c in &got {
                        holding.remove(&c.lease.identity);
                    }
                }
                let n = coord.reschedule(&back).await.expect("reschedule");
                assert_eq!(n as usize, back.len(), "every live claim is handed back");
            }
            claims
        }));
    }
    let mut claims = 0;
    for task in tasks {
        claims += task.await.expect("worker");
    }
    let handled = handled.lock().unwrap().clone();
    assert_eq!(handled.len(), 600, "every identity was handled");
    // Due every 200 ms for 4 s: each ~20 times, none starved.
    let least = handled.values().min().copied().unwrap_or(0);
    assert!(least >= 5, "an identity was handled only {least} times");
    assert!(claims > 30, "{claims} claims");
    let stats = coords[0].queue_stats().await.expect("stats");
    assert_eq!((stats.queued, stats.claimed), (600, 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_and_an_acquire_exclude_each_other() {
    let pg = PgServer::start();
    let coord = PgCoordinator::connect(&pg.url())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    let ids = vec!["both-a".to_owned(), "both-b".to_owned()];
    coord
        .enroll(&ids, DEFAULT_CONSUMER, Duration::ZERO)
        .await
        .expect("enroll");
    let held = common::granted(&coord, "both-a", "a-session", Duration::from_secs(30)).await;
    let got = coord
        .claim(
            "worker",
            &[DEFAULT_CONSUMER.to_owned()],
            10,
            Duration::from_secs(30),
        )
        .await
        .expect("claim");
    let names: Vec<&str> = got.iter().map(|c| c.lease.identity.as_str()).collect();
    assert_eq!(names, ["both-b"], "a leased identity is not claimed");
    assert!(
        matches!(
            coord
                .acquire("both-b", "a-session", Duration::from_secs(30))
                .await,
            Ok(Acquired::Held(ref info)) if info.holder == "worker"
        ),
        "a claimed identity is not granted to another"
    );
    assert!(got[0].lease.generation >= 1);
    coord.release(&held).await.expect("release");
    let got = coord
        .claim(
            "worker",
            &[DEFAULT_CONSUMER.to_owned()],
            10,
            Duration::from_secs(30),
        )
        .await
        .expect("claim");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].lease.identity, "both-a");
    assert_eq!(
        got[0].lease.generation,
        held.generation + 1,
        "the claim takes the next generation"
    );
    let stats = coord.queue_stats().await.expect("stats");
    assert_eq!((stats.queued, stats.due, stats.claimed), (2, 0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_gains_the_queue() {
    let pg = PgServer::start();
    let admin = common::admin(&pg).await;
    // What version 1 made (its tables as migration 1 creates them), and version 1 recorded.
    admin
        .batch_execute(
            "CREATE TABLE ibauth_schema (singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
                version BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now());
            INSERT INTO ibauth_schema (version) VALUES (1);
            CREATE TABLE ibauth_leases (identity TEXT PRIMARY KEY, holder TEXT,
                generation BIGINT NOT NULL CHECK (generation >= 1), expires_at TIMESTAMPTZ NOT NULL);
            INSERT INTO ibauth_leases VALUES ('old', NULL, 7, now());
            CREATE TABLE ibauth_sessions (identity TEXT PRIMARY KEY, key_id TEXT, sealed BYTEA,
                version BIGINT NOT NULL CHECK (version >= 1), generation BIGINT NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL, CHECK ((key_id IS NULL) = (sealed IS NULL)));
            CREATE TABLE ibauth_members (identity TEXT NOT NULL, member TEXT NOT NULL,
                leader BOOLEAN NOT NULL, about TEXT NOT NULL, seen_at TIMESTAMPTZ NOT NULL,
                expires_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (identity, member));
            CREATE TABLE ibauth_pacing (account TEXT PRIMARY KEY, doc BYTEA, updated_at TIMESTAMPTZ);",
        )
        .await
        .expect("a version 1 schema");
    let coord = common::migrated(&pg, &admin).await;
    coord
        .enroll(&["old".to_owned()], DEFAULT_CONSUMER, Duration::ZERO)
        .await
        .expect("enroll");
    let got = coord
        .claim(
            "w",
            &[DEFAULT_CONSUMER.to_owned()],
            1,
            Duration::from_secs(5),
        )
        .await
        .expect("claim");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].lease.generation, 8, "generations kept counting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_queue_is_the_default_consumers() {
    let pg = PgServer::start();
    let admin = common::admin(&pg).await;
    // Version 2's queue (as migration 2 creates it), with work queued before consumers were
    // recorded; the other tables as the current build makes them.
    drop(
        PgCoordinator::connect(&pg.url())
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", pg.log())),
    );
    admin
        .batch_execute(
            "DROP TABLE ibauth_work;
            CREATE TABLE ibauth_work (identity TEXT PRIMARY KEY, due_at TIMESTAMPTZ NOT NULL);
            CREATE INDEX ibauth_work_due ON ibauth_work (due_at);
            INSERT INTO ibauth_work VALUES ('queued-v2', now() - interval '1 hour');
            UPDATE ibauth_schema SET version = 2;",
        )
        .await
        .expect("a version 2 schema");
    let coord = common::migrated(&pg, &admin).await;
    let hold = Duration::from_secs(30);
    let named = coord
        .claim("w", &["beta".to_owned()], 10, hold)
        .await
        .expect("claim");
    assert!(named.is_empty(), "not a named consumer's: {named:?}");
    let got = coord
        .claim("w", &[DEFAULT_CONSUMER.to_owned()], 10, hold)
        .await
        .expect("claim");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].lease.identity, "queued-v2");
    assert!(
        got[0].late >= Duration::from_secs(3600),
        "its due time kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_document_does_not_stop_the_claim() {
    let pg = PgServer::start();
    let coord = PgCoordinator::connect(&pg.url())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    let ids = vec!["fine".to_owned(), "damaged".to_owned()];
    for id in &ids {
        let lease = common::granted(&coord, id, "enroller", Duration::from_secs(30)).await;
        coord
            .store(&lease, &common::doc(b"sealed"))
            .await
            .expect("store");
        coord.release(&lease).await.expect("release");
    }
    // A document over the size limit, written behind the coordinator's back.
    let admin = common::admin(&pg).await;
    admin
        .execute(
            "UPDATE ibauth_sessions SET sealed = $1 WHERE identity = 'damaged'",
            &[&vec![0u8; ibauth::coord::MAX_DOC_LEN + 1]],
        )
        .await
        .expect("damage");
    coord
        .enroll(&ids, DEFAULT_CONSUMER, Duration::ZERO)
        .await
        .expect("enroll");
    let mut got = coord
        .claim_with_docs(
            "worker",
            &[DEFAULT_CONSUMER.to_owned()],
            10,
            Duration::from_secs(30),
        )
        .await
        .expect("the claim goes through");
    got.sort_by(|a, b| a.0.lease.identity.cmp(&b.0.lease.identity));
    let seen: Vec<(&str, Option<&[u8]>)> = got
        .iter()
        .map(|(c, d)| {
            (
                c.lease.identity.as_str(),
                d.as_ref().map(|d| d.bytes.as_slice()),
            )
        })
        .collect();
    assert_eq!(seen, [("damaged", None), ("fine", Some(&b"sealed"[..]))]);
}
