//! One `Session`, many tasks: the keep-alive runs in the background while several tasks call
//! the Web API at once through clones of the same handle — a paced endpoint
//! (`portfolio/accounts`, 1 call per 5 s at IBKR), a market-data snapshot with query
//! parameters, and an order placed with a JSON body. Shutting the keep-alive down logs out
//! once.
//!
//! It runs against an in-process sandbox with a generated key, so it needs no setup:
//!
//! ```text
//! cargo run -p ibauth --example calls_from_many_tasks
//! ```

use std::error::Error;
use std::net::Ipv4Addr;
use std::time::Duration;

use ibauth::{Config, Session, SigningKey};
use ibauth_sandbox::{ClientRegistration, Sandbox};
use serde_json::{Value, json};

/// What the calls returned.
#[derive(Debug)]
pub struct Outcome {
    /// The account `portfolio/accounts` listed.
    pub account: String,
    /// Whether a second `portfolio/accounts` right after the first was refused by the pacer
    /// (it would have had to wait ~5 s) without being sent.
    pub second_call_paced: bool,
    /// Last prices of the snapshot, by conid.
    pub last_prices: Vec<(u64, String)>,
    /// The order id the server gave the order.
    pub order_id: String,
    /// Logouts the server saw (one, at shutdown).
    pub logouts: u64,
}

pub async fn run() -> Result<Outcome, Box<dyn Error>> {
    // The sandbox stands in for api.ibkr.com: a client registered with a fresh key.
    let key = SigningKey::generate()?;
    let sandbox = Sandbox::builder()
        .register(
            ClientRegistration::new("DEMOCLIENT")
                .key("main", &key)
                .credential("demo"),
        )
        .start()
        .await?;
    let config = Config::builder()
        .client_id("DEMOCLIENT")
        .client_key_id("main")
        .credential("demo")
        .private_key(key)
        .base_url(sandbox.base_url())
        .public_ip(Ipv4Addr::LOCALHOST)
        .build()?;

    // Tokens for this run only (no token file), IBKR's pacing limits (the default).
    let session = Session::builder(config).no_store().build()?;
    // Logs in, tickles, renews; the calls below share its login rather than racing it.
    let keep_alive = session.keep_alive()?;

    // Each task has its own clone of the handle; they all run at once.
    let accounts = tokio::spawn({
        let session = session.clone();
        async move {
            let accounts: Value = session.get("portfolio/accounts").await?.json()?;
            // IBKR allows one of these per 5 s: the pacer would hold this one back ~5 s, and
            // with a 100 ms bound it fails at once instead, unsent.
            let again = session
                .request(ibauth::Method::GET, "portfolio/accounts")
                .max_wait(Duration::from_millis(100))
                .send()
                .await;
            let paced = matches!(again, Err(ibauth::Error::Paced { .. }));
            Ok::<_, ibauth::Error>((accounts, paced))
        }
    });
    let snapshot = tokio::spawn({
        let session = session.clone();
        async move {
            session
                .request(ibauth::Method::GET, "iserver/marketdata/snapshot")
                .query(&[("conids", "265598,8314"), ("fields", "31,84,86")])
                .send()
                .await?
                .json::<Value>()
        }
    });
    let order = tokio::spawn({
        let session = session.clone();
        async move {
            let accounts: Value = session.get("iserver/accounts").await?.json()?;
            let account = accounts["selectedAccount"].as_str().unwrap_or_default();
            let order = json!({ "orders": [{
                "conid": 265598, "side": "BUY", "quantity": 1, "orderType": "LMT",
                "price": 180.5, "tif": "DAY", "cOID": "example-order-1",
            }]});
            session
                .post(&format!("iserver/account/{account}/orders"), &order)
                .await?
                .json::<Value>()
        }
    });

    let (accounts, second_call_paced) = accounts.await??;
    let snapshot = snapshot.await??;
    let placed = order.await??;
    println!("portfolio/accounts: {accounts}");
    println!("second portfolio/accounts refused by the pacer: {second_call_paced}");
    println!("snapshot: {snapshot}");
    println!("order placed: {placed}");

    // Stops the keep-alive and logs out once.
    keep_alive.shutdown().await;
    let logouts = sandbox.counters().logouts;
    println!("logouts: {logouts}");

    let last_prices = snapshot
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| Some((entry["conid"].as_u64()?, entry["31"].as_str()?.to_owned())))
        .collect();
    Ok(Outcome {
        account: accounts[0]["id"].as_str().unwrap_or_default().to_owned(),
        second_call_paced,
        last_prices,
        order_id: placed[0]["order_id"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| placed[0]["order_id"].to_string()),
        logouts,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    run().await.map(|_| ())
}
