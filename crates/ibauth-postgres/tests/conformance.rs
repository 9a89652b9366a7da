//! The coordination interface's conformance suite against a real PostgreSQL server.

use ibauth::coord::conformance;
use ibauth_postgres::PgCoordinator;
use ibauth_testsupport::postgres::PgServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_conformance_suite() {
    let pg = PgServer::start();
    let coord = PgCoordinator::connect(&pg.url())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    conformance::run_all(&coord, &|d| Box::pin(tokio::time::sleep(d))).await;
    // And again on the same tables: identities are fresh per run.
    conformance::run_all(&coord, &|d| Box::pin(tokio::time::sleep(d))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_work_queue_checks() {
    let pg = PgServer::start();
    let coord = PgCoordinator::connect(&pg.url())
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    conformance::run_queue(&coord, &|d| Box::pin(tokio::time::sleep(d))).await;
    conformance::run_queue(&coord, &|d| Box::pin(tokio::time::sleep(d))).await;
}
