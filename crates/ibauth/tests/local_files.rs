//! The token file, its lock and the pacing ledger against another local user: a FIFO, symbolic
//! links to files elsewhere, a loose folder, files owned by someone else. Each is refused with
//! an error that says what to do, and nothing outside the store is read, written or created.
//!
//! Run as root (as CI does), the other user's files are real: made here and given to `nobody`.
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use ibauth::pacing::PaceLedger;
use ibauth::secrecy::SecretString;
use ibauth::store::{FileStore, StoreError, StoredBearer, StoredTokens, TokenStore};

/// `nobody` on Debian and most Linux systems.
const NOBODY: u32 = 65534;

/// A fresh 0700 folder `<tmp>/ibauth-local-<name>-<pid>/state`; the token file in it.
fn token_file(name: &str) -> PathBuf {
    let top = std::env::temp_dir().join(format!("ibauth-local-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&top);
    let dir = top.join("state");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    dir.join("tokens.json")
}

fn doc(n: u64) -> StoredTokens {
    let mut t = StoredTokens::new("oauth2", "id".into(), "https://api.ibkr.com/".into(), n);
    t.bearer = Some(StoredBearer {
        token: SecretString::from(format!("bearer-{n}")),
        ip: std::net::Ipv4Addr::LOCALHOST,
        obtained_at: n,
        expires_at: n + 100,
    });
    t
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo (coreutils) runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Runs `f` on a thread and fails the test if it has not returned within 10 s: a regression
/// that blocks (on a FIFO) fails here instead of hanging the test run.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} did not return within 10 s: it blocked"))
}

fn is_root() -> bool {
    let probe = std::env::temp_dir().join(format!("ibauth-uid-probe-{}", std::process::id()));
    fs::write(&probe, b"").unwrap();
    let uid = fs::metadata(&probe).unwrap().uid();
    fs::remove_file(&probe).unwrap();
    uid == 0
}

/// A victim file outside the store, and its content and mode, to check it is left untouched.
fn victim(name: &str) -> (PathBuf, Vec<u8>, u32) {
    let path =
        std::env::temp_dir().join(format!("ibauth-local-victim-{name}-{}", std::process::id()));
    let content = format!("precious {name}\n").into_bytes();
    fs::write(&path, &content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    (path, content, 0o644)
}

fn untouched((path, content, mode): &(PathBuf, Vec<u8>, u32)) {
    assert_eq!(
        &fs::read(path).unwrap(),
        content,
        "{} was written",
        path.display()
    );
    assert_eq!(
        fs::metadata(path).unwrap().permissions().mode() & 0o777,
        *mode,
        "{} changed mode",
        path.display()
    );
}

#[test]
fn a_fifo_at_the_token_file_is_refused_at_once() {
    let path = token_file("fifo");
    mkfifo(&path);
    let store = FileStore::new(&path);
    for (what, result) in [
        (
            "load",
            bounded("load", {
                let s = store.clone();
                move || s.load("id").map(|_| ())
            }),
        ),
        (
            "save",
            bounded("save", {
                let s = store.clone();
                move || s.save(&doc(1))
            }),
        ),
        (
            "inspect",
            bounded("inspect", {
                let s = store.clone();
                move || s.inspect().map(|_| ())
            }),
        ),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(err, StoreError::NotRegular { kind, .. } if kind.contains("FIFO")),
            "{what}: {err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("not a regular file") && text.contains("rm "),
            "{text}"
        );
    }
    // Left in place for the user to look at, not replaced behind their back.
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_fifo());
}

use std::os::unix::fs::FileTypeExt;

#[test]
fn a_fifo_at_the_lock_file_is_refused_at_once() {
    let path = token_file("fifo-lock");
    mkfifo(&path.with_file_name("tokens.json.lock"));
    let store = FileStore::new(&path);
    let err = bounded("lock", move || store.lock().map(|_| ())).unwrap_err();
    assert!(matches!(err, StoreError::NotRegular { .. }), "{err}");
}

#[test]
fn a_symlink_at_the_token_file_is_refused_and_its_target_untouched() {
    let path = token_file("symlink");
    // Pointing at a file elsewhere: neither read (it is not parsed, nor moved aside) nor written.
    let target = victim("symlink");
    std::os::unix::fs::symlink(&target.0, &path).unwrap();
    let store = FileStore::new(&path);
    let err = store.load("id").unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotRegular {
                kind: "a symbolic link",
                ..
            }
        ),
        "{err}"
    );
    assert!(store.save(&doc(1)).is_err());
    let guard = store.lock().unwrap();
    assert!(
        store.load("id").is_err(),
        "not moved aside as corrupt either"
    );
    drop(guard);
    untouched(&target);
    assert!(
        fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // Dangling, where a save would create the file: nothing is created at its target.
    let dangling = path.with_file_name("elsewhere.json");
    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&dangling, &path).unwrap();
    assert!(matches!(
        store.save(&doc(1)).unwrap_err(),
        StoreError::NotRegular { .. }
    ));
    assert!(!dangling.exists());
}

#[test]
fn a_symlinked_lock_file_is_refused_and_its_target_untouched() {
    let path = token_file("symlink-lock");
    let lock = path.with_file_name("tokens.json.lock");
    let target = victim("symlink-lock");
    std::os::unix::fs::symlink(&target.0, &lock).unwrap();
    let store = FileStore::new(&path);
    let err = store.lock().unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotRegular {
                kind: "a symbolic link",
                ..
            }
        ),
        "{err}"
    );
    // Not made 0600, not truncated, not locked.
    untouched(&target);
    let file = fs::File::open(&target.0).unwrap();
    assert!(file.try_lock().is_ok(), "the target was left locked");

    // Dangling: the lock is not created where it points.
    let dangling = path.with_file_name("made-by-the-lock");
    fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink(&dangling, &lock).unwrap();
    assert!(store.lock().is_err());
    assert!(!dangling.exists());
}

