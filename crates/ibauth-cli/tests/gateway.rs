//! `ibauth gateway`, the real binary, against the sandbox, driven by the real `curl`: HTTPS with
//! its self-signed certificate or the user's own PEM files, a stock conf.yaml with
//! `listenSsl: false` and a deny entry, IBeam's variables (dormant start, `/activate`), ibind's
//! `IBIND_OAUTH1A_*` credentials alone, exactly one logout on SIGTERM/SIGINT, JSON log lines
//! with the access log's times (IBKR's, the pacing wait), and no secret in any output.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ibauth_sandbox::{SANDBOX_CREDENTIAL, Sandbox};
use serde_json::Value;

mod common;
use common::{ibauth, sandbox_with_set, temp_dir};

/// The stock `clientportal.gw/root/conf.yaml`, as IBKR ships it.
fn stock_conf() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ibauth-gateway/tests/fixtures/conf.yaml");
    std::fs::read_to_string(path).unwrap()
}

/// A gateway process: its announcement (stdout's first line, JSON) and its log (stderr, kept
/// as it comes). Killed on drop, so a failing test leaves nothing behind.
struct Gateway {
    child: Child,
    announced: Value,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn start(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut cmd = ibauth();
        cmd.arg("--config").arg(config);
        Self::spawn(cmd, args, env)
    }

    /// `cmd` (the binary, its global flags and working folder) running `--json gateway args`.
    fn spawn(mut cmd: Command, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        cmd.arg("--json").arg("gateway");
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        // The rest of stdout (nothing is expected) must not block the process.
        std::thread::spawn(move || for _ in stdout.lines() {});
        let announced = serde_json::from_str(&first).unwrap_or_else(|e| {
            panic!(
                "not JSON: {first:?} ({e}); log:\n{}",
                log.lock().unwrap().join("\n")
            )
        });
        Gateway {
            child,
            announced,
            log,
        }
    }

    fn url(&self) -> String {
        self.announced["gateway"][0].as_str().unwrap().to_owned()
    }

