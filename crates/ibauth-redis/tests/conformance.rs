//! The conformance suite every coordinator runs, against a real redis-server.

use ibauth::coord::conformance;
use ibauth_redis::RedisCoordinator;
use ibauth_testsupport::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_coordinator_passes_the_conformance_suite() {
    let server = RedisServer::start();
    let coord = RedisCoordinator::connect(&server.url())
        .await
        .expect("connect");
    conformance::run_all(&coord, &|d| Box::pin(tokio::time::sleep(d))).await;
}
