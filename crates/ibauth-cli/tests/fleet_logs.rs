//! Secrets in a fleet never reach the output, whatever `RUST_LOG` asks for: the store's password
//! (in the URL), the store key and the tokens the leader stored and the followers read — with
//! the database clients' own TRACE lines (tokio-postgres, redis) included.

use ibauth_testsupport::postgres::PgServer;
use ibauth_testsupport::redis::RedisServer;

mod common;
use common::{ibauth, sandbox_with_set, temp_dir, text};

const PASSWORD: &str = "hunter2-fleet-secret";

#[tokio::test(flavor = "multi_thread")]
async fn no_fleet_secret_reaches_the_log_at_any_level() {
    let dir = temp_dir("fleet-logs");
    let (sandbox, config, _set) = sandbox_with_set(&dir, true).await;
    let pg = tokio::task::spawn_blocking(|| PgServer::builder().password(PASSWORD).start())
        .await
        .unwrap();
    let redis = tokio::task::spawn_blocking(|| RedisServer::builder().password(PASSWORD).start())
        .await
        .unwrap();
    let key_file = dir.join("store.key");
    let made = ibauth().arg("store-key").arg(&key_file).output().unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let key = std::fs::read_to_string(&key_file).unwrap();
    let key = key
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .unwrap()
        .trim()
        .to_owned();
    assert!(key.len() >= 44, "a key to search for");

    let filters = [
        "trace",
        "tokio_postgres=trace,postgres_protocol=trace",
        "redis=trace",
        "ibauth=trace,ibauth_fleet=trace,ibauth_postgres=trace,ibauth_redis=trace,reqwest=trace,hyper=trace,rustls=trace",
    ];
    let runs: [&[&str]; 5] = [
        &["login"],
        &["api", "GET", "iserver/accounts"],
        &["status"],
        &["--oauth1a", "login"],
        &["--oauth1a", "api", "GET", "iserver/accounts"],
    ];
    let mut seen = String::new();
    for url in [pg.url(), redis.url()] {
        assert!(
            url.contains(PASSWORD),
            "the URL carries the password: {url}"
        );
        for filter in filters {
            for command in runs {
                let out = ibauth()
                    .arg("--config")
                    .arg(&config)
                    .args(["--store", &url, "-vvv"])
                    .env("IBAUTH_STORE_KEY_FILE", &key_file)
                    .env("RUST_LOG", filter)
                    .args(command)
                    .output()
                    .unwrap();
                // `status` exits 6 when it sees the other method's session as competing.
                assert!(
                    matches!(out.status.code(), Some(0 | 6)),
                    "{url} {filter} {command:?}: {}",
                    text(&out)
                );
                seen.push_str(&text(&out));
            }
        }
    }
    // The scan had something to scan: the fleet and the databases' clients logged.
    assert!(seen.contains("joining the fleet"), "{seen}");
    assert!(
        seen.contains("tokio_postgres") || seen.contains("postgres_protocol"),
        "tokio-postgres' own TRACE lines were scanned"
    );
    assert!(
        seen.contains("***"),
        "URLs are shown with the password masked"
    );

    assert!(!seen.contains(PASSWORD), "the store's password leaked");
    assert!(!seen.contains(&key), "the store key leaked");
    let tokens = sandbox.issued_tokens();
    assert!(tokens.len() >= 4, "{} tokens", tokens.len());
    for token in &tokens {
        assert!(!seen.contains(token.as_str()), "a token leaked");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
