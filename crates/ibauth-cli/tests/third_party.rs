//! `ibauth --third-party` end to end against the sandbox: the manual flow with the redirect's
//! verifier fed on stdin, the grant reused by the next command, and no hang without a terminal.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use ibauth::SigningKey;
use ibauth_sandbox::{ConsumerRegistration, CredentialSet, Sandbox};
use serde_json::Value;

mod common;
use common::{ibauth, json_lines, temp_dir, text};

async fn setup(name: &str) -> (Sandbox, std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_dir(name);
    CredentialSet::load_or_create(&dir).unwrap();
    let signature = SigningKey::from_pem_file(&dir.join("signature_key.pem")).unwrap();
    let encryption = SigningKey::from_pem_file(&dir.join("encryption_key.pem")).unwrap();
    let sandbox = Sandbox::builder()
        .register_consumer(
            ConsumerRegistration::new("THIRDPRTY", &signature, &encryption).third_party(None),
        )
        .user("dana", "pw", false)
        .start()
        .await
        .unwrap();
    let config = dir.join("third.yaml");
    std::fs::write(
        &config,
        format!(
            "oauth1a:\n  consumer_key: THIRDPRTY\n  signature_key_file: signature_key.pem\n  encryption_key_file: encryption_key.pem\n  dh_param_file: dhparam.pem\n  rest_url: {base}/v1/api/\n  authorize_url: {base}/authorize\n",
            base = sandbox.base_url()
        ),
    )
    .unwrap();
    (sandbox, config, dir.join("tokens.json"))
}

/// Approves on the sandbox page as a person would; returns the verifier it shows (oob).
async fn approve(url: &str) -> String {
    let http = ibauth::HttpClient::new(Duration::from_secs(5), None).unwrap();
    let token = url.split("oauth_token=").nth(1).unwrap().to_owned();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("oauth_token", &token)
        .append_pair("username", "dana")
        .append_pair("password", "pw")
        .append_pair("action", "approve")
        .finish();
    let page = http
        .reqwest()
        .post(url.split('?').next().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    page.split("<code id=\"verifier\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn manual_flow_with_the_verifier_on_stdin_then_the_grant_is_reused() {
    let (sandbox, config, token_file) = setup("third-manual").await;
    let mut child = ibauth()
        .arg("--config")
        .arg(&config)
        .env("IBAUTH_TOKEN_FILE", &token_file)
        .args(["--json", "--third-party", "--flow", "manual", "login"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Read stderr to the end (the child keeps writing to it), handing over the URL line.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.trim().starts_with("http") {
                let _ = tx.send(line.trim().to_owned());
            }
        }
    });
    let url =
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)).unwrap())
            .await
            .unwrap();
    assert!(url.contains("/authorize?oauth_token="), "{url}");
    let verifier = approve(&url).await;
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{verifier}").unwrap();
    drop(stdin);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let lines = json_lines(&output.stdout);
    let auth: &Value = lines.iter().find(|l| l["step"] == "authorization").unwrap();
    assert_eq!(auth["fresh"], true);
    assert_eq!(lines.last().unwrap()["authenticated"], true);
    let counters = sandbox.counters();
    assert_eq!(
        (counters.oauth_access_tokens, counters.live_session_tokens),
        (1, 1)
    );
    let stored: Value = serde_json::from_slice(&std::fs::read(&token_file).unwrap()).unwrap();
    assert_eq!(stored["grant"]["consumer_key"], "THIRDPRTY");

    // The next command reuses the stored grant and live session token: no browser, no login.
    let output = ibauth()
        .arg("--config")
        .arg(&config)
        .env("IBAUTH_TOKEN_FILE", &token_file)
        .args(["--json", "--third-party", "status"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let lines = json_lines(&output.stdout);
    assert_eq!(lines[0]["fresh"], false);
    let counters = sandbox.counters();
    assert_eq!(
        (counters.request_tokens, counters.live_session_tokens),
        (1, 1),
        "nothing new asked of IBKR"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_terminal_the_manual_flow_fails_at_once() {
    let (_sandbox, config, token_file) = setup("third-notty").await;
    let started = std::time::Instant::now();
    let output = ibauth()
        .arg("--config")
        .arg(&config)
        .env("IBAUTH_TOKEN_FILE", &token_file)
        .args(["--third-party", "--flow", "manual", "login"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(text(&output).contains("no terminal"), "{}", text(&output));
    // Bounded by the request token round trip, not by the 300 s wait.
    assert!(started.elapsed() < Duration::from_secs(30));
}