    fn health(&self) -> String {
        format!("http://{}", self.announced["health"].as_str().unwrap())
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits (at most 5 s) for a log line holding `needle`: the stderr reader can be a line
    /// behind what the gateway has already answered.
    fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no line with {needle:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `/readyz` to answer 200.
    fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if curl(&[&format!("{}/readyz", self.health())]).0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("never ready; log:\n{}", self.log());
    }

    /// Sends `sig` and waits for the exit (at most 20 s).
    fn stop(mut self, sig: &str) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the stderr reader catch up with the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The real curl: (status, body). `-k`: the self-signed certificate, as clients use it.
fn curl(args: &[&str]) -> (u16, String) {
    let output: Output = Command::new("curl")
        .args(["-sS", "-k", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON: {body} ({e})"))
}

/// Every log line is one JSON object; returns them.
fn json_log(gateway: &Gateway) -> Vec<Value> {
    gateway
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line not JSON: {l} ({e})")))
        .collect()
}

/// Nothing secret in `text`: the credential, any token the sandbox issued, a session id.
fn assert_no_secret(text: &str, sandbox: &Sandbox, stored: &str) {
    assert!(!text.contains(SANDBOX_CREDENTIAL), "the credential leaked");
    for token in sandbox.issued_tokens() {
        assert!(!text.contains(token.as_str()), "a token leaked");
    }
    let values: Vec<&str> = stored
        .split('"')
        .filter(|s| s.len() >= 24 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
        .collect();
    assert!(
        !values.is_empty(),
        "the token file's values were looked for"
    );
    for value in values {
        assert!(!text.contains(value), "a stored value leaked: {value}");
    }
    assert!(!text.contains("api="), "the cookie leaked");
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_reaches_the_web_api_over_https_and_sigterm_logs_out_exactly_once() {
    let dir = temp_dir("gateway-https");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let state = dir.join("state");
    let gateway = Gateway::start(
        &config,
        &[
            "--listen",
            "127.0.0.1:0",
            "--health",
            "127.0.0.1:0",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[],
    );
    gateway.ready();
    let base = gateway.url();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let (status, body) = curl(&[&format!("{base}/v1/api/iserver/auth/status")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["authenticated"], true, "{body}");
    let (status, body) = curl(&[&format!(
        "{base}/v1/portal/iserver/accounts?marker=QUERYMARKER"
    )]);
    assert_eq!(status, 200, "{body}");
    assert!(json(&body)["accounts"].is_array(), "{body}");
    // The self-signed certificate is kept in the state folder, for clients that verify.
    let cert = state.join("tls/cert.pem");
    assert_eq!(gateway.announced["certificate"], cert.to_str().unwrap());
    let output = Command::new("curl")
        .args(["-sS", "--fail", "--cacert", cert.to_str().unwrap()])
        .arg(format!("{base}/v1/api/tickle"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The sandbox's config names its token file, which wins over the state folder's.
    assert_eq!(
        gateway.announced["token_file"],
        dir.join("tokens.json").to_str().unwrap()
    );
    assert!(dir.join("tokens.json").is_file());
    assert!(!state.join("tokens.json").exists());

    assert_eq!(sandbox.counters().logouts, 0);
    // Read while the session is on (the logout forgets the tokens).
    let stored = std::fs::read_to_string(dir.join("tokens.json")).unwrap();
    assert!(stored.contains("session_id"), "{stored}");
    let log_before_stop = gateway.log();
    let log = gateway.log.clone();
    let status = gateway.stop("-TERM");
    assert!(
        status.success(),
        "{status:?}\n{}",
        log.lock().unwrap().join("\n")
    );
    assert_eq!(sandbox.counters().logouts, 1, "exactly one logout");
    assert!(!sandbox.has_brokerage_session(SANDBOX_CREDENTIAL));

    // Every stderr line is a JSON object; the access log has its fields, no query.
    let lines: Vec<Value> = log
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l} ({e})")))
        .collect();
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "ibauth_gateway::access")
        .collect();
    let status_line = access
        .iter()
        .find(|l| l["path"] == "/v1/api/iserver/auth/status")
        .unwrap_or_else(|| panic!("no access line:\n{log_before_stop}"));
    assert_eq!(status_line["method"], "GET");
    assert_eq!(status_line["status"], 200);
    assert_eq!(status_line["level"], "INFO");
    assert!(status_line["ms"].is_u64());
    assert!(status_line["upstream_ms"].is_u64(), "{status_line}");
    // Pacing is off here: no wait.
    assert_eq!(status_line["waited_ms"], 0, "{status_line}");
    assert!(
        access
            .iter()
            .any(|l| l["path"] == "/v1/portal/iserver/accounts")
    );
    let all = log.lock().unwrap().join("\n");
    assert!(
        !all.contains("QUERYMARKER"),
        "the query stays out of the log"
    );
    assert!(lines.iter().any(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("logging out once"))
    }));
    assert_no_secret(&all, &sandbox, &stored);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stock_conf_yaml_with_listen_ssl_false_serves_http_and_its_deny_list_refuses() {
    let dir = temp_dir("gateway-conf");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    // The stock file with plain HTTP, 127.0.0.* allowed and 127.0.0.2 denied.
    let conf = stock_conf()
        .replace("listenSsl: true", "listenSsl: false")
        .replace("    - 127.0.0.1\n", "    - 127.0.0.*\n")
        .replace(
            "    - 212.90.324.10\n",
            "    - 212.90.324.10\n    - 127.0.0.2\n",
        );
    assert!(conf.contains("127.0.0.2") && conf.contains("listenSsl: false"));
    let conf_path = dir.join("conf.yaml");
    std::fs::write(&conf_path, conf).unwrap();
    let state = dir.join("state");
    let gateway = Gateway::start(
        &config,
        &[
            "--conf",
            conf_path.to_str().unwrap(),
            // Over listenPort 5000.
            "--listen",
            "127.0.0.1:0",
            "--health",
            "127.0.0.1:0",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[],
    );
    gateway.ready();
    let base = gateway.url();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert_ne!(gateway.announced["listen"][0], "127.0.0.1:5000");
    let (status, body) = curl(&[&format!("{base}/v1/api/iserver/auth/status")]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["authenticated"], true);
    // conf.yaml's cors section: the stock `origin.allowed: "*"`.
    let headers = Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null"])
        .arg(format!("{base}/v1/api/iserver/auth/status"))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&headers.stdout).to_ascii_lowercase();
    assert!(
        headers.contains("access-control-allow-origin: *"),
        "{headers}"
    );

    let calls = sandbox.counters().api_calls;
    let (status, body) = curl(&[
        "--interface",
        "127.0.0.2",
        &format!("{base}/v1/api/iserver/accounts"),
    ]);
    assert_eq!((status, body.as_str()), (404, "Access Denied"));
    assert_eq!(sandbox.counters().api_calls, calls, "refused before IBKR");
    // Not in the allow list: refused too, with what to add.
    let (status, _) = curl(&[
        "--interface",
        "127.0.1.1",
        &format!("{base}/v1/api/iserver/accounts"),
    ]);
    assert_eq!(status, 404);
    gateway.wait_for_log("refused 127.0.1.1");
    let lines = json_log(&gateway);
    let message = |needle: &str| {
        lines
            .iter()
            .filter_map(|l| l["message"].as_str())
            .find(|m| m.contains(needle))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{}", gateway.log()))
    };
    let refused = message("refused 127.0.0.2");
    assert!(refused.contains("ips.deny"), "{refused}");
    let refused = message("refused 127.0.1.1");
    assert!(
        refused.contains("ips.allow") && refused.contains("127.0.1.*"),
        "{refused}"
    );
    // Each ignored key reported once; the keystore password never.
    let notes = message("ignored sslCert, sslPwd");
    assert!(notes.contains(conf_path.to_str().unwrap()), "{notes}");
    let all = gateway.log();
    assert_eq!(all.matches("sslPwd").count(), 1, "{all}");
    assert!(!all.contains("mywebapi"));
    message("--listen wins over the port 5000");
    message("`212.90.324.10`");

    let status = gateway.stop("-TERM");
    assert!(status.success(), "{status:?}");
    assert_eq!(sandbox.counters().logouts, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn ibeam_variables_start_it_dormant_on_every_interface_until_activate() {
    let dir = temp_dir("gateway-ibeam");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let state = dir.join("state");
    let gateway = Gateway::start(
        &config,
        &["--state-dir", state.to_str().unwrap()],
        &[
            // Port 0: any free one (the announcement says which).
            ("IBEAM_GATEWAY_BASE_URL", "http://localhost:0"),
            ("IBEAM_HEALTH_SERVER_PORT", "0"),
            ("IBEAM_START_ACTIVE", "false"),
            ("IBEAM_MAINTENANCE_INTERVAL", "1"),
            ("IBEAM_PASSWORD", "hunter2-not-used"),
            ("IBEAM_LOG_LEVEL", "INFO"),
        ],
    );
    let listen = gateway.announced["listen"][0].as_str().unwrap().to_owned();
    assert!(listen.starts_with("[::]:"), "every interface: {listen}");
    let port = listen.rsplit(':').next().unwrap().to_owned();
    let health_port = gateway.announced["health"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    let health = format!("http://127.0.0.1:{health_port}");
    assert_eq!(gateway.announced["active"], false);
    // Dormant: nobody logged in, clients answered 503 with the reason.
    let (status, body) = curl(&[&format!("http://127.0.0.1:{port}/v1/api/iserver/accounts")]);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("dormant"), "{body}");
    assert_eq!(curl(&[&format!("{health}/readyz")]).0, 503);
    assert_eq!(sandbox.counters().access_tokens, 0);
    let (status, body) = curl(&["-X", "POST", &format!("{health}/activate")]);
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while curl(&[&format!("{health}/readyz")]).0 != 200 {
        assert!(Instant::now() < deadline, "{}", gateway.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // IPv4 and IPv6 clients on the one [::] socket.
    for host in ["127.0.0.1", "[::1]"] {
        let (status, body) = curl(&[&format!("http://{host}:{port}/v1/api/iserver/auth/status")]);
        assert_eq!(status, 200, "{host}: {body}");
    }
    let all = gateway.log();
    assert!(all.contains("IBEAM_PASSWORD"), "named in a note:\n{all}");
    assert!(!all.contains("hunter2"));
    let status = gateway.stop("-INT");
    assert!(status.success(), "{status:?}");
    assert_eq!(sandbox.counters().logouts, 1);
    assert_eq!(sandbox.counters().access_tokens, 1);
}

#[test]
fn configuration_errors_exit_3_naming_the_file_key_or_variable() {
    let dir = temp_dir("gateway-errors");
    let conf = dir.join("conf.yaml");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = ibauth();
        cmd.arg("gateway")
            .args(args)
            .env("XDG_STATE_HOME", dir.join("state"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let output = cmd.output().unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let conf_arg: PathBuf = conf.clone();
    let conf_arg = conf_arg.to_str().unwrap();
    std::fs::write(&conf, "listenPort: 5000\nips:\n  allow:\n    - 192.*.1\n").unwrap();
    let (code, err) = run(&["--conf", conf_arg], &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains(conf_arg) && err.contains("`ips.allow`") && err.contains("`192.*.1`"),
        "{err}"
    );
    std::fs::write(&conf, "listenPort: [\nsslPwd: pw-in-file\n").unwrap();
    let (code, err) = run(&["--conf", conf_arg], &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("not a gateway conf.yaml") && !err.contains("pw-in-file"),
        "{err}"
    );
    let (code, err) = run(&["--conf", "/nonexistent/conf.yaml"], &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("/nonexistent/conf.yaml") && err.contains("--conf"),
        "{err}"
    );
    let (code, err) = run(&[], &[("IBEAM_MAX_FAILED_AUTH", "lots")]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("IBEAM_MAX_FAILED_AUTH") && err.contains("1 to 100"),
        "{err}"
    );
    // Usage errors are clap's: exit 2.
    let (code, _) = run(&["--plain", "--cert", "c.pem", "--key", "k.pem"], &[]);
    assert_eq!(code, Some(2));
    let (code, err) = run(&["--health", "nowhere"], &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("nor `off`"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_that_gave_up_stays_down_until_activate_tries_again() {
    let dir = temp_dir("gateway-gave-up");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    // The first login is refused: a credential never seen to work is not tried again.
    sandbox.fail_next(
        1,
        ibauth_sandbox::FailWith::new(401, "invalid_client".to_owned()),
    );
    let state = dir.join("state");
    let gateway = Gateway::start(
        &config,
        &[
            "--plain",
            "--listen",
            "127.0.0.1:0",
            "--health",
            "127.0.0.1:0",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[("IBEAM_MAX_FAILED_AUTH", "1")],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = curl(&[&format!("{}/status", gateway.health())]);
        if json(&body)["state"] == "failed" {
            break;
        }
        assert!(Instant::now() < deadline, "{body}\n{}", gateway.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Up, saying why it does not serve.
    assert_eq!(curl(&[&format!("{}/livez", gateway.health())]).0, 200);
    assert_eq!(curl(&[&format!("{}/readyz", gateway.health())]).0, 503);
    let (status, body) = curl(&[&format!("{}/v1/api/iserver/accounts", gateway.url())]);
    assert_eq!(status, 503, "{body}");
    gateway.wait_for_log("the session gave up");
    assert_eq!(sandbox.counters().access_tokens, 0);
    // /activate: another try, which works now.
    let (status, body) = curl(&["-X", "POST", &format!("{}/activate", gateway.health())]);
    assert_eq!(status, 200, "{body}");
    gateway.ready();
    let (status, body) = curl(&[&format!("{}/v1/api/iserver/accounts", gateway.url())]);
    assert_eq!(status, 200, "{body}");
    let status = gateway.stop("-TERM");
    assert!(status.success(), "{status:?}");
    assert_eq!(sandbox.counters().logouts, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_shared_keeps_the_session_logout_pass_ends_it_until_activate() {
    let dir = temp_dir("gateway-logout");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let state = dir.join("state");
    let args = |mode: &'static str| {
        [
            "--plain",
            "--listen",
            "127.0.0.1:0",
            "--health",
            "127.0.0.1:0",
            "--state-dir",
            state.to_str().unwrap(),
            "--logout",
            mode,
        ]
        .map(str::to_owned)
    };
    let shared = args("shared");
    let shared: Vec<&str> = shared.iter().map(String::as_str).collect();
    let gateway = Gateway::start(&config, &shared, &[]);
    gateway.ready();
    let (status, body) = curl(&["-X", "POST", &format!("{}/v1/api/logout", gateway.url())]);
    assert_eq!(
        (status, json(&body)["status"].clone()),
        (200, Value::Bool(true))
    );
    assert_eq!(sandbox.counters().logouts, 0, "answered by the gateway");
    assert_eq!(
        curl(&[&format!("{}/v1/api/iserver/accounts", gateway.url())]).0,
        200
    );
    assert!(gateway.stop("-TERM").success());
    assert_eq!(sandbox.counters().logouts, 1);

    let pass = args("pass");
    let pass: Vec<&str> = pass.iter().map(String::as_str).collect();
    let gateway = Gateway::start(&config, &pass, &[]);
    gateway.ready();
    let (status, body) = curl(&["-X", "POST", &format!("{}/v1/api/logout", gateway.url())]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(sandbox.counters().logouts, 2, "passed on");
    let (status, body) = curl(&[&format!("{}/v1/api/iserver/accounts", gateway.url())]);
    assert_eq!(status, 503, "{body}");
    assert_eq!(curl(&[&format!("{}/readyz", gateway.health())]).0, 503);
    let (status, body) = curl(&["-X", "POST", &format!("{}/activate", gateway.health())]);
    assert_eq!(status, 200, "{body}");
    gateway.ready();
    assert_eq!(
        curl(&[&format!("{}/v1/api/iserver/accounts", gateway.url())]).0,
        200
    );
    assert!(gateway.stop("-TERM").success());
    assert_eq!(sandbox.counters().logouts, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn ibind_oauth1a_variables_alone_and_the_users_own_certificate() {
    let dir = temp_dir("gateway-ibind");
    let (sandbox, config, set) = sandbox_with_set(&dir, false).await;
    // An ibind + IBeam setup: no ibauth config file, only ibind's variables.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let value = |key: &str| {
        let text = std::fs::read_to_string(&config).unwrap();
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in {text}"));
        line.split_once(':')
            .unwrap()
            .1
            .trim()
            .trim_matches('"')
            .to_owned()
    };
    let (token, secret) = (value("access_token"), value("access_token_secret"));
    let encryption = dir.join("encryption_key.pem");
    let signature = dir.join("signature_key.pem");
    let rest_url = format!("{}/v1/api/", sandbox.base_url().trim_end_matches('/'));
    // Its own certificate (a CA's, for localhost and 127.0.0.1) instead of a self-signed one.
    let tls = ibauth_sandbox::tls::generate().unwrap();
    let (cert, key, ca) = (
        dir.join("chain.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    std::fs::write(&cert, &tls.chain_pem).unwrap();
    std::fs::write(&key, &tls.key_pem).unwrap();
    std::fs::write(&ca, &tls.ca_pem).unwrap();
    let state = dir.join("state");
    let mut cmd = ibauth();
    cmd.current_dir(&empty);
    let gateway = Gateway::spawn(
        cmd,
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--health",
            "127.0.0.1:0",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[
            ("IBIND_USE_OAUTH", "True"),
            (
                "IBIND_OAUTH1A_CONSUMER_KEY",
                ibauth_sandbox::SANDBOX_CONSUMER_KEY,
            ),
            ("IBIND_OAUTH1A_ACCESS_TOKEN", &token),
            ("IBIND_OAUTH1A_ACCESS_TOKEN_SECRET", &secret),
            ("IBIND_OAUTH1A_DH_PRIME", set.dh_prime_hex()),
            (
                "IBIND_OAUTH1A_ENCRYPTION_KEY_FP",
                encryption.to_str().unwrap(),
            ),
            (
                "IBIND_OAUTH1A_SIGNATURE_KEY_FP",
                signature.to_str().unwrap(),
            ),
            ("IBIND_OAUTH1A_REST_URL", &rest_url),
        ],
    );
    gateway.ready();
    assert!(!empty.join("config.yaml").exists());
    assert_eq!(gateway.announced["certificate"], cert.to_str().unwrap());
    assert!(
        !state.join("tls").exists(),
        "no self-signed certificate made"
    );
    assert_eq!(sandbox.counters().live_session_tokens, 1, "OAuth 1.0a");
    // Verified against the CA (no -k): the gateway serves the given chain.
    let base = gateway.url();
    let output = Command::new("curl")
        .args(["-sS", "--fail", "--cacert", ca.to_str().unwrap()])
        .arg(format!("{base}/v1/api/iserver/accounts"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stderr),
        gateway.log()
    );
    let accounts = json(&String::from_utf8_lossy(&output.stdout));
    assert!(accounts["accounts"].is_array(), "{accounts}");
    let all = gateway.log();
    assert!(!all.contains(&secret) && !all.contains(&token), "{all}");
    let status = gateway.stop("-TERM");
    assert!(status.success(), "{status:?}");
    assert_eq!(sandbox.counters().logouts, 1);
    assert!(!sandbox.has_brokerage_session(SANDBOX_CREDENTIAL));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_gives_ibkrs_time_and_the_wait_for_a_pacing_turn() {
    let dir = temp_dir("gateway-paced");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let state = dir.join("state");
    let gateway = Gateway::start(
        &config,
        &[
            "--plain",
            "--listen",
            "127.0.0.1:0",
            "--health",
            "127.0.0.1:0",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        // IBKR's limits: market data snapshots at 10 a second.
        &[("IBAUTH_PACING", "ibkr")],
    );
    gateway.ready();
    sandbox.delay_responses(Some(Duration::from_millis(30)));
    // Eleven different snapshots at once (identical ones would share one upstream call): ten
    // go within the second, one waits for a turn.
    let clients: Vec<_> = (0..11)
        .map(|conid| {
            Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!(
                    "{}/v1/api/iserver/marketdata/snapshot?conids={}&fields=31",
                    gateway.url(),
                    265_598 + conid
                ))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for client in clients {
        let output = client.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&output.stdout), "200");
    }
    sandbox.delay_responses(None);
    let snapshot_lines = || -> Vec<Value> {
        json_log(&gateway)
            .into_iter()
            .filter(|l| {
                l["target"] == "ibauth_gateway::access"
                    && l["path"] == "/v1/api/iserver/marketdata/snapshot"
            })
            .collect()
    };
    // The stderr reader may be a line behind.
    let deadline = Instant::now() + Duration::from_secs(5);
    while snapshot_lines().len() < 11 {
        assert!(Instant::now() < deadline, "{}", gateway.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let snapshots = snapshot_lines();
    assert_eq!(snapshots.len(), 11, "{}", gateway.log());
    for line in &snapshots {
        assert!(line["upstream_ms"].as_u64().unwrap() >= 30, "{line}");
        assert!(line["waited_ms"].is_u64(), "{line}");
        assert!(
            line["ms"].as_u64().unwrap()
                >= line["upstream_ms"].as_u64().unwrap() + line["waited_ms"].as_u64().unwrap(),
            "{line}"
        );
    }
    let longest = snapshots
        .iter()
        .map(|l| l["waited_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(longest > 0, "{}", gateway.log());
    assert!(
        !gateway.log().contains("conids"),
        "the query stays out of the log"
    );
    let status = gateway.stop("-TERM");
    assert!(status.success(), "{status:?}");
}
