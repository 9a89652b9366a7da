//! The repository README's "Use the session" example runs as written: it is
//! `examples/readme.rs` line for line (checked here), and that example runs against the
//! sandbox with nothing but `IBAUTH_CONFIG` pointing at the sandbox's config, as the README
//! says, until SIGTERM ends it with one logout.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ibauth_sandbox::{CredentialSet, SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL, Sandbox};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The README's code between its markers, without rustdoc's hidden lines and `use` lines.
fn readme_body() -> Vec<String> {
    let readme = std::fs::read_to_string(repository().join("README.md")).expect("README");
    let block = readme
        .split("<!-- readme-example: begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- readme-example: end -->").next())
        .expect("the README marks its example");
    block
        .lines()
        .skip_while(|l| !l.starts_with("```rust"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .filter(|l| !l.starts_with('#') && !l.starts_with("use "))
        .map(str::to_owned)
        .collect()
}

/// The example's `main` body, one indent level less.
fn example_body() -> Vec<String> {
    let example = include_str!("../examples/readme.rs");
    example
        .lines()
        .skip_while(|l| !l.starts_with("async fn main"))
        .skip(1)
        .take_while(|l| l.trim() != "Ok(())")
        .map(|l| l.strip_prefix("    ").unwrap_or(l).to_owned())
        .collect()
}

fn trim(lines: Vec<String>) -> Vec<String> {
    let mut lines: Vec<String> = lines
        .into_iter()
        .skip_while(|l| l.trim().is_empty())
        .collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    lines
}

#[test]
fn the_readme_example_is_the_example_file() {
    let readme = trim(readme_body());
    assert!(readme.len() > 10, "{readme:?}");
    assert_eq!(readme, trim(example_body()));
}

/// `target/debug/examples/readme`, built by `cargo test` beside this test.
fn example_binary() -> PathBuf {
    let me = std::env::current_exe().expect("test binary");
    let profile = me
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    profile.join("examples").join("readme")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_example_runs_as_written_against_the_sandbox() {
    let dir = std::env::temp_dir().join(format!("ibauth-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let set = CredentialSet::load_or_create(&dir).expect("credential set");
    let sandbox = Sandbox::builder()
        .register(set.registration())
        .register_consumer(set.consumer_registration())
        .start()
        .await
        .expect("sandbox");
    let (token, secret) = sandbox
        .issue_access_token(SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL)
        .expect("consumer");
    let config = set
        .write_config_with(sandbox.base_url(), None, Some((&token, &secret)))
        .expect("config");
    for auth in ["oauth2", "oauth1a"] {
        // As the README says: the config, and for OAuth 1.0a the method, from the environment.
        let mut child = Command::new(example_binary())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("IBAUTH_CONFIG", &config)
            .env("IBAUTH_AUTH", auth)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the example is built by cargo test");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().expect("a line").expect("text");
        assert!(first.starts_with('U'), "{auth}: {first}");
        assert!(
            first.contains("\"31\""),
            "{auth}: the quote's last price: {first}"
        );
        let second = lines.next().expect("a line").expect("text");
        let portfolio: serde_json::Value = serde_json::from_str(&second).expect("JSON");
        assert_eq!(portfolio[0]["accountTitle"], SANDBOX_CREDENTIAL, "{auth}");
        let logouts = sandbox.counters().logouts;
        // The keep-alive runs until SIGTERM, then logs out once.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill")
                .success()
        );
        let output = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("join")
            .expect("exit");
        assert!(
            output.status.success(),
            "{auth}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(sandbox.counters().logouts, logouts + 1, "{auth}");
    }
    let counters = sandbox.counters();
    assert_eq!(
        (counters.access_tokens, counters.live_session_tokens),
        (1, 1),
        "one login per method"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
