//! A fleet across hosts: real `ibauth` processes in network namespaces of their own (`ip netns`
//! and veth pairs, so each has its own address), sharing one account through a PostgreSQL or
//! Redis store that the test starts, against the sandbox, which sees each process's address:
//! it counts logins, the addresses that tickle one user at once, and refuses an OAuth 2.0
//! bearer token from another address than its SSO session's.
//!
//! Three gateways on three addresses serve one OAuth 1.0a account with one login and one
//! tickler; the leader killed with SIGKILL is replaced within the lease's ttl; a leader frozen
//! (SIGSTOP) past its ttl wakes up to a refused write and follows; the store restarted mid-run
//! loses nothing; and every follower's API calls succeed throughout. With OAuth 2.0, a member
//! on the leader's address uses the session, one on another address refuses it with the reason.
//!
//! Needs root (network namespaces) and `ip` (iproute2), PostgreSQL's server programs and
//! redis-server: `scripts/test.sh` installs what is missing. Nothing is skipped.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ibauth::coord::{Coordinator, StoreUrl};
use ibauth_sandbox::{CredentialSet, SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL, Sandbox};
use ibauth_testsupport::postgres::PgServer;
use ibauth_testsupport::redis::RedisServer;
use serde_json::Value;

mod common;
use common::{ibauth, temp_dir};

/// The lease's ttl (`IBAUTH_LEASE_TTL`): short, so takeovers happen within the test.
const TTL: Duration = Duration::from_secs(3);
/// The leader's tickle interval.
const TICKLE: &str = "0.3";
/// Tickles of two addresses this close together count as two concurrent ticklers: longer
/// than the tickle interval (two leaders side by side always count), shorter than any gap a
/// takeover leaves (the lease's remaining time, at least two thirds of the ttl).
const TICKLER_WINDOW: Duration = Duration::from_millis(1200);
/// Slack on top of the ttl for a takeover (the follower's lease poll, the store's answer).
const TAKEOVER_SLACK: Duration = Duration::from_millis(1500);

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (is iproute2 installed? scripts/test.sh installs it)")
    });
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

/// A network namespace with a veth pair to this one: the namespace's address `addr`, this
/// side's `host` (also its default route). Removed on drop, panics included.
struct Ns {
    name: String,
    host_if: String,
    host: Ipv4Addr,
    addr: Ipv4Addr,
}

impl Drop for Ns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and so the pair.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// Namespaces left by test processes that are gone (killed before their drops ran).
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("ibf")
            .and_then(|rest| rest.split('x').next())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// `n` namespaces with addresses of their own. Names and subnets are unique to this test
/// process (its pid) and call, so parallel runs do not clash.
fn namespaces(n: usize) -> Vec<Ns> {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the fleet tests make network namespaces (`ip netns`), which needs root: run them as root (as CI and scripts/test.sh in its container do)"
    );
    sweep_stale();
    let pid = std::process::id();
    let call = CALLS.fetch_add(1, Ordering::SeqCst);
    // 10.A.B.0/24 per test process and call, a /30 per namespace.
    let a = 200 + (pid % 50) as u8;
    let b = ((pid / 50 + call as u32 * 37) % 256) as u8;
    (0..n)
        .map(|i| {
            let name = format!("ibf{pid}x{call}{i}");
            let host_if = format!("ibh{pid}x{call}{i}");
            let peer_if = format!("ibn{pid}x{call}{i}");
            let host = Ipv4Addr::new(10, a, b, (i * 4 + 1) as u8);
            let addr = Ipv4Addr::new(10, a, b, (i * 4 + 2) as u8);
            let ns = Ns {
                name: name.clone(),
                host_if: host_if.clone(),
                host,
                addr,
            };
            ip(&["netns", "add", &name]);
            ip(&[
                "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
            ]);
            ip(&["link", "set", &peer_if, "netns", &name]);
            ip(&["addr", "add", &format!("{host}/30"), "dev", &host_if]);
            ip(&["link", "set", &host_if, "up"]);
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &name, "ip"];
                all.extend_from_slice(args);
                ip(&all);
            };
            inside(&["addr", "add", &format!("{addr}/30"), "dev", &peer_if]);
            inside(&["link", "set", &peer_if, "up"]);
            inside(&["link", "set", "lo", "up"]);
            // Every address of this namespace (the sandbox's, the store's) through the pair.
            inside(&["route", "add", "default", "via", &host.to_string()]);
            ns
        })
        .collect()
}

