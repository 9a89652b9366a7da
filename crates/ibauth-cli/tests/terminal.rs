//! Strings from the server never drive the user's terminal: a session id and IBKR messages
//! carrying escape sequences (colour, window title, clear screen) come out of `status`,
//! `tickle` and the error lines escaped, never as raw ESC; JSON output stays valid JSON with the
//! server's strings intact.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use ibauth_sandbox::{CredentialSet, FailWith, Sandbox};
use serde_json::Value;

mod common;
use common::{ibauth, json_lines, temp_dir, text};

/// Colour, a window title (OSC … BEL), clear screen as a one-character CSI (U+009B), a
/// right-to-left override.
const HOSTILE: &str = "\u{1b}[31mred\u{1b}]0;owned\u{7}\u{9b}2J\u{202e}";

/// A loopback proxy in front of the sandbox that prefixes every tickle's session id with
/// [`HOSTILE`], as a hostile server (or anything on the way) could; everything else passes.
async fn hostile_proxy(sandbox: &str) -> SocketAddr {
    let upstream = sandbox.trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (http, upstream) = (http.clone(), upstream.clone());
            async move {
                let target = format!(
                    "{upstream}{}",
                    uri.path_and_query().map_or("/", |p| p.as_str())
                );
                let mut request = http.request(method, target).body(body);
                for (name, value) in &headers {
                    if name != "host" && name != "content-length" {
                        request = request.header(name, value);
                    }
                }
                let reply = request.send().await.unwrap();
                let status = StatusCode::from_u16(reply.status().as_u16()).unwrap();
                let content_type = reply.headers().get("content-type").cloned();
                let mut bytes = reply.bytes().await.unwrap().to_vec();
                if uri.path().ends_with("/tickle")
                    && let Ok(mut value) = serde_json::from_slice::<Value>(&bytes)
                    && let Some(session) = value["session"].as_str()
                {
                    value["session"] = Value::String(format!("{HOSTILE}{session}"));
                    bytes = serde_json::to_vec(&value).unwrap();
                }
                let mut answer = axum::response::Response::new(axum::body::Body::from(bytes));
                *answer.status_mut() = status;
                if let Some(content_type) = content_type {
                    answer.headers_mut().insert("content-type", content_type);
                }
                answer
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn run(config: &Path, args: &[&str]) -> Output {
    ibauth()
        .arg("--config")
        .arg(config)
        .args(["--color", "never"])
        .args(args)
        .output()
        .unwrap()
}

fn assert_no_escape(output: &Output) {
    for (stream, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        let shown = String::from_utf8_lossy(bytes);
        assert!(
            !bytes.contains(&0x1b) && !shown.contains('\u{9b}') && !shown.contains('\u{7}'),
            "raw control characters on {stream}: {shown:?}"
        );
        assert!(
            !shown.contains('\u{202e}'),
            "a bidi override on {stream}: {shown:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_strings_reach_the_terminal_escaped() {
    let dir = temp_dir("terminal");
    let set = CredentialSet::load_or_create(&dir).unwrap();
    let sandbox = Sandbox::builder()
        .register(set.registration())
        .start()
        .await
        .unwrap();
    let proxy = hostile_proxy(sandbox.base_url()).await;
    let config = set
        .write_config_with(&format!("http://{proxy}"), None, None)
        .unwrap();

    // A session id with escape sequences, in `tickle` and `status` (text).
    for args in [&["tickle"][..], &["status"], &["-v", "status"]] {
        let output = run(&config, args);
        assert!(output.status.success(), "{args:?}: {}", text(&output));
        assert_no_escape(&output);
        let shown = String::from_utf8_lossy(&output.stdout);
        // Shown, escaped (the short id is the first six characters).
        assert!(shown.contains("session \\u{1b}[31mr…"), "{args:?}: {shown}");
    }
    // JSON: valid, no raw control character, and the server's string exactly as sent.
    let output = run(&config, &["--json", "status"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_no_escape(&output);
    let lines = json_lines(&output.stdout);
    let tickle = lines.iter().find(|l| l["step"] == "tickle").unwrap();
    let expected: String = HOSTILE.chars().take(6).collect();
    assert_eq!(tickle["session"], format!("{expected}…"));

    // IBKR's message in an error, as text and as JSON.
    let message = format!("{HOSTILE}maintenance\r\u{1b}[2K fake ok line");
    sandbox.fail_next(1, FailWith::new(403, message.clone()));
    let output = run(&config, &["status"]);
    assert!(!output.status.success());
    assert_no_escape(&output);
    let shown = String::from_utf8_lossy(&output.stderr);
    // The message is shown (its controls made harmless), on the error's one line: the CR
    // cannot send the cursor back to overwrite it with a fake line.
    let line = shown
        .lines()
        .find(|l| l.contains("IBKR answered HTTP 403"))
        .unwrap();
    assert!(
        line.contains("[31mred") && line.contains("maintenance") && line.contains("fake ok line"),
        "{shown}"
    );

    sandbox.fail_next(1, FailWith::new(403, message.clone()));
    let output = run(&config, &["--json", "status"]);
    assert_no_escape(&output);
    let lines = json_lines(&output.stdout);
    let error = lines.last().unwrap()["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("maintenance") && error.contains('\u{202e}'),
        "{error}"
    );
    // The override is in the value, written as an escape in the line.
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("\\u202e"),
        "{}",
        text(&output)
    );

    // `ibauth api` prints the answer as received when piped (a program reads it), so only
    // its stdout on a terminal is escaped; its error line on stderr is escaped either way.
    sandbox.fail_next(1, FailWith::new(403, message.clone()));
    let output = run(&config, &["api", "GET", "iserver/accounts"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.stderr.contains(&0x1b), "{stderr:?}");
    let body: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(body["error"], message.as_str());
}
