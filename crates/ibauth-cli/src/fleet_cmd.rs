//! `ibauth fleet`: many third-party sessions kept alive from a shared PostgreSQL store — a
//! thin shell over `ibauth_fleet::runner::Runner`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ibauth::coord::{CoordError, Keyring, StoreUrl, WorkQueue};
use ibauth::policy::Policy;
use ibauth_fleet::runner::{FleetError, LoginPacing, Runner, RunnerOptions, read_grants};

use crate::render::code;

/// The largest grants file read (bytes): ~400 bytes a grant, so about 150 000 grants.
const MAX_GRANTS_FILE: u64 = 64 * 1024 * 1024;

/// What `ibauth fleet` was asked.
pub enum Action {
    Enroll {
        file: PathBuf,
    },
    Retire {
        file: PathBuf,
    },
    Run {
        options: RunnerOptions,
        stats_every: Option<Duration>,
    },
    Stats,
}

pub struct Options<'a> {
    pub config: Option<&'a Path>,
    pub store: Option<StoreUrl>,
    pub store_key_file: Option<PathBuf>,
    /// `--consumer NAME=CONFIG`.
    pub consumers: Vec<(String, PathBuf)>,
    pub json: bool,
}

fn fail(what: &str, e: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("error: {what}: {e}");
    ExitCode::from(code)
}

fn store_code(e: &CoordError) -> u8 {
    if e.is_transient() {
        code::NETWORK
    } else {
        code::CONFIG
    }
}

fn fleet_code(e: &FleetError) -> u8 {
    match e {
        FleetError::Store(e) => store_code(e),
        FleetError::Grants { .. } => 2,
        _ => code::CONFIG,
    }
}

async fn open_queue(opts: &Options<'_>) -> Result<Arc<dyn WorkQueue>, ExitCode> {
    let policy =
        Policy::load(opts.config).map_err(|e| fail("reading the settings", e, code::CONFIG))?;
    let url = match (&opts.store, &policy.store) {
        (Some(url), _) | (None, Some(url)) => url.clone(),
        (None, None) => {
            return Err(fail(
                "no store",
                "pass --store postgres://… or set `store:` in the config file (IBAUTH_STORE)",
                code::CONFIG,
            ));
        }
    };
    ibauth_fleet::connect_queue(&url).await.map_err(|e| {
        let code = store_code(&e);
        fail("opening the store", e, code)
    })
}

fn keyring(opts: &Options<'_>) -> Result<Keyring, ExitCode> {
    let policy =
        Policy::load(opts.config).map_err(|e| fail("reading the settings", e, code::CONFIG))?;
    let file = opts
        .store_key_file
        .as_deref()
        .or(policy.store_key_file.as_deref());
    Keyring::from_env(file).map_err(|e| {
        fail(
            "the store key",
            format!("{e} (pass --store-key-file, or set IBAUTH_STORE_KEY_FILE)"),
            code::CONFIG,
        )
    })
}

fn runner(
    opts: &Options<'_>,
    queue: Arc<dyn WorkQueue>,
    options: RunnerOptions,
) -> Result<Runner, ExitCode> {
    let keyring = keyring(opts)?;
    let consumer = ibauth::oauth1a::config::load_third_party(opts.config).map_err(|e| {
        fail(
            "the consumer (the `oauth1a:` section without an access token)",
            e,
            code::CONFIG,
        )
    })?;
    let mut named = Vec::with_capacity(opts.consumers.len());
    for (name, path) in &opts.consumers {
        // The file alone: IBAUTH_OAUTH1A_* / IBIND_* variables are the default consumer's.
        let no_env: &[(&str, &str)] = &[];
        let config = ibauth::oauth1a::config::load_third_party_with_env(Some(path), no_env)
            .map_err(|e| {
                fail(
                    &format!(
                        "consumer {name} ({}: its `oauth1a:` section)",
                        path.display()
                    ),
                    e,
                    code::CONFIG,
                )
            })?;
        named.push((name.clone(), config.template().clone()));
    }
    Runner::with_consumers(queue, keyring, consumer.template().clone(), named, options).map_err(
        |e| {
            let code = fleet_code(&e);
            fail("starting the runner", e, code)
        },
    )
}

