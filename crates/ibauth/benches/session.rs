//! `cargo bench -p ibauth --bench session`: what a call through [`ibauth::Session`] costs on top
//! of the HTTP request it makes, and how many calls per second one session carries.
//!
//! Everything runs against an in-process sandbox over plain HTTP on loopback, on its own
//! runtime thread, with its pacing enforcement off (except where the paced throughput checks
//! that IBKR's limits are kept).
//!
//! 1. **Per-call overhead at 1,000 calls/s.** `GET iserver/accounts`, one call per millisecond
//!    slot (sleeping until the next slot), by OAuth 2.0 and by OAuth 1.0a, through:
//!    - plain reqwest — the session's own `reqwest::Client`, the `Authorization` header
//!      precomputed (OAuth 2.0) or signed afresh by an `HmacAuthorizer` (OAuth 1.0a: the
//!      sandbox refuses a reused nonce, so the floor signs too) — the floor;
//!    - `session.get(..)` with pacing off, with IBKR's rules in-process (the global limit
//!      raised so nothing waits), and with the same rules shared through the ledger beside a
//!      token file — at 1,000 calls/s that ledger holds ~1,100 send times for the global
//!      budget, so a variant with a 50 ms window shows the ledger at the ~50 times IBKR's
//!      real 50/s limit leaves in it.
//!
//!    The same variants also run back to back (one task, no sleeping), where caches stay
//!    warm and the figures show a call's own work. Latency is per call; CPU is the client
//!    thread's (`CLOCK_THREAD_CPUTIME_ID`): the client runs on a current-thread runtime, so
//!    its HTTP connection tasks run there too, while the sandbox's work is on other threads.
//! 2. **Throughput of 50 tasks through one session** (cloned handles on a multi-thread
//!    runtime): unpaced, and paced by IBKR's real limits with the sandbox enforcing them.
//!
//! Overheads are paired by round (each variant minus the floor in the same round; the median
//! over rounds), so a shared machine's drift cancels out. `IBAUTH_BENCH_ROUNDS` (default 40)
//! sets the number of 250-call rounds per variant. For a profiler, `IBAUTH_BENCH_ONLY=floor|
//! off|inproc|ledger|ledger50` and `IBAUTH_BENCH_AUTH=oauth2|oauth1a` run just that variant
//! and method (and no throughput runs).

use std::error::Error;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ibauth::oauth1a::{DhGroup, HmacAuthorizer, Oauth1aClient, Oauth1aConfig, RFC3526_PRIME_2048};
use ibauth::pacing::{Limit, PacingRules};
use ibauth::policy::Policy;
use ibauth::secrecy::SecretString;
use ibauth::{AuthConfig, Authorizer, Config, DecryptionKey, Method, Session, SigningKey, Step};
use ibauth_sandbox::{ClientRegistration, ConsumerRegistration, PacingLimits, Sandbox};
use reqwest::header::{AUTHORIZATION, HeaderValue};
use url::Url;

type BoxError = Box<dyn Error>;

const CLIENT_ID: &str = "BENCHCLIENT";
const KEY_ID: &str = "main";
const CONSUMER: &str = "BENCHCONS";
const ENDPOINT: &str = "iserver/accounts";
/// One call per slot: 1,000 calls/s.
const SLOT: Duration = Duration::from_millis(1);
/// Short rounds, many of them: variants alternate every quarter second.
const CALLS_PER_ROUND: usize = 250;
const TASKS: usize = 50;

/// Every user gets its own brokerage session, so no two sessions compete for one.
const USERS: &[&str] = &[
    "floor",
    "off",
    "inproc",
    "ledger",
    "ledger50",
    "tp-unpaced",
    "tp-paced",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    Oauth2,
    Oauth1a,
}

impl Auth {
    fn label(self) -> &'static str {
        match self {
            Auth::Oauth2 => "OAuth 2.0",
            Auth::Oauth1a => "OAuth 1.0a",
        }
    }

    /// The sandbox user: one per method and purpose.
    fn user(self, purpose: &str) -> String {
        match self {
            Auth::Oauth2 => format!("o2-{purpose}"),
            Auth::Oauth1a => format!("o1-{purpose}"),
        }
    }
}

/// The sandbox, the keys registered with it, and a folder for token files.
struct Lab {
    sandbox: Sandbox,
    key: SigningKey,
    signature: SigningKey,
    encryption: SigningKey,
    dir: PathBuf,
}

