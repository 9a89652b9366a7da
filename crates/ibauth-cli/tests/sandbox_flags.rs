//! `ibauth sandbox --no-admin` and `--nightly-reset`: the test-only admin API is gone when
//! asked, and a reset time is checked before the sandbox starts.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use serde_json::Value;

mod common;
use common::{ibauth, temp_dir, text};

/// A running `ibauth sandbox`, killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ibauth sandbox` with `extra` arguments; returns it and its base URL.
fn spawn(name: &str, extra: &[&str]) -> (Running, String) {
    let dir = temp_dir(name);
    let mut child = ibauth()
        .args(["sandbox", "--json", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let info: Value = serde_json::from_str(&first).unwrap();
    let base = info["base_url"].as_str().unwrap().to_owned();
    (Running(child), base)
}

async fn counters_status(base: &str) -> u16 {
    reqwest::get(format!("{base}/__sandbox/counters"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn no_admin_turns_the_admin_api_off() {
    let (_on, base) = spawn("admin-on", &[]);
    assert_eq!(counters_status(&base).await, 200);
    let (_off, base) = spawn("admin-off", &["--no-admin"]);
    assert_eq!(counters_status(&base).await, 404);
    let fail = reqwest::Client::new()
        .post(format!("{base}/__sandbox/fail_next"))
        .json(&serde_json::json!({"status": 500}))
        .send()
        .await
        .unwrap();
    assert_eq!(fail.status().as_u16(), 404);
    // The API itself still answers.
    let tickle = reqwest::Client::new()
        .post(format!("{base}/v1/api/tickle"))
        .send()
        .await
        .unwrap();
    assert_eq!(tickle.status().as_u16(), 401);
}

#[tokio::test]
async fn a_nightly_reset_time_is_checked_before_starting() {
    let (_running, base) = spawn("nightly-ok", &["--nightly-reset", "01:00-05:00"]);
    assert_eq!(counters_status(&base).await, 200);
    for bad in ["25:00", "01:00+19:00", "1am"] {
        let dir = temp_dir("nightly-bad");
        let output = ibauth()
            .args(["sandbox", "--listen", "127.0.0.1:0", "--dir"])
            .arg(&dir)
            .args(["--nightly-reset", bad])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{bad}: {}", text(&output));
        assert!(
            text(&output).contains("invalid nightly reset time"),
            "{bad}: {}",
            text(&output)
        );
        // Refused before anything was written.
        assert!(!dir.join("private_key.pem").exists());
    }
}

#[tokio::test]
async fn a_tickler_window_is_checked_before_starting() {
    let (_running, base) = spawn("tickler-ok", &["--tickler-window", "500ms"]);
    let users = reqwest::get(format!("{base}/__sandbox/users/nobody"))
        .await
        .unwrap();
    assert_eq!(users.status().as_u16(), 200);
    let body: Value = users.json().await.unwrap();
    assert_eq!(body["max_concurrent_ticklers"], 0);
    for bad in ["0s", "25h", "5 parsecs", "-1s", "s"] {
        let dir = temp_dir("tickler-bad");
        let output = ibauth()
            .args(["sandbox", "--listen", "127.0.0.1:0", "--dir"])
            .arg(&dir)
            .arg(format!("--tickler-window={bad}"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{bad}: {}", text(&output));
        assert!(
            text(&output).contains("--tickler-window"),
            "{bad}: {}",
            text(&output)
        );
        assert!(!dir.join("private_key.pem").exists());
    }
}
