//! `ibauth keepalive`: run the session manager until SIGINT/SIGTERM, one status line per
//! tickle, an optional health server answering from the cached state, and one logout at the end.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use ibauth::manager::{Client, Policy, SessionManager, SessionState, Status};
use ibauth::oauth1a::{self, Oauth1aClient};
use ibauth::store::{FileStore, TokenStore, default_token_file};
use ibauth::{Config, Oauth2Client};
use serde_json::json;
use tokio::sync::watch;

use crate::render::{Out, code, config_fail, fail};

/// The token file from the config (`token_file`, IBAUTH_TOKEN_FILE) or the platform default;
/// without either (no home folder), tokens live only as long as the process.
pub fn token_store(policy: &Policy) -> Option<Arc<dyn TokenStore>> {
    match policy.token_file.clone().or_else(default_token_file) {
        Some(path) => Some(Arc::new(FileStore::new(path))),
        None => {
            tracing::warn!("no token_file and no home folder: tokens are not kept between runs");
            None
        }
    }
}

pub struct Options<'a> {
    pub config: Option<&'a Path>,
    pub oauth1a: bool,
    pub interval: Option<Duration>,
    pub health: Option<SocketAddr>,
}

pub async fn run(out: Out, opts: Options<'_>) -> ExitCode {
    let mut policy = match Policy::load(opts.config) {
        Ok(policy) => policy,
        Err(e) => return config_fail(out, e),
    };
    if let Some(interval) = opts.interval {
        policy.tickle_interval = interval;
        policy.jitter = (interval / 10).min(Duration::from_secs(5));
    }
    let store = token_store(&policy);
    if crate::commands::wants_oauth1a(opts.oauth1a, opts.config) {
        match oauth1a::config::load(opts.config) {
            Ok(config) => match Oauth1aClient::new(config) {
                Ok(client) => keep(out, client, policy, store, opts.health).await,
                Err(e) => fail(out, &e),
            },
            Err(e) => config_fail(out, e),
        }
    } else {
        match Config::load(opts.config) {
            Ok(config) => match Oauth2Client::new(config) {
                Ok(client) => keep(out, client, policy, store, opts.health).await,
                Err(e) => fail(out, &e),
            },
            Err(e) => config_fail(out, e),
        }
    }
}

fn state_name(state: &SessionState) -> &'static str {
    match state {
        SessionState::Connecting => "connecting",
        SessionState::Authenticated => "authenticated",
        SessionState::Competing => "competing",
        SessionState::Disconnected => "disconnected",
        SessionState::Reauthenticating => "reauthenticating",
        SessionState::Failed(_) => "failed",
        SessionState::LoggedOut => "logged_out",
    }
}

fn status_json(s: &Status) -> serde_json::Value {
    json!({
        "state": state_name(&s.state),
        "reason": match &s.state { SessionState::Failed(r) => Some(r.message.clone()), _ => None },
        "session": s.session.as_deref().map(ibauth::short_id),
        "api_base": s.api_base,
        "tickles": s.tickles,
        "logins": s.logins,
        "renewals": s.renewals,
        "recoveries": s.recoveries,
        "transient_failures": s.transient_failures,
        "rtt_ms": s.last_rtt.map(|d| (d.as_secs_f64() * 1e6).round() / 1000.0),
        "last_tickle": s.last_tickle
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
        "tokens": s.tokens.iter().map(|t| json!({
            "kind": t.kind.name(),
            "obtained_at": t.obtained_at,
            "expires_at": t.expires_at,
        })).collect::<Vec<_>>(),
    })
}

async fn keep<C: Client + 'static>(
    out: Out,
    client: C,
    policy: Policy,
    store: Option<Arc<dyn TokenStore>>,
    health: Option<SocketAddr>,
) -> ExitCode {
    let mut manager = SessionManager::new(client, policy);
    if let Some(store) = store {
        manager = manager.with_store(store);
    }
    let mut rx = manager.watch();
    if let Some(addr) = health {
        match serve_health(addr, manager.watch()).await {
            Ok(bound) => out.result(
                &format!("health server on http://{bound} (/livez, /readyz, /status)"),
                json!({ "health": bound.to_string() }),
            ),
            Err(e) => {
                eprintln!("error: cannot serve health checks on {addr}: {e}");
                return ExitCode::from(code::OTHER);
            }
        }
    }
    let running = manager.spawn();
    let signal = ibauth::signal::shutdown_signal();
    tokio::pin!(signal);
    let mut last = (rx.borrow().state.clone(), rx.borrow().tickles);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let status = rx.borrow().clone();
                if (status.state.clone(), status.tickles) != last {
                    last = (status.state.clone(), status.tickles);
                    print_status(out, &status);
                }
                if matches!(status.state, SessionState::Failed(_)) {
                    break;
                }
            }
        }
    }
    let failed = matches!(rx.borrow().state, SessionState::Failed(_));
    running.shutdown().await;
    if let SessionState::LoggedOut = rx.borrow().state {
        print_status(out, &rx.borrow().clone());
    }
    if failed {
        ExitCode::from(code::NOT_AUTHENTICATED)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_status(out: Out, s: &Status) {
    let text = format!(
        "{:<16} tickles {:>5}  logins {}  session {}  rtt {}",
        state_name(&s.state),
        s.tickles,
        s.logins,
        s.session
            .as_deref()
            .map(ibauth::short_id)
            .unwrap_or_else(|| "-".into()),
        s.last_rtt
            .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
            .unwrap_or_else(|| "-".into()),
    );
    out.result(&text, status_json(s));
}

/// `/livez` (the process answers), `/readyz` (200 only when authenticated) and `/status`, all
/// from the cached state: a probe never causes a tickle.
async fn serve_health(
    addr: SocketAddr,
    rx: watch::Receiver<Status>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let ready = rx.clone();
    let status = rx.clone();
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let authenticated = ready.borrow().state == SessionState::Authenticated;
                async move {
                    if authenticated {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not authenticated")
                    }
                }
            }),
        )
        .route(
            "/status",
            get(move || {
                let body = status_json(&status.borrow());
                async move { axum::Json(body) }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(bound)
}