impl Lab {
    fn oauth1a_config(&self, user: &str) -> Result<Oauth1aConfig, BoxError> {
        let (token, secret) = self
            .sandbox
            .issue_access_token(CONSUMER, user)
            .ok_or("the sandbox knows no such consumer")?;
        Ok(Oauth1aConfig::new(
            CONSUMER,
            token,
            SecretString::from(secret),
            self.signature.clone(),
            DecryptionKey::from_pem(&self.encryption.to_pkcs8_pem())?,
            DhGroup::from_hex(RFC3526_PRIME_2048, 2)?,
        )
        .rest_url(&format!("{}/v1/api/", self.sandbox.base_url()))?)
    }

    fn config(&self, auth: Auth, user: &str) -> Result<AuthConfig, BoxError> {
        Ok(match auth {
            Auth::Oauth2 => Config::builder()
                .client_id(CLIENT_ID)
                .client_key_id(KEY_ID)
                .credential(user)
                .private_key(self.key.clone())
                .base_url(self.sandbox.base_url())
                .public_ip(Ipv4Addr::LOCALHOST)
                .build()?
                .into(),
            Auth::Oauth1a => self.oauth1a_config(user)?.into(),
        })
    }

    /// A session for `user` paced by `rules`; with `ledger`, tokens in a file and the pacing
    /// shared through the ledger beside it.
    fn session(
        &self,
        auth: Auth,
        purpose: &str,
        rules: PacingRules,
        ledger: bool,
    ) -> Result<Session, BoxError> {
        let user = auth.user(purpose);
        let policy = Policy {
            pacing: rules,
            ..Policy::default()
        };
        let builder = Session::builder(self.config(auth, &user)?).policy(policy);
        let builder = if ledger {
            builder.token_file(self.dir.join(format!("{user}.json")))
        } else {
            builder.no_store()
        };
        Ok(builder.build()?)
    }
}

/// IBKR's rules with the global limit raised far above 1,000/s: every check is made, nothing
/// waits.
fn raised() -> PacingRules {
    PacingRules::ibkr().with_global(Limit::Rate {
        count: 1_000_000,
        per: Duration::from_secs(1),
    })
}

/// As [`raised`], with the global window cut to 50 ms (no margin): at 1,000 calls/s the ledger
/// then holds about 50 times per budget, as many as IBKR's real 50/s limit keeps in it.
fn raised_small_window() -> PacingRules {
    PacingRules {
        margin: Duration::ZERO,
        ..PacingRules::ibkr().with_global(Limit::Rate {
            count: 1_000_000,
            per: Duration::from_millis(50),
        })
    }
}

/// How the floor authorises: a precomputed bearer, or a fresh OAuth 1.0a signature.
enum FloorAuth {
    Fixed(HeaderValue),
    Signed(HmacAuthorizer),
}

/// What one measured call goes through.
enum Caller {
    Floor {
        http: reqwest::Client,
        url: Url,
        auth: FloorAuth,
    },
    Session(Session),
}

impl Caller {
    /// One `GET iserver/accounts`, its whole body read; the status.
    async fn call(&self) -> Result<u16, BoxError> {
        match self {
            Caller::Floor { http, url, auth } => {
                let header = match auth {
                    FloorAuth::Fixed(header) => header.clone(),
                    FloorAuth::Signed(signer) => signer.authorization(&Method::GET, url)?,
                };
                let response = http
                    .get(url.clone())
                    .header(AUTHORIZATION, header)
                    .send()
                    .await?;
                let status = response.status().as_u16();
                let _body = response.bytes().await?;
                Ok(status)
            }
            Caller::Session(session) => Ok(session.get(ENDPOINT).await?.status()),
        }
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// What a variant gathered over its rounds.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<f64>,
    cpu: Duration,
    wall: Duration,
    calls: usize,
    /// Per round: (median latency, CPU per call), both in µs.
    rounds: Vec<(f64, f64)>,
}

impl Tally {
    fn percentile(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p)
    }

    fn cpu_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.calls.max(1) as f64
    }

    fn rate(&self) -> f64 {
        self.calls as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// The median over rounds of this variant's figure minus `base`'s in the same round:
    /// variants of one round ran within seconds of each other, so drift of a shared machine
    /// cancels out.
    fn paired(&self, base: &Tally, figure: fn(&(f64, f64)) -> f64) -> f64 {
        let deltas: Vec<f64> = self
            .rounds
            .iter()
            .zip(&base.rounds)
            .map(|(ours, theirs)| figure(ours) - figure(theirs))
            .collect();
        percentile(&deltas, 0.5)
    }
}

