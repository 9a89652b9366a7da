//! The pacing ledger as another process may have left it: read under its lock, its times
//! cleaned and merged into this process's budgets, then written back — by a `Pacer` asking
//! for a turn, as every paced request does.
//!
//! Input: the ledger file's bytes. The seeds use the identity `me` and the buckets asked
//! for here (`global`, `GET /tickle`, …).
#![no_main]

use std::time::Duration;

use ibauth::pacing::{Method, PaceLedger, Pacer, PacingRules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = ibauth_fuzz::scratch("pacing_ledger").join("tokens.json.pacing");
    ibauth_fuzz::write_private(&path, data);
    let ledger = PaceLedger::open(&path, "me").expect("the ledger opens");
    let pacer = Pacer::with_ledger(PacingRules::ibkr(), ledger);
    ibauth_fuzz::runtime().block_on(async {
        for (method, endpoint) in [
            (Method::GET, "/tickle"),
            (Method::GET, "/iserver/marketdata/snapshot"),
            (Method::GET, "/portfolio/accounts"),
        ] {
            // No waiting: a turn now, or a refusal saying how long the wait would be.
            match pacer
                .acquire_within(&method, endpoint, Duration::ZERO)
                .await
            {
                Ok(permit) => assert!(permit.waited < Duration::from_secs(5)),
                Err(paced) => {
                    let _ = paced.to_string();
                }
            }
        }
        pacer.pause(&Method::GET, "/tickle", Some(Duration::from_secs(1)));
    });
    // What this process wrote is a ledger again.
    let written = std::fs::read(&path).expect("the ledger stays");
    if !written.is_empty() {
        let value: serde_json::Value =
            serde_json::from_slice(&written).expect("the ledger written is JSON");
        assert_eq!(value.get("v").and_then(serde_json::Value::as_u64), Some(1));
    }
});
