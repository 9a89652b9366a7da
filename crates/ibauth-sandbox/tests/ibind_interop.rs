//! Interop: the unmodified ibind 0.2.2 (`IbkrClient(use_oauth=True)`), configured only by its
//! own `IBIND_*` variables, reaches our HTTPS sandbox: live session token generated and
//! validated, `ssodh/init`, tickle, auth status, logout. Its venv is created on first run by
//! `scripts/python-venv.sh ibind`; a failure to create it fails the test.

use std::path::PathBuf;
use std::process::Command;

use ibauth_sandbox::{
    CredentialSet, RFC3526_PRIME_2048, SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL, Sandbox,
};
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

#[tokio::test(flavor = "multi_thread")]
async fn ibind_logs_in_tickles_and_logs_out_with_only_its_own_variables() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let dir = std::env::temp_dir().join(format!("ibauth-ibind-{}", std::process::id()));
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

    let output = tokio::process::Command::new(&python)
        .arg(workspace().join("scripts/ibind_interop.py"))
        .current_dir(&dir)
        .env("IBIND_USE_OAUTH", "True")
        .env("IBIND_OAUTH1A_CONSUMER_KEY", SANDBOX_CONSUMER_KEY)
        .env("IBIND_OAUTH1A_ACCESS_TOKEN", &token)
        .env("IBIND_OAUTH1A_ACCESS_TOKEN_SECRET", &secret)
        .env("IBIND_OAUTH1A_DH_PRIME", RFC3526_PRIME_2048)
        .env(
            "IBIND_OAUTH1A_ENCRYPTION_KEY_FP",
            dir.join("encryption_key.pem"),
        )
        .env(
            "IBIND_OAUTH1A_SIGNATURE_KEY_FP",
            dir.join("signature_key.pem"),
        )
        .env(
            "IBIND_OAUTH1A_REST_URL",
            format!("{}/v1/api/", sandbox.base_url()),
        )
        .env("IBIND_LOG_TO_FILE", "False")
        // requests verifies against this bundle: TLS stays on, trusting only the sandbox CA.
        .env("REQUESTS_CA_BUNDLE", dir.join("ca.pem"))
        .env("NO_PROXY", "127.0.0.1,localhost,::1")
        .env("no_proxy", "127.0.0.1,localhost,::1")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ibind failed:\n{stdout}\n{stderr}");
    // ibind's exit handler logs out again; that must not fail either.
    assert!(!stderr.contains("Traceback"), "{stderr}");
    let seen: Value = serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
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
