//! The `ibauth` command line: a thin shell over the `ibauth` and `ibauth-sandbox` crates.

mod cli;
mod commands;
mod demo;
mod doctor;
mod fleet_cmd;
mod flow;
mod gateway_cmd;
mod jsonlog;
mod keepalive;
mod logbuf;
mod open;
mod render;
mod sandbox_cmd;
mod store_key;
mod ws_cmd;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::commands::Action;
use crate::render::Out;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The gateway logs a line a request: a background thread writes them in batches (a `write`
    // every few milliseconds instead of one a request); the guard writes the rest on the way out.
    let log_guard = matches!(cli.command, Command::Gateway { .. })
        .then(logbuf::start)
        .flatten();
    init_logging(&cli, log_guard.is_some());
    // One thread is plenty for a client that waits on the network most of the time, and each
    // extra worker costs resident memory in a long-running keepalive (docs/benchmarks.md).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(render::code::OTHER);
        }
    };
    let code = runtime.block_on(run(cli));
    drop(runtime);
    drop(log_guard);
    code
}

fn third_party(cli: &Cli) -> Option<open::ThirdParty> {
    cli.third_party.then(|| open::ThirdParty {
        flow: match cli.flow {
            cli::FlowArg::Auto => ibauth::oauth1a::login::Flow::Auto,
            cli::FlowArg::Browser => ibauth::oauth1a::login::Flow::Browser,
            cli::FlowArg::Manual => ibauth::oauth1a::login::Flow::Manual,
        },
        timeout: (cli.auth_timeout > 0).then(|| std::time::Duration::from_secs(cli.auth_timeout)),
        max_age: std::time::Duration::from_secs(cli.max_age),
    })
}

