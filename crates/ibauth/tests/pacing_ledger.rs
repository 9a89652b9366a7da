//! Processes sharing a pacing ledger wait for each other: this test binary runs itself as
//! several child processes, each pacing the same endpoint through one ledger file, and checks
//! the send times of all of them together.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ibauth::pacing::{Limit, Method, PaceLedger, Pacer, PacingRules, Rule};

/// Set in a child: the ledger file.
const CHILD_LEDGER: &str = "IBAUTH_PACING_TEST_LEDGER";
/// Set in a child: how many requests it sends.
const CHILD_CALLS: &str = "IBAUTH_PACING_TEST_CALLS";
const TEST: &str = "processes_sharing_a_ledger_wait_for_each_other";

/// 1 per 300 ms, spaced 800 ms apart by a 500 ms margin: the checks below ask only for the
/// 300 ms, so a child woken late by a busy machine does not fail the test.
const PER: Duration = Duration::from_millis(300);
const MARGIN: Duration = Duration::from_millis(500);

fn rules() -> PacingRules {
    PacingRules {
        margin: MARGIN,
        ..PacingRules::unlimited()
    }
    .with_endpoint(Rule::new(
        Some(Method::GET),
        "/portfolio/accounts",
        Limit::Rate { count: 1, per: PER },
    ))
}

fn unix_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since.as_millis()).expect("ms fit")
}

/// A child: sends its requests when the pacer says, printing each send time.
fn child(ledger: PathBuf, calls: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let ledger = PaceLedger::open(ledger, "tester").expect("ledger");
        let pacer = Pacer::with_ledger(rules(), ledger);
        for _ in 0..calls {
            let permit = pacer
                .acquire(
                    &Method::GET,
                    "https://api.ibkr.com/v1/api/portfolio/accounts",
                )
                .await
                .expect("a turn within max_wait");
            println!("SENT {}", unix_ms());
            drop(permit);
        }
    });
}

fn spawn(ledger: &PathBuf, calls: usize) -> std::process::Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_LEDGER, ledger)
        .env(CHILD_CALLS, calls.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a child")
}

fn sent_times(child: std::process::Child) -> Vec<u64> {
    let out = child.wait_with_output().expect("child output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        // The harness's "test … " may precede the first line.
        .filter_map(|l| l.split_once("SENT ").map(|(_, t)| t))
        .map(|t| t.trim().parse().expect("a time"))
        .collect()
}

#[test]
fn processes_sharing_a_ledger_wait_for_each_other() {
    if let Some(ledger) = std::env::var_os(CHILD_LEDGER) {
        let calls = std::env::var(CHILD_CALLS)
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        return child(ledger.into(), calls);
    }
    let dir = std::env::temp_dir().join(format!("ibauth-pacing-procs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ledger = dir.join("state").join("tokens.json.pacing");

    // Three at once, two requests each…
    let together: Vec<_> = (0..3).map(|_| spawn(&ledger, 2)).collect();
    let mut times: Vec<u64> = together.into_iter().flat_map(sent_times).collect();
    assert_eq!(times.len(), 6);
    // …then two more, one after the other: each starts where the last left off and must
    // wait for the times already in the ledger.
    for _ in 0..2 {
        let before = times.iter().max().copied().unwrap_or(0);
        let later = sent_times(spawn(&ledger, 1));
        assert_eq!(later.len(), 1);
        assert!(
            later[0] >= before + PER.as_millis() as u64,
            "a later process waited for the earlier ones: {before} then {}",
            later[0]
        );
        times.extend(later);
    }

    times.sort_unstable();
    let per = u64::try_from(PER.as_millis()).expect("ms");
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= per,
            "two requests {} ms apart, closer than the limit's {per} ms: {times:?}",
            pair[1] - pair[0]
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
