//! How the coordinator reaches the server: verified TLS (chain and name, always), SCRAM with
//! channel binding over it, plain TCP on the loopback and unix sockets, and credentials that
//! never show in messages.

mod common;

use std::time::Duration;

use ibauth::coord::{CoordError, Coordinator};
use ibauth_postgres::PgCoordinator;
use ibauth_testsupport::postgres::PgServer;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

const PASSWORD: &str = "pg-test-secret-77";

/// A CA and a certificate for `localhost` only (not 127.0.0.1): (CA PEM, chain PEM, key PEM).
fn certificates() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).unwrap();
    (
        ca_cert.pem(),
        format!("{}{}", cert.pem(), ca_cert.pem()),
        key.serialize_pem(),
    )
}

fn tls_server() -> (PgServer, String) {
    let (ca, chain, key) = certificates();
    let pg = PgServer::builder()
        .password(PASSWORD)
        .tls(&chain, &key)
        .start();
    (pg, ca)
}

async fn ssl_in_use(pg: &PgServer) -> Vec<bool> {
    let admin = common::admin(pg).await;
    admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'ibauth'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn round_trip(coord: &PgCoordinator) {
    let lease = common::granted(coord, "oauth2:tls", "h", Duration::from_secs(30)).await;
    let v = coord
        .store(&lease, &common::doc(b"over tls"))
        .await
        .unwrap();
    assert_eq!(coord.load("oauth2:tls").await.unwrap().unwrap().version, v);
}

fn assert_secret_free(err: &CoordError) {
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_scram_channel_binding() {
    let (pg, ca) = tls_server();
    // channel_binding=require: SCRAM-SHA-256-PLUS, bound to the server's certificate.
    let url = format!(
        "{}?sslmode=verify-full&channel_binding=require",
        pg.url_for("localhost")
    );
    let coord = PgCoordinator::builder(&url)
        .root_certificates_pem(ca.as_bytes())
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    round_trip(&coord).await;
    let ssl = ssl_in_use(&pg).await;
    assert!(!ssl.is_empty() && ssl.iter().all(|s| *s), "{ssl:?}");
    assert!(!coord.describe().contains(PASSWORD));

    // The same trust from a file named in the URL.
    let ca_file = std::env::temp_dir().join(format!("ibauth-pg-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, &ca).unwrap();
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url_for("localhost"),
        ca_file.display()
    );
    let coord = PgCoordinator::connect(&url).await;
    let _ = std::fs::remove_file(&ca_file);
    round_trip(&coord.unwrap_or_else(|e| panic!("{e}"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_always_verifies_the_chain_and_the_name() {
    let (pg, ca) = tls_server();
    // An unknown CA (the platform's roots do not have the test CA), even for "require".
    for mode in ["require", "verify-ca", "verify-full", "prefer"] {
        let url = format!("{}?sslmode={mode}", pg.url_for("localhost"));
        let err = PgCoordinator::builder(&url)
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .expect_err("an unknown CA");
        assert!(err.to_string().contains("certificate"), "{mode}: {err}");
        assert_secret_free(&err);
    }
    // The right CA, but the certificate is not for 127.0.0.1.
    let url = format!("{}?sslmode=verify-full", pg.url_for("127.0.0.1"));
    let err = PgCoordinator::builder(&url)
        .root_certificates_pem(ca.as_bytes())
        .connect()
        .await
        .expect_err("a name the certificate is not for");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_secret_free(&err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loopback_and_unix_sockets_are_plain_by_default() {
    let (pg, _ca) = tls_server();
    let coord = PgCoordinator::connect(&pg.url()).await.unwrap();
    round_trip(&coord).await;
    let ssl = ssl_in_use(&pg).await;
    assert!(!ssl.is_empty() && ssl.iter().all(|s| !*s), "{ssl:?}");
    drop(coord);

    let coord = PgCoordinator::connect(&pg.socket_url()).await.unwrap();
    round_trip(&coord).await;
    assert!(coord.describe().contains("%2F"), "{}", coord.describe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_configuration_error_without_the_password() {
    let (pg, _ca) = tls_server();
    let url = pg.url().replace(PASSWORD, "not-the-password-123");
    let err = PgCoordinator::connect(&url)
        .await
        .expect_err("wrong password");
    assert!(matches!(err, CoordError::Config(_)), "{err}");
    assert!(!err.to_string().contains("not-the-password-123"), "{err}");
    // The right one works.
    round_trip(&PgCoordinator::connect(&pg.url()).await.unwrap()).await;
}
