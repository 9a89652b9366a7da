//! Thirty clients hammering an endpoint IBKR allows once every five seconds, through the
//! gateway, against a sandbox enforcing IBKR's limits with its penalty box: IBKR sees no
//! violation at all; each client gets the shared answer or a 429 with `Retry-After`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ibauth_gateway::Gateway;
use ibauth_sandbox::PacingLimits;

const CLIENTS: usize = 30;
const HAMMERING: Duration = Duration::from_secs(6);

#[derive(Debug, Default)]
struct Seen {
    answers: usize,
    paced: usize,
    other: Vec<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_clients_on_a_one_per_five_seconds_endpoint_cause_no_violation() {
    let sandbox = sandbox().await;
    sandbox.set_pacing(Some(PacingLimits::ibkr()));
    // The keep-alive's own tickles count against IBKR's budgets too.
    let running = Gateway::new(session(&sandbox, policy(Duration::from_secs(1))), options())
        .start()
        .await
        .expect("gateway");
    ready(&running).await;
    let calls_before = sandbox.counters().api_calls;
    let url = format!("{}/v1/api/portfolio/accounts", base(&running));
    let stop = Instant::now() + HAMMERING;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                // Each client its own connection, as separate programs would have.
                let http = reqwest::Client::new();
                let mut seen = Seen::default();
                while Instant::now() < stop {
                    let started = Instant::now();
                    let reply = http.get(&url).send().await.expect("the gateway answers");
                    let status = reply.status().as_u16();
                    let retry_after = reply
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    let body: serde_json::Value = reply.json().await.expect("JSON");
                    // Never held longer than max_wait (1 s) plus the answer itself.
                    assert!(
                        started.elapsed() < Duration::from_secs(3),
                        "{status} after {:?}",
                        started.elapsed()
                    );
                    match (status, retry_after) {
                        (200, _) => {
                            assert!(body.is_array(), "{body}");
                            seen.answers += 1;
                        }
                        (429, Some(secs)) if (1..=6).contains(&secs) => {
                            assert_eq!(body["gateway"], "ibauth", "{body}");
                            assert_eq!(body["retry_after_s"], secs, "{body}");
                            seen.paced += 1;
                        }
                        _ => seen.other.push(format!("{status} {retry_after:?} {body}")),
                    }
                    // Hammering, but leaving the two shared cores to the gateway.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                seen
            })
        })
        .collect();
    let mut total = Seen::default();
    for client in clients {
        let seen = client.await.expect("client");
        total.answers += seen.answers;
        total.paced += seen.paced;
        total.other.extend(seen.other);
    }
    let c = sandbox.counters();
    assert_eq!(
        (c.pacing_violations, c.penalty_rejections),
        (0, 0),
        "IBKR saw no violation: {c:?}"
    );
    assert!(
        total.other.is_empty(),
        "only answers and 429: {:?}",
        total.other
    );
    assert!(total.answers >= 1, "{total:?}");
    assert!(total.paced >= CLIENTS, "{total:?}");
    // One upstream call per five seconds (plus the margin), shared by everyone asking then.
    let upstream = c.api_calls - calls_before;
    assert!(
        (1..=2).contains(&upstream),
        "{upstream} upstream calls in {HAMMERING:?}"
    );
    // Clients asking while an answer is awaited share it (the second call is awaited for up
    // to max_wait by everyone asking then).
    assert!(
        total.answers as u64 > upstream,
        "answers shared: {total:?}, {upstream} upstream calls"
    );
    running.shutdown().await;
    assert_eq!(sandbox.counters().pacing_violations, 0);
}
