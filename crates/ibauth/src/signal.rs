//! The shutdown signals a long-running session reacts to.

/// Resolves on SIGINT (Ctrl-C) or SIGTERM; elsewhere than Unix, on Ctrl-C.
///
/// Listening does not take the signals from the rest of the process: a handler installed
/// before (by the application or a library it embeds) is chained and still runs, and other
/// listeners in the process are woken too.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
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
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
