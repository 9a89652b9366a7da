//! `ibauth ws`: the authenticated WebSocket of the stored session (logging in if needed), each
//! message printed as one line of JSON until Ctrl-C (or `--count` messages). A session it
//! opened itself it logs out of; one it found (another process's) it leaves running.

use std::process::ExitCode;

use ibauth::Error;
use ibauth::session::Source;
use ibauth::ws::IbkrWebSocket;

use crate::open::{Flags, open};
use crate::render::{Out, fail};

pub async fn run(out: Out, flags: Flags<'_>, count: Option<u64>) -> ExitCode {
    let session = match open(out, &flags).await {
        Ok(opened) => opened.session,
        Err(e) => return fail(out, &e),
    };
    let result = async {
        let connection = session.connect().await?;
        let ws = session.websocket().await?;
        stream(out, ws, count).await?;
        if connection.source == Source::Refreshed {
            session.logout().await?;
        }
        Ok::<_, Error>(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(out, &e),
    }
}

/// Prints messages until a signal, the server closing, or `count` messages.
async fn stream(out: Out, mut ws: IbkrWebSocket, count: Option<u64>) -> Result<(), Error> {
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
                    out.answer(text.trim());
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
