//! The log level of the WebSocket library (tungstenite) follows the one asked for and is capped
//! at DEBUG: `-q` silences it, and not even `RUST_LOG=trace` (or a per-target filter) shows its
//! TRACE lines, which hold every frame's payload (IBKR's messages name the user). Tokens do not
//! depend on the cap: tungstenite never sees them (`no_secret_reaches_any_log_target_even_
//! uncapped_at_trace` in the sandbox's tests). Run with the real binary against a sandbox.

use ibauth_sandbox::SANDBOX_CREDENTIAL;

mod common;
use common::{ibauth, sandbox_with_set, temp_dir, text};

/// The log lines of `stderr` at `level` (the fmt layer writes ` LEVEL ` after the timestamp).
fn lines_at<'a>(stderr: &'a str, level: &str) -> Vec<&'a str> {
    let tag = format!(" {level} ");
    stderr.lines().filter(|l| l.contains(&tag)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn quiet_ws_prints_no_debug_or_info_lines_for_either_method() {
    let dir = temp_dir("log-quiet");
    let (_sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    for method in [&[][..], &["--oauth1a"][..]] {
        let output = ibauth()
            .arg("--config")
            .arg(&config)
            .args(method)
            .args(["-q", "ws", "--count", "1"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{method:?}: {}", text(&output));
        assert_eq!(
            common::json_lines(&output.stdout)[0]["topic"],
            "system",
            "{method:?}: the stream was read"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        for level in ["TRACE", "DEBUG", "INFO", "WARN"] {
            assert_eq!(
                lines_at(&stderr, level),
                Vec::<&str>::new(),
                "{method:?}: -q shows errors only"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_websocket_library_stays_at_or_below_the_level_asked_for() {
    let dir = temp_dir("log-levels");
    let (_sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let ws = |flags: &[&str], rust_log: Option<&str>| {
        let mut cmd = ibauth();
        cmd.arg("--config").arg(&config);
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        // -vv prints each line's target, so tungstenite's lines can be told apart.
        let output = cmd
            .args(flags)
            .args(["ws", "--count", "1"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{flags:?}: {}", text(&output));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let from_tungstenite = |stderr: &str, level: &str| -> usize {
        lines_at(stderr, level)
            .iter()
            .filter(|l| l.contains("tungstenite"))
            .count()
    };

    // Everything at TRACE, or tungstenite's own targets raised to TRACE: ours are there,
    // tungstenite's stop at DEBUG. Uncapped, its TRACE lines would show every frame's payload
    // (IBKR's messages name the user). Its handshake, which held the tokens, is no longer its
    // own (see `ibauth::ws`), so a normal run has no tungstenite line above TRACE to show.
    for (filter, ours) in [
        ("trace", true),
        ("ibauth=trace,tungstenite::handshake::client=trace", true),
        ("tungstenite=trace", false),
        ("tungstenite::protocol=trace,tokio_tungstenite=trace", false),
    ] {
        let stderr = ws(&["-vv"], Some(filter));
        assert_eq!(
            !lines_at(&stderr, "TRACE").is_empty(),
            ours,
            "{filter}: ibauth's own TRACE lines:\n{stderr}"
        );
        assert_eq!(from_tungstenite(&stderr, "TRACE"), 0, "{filter}:\n{stderr}");
        assert!(!stderr.contains(SANDBOX_CREDENTIAL), "{filter}");
    }

    // RUST_LOG below DEBUG: tungstenite is not raised to DEBUG.
    let stderr = ws(&["-vv"], Some("info"));
    assert_eq!(from_tungstenite(&stderr, "DEBUG"), 0, "{stderr}");
    // A filter for other targets only: tungstenite stays off.
    let stderr = ws(&["-vv"], Some("ibauth=trace"));
    assert!(!lines_at(&stderr, "TRACE").is_empty(), "{stderr}");
    assert_eq!(stderr.matches("tungstenite").count(), 0, "{stderr}");

    // -vvv (TRACE) without RUST_LOG: no tungstenite TRACE line.
    let stderr = ws(&["-vvv"], None);
    assert!(!lines_at(&stderr, "TRACE").is_empty(), "{stderr}");
    assert_eq!(from_tungstenite(&stderr, "TRACE"), 0, "{stderr}");
    // -v (INFO): no DEBUG line at all, tungstenite's included.
    let stderr = ws(&["-v"], None);
    assert_eq!(lines_at(&stderr, "DEBUG"), Vec::<&str>::new(), "{stderr}");
}
