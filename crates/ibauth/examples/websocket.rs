//! The authenticated WebSocket of a `Session`: `session.websocket()` logs in if needed, tickles
//! for the session cookie and opens the socket (it would reopen it by itself if the server
//! closed it). This prints the first few messages — IBKR's `system` greeting, the `sts` auth
//! status, the answer to a `tic`, a heartbeat — then closes the socket and logs out.
//!
//! It runs against an in-process sandbox with a generated key, so it needs no setup:
//!
//! ```text
//! cargo run -p ibauth --example websocket
//! ```

use std::error::Error;
use std::net::Ipv4Addr;
use std::time::Duration;

use ibauth::{Config, Session, SigningKey};
use ibauth_sandbox::{ClientRegistration, Sandbox};
use serde_json::Value;

/// The topics of the messages read, in order.
pub async fn run() -> Result<Vec<String>, Box<dyn Error>> {
    let key = SigningKey::generate()?;
    let sandbox = Sandbox::builder()
        .register(
            ClientRegistration::new("DEMOCLIENT")
                .key("main", &key)
                .credential("demo"),
        )
        // IBKR sends a heartbeat about every 10 s; sooner here, to see one quickly.
        .ws_heartbeat(Duration::from_millis(200))
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
    let session = Session::builder(config).no_store().build()?;

    let mut socket = session.websocket().await?;
    let mut topics = Vec::new();
    // The greeting and the status arrive unasked; `tic` asks whether the session is alive;
    // the heartbeat comes on its own.
    while topics.len() < 4 {
        if topics.len() == 2 {
            socket.send_text("tic").await?;
        }
        let message = tokio::time::timeout(Duration::from_secs(2), socket.next_text())
            .await
            .map_err(|_| "no message within 2 s")?
            .ok_or("the socket closed")??;
        println!("{message}");
        let json: Value = serde_json::from_str(&message)?;
        let topic = json["topic"].as_str().unwrap_or("?");
        // Tell the heartbeat (`system` with `hb`) from the greeting.
        topics.push(match json.get("hb") {
            Some(_) => "heartbeat".to_owned(),
            None => topic.to_owned(),
        });
    }
    socket.close().await;
    session.logout().await?;
    Ok(topics)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    run().await.map(|_| ())
}
