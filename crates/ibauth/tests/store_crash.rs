//! The file store under crashes: a writer process killed with SIGKILL at random points while
//! saving, hundreds of times, while this process keeps reading. Every read, and the file left
//! after every kill, is a whole document — the old one or a new one, never a mix or a part.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ibauth::secrecy::{ExposeSecret, SecretString};
use ibauth::store::{FileStore, StoredBearer, StoredTokens, TokenStore};

/// Set in the writer child: the token file to write to.
const CHILD_FILE: &str = "IBAUTH_STORE_CRASH_FILE";
const CHILD_START: &str = "IBAUTH_STORE_CRASH_START";
/// The identity every document is stored under.
const ID: &str = "crash";

/// Document `n`: its token is a long, n-derived string, so a torn write cannot pass for whole.
fn doc(n: u64) -> StoredTokens {
    let mut t = StoredTokens::new("oauth2", ID.into(), "https://api.ibkr.com/".into(), n);
    let token: String = format!("{n:016x}").repeat(4096);
    t.bearer = Some(StoredBearer {
        token: SecretString::from(token),
        ip: std::net::Ipv4Addr::LOCALHOST,
        obtained_at: n,
        expires_at: n + 1,
    });
    t
}

/// Checks that `t` is exactly `doc(n)` for its own `n`; returns `n`.
fn whole(t: &StoredTokens) -> u64 {
    let n = t.created_at;
    let bearer = t.bearer.as_ref().expect("a bearer");
    assert_eq!(bearer.obtained_at, n);
    assert_eq!(bearer.expires_at, n + 1);
    assert_eq!(
        bearer.token.expose_secret(),
        format!("{n:016x}").repeat(4096),
        "document {n} is torn"
    );
    n
}

/// The writer: saves documents start, start+1, … until killed. A no-op as a normal test run.
#[test]
fn crash_writer_child() {
    let (Ok(file), Ok(start)) = (std::env::var(CHILD_FILE), std::env::var(CHILD_START)) else {
        return;
    };
    let store = FileStore::new(file);
    let mut n: u64 = start.parse().unwrap();
    loop {
        store.save(&doc(n)).unwrap();
        n += 1;
    }
}

fn spawn_writer(file: &Path, start: u64) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_FILE, file)
        .env(CHILD_START, start.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_writer_killed_at_random_points_never_leaves_a_partial_file() {
    let dir: PathBuf = std::env::temp_dir().join(format!("ibauth-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let file = dir.join("tokens.json");
    let store = FileStore::new(&file);
    store.save(&doc(0)).unwrap();

    // A reader that never stops looking while the writers are killed.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, reads, file) = (stop.clone(), reads.clone(), file.clone());
        std::thread::spawn(move || {
            let store = FileStore::new(file);
            while !stop.load(Ordering::SeqCst) {
                let t = store.load(ID).unwrap().expect("always a document");
                whole(&t);
                reads.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    // SplitMix64 for the kill delays: the same sequence every run.
    let mut seed: u64 = 0x5EED;
    let mut next = move || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut last = 0;
    let kills = 200;
    let mut advanced = 0;
    for i in 1..=kills {
        let start = i * 1_000_000;
        let mut child = spawn_writer(&file, start);
        // Mostly mid-stream (after some saves), sometimes before the first one completes.
        std::thread::sleep(Duration::from_micros(next() % 30_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let t = store
            .load(ID)
            .unwrap()
            .expect("a document after every kill");
        let n = whole(&t);
        assert!(
            n == last || n >= start,
            "an older document came back: {n} after {last}"
        );
        if n != last {
            advanced += 1;
        }
        last = n;
    }
    stop.store(true, Ordering::SeqCst);
    reader
        .join()
        .expect("every concurrent read saw a whole document");
    // Not vacuous: the kills landed while the writers were writing.
    assert!(
        advanced > kills / 4,
        "only {advanced} of {kills} writers saved anything"
    );
    assert!(reads.load(Ordering::SeqCst) > 100);
    let _ = std::fs::remove_dir_all(&dir);
}
