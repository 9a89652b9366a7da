//! `ibauth doctor` against a table of deliberately broken setups: each must fail (or warn) at
//! the right check, with a fix, and a healthy setup must pass — against a real sandbox.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use ibauth::Clock;
use ibauth_sandbox::{CredentialSet, SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL, Sandbox};
use serde_json::Value;

mod common;
use common::{ibauth, temp_dir};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../ibauth/tests/fixtures");

/// One credential set for the whole binary (key generation is the slow part); each case
/// works on a copy.
fn base() -> &'static PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = temp_dir("doctor-base");
        CredentialSet::load_or_create(&dir).unwrap();
        dir
    })
}

struct Case {
    dir: PathBuf,
    config: PathBuf,
    _sandbox: Sandbox,
}

/// Clock `offset` seconds ahead of the system's.
#[derive(Debug)]
struct Ahead(u64);

impl Clock for Ahead {
    fn now_unix(&self) -> u64 {
        ibauth::SystemClock.now_unix() + self.0
    }
}

async fn setup(name: &str, clock_ahead: u64) -> Case {
    let dir = temp_dir(&format!("doctor-{name}"));
    for entry in std::fs::read_dir(base()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let set = CredentialSet::load_or_create(&dir).unwrap();
    let sandbox = Sandbox::builder()
        .clock(Arc::new(Ahead(clock_ahead)))
        .register(set.registration())
        .register_consumer(set.consumer_registration())
        .start()
        .await
        .unwrap();
    let (token, secret) = sandbox
        .issue_access_token(SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL)
        .unwrap();
    let config = set
        .write_config_with(sandbox.base_url(), None, Some((&token, &secret)))
        .unwrap();
    Case {
        dir,
        config,
        _sandbox: sandbox,
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

fn copy_fixture(case: &Case, fixture: &str, to: &str) {
    let target = case.dir.join(to);
    std::fs::copy(Path::new(FIXTURES).join(fixture), &target).unwrap();
    chmod(&target, 0o600);
}

fn chmod(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// Runs doctor; the exit code and the checks by name.
fn doctor(case: &Case, extra: &[&str]) -> (Option<i32>, Vec<Value>) {
    let output = ibauth()
        .arg("--config")
        .arg(&case.config)
        .env("IBAUTH_TOKEN_FILE", case.dir.join("tokens.json"))
        .args(["--json", "doctor"])
        .args(extra)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    assert_eq!(report["ok"], output.status.success(), "{report}");
    (
        output.status.code(),
        report["checks"].as_array().unwrap().clone(),
    )
}

/// The check named `name` has `status`, and its detail or fix says `says`.
#[track_caller]
fn expect(checks: &[Value], name: &str, status: &str, says: &str) {
    let check = checks
        .iter()
        .find(|c| c["check"] == name && c["status"] == status)
        .unwrap_or_else(|| panic!("no {status} `{name}` in {checks:#?}"));
    let text = format!("{} {}", check["detail"], check["fix"]);
    assert!(text.contains(says), "`{name}` should say {says:?}: {text}");
    if status != "ok" {
        assert!(
            check["fix"].is_string(),
            "a failing check says how to fix it: {check}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_setup_passes_every_check() {
    let case = setup("healthy", 0).await;
    let public = case.dir.join("public_key.pem");
    let (code, checks) = doctor(&case, &["--public-key", public.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{checks:#?}");
    for check in &checks {
        assert_eq!(check["status"], "ok", "{check}");
    }
    expect(&checks, "public key", "ok", "matches");
    // The sandbox's consumers have their own prime, as at IBKR: audited, not recognised.
    expect(&checks, "dh parameters", "ok", "2048-bit safe prime");
    expect(&checks, "clock", "ok", "against the server's Date");
    expect(&checks, "token file", "ok", "none yet");

    // The same report for people.
    let output = ibauth()
        .arg("--config")
        .arg(&case.config)
        .env("IBAUTH_TOKEN_FILE", case.dir.join("tokens.json"))
        .arg("doctor")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("  ok   dh parameters"), "{text}");
    assert!(text.trim_end().ends_with("all checks passed"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_broken_setup_fails_at_its_check_with_a_fix() {
    type Break = fn(&Case);
    let table: &[(&str, Break, &str, &str)] = &[
        (
            "missing key",
            |c| std::fs::remove_file(c.dir.join("private_key.pem")).unwrap(),
            "key private_key_file",
            "private_key_file",
        ),
        (
            "key others can read",
            |c| chmod(&c.dir.join("private_key.pem"), 0o644),
            "key private_key_file",
            "chmod 600",
        ),
        (
            "encrypted key",
            |c| copy_fixture(c, "rsa2048_encrypted_pkcs8.pem", "private_key.pem"),
            "key private_key_file",
            "openssl pkey",
        ),
        (
            "public key instead of the private one",
            |c| copy_fixture(c, "rsa2048_public.pem", "private_key.pem"),
            "key private_key_file",
            "not a private key",
        ),
        (
            "short key",
            |c| copy_fixture(c, "rsa1024_pkcs8.pem", "signature_key.pem"),
            "key oauth1a.signature_key_file",
            "shorter than 2048 bits",
        ),
        (
            "garbage instead of a key",
            |c| copy_fixture(c, "garbage.pem", "encryption_key.pem"),
            "key oauth1a.encryption_key_file",
            "PEM",
        ),
        (
            "garbled access-token secret",
            |c| {
                let text = std::fs::read_to_string(&c.config).unwrap();
                let line = text
                    .lines()
                    .find(|l| l.trim_start().starts_with("access_token_secret:"))
                    .unwrap()
                    .to_owned();
                edit(
                    &c.config,
                    &line,
                    "  access_token_secret: \"not base64 at all!\"",
                );
            },
            "access token",
            "base64",
        ),
        (
            "secret encrypted to another key",
            |c| copy_fixture(c, "rsa2048_pkcs8.pem", "encryption_key.pem"),
            "access token",
            "encryption_key_file",
        ),
        (
            "realm of the test consumer",
            |c| edit(&c.config, "realm: limited_poa", "realm: test_realm"),
            "realm",
            "limited_poa",
        ),
        (
            "composite DH prime",
            |c| {
                let mut prime = ibauth::oauth1a::RFC3526_PRIME_2048.to_owned();
                prime.replace_range(prime.len() - 1.., "d");
                edit(
                    &c.config,
                    "dh_param_file: dhparam.pem",
                    &format!("dh_prime: {prime}"),
                );
            },
            "dh parameters",
            "not prime",
        ),
        (
            "missing DH parameter file",
            |c| std::fs::remove_file(c.dir.join("dhparam.pem")).unwrap(),
            "dh parameters",
            "dh_param_file",
        ),
        (
            "token file others can read",
            |c| {
                let path = c.dir.join("tokens.json");
                std::fs::write(&path, r#"{"schema":1}"#).unwrap();
                chmod(&path, 0o644);
            },
            "token file",
            "chmod 600",
        ),
        (
            "token file from a newer ibauth",
            |c| {
                let path = c.dir.join("tokens.json");
                std::fs::write(&path, r#"{"schema":99}"#).unwrap();
                chmod(&path, 0o600);
            },
            "token file",
            "upgrade ibauth",
        ),
    ];
    for (what, damage, check, says) in table {
        let case = setup(&what.replace(' ', "-"), 0).await;
        damage(&case);
        let (code, checks) = doctor(&case, &[]);
        assert_eq!(code, Some(3), "{what}: {checks:#?}");
        expect(&checks, check, "fail", says);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_network_checks_catch_an_unreachable_host_a_wrong_key_and_a_skewed_clock() {
    // A registered public key that is not this private key's.
    let case = setup("mismatch", 0).await;
    let other = Path::new(FIXTURES).join("rsa2048_public.pem");
    let (code, checks) = doctor(&case, &["--public-key", other.to_str().unwrap()]);
    assert_eq!(code, Some(3));
    expect(
        &checks,
        "public key",
        "fail",
        "openssl pkey -in private.pem -pubout",
    );

    // Nothing listens there.
    let case = setup("unreachable", 0).await;
    let port = case._sandbox.addr().port().to_string();
    let text = std::fs::read_to_string(&case.config).unwrap();
    std::fs::write(&case.config, text.replace(&port, "1")).unwrap();
    let (code, checks) = doctor(&case, &[]);
    assert_eq!(code, Some(3));
    expect(&checks, "tls 127.0.0.1", "fail", "firewall");

    // The server's clock (its Date header) is two minutes ahead of ours.
    let case = setup("skew", 120).await;
    let (code, checks) = doctor(&case, &[]);
    assert_eq!(code, Some(3));
    expect(&checks, "clock", "fail", "NTP");

    // Warnings do not fail: a CRLF key, a corrupt token file.
    let case = setup("warnings", 0).await;
    let key = std::fs::read_to_string(case.dir.join("private_key.pem")).unwrap();
    std::fs::write(case.dir.join("private_key.pem"), key.replace('\n', "\r\n")).unwrap();
    std::fs::write(case.dir.join("tokens.json"), "{\"schema\": 1, \"meth").unwrap();
    chmod(&case.dir.join("tokens.json"), 0o600);
    let (code, checks) = doctor(&case, &[]);
    assert_eq!(code, Some(0), "{checks:#?}");
    expect(&checks, "key private_key_file", "warn", "CRLF");
    expect(&checks, "token file", "warn", "moves it aside");
}
