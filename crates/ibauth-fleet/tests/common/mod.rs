//! What the runner tests share.

use std::time::Duration;

use ibauth_fleet::runner::{LoginPacing, RunnerOptions};

/// Runner settings for a test fleet: small batches, a fleet-wide login limit generous enough
/// that logins are never the bottleneck, and the test's own timing.
pub fn options(tickle_every: Duration, hold: Duration, poll: Duration) -> RunnerOptions {
    RunnerOptions {
        workers: 2,
        batch: 50,
        concurrency: 16,
        tickle_every,
        hold,
        poll,
        retry_after: Duration::from_secs(1),
        login_rate: 200.0,
        login_burst: 20,
        login_pacing: LoginPacing::Fleet,
        ..RunnerOptions::default()
    }
}