/// `p` in 0..=1 of `values` (sorted here), nearest rank.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `calls` calls, one per `slot` (zero: back to back).
async fn at_fixed_rate(
    caller: &Caller,
    calls: usize,
    slot: Duration,
    tally: &mut Tally,
) -> Result<(), BoxError> {
    let mut latencies = Vec::with_capacity(calls);
    let cpu = thread_cpu();
    let start = tokio::time::Instant::now();
    for i in 0..calls {
        if !slot.is_zero() {
            tokio::time::sleep_until(start + slot * u32::try_from(i)?).await;
        }
        let t = Instant::now();
        let status = caller.call().await?;
        latencies.push(t.elapsed().as_secs_f64() * 1e6);
        if status != 200 {
            return Err(format!("HTTP {status} during the benchmark").into());
        }
    }
    let cpu = thread_cpu() - cpu;
    tally.cpu += cpu;
    tally.wall += start.elapsed();
    tally.calls += calls;
    tally.rounds.push((
        percentile(&latencies, 0.5),
        cpu.as_secs_f64() * 1e6 / calls as f64,
    ));
    tally.latencies_us.extend(latencies);
    Ok(())
}

/// The per-call table for one auth method.
fn per_call(
    runtime: &tokio::runtime::Runtime,
    lab: &Lab,
    auth: Auth,
    rounds: usize,
) -> Result<(), BoxError> {
    let off = lab.session(auth, "off", PacingRules::unlimited(), false)?;
    let inproc = lab.session(auth, "inproc", raised(), false)?;
    let ledger = lab.session(auth, "ledger", raised(), true)?;
    let ledger50 = lab.session(auth, "ledger50", raised_small_window(), true)?;
    let floor = runtime.block_on(async {
        // The floor goes through the same `reqwest::Client` as the in-process session.
        let http = inproc.http().reqwest().clone();
        let url = inproc.url(ENDPOINT)?;
        let auth = match auth {
            Auth::Oauth2 => FloorAuth::Fixed(inproc.authorization(&Method::GET, &url).await?),
            Auth::Oauth1a => {
                // A user of its own: a second login of the same user would take its brokerage
                // session over.
                let mut client = Oauth1aClient::new(lab.oauth1a_config(&auth.user("floor"))?)?;
                client.connect().await?;
                FloorAuth::Signed(client.authorizer(Step::Api)?)
            }
        };
        Ok::<_, BoxError>(Caller::Floor { http, url, auth })
    })?;
    let only = std::env::var("IBAUTH_BENCH_ONLY").ok();
    let variants: Vec<(&str, Caller)> = [
        ("floor", "plain reqwest (floor)", floor),
        ("off", "Session, pacing off", Caller::Session(off)),
        (
            "inproc",
            "Session, pacer in-process",
            Caller::Session(inproc),
        ),
        ("ledger", "Session, pacer + ledger", Caller::Session(ledger)),
        (
            "ledger50",
            "Session, ledger of ~50",
            Caller::Session(ledger50),
        ),
    ]
    .into_iter()
    .filter(|(key, _, _)| only.as_deref().is_none_or(|only| only == *key))
    .map(|(_, name, caller)| (name, caller))
    .collect();
    if variants.is_empty() {
        return Err("IBAUTH_BENCH_ONLY is none of floor, off, inproc, ledger, ledger50".into());
    }
    let mut paced: Vec<Tally> = variants.iter().map(|_| Tally::default()).collect();
    let mut back_to_back: Vec<Tally> = variants.iter().map(|_| Tally::default()).collect();
    runtime.block_on(async {
        // Logins first, then a warm-up (connections, caches); neither counted.
        for (_, caller) in &variants {
            caller.call().await?;
        }
        for (_, caller) in &variants {
            at_fixed_rate(caller, 200, SLOT, &mut Tally::default()).await?;
        }
        for (slot, tallies) in [(SLOT, &mut paced), (Duration::ZERO, &mut back_to_back)] {
            for round in 0..rounds {
                // A different order each round, so no variant always follows the same one.
                for k in 0..variants.len() {
                    let i = (k + round) % variants.len();
                    at_fixed_rate(&variants[i].1, CALLS_PER_ROUND, slot, &mut tallies[i]).await?;
                }
            }
        }
        Ok::<_, BoxError>(())
    })?;
    let names: Vec<&str> = variants.iter().map(|(name, _)| *name).collect();
    print_table(
        &format!("{} — GET {ENDPOINT} at 1,000 calls/s", auth.label()),
        &names,
        &paced,
    );
    // Hot caches and no timer wake-ups: the work a call does, with little else around it.
    print_table(
        &format!("{} — GET {ENDPOINT} back to back, one task", auth.label()),
        &names,
        &back_to_back,
    );
    Ok(())
}

