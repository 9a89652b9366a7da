//! `ibauth keepalive`: run the session manager until SIGINT/SIGTERM, one status line per
//! tickle, an optional health server answering from the cached state, and one logout at the end.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use ibauth::policy::Policy;
use ibauth::session::{Role, SessionState, Status};
use serde_json::json;
use tokio::sync::watch;

use crate::open::{Flags, open_with_policy};
use crate::render::{Out, code, fail};

pub struct Options<'a> {
    pub flags: Flags<'a>,
    pub interval: Option<Duration>,
    pub health: Option<SocketAddr>,
}

pub async fn run(out: Out, opts: Options<'_>) -> ExitCode {
    let mut policy = match Policy::load(opts.flags.config) {
        Ok(policy) => policy,
        Err(e) => return fail(out, &e.into()),
    };
    if let Some(interval) = opts.interval {
        policy.tickle_interval = interval;
        policy.jitter = (interval / 10).min(Duration::from_secs(5));
    }
    let session = match open_with_policy(out, &opts.flags, policy).await {
        Ok(opened) => opened.session,
        Err(e) => return fail(out, &e),
    };
    let mut rx = session.watch();
    if let Some(addr) = opts.health {
        match serve_health(addr, session.watch()).await {
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
    let running = match session.keep_alive() {
        Ok(running) => running,
        Err(e) => return fail(out, &e),
    };
    let signal = ibauth::signal::shutdown_signal();
    tokio::pin!(signal);
    let key = |s: &Status| (s.state.clone(), s.tickles, s.detail.clone(), s.role.clone());
    let mut last = key(&rx.borrow());
    loop {
        tokio::select! {
            _ = &mut signal => break,
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let status = rx.borrow().clone();
                if key(&status) != last {
                    last = key(&status);
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

fn status_json(s: &Status) -> serde_json::Value {
    json!({
        "state": s.state.name(),
        "role": s.role.as_ref().map(role_name),
        "generation": match s.role { Some(Role::Leader { generation }) => Some(generation), _ => None },
        "reason": match &s.state { SessionState::Failed(r) => Some(r.message.clone()), _ => None },
        "session": s.session.as_deref().map(ibauth::short_id),
        "api_base": s.api_base,
        "tickles": s.tickles,
        "logins": s.logins,
        "renewals": s.renewals,
        "recoveries": s.recoveries,
        "transient_failures": s.transient_failures,
        "detail": s.detail,
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

fn print_status(out: Out, s: &Status) {
    let text = format!(
        "{:<16} tickles {:>5}  logins {}  session {}  rtt {}",
        s.state.name(),
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
    let text = match &s.role {
        Some(Role::Leader { generation }) => format!("{text}  leader (generation {generation})"),
        Some(Role::Follower) => format!("{text}  follower"),
        None => text,
    };
    let text = match &s.detail {
        Some(detail) => format!("{text}\n  {detail}"),
        None => text,
    };
    out.result(&text, status_json(s));
}

/// A fleet member's part: `leader` or `follower`.
fn role_name(role: &Role) -> &'static str {
    match role {
        Role::Leader { .. } => "leader",
        Role::Follower => "follower",
    }
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
