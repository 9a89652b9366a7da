//! What the PostgreSQL tests share: a superuser connection for poking at the server, and
//! small helpers.
#![allow(dead_code)]

use std::time::Duration;

use ibauth::coord::{Acquired, Coordinator, Event, Events, Lease, SealedDoc};
use ibauth_testsupport::postgres::PgServer;

/// A plain superuser connection (not through the coordinator).
pub async fn admin(pg: &PgServer) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("admin connection: {e}\n{}", pg.log()));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// A coordinator on `pg`, checking that connecting migrated the schema to this build's version.
pub async fn migrated(
    pg: &PgServer,
    admin: &tokio_postgres::Client,
) -> ibauth_postgres::PgCoordinator {
    let coord = ibauth_postgres::PgCoordinator::connect(&pg.url())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    let version: i64 = admin
        .query_one("SELECT version FROM ibauth_schema", &[])
        .await
        .expect("version")
        .get(0);
    assert_eq!(version, ibauth_postgres::SCHEMA_VERSION);
    coord
}

pub fn doc(bytes: &[u8]) -> SealedDoc {
    SealedDoc {
        key_id: "k1".into(),
        bytes: bytes.to_vec(),
        version: 0,
        generation: 0,
    }
}

pub async fn granted(
    coord: &dyn Coordinator,
    identity: &str,
    holder: &str,
    ttl: Duration,
) -> Lease {
    match coord.acquire(identity, holder, ttl).await {
        Ok(Acquired::Granted(lease)) => lease,
        other => panic!("expected the lease for {holder}, got {other:?}"),
    }
}

/// The next event matching `want` within `wait`, skipping others.
pub async fn next_event(
    events: &mut Events,
    want: impl Fn(&Event) -> bool,
    wait: Duration,
) -> Event {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if want(&event) => return event,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(e)) => panic!("the event feed closed: {e}"),
            Err(_) => panic!("no matching event within {wait:?}"),
        }
    }
}

/// Tries `f` until it succeeds or `within` passes.
pub async fn eventually<T, E: std::fmt::Display, F, Fut>(within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("still failing after {within:?}: {e}"),
        }
    }
}
