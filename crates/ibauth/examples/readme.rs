//! The README's "Use the session" example, exactly as written there (`tests/readme.rs` checks
//! that the two agree and runs this against the sandbox). Against `ibauth sandbox --dir
//! sandbox`: `IBAUTH_CONFIG=sandbox/config.yaml cargo run -p ibauth --example readme`.

use ibauth::{Method, Session};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // ./config.yaml (or $IBAUTH_CONFIG) with IBAUTH_* and ibind's IBIND_* variables over it; the
    // auth method comes from the configuration. Stored tokens are reused; a login happens only
    // when none is valid.
    let session = Session::from_config(None, None)?.build()?;

    // Any endpoint, from any number of tasks (the handle is cheap to clone): each call is
    // authorised afresh, waits its turn under IBKR's limits, and is recovered once if IBKR
    // dropped the session.
    let accounts: Value = session.get("iserver/accounts").await?.json()?;
    let account = accounts["selectedAccount"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let quotes: Value = session
        .request(Method::GET, "iserver/marketdata/snapshot")
        .query(&[("conids", "265598"), ("fields", "31,84,86")])
        .send()
        .await?
        .json()?;
    println!("{account}: {quotes}");

    // Keep the session alive in the background (tickles, renewals, recovery), keep calling, and
    // log out once on Ctrl-C or SIGTERM.
    let keep = session.keep_alive()?;
    let portfolio: Value = keep.session().get("portfolio/accounts").await?.json()?;
    println!("{portfolio}");
    keep.shutdown_on_signal().await;
    Ok(())
}