/// One table: a row per variant, overheads against the first (with IBAUTH_BENCH_ONLY, the
/// one variant stands in for the floor).
fn print_table(title: &str, names: &[&str], tallies: &[Tally]) {
    let Some(floor) = tallies.first() else {
        return;
    };
    println!("\n{title}, {} calls per variant", floor.calls);
    println!(
        "{:<27} {:>8} {:>8} {:>8} {:>8} {:>9} {:>16} {:>16}",
        "variant", "median", "p90", "p99", "calls/s", "CPU/call", "Δ median", "Δ CPU"
    );
    for (name, tally) in names.iter().zip(tallies) {
        // Paired by round; the percentage is of the floor's figure over all rounds.
        let delta = |figure: fn(&(f64, f64)) -> f64, base: f64| {
            if std::ptr::eq(tally, floor) {
                "—".to_owned()
            } else {
                let d = tally.paired(floor, figure);
                format!("{d:+.1} µs {:+.1}%", d / base * 100.0)
            }
        };
        println!(
            "{:<27} {:>5.1} µs {:>5.1} µs {:>5.1} µs {:>8.0} {:>6.1} µs {:>16} {:>16}",
            name,
            tally.percentile(0.5),
            tally.percentile(0.9),
            tally.percentile(0.99),
            tally.rate(),
            tally.cpu_us(),
            delta(|r| r.0, floor.percentile(0.5)),
            delta(|r| r.1, floor.cpu_us()),
        );
    }
}

/// What 50 tasks through one session did.
struct Burst {
    calls: usize,
    elapsed: Duration,
    latencies_us: Vec<f64>,
    /// Completion times from the start.
    done: Vec<Duration>,
    too_many: usize,
    other_errors: usize,
}

/// `TASKS` tasks calling through clones of `session`: each until `until` has passed since the
/// start, or `per_task` calls.
async fn burst(session: &Session, until: Option<Duration>, per_task: usize) -> Burst {
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let session = session.clone();
            tokio::spawn(async move {
                let mut out = Vec::new();
                for _ in 0..per_task {
                    if until.is_some_and(|until| start.elapsed() >= until) {
                        break;
                    }
                    let t = Instant::now();
                    let status = match session.get(ENDPOINT).await {
                        Ok(reply) => reply.status(),
                        Err(e) => e.status().unwrap_or(0),
                    };
                    out.push((t.elapsed(), start.elapsed(), status));
                }
                out
            })
        })
        .collect();
    let mut result = Burst {
        calls: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
        done: Vec::new(),
        too_many: 0,
        other_errors: 0,
    };
    for task in tasks {
        let Ok(calls) = task.await else {
            result.other_errors += 1;
            continue;
        };
        for (latency, done, status) in calls {
            result.calls += 1;
            result.latencies_us.push(latency.as_secs_f64() * 1e6);
            result.done.push(done);
            match status {
                200 => {}
                429 => result.too_many += 1,
                _ => result.other_errors += 1,
            }
        }
    }
    result.elapsed = start.elapsed();
    result
}

/// The most completions in any window of `width`.
fn most_in_window(done: &[Duration], width: Duration) -> usize {
    let mut sorted = done.to_vec();
    sorted.sort();
    let mut most = 0;
    let mut first = 0;
    for (last, &t) in sorted.iter().enumerate() {
        while t.saturating_sub(sorted[first]) >= width {
            first += 1;
        }
        most = most.max(last + 1 - first);
    }
    most
}

