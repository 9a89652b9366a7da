//! OAuth 1.0a honours `timeout` (in its `oauth1a:` section, or the top-level one) against a
//! sandbox that answers late: the library fails with `Error::Timeout` naming the timeout, the
//! binary exits 5 after about that long; a misspelt key in the section gets a did-you-mean.

use std::path::Path;
use std::time::{Duration, Instant};

use ibauth::oauth1a::Oauth1aClient;
use ibauth::{Error, Step};

mod common;
use common::{ibauth, sandbox_with_set, temp_dir, text};

const NO_ENV: &[(&str, &str)] = &[];

/// Puts `line` into the config's `oauth1a:` section (`top`: at the top level instead).
fn add_setting(config: &Path, line: &str, top: bool) {
    let yaml = std::fs::read_to_string(config).unwrap();
    assert!(yaml.contains("\noauth1a:\n"), "{yaml}");
    let yaml = if top {
        format!("{line}\n{yaml}")
    } else {
        yaml.replacen("\noauth1a:\n", &format!("\noauth1a:\n  {line}\n"), 1)
    };
    std::fs::write(config, yaml).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_section_timeout_bounds_every_call_and_names_itself() {
    let dir = temp_dir("o1a-timeout");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    add_setting(&config, "timeout: 1", false);
    sandbox.delay_responses(Some(Duration::from_secs(4)));

    let loaded = ibauth::oauth1a::config::load_with_env(Some(&config), NO_ENV).unwrap();
    let mut client = Oauth1aClient::new(loaded).unwrap();
    let started = Instant::now();
    let err = client.connect().await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            Error::Timeout {
                step: Step::LiveSessionToken,
                timeout,
            } if timeout == Duration::from_secs(1)
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no answer within 1s"), "{err}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(2500),
        "gave up after {took:?}, not after about 1 s"
    );

    // The binary: exit 5 (network or timeout) after about a second, the timeout named.
    let started = Instant::now();
    let output = ibauth()
        .arg("--config")
        .arg(&config)
        .args(["--oauth1a", "login"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(5), "{}", text(&output));
    assert!(
        text(&output).contains("no answer within 1s"),
        "{}",
        text(&output)
    );
    assert!(took < Duration::from_millis(3500), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_top_level_timeout_applies_when_the_section_has_none() {
    let dir = temp_dir("o1a-timeout-top");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    add_setting(&config, "timeout: 1", true);
    sandbox.delay_responses(Some(Duration::from_secs(4)));
    let loaded = ibauth::oauth1a::config::load_with_env(Some(&config), NO_ENV).unwrap();
    let err = Oauth1aClient::new(loaded)
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { timeout, .. } if timeout == Duration::from_secs(1)),
        "{err:?}"
    );
    // IBAUTH_OAUTH1A_TIMEOUT beats it (and the section), as every IBAUTH_OAUTH1A_* does.
    let loaded =
        ibauth::oauth1a::config::load_with_env(Some(&config), &[("IBAUTH_OAUTH1A_TIMEOUT", "1.5")])
            .unwrap();
    let err = Oauth1aClient::new(loaded)
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { timeout, .. } if timeout == Duration::from_millis(1500)),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_misspelt_key_in_the_section_is_warned_about_with_a_did_you_mean() {
    let dir = temp_dir("o1a-typo");
    let (_sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    add_setting(&config, "timout: 3", false);
    let output = ibauth()
        .arg("--config")
        .arg(&config)
        .args(["--oauth1a", "login"])
        .output()
        .unwrap();
    // The typo is ignored, not fatal: the login goes through.
    assert!(output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown key `oauth1a.timout`")
            && stderr.contains("did you mean `timeout`?"),
        "{stderr}"
    );
}
