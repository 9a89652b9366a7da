//! `ibauth gateway`: the `ibauth-gateway` crate behind the command line's flags, IBeam's
//! variables and the gateway's conf.yaml (put together by `ibauth_gateway::Setup`), serving
//! until SIGINT/SIGTERM, then draining and logging out once.

use std::path::PathBuf;
use std::process::ExitCode;

use ibauth::session::SessionState;
use ibauth_gateway::conf::CpConf;
use ibauth_gateway::env::IbeamEnv;
use ibauth_gateway::{Gateway, GatewayError, Overrides, Running, Setup, TlsMode};
use serde_json::json;

use crate::open::{Flags, open_config};
use crate::render::{Out, code, fail};

pub struct Options<'a> {
    pub flags: Flags<'a>,
    pub conf: Option<PathBuf>,
    pub overrides: Overrides,
}

/// A configuration problem: said once, exit 3.
fn config_error(out: Out, message: &str) -> ExitCode {
    if out.json {
        println!(
            "{}",
            crate::render::json_line(&json!({ "error": message, "exit_code": code::CONFIG }))
        );
    } else {
        out.error_line(message);
    }
    ExitCode::from(code::CONFIG)
}

pub async fn run(out: Out, opts: Options<'_>) -> ExitCode {
    // Before anything slow: a SIGTERM while starting must not kill the process mid-login
    // (the handler is installed here, not when first polled).
    let signal = ibauth::signal::shutdown_signal();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let conf = match opts.conf.as_deref().map(CpConf::load).transpose() {
        Ok(conf) => conf,
        Err(e) => return config_error(out, &e.to_string()),
    };
    let ibeam = match IbeamEnv::from_vars(&env) {
        Ok(ibeam) => ibeam,
        Err(e) => return config_error(out, &e.to_string()),
    };
    let state_dir = match opts
        .overrides
        .state_dir
        .clone()
        .or_else(ibauth_gateway::setup::default_state_dir)
    {
        Some(dir) => dir,
        None => {
            return config_error(
                out,
                "no home folder to keep the gateway's state in: give --state-dir DIR",
            );
        }
    };
    let mut setup = Setup::resolve(opts.overrides, &ibeam, conf.as_ref(), state_dir);
    let method = opts.flags.method();
    let config = match setup.auth_config(opts.flags.config, method, &env) {
        Ok(config) => config,
        Err(e) => return fail(out, &e.into()),
    };
    let policy = match setup.policy(opts.flags.config, &env) {
        Ok(policy) => policy,
        Err(e) => return fail(out, &e.into()),
    };
    // A fleet's store replaces the token file: the announcement says which one is used.
    let store = opts.flags.store.clone().or_else(|| policy.store.clone());
    let token_file = policy.token_file.clone().filter(|_| store.is_none());
    for note in &setup.notes {
        tracing::info!(target: "ibauth_gateway::config", "{note}");
    }
    let session = match open_config(out, &opts.flags, config, policy).await {
        Ok(opened) => opened.session,
        Err(e) => return fail(out, &e),
    };
    let options = setup.options.clone();
    let running = match Gateway::new(session, options).start().await {
        Ok(running) => running,
        Err(GatewayError::Session(e)) => return fail(out, &e),
        Err(
            e @ (GatewayError::Tls(_) | GatewayError::File { .. } | GatewayError::Config { .. }),
        ) => {
            return config_error(out, &e.to_string());
        }
        Err(e) => {
            out.error_line(&e.to_string());
            return ExitCode::from(code::OTHER);
        }
    };
    let tokens = Tokens {
        file: token_file.as_deref(),
        store: store.map(|s| s.redacted()),
    };
    announce(out, &setup, &running, &tokens);
    let watcher = tokio::spawn(report_failure(running.session().watch()));
    signal.await;
    tracing::info!("signal: draining in-flight requests, then logging out once");
    running.shutdown().await;
    watcher.abort();
    tracing::info!("gateway stopped");
    ExitCode::SUCCESS
}

/// Where clients connect, on stdout: a line for people, or a JSON object (scripts and tests
/// read the ports given as 0 from it).
/// Where the session's tokens are kept: the token file, or a fleet's shared store.
struct Tokens<'a> {
    file: Option<&'a std::path::Path>,
    /// The store's URL, its password hidden.
    store: Option<String>,
}

fn announce(out: Out, setup: &Setup, running: &Running, tokens: &Tokens<'_>) {
    let scheme = match setup.options.tls {
        TlsMode::Plain => "http",
        _ => "https",
    };
    let urls: Vec<String> = running
        .addrs()
        .iter()
        .map(|a| format!("{scheme}://{a}"))
        .collect();
    let certificate = match &setup.options.tls {
        TlsMode::SelfSigned { dir } => Some(dir.join("cert.pem")),
        TlsMode::Files { cert, .. } => Some(cert.clone()),
        TlsMode::Plain => None,
    };
    let health = running.health_addr();
    let text = format!(
        "ibauth gateway on {}{}{}{}\n  health: {}\n  allowed: {}\nCtrl-C (or SIGTERM) drains in-flight requests, logs out once and stops{}.",
        urls.join(", "),
        if running
            .addrs()
            .iter()
            .any(|a| a.ip().is_unspecified() && a.is_ipv6())
        {
            " (IPv4 and IPv6)"
        } else {
            ""
        },
        certificate
            .as_ref()
            .map(|c| format!("\n  certificate: {}", c.display()))
            .unwrap_or_default(),
        tokens
            .store
            .as_ref()
            .map(|s| format!("\n  fleet store: {s} (one login for every member)"))
            .unwrap_or_default(),
        health.map_or_else(
            || "off".to_owned(),
            |h| format!("http://{h} (/livez, /readyz, /status, /activate, /deactivate)")
        ),
        setup.options.access.allowed().join(", "),
        if tokens.store.is_some() {
            " (the last member of the fleet to stop logs out; the others hand over)"
        } else {
            ""
        },
    );
    out.result(
        &text,
        json!({
            "gateway": urls,
            "listen": running.addrs().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "health": health.map(|h| h.to_string()),
            "certificate": certificate,
            "state_dir": setup.state_dir,
            "token_file": tokens.file,
            "store": tokens.store,
            "allowed": setup.options.access.allowed(),
            "active": setup.options.start_active,
        }),
    );
}

/// Says once, loudly, when the session gives up (too many rejected logins), and how to retry:
/// the gateway stays up and answers 503, as IBeam stays up after `IBEAM_MAX_FAILED_AUTH`.
async fn report_failure(mut rx: tokio::sync::watch::Receiver<ibauth::session::Status>) {
    while rx.changed().await.is_ok() {
        let state = rx.borrow().state.clone();
        if let SessionState::Failed(reason) = state {
            tracing::error!(
                reason = %reason.message,
                "the session gave up: clients are answered 503 until it is fixed; then POST /activate on the health port (or restart)"
            );
            if rx
                .wait_for(|s| !matches!(s.state, SessionState::Failed(_)))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
