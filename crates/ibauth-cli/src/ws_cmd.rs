//! `ibauth ws`: log in, open the authenticated WebSocket, print each message as one line of
//! JSON until Ctrl-C (or `--count` messages), then close and log out.

use std::path::Path;
use std::process::ExitCode;

use ibauth::oauth1a::{self, Oauth1aClient};
use ibauth::ws::IbkrWebSocket;
use ibauth::{Config, Error, Oauth2Client};

use crate::render::{Out, config_fail, fail};

pub async fn run(
    out: Out,
    config: Option<&Path>,
    oauth1a_flag: bool,
    count: Option<u64>,
) -> ExitCode {
    let result = if crate::commands::wants_oauth1a(oauth1a_flag, config) {
        let config = match oauth1a::config::load(config) {
            Ok(c) => c,
            Err(e) => return config_fail(out, e),
        };
        async {
            let mut client = Oauth1aClient::new(config)?;
            client.connect().await?;
            let ws = client.connect_websocket().await?;
            stream(ws, count).await?;
            client.logout().await.map(|_| ())
        }
        .await
    } else {
        let config = match Config::load(config) {
            Ok(c) => c,
            Err(e) => return config_fail(out, e),
        };
        async {
            let mut client = Oauth2Client::new(config)?;
            client.connect().await?;
            let ws = client.connect_websocket().await?;
            stream(ws, count).await?;
            client.logout().await.map(|_| ())
        }
        .await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(out, &e),
    }
}

/// Prints messages until a signal, the server closing, or `count` messages.
async fn stream(mut ws: IbkrWebSocket, count: Option<u64>) -> Result<(), Error> {
    let mut seen = 0u64;
    let signal = ibauth::signal::shutdown_signal();
    tokio::pin!(signal);
    loop {
        if count.is_some_and(|c| seen >= c) {
            break;
        }
        tokio::select! {
            _ = &mut signal => break,
            message = ws.next_text() => match message {
                Some(Ok(text)) => {
                    println!("{}", text.trim());
                    seen += 1;
                }
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
    }
    ws.close().await;
    tracing::info!(messages = seen, "WebSocket closed");
    Ok(())
}
