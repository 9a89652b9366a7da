//! `ibauth fleet`: separate processes of the real binary share third-party sessions through a
//! throw-away PostgreSQL, against the sandbox over HTTP, with compressed intervals. Every user
//! is logged in once and tickled on schedule; a runner frozen with claims in hand and then
//! killed has its sessions taken over within the hold.
//!
//! The bounded variant runs by default (600 sessions, 3 runners, about 30 s); the 10 000-session
//! measurement behind docs/benchmarks.md is ignored by default — `scripts/bench-fleet.sh`.

mod common;

use std::collections::HashMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ibauth::oauth1a::DhGroup;
use ibauth_sandbox::{CredentialSet, Sandbox};
use ibauth_testsupport::postgres::PgServer;
use serde_json::Value;

use common::ibauth;

/// RFC 2409's 768-bit MODP group: far too small for real use (IBKR registers 2048-bit primes),
/// but what is measured here is the runner and the store, not Diffie-Hellman.
const OAKLEY_768: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A3620FFFFFFFFFFFFFFFF";

struct Params {
    sessions: usize,
    runners: usize,
    workers: usize,
    batch: usize,
    concurrency: usize,
    tickle_every: Duration,
    hold: Duration,
    poll: Duration,
    /// Steady-state measurement after everyone logged in.
    measure_for: Duration,
    login_deadline: Duration,
}

