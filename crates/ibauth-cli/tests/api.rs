//! `ibauth api` against the sandbox: any endpoint with the stored session, for both methods,
//! with query parameters and a JSON body; its exit codes; and pacing that holds across the
//! processes sharing a token file.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use ibauth_sandbox::{PacingLimits, SANDBOX_CREDENTIAL};
use serde_json::Value;

mod common;
use common::{ibauth, sandbox_with_set, temp_dir, text};

fn api(config: &Path, token_file: &Path, flags: &[&str], args: &[&str]) -> Output {
    ibauth()
        .arg("--config")
        .arg(config)
        .env("IBAUTH_TOKEN_FILE", token_file)
        .args(flags)
        .arg("api")
        .args(args)
        .output()
        .unwrap()
}

fn body(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", text(output)))
}

#[tokio::test(flavor = "multi_thread")]
async fn any_endpoint_with_query_parameters_and_a_json_body_for_both_methods() {
    let dir = temp_dir("api-both");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    for (flags, method_logins) in [(&[][..], "access_tokens"), (&["--oauth1a"][..], "lsts")] {
        let token_file = dir.join(format!("tokens-{method_logins}.json"));
        let run = |args: &[&str]| api(&config, &token_file, flags, args);

        let output = run(&["GET", "iserver/accounts"]);
        assert!(output.status.success(), "{flags:?}: {}", text(&output));
        let account = body(&output)["selectedAccount"]
            .as_str()
            .unwrap()
            .to_owned();

        let output = run(&[
            "GET",
            "/v1/api/iserver/marketdata/snapshot",
            "-q",
            "conids=265598,8314",
            "--query",
            "fields=31,84",
        ]);
        assert!(output.status.success(), "{flags:?}: {}", text(&output));
        let quotes = body(&output);
        assert_eq!(quotes.as_array().unwrap().len(), 2, "{quotes}");
        assert!(quotes[0]["84"].is_string(), "{quotes}");

        let order = format!(
            r#"{{"orders":[{{"conid":265598,"side":"BUY","quantity":1,"orderType":"MKT","tif":"DAY","cOID":"cli-{method_logins}"}}]}}"#
        );
        let file = dir.join(format!("order-{method_logins}.json"));
        std::fs::write(&file, &order).unwrap();
        let data = format!("@{}", file.display());
        let output = run(&[
            "POST",
            &format!("iserver/account/{account}/orders"),
            "--data",
            &data,
        ]);
        assert!(output.status.success(), "{flags:?}: {}", text(&output));
        let reply = body(&output);
        assert_eq!(reply[0]["order_status"], "Submitted", "{reply}");
        assert_eq!(reply[0]["cOID"], format!("cli-{method_logins}"));

        let output = run(&["get", "iserver/account/orders"]);
        let listed = body(&output);
        assert!(
            listed["orders"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["cOID"] == format!("cli-{method_logins}")),
            "{listed}"
        );
        // An error status: its answer on stdout, the reason on stderr, exit 4.
        let output = run(&["GET", "iserver/nothing-here"]);
        assert_eq!(output.status.code(), Some(4), "{}", text(&output));
        assert_eq!(body(&output)["statusCode"], 404);
        assert!(String::from_utf8_lossy(&output.stderr).contains("404"));
        // A body that is not JSON is refused before anything is sent.
        let output = run(&["POST", "iserver/account/x/orders", "--data", "{not json"]);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(text(&output).contains("not JSON"), "{}", text(&output));
    }
    let c = sandbox.counters();
    assert_eq!(
        (c.access_tokens, c.live_session_tokens),
        (1, 1),
        "one login per method, reused by every later call"
    );
    assert_eq!(c.orders_placed, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_api_processes_after_every_token_was_revoked_log_in_once() {
    let dir = temp_dir("api-eight");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let token_file = dir.join("tokens.json");
    assert!(
        api(&config, &token_file, &[], &["GET", "iserver/accounts"])
            .status
            .success()
    );
    assert_eq!(sandbox.counters().access_tokens, 1);
    sandbox.expire_tokens_now();
    let children: Vec<_> = (0..8)
        .map(|_| {
            ibauth()
                .arg("--config")
                .arg(&config)
                .env("IBAUTH_TOKEN_FILE", &token_file)
                .args(["api", "GET", "iserver/accounts"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect()
    })
    .await
    .unwrap();
    for output in &outputs {
        assert!(output.status.success(), "{}", text(output));
        assert!(body(output)["accounts"].is_array());
    }
    assert_eq!(sandbox.counters().access_tokens, 2, "exactly one new login");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_script_calling_a_paced_endpoint_three_times_waits_instead_of_earning_a_penalty() {
    let dir = temp_dir("api-paced");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    sandbox.set_pacing(Some(
        PacingLimits::ibkr()
            // One login per test run, so the 1-per-minute validate is not what is tested here.
            .endpoint(Some("GET"), "/sso/validate", 10, Duration::from_secs(1)),
    ));
    let token_file = dir.join("tokens.json");
    let started = Instant::now();
    for n in 0..3 {
        // Separate processes, as a shell script runs them: the budget is shared through the
        // pacing ledger beside the token file.
        let output = ibauth()
            .arg("--config")
            .arg(&config)
            .env("IBAUTH_TOKEN_FILE", &token_file)
            .env("IBAUTH_PACING", "ibkr")
            .args(["api", "GET", "portfolio/accounts"])
            .output()
            .unwrap();
        assert!(output.status.success(), "call {n}: {}", text(&output));
        assert_eq!(body(&output)[0]["accountTitle"], SANDBOX_CREDENTIAL);
    }
    let took = started.elapsed();
    let c = sandbox.counters();
    assert_eq!(c.pacing_violations, 0, "{c:?}");
    assert_eq!(c.penalty_rejections, 0);
    assert!(
        took >= Duration::from_secs(10),
        "waited for turns: {took:?}"
    );
    assert!(dir.join("tokens.json.pacing").exists());

    // Asked not to wait that long, a call fails at once and says how long it would have had to.
    let output = ibauth()
        .arg("--config")
        .arg(&config)
        .env("IBAUTH_TOKEN_FILE", &token_file)
        .env("IBAUTH_PACING", "ibkr")
        .env("IBAUTH_PACING_MAX_WAIT", "1")
        .args(["api", "GET", "portfolio/accounts"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(5), "{}", text(&output));
    assert!(text(&output).contains("max_wait"), "{}", text(&output));
    assert_eq!(sandbox.counters().pacing_violations, 0);
}
