//! What every request handler shares: the session, the settings, whether the gateway is active,
//! and the keep-alive it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ibauth::Session;
use ibauth::session::{KeepAlive, SessionState};
use serde_json::json;

use crate::options::GatewayOptions;
use crate::proxy::Flights;

pub(crate) type Shared = Arc<State>;

pub(crate) struct State {
    pub session: Session,
    pub options: GatewayOptions,
    /// Off: dormant (logged out, every client request answered 503) until `/activate`.
    pub active: AtomicBool,
    /// The same, for tasks that must stop when the gateway goes dormant (bridged WebSockets:
    /// an upstream socket reconnecting would log the session in again).
    pub activity: tokio::sync::watch::Sender<bool>,
    pub keepalive: tokio::sync::Mutex<Option<KeepAlive>>,
    pub flights: Flights,
    /// The session's status, read in place: every request checks it, and
    /// [`Session::status`] would clone it whole (the last tickle's JSON included).
    status: tokio::sync::watch::Receiver<ibauth::session::Status>,
}

impl State {
    pub fn new(session: Session, options: GatewayOptions) -> Self {
        Self {
            active: AtomicBool::new(options.start_active),
            status: session.watch(),
            activity: tokio::sync::watch::Sender::new(options.start_active),
            session,
            options,
            keepalive: tokio::sync::Mutex::new(None),
            flights: Flights::default(),
        }
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Starts the keep-alive (logging in) and serves; nothing if already active and running.
    pub async fn activate(&self) -> Result<(), ibauth::Error> {
        let mut keepalive = self.keepalive.lock().await;
        // A keep-alive that gave up (too many rejected logins: IBEAM_MAX_FAILED_AUTH), or whose
        // session a client logged out (`--logout pass`), has stopped; `/activate` is how an
        // operator asks for another login, as with IBeam.
        if matches!(
            self.session.status().state,
            SessionState::Failed(_) | SessionState::LoggedOut
        ) && let Some(stopped) = keepalive.take()
        {
            stopped.shutdown().await;
        }
        if keepalive.is_none() {
            *keepalive = Some(self.session.keep_alive()?);
        }
        self.active.store(true, Ordering::SeqCst);
        self.activity.send_replace(true);
        Ok(())
    }

    /// Stops serving — bridged WebSockets are closed first, so none reconnects upstream (and
    /// logs in) behind the logout — and the keep-alive, with one logout.
    pub async fn deactivate(&self) {
        self.active.store(false, Ordering::SeqCst);
        self.activity.send_replace(false);
        if let Some(running) = self.keepalive.lock().await.take() {
            running.shutdown().await;
        }
    }

    /// Whether clients can be served now; otherwise the answer that says why (503, JSON).
    pub fn unavailable(&self) -> Option<Response> {
        if !self.is_active() {
            return Some(unavailable(
                "the gateway is dormant (deactivated): POST /activate on its health port to log in",
                None,
            ));
        }
        let status = self.status.borrow();
        match &status.state {
            SessionState::Authenticated => None,
            state => Some(unavailable(
                &format!(
                    "the session is not authenticated ({}){}",
                    state.name(),
                    match state {
                        SessionState::Failed(reason) => format!(": {}", reason.message),
                        _ => status
                            .detail
                            .as_deref()
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default(),
                    }
                ),
                Some(state.name()),
            )),
        }
    }
}

/// Resolves once the gateway is dormant (at once if it is already).
pub(crate) async fn dormant(activity: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = activity.wait_for(|active| !*active).await;
}

/// 503 with a JSON reason.
pub(crate) fn unavailable(reason: &str, state: Option<&str>) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({ "error": reason, "state": state, "gateway": "ibauth" })),
    )
        .into_response()
}
