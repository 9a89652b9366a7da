//! `ibauth sandbox`: a credential set on disk and the emulator serving until Ctrl-C.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use ibauth_sandbox::{
    CredentialSet, Lifetimes, NightlyReset, SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL,
    SANDBOX_PASSWORD, Sandbox,
};
use serde_json::json;

use crate::render::{Out, code};

pub struct Options<'a> {
    pub dir: &'a Path,
    pub listen: std::net::SocketAddr,
    pub tls: bool,
    pub access_token_ttl: u64,
    pub sso_session_ttl: u64,
    pub nightly_reset: Option<NightlyReset>,
    /// Serve the test-only admin API (`/__sandbox/…`).
    pub admin: bool,
    /// Tickles from two addresses this close together are concurrent ticklers.
    pub tickler_window: Duration,
}

pub async fn run(out: Out, opts: Options<'_>) -> ExitCode {
    match serve(out, opts).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(code::OTHER)
        }
    }
}

async fn serve(out: Out, opts: Options<'_>) -> Result<(), String> {
    let set = CredentialSet::load_or_create(opts.dir).map_err(|e| e.to_string())?;
    let lifetimes = Lifetimes {
        access_token: Duration::from_secs(opts.access_token_ttl),
        sso_session: Duration::from_secs(opts.sso_session_ttl),
        ..Lifetimes::default()
    };
    let mut builder = Sandbox::builder()
        .listen(opts.listen)
        .tls(opts.tls)
        .admin(opts.admin)
        .tickler_window(opts.tickler_window)
        .lifetimes(lifetimes)
        .register(set.registration())
        .register_consumer(set.consumer_registration())
        .register_consumer(set.third_party_registration())
        .user(SANDBOX_CREDENTIAL, SANDBOX_PASSWORD, true);
    if let Some(schedule) = opts.nightly_reset {
        builder = builder.nightly_reset(schedule);
    }
    let sandbox = builder.start().await.map_err(|e| e.to_string())?;
    let (token, secret) = sandbox
        .issue_access_token(SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL)
        .ok_or("the sandbox could not issue an OAuth 1.0a access token")?;
    let config = set
        .write_config_with(
            sandbox.base_url(),
            sandbox.ca_pem(),
            Some((&token, &secret)),
        )
        .map_err(|e| e.to_string())?;
    let third_party = set
        .write_third_party_config(sandbox.base_url(), sandbox.ca_pem())
        .map_err(|e| e.to_string())?;
    out.result(
        &format!(
            "ibauth sandbox serving {base}\n\
             credentials and config in {dir}; tokens go to {tokens}, not your own token file\n\n\
             try it:\n  ibauth --config {config} login            (OAuth 2.0)\n  ibauth --config {config} --oauth1a login  (OAuth 1.0a)\n  ibauth --config {third} --third-party --flow manual login\n      (OAuth 1.0a third party: log in on the page as {user} / {password})\n\n\
             Python ibauth: use {config} and set its domain to {host}{ca}\n\
             Ctrl-C stops the sandbox.",
            base = sandbox.base_url(),
            dir = opts.dir.display(),
            tokens = set.token_file().display(),
            config = config.display(),
            third = third_party.display(),
            user = SANDBOX_CREDENTIAL,
            password = SANDBOX_PASSWORD,
            host = sandbox.base_url().split("://").nth(1).unwrap_or_default(),
            ca = if sandbox.ca_pem().is_some() {
                format!(" and trust {}", opts.dir.join("ca.pem").display())
            } else {
                String::new()
            },
        ),
        json!({
            "base_url": sandbox.base_url(),
            "config": config,
            "third_party_config": third_party,
            "token_file": set.token_file(),
            "ca_file": sandbox.ca_pem().map(|_| opts.dir.join("ca.pem")),
        }),
    );
    ibauth::signal::shutdown_signal().await;
    let counters = sandbox.counters();
    sandbox.shutdown().await;
    tracing::info!(?counters, "sandbox stopped");
    Ok(())
}
