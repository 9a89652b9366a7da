//! `cargo bench -p ibauth --bench pacing`: what `Pacer::acquire` costs per call when no wait
//! is needed — IBKR's rules with the limits raised so nothing waits, in-process and through a
//! ledger file. A minimal harness (warm-up, then timed batches; median and spread) keeps the
//! dependency tree small; figures go to docs/benchmarks.md.

use std::hint::black_box;
use std::time::Duration;

mod common;

use common::bench;

use ibauth::pacing::{Limit, Method, PaceLedger, Pacer, PacingRules, Rule};

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let raised = Limit::Rate {
        count: u32::MAX,
        per: Duration::from_secs(1),
    };
    // Every IBKR row kept (so matching does its full work), the two measured budgets raised.
    let rules = PacingRules::ibkr()
        .with_global(raised)
        .with_endpoint(Rule::new(
            Some(Method::GET),
            "/iserver/marketdata/snapshot",
            raised,
        ));
    let get = Method::GET;
    let acquire = |pacer: &Pacer, path: &str| {
        let permit = runtime.block_on(pacer.acquire(&get, path));
        drop(black_box(permit.expect("no wait with raised limits")));
    };

    let baseline = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    bench("block_on (baseline)", || {
        baseline.block_on(black_box(async {}))
    });

    let unlimited = Pacer::new(PacingRules::unlimited());
    bench("unlimited", || {
        acquire(&unlimited, "/v1/api/iserver/accounts")
    });

    let pacer = Pacer::new(rules.clone());
    bench("in-process, global only", || {
        acquire(&pacer, "/v1/api/iserver/accounts")
    });
    bench("in-process, endpoint+global", || {
        acquire(&pacer, "/v1/api/iserver/marketdata/snapshot?conids=265598")
    });
    bench("in-process, full URL", || {
        acquire(
            &pacer,
            "https://api.ibkr.com/v1/api/portfolio/U1234567/positions/0?sort=asc",
        )
    });

    let dir = std::env::temp_dir().join(format!("ibauth-bench-pacing-{}", std::process::id()));
    let ledger = PaceLedger::open(dir.join("tokens.json.pacing"), "bench").expect("ledger");
    let shared = Pacer::with_ledger(rules.clone(), ledger);
    bench("ledger, global only", || {
        acquire(&shared, "/v1/api/iserver/accounts")
    });
    // The raised global budget keeps a time for every millisecond of its 1.1 s window (about
    // 1,100 entries to read and write per call); at IBKR's 50/s it holds at most ~55.
    let small = PacingRules {
        margin: Duration::ZERO,
        ..rules.with_global(Limit::Rate {
            count: u32::MAX,
            per: Duration::from_millis(50),
        })
    };
    let ledger = PaceLedger::open(dir.join("small.pacing"), "bench").expect("ledger");
    let shared = Pacer::with_ledger(small, ledger);
    bench("ledger, ~50-entry budget", || {
        acquire(&shared, "/v1/api/iserver/accounts")
    });
    let _ = std::fs::remove_dir_all(&dir);
}
