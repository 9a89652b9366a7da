//! A library user compiles none of the sandbox's or the CLI's dependencies: the library's normal
//! and build dependencies hold none of them (`cargo tree`, offline).
//!
//! Offline means the host target only: `cargo tree --target all` needs the sources of crates
//! only other platforms use, which a build here never downloaded. `scripts/check-publish.sh`
//! checks every target.

use std::collections::BTreeSet;
use std::process::Command;

/// Dependencies of `ibauth-sandbox` and `ibauth-cli` that the library must not pull in.
const FORBIDDEN: &[&str] = &[
    "axum",
    "axum-server",
    "clap",
    "clap_complete",
    "tracing-subscriber",
    "ibauth-sandbox",
    "ibauth-cli",
];

#[test]
fn library_does_not_depend_on_sandbox_or_cli_crates() {
    let out = Command::new(env!("CARGO"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "ibauth",
            "-e",
            "normal,build",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .output()
        .expect("run cargo tree");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: BTreeSet<&str> = stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    // The output is what this test thinks it is.
    assert!(
        names.contains("ibauth") && names.contains("reqwest"),
        "{stdout}"
    );
    let found: Vec<&str> = FORBIDDEN
        .iter()
        .copied()
        .filter(|name| names.contains(name))
        .collect();
    assert!(
        found.is_empty(),
        "a library user would compile {found:?}; see `cargo tree -p ibauth -e normal,build -i {}`",
        found.first().unwrap_or(&"")
    );
}