fn throughput(lab: &Lab, auth: Auth) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let unpaced = lab.session(auth, "tp-unpaced", PacingRules::unlimited(), false)?;
    let paced = lab.session(auth, "tp-paced", PacingRules::ibkr(), false)?;
    runtime.block_on(async {
        // Log in first, so the measured calls are API calls only.
        unpaced.get(ENDPOINT).await?;
        paced.get(ENDPOINT).await?;
        burst(&unpaced, Some(Duration::from_millis(300)), usize::MAX).await;

        let free = burst(&unpaced, Some(Duration::from_secs(3)), usize::MAX).await;

        lab.sandbox.set_pacing(Some(PacingLimits::ibkr()));
        let before = lab.sandbox.counters();
        // Six calls a task: the first 50 go at once (an empty window), the rest at the limit.
        let limited = burst(&paced, None, 6).await;
        let after = lab.sandbox.counters();
        lab.sandbox.set_pacing(None);

        println!(
            "\n{} — {TASKS} tasks through one Session, GET {ENDPOINT}",
            auth.label()
        );
        println!(
            "{:<34} {:>6} {:>7} {:>9} {:>10} {:>10} {:>10} {:>9} {:>5} {:>6}",
            "run",
            "calls",
            "time",
            "calls/s",
            "median",
            "p90",
            "p99",
            "max in 1s",
            "429s",
            "errors"
        );
        for (name, b) in [
            ("unpaced (pacing off)", &free),
            ("IBKR limits (50/s), sandbox enforcing", &limited),
        ] {
            println!(
                "{:<34} {:>6} {:>5.2} s {:>9.1} {:>7.0} µs {:>7.0} µs {:>7.0} µs {:>9} {:>5} {:>6}",
                name,
                b.calls,
                b.elapsed.as_secs_f64(),
                b.calls as f64 / b.elapsed.as_secs_f64(),
                percentile(&b.latencies_us, 0.5),
                percentile(&b.latencies_us, 0.9),
                percentile(&b.latencies_us, 0.99),
                most_in_window(&b.done, Duration::from_secs(1)),
                b.too_many,
                b.other_errors,
            );
        }
        // After the first window's burst of 50, the rate the limit allows.
        let mut done = limited.done.clone();
        done.sort();
        if let Some(last) = done.last().filter(|_| done.len() > TASKS) {
            println!(
                "paced: {:.1} calls/s after the first window's {TASKS}; the sandbox saw {} pacing violations, {} penalty-box refusals",
                (done.len() - TASKS) as f64 / last.as_secs_f64(),
                after.pacing_violations - before.pacing_violations,
                after.penalty_rejections - before.penalty_rejections,
            );
        }
        Ok::<_, BoxError>(())
    })
}

fn main() -> Result<(), BoxError> {
    let rounds: usize = std::env::var("IBAUTH_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    // The sandbox on a runtime (and thread) of its own, so the client thread's CPU time is the
    // client's alone.
    let sandbox_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sandbox")
        .enable_all()
        .build()?;
    let key = SigningKey::generate()?;
    let signature = SigningKey::generate()?;
    let encryption = SigningKey::generate()?;
    let mut registration = ClientRegistration::new(CLIENT_ID).key(KEY_ID, &key);
    for user in USERS {
        registration = registration.credential(Auth::Oauth2.user(user));
    }
    let sandbox = sandbox_runtime.block_on(
        Sandbox::builder()
            .register(registration)
            .register_consumer(ConsumerRegistration::new(CONSUMER, &signature, &encryption))
            .start(),
    )?;
    let dir = std::env::temp_dir().join(format!("ibauth-bench-session-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let lab = Lab {
        sandbox,
        key,
        signature,
        encryption,
        dir,
    };
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let methods: Vec<Auth> = match std::env::var("IBAUTH_BENCH_AUTH").ok().as_deref() {
        None => vec![Auth::Oauth2, Auth::Oauth1a],
        Some("oauth2") => vec![Auth::Oauth2],
        Some("oauth1a") => vec![Auth::Oauth1a],
        Some(_) => return Err("IBAUTH_BENCH_AUTH is neither oauth2 nor oauth1a".into()),
    };
    for &auth in &methods {
        per_call(&client_runtime, &lab, auth, rounds)?;
    }
    let focused = std::env::var_os("IBAUTH_BENCH_ONLY").is_some()
        || std::env::var_os("IBAUTH_BENCH_AUTH").is_some();
    if !focused {
        for auth in methods {
            throughput(&lab, auth)?;
        }
    }
    let _ = std::fs::remove_dir_all(&lab.dir);
    Ok(())
}
