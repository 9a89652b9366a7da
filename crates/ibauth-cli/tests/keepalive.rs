//! `ibauth keepalive` when IBKR cannot be reached at start: network trouble is not a rejected
//! login, so it backs off and keeps trying — saying why it waits — instead of giving up.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

mod common;
use common::{ibauth, sandbox_with_set, temp_dir};

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_ibkr_at_start_is_waited_out_not_counted_as_failed_logins() {
    let dir = temp_dir("keepalive-unreachable");
    let (_sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let mut child = ibauth()
        .arg("--config")
        .arg(&config)
        .env("IBAUTH_TOKEN_FILE", dir.join("tokens.json"))
        // Nothing listens there; and one rejected login would be enough to give up.
        .env("IBAUTH_BASE_URL", "http://127.0.0.1:9")
        .env("IBAUTH_MAX_FAILED_LOGINS", "1")
        .args(["keepalive", "--interval", "0.05"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running after several failed attempts"
    );
    let shown: Vec<String> = rx.try_iter().collect();
    let text = shown.join("\n");
    assert!(text.contains("trying again in"), "{text}");
    assert!(text.contains("cannot reach 127.0.0.1:9"), "{text}");
    assert!(
        !shown.iter().any(|l| l.starts_with("failed")),
        "never in the failed state: {text}"
    );
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}
