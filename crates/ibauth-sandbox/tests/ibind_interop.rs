//! Interop: the unmodified ibind 0.2.2 (`IbkrClient(use_oauth=True)`), configured only by its
//! own `IBIND_*` variables, reaches our HTTPS sandbox: live session token generated and
//! validated, `ssodh/init`, tickle, auth status, logout. Its venv is created on first run by
//! `scripts/python-venv.sh ibind`; a failure to create it fails the test.

use std::path::PathBuf;
use std::process::Command;

use ibauth_sandbox::{CredentialSet, SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL, Sandbox};
use serde_json::Value;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> String {
    let out = Command::new(workspace().join("scripts/python-venv.sh"))
        .arg("ibind")
        .output()
        .expect("run scripts/python-venv.sh");
    assert!(
        out.status.success(),
        "setting up the ibind venv failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A sandbox over HTTPS with the generated consumer, and ibind's variables pointing at it.
async fn sandbox_and_ibind_env(name: &str) -> (Sandbox, PathBuf, Vec<(String, String)>) {
    let dir = std::env::temp_dir().join(format!("ibauth-ibind-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let set = CredentialSet::load_or_create(&dir).unwrap();
    let sandbox = Sandbox::builder()
        .tls(true)
        .register_consumer(set.consumer_registration())
        .start()
        .await
        .unwrap();
    set.write_config(sandbox.base_url(), sandbox.ca_pem())
        .unwrap();
    let (token, secret) = sandbox
        .issue_access_token(SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL)
        .unwrap();
    let path = |file: &str| dir.join(file).display().to_string();
    let env = [
        ("IBIND_USE_OAUTH", "True".to_owned()),
        (
            "IBIND_OAUTH1A_CONSUMER_KEY",
            SANDBOX_CONSUMER_KEY.to_owned(),
        ),
        ("IBIND_OAUTH1A_ACCESS_TOKEN", token),
        ("IBIND_OAUTH1A_ACCESS_TOKEN_SECRET", secret),
        // The set's own prime, as an ibind user copies it from their dhparam.pem.
        ("IBIND_OAUTH1A_DH_PRIME", set.dh_prime_hex().to_owned()),
        (
            "IBIND_OAUTH1A_ENCRYPTION_KEY_FP",
            path("encryption_key.pem"),
        ),
        ("IBIND_OAUTH1A_SIGNATURE_KEY_FP", path("signature_key.pem")),
        (
            "IBIND_OAUTH1A_REST_URL",
            format!("{}/v1/api/", sandbox.base_url()),
        ),
        (
            "IBIND_OAUTH1A_WS_URL",
            format!(
                "{}/v1/api/ws",
                sandbox.base_url().replacen("https", "wss", 1)
            ),
        ),
        // ibind's own CA setting for its socket; requests reads REQUESTS_CA_BUNDLE for REST.
        // TLS verification stays on in both, trusting only the sandbox CA.
        ("IBIND_CACERT", path("ca.pem")),
        ("REQUESTS_CA_BUNDLE", path("ca.pem")),
        ("IBIND_LOG_TO_FILE", "False".to_owned()),
        ("NO_PROXY", "127.0.0.1,localhost,::1".to_owned()),
        ("no_proxy", "127.0.0.1,localhost,::1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    (sandbox, dir, env)
}

async fn run_script(script: &str, dir: &PathBuf, env: &[(String, String)]) -> Value {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let output = tokio::process::Command::new(&python)
        .arg(workspace().join("scripts").join(script))
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ibind failed:\n{stdout}\n{stderr}");
    // ibind's exit handler logs out again; that must not fail either.
    assert!(!stderr.contains("Traceback"), "{stderr}");
    serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn ibind_logs_in_tickles_and_logs_out_with_only_its_own_variables() {
    let (sandbox, dir, env) = sandbox_and_ibind_env("rest").await;
    let seen = run_script("ibind_interop.py", &dir, &env).await;
    assert_eq!(seen["lst_validated"], true, "{seen}");
    assert_eq!(seen["tickle_authenticated"], true, "{seen}");
    assert_eq!(seen["status"]["authenticated"], true, "{seen}");

    let c = sandbox.counters();
    assert_eq!(c.live_session_tokens, 1, "{c:?}");
    assert_eq!(c.inits, 1, "{c:?}");
    assert!(c.tickles >= 1, "{c:?}");
    assert_eq!(c.statuses, 1, "{c:?}");
    assert!(c.logouts >= 1, "{c:?}");
    assert_eq!(c.rejections, 0, "{c:?}");
    assert!(!sandbox.has_brokerage_session(SANDBOX_CREDENTIAL));
}

#[tokio::test(flavor = "multi_thread")]
async fn ibind_ws_client_receives_system_and_sts_from_our_websocket() {
    let (sandbox, dir, env) = sandbox_and_ibind_env("ws").await;
    let seen = run_script("ibind_ws_interop.py", &dir, &env).await;
    assert_eq!(seen["received"], true, "{seen}");
    assert_eq!(
        seen["events"]["system"]["data"]["success"], SANDBOX_CREDENTIAL,
        "{seen}"
    );
    assert_eq!(seen["events"]["sts"]["authenticated"], true, "{seen}");
    let c = sandbox.counters();
    assert_eq!(c.ws_connections, 1, "{c:?}");
    assert_eq!(c.rejections, 0, "{c:?}");
}
