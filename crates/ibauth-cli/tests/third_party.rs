//! `ibauth --third-party` end to end against the sandbox: the manual flow with the redirect's
//! verifier fed on stdin, the grant reused by the next command, and no hang without a terminal.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use ibauth::SigningKey;
use ibauth_sandbox::{
    ConsumerRegistration, CredentialSet, SANDBOX_CREDENTIAL, SANDBOX_PASSWORD, Sandbox,
};
use serde_json::Value;

mod common;
use common::{ibauth, json_lines, temp_dir, text};

/// `ibauth sandbox`'s own third-party setup: TESTCONS, its user, `config-third-party.yaml`.
async fn setup(name: &str) -> (Sandbox, std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_dir(name);
    let set = CredentialSet::load_or_create(&dir).unwrap();
    let sandbox = Sandbox::builder()
        .register_consumer(set.third_party_registration())
        .user(SANDBOX_CREDENTIAL, SANDBOX_PASSWORD, false)
        .start()
        .await
        .unwrap();
    let config = set
        .write_third_party_config(sandbox.base_url(), None)
        .unwrap();
    (sandbox, config, dir.join("tokens.json"))
}

/// Approves on the sandbox page as a person would; returns the verifier it shows (oob).
async fn approve(url: &str) -> String {
    let http = ibauth::HttpClient::new(Duration::from_secs(5), None).unwrap();
    let token = url.split("oauth_token=").nth(1).unwrap().to_owned();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("oauth_token", &token)
        .append_pair("username", SANDBOX_CREDENTIAL)
        .append_pair("password", SANDBOX_PASSWORD)
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
    let entry = stored["sessions"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    assert_eq!(entry["method"], "third_party");
    assert_eq!(entry["grant"]["consumer_key"], "TESTCONS");

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

    // Every command works with the grant: an API call, the WebSocket, the doctor.
    let third_party = |args: &[&str]| {
        ibauth()
            .arg("--config")
            .arg(&config)
            .env("IBAUTH_TOKEN_FILE", &token_file)
            .arg("--third-party")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let output = third_party(&["api", "GET", "iserver/accounts"]);
    assert!(output.status.success(), "{}", text(&output));
    let accounts: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(accounts["accounts"].is_array(), "{accounts}");
    let output = third_party(&["ws", "--count", "1"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("\"topic\":\"system\""));
    let output = third_party(&["--json", "doctor"]);
    assert!(output.status.success(), "{}", text(&output));
    let report = json_lines(&output.stdout).pop().unwrap();
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["check"] == "auth method" && c["detail"] == "OAuth 1.0a third party"),
        "{report}"
    );
    assert_eq!(
        sandbox.counters().live_session_tokens,
        1,
        "still the stored one"
    );

    // Logging out ends the stored session; once more, there is nothing to end — and no
    // authorisation is started to find out.
    let output = third_party(&["--json", "logout"]);
    assert!(output.status.success(), "{}", text(&output));
    let output = third_party(&["--json", "logout"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(
        json_lines(&output.stdout).last().unwrap()["nothing_stored"],
        true
    );
    assert_eq!(sandbox.counters().request_tokens, 1, "no new authorisation");
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

/// A minimal WebDriver client over HTTP, enough to log in and press a button.
struct WebDriver {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: std::process::Child,
}

impl WebDriver {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // A process group of its own: chromium and its helpers, started by chromedriver, go
        // with it at the end (killing chromedriver alone left them running).
        use std::os::unix::process::CommandExt as _;
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            // Strict on purpose: a browser test that skipped would pass without testing.
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start chromedriver ({e}): run scripts/test.sh, which installs chromium and chromium-driver"
                )
            });
        let http = ibauth::HttpClient::new(Duration::from_secs(60), None)
            .unwrap()
            .reqwest()
            .clone();
        let base = format!("http://127.0.0.1:{port}");
        let capabilities = serde_json::json!({ "capabilities": { "alwaysMatch": {
            "acceptInsecureCerts": true,
            "goog:chromeOptions": { "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--ignore-certificate-errors"
            ] }
        } } });
        let mut session = None;
        for _ in 0..50 {
            if let Ok(reply) = http
                .post(format!("{base}/session"))
                .json(&capabilities)
                .send()
                .await
            {
                let body: Value = reply.json().await.unwrap();
                session = body["value"]["sessionId"].as_str().map(str::to_owned);
                assert!(
                    session.is_some(),
                    "no WebDriver session (is chromium installed? run scripts/test.sh): {body}"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            http,
            base,
            session: session.expect("chromedriver did not answer within 5 s"),
            driver,
        }
    }

    async fn call(&self, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let reply = self.http.post(url).json(&body).send().await.unwrap();
        reply.json().await.unwrap()
    }

    /// The element `css` names, waiting up to 10 s for it (the launch page sends the browser
    /// on to the authorisation page after it has loaded).
    async fn element(&self, css: &str) -> String {
        let mut found = Value::Null;
        for _ in 0..100 {
            found = self
                .call(
                    "/element",
                    serde_json::json!({ "using": "css selector", "value": css }),
                )
                .await;
            if let Some(id) = found["value"]
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(Value::as_str)
            {
                return id.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {css}: {found}")
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        // The whole group: chromedriver, chromium and chromium's helpers.
        let _ = std::process::Command::new("kill")
            .args(["-s", "KILL", "--"])
            .arg(format!("-{}", self.driver.id()))
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A sandbox with a third-party consumer whose callback is on a free local port, user `dana`
/// (password `pw`), and a config for it; the folder holding it all.
async fn browser_setup(name: &str) -> (Sandbox, std::path::PathBuf, std::path::PathBuf) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let callback = format!("https://127.0.0.1:{port}/ibauth/callback");
    let dir = temp_dir(name);
    let set = CredentialSet::load_or_create(&dir).unwrap();
    let signature = SigningKey::from_pem_file(&dir.join("signature_key.pem")).unwrap();
    let encryption = SigningKey::from_pem_file(&dir.join("encryption_key.pem")).unwrap();
    // The consumer's group is the one in the set's dhparam.pem, which the config names.
    let group = ibauth::oauth1a::DhGroup::from_hex(set.dh_prime_hex(), 2).unwrap();
    let sandbox = Sandbox::builder()
        .register_consumer(
            ConsumerRegistration::new("THIRDPRTY", &signature, &encryption)
                .third_party(Some(&callback))
                .dh_group(group),
        )
        .user("dana", "pw", true)
        .start()
        .await
        .unwrap();
    let config = dir.join("third.yaml");
    std::fs::write(
        &config,
        format!(
            "oauth1a:\n  consumer_key: THIRDPRTY\n  signature_key_file: signature_key.pem\n  encryption_key_file: encryption_key.pem\n  dh_param_file: dhparam.pem\n  rest_url: {base}/v1/api/\n  authorize_url: {base}/authorize\n  callback_url: {callback}\n",
            base = sandbox.base_url()
        ),
    )
    .unwrap();
    (sandbox, config, dir)
}

/// A "browser" for ibauth to start: a script that records what a local user could see of it —
/// its arguments, and its command line as `/proc` shows it to everyone — and hands the file it
/// was given to this test (with that file's mode and its folder's, and a copy of it).
fn browser_script(dir: &std::path::Path) -> std::path::PathBuf {
    let browser = dir.join("browser.sh");
    std::fs::write(
        &browser,
        format!(
            "#!/bin/sh\n\
             cd {dir}\n\
             printf '%s\\n' \"$0\" \"$@\" > argv\n\
             tr '\\000' ' ' < /proc/$$/cmdline > cmdline\n\
             stat -c '%a' \"$1\" \"$(dirname \"$1\")\" > modes\n\
             cp \"$1\" page.html\n\
             echo \"$1\" > opened.tmp && mv opened.tmp opened\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    browser
}

/// The path the browser script was given, once it has run.
async fn opened(dir: &std::path::Path) -> String {
    for _ in 0..400 {
        if let Ok(text) = std::fs::read_to_string(dir.join("opened"))
            && !text.trim().is_empty()
        {
            return text.trim().to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the browser was not started within 20 s");
}

/// What the browser script saw: nothing naming the request token, a private page.
fn assert_nothing_secret_on_the_command_line(dir: &std::path::Path, page: &str) {
    let argv = std::fs::read_to_string(dir.join("argv")).unwrap();
    let cmdline = std::fs::read_to_string(dir.join("cmdline")).unwrap();
    for seen in [&argv, &cmdline] {
        assert!(
            !seen.contains("oauth_token") && !seen.contains("/authorize?"),
            "the authorisation URL is on the command line: {seen}"
        );
        assert!(seen.contains(page), "the page is what was opened: {seen}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("modes")).unwrap(),
        "600\n700\n",
        "the page is 0600 in a 0700 folder"
    );
    // The launch page carries the URL, and the request token with it.
    let html = std::fs::read_to_string(dir.join("page.html")).unwrap();
    assert!(html.contains("/authorize?oauth_token="), "{html}");
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_flow_driven_by_a_real_headless_chromium() {
    let (sandbox, config, dir) = browser_setup("third-browser").await;
    // The "browser" ibauth opens: a script that hands the page to this test, which then drives
    // Chromium there as a person would.
    let browser = browser_script(&dir);
    let child = ibauth()
        .arg("--config")
        .arg(&config)
        .env("IBAUTH_TOKEN_FILE", dir.join("tokens.json"))
        .env("BROWSER", &browser)
        .args([
            "--json",
            "--third-party",
            "--flow",
            "browser",
            "--auth-timeout",
            "60",
            "tickle",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let page = opened(&dir).await;
    assert_nothing_secret_on_the_command_line(&dir, &page);

    // Chromium opens the page it was given, which sends it on to the authorisation page.
    let chrome = WebDriver::start().await;
    chrome
        .call(
            "/url",
            serde_json::json!({ "url": format!("file://{page}") }),
        )
        .await;
    let user = chrome.element("#username").await;
    chrome
        .call(
            &format!("/element/{user}/value"),
            serde_json::json!({ "text": "dana" }),
        )
        .await;
    let password = chrome.element("#password").await;
    chrome
        .call(
            &format!("/element/{password}/value"),
            serde_json::json!({ "text": "pw" }),
        )
        .await;
    let approve = chrome.element("#approve").await;
    chrome
        .call(&format!("/element/{approve}/click"), serde_json::json!({}))
        .await;

    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let banner = String::from_utf8_lossy(&output.stderr);
    assert!(
        banner.contains("not\nprivate") || banner.contains("not private"),
        "{banner}"
    );
    let lines = json_lines(&output.stdout);
    assert_eq!(
        lines.iter().find(|l| l["step"] == "authorization").unwrap()["fresh"],
        true
    );
    let tickle = lines.iter().rev().find(|l| l["step"] == "tickle").unwrap();
    assert_eq!(tickle["authenticated"], true, "{lines:?}");
    // Chromium landed on the local callback page.
    let page = chrome
        .http
        .get(format!("{}/session/{}/source", chrome.base, chrome.session))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("authorised"), "{page}");
    assert_eq!(sandbox.counters().oauth_access_tokens, 1);
}

/// The browser flow with a client in place of the browser: the page handed to `$BROWSER`
/// leads to the authorisation page; the approval's redirect, sent to the local callback over
/// HTTPS, finishes the login; nothing names the request token on a command line; and the page
/// is gone afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn the_browser_is_given_a_private_page_not_the_authorisation_url() {
    let (sandbox, config, dir) = browser_setup("third-argv").await;
    let browser = browser_script(&dir);
    let child = ibauth()
        .arg("--config")
        .arg(&config)
        .env("IBAUTH_TOKEN_FILE", dir.join("tokens.json"))
        .env("BROWSER", &browser)
        .args([
            "--json",
            "--third-party",
            "--flow",
            "browser",
            "--auth-timeout",
            "60",
            "login",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let page = opened(&dir).await;
    assert_nothing_secret_on_the_command_line(&dir, &page);
    let html = std::fs::read_to_string(dir.join("page.html")).unwrap();
    let url: String = html
        .split("location.replace(")
        .nth(1)
        .and_then(|rest| rest.split(");").next())
        .map(|literal| serde_json::from_str(literal).unwrap())
        .unwrap_or_else(|| panic!("no redirect in the page: {html}"));

    // Approve as the page's form would, and follow the redirect to the callback by hand.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let token = url.split("oauth_token=").nth(1).unwrap().to_owned();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("oauth_token", &token)
        .append_pair("username", "dana")
        .append_pair("password", "pw")
        .append_pair("action", "approve")
        .finish();
    let approved = http
        .post(url.split('?').next().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    let redirect = approved
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_else(|| panic!("no redirect: {}", approved.status()))
        .to_owned();
    assert!(
        redirect.contains(&format!("oauth_token={token}")),
        "{redirect}"
    );
    let landed = http.get(&redirect).send().await.unwrap();
    assert_eq!(landed.status(), 200);
    assert!(landed.text().await.unwrap().contains("authorised"));

    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let lines = json_lines(&output.stdout);
    assert_eq!(lines.last().unwrap()["authenticated"], true, "{lines:?}");
    assert_eq!(sandbox.counters().oauth_access_tokens, 1);
    // The page and its folder are removed once the login is over.
    let page = std::path::Path::new(&page);
    assert!(!page.exists(), "{} is left behind", page.display());
    assert!(!page.parent().unwrap().exists());
}
