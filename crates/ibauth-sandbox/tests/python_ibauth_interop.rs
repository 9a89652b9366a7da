//! Interop: the unmodified Python `ibauth` 0.1.6 (from PyPI) logs in to our HTTPS sandbox,
//! tickles, reads the status and logs out. Its venv is created on first run by
//! `scripts/python-venv.sh`; a failure to create it fails the test (nothing is skipped).

use std::path::PathBuf;
use std::process::Command;

use ibauth_sandbox::{CredentialSet, SANDBOX_CREDENTIAL, Sandbox};
use serde_json::Value;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> String {
    let out = Command::new(workspace().join("scripts/python-venv.sh"))
        .output()
        .expect("run scripts/python-venv.sh");
    assert!(
        out.status.success(),
        "setting up the Python ibauth venv failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A credential set in a fresh folder and an HTTPS sandbox that knows it; the config points
/// at the sandbox and, with `trust_ca`, names its CA.
async fn https_sandbox(name: &str, trust_ca: bool) -> (Sandbox, PathBuf, PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("ibauth-py-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let set = CredentialSet::load_or_create(&dir).unwrap();
    let sandbox = Sandbox::builder()
        .tls(true)
        .register(set.registration())
        .start()
        .await
        .unwrap();
    let ca = sandbox.ca_pem().filter(|_| trust_ca);
    let config = set.write_config(sandbox.base_url(), ca).unwrap();
    let host = sandbox.base_url().trim_start_matches("https://").to_owned();
    (sandbox, dir, config, host)
}

#[tokio::test(flavor = "multi_thread")]
async fn python_ibauth_connects_tickles_and_logs_out_against_the_https_sandbox() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let (sandbox, dir, config, host) = https_sandbox("interop", true).await;

    let script = workspace().join("scripts/python_interop.py");
    let output = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&config)
        .arg(&host)
        // The Python ibauth reads private_key_file relative to the working directory.
        .current_dir(&dir)
        // httpx honours proxy variables; loopback must not go through one.
        .env("NO_PROXY", "127.0.0.1,localhost,::1")
        .env("no_proxy", "127.0.0.1,localhost,::1")
        // httpx builds its trust store from SSL_CERT_FILE when set: TLS verification stays on,
        // against the sandbox's CA only.
        .env("SSL_CERT_FILE", dir.join("ca.pem"))
        .env_remove("SSL_CERT_DIR")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Python ibauth failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(seen["tickle"]["authenticated"], true, "{seen}");
    assert_eq!(seen["tickle"]["competing"], false, "{seen}");
    assert_eq!(seen["status"]["authenticated"], true, "{seen}");
    assert_eq!(seen["logged_out"], true);

    let c = sandbox.counters();
    assert_eq!(c.access_tokens, 1, "{c:?}");
    assert_eq!(c.sso_sessions, 1, "{c:?}");
    assert_eq!(c.validates, 1, "{c:?}");
    assert_eq!(c.inits, 1, "{c:?}");
    assert_eq!(c.tickles, 1, "{c:?}");
    assert_eq!(c.statuses, 1, "{c:?}");
    assert_eq!(c.logouts, 1, "{c:?}");
    assert_eq!(c.rejections, 0, "{c:?}");
    assert!(!sandbox.has_brokerage_session(SANDBOX_CREDENTIAL));
}

#[tokio::test(flavor = "multi_thread")]
async fn python_ibauth_without_the_sandbox_ca_is_refused_by_tls_verification() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let (sandbox, dir, config, host) = https_sandbox("noca", false).await;
    let output = tokio::process::Command::new(&python)
        .arg(workspace().join("scripts/python_interop.py"))
        .arg(&config)
        .arg(&host)
        .current_dir(&dir)
        // httpx honours proxy variables; loopback must not go through one.
        .env("NO_PROXY", "127.0.0.1,localhost,::1")
        .env("no_proxy", "127.0.0.1,localhost,::1")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("CERTIFICATE_VERIFY_FAILED"));
    assert_eq!(sandbox.counters().access_tokens, 0);
}
