//! The shutdown signals a long-running session reacts to.

use std::future::Future;

/// Resolves on SIGINT (Ctrl-C) or SIGTERM; elsewhere than Unix, on Ctrl-C.
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// signal that arrives between the call and the first poll (a `select!` whose other branch was
/// ready) is caught, not left to the default action that kills the process.
///
/// Listening does not take the signals from the rest of the process: a handler installed
/// before (by the application or a library it embeds) is chained and still runs, and other
/// listeners in the process are woken too. Call it inside a Tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let streams = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        );
        async move {
            match streams {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
