//! Helpers shared by the CLI's test binaries.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ibauth_sandbox::{CredentialSet, SANDBOX_CREDENTIAL, Sandbox};
use serde_json::Value;

pub fn ibauth() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ibauth"));
    // The tests must not pick up a developer's own settings.
    for (name, _) in std::env::vars() {
        if name.starts_with("IBAUTH_") || name == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    // These sandboxes do not enforce IBKR's pacing and the tests log in again within seconds
    // (`sso/validate` is 1 per minute): unpaced unless a test turns pacing on, as the pacing
    // tests do.
    cmd.env("IBAUTH_PACING", "off");
    // Nor their token file: each command gets a default one of its own, so tokens are only
    // shared where a test names a file (IBAUTH_TOKEN_FILE).
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    cmd.env(
        "XDG_STATE_HOME",
        std::env::temp_dir().join(format!("ibauth-cli-state-{}-{n}", std::process::id())),
    );
    cmd
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ibauth-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn json_lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// An in-process sandbox with the generated credential set (OAuth 2.0 and 1.0a) and its config.
pub async fn sandbox_with_set(dir: &Path, tls: bool) -> (Sandbox, PathBuf, CredentialSet) {
    let set = CredentialSet::load_or_create(dir).unwrap();
    let sandbox = Sandbox::builder()
        .tls(tls)
        .register(set.registration())
        .register_consumer(set.consumer_registration())
        .start()
        .await
        .unwrap();
    let (token, secret) = sandbox
        .issue_access_token(ibauth_sandbox::SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL)
        .unwrap();
    let config = set
        .write_config_with(
            sandbox.base_url(),
            sandbox.ca_pem(),
            Some((&token, &secret)),
        )
        .unwrap();
    (sandbox, config, set)
}