#[test]
fn a_folder_others_can_write_is_refused_one_they_can_read_is_not() {
    let path = token_file("folder");
    let folder = path.parent().unwrap().to_owned();
    let store = FileStore::new(&path);
    store.save(&doc(1)).unwrap();

    // 0755 (the default for folders users make): others see the name, the 0600 file is safe.
    fs::set_permissions(&folder, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(store.load("id").unwrap(), Some(doc(1)));
    store.save(&doc(2)).unwrap();
    drop(store.lock().unwrap());

    for mode in [0o777, 0o775, 0o757, 0o1777] {
        fs::set_permissions(&folder, fs::Permissions::from_mode(mode)).unwrap();
        for (what, err) in [
            ("load", store.load("id").map(|_| ()).unwrap_err()),
            ("save", store.save(&doc(3)).unwrap_err()),
            ("lock", store.lock().map(|_| ()).unwrap_err()),
            ("inspect", store.inspect().map(|_| ()).unwrap_err()),
        ] {
            assert!(
                matches!(err, StoreError::UnsafeFolder { .. }),
                "{mode:o} {what}: {err}"
            );
            let text = err.to_string();
            assert!(text.contains("chmod 700"), "{text}");
            assert!(text.contains(&format!("{mode:o}")), "{text}");
            assert!(!text.contains("bearer-"), "{text}");
        }
    }
    fs::set_permissions(&folder, fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(store.load("id").unwrap(), Some(doc(2)), "the file was kept");
}

#[test]
fn files_and_folders_of_another_user_are_refused() {
    if !is_root() {
        // Only root can give a file away; without it, what can be checked is that our own
        // files pass the owner check.
        let path = token_file("owner-self");
        let store = FileStore::new(&path);
        store.save(&doc(1)).unwrap();
        assert_eq!(store.load("id").unwrap(), Some(doc(1)));
        eprintln!("not root: another user's files cannot be made here; checked our own pass");
        return;
    }
    let path = token_file("owner");
    let store = FileStore::new(&path);
    store.save(&doc(1)).unwrap();

    // The token file planted by `nobody` (0600, as ibauth writes it).
    std::os::unix::fs::chown(&path, Some(NOBODY), None).unwrap();
    let err = store.load("id").unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::ForeignOwner {
                uid: NOBODY,
                expected: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("another user may have planted it"),
        "{err}"
    );
    assert!(store.save(&doc(2)).is_err());
    std::os::unix::fs::chown(&path, Some(0), None).unwrap();
    assert_eq!(store.load("id").unwrap(), Some(doc(1)));

    // The lock planted by `nobody`.
    let lock = path.with_file_name("tokens.json.lock");
    drop(store.lock().unwrap());
    std::os::unix::fs::chown(&lock, Some(NOBODY), None).unwrap();
    assert!(matches!(
        store.lock().map(|_| ()).unwrap_err(),
        StoreError::ForeignOwner { .. }
    ));
    fs::remove_file(&lock).unwrap();

    // The folder given to `nobody`: they could swap the file, whatever the modes say.
    let folder = path.parent().unwrap();
    std::os::unix::fs::chown(folder, Some(NOBODY), None).unwrap();
    let err = store.load("id").unwrap_err();
    assert!(matches!(err, StoreError::UnsafeFolder { .. }), "{err}");
    assert!(err.to_string().contains("uid 65534"), "{err}");
    std::os::unix::fs::chown(folder, Some(0), None).unwrap();
    assert_eq!(store.load("id").unwrap(), Some(doc(1)));
}

#[test]
fn the_pacing_ledger_obeys_the_same_rules() {
    let tokens = token_file("ledger");
    let ledger = tokens.with_file_name("tokens.json.pacing");
    let error = |r: Result<PaceLedger, ibauth::pacing::LedgerError>| r.unwrap_err().to_string();

    // A FIFO: refused at once.
    mkfifo(&ledger);
    let err = bounded("PaceLedger::beside", {
        let tokens = tokens.clone();
        move || error(PaceLedger::beside(&tokens, "me"))
    });
    assert!(err.contains("FIFO") && err.contains("remove it"), "{err}");
    fs::remove_file(&ledger).unwrap();

    // A symbolic link to a file elsewhere: refused, the target neither written nor re-moded.
    let target = victim("ledger");
    std::os::unix::fs::symlink(&target.0, &ledger).unwrap();
    let err = error(PaceLedger::beside(&tokens, "me"));
    assert!(err.contains("symbolic link"), "{err}");
    untouched(&target);
    fs::remove_file(&ledger).unwrap();

    // Ours but readable by others (an older file): made 0600 again.
    fs::write(&ledger, b"").unwrap();
    fs::set_permissions(&ledger, fs::Permissions::from_mode(0o644)).unwrap();
    PaceLedger::beside(&tokens, "me").unwrap();
    assert_eq!(
        fs::metadata(&ledger).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // In a folder others can write to.
    let folder = ledger.parent().unwrap();
    fs::set_permissions(folder, fs::Permissions::from_mode(0o777)).unwrap();
    let err = error(PaceLedger::beside(&tokens, "me"));
    assert!(
        err.contains("can be written by other users") && err.contains("chmod 700"),
        "{err}"
    );
    fs::set_permissions(folder, fs::Permissions::from_mode(0o700)).unwrap();

    // Another user's.
    if is_root() {
        std::os::unix::fs::chown(&ledger, Some(NOBODY), None).unwrap();
        let err = error(PaceLedger::beside(&tokens, "me"));
        assert!(err.contains("uid 65534"), "{err}");
    }
}
