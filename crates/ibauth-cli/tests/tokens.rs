//! The token file across processes: reuse, exactly one login when many processes meet an
//! expired or revoked token, `ibauth token`, and a broken file (corrupt, exposed, newer).

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

mod common;
use common::{ibauth, json_lines, sandbox_with_set, temp_dir, text};

fn run(config: &Path, token_file: &Path, args: &[&str]) -> Output {
    ibauth()
        .arg("--config")
        .arg(config)
        .env("IBAUTH_TOKEN_FILE", token_file)
        .arg("--json")
        .args(args)
        .output()
        .unwrap()
}

/// Runs `args` in `n` processes at once; their outputs.
async fn at_once(config: &Path, token_file: &Path, n: usize, args: &[&str]) -> Vec<Output> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            ibauth()
                .arg("--config")
                .arg(config)
                .env("IBAUTH_TOKEN_FILE", token_file)
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect()
    })
    .await
    .unwrap()
}

fn sources(outputs: &[Output]) -> Vec<String> {
    let mut sources: Vec<String> = outputs
        .iter()
        .map(|o| {
            let lines = json_lines(&o.stdout);
            if lines.iter().any(|l| l["step"] == "access_token") {
                "login".to_owned()
            } else {
                // The last word: "stored" first, then "adopted" after the 401.
                lines
                    .iter()
                    .rev()
                    .find(|l| l["step"] == "tokens")
                    .map(|l| l["source"].as_str().unwrap_or("?").to_owned())
                    .unwrap_or_else(|| "?".into())
            }
        })
        .collect();
    sources.sort();
    sources
}

/// Edits the file's only entry (`edit_file` edits the whole file).
fn rewrite(token_file: &Path, edit: impl FnOnce(&mut Value)) {
    edit_file(token_file, |doc| {
        let sessions = doc["sessions"].as_object_mut().unwrap();
        assert_eq!(sessions.len(), 1);
        edit(sessions.values_mut().next().unwrap());
    });
}

