//! `ibauth store-key`: the key that seals a fleet's tokens in its shared store — made, written
//! to a private file, rotated or retired by [`ibauth::coord::Keyring`]; printed here.

use std::path::PathBuf;
use std::process::ExitCode;

use ibauth::coord::{Keyring, KeyringError, StoreKey};
use serde_json::json;

use crate::render::{Out, code};

pub enum Action {
    /// A new key on stdout (for `> store.key`).
    Print,
    /// A new key file.
    Create(PathBuf),
    /// A new key first in an existing file.
    Rotate(PathBuf),
    /// Only the first key kept.
    Retire(PathBuf),
}

pub fn run(out: Out, action: Action) -> ExitCode {
    let (done, path) = match action {
        Action::Print => {
            return match StoreKey::generate() {
                Ok(key) => {
                    // The key itself is the answer: stdout only, as `> store.key` wants it.
                    if out.json {
                        let line = json!({ "key": *key.to_base64(), "id": key.id() });
                        println!("{}", crate::render::json_line(&line));
                    } else {
                        println!("{}", *key.to_base64());
                    }
                    eprintln!(
                        "store key {}: keep the file private (chmod 600) and give every host of the fleet the same one",
                        key.id()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => failed(out, &e),
            };
        }
        Action::Create(path) => (Keyring::create_file(&path), path),
        Action::Rotate(path) => (Keyring::rotate_file(&path), path),
        Action::Retire(path) => (Keyring::retire_file(&path), path),
    };
    match done {
        Ok(ring) => {
            let ids = ring.ids();
            let text = match ids.as_slice() {
                [current] => format!(
                    "{}: key {current} (seals and opens). Copy the file to every host of the fleet, mode 0600.",
                    path.display()
                ),
                [current, older @ ..] => format!(
                    "{}: key {current} seals from now on; {} still open what they sealed. Copy the file to every host of the fleet; once `ibauth status` shows the document sealed with {current}, run `ibauth store-key --retire {}`.",
                    path.display(),
                    older.join(", "),
                    path.display()
                ),
                [] => String::new(),
            };
            out.result(
                &text,
                json!({ "file": path, "current": ids.first(), "keys": ids }),
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(out, &e),
    }
}

fn failed(out: Out, err: &KeyringError) -> ExitCode {
    let code = match err {
        KeyringError::Random | KeyringError::Write { .. } => code::OTHER,
        _ => code::CONFIG,
    };
    if out.json {
        println!(
            "{}",
            crate::render::json_line(&json!({ "error": err.to_string(), "exit_code": code }))
        );
    } else {
        out.error_line(&err.to_string());
    }
    ExitCode::from(code)
}