pub async fn run(opts: Options<'_>, action: Action) -> ExitCode {
    match run_inner(&opts, action).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

async fn run_inner(opts: &Options<'_>, action: Action) -> Result<(), ExitCode> {
    match action {
        Action::Enroll { file } => {
            let text = read_bounded(&file)
                .map_err(|e| fail(&format!("reading {}", file.display()), e, code::CONFIG))?;
            let grants = read_grants(&text).map_err(|e| {
                let code = fleet_code(&e);
                fail(&format!("{}", file.display()), e, code)
            })?;
            let queue = open_queue(opts).await?;
            let runner = runner(opts, queue, RunnerOptions::default())?;
            let enrolled = runner.enroll(&grants).await.map_err(|e| {
                let code = fleet_code(&e);
                fail("enrolling", e, code)
            })?;
            if opts.json {
                println!("{}", serde_json::to_string(&enrolled).unwrap_or_default());
            } else {
                println!(
                    "enrolled {} grants: {} stored, {} kept as they were, {} busy (held by a worker); {} newly queued",
                    grants.len(),
                    enrolled.stored,
                    enrolled.kept,
                    enrolled.busy,
                    enrolled.queued
                );
            }
            Ok(())
        }
        Action::Retire { file } => {
            let text = read_bounded(&file)
                .map_err(|e| fail(&format!("reading {}", file.display()), e, code::CONFIG))?;
            let grants = read_grants(&text).map_err(|e| {
                let code = fleet_code(&e);
                fail(&format!("{}", file.display()), e, code)
            })?;
            let queue = open_queue(opts).await?;
            let runner = runner(opts, queue, RunnerOptions::default())?;
            let retired = runner.retire(&grants).await.map_err(|e| {
                let code = fleet_code(&e);
                fail("retiring", e, code)
            })?;
            if opts.json {
                println!("{}", serde_json::to_string(&retired).unwrap_or_default());
            } else {
                println!(
                    "retired {} of {} grants ({} were not stored); {} busy (held by a worker): run again after the hold",
                    retired.retired,
                    grants.len(),
                    retired.unknown,
                    retired.busy
                );
            }
            Ok(())
        }
        Action::Run {
            options,
            stats_every,
        } => {
            let queue = open_queue(opts).await?;
            let runner = runner(opts, queue, options)?;
            let json = opts.json;
            let print = move |runner: &Runner, last: bool| {
                let stats = runner.stats();
                if json {
                    let mut value = serde_json::to_value(&stats).unwrap_or_default();
                    if let Some(map) = value.as_object_mut() {
                        map.insert("final".into(), last.into());
                        map.insert("pid".into(), std::process::id().into());
                    }
                    println!("{value}");
                } else {
                    println!(
                        "{}tickles {}, logins {} ({} put off), failures {}, fenced {}, deferred {}, handed back for another consumer {}, store calls {}, late p50/p99/max {}/{}/{} ms",
                        if last { "final: " } else { "" },
                        stats.tickles,
                        stats.logins,
                        stats.logins_deferred,
                        stats.failures,
                        stats.fenced,
                        stats.deferred,
                        stats.foreign,
                        stats.store_calls,
                        stats.late_p50_ms,
                        stats.late_p99_ms,
                        stats.late_max_ms
                    );
                }
            };
            let reporter = stats_every.map(|every| {
                let runner = runner.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        print(&runner, false);
                    }
                })
            });
            let result = runner.run(ibauth::signal::shutdown_signal()).await;
            if let Some(r) = reporter {
                r.abort();
            }
            print(&runner, true);
            result.map_err(|e| {
                let code = fleet_code(&e);
                fail("running", e, code)
            })
        }
        Action::Stats => {
            let queue = open_queue(opts).await?;
            let stats = queue.queue_stats().await.map_err(|e| {
                let code = store_code(&e);
                fail("reading the queue", e, code)
            })?;
            if opts.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "queued": stats.queued,
                        "due": stats.due,
                        "claimed": stats.claimed,
                        "most_late_ms": stats.most_late.as_millis() as u64,
                    })
                );
            } else {
                println!(
                    "{} sessions queued: {} due and waiting, {} being worked on; the most overdue waits {:.1} s",
                    stats.queued,
                    stats.due,
                    stats.claimed,
                    stats.most_late.as_secs_f64()
                );
            }
            Ok(())
        }
    }
}

fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(MAX_GRANTS_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_GRANTS_FILE {
        return Err(format!(
            "larger than {} MiB: split it and enroll each part",
            MAX_GRANTS_FILE / (1024 * 1024)
        ));
    }
    Ok(text)
}

/// `--login-pacing`.
pub fn pacing(fleet_wide: bool) -> LoginPacing {
    if fleet_wide {
        LoginPacing::Fleet
    } else {
        LoginPacing::PerProcess
    }
}
