//! The real `curl` against the gateway over HTTPS with its self-signed certificate, as users
//! script it (`curl -k https://localhost:5000/v1/api/…`): `/v1/api` and `/v1/portal`, GET and
//! POST, HTTP/1.1 and HTTP/2, connections kept alive across requests; and trusting the
//! certificate the gateway wrote instead of `-k`. A missing curl fails the test
//! (`scripts/test.sh` installs it).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use ibauth_gateway::{Gateway, GatewayOptions, LOGIN_SUCCEEDS, Running, TlsMode};
use serde_json::Value;

/// What `-w` prints after each transfer, on a line of its own.
const WRITE_OUT: &str = "\n@@ %{http_code} %{http_version} %{num_connects}\n";

/// One transfer: its body, status, HTTP version and how many new connections it took.
#[derive(Debug)]
struct Transfer {
    body: String,
    status: u16,
    version: String,
    connects: u32,
}

/// Runs curl with `args`; every transfer it made, in order.
async fn curl(args: &[&str]) -> Vec<Transfer> {
    let output = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(["--write-out", WRITE_OUT])
        .args(args)
        .output()
        .await
        .expect("curl is installed (scripts/test.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut transfers = Vec::new();
    let mut body = String::new();
    for line in stdout.split_inclusive('\n') {
        match line.trim_end().strip_prefix("@@ ") {
            Some(stats) => {
                let mut fields = stats.split(' ');
                let mut next = || fields.next().expect("a -w field").to_owned();
                transfers.push(Transfer {
                    status: next().parse().expect("status"),
                    version: next(),
                    connects: next().parse().expect("num_connects"),
                    body: std::mem::take(&mut body).trim_end().to_owned(),
                });
            }
            None => body.push_str(line),
        }
    }
    transfers
}

fn json(transfer: &Transfer) -> Value {
    serde_json::from_str(&transfer.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", transfer.body))
}

async fn https_gateway(name: &str) -> (ibauth_sandbox::Sandbox, Running, PathBuf) {
    let dir =
        std::env::temp_dir().join(format!("ibauth-gateway-curl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sandbox = sandbox().await;
    let running = Gateway::new(
        session(&sandbox, policy(Duration::from_secs(60))),
        GatewayOptions {
            tls: TlsMode::SelfSigned { dir: dir.clone() },
            ..options()
        },
    )
    .start()
    .await
    .expect("gateway");
    ready(&running).await;
    (sandbox, running, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_k_reaches_the_api_and_the_portal_over_http1_and_http2() {
    let (sandbox, running, dir) = https_gateway("api").await;
    let port = running.addrs()[0].port();
    let at = |path: &str| format!("https://127.0.0.1:{port}{path}");

    // Plain `curl -k`, as in every user's script.
    let t = curl(&["-k", &at("/v1/api/iserver/accounts")]).await;
    assert_eq!(t[0].status, 200, "{}", t[0].body);
    assert!(json(&t[0])["accounts"].is_array(), "{}", t[0].body);
    let account = json(&t[0])["selectedAccount"]
        .as_str()
        .expect("account")
        .to_owned();

    for version in ["--http1.1", "--http2"] {
        let expected = if version == "--http2" { "2" } else { "1.1" };
        // Several requests on one command line: one connection, kept alive.
        let t = curl(&[
            "-k",
            version,
            &at("/v1/api/iserver/accounts"),
            &at("/v1/portal/iserver/marketdata/snapshot?conids=265598&fields=31,84,86"),
            &at("/v1/api/tickle"),
            &at("/v1/portal/iserver/auth/status"),
        ])
        .await;
        assert_eq!(t.len(), 4, "{t:?}");
        for transfer in &t {
            assert_eq!(transfer.status, 200, "{version}: {transfer:?}");
            assert_eq!(transfer.version, expected, "{version}: {transfer:?}");
        }
        assert_eq!(
            t.iter().map(|t| t.connects).collect::<Vec<_>>(),
            [1, 0, 0, 0],
            "{version}: one connection for all"
        );
        assert!(json(&t[0])["accounts"].is_array());
        assert_eq!(json(&t[1])[0]["conid"], 265598, "{}", t[1].body);
        assert!(json(&t[1])[0]["31"].is_string(), "{}", t[1].body);
        assert_eq!(json(&t[2])["iserver"]["authStatus"]["authenticated"], true);
        assert_eq!(json(&t[3])["authenticated"], true, "{}", t[3].body);

        // A POST with a JSON body, as scripts place orders.
        let order = format!(
            r#"{{"orders":[{{"conid":265598,"side":"BUY","quantity":1,"orderType":"MKT","tif":"DAY","cOID":"curl{expected}"}}]}}"#
        );
        let t = curl(&[
            "-k",
            version,
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            &order,
            &at(&format!("/v1/api/iserver/account/{account}/orders")),
        ])
        .await;
        assert_eq!(t[0].status, 200, "{}", t[0].body);
        assert_eq!(t[0].version, expected);
        assert_eq!(json(&t[0])[0]["cOID"], format!("curl{expected}"));
    }
    assert_eq!(sandbox.counters().orders_placed, 2);

    // The status page, and a path the gateway does not pass on.
    let t = curl(&["-k", "--http2", &at("/"), &at("/nothing/here")]).await;
    assert_eq!(t[0].status, 200);
    assert!(t[0].body.contains(LOGIN_SUCCEEDS), "{}", t[0].body);
    assert_eq!(t[1].status, 404);
    assert_eq!(json(&t[1])["gateway"], "ibauth");

    // Trusting the certificate the gateway made instead of -k (it names localhost).
    let cert = dir.join("cert.pem");
    let t = curl(&[
        "--cacert",
        cert.to_str().expect("path"),
        &format!("https://localhost:{port}/v1/portal/iserver/accounts"),
    ])
    .await;
    assert_eq!(t[0].status, 200, "{}", t[0].body);
    // Without either, curl refuses the self-signed certificate: the test sees real TLS.
    let refused = tokio::process::Command::new("curl")
        .args(["--silent", "--max-time", "10", &at("/v1/api/tickle")])
        .status()
        .await
        .expect("curl");
    assert!(!refused.success());

    // The health server speaks plain HTTP, as IBeam's.
    let health_port = running.health_addr().expect("health").port();
    let t = curl(&[&format!("http://127.0.0.1:{health_port}/readyz")]).await;
    assert_eq!((t[0].status, t[0].body.as_str()), (200, "OK"));

    assert_eq!(
        sandbox.counters().access_tokens,
        1,
        "one login for all of it"
    );
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_from_an_address_not_allowed_gets_access_denied() {
    let dir =
        std::env::temp_dir().join(format!("ibauth-gateway-curl-denied-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sandbox = sandbox().await;
    let running = Gateway::new(
        session(&sandbox, policy(Duration::from_secs(60))),
        GatewayOptions {
            tls: TlsMode::SelfSigned { dir: dir.clone() },
            access: ibauth_gateway::AccessList::new(&["127.0.0.1"], &[] as &[&str]).expect("list"),
            ..options()
        },
    )
    .start()
    .await
    .expect("gateway");
    ready(&running).await;
    let url = format!(
        "https://127.0.0.1:{}/v1/api/tickle",
        running.addrs()[0].port()
    );
    let t = curl(&["-k", "--interface", "127.0.0.2", &url]).await;
    assert_eq!((t[0].status, t[0].body.as_str()), (404, "Access Denied"));
    let t = curl(&["-k", "--interface", "127.0.0.1", &url]).await;
    assert_eq!(t[0].status, 200);
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
