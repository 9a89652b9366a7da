//! `ibauth store-key` (a fleet's key: made, rotated, retired; never over an existing file),
//! and `--store` without a key: refused before anything is sent, saying how to make one.

use std::os::unix::fs::PermissionsExt;

mod common;
use common::{ibauth, json_lines, sandbox_with_set, temp_dir, text};

fn key_lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn store_key_writes_a_private_file_refuses_to_overwrite_rotates_and_retires() {
    let dir = temp_dir("store-key");
    let path = dir.join("store.key");

    // On stdout: 32 bytes of base64, the id on stderr.
    let printed = ibauth().arg("store-key").output().unwrap();
    assert!(printed.status.success(), "{}", text(&printed));
    let key = String::from_utf8(printed.stdout.clone()).unwrap();
    assert_eq!(key.trim().len(), 44, "{key}");
    assert!(String::from_utf8_lossy(&printed.stderr).contains("store key "));

    let made = ibauth()
        .args(["--json", "store-key"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made));
    let answer = &json_lines(&made.stdout)[0];
    let first = answer["current"].as_str().unwrap().to_owned();
    assert_eq!(answer["keys"].as_array().unwrap().len(), 1);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let original = key_lines(&path);
    assert_eq!(original.len(), 1);
    assert!(
        !text(&made).contains(&original[0]),
        "the key itself is never printed when written to a file"
    );

    // Never over an existing file: a new key there would lock the fleet out.
    let again = ibauth().arg("store-key").arg(&path).output().unwrap();
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));
    assert!(text(&again).contains("--rotate"), "{}", text(&again));
    assert_eq!(key_lines(&path), original, "left as it was");

    // Rotation: a new key first, the old one kept after it.
    let rotated = ibauth()
        .args(["--json", "store-key", "--rotate"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{}", text(&rotated));
    let answer = &json_lines(&rotated.stdout)[0];
    let keys: Vec<&str> = answer["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1], first, "the old key second");
    let lines = key_lines(&path);
    assert_eq!(lines[1], original[0]);
    assert_ne!(lines[0], original[0]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Retired: only the current key.
    let retired = ibauth()
        .args(["store-key", "--retire"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(retired.status.success(), "{}", text(&retired));
    assert_eq!(key_lines(&path), vec![lines[0].clone()]);

    // A file others can read is refused for rotation, as for use.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let exposed = ibauth()
        .args(["store-key", "--rotate"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(exposed.status.code(), Some(3), "{}", text(&exposed));
    assert!(text(&exposed).contains("chmod 600"), "{}", text(&exposed));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_store_without_a_key_is_refused_with_how_to_make_one() {
    let dir = temp_dir("store-no-key");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let before = sandbox.counters();
    for args in [
        vec![
            "--store",
            "postgres://fleet:hunter2@127.0.0.1:9/ibauth",
            "login",
        ],
        vec![
            "--store",
            "redis://:hunter2@127.0.0.1:9/0",
            "api",
            "GET",
            "iserver/accounts",
        ],
    ] {
        let out = ibauth()
            .arg("--config")
            .arg(&config)
            .args(&args)
            .output()
            .unwrap();
        let said = text(&out);
        assert_eq!(out.status.code(), Some(3), "{said}");
        assert!(said.contains("needs an encryption key"), "{said}");
        assert!(said.contains("ibauth store-key"), "{said}");
        assert!(said.contains("IBAUTH_STORE_KEY_FILE"), "{said}");
        assert!(!said.contains("hunter2"), "{said}");
    }
    // The same from the YAML's `store:` and IBAUTH_STORE.
    let out = ibauth()
        .arg("--config")
        .arg(&config)
        .env(
            "IBAUTH_STORE",
            "postgres://fleet:hunter2@127.0.0.1:9/ibauth",
        )
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("ibauth store-key"), "{}", text(&out));
    let after = sandbox.counters();
    assert_eq!(after.access_tokens, before.access_tokens, "nothing sent");
    assert_eq!(after.live_session_tokens, before.live_session_tokens);
}

#[test]
fn a_bad_store_url_is_a_usage_error_that_never_repeats_it() {
    let out = ibauth()
        .args(["--store", "mysql://fleet:hunter2@db/ibauth", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("--store"), "{said}");
    assert!(said.contains("postgres://"), "{said}");
    assert!(!said.contains("hunter2"), "{said}");
}

/// `doctor` with a fleet's store checks the key and reaches the store instead of the token file.
#[tokio::test(flavor = "multi_thread")]
async fn doctor_checks_the_fleet_key_and_reaches_the_store() {
    let dir = temp_dir("store-doctor");
    let (_sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let redis = tokio::task::spawn_blocking(ibauth_testsupport::redis::RedisServer::start)
        .await
        .unwrap();
    let key = dir.join("store.key");
    assert!(
        ibauth()
            .arg("store-key")
            .arg(&key)
            .output()
            .unwrap()
            .status
            .success()
    );
    let doctor = |env: &[(&str, &std::path::Path)], store: &str| {
        let mut cmd = ibauth();
        cmd.arg("--config")
            .arg(&config)
            .args(["--json", "--store", store, "doctor"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        let checks = report["checks"].as_array().unwrap().clone();
        let find = |name: &str| {
            checks
                .iter()
                .find(|c| c["check"] == name)
                .unwrap_or_else(|| panic!("no `{name}` in {checks:#?}"))
                .clone()
        };
        (find("store key"), find("shared store"), checks.clone())
    };
    let (key_check, store_check, checks) = doctor(&[("IBAUTH_STORE_KEY_FILE", &key)], &redis.url());
    assert_eq!(key_check["status"], "ok", "{key_check}");
    assert_eq!(store_check["status"], "ok", "{store_check}");
    assert!(
        !checks.iter().any(|c| c["check"] == "token file"),
        "a fleet has no token file"
    );

    let (key_check, _, _) = doctor(&[], &redis.url());
    assert_eq!(key_check["status"], "fail", "{key_check}");
    assert!(
        key_check["fix"]
            .as_str()
            .unwrap()
            .contains("ibauth store-key")
    );

    let (_, store_check, _) = doctor(
        &[("IBAUTH_STORE_KEY_FILE", &key)],
        "redis://:hunter2@127.0.0.1:9/0",
    );
    assert_eq!(store_check["status"], "fail", "{store_check}");
    assert!(store_check["fix"].is_string());
    assert!(
        !store_check.to_string().contains("hunter2"),
        "{store_check}"
    );

    // From the YAML alone: `store:` and `store_key_file:` (relative to the config's folder).
    let yaml = dir.join("fleet.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "store: {}\nstore_key_file: store.key\n",
        redis.url()
    ));
    std::fs::write(&yaml, text).unwrap();
    std::fs::set_permissions(&yaml, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = ibauth()
        .arg("--config")
        .arg(&yaml)
        .args(["--json", "doctor"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", common::text(&out)));
    for name in ["store key", "shared store"] {
        let check = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no `{name}` in {report:#}"));
        assert_eq!(check["status"], "ok", "{check}");
    }
}
