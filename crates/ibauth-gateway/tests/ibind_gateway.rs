//! Interop: the unmodified ibind 0.2.2 in gateway mode — no OAuth, certificate verification
//! off as ibind defaults, configured only by `IBIND_REST_URL` and `IBIND_WS_URL` — through an
//! ibauth gateway over HTTPS (self-signed) in front of the sandbox: REST calls (tickle, health,
//! auth status, init, reauthenticate, accounts, a snapshot, orders, logout), and a market-data
//! stream on `IbkrWsClient` that goes on, without ibind reconnecting or subscribing again,
//! while IBKR replaces the gateway's upstream socket (`scripts/ibind_gateway_interop.py`).
//! The venv is created on first run by `scripts/python-venv.sh ibind`; a failure to create it
//! fails the test.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use ibauth_gateway::{Gateway, GatewayOptions, TlsMode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> String {
    let out = std::process::Command::new(workspace().join("scripts/python-venv.sh"))
        .arg("ibind")
        .output()
        .expect(
            "run scripts/python-venv.sh (needs python3 with venv: scripts/test.sh installs it)",
        );
    assert!(
        out.status.success(),
        "setting up the ibind venv failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The script's next `INTEROP {…}` line (ibind's own log lines share its standard output).
async fn next_report(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: &mut Vec<String>,
) -> Value {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("ibind said nothing for a minute:\n{}", seen.join("\n")))
            .expect("read ibind's output");
        let Some(line) = line else {
            panic!("ibind ended early:\n{}", seen.join("\n"));
        };
        if let Some(json) = line.strip_prefix("INTEROP ") {
            return serde_json::from_str(json).expect("the script's JSON");
        }
        seen.push(line);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ibind_in_gateway_mode_calls_rest_and_streams_through_the_gateway() {
    let python = tokio::task::spawn_blocking(python).await.expect("venv");
    let dir = std::env::temp_dir().join(format!("ibauth-gateway-ibind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sandbox = sandbox().await;
    let running = Gateway::new(
        session(&sandbox, policy(Duration::from_secs(60))),
        GatewayOptions {
            tls: TlsMode::SelfSigned {
                dir: dir.join("tls"),
            },
            ..options()
        },
    )
    .start()
    .await
    .expect("gateway");
    ready(&running).await;
    let port = running.addrs()[0].port();

    let mut child = tokio::process::Command::new(&python)
        .arg(workspace().join("scripts/ibind_gateway_interop.py"))
        .current_dir(&dir)
        // Only what ibind reads to find a Client Portal Gateway: nothing of OAuth.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &dir)
        .env(
            "IBIND_REST_URL",
            format!("https://127.0.0.1:{port}/v1/api/"),
        )
        .env("IBIND_WS_URL", format!("wss://127.0.0.1:{port}/v1/api/ws"))
        .env("IBIND_LOG_TO_FILE", "False")
        .env("NO_PROXY", "127.0.0.1,localhost,::1")
        .env("no_proxy", "127.0.0.1,localhost,::1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the ibind script");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();

    let subscribed = next_report(&mut lines, &mut seen).await;
    assert_eq!(subscribed["phase"], "subscribed", "{subscribed}");
    assert_eq!(
        subscribed["subscribed"],
        true,
        "{subscribed}\n{}",
        seen.join("\n")
    );
    assert_eq!(
        subscribed["streaming"],
        true,
        "{subscribed}\n{}",
        seen.join("\n")
    );
    assert_eq!(sandbox.counters().ws_connections, 1);

    // IBKR gives the session a new id and closes the gateway's upstream socket.
    sandbox.rotate_session(USER);
    eventually(
        Duration::from_secs(10),
        "the upstream socket reopened",
        || {
            let opened = sandbox.counters().ws_connections;
            async move { opened >= 2 }
        },
    )
    .await;
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    stdin
        .write_all(format!("after {after}\n").as_bytes())
        .await
        .expect("tell ibind");
    stdin.flush().await.expect("flush");

    let report = next_report(&mut lines, &mut seen).await;
    let output = child.wait_with_output().await.expect("ibind ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "ibind failed:\n{}\n{stderr}",
        seen.join("\n")
    );
    assert!(!stderr.contains("Traceback"), "{stderr}");
    let rest = &report["rest"];
    assert_eq!(
        rest["base_url"],
        format!("https://127.0.0.1:{port}/v1/api/"),
        "{report}"
    );
    assert!(rest["tickle"]["session"].is_string(), "{rest}");
    assert_eq!(
        rest["tickle"]["iserver"]["authStatus"]["authenticated"], true,
        "{rest}"
    );
    assert_eq!(rest["healthy"], true, "{rest}");
    assert_eq!(rest["status"]["authenticated"], true, "{rest}");
    assert_eq!(rest["init"]["authenticated"], true, "{rest}");
    assert_eq!(rest["reauthenticate"]["message"], "triggered", "{rest}");
    assert!(rest["accounts"]["accounts"].is_array(), "{rest}");
    assert!(rest["portfolio_accounts"].is_array(), "{rest}");
    assert_eq!(rest["snapshot"][0]["conid"], 265598, "{rest}");
    assert!(rest["snapshot"][0]["31"].is_string(), "{rest}");
    assert!(rest["live_orders"]["orders"].is_array(), "{rest}");
    assert_eq!(rest["logout"]["status"], true, "{rest}");
    assert_eq!(rest["status_after_logout"]["authenticated"], true, "{rest}");

    assert_eq!(report["resumed"], true, "{report}\n{}", seen.join("\n"));
    assert!(report["received_after"].as_u64() >= Some(2), "{report}");
    // ibind's own socket never closed or failed: the gap was the gateway's.
    assert_eq!(report["lifecycle"]["close"], 0, "{report}");
    assert_eq!(report["lifecycle"]["error"], 0, "{report}");
    // Unwrapped by ibind from IBKR's field ids.
    assert!(report["last"]["last_price"].is_string(), "{report}");
    assert!(report["last"]["bid_price"].is_string(), "{report}");

    let c = sandbox.counters();
    assert_eq!(c.logouts, 0, "ibind's logout stayed in the gateway: {c:?}");
    assert_eq!(c.ws_connections, 2, "{c:?}");
    assert_eq!(c.access_tokens, 1, "{c:?}");
    assert_eq!(c.rejections, 0, "{c:?}");
    running.shutdown().await;
    assert_eq!(sandbox.counters().logouts, 1);
    let _ = std::fs::remove_dir_all(&dir);
}