/// An `ibauth` process in a namespace: stdout and stderr kept as they come. Killed on drop
/// (thawed first, in case a test froze it).
struct Member {
    what: String,
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keep_lines(from: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// `ibauth ARGS` in `ns`, with the test's environment rules (`common::ibauth`).
fn in_ns(ns: &Ns, args: &[&str], env: &[(&str, String)]) -> Command {
    in_named_ns(&ns.name, args, env)
}

fn in_named_ns(ns: &str, args: &[&str], env: &[(&str, String)]) -> Command {
    let base = ibauth();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(env!("CARGO_BIN_EXE_ibauth"))
        .args(args);
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

impl Member {
    fn spawn(what: &str, mut cmd: Command) -> Member {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = keep_lines(child.stdout.take().unwrap());
        let err = keep_lines(child.stderr.take().unwrap());
        Member {
            what: what.to_owned(),
            child,
            out,
            err,
        }
    }

    /// `ip netns exec` runs the program in its own place: this is ibauth's pid.
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, sig) };
    }

    fn log(&self) -> String {
        format!(
            "--- {} (pid {}) stdout:\n{}\n--- stderr:\n{}",
            self.what,
            self.pid(),
            self.out.lock().unwrap().join("\n"),
            self.err.lock().unwrap().join("\n")
        )
    }

    async fn wait_for(&mut self, what: &str, within: Duration, check: impl Fn(&Member) -> bool) {
        let deadline = Instant::now() + within;
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}\n{}",
                self.log()
            );
            if self.exited() {
                // Let the readers catch up with its last lines.
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!("{what}: the process ended\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    fn stderr_has(&self, text: &str) -> bool {
        self.err.lock().unwrap().iter().any(|l| l.contains(text))
    }
}

/// The sandbox on every address of this namespace (so each member reaches it through its own
/// pair, and is seen by its own address), and its config (OAuth 2.0 and 1.0a) at `service`.
async fn sandbox(dir: &Path, service: Ipv4Addr) -> (Sandbox, PathBuf) {
    let set = CredentialSet::load_or_create(dir).unwrap();
    // HTTPS (ibauth refuses plain http off the loopback), at `service`: its base URL (what
    // OAuth 1.0a signs) and its certificate name it.
    let sandbox = Sandbox::builder()
        .listen("0.0.0.0:0".parse().unwrap())
        .tls(true)
        .host(&service.to_string())
        .tickler_window(TICKLER_WINDOW)
        .register(set.registration())
        .register_consumer(set.consumer_registration())
        .start()
        .await
        .unwrap();
    let (token, secret) = sandbox
        .issue_access_token(SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL)
        .unwrap();
    assert_eq!(
        sandbox.base_url(),
        format!("https://{service}:{}", sandbox.addr().port())
    );
    let config = set
        .write_config_with(
            sandbox.base_url(),
            sandbox.ca_pem(),
            Some((&token, &secret)),
        )
        .unwrap();
    (sandbox, config)
}

/// A fresh store key file (`ibauth store-key FILE`).
fn store_key(dir: &Path) -> PathBuf {
    let path = dir.join("store.key");
    let out = ibauth().arg("store-key").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    path
}

/// The store as the test sees it: who leads.
struct View {
    coord: Arc<dyn Coordinator>,
    identity: Option<String>,
}

impl View {
    async fn new(url: &str) -> View {
        let url = StoreUrl::parse(url).unwrap();
        View {
            coord: ibauth_fleet::connect(&url).await.unwrap(),
            identity: None,
        }
    }

    /// The leader's pid and lease generation (`None`: no live lease, or the store is down).
    async fn leader(&mut self) -> Option<(u32, u64)> {
        self.observe().await.ok().flatten()
    }