fn edit_file(token_file: &Path, edit: impl FnOnce(&mut Value)) {
    let mut doc: Value = serde_json::from_slice(&std::fs::read(token_file).unwrap()).unwrap();
    edit(&mut doc);
    // In place: the file keeps its 0600 mode.
    std::fs::write(token_file, serde_json::to_vec(&doc).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_processes_meeting_a_revoked_or_expired_token_log_in_once() {
    let dir = temp_dir("eight");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let token_file = dir.join("tokens.json");
    assert!(run(&config, &token_file, &["login"]).status.success());
    assert_eq!(sandbox.counters().access_tokens, 1);

    // Revoked server-side: the stored tokens look valid, IBKR answers 401. One process logs in
    // again, the others take its tokens (the same with `ibauth api`: tests/api.rs).
    sandbox.expire_tokens_now();
    let outputs = at_once(&config, &token_file, 8, &["--json", "tickle"]).await;
    for o in &outputs {
        assert!(o.status.success(), "{}", text(o));
    }
    assert_eq!(sandbox.counters().access_tokens, 2, "exactly one new login");
    // One logged in; the others took its tokens — after their own 401 ("adopted"), or at
    // start if they began after it saved ("stored").
    let one_login = |sources: Vec<String>| {
        assert_eq!(
            sources.iter().filter(|s| *s == "login").count(),
            1,
            "{sources:?}"
        );
        assert!(
            sources
                .iter()
                .all(|s| ["login", "adopted", "stored"].contains(&s.as_str())),
            "{sources:?}"
        );
    };
    one_login(sources(&outputs));

    // For people: the flags, the token ages and expiries, the host.
    let output = ibauth()
        .arg("--config")
        .arg(&config)
        .env("IBAUTH_TOKEN_FILE", &token_file)
        .arg("status")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(shown.contains("reused stored tokens: login"), "{shown}");
    assert!(shown.contains("authenticated=true"), "{shown}");
    assert!(shown.contains("bearer expires in"), "{shown}");
    assert!(
        shown.contains(&format!("api {}/", sandbox.base_url())),
        "{shown}"
    );

    // Expired by the clock: nobody even tries the stored tokens.
    rewrite(&token_file, |doc| {
        doc["bearer"]["expires_at"] = Value::from(1u64);
    });
    let outputs = at_once(&config, &token_file, 8, &["--json", "tickle"]).await;
    for o in &outputs {
        assert!(o.status.success(), "{}", text(o));
    }
    assert_eq!(sandbox.counters().access_tokens, 3, "exactly one new login");
    one_login(sources(&outputs));

    // Readers never saw a partial file, and the file is whole now.
    let doc: Value = serde_json::from_slice(&std::fs::read(&token_file).unwrap()).unwrap();
    assert_eq!(doc["schema"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_prints_a_header_that_authorizes_the_request() {
    let dir = temp_dir("token");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let http = ibauth::HttpClient::new(std::time::Duration::from_secs(5), None).unwrap();

    // OAuth 2.0: the bearer, good for any request.
    let token_file = dir.join("tokens2.json");
    let output = run(&config, &token_file, &["token"]);
    assert!(output.status.success(), "{}", text(&output));
    let line = json_lines(&output.stdout).pop().unwrap();
    let value = line["authorization"].as_str().unwrap().to_owned();
    assert!(value.starts_with("Bearer "), "{value}");
    let reply = http
        .reqwest()
        .post(format!("{}/v1/api/tickle", sandbox.base_url()))
        .header("Authorization", &value)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    // Human output is the bare value, for $(ibauth token); --curl a whole command line.
    let output = ibauth()
        .arg("--config")
        .arg(&config)
        .env("IBAUTH_TOKEN_FILE", &token_file)
        .args(["-q", "token", "--curl"])
        .output()
        .unwrap();
    let curl = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert_eq!(
        curl,
        format!(
            "curl -H 'Authorization: {value}' '{}/v1/api/iserver/accounts'",
            sandbox.base_url()
        )
    );
    assert_eq!(
        sandbox.counters().access_tokens,
        1,
        "the second call reused the token"
    );

    // OAuth 1.0a: a signature for exactly this method and URL.
    let token_file = dir.join("tokens1a.json");
    let output = run(
        &config,
        &token_file,
        &[
            "--oauth1a",
            "token",
            "--method",
            "post",
            "--path",
            "/v1/api/tickle",
        ],
    );
    assert!(output.status.success(), "{}", text(&output));
    let line = json_lines(&output.stdout).pop().unwrap();
    let value = line["authorization"].as_str().unwrap().to_owned();
    assert!(value.starts_with("OAuth "), "{value}");
    assert!(value.contains("HMAC-SHA256"));
    let elsewhere = http
        .reqwest()
        .post(format!("{}/v1/api/logout", sandbox.base_url()))
        .header("Authorization", &value)
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 401, "signed for another URL");
    let output = run(
        &config,
        &token_file,
        &[
            "--oauth1a",
            "token",
            "--method",
            "POST",
            "--path",
            "/v1/api/tickle",
        ],
    );
    let value = json_lines(&output.stdout).pop().unwrap()["authorization"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = http
        .reqwest()
        .post(format!("{}/v1/api/tickle", sandbox.base_url()))
        .header("Authorization", &value)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(sandbox.counters().live_session_tokens, 1, "reused");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_paths_stay_under_the_api_on_its_host() {
    let dir = temp_dir("token-paths");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let token_file = dir.join("tokens.json");
    let token = |path: &str| {
        ibauth()
            .arg("--config")
            .arg(&config)
            .env("IBAUTH_TOKEN_FILE", &token_file)
            .args(["--json", "--oauth1a", "token", "--curl", "--path", path])
            .output()
            .unwrap()
    };
    // Each of these would have signed (and printed a curl line for) a URL on another host or
    // outside the API.
    for path in [
        "https://evil.example/x",
        "//evil.example/x",
        "\\\\evil.example/x",
        "http:evil.example/x",
        "/../../oauth2/api/v1/token",
        "/v1/%2e%2e/oauth2/api/v1/token",
        "%2e%2e/%2e%2e/oauth2/api/v1/token",
        "iserver/.%2E/.%2e/.%2e/oauth2/api/v1/token",
        "iserver\\..\\..\\..\\oauth2",
        ".\t./.\t./.\t./oauth2/api/v1/token",
        "iserver/..%2f..%2f..%2foauth2",
    ] {
        let output = token(path);
        assert_eq!(output.status.code(), Some(1), "{path:?}: {}", text(&output));
        let line = json_lines(&output.stdout).pop().unwrap();
        assert!(line["authorization"].is_null(), "{path:?}: {line}");
        let error = line["error"].as_str().unwrap();
        assert!(
            error.contains("give a path")
                || error.contains("`..`")
                || error.contains("use `/`")
                || error.contains("plain path"),
            "{path:?}: {error}"
        );
    }
    // Confined: on the sandbox, under /v1/.
    let base = sandbox.base_url();
    for (path, url) in [
        ("@evil.example/x", format!("{base}/v1/api/@evil.example/x")),
        (
            "/oauth2/api/v1/token",
            format!("{base}/v1/api/oauth2/api/v1/token"),
        ),
        (
            "/v1/portal/sso/validate",
            format!("{base}/v1/portal/sso/validate"),
        ),
    ] {
        let output = token(path);
        assert!(output.status.success(), "{path}: {}", text(&output));
        let line = json_lines(&output.stdout).pop().unwrap();
        assert_eq!(line["url"], url.as_str(), "{path}");
    }
    // A quote in the path cannot break out of the curl line's quoting.
    let output = token("iserver/it's'; touch pwned; '");
    assert!(output.status.success(), "{}", text(&output));
    let curl = json_lines(&output.stdout).pop().unwrap()["curl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        curl.contains(r"'\''"),
        "the quote is escaped for the shell: {curl}"
    );
    // A real shell splits the line into exactly curl's three arguments, and runs nothing else.
    let words = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "for w in {}; do echo \"$w\"; done",
                curl.trim_start_matches("curl ")
            ),
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    let words = String::from_utf8_lossy(&words.stdout);
    assert_eq!(words.lines().count(), 3, "-H, the header, the URL: {words}");
    assert!(!dir.join("pwned").exists());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_or_a_symlink_at_the_token_file_is_refused_not_waited_on() {
    let dir = temp_dir("fifo");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let token_file = state.join("tokens.json");
    let made = std::process::Command::new("mkfifo")
        .arg(&token_file)
        .status()
        .unwrap();
    assert!(made.success());
    for command in ["status", "tickle", "logout"] {
        let mut child = ibauth()
            .arg("--config")
            .arg(&config)
            .env("IBAUTH_TOKEN_FILE", &token_file)
            .args(["--json", command])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Before the fix `status` blocked forever opening the FIFO: bounded here.
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > std::time::Duration::from_secs(20) {
                let _ = child.kill();
                panic!("`ibauth {command}` hangs on a FIFO token file");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(3),
            "{command}: {}",
            text(&output)
        );
        let error = json_lines(&output.stdout).pop().unwrap()["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(error.contains("FIFO") && error.contains("rm "), "{error}");
    }
    assert_eq!(
        sandbox.counters().access_tokens,
        0,
        "no login through a FIFO"
    );

    // A symlink to a file elsewhere: refused, and the file it points to is left as it was.
    std::fs::remove_file(&token_file).unwrap();
    let elsewhere = dir.join("precious.txt");
    std::fs::write(&elsewhere, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&elsewhere, &token_file).unwrap();
    let output = run(&config, &token_file, &["tickle"]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(text(&output).contains("symbolic link"), "{}", text(&output));
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "keep me\n");
    assert_eq!(sandbox.counters().access_tokens, 0);
}

fn files_beside(token_file: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(token_file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_token_file_is_kept_aside_and_replaced_by_a_login() {
    let dir = temp_dir("corrupt");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let token_file = dir.join("state").join("tokens.json");
    assert!(run(&config, &token_file, &["login"]).status.success());
    let whole = std::fs::read(&token_file).unwrap();
    std::fs::write(&token_file, &whole[..whole.len() / 3]).unwrap();

    // `status` only looks: no valid stored session, no login, the file left in place.
    let output = run(&config, &token_file, &["status"]);
    assert_eq!(output.status.code(), Some(6), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("corrupt"));
    assert_eq!(sandbox.counters().access_tokens, 1, "status never logs in");

    let output = run(&config, &token_file, &["tickle"]);
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("corrupt"), "reported: {stderr}");
    assert_eq!(sandbox.counters().access_tokens, 2, "a fresh login");
    let aside: Vec<_> = files_beside(&token_file)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "kept, not deleted");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), &whole[..whole.len() / 3]);
    let doc: Value = serde_json::from_slice(&std::fs::read(&token_file).unwrap()).unwrap();
    let entry = doc["sessions"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    assert_eq!(entry["method"], "oauth2");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn an_exposed_or_newer_token_file_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("exposed");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let token_file = dir.join("tokens.json");
    assert!(run(&config, &token_file, &["login"]).status.success());
    let before = std::fs::read(&token_file).unwrap();

    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = run(&config, &token_file, &["status"]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let err = json_lines(&output.stdout).pop().unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("chmod 600"),
        "{err}"
    );
    assert_eq!(std::fs::read(&token_file).unwrap(), before, "untouched");
    assert_eq!(sandbox.counters().access_tokens, 1, "no login either");

    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    edit_file(&token_file, |doc| doc["schema"] = Value::from(7u64));
    let output = run(&config, &token_file, &["status"]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let err = json_lines(&output.stdout).pop().unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("upgrade ibauth"),
        "{err}"
    );
    assert_eq!(sandbox.counters().access_tokens, 1);
}