/// A runner process and the JSON lines it printed.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Proc {
    /// Starts `ibauth fleet run` (`cmd`), collecting the JSON lines it prints on stdout.
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ibauth fleet run");
        let stdout = child.stdout.take().expect("stdout");
        let lines: Arc<Mutex<Vec<Value>>> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Proc { child, lines }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    fn final_stats(&mut self) -> Value {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "runner {} did not stop",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The reader thread may still be draining the pipe.
        std::thread::sleep(Duration::from_millis(200));
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .rev()
            .find(|v| v["final"] == true)
            .cloned()
            .unwrap_or_else(|| panic!("runner {} printed no final stats", self.pid()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) and resident kB of a process.
fn cpu_and_rss(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 14th field.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = match (fields.get(11), fields.get(12)) {
        (Some(u), Some(s)) => {
            (u.parse::<f64>().unwrap_or(0.0) + s.parse::<f64>().unwrap_or(0.0)) / ticks
        }
        _ => 0.0,
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (cpu, rss)
}

async fn admin(pg: &PgServer) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("admin connection: {e}\n{}", pg.log()));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Statements the database ran so far (pg_stat_statements: every statement, counted when it
/// ends), less this test's own reads of the counts.
async fn statements(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT COALESCE(sum(calls), 0)::int8 FROM pg_stat_statements
             WHERE query NOT LIKE '%pg_stat_statements%'",
            &[],
        )
        .await
        .expect("pg_stat_statements")
        .get(0)
}

/// The statements run most often, with their counts.
async fn top_statements(admin: &tokio_postgres::Client) -> Vec<(String, i64)> {
    admin
        .query(
            "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 70), calls FROM pg_stat_statements
             WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC LIMIT 8",
            &[],
        )
        .await
        .expect("pg_stat_statements")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("write");
    f.write_all(text.as_bytes()).expect("write");
}

struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Setup {
    _dir: DirGuard,
    dir: PathBuf,
    config: PathBuf,
    key_file: PathBuf,
    grants: PathBuf,
    users: Vec<(String, String)>, // (user, identity)
}

fn runner(setup: &Setup, pg: &PgServer, p: &Params) -> Proc {
    let mut cmd = ibauth();
    cmd.args(["--json", "--config"])
        .arg(&setup.config)
        .args(["fleet", "--store", &pg.url(), "--store-key-file"])
        .arg(&setup.key_file)
        .args([
            "run",
            "--workers",
            &p.workers.to_string(),
            "--batch",
            &p.batch.to_string(),
            "--concurrency",
            &p.concurrency.to_string(),
            "--tickle-every",
            &format!("{}ms", p.tickle_every.as_millis()),
            "--hold",
            &format!("{}ms", p.hold.as_millis()),
            "--poll",
            &format!("{}ms", p.poll.as_millis()),
            "--retry-after",
            "1s",
            "--login-rate",
            "300",
            "--login-burst",
            "30",
            "--stats-every",
            "1s",
        ]);
    Proc::spawn(cmd)
}

/// What a run measured.
#[derive(Debug)]
#[allow(dead_code)] // printed
struct Figures {
    sessions: usize,
    runners: usize,
    logins_took: Duration,
    tickles_per_s: f64,
    cpu_us_per_tickle: f64,
    statements_per_tickle: f64,
    rss_kb_per_runner: Vec<u64>,
    store_bytes_per_session: u64,
    takeover: Duration,
    orphans: usize,
    /// Over the whole run, the login wave included.
    late_p99_ms: u64,
    late_max_ms: u64,
    steady_most_overdue: Duration,
    tickles_per_session_in_window: (u64, u64),
    window: Duration,
    top_statements: Vec<(String, i64)>,
}

async fn run_fleet(p: Params) -> Figures {
    let dir = common::temp_dir(&format!("fleet-{}", p.sessions));
    let guard = DirGuard(dir.clone());
    let set = CredentialSet::load_or_create(&dir).expect("credential set");
    let group = DhGroup::from_hex(OAKLEY_768, 2).expect("group");
    let sandbox = Sandbox::builder()
        .register_consumer(set.third_party_registration().dh_group(group))
        .start()
        .await
        .expect("sandbox");
    let issued = sandbox
        .issue_access_tokens(ibauth::oauth1a::TEST_CONSUMER, "fleet", p.sessions)
        .expect("a known consumer");
    let mut grants = String::new();
    let mut users = Vec::new();
    for g in &issued {
        grants.push_str(
            &serde_json::json!({
                "user": g.user, "oauth_token": g.oauth_token,
                "oauth_token_secret": g.oauth_token_secret,
            })
            .to_string(),
        );
        grants.push('\n');
        users.push((
            g.user.clone(),
            ibauth_fleet::runner::grant_identity(ibauth::oauth1a::TEST_CONSUMER, &g.oauth_token),
        ));
    }
    let setup = Setup {
        config: dir.join("consumer.yaml"),
        key_file: dir.join("store.key"),
        grants: dir.join("grants.jsonl"),
        dir: dir.clone(),
        _dir: guard,
        users,
    };
    write_private(&setup.grants, &grants);
    write_private(
        &setup.config,
        &format!(
            "oauth1a:\n  consumer_key: TESTCONS\n  realm: test_realm\n  signature_key_file: {}\n  \
             encryption_key_file: {}\n  dh_prime: {OAKLEY_768}\n  rest_url: {}/v1/api/\n",
            setup.dir.join("signature_key.pem").display(),
            setup.dir.join("encryption_key.pem").display(),
            sandbox.base_url()
        ),
    );
    let key = ibauth::coord::StoreKey::generate().expect("store key");
    write_private(&setup.key_file, &format!("{}\n", key.to_base64().as_str()));

    // Counting statements: pg_stat_statements, loaded at start.
    let pg = PgServer::builder()
        .setting("shared_preload_libraries", "pg_stat_statements")
        .start();
    let admin = admin(&pg).await;
    admin
        .batch_execute("CREATE EXTENSION pg_stat_statements")
        .await
        .unwrap_or_else(|e| panic!("pg_stat_statements: {e}\n{}", pg.log()));

    // Enroll (the real binary), then run.
    let out = {
        let mut cmd = ibauth();
        cmd.args(["--json", "--config"])
            .arg(&setup.config)
            .args(["fleet", "--store", &pg.url(), "--store-key-file"])
            .arg(&setup.key_file)
            .arg("enroll")
            .arg(&setup.grants);
        tokio::task::spawn_blocking(move || cmd.output().expect("enroll"))
            .await
            .expect("enroll")
    };
    assert!(out.status.success(), "{}", common::text(&out));
    let enrolled = common::json_lines(&out.stdout);
    assert_eq!(enrolled[0]["stored"], p.sessions, "{enrolled:?}");
    assert_eq!(enrolled[0]["queued"], p.sessions, "{enrolled:?}");

    let started = Instant::now();
    let mut procs: Vec<Proc> = (0..p.runners).map(|_| runner(&setup, &pg, &p)).collect();
    loop {
        let logged_in = sandbox.counters().live_session_tokens;
        if logged_in >= p.sessions as u64 {
            break;
        }
        assert!(
            started.elapsed() < p.login_deadline,
            "only {logged_in} of {} logged in after {:?}",
            p.sessions,
            p.login_deadline
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logins_took = started.elapsed();
    // Let the login wave settle into the tickle schedule, then measure.
    tokio::time::sleep(p.tickle_every + p.poll).await;
    let per_user = |sandbox: &Sandbox| -> HashMap<String, u64> {
        sandbox
            .all_user_stats()
            .into_iter()
            .map(|(u, s)| (u, s.tickles))
            .collect()
    };
    let users_t0 = per_user(&sandbox);
    let t0 = (
        Instant::now(),
        sandbox.counters().tickles,
        statements(&admin).await,
        procs.iter().map(|r| cpu_and_rss(r.pid()).0).sum::<f64>(),
    );
    // How overdue the most overdue waiting session is, sampled through the window.
    let mut most_overdue = Duration::ZERO;
    while t0.0.elapsed() < p.measure_for {
        let us: i64 = admin
            .query_one(
                "SELECT COALESCE(max((EXTRACT(EPOCH FROM clock_timestamp() - w.due_at) * 1000000)::int8), 0)
                 FROM ibauth_work w LEFT JOIN ibauth_leases l ON l.identity = w.identity
                 WHERE w.due_at <= clock_timestamp()
                    AND NOT (l.holder IS NOT NULL AND l.expires_at > clock_timestamp())",
                &[],
            )
            .await
            .expect("overdue")
            .get(0);
        most_overdue = most_overdue.max(Duration::from_micros(us.max(0) as u64));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let t1 = (
        Instant::now(),
        sandbox.counters().tickles,
        statements(&admin).await,
        procs.iter().map(|r| cpu_and_rss(r.pid()).0).sum::<f64>(),
    );
    let tickles = (t1.1 - t0.1) as f64;
    assert!(tickles > 0.0);
    let users_t1 = per_user(&sandbox);
    let in_window: Vec<u64> = users_t1
        .iter()
        .map(|(u, n)| n - users_t0.get(u).copied().unwrap_or(0))
        .collect();
    let fewest_in_window = in_window.iter().min().copied().unwrap_or(0);
    let most_in_window = in_window.iter().max().copied().unwrap_or(0);
    let rss_kb_per_runner: Vec<u64> = procs.iter().map(|r| cpu_and_rss(r.pid()).1).collect();
    let steady = (t1.0 - t0.0).as_secs_f64();
    let tickles_per_s = tickles / steady;
    // A session is due `tickle_every` after its last tickle, and claimed within a poll.
    let longest_gap = p.tickle_every + p.poll + Duration::from_millis(300);
    let expected_per_s = p.sessions as f64 / longest_gap.as_secs_f64();
    assert!(
        tickles_per_s > expected_per_s * 0.95,
        "{tickles_per_s:.0} tickles/s; a tickle per session every {longest_gap:?} is {expected_per_s:.0}"
    );
    // Every session tickled in the window as often as its schedule says, none skipped.
    let window = (t1.0 - t0.0).as_secs_f64();
    let at_least = (window / longest_gap.as_secs_f64()).floor() as u64;
    let at_most = (window / p.tickle_every.as_secs_f64()).ceil() as u64 + 1;
    assert!(
        fewest_in_window >= at_least && most_in_window <= at_most,
        "tickles per session in {window:.1} s: {fewest_in_window}..={most_in_window}, expected {at_least}..={at_most}"
    );
    assert!(
        most_overdue <= p.poll + Duration::from_secs(1),
        "a session waited {most_overdue:?} past its due time in steady state"
    );
    let store_bytes: i64 = admin
        .query_one(
            "SELECT pg_total_relation_size('ibauth_sessions') + pg_total_relation_size('ibauth_work')
                + pg_total_relation_size('ibauth_leases')",
            &[],
        )
        .await
        .expect("sizes")
        .get(0);

    // Freeze runner 0 while it holds claims (a host that hung), then kill it.
    let dead = &procs[0];
    let holder = format!(":{}:", dead.pid());
    let held_now = || async {
        admin
            .query(
                "SELECT identity FROM ibauth_leases
                 WHERE strpos(holder, $1) > 0 AND expires_at > clock_timestamp()",
                &[&holder],
            )
            .await
            .expect("leases")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<String>>()
    };
    // Watch for runner 0 to hold claims, freeze it, and check it still does.
    let freeze_deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        assert!(
            Instant::now() < freeze_deadline,
            "runner 0 never held a claim"
        );
        if held_now().await.is_empty() {
            continue;
        }
        dead.signal(libc::SIGSTOP);
        let held = held_now().await;
        if !held.is_empty() {
            break held;
        }
        dead.signal(libc::SIGCONT);
    };
    let frozen_at = Instant::now();
    dead.signal(libc::SIGKILL);
    let by_identity: HashMap<&str, &str> = setup
        .users
        .iter()
        .map(|(u, id)| (id.as_str(), u.as_str()))
        .collect();
    let orphans: Vec<(&str, u64)> = held
        .iter()
        .map(|id| {
            let user = by_identity[id.as_str()];
            (user, sandbox.user_stats(user).tickles)
        })
        .collect();
    let mut takeover = Duration::ZERO;
    let give_up = frozen_at + p.hold + p.tickle_every + Duration::from_secs(10);
    for (user, then) in &orphans {
        loop {
            if sandbox.user_stats(user).tickles > *then {
                takeover = takeover.max(frozen_at.elapsed());
                break;
            }
            assert!(Instant::now() < give_up, "{user} was never taken over");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // A while more, to see the survivors keep everyone on schedule.
    tokio::time::sleep(p.tickle_every * 2).await;
    let ran = started.elapsed();

    let mut late_p99_ms = 0;
    let mut late_max_ms = 0;
    for (i, r) in procs.iter_mut().enumerate().skip(1) {
        let stats = r.final_stats();
        assert_eq!(stats["fenced"], 0, "runner {i}: {stats}");
        assert_eq!(stats["failures"], 0, "runner {i}: {stats}");
        assert!(
            stats["tickles"].as_u64().unwrap_or(0) > 0,
            "runner {i}: {stats}"
        );
        late_p99_ms = late_p99_ms.max(stats["late_p99_ms"].as_u64().unwrap_or(0));
        late_max_ms = late_max_ms.max(stats["late_max_ms"].as_u64().unwrap_or(0));
    }

    // Stopped with SIGTERM, the survivors finished their batches and handed every claim
    // back; the killed runner's ran out long ago.
    let live: i64 = admin
        .query_one(
            "SELECT count(*) FROM ibauth_leases
             WHERE holder IS NOT NULL AND expires_at > clock_timestamp()",
            &[],
        )
        .await
        .expect("leases")
        .get(0);
    assert_eq!(live, 0, "claims left behind by a clean stop");

    // Each user: logged in once, one brokerage session, never taken over, tickled on schedule.
    let users = sandbox.all_user_stats();
    assert_eq!(users.len(), p.sessions);
    let every = p.tickle_every.as_secs_f64();
    let least = ((ran - logins_took).as_secs_f64() / every).floor() as u64;
    let missed = (p.hold.as_secs_f64() / every).ceil() as u64 + 1;
    let most = (ran.as_secs_f64() / every).ceil() as u64 + 2;
    for (user, s) in &users {
        assert_eq!(
            (
                s.live_session_tokens,
                s.max_live_sessions,
                s.brokerage_sessions,
                s.takeovers
            ),
            (1, 1, 1, 0),
            "{user} logged in more than once or was taken over: {s:?}"
        );
        assert!(
            s.tickles + missed >= least && s.tickles <= most,
            "{user}: {} tickles over {ran:?} at one per {every} s (expected {least}..={most})",
            s.tickles
        );
    }
    assert_eq!(sandbox.counters().rejections, 0);

    // Five users leave (the runners are stopped; the killed one's claims have run out).
    let five = dir.join("leaving.jsonl");
    write_private(
        &five,
        &grants
            .lines()
            .take(5)
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    );
    let out = {
        let mut cmd = ibauth();
        cmd.args(["--json", "--config"])
            .arg(&setup.config)
            .args(["fleet", "--store", &pg.url(), "--store-key-file"])
            .arg(&setup.key_file)
            .arg("retire")
            .arg(&five);
        tokio::task::spawn_blocking(move || cmd.output().expect("retire"))
            .await
            .expect("retire")
    };
    assert!(out.status.success(), "{}", common::text(&out));
    let retired = common::json_lines(&out.stdout);
    assert_eq!(retired[0]["retired"], 5, "{retired:?}");
    for (user, _) in setup.users.iter().take(5) {
        assert_eq!(
            sandbox.user_stats(user).brokerage_sessions,
            0,
            "{user} still logged in"
        );
    }
    let queued: i64 = admin
        .query_one("SELECT count(*) FROM ibauth_work", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(queued as usize, p.sessions - 5);

    Figures {
        sessions: p.sessions,
        runners: p.runners,
        logins_took,
        tickles_per_s,
        cpu_us_per_tickle: (t1.3 - t0.3) / tickles * 1e6,
        statements_per_tickle: (t1.2 - t0.2) as f64 / tickles,
        rss_kb_per_runner,
        store_bytes_per_session: store_bytes as u64 / p.sessions as u64,
        takeover,
        orphans: orphans.len(),
        late_p99_ms,
        late_max_ms,
        steady_most_overdue: most_overdue,
        tickles_per_session_in_window: (fewest_in_window, most_in_window),
        window: t1.0 - t0.0,
        top_statements: top_statements(&admin).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runner_processes_keep_600_sessions_and_take_over_from_a_killed_one() {
    let hold = Duration::from_secs(3);
    let poll = Duration::from_millis(200);
    let figures = run_fleet(Params {
        sessions: 600,
        runners: 3,
        workers: 2,
        batch: 100,
        concurrency: 32,
        tickle_every: Duration::from_secs(2),
        hold,
        poll,
        measure_for: Duration::from_secs(4),
        login_deadline: Duration::from_secs(30),
    })
    .await;
    eprintln!("{figures:#?}");
    assert!(figures.orphans > 0);
    assert!(
        figures.takeover <= hold + poll * 2 + Duration::from_secs(1),
        "taken over after {:?} (hold {hold:?})",
        figures.takeover
    );
    // A claim (with the documents) and a hand-back per batch, a save only after a login: well
    // under one statement per tickle.
    assert!(
        figures.statements_per_tickle < 0.5,
        "{:.2} statements per tickle",
        figures.statements_per_tickle
    );
}

/// The measurement in docs/benchmarks.md: 10 000 sessions over 3 runner processes, a tickle
/// each every `FLEET_TICKLE_SECS` (default 20) seconds. Run by `scripts/bench-fleet.sh`
/// (release build); prints the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: minutes; scripts/bench-fleet.sh"]
async fn ten_thousand_sessions_over_three_runner_processes() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let tickle_every = Duration::from_secs(env("FLEET_TICKLE_SECS", 20));
    let hold = Duration::from_secs(env("FLEET_HOLD_SECS", 10));
    let figures = run_fleet(Params {
        sessions: env("FLEET_SESSIONS", 10_000) as usize,
        runners: 3,
        workers: 2,
        batch: env("FLEET_BATCH", 200) as usize,
        concurrency: env("FLEET_CONCURRENCY", 32) as usize,
        tickle_every,
        hold,
        poll: Duration::from_millis(500),
        measure_for: Duration::from_secs(env("FLEET_MEASURE_SECS", 60)),
        login_deadline: Duration::from_secs(600),
    })
    .await;
    println!("FIGURES {figures:?}");
    eprintln!("{figures:#?}");
    assert!(figures.orphans > 0);
    assert!(figures.takeover <= hold + Duration::from_secs(2));
}

#[test]
fn fleet_commands_say_what_is_wrong_without_echoing_secrets() {
    let dir = common::temp_dir("fleet-errors");
    let _guard = DirGuard(dir.clone());
    let grants = dir.join("grants.jsonl");
    write_private(
        &grants,
        "{\"user\":\"u0\",\"oauth_token\":\"tok0\",\"oauth_token_secret\":\"c2VjcmV0LW9uZQ==\"}\n\
         {\"user\":\"u1\",\"oauth_token\":\"tok1\"}\n",
    );
    // A malformed grants file: the line, not its content.
    let out = ibauth()
        .args([
            "fleet",
            "--store",
            "postgres://nobody@127.0.0.1:1/x",
            "enroll",
        ])
        .arg(&grants)
        .output()
        .expect("run");
    let text = common::text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("line 2"), "{text}");
    assert!(!text.contains("c2VjcmV0"), "{text}");
    // No store anywhere.
    let out = ibauth().args(["fleet", "stats"]).output().expect("run");
    let text = common::text(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("--store"), "{text}");
    // Redis keeps no work queue; the password is never shown.
    let out = ibauth()
        .args([
            "fleet",
            "--store",
            "redis://:pw-secret@127.0.0.1:1",
            "stats",
        ])
        .output()
        .expect("run");
    let text = common::text(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("PostgreSQL"), "{text}");
    assert!(!text.contains("pw-secret"), "{text}");
    // Out-of-range settings are refused by clap or the runner before anything runs.
    let out = ibauth()
        .args([
            "fleet",
            "--store",
            "postgres://nobody@127.0.0.1:1/x",
            "run",
            "--hold",
            "soon",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", common::text(&out));
}

/// A first-party consumer of its own: consumer key, signature and encryption keys.
struct FirstParty {
    key: &'static str,
    signature: ibauth::SigningKey,
    encryption: ibauth::SigningKey,
}

impl FirstParty {
    fn new(key: &'static str) -> Self {
        Self {
            key,
            signature: ibauth::SigningKey::generate().expect("key"),
            encryption: ibauth::SigningKey::generate().expect("key"),
        }
    }

    fn registration(&self, group: &DhGroup) -> ibauth_sandbox::ConsumerRegistration {
        ibauth_sandbox::ConsumerRegistration::new(self.key, &self.signature, &self.encryption)
            .dh_group(group.clone())
    }

    /// Its config in `dir`, as a first-party user has one: with an access token (which the
    /// runner does not use: each grant brings its own).
    fn config(&self, dir: &Path, base: &str) -> PathBuf {
        let key = self.key;
        let sig_file = dir.join(format!("{key}-signature.pem"));
        let enc_file = dir.join(format!("{key}-encryption.pem"));
        write_private(&sig_file, &self.signature.to_pkcs8_pem());
        write_private(&enc_file, &self.encryption.to_pkcs8_pem());
        let config = dir.join(format!("{key}.yaml"));
        write_private(
            &config,
            &format!(
                "oauth1a:\n  consumer_key: {key}\n  realm: limited_poa\n  access_token: \"unused\"\n  \
                 access_token_secret: \"dW51c2Vk\"\n  signature_key_file: {}\n  encryption_key_file: {}\n  \
                 dh_prime: {OAKLEY_768}\n  rest_url: {base}/v1/api/\n",
                sig_file.display(),
                enc_file.display(),
            ),
        );
        config
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_processes_keep_first_party_users_of_two_consumers_and_third_party_grants() {
    const N: usize = 20;
    let dir = common::temp_dir("fleet-consumers");
    let _guard = DirGuard(dir.clone());
    let set = CredentialSet::load_or_create(&dir).expect("credential set");
    let group = DhGroup::from_hex(OAKLEY_768, 2).expect("group");
    let (a, b) = (FirstParty::new("ALPHACK"), FirstParty::new("BETACK"));
    let sandbox = Sandbox::builder()
        .register_consumer(set.third_party_registration().dh_group(group.clone()))
        .register_consumer(a.registration(&group))
        .register_consumer(b.registration(&group))
        .start()
        .await
        .expect("sandbox");
    let base = sandbox.base_url().to_owned();
    let alpha = a.config(&dir, &base);
    let beta = b.config(&dir, &base);
    let mut grants = String::new();
    let mut users = Vec::new();
    for (consumer, name, prefix) in [
        (ibauth::oauth1a::TEST_CONSUMER, None, "tp"),
        ("ALPHACK", Some("alpha"), "alpha"),
        ("BETACK", Some("beta"), "beta"),
    ] {
        for g in sandbox
            .issue_access_tokens(consumer, prefix, N)
            .expect("a known consumer")
        {
            let mut line = serde_json::json!({
                "user": g.user, "oauth_token": g.oauth_token,
                "oauth_token_secret": g.oauth_token_secret,
            });
            if let Some(name) = name {
                line["consumer"] = name.into();
            }
            grants.push_str(&format!("{line}\n"));
            users.push(g.user);
        }
    }
    let total = users.len();
    let grants_file = dir.join("grants.jsonl");
    write_private(&grants_file, &grants);
    let config = dir.join("consumer.yaml");
    write_private(
        &config,
        &format!(
            "oauth1a:\n  consumer_key: TESTCONS\n  realm: test_realm\n  signature_key_file: {}\n  \
             encryption_key_file: {}\n  dh_prime: {OAKLEY_768}\n  rest_url: {base}/v1/api/\n",
            dir.join("signature_key.pem").display(),
            dir.join("encryption_key.pem").display(),
        ),
    );
    let key_file = dir.join("store.key");
    let key = ibauth::coord::StoreKey::generate().expect("store key");
    write_private(&key_file, &format!("{}\n", key.to_base64().as_str()));
    let pg = PgServer::start();
    let fleet = |consumers: &[(&str, &Path)]| {
        let mut cmd = ibauth();
        cmd.args(["--json", "--config"])
            .arg(&config)
            .args(["fleet", "--store", &pg.url(), "--store-key-file"])
            .arg(&key_file);
        for (name, path) in consumers {
            cmd.arg("--consumer")
                .arg(format!("{name}={}", path.display()));
        }
        cmd
    };

    // Enrolling needs every consumer the grants name, and stores nothing without one.
    let out = fleet(&[("alpha", &alpha)])
        .arg("enroll")
        .arg(&grants_file)
        .output()
        .expect("enroll");
    let text = common::text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("--consumer beta="), "{text}");
    let out = fleet(&[("alpha", &alpha), ("beta", &beta)])
        .arg("enroll")
        .arg(&grants_file)
        .output()
        .expect("enroll");
    assert!(out.status.success(), "{}", common::text(&out));
    assert_eq!(common::json_lines(&out.stdout)[0]["stored"], total);

    let spawn = |consumers: &[(&str, &Path)]| {
        let mut cmd = fleet(consumers);
        cmd.args([
            "run",
            "--tickle-every",
            "2s",
            "--hold",
            "3s",
            "--poll",
            "200ms",
            "--retry-after",
            "1s",
            "--login-rate",
            "300",
            "--login-burst",
            "30",
        ]);
        Proc::spawn(cmd)
    };
    // The runner without beta first, until it has logged its users in (third party and
    // alpha): started together, the runner with both consumers could claim every due session
    // in its first batch (a batch holds 200) and keep them, as nothing spreads claims evenly
    // between runners.
    let mut partial = spawn(&[("alpha", &alpha)]);
    let (its_users, beta_users) = users.split_at(2 * N);
    let deadline = Instant::now() + Duration::from_secs(30);
    while its_users
        .iter()
        .any(|u| sandbox.user_stats(u).live_session_tokens == 0)
    {
        assert!(
            Instant::now() < deadline,
            "the runner without beta did not log its users in"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        beta_users
            .iter()
            .all(|u| sandbox.user_stats(u).live_session_tokens == 0),
        "a runner without beta logged a beta user in"
    );
    let mut full = spawn(&[("alpha", &alpha), ("beta", &beta)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sandbox.counters().live_session_tokens < total as u64 {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} logged in",
            sandbox.counters().live_session_tokens
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (f, p) = (full.final_stats(), partial.final_stats());
    eprintln!("full {f}\npartial {p}");
    // Claims only take a runner's own consumers' sessions: none is handed back.
    assert_eq!(p["foreign"], 0, "{p}");
    assert_eq!(f["foreign"], 0, "{f}");
    for s in [&f, &p] {
        assert_eq!(
            (&s["failures"], &s["fenced"]),
            (&0.into(), &0.into()),
            "{s}"
        );
        assert!(s["tickles"].as_u64() > Some(0), "{s}");
    }
    for user in &users {
        let s = sandbox.user_stats(user);
        assert_eq!(s.live_session_tokens, 1, "{user}: {s:?}");
        assert_eq!(s.max_concurrent_ticklers, 1, "{user}: {s:?}");
        assert!(s.tickles >= 3, "{user}: {s:?}");
    }
    assert_eq!(sandbox.counters().rejections, 0);
}