    async fn observe(&mut self) -> Result<Option<(u32, u64)>, String> {
        if self.identity.is_none() {
            let ids = self.coord.identities().await.map_err(|e| e.to_string())?;
            assert!(ids.len() <= 1, "one identity in the fleet: {ids:?}");
            self.identity = ids.into_iter().next();
        }
        let Some(identity) = self.identity.as_deref() else {
            return Err("no stored document yet".into());
        };
        let Some(info) = self
            .coord
            .lease_info(identity)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        if info.expires_in.is_zero() {
            return Ok(None);
        }
        // Holders are named host:pid:random.
        let pid = info
            .holder
            .split(':')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("holder {}", info.holder))?;
        Ok(Some((pid, info.generation)))
    }

    async fn wait_leader(
        &mut self,
        within: Duration,
        check: impl Fn(u32, u64) -> bool,
        context: impl Fn() -> String,
    ) -> (u32, u64) {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.observe().await;
            if let Ok(Some((pid, generation))) = seen
                && check(pid, generation)
            {
                return (pid, generation);
            }
            assert!(
                Instant::now() < deadline,
                "no such leader within {within:?}; last seen: {seen:?}\n{}",
                context()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// API calls through one gateway, in a loop until stopped: how many succeeded, and every
/// failure with when it happened.
struct Calls {
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
    on: AtomicBool,
}

fn poll(url: String, started: Instant) -> Arc<Calls> {
    let calls = Arc::new(Calls {
        ok: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
        on: AtomicBool::new(true),
    });
    let state = calls.clone();
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        while state.on.load(Ordering::SeqCst) {
            let at = started.elapsed();
            let reply = client
                .get(format!("{url}/v1/api/iserver/accounts"))
                .send()
                .await;
            let outcome = match reply {
                Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                    Ok(v) if v["selectedAccount"].is_string() => Ok(()),
                    Ok(v) => Err(format!("no account: {v}")),
                    Err(e) => Err(format!("not JSON: {e}")),
                },
                Ok(r) => {
                    let status = r.status();
                    Err(format!("{status}: {}", r.text().await.unwrap_or_default()))
                }
                Err(e) => Err(format!("{e}")),
            };
            match outcome {
                Ok(()) => {
                    state.ok.fetch_add(1, Ordering::SeqCst);
                }
                // A call answered after the poller was told to stop does not count.
                Err(e) if state.on.load(Ordering::SeqCst) => {
                    state
                        .failures
                        .lock()
                        .unwrap()
                        .push(format!("at {at:?}: {e}"));
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    calls
}

/// Starts a gateway in `ns` on port 5000 of its address (plain HTTP, no health server);
/// returns when it announces itself.
async fn gateway(
    ns: &Ns,
    config: &Path,
    store: &str,
    dir: &Path,
    env: &[(&str, String)],
) -> Member {
    let state = dir.join(&ns.name);
    std::fs::create_dir_all(&state).unwrap();
    let config = config.display().to_string();
    let state = state.display().to_string();
    let cmd = in_ns(
        ns,
        &[
            "--oauth1a",
            "--config",
            &config,
            "--store",
            store,
            "--json",
            "gateway",
            "--plain",
            "--listen",
            "0.0.0.0:5000",
            "--health",
            "off",
            "--state-dir",
            &state,
        ],
        env,
    );
    let mut member = Member::spawn(&format!("gateway in {} ({})", ns.name, ns.addr), cmd);
    member
        .wait_for("the gateway's announcement", Duration::from_secs(40), |m| {
            m.out
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("\"gateway\""))
        })
        .await;
    let announced: Value = member
        .out
        .lock()
        .unwrap()
        .iter()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap();
    // The fleet's store, not a token file, keeps its tokens.
    assert!(announced["token_file"].is_null(), "{announced}");
    let scheme = store.split(':').next().unwrap();
    assert!(
        announced["store"]
            .as_str()
            .is_some_and(|s| s.starts_with(scheme)),
        "{announced}"
    );
    member
}

/// `ibauth ARGS` run again and again from each namespace in turn, on a thread, until stopped.
struct OneShots {
    on: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<u64>, Vec<String>)>,
}

impl OneShots {
    fn start(names: Vec<String>, args: Vec<String>, env: Vec<(String, String)>) -> OneShots {
        let on = Arc::new(AtomicBool::new(true));
        let running = on.clone();
        let thread = std::thread::spawn(move || {
            let mut ok = vec![0; names.len()];
            let mut failed = Vec::new();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let env: Vec<(&str, String)> =
                env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            while running.load(Ordering::SeqCst) {
                for (i, name) in names.iter().enumerate() {
                    let out = in_named_ns(name, &args, &env).output().unwrap();
                    let answer: Option<Value> = serde_json::from_slice(&out.stdout).ok();
                    if out.status.success()
                        && answer.is_some_and(|a| a["selectedAccount"].is_string())
                    {
                        ok[i] += 1;
                    } else {
                        failed.push(format!("from {name}: {}", common::text(&out)));
                    }
                }
            }
            (ok, failed)
        });
        OneShots { on, thread }
    }

    /// Successes per namespace, and every failure.
    fn stop(self) -> (Vec<u64>, Vec<String>) {
        self.on.store(false, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

#[derive(Clone, Copy, Debug)]
enum Store {
    Postgres,
    Redis,
}

/// A store server in this namespace, on every address (PostgreSQL) or on `service` (Redis),
/// keeping its data across a restart.
enum Server {
    Pg(PgServer),
    Redis(RedisServer),
}

impl Server {
    fn start(kind: Store, service: Ipv4Addr) -> Server {
        match kind {
            Store::Postgres => Server::Pg(PgServer::builder().listen("*").start()),
            Store::Redis => Server::Redis(
                RedisServer::builder()
                    .bind(service.into())
                    .persistent(true)
                    .start(),
            ),
        }
    }

    fn url(&self, service: Ipv4Addr) -> String {
        match self {
            // Plain TCP off the loopback must be asked for (TLS is the default there).
            Server::Pg(pg) => format!("{}?sslmode=disable", pg.url_for(&service.to_string())),
            Server::Redis(redis) => redis.url(),
        }
    }

    fn stop(&mut self) {
        match self {
            Server::Pg(pg) => pg.stop(),
            Server::Redis(redis) => redis.stop(),
        }
    }

    fn start_again(&mut self) {
        match self {
            Server::Pg(pg) => pg.start_again(),
            Server::Redis(redis) => redis.start_again(),
        }
    }
}

fn logs(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| m.log())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The three-host scenario on `kind`'s store.
async fn three_gateways_share_one_login(kind: Store) {
    let dir = temp_dir(&format!("fleet-hosts-{kind:?}"));
    let net = namespaces(3);
    let service = net[0].host;
    let (sandbox, config) = sandbox(&dir, service).await;
    let mut server = tokio::task::spawn_blocking(move || Server::start(kind, service))
        .await
        .unwrap();
    let url = server.url(service);
    let key = store_key(&dir);
    let env = [
        ("IBAUTH_STORE_KEY_FILE", key.display().to_string()),
        ("IBAUTH_LEASE_TTL", TTL.as_secs().to_string()),
        ("IBAUTH_TICKLE_INTERVAL", TICKLE.to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ];
    let started = Instant::now();
    let mut gateways = Vec::new();
    for ns in &net {
        gateways.push(gateway(ns, &config, &url, &dir, &env).await);
    }
    let all = |g: &[Member]| logs(&g.iter().collect::<Vec<_>>());
    let mut view = View::new(&url).await;
    let (first, generation) = view
        .wait_leader(
            Duration::from_secs(20),
            |pid, _| gateways.iter().any(|g| g.pid() == pid),
            || all(&gateways),
        )
        .await;
    eprintln!("first leader: pid {first}, generation {generation}");
    let calls: Vec<Arc<Calls>> = net
        .iter()
        .map(|ns| poll(format!("http://{}:5000", ns.addr), started))
        .collect();
    // Every gateway answers, through the one session.
    let deadline = Instant::now() + Duration::from_secs(20);
    while calls.iter().any(|c| c.ok.load(Ordering::SeqCst) < 3) {
        assert!(
            Instant::now() < deadline,
            "not every gateway answers: {:?}\n{}",
            calls
                .iter()
                .map(|c| c.failures.lock().unwrap().clone())
                .collect::<Vec<_>>(),
            all(&gateways)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One-shot `ibauth api … --store` calls from every address in turn, while the leader is
    // killed and frozen: each reads the fleet's tokens from the store (never a login).
    let oneshots = OneShots::start(
        net.iter().map(|ns| ns.name.clone()).collect(),
        vec![
            "--oauth1a".into(),
            "--config".into(),
            config.display().to_string(),
            "--store".into(),
            url.clone(),
            "api".into(),
            "GET".into(),
            "iserver/accounts".into(),
        ],
        env.iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    );
    let user = || sandbox.user_stats(SANDBOX_CREDENTIAL);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        user().live_session_tokens,
        1,
        "one login\n{}",
        all(&gateways)
    );
    assert_eq!(user().ticklers.len(), 1, "{:?}", user());
    let leader_ns = gateways.iter().position(|g| g.pid() == first).unwrap();
    assert_eq!(
        user().ticklers,
        vec![std::net::IpAddr::V4(net[leader_ns].addr)],
        "the leader's address tickles"
    );

    // kill -9 the leader: a follower takes over within the ttl, with the stored tokens.
    let killed_at = Instant::now();
    // Its own clients lose it, of course: only the others' calls count from here.
    calls[leader_ns].on.store(false, Ordering::SeqCst);
    gateways[leader_ns].signal(libc::SIGKILL);
    let (second, generation2) = view
        .wait_leader(
            TTL + TAKEOVER_SLACK + Duration::from_secs(2),
            |pid, _| pid != first,
            || all(&gateways),
        )
        .await;
    let takeover = killed_at.elapsed();
    eprintln!("takeover after SIGKILL: {takeover:?}, pid {second}, generation {generation2}");
    assert!(
        takeover <= TTL + TAKEOVER_SLACK,
        "takeover after {takeover:?} (ttl {TTL:?})"
    );
    assert!(generation2 > generation, "{generation2} > {generation}");
    let second_ns = gateways.iter().position(|g| g.pid() == second).unwrap();
    // The new leader tickles: the sandbox sees its address.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !user()
        .ticklers
        .contains(&std::net::IpAddr::V4(net[second_ns].addr))
    {
        assert!(
            Instant::now() < deadline,
            "the new leader does not tickle: {:?}",
            user()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        user().live_session_tokens,
        1,
        "no new login\n{}",
        all(&gateways)
    );

    // SIGSTOP the new leader past its ttl: the third takes over; thawed, the frozen one's
    // renewal is refused (a stale write) and it follows.
    let third_ns = 3 - leader_ns - second_ns;
    gateways[second_ns].signal(libc::SIGSTOP);
    let (third, generation3) = view
        .wait_leader(
            TTL + TAKEOVER_SLACK + Duration::from_secs(2),
            |pid, _| pid == gateways[third_ns].pid(),
            || all(&gateways),
        )
        .await;
    assert!(generation3 > generation2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    gateways[second_ns].signal(libc::SIGCONT);
    gateways[second_ns]
        .wait_for(
            "the thawed leader's stale write refused",
            Duration::from_secs(10),
            |m| m.stderr_has("stale write") && m.stderr_has("stepping down to follower"),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        view.leader().await,
        Some((third, generation3)),
        "the thawed process follows"
    );

    // (A one-shot needs the store: they stop before it does.)
    let (shots, failed) = tokio::task::spawn_blocking(move || oneshots.stop())
        .await
        .unwrap();
    eprintln!("one-shot API calls per namespace: {shots:?}");
    assert!(
        failed.is_empty(),
        "one-shot API calls failed: {failed:#?}\n{}",
        all(&gateways)
    );
    for (ns, n) in net.iter().zip(&shots) {
        assert!(
            *n >= 2,
            "too few one-shot calls from {}: {shots:?}",
            ns.name
        );
    }

    // The store restarted mid-run: the sessions go on, and the stored document is still there.
    let identity = view.identity.clone().expect("an identity by now");
    let before = view
        .coord
        .load(&identity)
        .await
        .unwrap()
        .expect("a document");
    let server = tokio::task::spawn_blocking(move || {
        server.stop();
        std::thread::sleep(Duration::from_secs(1));
        server.start_again();
        server
    })
    .await
    .unwrap();
    tokio::time::sleep(TTL * 2).await;
    let (after, _) = view
        .wait_leader(
            Duration::from_secs(10),
            |pid, _| pid == gateways[third_ns].pid() || pid == gateways[second_ns].pid(),
            || all(&gateways),
        )
        .await;
    let kept = view
        .coord
        .load(&identity)
        .await
        .unwrap()
        .expect("the document survived");
    assert!(kept.version >= before.version, "{kept:?} after {before:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;

    for c in &calls {
        c.on.store(false, Ordering::SeqCst);
    }
    let stats = user();
    let everything = all(&gateways);
    eprintln!(
        "calls per gateway: {:?}; sandbox: {stats:?}",
        calls
            .iter()
            .map(|c| c.ok.load(Ordering::SeqCst))
            .collect::<Vec<_>>()
    );
    for (i, c) in calls.iter().enumerate() {
        let failures = c.failures.lock().unwrap().clone();
        assert!(
            failures.is_empty(),
            "gateway {i}'s calls failed: {failures:?}\n{everything}"
        );
        assert!(
            c.ok.load(Ordering::SeqCst) >= 10,
            "gateway {i}: too few calls"
        );
    }
    assert_eq!(
        stats.live_session_tokens, 1,
        "one login in all: {stats:?}\n{everything}"
    );
    assert_eq!(
        stats.max_concurrent_ticklers, 1,
        "one tickler at a time: {stats:?}\n{everything}"
    );
    assert_eq!(stats.takeovers, 0, "{stats:?}");
    assert_eq!(
        (
            stats.live_sessions,
            stats.max_live_sessions,
            stats.brokerage_sessions
        ),
        (1, 1, 1),
        "one session at the sandbox all along: {stats:?}"
    );
    assert_eq!(sandbox.counters().brokerage_takeovers, 0);
    assert!(stats.tickles > 20, "the session was kept alive: {stats:?}");
    assert!(gateways[leader_ns].exited(), "the killed leader stays dead");

    // `ibauth status` on a follower's address: the leader, its generation and the followers —
    // and no tickle from there (the sandbox would count a second tickler beside the leader,
    // which tickles every 0.3 s, well within the window).
    let leader_ns = gateways.iter().position(|g| g.pid() == after).unwrap();
    let follower_ns = [second_ns, third_ns]
        .into_iter()
        .find(|&i| i != leader_ns)
        .unwrap();
    let config_text = config.display().to_string();
    let out = in_ns(
        &net[follower_ns],
        &[
            "--oauth1a",
            "--config",
            &config_text,
            "--store",
            &url,
            "--json",
            "status",
        ],
        &env,
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    let lines = common::json_lines(&out.stdout);
    let fleet = lines
        .iter()
        .find(|l| l["step"] == "fleet")
        .unwrap_or_else(|| panic!("no fleet step: {lines:?}"));
    let holder = fleet["leader"]["holder"].as_str().unwrap();
    assert_eq!(
        holder.split(':').nth(1),
        Some(after.to_string().as_str()),
        "{fleet}"
    );
    assert!(
        fleet["leader"]["generation"].as_u64().unwrap() >= generation3,
        "{fleet}"
    );
    let followers = fleet["followers"].as_array().unwrap();
    assert_eq!(followers.len(), 1, "the other live gateway: {fleet}");
    assert_eq!(fleet["document"]["current_key"], true, "{fleet}");
    let checked = lines
        .iter()
        .find(|l| l["step"] == "auth status")
        .unwrap_or_else(|| panic!("no auth status step: {lines:?}"));
    assert_eq!(checked["authenticated"], true, "{checked}");
    assert!(
        lines.iter().all(|l| l["step"] != "tickle"),
        "a fleet member's status does not tickle: {lines:?}"
    );
    tokio::time::sleep(TICKLER_WINDOW).await;
    assert_eq!(
        user().max_concurrent_ticklers,
        1,
        "status on a follower's host is not a second tickler: {:?}",
        user()
    );
    drop(gateways);
    drop(server);
    drop(net);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_gateways_on_three_addresses_share_one_login_through_postgres() {
    three_gateways_share_one_login(Store::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_gateways_on_three_addresses_share_one_login_through_redis() {
    three_gateways_share_one_login(Store::Redis).await;
}

/// OAuth 2.0: the leader's SSO session is bound to its address. A member on that address uses
/// it; one on another address refuses it with the reason and what to do, without sending the
/// token (the sandbox sees no mismatch) and without logging in over the fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oauth2_followers_use_the_session_on_the_leaders_address_and_refuse_it_elsewhere() {
    let dir = temp_dir("fleet-hosts-oauth2");
    let net = namespaces(2);
    let service = net[0].host;
    let (sandbox, config) = sandbox(&dir, service).await;
    let pg = tokio::task::spawn_blocking(|| PgServer::builder().listen("*").start())
        .await
        .unwrap();
    let url = format!("{}?sslmode=disable", pg.url_for(&service.to_string()));
    let key = store_key(&dir);
    let env = |ns: &Ns| {
        vec![
            ("IBAUTH_STORE_KEY_FILE", key.display().to_string()),
            ("IBAUTH_LEASE_TTL", TTL.as_secs().to_string()),
            ("IBAUTH_PUBLIC_IP", ns.addr.to_string()),
            ("RUST_LOG", "info".to_owned()),
        ]
    };
    let config = config.display().to_string();
    let mut leader = Member::spawn(
        "keepalive (OAuth 2.0)",
        in_ns(
            &net[0],
            &[
                "--config",
                &config,
                "--store",
                &url,
                "--json",
                "keepalive",
                "--interval",
                TICKLE,
            ],
            &env(&net[0]),
        ),
    );
    leader
        .wait_for("the leader's session", Duration::from_secs(30), |m| {
            m.out
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("\"authenticated\"") && l.contains("\"leader\""))
        })
        .await;
    let api = |ns: &Ns| {
        in_ns(
            ns,
            &[
                "--config",
                &config,
                "--store",
                &url,
                "api",
                "GET",
                "iserver/accounts",
            ],
            &env(ns),
        )
        .output()
        .unwrap()
    };
    // The same address: the leader's session works.
    let same = api(&net[0]);
    assert!(same.status.success(), "{}", common::text(&same));
    let accounts: Value = serde_json::from_slice(&same.stdout).unwrap();
    assert!(accounts["selectedAccount"].is_string(), "{accounts}");
    // Another address: refused here, with why and what to do; nothing sent with the token.
    let other = api(&net[1]);
    assert_eq!(other.status.code(), Some(3), "{}", common::text(&other));
    let text = common::text(&other);
    assert!(
        text.contains(&format!("opened for public IP {}", net[0].addr))
            && text.contains(&format!("this host's public IP is {}", net[1].addr))
            && text.contains("one egress address")
            && text.contains("OAuth 1.0a"),
        "{text}"
    );
    let stats = sandbox.user_stats(SANDBOX_CREDENTIAL);
    assert_eq!(
        stats.sso_sessions,
        1,
        "one login: {stats:?}\n{}",
        leader.log()
    );
    assert_eq!(
        stats.ip_mismatches, 0,
        "the bearer was never sent from elsewhere"
    );
    assert_eq!(sandbox.counters().ip_mismatches, 0);
    // Only the leader tickles, from its address.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sandbox.user_stats(SANDBOX_CREDENTIAL).tickles < 3 {
        assert!(
            Instant::now() < deadline,
            "the leader does not tickle\n{}",
            leader.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = sandbox.user_stats(SANDBOX_CREDENTIAL);
    assert_eq!(
        stats.ticklers,
        vec![std::net::IpAddr::V4(net[0].addr)],
        "{stats:?}"
    );
    assert_eq!(stats.max_concurrent_ticklers, 1, "{stats:?}");
    assert_eq!(stats.sso_sessions, 1, "still one login: {stats:?}");
    // Rotation: a member given the rotated key file (the new key first, the old one kept)
    // still opens the document the leader sealed with the old key, and `status` says which
    // key that is, so the old one is not retired too early.
    let rotated = dir.join("rotated.key");
    std::fs::copy(&key, &rotated).unwrap();
    let out = ibauth()
        .args(["store-key", "--rotate"])
        .arg(&rotated)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    let mut env0 = env(&net[0]);
    env0[0].1 = rotated.display().to_string();
    let out = in_ns(
        &net[0],
        &["--config", &config, "--store", &url, "--json", "status"],
        &env0,
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", common::text(&out));
    let lines = common::json_lines(&out.stdout);
    let fleet = lines.iter().find(|l| l["step"] == "fleet").unwrap();
    assert_eq!(fleet["document"]["current_key"], false, "{fleet}");
    assert!(fleet["leader"]["holder"].is_string(), "{fleet}");
    assert!(
        lines.iter().any(|l| l["step"] == "auth status"),
        "the old key opened the document: {lines:?}"
    );
    assert!(!leader.exited(), "the leader still runs\n{}", leader.log());
    drop(leader);
    drop(pg);
    drop(net);
}