async fn run(cli: Cli) -> ExitCode {
    let stdout_tty = std::io::stdout().is_terminal();
    let stderr_tty = std::io::stderr().is_terminal();
    // These commands own stdout (an answer, a message stream, status lines): no step lines.
    let answer_only = matches!(
        cli.command,
        Command::Api { .. }
            | Command::Ws { .. }
            | Command::Keepalive { .. }
            | Command::Gateway { .. }
    );
    let out = Out {
        json: cli.json,
        steps: !matches!(cli.command, Command::Token { .. }) && !answer_only,
        color: color_wanted(cli.color, stdout_tty),
        // Progress lines are for people watching: only on a terminal, never in JSON mode.
        progress: stderr_tty && !cli.json && !cli.quiet,
        pretty: stdout_tty && !cli.json,
        answer_only,
    };
    let store = match cli.store.clone().map(|arg| arg.0).transpose() {
        Ok(store) => store,
        Err(e) => {
            // The reason only: the value may hold the store's password.
            eprintln!("error: --store: {e}");
            return ExitCode::from(2);
        }
    };
    let flags = open::Flags {
        config: cli.config.as_deref(),
        oauth1a: cli.oauth1a,
        third_party: third_party(&cli),
        store,
    };
    let action = match cli.command {
        Command::Demo {
            tls,
            tickles,
            oauth1a,
        } => return demo::run(out, tls, tickles, oauth1a).await,
        Command::Doctor { public_key } => {
            let opts = doctor::Options {
                config: flags.config,
                method: flags.method(),
                public_key: public_key.as_deref(),
                store: flags.store.clone(),
            };
            return doctor::run(out, opts).await;
        }
        Command::StoreKey {
            file,
            rotate,
            retire,
        } => {
            let action = match (file, rotate, retire) {
                (Some(file), _, _) => store_key::Action::Create(file),
                (_, Some(file), _) => store_key::Action::Rotate(file),
                (_, _, Some(file)) => store_key::Action::Retire(file),
                (None, None, None) => store_key::Action::Print,
            };
            return store_key::run(out, action);
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "ibauth", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Keepalive { interval, health } => {
            let interval = match interval.map(std::time::Duration::try_from_secs_f64) {
                None => None,
                Some(Ok(d)) if !d.is_zero() => Some(d),
                Some(_) => {
                    eprintln!("error: --interval must be a positive number of seconds");
                    return ExitCode::from(2);
                }
            };
            let opts = keepalive::Options {
                flags,
                interval,
                health,
            };
            return keepalive::run(out, opts).await;
        }
        Command::Ws { count } => return ws_cmd::run(out, flags, count).await,
        Command::Fleet {
            store_key_file,
            consumers,
            command,
        } => {
            let opts = fleet_cmd::Options {
                config: flags.config,
                store: flags.store.clone(),
                store_key_file,
                consumers,
                json: cli.json,
            };
            let action = match command {
                cli::FleetCommand::Enroll { file } => fleet_cmd::Action::Enroll { file },
                cli::FleetCommand::Retire { file } => fleet_cmd::Action::Retire { file },
                cli::FleetCommand::Stats => fleet_cmd::Action::Stats,
                cli::FleetCommand::Run {
                    workers,
                    batch,
                    concurrency,
                    tickle_every,
                    hold,
                    poll,
                    retry_after,
                    login_rate,
                    login_burst,
                    login_rate_per_process,
                    stats_every,
                } => fleet_cmd::Action::Run {
                    options: ibauth_fleet::runner::RunnerOptions {
                        workers,
                        batch,
                        concurrency,
                        tickle_every,
                        hold,
                        poll,
                        retry_after,
                        login_rate,
                        login_burst,
                        login_pacing: fleet_cmd::pacing(!login_rate_per_process),
                        ..Default::default()
                    },
                    stats_every,
                },
            };
            return fleet_cmd::run(opts, action).await;
        }
        Command::Gateway {
            listen,
            conf,
            plain,
            cert,
            key,
            state_dir,
            health,
            logout,
            max_wait,
            inactive,
        } => {
            let max_wait = match max_wait.map(std::time::Duration::try_from_secs_f64) {
                None => None,
                Some(Ok(d)) if !d.is_zero() && d <= std::time::Duration::from_secs(3600) => Some(d),
                Some(_) => {
                    eprintln!(
                        "error: --max-wait must be a positive number of seconds, at most 3600"
                    );
                    return ExitCode::from(2);
                }
            };
            let tls = match (plain, cert, key) {
                (true, _, _) => Some(ibauth_gateway::TlsMode::Plain),
                (false, Some(cert), Some(key)) => {
                    Some(ibauth_gateway::TlsMode::Files { cert, key })
                }
                _ => None,
            };
            let overrides = ibauth_gateway::Overrides {
                listen,
                tls,
                state_dir,
                health: health.map(|h| match h {
                    cli::Health::At(addr) => Some(addr),
                    cli::Health::Off => None,
                }),
                logout: logout.map(|l| match l {
                    cli::LogoutArg::Shared => ibauth_gateway::LogoutMode::Shared,
                    cli::LogoutArg::Pass => ibauth_gateway::LogoutMode::Pass,
                }),
                max_wait,
                start_active: inactive.then_some(false),
            };
            let opts = gateway_cmd::Options {
                flags,
                conf,
                overrides,
            };
            return gateway_cmd::run(out, opts).await;
        }
        Command::Sandbox {
            dir,
            listen,
            tls,
            access_token_ttl,
            sso_session_ttl,
            nightly_reset,
            no_admin,
            tickler_window,
        } => {
            let opts = sandbox_cmd::Options {
                dir: &dir,
                listen,
                tls,
                access_token_ttl,
                sso_session_ttl,
                nightly_reset,
                admin: !no_admin,
                tickler_window,
            };
            return sandbox_cmd::run(out, opts).await;
        }
        Command::Login { force } => Action::Login { force },
        Command::Status => Action::Status,
        Command::Tickle => Action::Tickle,
        Command::Token { method, path, curl } => Action::Token { method, path, curl },
        Command::Logout => Action::Logout,
        Command::Api {
            method,
            path,
            query,
            data,
        } => Action::Api {
            method,
            path,
            query,
            data,
        },
    };
    commands::run(out, flags, action).await
}

fn color_wanted(when: cli::Color, tty: bool) -> bool {
    match when {
        cli::Color::Always => true,
        cli::Color::Never => false,
        cli::Color::Auto => tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    }
}

fn init_logging(cli: &Cli, batched: bool) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{Layer as _, filter::FilterExt as _};

    // The gateway is a service: its access log and its notes are the point, so it logs at info
    // by default (or IBEAM_LOG_LEVEL, for a compose file moved over from IBeam).
    let gateway = matches!(cli.command, Command::Gateway { .. });
    let level = match (cli.quiet, cli.verbose, gateway) {
        (true, _, _) => "error",
        (false, 0, false) => "warn",
        (false, 1, false) => "info",
        (false, 2, false) => "debug",
        (false, _, false) => "trace",
        (false, 0, true) => std::env::var(ibauth_gateway::env::LOG_LEVEL)
            .ok()
            .and_then(|v| ibauth_gateway::env::log_level(&v))
            .map_or("info", level_name),
        (false, 1, true) => "debug",
        (false, _, true) => "trace",
    };
    let asked = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // tungstenite logs every WebSocket frame's payload at TRACE: IBKR's messages name the user
    // (the credential) and carry account data, so its targets are capped at DEBUG, whatever the
    // flags or RUST_LOG say. Tokens never depend on this cap: the library writes the handshake
    // itself and never hands tungstenite the token, cookie or Authorization (see ibauth::ws).
    // A cap, not a directive: an event must pass both filters, so these targets are only ever
    // lowered, never raised above the level asked for (`-q` keeps them quiet).
    let cap = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("tungstenite", LevelFilter::DEBUG)
        .with_target("tokio_tungstenite", LevelFilter::DEBUG);
    // `ibauth --json gateway`: one JSON object per log line (the access log's fields as keys),
    // for log collectors. Other commands keep text logs: their --json is about stdout.
    let sink = if batched {
        logbuf::Sink::Batched
    } else {
        logbuf::Sink::Stderr
    };
    let layer = if gateway && cli.json {
        tracing_subscriber::fmt::layer()
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(jsonlog::JsonLine)
            .with_writer(sink)
            .with_filter(asked.and(cap))
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(sink)
            .with_ansi(color_wanted(cli.color, std::io::stderr().is_terminal()))
            // The gateway's lines say whose they are (ibauth_gateway::access, ::config).
            .with_target(gateway || cli.verbose >= 2)
            .with_filter(asked.and(cap))
            .boxed()
    };
    tracing_subscriber::registry().with(layer).init();
}

fn level_name(level: tracing::Level) -> &'static str {
    match level {
        tracing::Level::TRACE => "trace",
        tracing::Level::DEBUG => "debug",
        tracing::Level::INFO => "info",
        tracing::Level::WARN => "warn",
        tracing::Level::ERROR => "error",
    }
}
