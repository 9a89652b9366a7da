//! `login` refuses a private key file other users can access — exit 3 (configuration) with the
//! `chmod 600` to run — for the OAuth 2.0 key and both OAuth 1.0a keys, and logs in once the
//! file is the owner's alone. The real binary against a sandbox.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

mod common;
use common::{ibauth, sandbox_with_set, temp_dir, text};

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn login_refuses_a_key_others_can_read_and_says_how_to_fix_it() {
    let dir = temp_dir("key-mode");
    let (sandbox, config, _set) = sandbox_with_set(&dir, false).await;
    let login = |flags: &[&str]| {
        ibauth()
            .arg("--config")
            .arg(&config)
            .args(flags)
            .args(["login", "--force"])
            .output()
            .unwrap()
    };
    let cases: [(&[&str], &str); 3] = [
        (&[], "private_key.pem"),
        (&["--oauth1a"], "signature_key.pem"),
        (&["--oauth1a"], "encryption_key.pem"),
    ];
    for (flags, file) in cases {
        let key = dir.join(file);
        // The sandbox writes its keys owner-only, and those work.
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let output = login(flags);
        assert!(output.status.success(), "{file}: {}", text(&output));

        for mode in [0o644, 0o640] {
            chmod(&key, mode);
            let logins = sandbox.counters();
            let output = login(flags);
            assert_eq!(output.status.code(), Some(3), "{file}: {}", text(&output));
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains(&format!("chmod 600 {}", key.display())),
                "{file} {mode:o}: {stderr}"
            );
            assert!(stderr.contains(&format!("mode {mode:o}")), "{stderr}");
            // Refused before anything is sent.
            assert_eq!(
                (
                    sandbox.counters().access_tokens,
                    sandbox.counters().live_session_tokens
                ),
                (logins.access_tokens, logins.live_session_tokens),
                "{file}"
            );
        }
        chmod(&key, 0o600);
        let output = login(flags);
        assert!(output.status.success(), "{file}: {}", text(&output));
    }
}
