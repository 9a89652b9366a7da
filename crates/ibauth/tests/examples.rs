//! The examples run as tests: each example's `run` is called here (the example files are
//! compiled into this test as modules) and what it returns is checked, so an example that
//! stops working fails `cargo test` — without the cost of `cargo run` per example.

#[allow(dead_code)] // their `main` is the examples' entry point, unused here
#[path = "../examples/calls_from_many_tasks.rs"]
mod calls_from_many_tasks;
#[allow(dead_code)]
#[path = "../examples/method_from_config.rs"]
mod method_from_config;
#[allow(dead_code)]
#[path = "../examples/websocket.rs"]
mod websocket;

use ibauth::AuthMethod;

fn is_account(id: &str) -> bool {
    id.len() == 8 && id.starts_with('U') && id[1..].bytes().all(|b| b.is_ascii_digit())
}

#[tokio::test]
async fn calls_from_many_tasks_makes_every_call_and_logs_out_once() {
    let outcome = calls_from_many_tasks::run()
        .await
        .expect("the example runs");
    assert!(is_account(&outcome.account), "{outcome:?}");
    assert!(outcome.second_call_paced, "{outcome:?}");
    let conids: Vec<u64> = outcome.last_prices.iter().map(|(c, _)| *c).collect();
    assert_eq!(conids, [265598, 8314]);
    for (_, price) in &outcome.last_prices {
        assert!(price.parse::<f64>().is_ok_and(|p| p > 0.0), "{price}");
    }
    assert!(!outcome.order_id.is_empty() && outcome.order_id != "null");
    assert_eq!(outcome.logouts, 1);
}

#[tokio::test]
async fn method_from_config_runs_the_same_code_for_both_methods() {
    let outcome = method_from_config::run().await.expect("the example runs");
    let methods: Vec<(&str, AuthMethod)> = outcome.runs.iter().map(|(h, m, _)| (*h, *m)).collect();
    assert_eq!(
        methods,
        [
            ("the file as written", AuthMethod::OAuth2),
            ("asked for (--oauth1a)", AuthMethod::OAuth1a),
            ("the auth: key", AuthMethod::OAuth1a),
        ]
    );
    // One user behind both methods: the same account.
    let account = &outcome.runs[0].2;
    assert!(is_account(account), "{outcome:?}");
    assert!(
        outcome.runs.iter().all(|(_, _, a)| a == account),
        "{outcome:?}"
    );
    assert_eq!(outcome.client_method, AuthMethod::OAuth1a);
}

#[tokio::test]
async fn websocket_reads_the_greeting_the_status_a_tic_and_a_heartbeat() {
    let mut topics = websocket::run().await.expect("the example runs");
    assert_eq!(topics[..2], ["system", "sts"]);
    // The answer to `tic` and the heartbeat may come in either order.
    topics[2..].sort();
    assert_eq!(topics[2..], ["heartbeat", "tic"]);
}
