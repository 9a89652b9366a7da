//! The `ibauth` binary end to end: the demo, the sandbox command, and the config-driven
//! commands against a sandbox over real HTTP(S), with exit codes and a log scan for secrets.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use ibauth_sandbox::SANDBOX_CREDENTIAL;
use serde_json::Value;

mod common;
use common::{ibauth, json_lines, sandbox_with_set, temp_dir, text};

#[test]
fn demo_runs_the_whole_flow() {
    let output = ibauth().arg("demo").output().unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    for step in [
        "access_token",
        "sso_session",
        "validate",
        "ssodh_init",
        "tickle 1/3",
        "tickle 3/3",
        "logout",
    ] {
        assert!(stdout.contains(step), "missing {step} in\n{stdout}");
    }
    assert!(stdout.contains("authenticated=true competing=false connected=true"));
}

#[test]
fn demo_json_over_tls_reports_every_step_and_the_sandbox_counters() {
    let output = ibauth()
        .args(["demo", "--tls", "--json", "--tickles", "2"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let lines = json_lines(&output.stdout);
    let steps: Vec<&str> = lines.iter().filter_map(|l| l["step"].as_str()).collect();
    assert_eq!(
        steps,
        [
            "setup",
            "access_token",
            "sso_session",
            "validate",
            "ssodh_init",
            "tickle",
            "tickle",
            "logout",
            "done"
        ]
    );
    assert!(
        lines[0]["sandbox"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    let done = lines.last().unwrap();
    assert_eq!(done["authenticated"], true);
    assert_eq!(done["sandbox"]["access_tokens"], 1);
    assert_eq!(done["sandbox"]["tickles"], 2);
    assert_eq!(done["sandbox"]["logouts"], 1);
    assert_eq!(done["sandbox"]["rejections"], 0);
}

#[test]
fn demo_oauth1a_runs_the_live_session_token_flow() {
    let output = ibauth()
        .args(["demo", "--oauth1a", "--json", "--tickles", "2"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    let lines = json_lines(&output.stdout);
    let steps: Vec<&str> = lines.iter().filter_map(|l| l["step"].as_str()).collect();
    assert_eq!(
        steps,
        [
            "setup",
            "live_session_token",
            "ssodh_init",
            "tickle",
            "tickle",
            "logout",
            "done"
        ]
    );
    let done = lines.last().unwrap();
    assert_eq!(done["authenticated"], true);
    assert_eq!(done["sandbox"]["live_session_tokens"], 1);
    assert_eq!(done["sandbox"]["tickles"], 2);
    assert_eq!(done["sandbox"]["rejections"], 0);
}

/// Kills the child on drop so a failing test leaves no server behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sandbox_command_serves_a_credential_set_the_other_commands_use() {
    let dir = temp_dir("sandbox-cmd");
    let (mut sandbox, info) = spawn_sandbox(&dir, true);
    assert!(
        info["base_url"]
            .as_str()
            .unwrap()
            .starts_with("https://127.0.0.1:")
    );
    let config = PathBuf::from(info["config"].as_str().unwrap());
    assert!(dir.join("ca.pem").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("private_key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "private key must be 0600");
    }

    // Every command shares one token file, as separate runs of a real user's would.
    let token_file = dir.join("state").join("tokens.json");
    let run = |command: &str| {
        let output = ibauth()
            .arg("--config")
            .arg(&config)
            .env("IBAUTH_TOKEN_FILE", &token_file)
            .args(["--json", command])
            .output()
            .unwrap();
        (output.status.code(), json_lines(&output.stdout))
    };
    let steps = |lines: &[Value]| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l["step"].as_str().map(str::to_owned))
            .collect()
    };
    let (code, lines) = run("login");
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(
        steps(&lines),
        ["access_token", "sso_session", "validate", "ssodh_init"]
    );
    assert_eq!(lines.last().unwrap()["authenticated"], true);
    assert!(token_file.exists(), "login stores the tokens");
    // The next commands reuse them: no new login, the same brokerage session.
    for command in ["status", "tickle", "status"] {
        let (code, lines) = run(command);
        assert_eq!(code, Some(0), "{command}: {lines:?}");
        assert_eq!(steps(&lines), ["tokens", "tickle"], "{command}");
        assert_eq!(lines[0]["source"], "stored");
        assert!(lines[0]["token_age_s"].as_u64().is_some());
        assert_eq!(lines[1]["authenticated"], true);
        let summary = lines.last().unwrap();
        assert!(
            summary["api_base"]
                .as_str()
                .unwrap()
                .starts_with("https://127.0.0.1:")
        );
        let kinds: Vec<&str> = summary["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["access_token", "bearer"]);
    }
    let (code, lines) = run("logout");
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(lines.last().unwrap()["status"], true);
    assert!(!token_file.exists(), "logout forgets the tokens");
    let (code, lines) = run("logout");
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(lines.last().unwrap()["nothing_stored"], true);

    // Human output for the same command.
    let output = ibauth()
        .arg("--config")
        .arg(&config)
        .arg("login")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("authenticated=true"));

    signal(&sandbox.0, "-TERM");
    let status = sandbox.0.wait().unwrap();
    assert!(status.success(), "sandbox exit: {status:?}");
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn sandbox_configs_keep_their_tokens_beside_them_not_in_the_users_token_file() {
    let dir = temp_dir("sandbox-tokens");
    let (_sandbox, info) = spawn_sandbox(&dir, false);
    let config = PathBuf::from(info["config"].as_str().unwrap());
    let home = temp_dir("sandbox-tokens-home");
    let token_file = dir.join("tokens.json");
    assert_eq!(info["token_file"].as_str(), token_file.to_str());
    // Run from another folder with a relative --config: the token file is found relative to
    // the config file, not to where the command runs.
    let relative = Path::new(dir.file_name().unwrap()).join("config.yaml");
    let run = |flags: &[&str]| {
        ibauth()
            .current_dir(dir.parent().unwrap())
            .arg("--config")
            .arg(&relative)
            .env("HOME", &home)
            .env("XDG_STATE_HOME", home.join("state"))
            .args(["--json"])
            .args(flags)
            .output()
            .unwrap()
    };
    // One entry per identity: the OAuth 1.0a login does not overwrite the OAuth 2.0 one.
    for (flags, methods) in [
        (&["login"][..], &["oauth2"][..]),
        (&["--oauth1a", "login"], &["oauth1a", "oauth2"]),
    ] {
        let output = run(flags);
        assert!(output.status.success(), "{flags:?}: {}", text(&output));
        let stored: Value = serde_json::from_slice(&std::fs::read(&token_file).unwrap()).unwrap();
        let mut stored_methods: Vec<&str> = stored["sessions"]
            .as_object()
            .unwrap()
            .values()
            .map(|e| e["method"].as_str().unwrap())
            .collect();
        stored_methods.sort();
        assert_eq!(stored_methods, methods, "{flags:?}");
        assert_eq!(files_under(&home), Vec::<PathBuf>::new(), "{flags:?}");
    }
    // The next command finds them there.
    let output = run(&["--oauth1a", "status"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(json_lines(&output.stdout)[0]["source"], "stored");

    // The third-party config names the same file, resolved the same way.
    let third = PathBuf::from(info["third_party_config"].as_str().unwrap());
    let policy = ibauth::policy::Policy::load(Some(&third)).unwrap();
    assert_eq!(policy.token_file, Some(token_file.clone()));
    assert_eq!(
        ibauth::policy::Policy::load(Some(&config))
            .unwrap()
            .token_file,
        Some(token_file)
    );
}

/// Starts `ibauth sandbox` in `dir`; returns it and its JSON announcement.
fn spawn_sandbox(dir: &Path, tls: bool) -> (Running, Value) {
    let mut cmd = ibauth();
    cmd.args(["sandbox", "--json", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if tls {
        cmd.arg("--tls");
    }
    let mut child = cmd.spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    (Running(child), serde_json::from_str(&first).unwrap())
}

/// A quoted value of the generated config's `oauth1a:` section.
fn yaml_value(config: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(config).unwrap();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{key}:")))
        .unwrap();
    line.split_once(':')
        .unwrap()
        .1
        .trim()
        .trim_matches('"')
        .to_owned()
}

#[test]
fn oauth1a_login_from_the_sandbox_config_and_from_ibind_variables_alone() {
    let dir = temp_dir("oauth1a");
    let (_sandbox, info) = spawn_sandbox(&dir, true);
    let config = PathBuf::from(info["config"].as_str().unwrap());
    let base = info["base_url"].as_str().unwrap().to_owned();

    let token_file = dir.join("tokens.json");
    for (command, first) in [
        ("login", "live_session_token"),
        ("tickle", "tokens"),
        ("logout", "logout"),
    ] {
        let output = ibauth()
            .arg("--config")
            .arg(&config)
            .env("IBAUTH_TOKEN_FILE", &token_file)
            .args(["--oauth1a", "--json", command])
            .output()
            .unwrap();
        assert!(output.status.success(), "{command}: {}", text(&output));
        let lines = json_lines(&output.stdout);
        assert_eq!(lines[0]["step"], first, "{command}");
    }
    assert!(!token_file.exists());

    // An ibind user: no config file, only ibind's own variables (and the sandbox CA, which
    // ibind would take from its environment too).
    let empty = temp_dir("oauth1a-ibind-only");
    // The generated set's own DH prime (never RFC 3526's), as an ibind user copies it.
    let dh_prime = ibauth_sandbox::CredentialSet::load_or_create(&dir)
        .unwrap()
        .dh_prime_hex();
    let ibind = |consumer: &str| {
        let mut cmd = ibauth();
        cmd.current_dir(&empty)
            .env("IBIND_USE_OAUTH", "True")
            .env("IBIND_OAUTH1A_CONSUMER_KEY", consumer)
            .env(
                "IBIND_OAUTH1A_ACCESS_TOKEN",
                yaml_value(&config, "access_token"),
            )
            .env(
                "IBIND_OAUTH1A_ACCESS_TOKEN_SECRET",
                yaml_value(&config, "access_token_secret"),
            )
            .env("IBIND_OAUTH1A_DH_PRIME", dh_prime)
            .env(
                "IBIND_OAUTH1A_ENCRYPTION_KEY_FP",
                dir.join("encryption_key.pem"),
            )
            .env(
                "IBIND_OAUTH1A_SIGNATURE_KEY_FP",
                dir.join("signature_key.pem"),
            )
            .env("IBIND_OAUTH1A_REST_URL", format!("{base}/v1/api/"))
            .env("IBAUTH_OAUTH1A_CA_FILE", dir.join("ca.pem"))
            .args(["--json", "login"]);
        cmd.output().unwrap()
    };
    assert!(!empty.join("config.yaml").exists());
    let output = ibind(ibauth_sandbox::SANDBOX_CONSUMER_KEY);
    assert!(output.status.success(), "{}", text(&output));
    let lines = json_lines(&output.stdout);
    assert_eq!(lines.last().unwrap()["authenticated"], true);

    // A consumer IBKR does not know: exit 4 with IBKR's message and what to check.
    let output = ibind("NOSUCHCON");
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    let err = json_lines(&output.stdout).pop().unwrap();
    assert_eq!(err["step"], "live_session_token");
    let message = err["error"].as_str().unwrap();
    assert!(message.contains("invalid consumer"), "{message}");
    assert!(message.contains("not active yet"), "{message}");
}

#[test]
fn ws_streams_json_lines_for_both_auth_methods() {
    let dir = temp_dir("ws");
    let (_sandbox, info) = spawn_sandbox(&dir, true);
    let config = PathBuf::from(info["config"].as_str().unwrap());
    for method in [None, Some("--oauth1a")] {
        let mut cmd = ibauth();
        cmd.arg("--config").arg(&config);
        if let Some(flag) = method {
            cmd.arg(flag);
        }
        let output = cmd.args(["ws", "--count", "2"]).output().unwrap();
        assert!(output.status.success(), "{method:?}: {}", text(&output));
        let lines = json_lines(&output.stdout);
        assert_eq!(lines.len(), 2, "{method:?}");
        assert_eq!(lines[0]["topic"], "system", "{method:?}");
        assert_eq!(lines[1]["topic"], "sts", "{method:?}");
        assert_eq!(lines[1]["args"]["authenticated"], true, "{method:?}");
    }
}

#[test]
fn config_errors_exit_3_with_a_message_naming_the_fix() {
    let dir = temp_dir("config-errors");
    let output = ibauth().current_dir(&dir).arg("login").output().unwrap();
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("config.yaml not found"));

    std::fs::write(
        dir.join("config.yaml"),
        "client_id: X\nclient_key_id: k\ncredential: c\n",
    )
    .unwrap();
    let output = ibauth()
        .current_dir(&dir)
        .args(["--json", "login"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let err = &json_lines(&output.stdout)[0];
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("missing setting `private_key_file`")
    );
    assert_eq!(err["exit_code"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn rejections_and_network_failures_have_their_exit_codes() {
    let dir = temp_dir("exit-codes");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;

    // Wrong credential: the sandbox refuses the SSO session → 4.
    let output = ibauth()
        .arg("--config")
        .arg(&config)
        .env("IBAUTH_CREDENTIAL", "someoneelse")
        .args(["--json", "login"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    let err = json_lines(&output.stdout).pop().unwrap();
    assert_eq!(err["step"], "sso_session");
    assert_eq!(err["status"], 401);
    assert!(!text(&output).contains("someoneelse"), "credential leaked");

    // Nothing listening → 5.
    let output = ibauth()
        .arg("--config")
        .arg(&config)
        .env("IBAUTH_BASE_URL", "http://127.0.0.1:9")
        .arg("login")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach 127.0.0.1:9"));

    // Another login holds the session and this one does not compete → 6.
    let first = ibauth()
        .arg("--config")
        .arg(&config)
        .arg("login")
        .output()
        .unwrap();
    assert!(first.status.success());
    // The other login is another machine's: it does not share the first one's token file.
    let output = ibauth()
        .arg("--config")
        .arg(&config)
        .env(
            "IBAUTH_TOKEN_FILE",
            dir.join("elsewhere").join("tokens.json"),
        )
        .env("IBAUTH_COMPETE", "false")
        .arg("login")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(6), "{}", text(&output));
    assert!(String::from_utf8_lossy(&output.stderr).contains("competing=true"));
    assert!(sandbox.has_brokerage_session(SANDBOX_CREDENTIAL));
}

/// Every `session_id` in a token file (the WebSocket's `api` cookie).
fn stored_session_ids(path: &std::path::Path, into: &mut Vec<String>) {
    fn walk(value: &serde_json::Value, into: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match v.as_str() {
                        Some(id) if k == "session_id" => into.push(id.to_owned()),
                        _ => walk(v, into),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, into)),
            _ => {}
        }
    }
    if let Ok(text) = std::fs::read_to_string(path)
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(&text)
    {
        walk(&value, into);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_output_even_at_trace_level() {
    let dir = temp_dir("log-scan");
    let (sandbox, config, set) = sandbox_with_set(&dir, true).await;
    let mut seen = String::new();
    let mut stream = String::new();
    let mut sessions = Vec::new();
    let runs: [&[&str]; 7] = [
        &["login"],
        &["status"],
        &["tickle"],
        &["ws", "--count", "2"],
        &["logout"],
        &["--oauth1a", "login"],
        &["--oauth1a", "ws", "--count", "2"],
    ];
    // Whatever RUST_LOG asks for, per target included: the libraries that see the requests
    // (the WebSocket handshake's, the HTTP client's, TLS) at TRACE.
    let filters = [
        "trace",
        "tungstenite=trace",
        "tungstenite::handshake::client=trace",
        "tokio_tungstenite=trace,reqwest=trace,hyper=trace,rustls=trace,h2=trace",
    ];
    for (f, filter) in filters.into_iter().enumerate() {
        for (n, command) in runs.into_iter().enumerate() {
            // A token file per run: each logs in afresh, so there are more tokens to look for.
            let token_file = dir.join(format!("tokens-{f}-{n}.json"));
            let output = ibauth()
                .arg("--config")
                .arg(&config)
                .env("IBAUTH_TOKEN_FILE", &token_file)
                .env("RUST_LOG", filter)
                .arg("-vvv")
                .args(command)
                .output()
                .unwrap();
            // `status` exits 6: it sees the earlier login's session as competing.
            assert!(
                matches!(output.status.code(), Some(0 | 6)),
                "{filter} {command:?}: {}",
                text(&output)
            );
            stored_session_ids(&token_file, &mut sessions);
            if command.contains(&"ws") {
                // stdout of `ws` is IBKR's own message stream, which names the user
                // (system/sts messages): scanned for tokens and keys below, not for the
                // username.
                seen.push_str(&String::from_utf8_lossy(&output.stderr));
                stream.push_str(&String::from_utf8_lossy(&output.stdout));
            } else {
                seen.push_str(&text(&output));
            }
        }
    }
    // The scan must have had something to scan: every step logged at trace level.
    assert!(seen.contains("http exchange"), "no trace output:\n{seen}");
    assert!(seen.contains("access token obtained"));
    assert!(
        seen.contains("tokio_tungstenite") || seen.contains("hyper"),
        "the libraries' own TRACE lines were scanned too"
    );

    assert!(!seen.contains(SANDBOX_CREDENTIAL), "the credential leaked");
    assert!(
        stream.contains("\"topic\":\"sts\""),
        "the ws streams were read"
    );
    // From here on, everything printed is scanned, the message stream included.
    seen.push_str(&stream);
    let tokens = sandbox.issued_tokens();
    assert!(
        tokens.len() >= 8 * filters.len(),
        "expected access and bearer tokens, got {}",
        tokens.len()
    );
    for token in &tokens {
        assert!(
            !seen.contains(token.as_str()),
            "a token leaked into the output"
        );
    }
    // The session ids (the WebSocket's `api` cookie): only a short prefix is ever shown.
    sessions.sort();
    sessions.dedup();
    assert!(
        sessions.len() >= filters.len(),
        "{} session ids",
        sessions.len()
    );
    for id in &sessions {
        assert!(id.len() >= 16, "a session id is long enough to search for");
        assert!(!seen.contains(id.as_str()), "a session id leaked");
    }
    assert!(!seen.contains("api="), "the cookie leaked");
    // OAuth 1.0a: the access token (the socket's `oauth_token`), its secret, and the keys.
    let text = std::fs::read_to_string(&config).unwrap();
    for key in ["access_token", "access_token_secret"] {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key}:")))
            .unwrap();
        let value = line.split_once(':').unwrap().1.trim().trim_matches('"');
        assert!(!seen.contains(value), "the OAuth 1.0a {key} leaked");
    }
    assert!(!seen.contains("oauth_token="), "the socket's query leaked");
    // Two ws runs per filter, each printing `system` and `sts`.
    assert_eq!(
        stream.matches("\"topic\":\"sts\"").count(),
        2 * filters.len(),
        "the ws runs were scanned"
    );
    assert!(seen.contains("WebSocket connected"));
    // Any JWT (ours start with the base64url of {"alg":"RS256"…) would show as eyJ…
    assert!(
        !seen.contains("eyJhbGciOiJSUzI1NiI"),
        "a signed assertion leaked"
    );
    let pem = set.key().to_pkcs8_pem();
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!seen.contains(line), "private key material leaked");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ws_stops_on_ctrl_c_and_logs_out_once() {
    let dir = temp_dir("ws-sigint");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let mut child = ibauth()
        .arg("--config")
        .arg(&config)
        .arg("ws")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("\"topic\":\"system\""), "{line}");
    let mut running = Running(child);
    signal(&running.0, "-INT");
    let status = tokio::task::spawn_blocking(move || running.0.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(sandbox.counters().logouts, 1);
    assert_eq!(sandbox.counters().ws_connections, 1);
}

async fn keepalive_until_signal(sig: &str) {
    let dir = temp_dir(&format!("keepalive{sig}"));
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let mut child = ibauth()
        .arg("--config")
        .arg(&config)
        .args([
            "--json",
            "keepalive",
            "--interval",
            "0.05",
            "--health",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut running = Running(child);
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let health = first["health"].as_str().unwrap().to_owned();
    // Status lines until a few tickles went through.
    loop {
        let line: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if line["tickles"].as_u64().unwrap() >= 3 {
            assert_eq!(line["state"], "authenticated");
            break;
        }
    }
    let http = ibauth::HttpClient::new(std::time::Duration::from_secs(2), None).unwrap();
    let tickles_before = sandbox.counters().tickles;
    for path in ["livez", "readyz"] {
        let reply = http
            .reqwest()
            .get(format!("http://{health}/{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "{path}");
    }
    let status: Value = http
        .reqwest()
        .get(format!("http://{health}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "authenticated");
    assert!(!status.to_string().contains(SANDBOX_CREDENTIAL));
    // Probes answer from the cached state: they add no tickles of their own beyond the loop's.
    assert!(sandbox.counters().tickles - tickles_before <= 3);

    signal(&running.0, sig);
    let exit = tokio::task::spawn_blocking(move || {
        let status = running.0.wait().unwrap();
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        (status, rest)
    })
    .await
    .unwrap();
    assert!(exit.0.success(), "{sig}: {:?}", exit.0);
    assert!(
        exit.1.iter().any(|l| l.contains("logged_out")),
        "{:?}",
        exit.1
    );
    assert_eq!(sandbox.counters().logouts, 1, "exactly one logout on {sig}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keepalive_logs_out_exactly_once_on_sigterm() {
    keepalive_until_signal("-TERM").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn keepalive_logs_out_exactly_once_on_sigint() {
    keepalive_until_signal("-INT").await;
}

/// Starts `ibauth keepalive` on `config` with `token_file`; returns it once it reported
/// `tickles` tickles, with the rest of its JSON lines.
fn keepalive_with_store(
    config: &Path,
    token_file: &Path,
    tickles: u64,
) -> (
    Running,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut child = ibauth()
        .arg("--config")
        .arg(config)
        .env("IBAUTH_TOKEN_FILE", token_file)
        .args(["--json", "keepalive", "--interval", "0.05"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if line["tickles"].as_u64().unwrap_or(0) >= tickles {
            assert_eq!(line["state"], "authenticated");
            break;
        }
    }
    (Running(child), lines)
}

#[tokio::test(flavor = "multi_thread")]
async fn keepalive_killed_hard_leaves_a_whole_token_file_the_next_run_reuses() {
    let dir = temp_dir("killhard");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let token_file = dir.join("state").join("tokens.json");

    let (mut first, _lines) = keepalive_with_store(&config, &token_file, 3);
    // One entry per identity; this file holds the one OAuth 2.0 login.
    let entry = |file: &Path| -> Value {
        let doc: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        let sessions = doc["sessions"].as_object().unwrap();
        assert_eq!(sessions.len(), 1, "{doc}");
        sessions.values().next().unwrap().clone()
    };
    let stored = entry(&token_file);
    assert_eq!(stored["method"], "oauth2");
    assert!(stored["session_id"].is_string(), "{stored}");
    first.0.kill().unwrap(); // SIGKILL: no handler, no logout, no cleanup
    first.0.wait().unwrap();
    assert_eq!(sandbox.counters().logouts, 0);

    // Nothing half-written: the document is whole, nothing but the lock file beside it.
    let after = entry(&token_file);
    assert_eq!(after["bearer"], stored["bearer"]);
    let mut names: Vec<String> = std::fs::read_dir(token_file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["tokens.json", "tokens.json.lock"],
        "unpaced: no ledger"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The next run takes the stored tokens over: no new login, and the session goes on.
    let logins = sandbox.counters().access_tokens;
    let (second, lines) = keepalive_with_store(&config, &token_file, 3);
    assert_eq!(
        sandbox.counters().access_tokens,
        logins,
        "reused, not a new login"
    );
    signal(&second.0, "-TERM");
    let mut second = second;
    let exit = tokio::task::spawn_blocking(move || {
        let status = second.0.wait().unwrap();
        (status, lines.map_while(Result::ok).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert!(exit.0.success(), "{:?}", exit.1);
    assert_eq!(sandbox.counters().logouts, 1);
    assert!(!token_file.exists(), "logged out: the tokens are gone too");
}

#[test]
fn every_command_has_help_with_examples_and_completions_are_generated() {
    let commands = [
        "demo",
        "login",
        "status",
        "tickle",
        "token",
        "logout",
        "keepalive",
        "gateway",
        "ws",
        "doctor",
        "sandbox",
        "completions",
    ];
    for command in commands {
        let output = ibauth().args([command, "--help"]).output().unwrap();
        assert!(output.status.success(), "{command}");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(
            help.contains("Example"),
            "{command} --help has examples:\n{help}"
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let output = ibauth().args(["completions", shell]).output().unwrap();
        assert!(output.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&output.stdout);
        for command in commands {
            assert!(script.contains(command), "{shell} completes {command}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn colour_and_progress_only_where_a_person_is_watching() {
    let dir = temp_dir("colour");
    let (_sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let token_file = dir.join("tokens.json");
    let login = |extra: &[&str]| {
        ibauth()
            .arg("--config")
            .arg(&config)
            .env("IBAUTH_TOKEN_FILE", &token_file)
            .env_remove("NO_COLOR")
            .args(extra)
            .args(["login", "--force"])
            .output()
            .unwrap()
    };
    // Piped: plain text, no progress.
    let piped = login(&[]);
    assert!(piped.status.success(), "{}", text(&piped));
    assert!(!text(&piped).contains('\x1b'), "no escapes when piped");
    assert!(!text(&piped).contains('\r'), "no progress when piped");
    assert!(String::from_utf8_lossy(&piped.stdout).contains("  ok  access_token"));
    // Asked for.
    let coloured = login(&["--color", "always"]);
    assert!(String::from_utf8_lossy(&coloured.stdout).contains("\x1b[32mok\x1b[0m"));

    // On a terminal (a pseudo-terminal from script(1)): progress, then the results over it.
    let command = format!(
        "{} --config {} login --force",
        env!("CARGO_BIN_EXE_ibauth"),
        config.display()
    );
    let tty = ibauth_script(&command, &token_file);
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(tty.status.success(), "{shown}");
    assert!(
        shown.contains("…   logging in"),
        "progress on a terminal: {shown:?}"
    );
    assert!(
        shown.contains("\x1b[32mok"),
        "colour on a terminal: {shown:?}"
    );
}

/// Runs `command` under a pseudo-terminal (util-linux script).
fn ibauth_script(command: &str, token_file: &Path) -> Output {
    let mut cmd = Command::new("script");
    cmd.args(["-qec", command, "/dev/null"])
        .env("IBAUTH_TOKEN_FILE", token_file)
        .env_remove("NO_COLOR");
    for (name, _) in std::env::vars() {
        if name.starts_with("IBAUTH_") || name == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    cmd.env("IBAUTH_TOKEN_FILE", token_file).output().unwrap()
}
