//! A throw-away `redis-server`, started by the test that needs it.
//!
//! ```no_run
//! use ibauth_testsupport::redis::RedisServer;
//!
//! let plain = RedisServer::start(); // no persistence: a restart starts empty
//! let mut server = RedisServer::builder().persistent(true).start();
//! let url = server.url(); // redis://127.0.0.1:PORT/0
//! server.stop(); // SIGTERM: a clean shutdown (the append-only file is flushed)
//! server.start_again(); // the same port and data directory: the same data when persistent
//! server.kill(); // SIGKILL: a crash
//! server.start_again();
//! # let _ = (url, plain);
//! # let _ = url;
//! ```
//!
//! Every server has a port of its own (a free one, found by binding port 0) and a data
//! directory of its own under the system's temporary directory, removed when the
//! [`RedisServer`] is dropped (the process is killed first). Readiness is Redis' own "Ready to
//! accept connections" (after any data is loaded) followed by a `PING`, so a test never talks
//! to a server still loading. Everything is synchronous (`std::process`): it works from plain
//! and `#[tokio::test]` tests alike, and a start takes a few milliseconds.
//!
//! A missing `redis-server` fails the test with how to install it; it never skips.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a start may take before the test fails.
const START_WAIT: Duration = Duration::from_secs(20);

/// How long a clean stop may take before the process is killed.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// What a missing redis-server fails with.
const MISSING: &str = "redis-server is not installed (the Redis tests run a real one): \
                       apt-get install redis-server (scripts/test.sh installs it)";

/// How the server is set up ([`RedisServer::builder`]).
#[derive(Debug, Clone)]
pub struct RedisServerBuilder {
    bind: IpAddr,
    persistent: bool,
    password: Option<String>,
    tls: Option<TlsFiles>,
    extra: Vec<String>,
    prefix: Vec<String>,
}

/// Certificate files for a TLS-only server ([`RedisServerBuilder::tls`]).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA that signed it (PEM); client certificates are not asked for.
    pub ca: PathBuf,
}

impl Default for RedisServerBuilder {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            persistent: false,
            password: None,
            tls: None,
            extra: Vec::new(),
            prefix: Vec::new(),
        }
    }
}

impl RedisServerBuilder {
    /// The address to listen on (default 127.0.0.1; a network namespace's own address for
    /// partition tests).
    pub fn bind(mut self, addr: IpAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Keeps data across [`RedisServer::stop`]/[`RedisServer::kill`] and
    /// [`RedisServer::start`]: `appendonly yes` (fsync on every write, so a SIGKILL loses
    /// nothing acknowledged) in the server's data directory. Default: no persistence at all
    /// (`--save "" --appendonly no`), a restart starts empty.
    pub fn persistent(mut self, yes: bool) -> Self {
        self.persistent = yes;
        self
    }

    /// Requires this password (`requirepass`); [`RedisServer::url`] carries it.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Serves TLS only (`tls-port`, the plain port off); [`RedisServer::url`] is `rediss://`.
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Passes more `--name value` arguments to `redis-server`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra.push(arg.to_owned());
        self
    }

    /// Runs `redis-server` through this command, e.g. `["ip", "netns", "exec", "ns1"]` to
    /// start it inside a network namespace (with [`bind`](Self::bind) on that namespace's
    /// address). The command must exec the server in place (keep its pid), as `ip netns exec`
    /// and `nsenter` do. Readiness is then read from the server's log only (the test's own
    /// namespace may not reach it yet).
    pub fn exec_prefix<S: AsRef<str>>(mut self, command: &[S]) -> Self {
        self.prefix = command.iter().map(|s| s.as_ref().to_owned()).collect();
        self
    }

    /// Starts the server; panics (failing the test) with what went wrong.
    pub fn start(self) -> RedisServer {
        let dir = fresh_dir();
        let mut server = RedisServer {
            config: self,
            port: 0,
            dir,
            child: None,
            starts: 0,
        };
        // A free port can be taken by another test between the probe and redis-server's own
        // bind: pick another one then (only on the first start; a restart keeps its port).
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port(server.config.bind);
            match server.try_start() {
                Ok(()) => return server,
                Err(e) if e.contains("Address already in use") => last = e,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("redis-server: no free port after 5 tries: {last}");
    }
}

/// A running (or stopped) `redis-server` of a test's own; dropped, it is killed and its data
/// directory removed.
#[derive(Debug)]
pub struct RedisServer {
    config: RedisServerBuilder,
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl RedisServer {
    /// A server on 127.0.0.1 without persistence, started.
    pub fn start() -> RedisServer {
        RedisServerBuilder::default().start()
    }

    /// Options for a server.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// `redis://[:password@]host:port/0` (`rediss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.config.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let host = match self.config.bind {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        let auth = self
            .config
            .password
            .as_deref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        format!("{scheme}://{auth}{host}:{}/0", self.port)
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.config.bind, self.port)
    }

    /// Its data directory (the append-only files when persistent, the log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts it again after [`stop`](Self::stop) or [`kill`](Self::kill), on the same port
    /// with the same data directory; a no-op while it runs. Panics if it does not come up.
    pub fn start_again(&mut self) {
        if self.is_running() {
            return;
        }
        // The port was ours a moment ago; a client's TIME_WAIT does not block a listener
        // (redis-server sets SO_REUSEADDR). Retry briefly in case the old process is still
        // releasing it.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.try_start() {
                Ok(()) => return,
                Err(e) if e.contains("Address already in use") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again).
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// A clean shutdown (SIGTERM; with persistence the append-only file is flushed), waited
    /// for; killed if it takes longer than 10 s.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        // A paused server would not act on SIGTERM.
        self.send(libc::SIGCONT);
        self.send(libc::SIGTERM);
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Freezes the process (SIGSTOP): connections stay open and nothing answers, like a
    /// server that hangs or a network that drops packets. [`resume`](Self::resume) thaws it.
    pub fn pause(&mut self) {
        self.send(libc::SIGSTOP);
    }

    /// Thaws a [`pause`](Self::pause)d server (SIGCONT).
    pub fn resume(&mut self) {
        self.send(libc::SIGCONT);
    }

    fn send(&mut self, sig: libc::c_int) {
        // Only a child still running (not yet reaped): its pid cannot belong to anyone else.
        if let Some(child) = self.child.as_mut()
            && let Ok(None) = child.try_wait()
            && let Ok(pid) = libc::pid_t::try_from(child.id())
        {
            // SAFETY: kill(2) on our own child's pid, not yet reaped.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// A crash: SIGKILL, waited for.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn try_start(&mut self) -> Result<(), String> {
        self.starts += 1;
        let log = self.dir.join(format!("redis-{}.log", self.starts));
        let mut cmd = match self.config.prefix.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg("redis-server");
                cmd
            }
            None => Command::new("redis-server"),
        };
        let port = self.port.to_string();
        let bind = self.config.bind.to_string();
        cmd.args(["--bind", &bind])
            .args(["--dir", &self.dir.to_string_lossy()])
            .args(["--logfile", &log.to_string_lossy()])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .args(["--save", ""])
            .args(["--databases", "1"]);
        match &self.config.tls {
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port", &port])
                    .args(["--tls-cert-file", &tls.cert.to_string_lossy()])
                    .args(["--tls-key-file", &tls.key.to_string_lossy()])
                    .args(["--tls-ca-cert-file", &tls.ca.to_string_lossy()])
                    .args(["--tls-auth-clients", "no"]);
            }
            None => {
                cmd.args(["--port", &port]);
            }
        }
        if self.config.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        if let Some(password) = &self.config.password {
            cmd.args(["--requirepass", password]);
        }
        for arg in &self.config.extra {
            cmd.arg(arg);
        }
        let stderr_path = self.dir.join(format!("stderr-{}.log", self.starts));
        let stderr = std::fs::File::create(&stderr_path)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(match self.config.prefix.first() {
                    Some(program) => format!("{program} (the exec prefix) is not installed"),
                    None => MISSING.into(),
                });
            }
            Err(e) => return Err(format!("redis-server: cannot start it: {e}")),
        };
        self.child = Some(child);
        match self.wait_ready(&log) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill();
                let tail = read_tail(&log);
                let stderr = read_tail(&stderr_path);
                Err(format!(
                    "redis-server on {}: {e}\n--- its log ---\n{tail}{stderr}",
                    self.addr()
                ))
            }
        }
    }

    fn wait_ready(&mut self, log: &Path) -> Result<(), String> {
        let deadline = Instant::now() + START_WAIT;
        let mut logged_ready = false;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                // 127: a prefix command (env, ip netns exec) did not find redis-server.
                if status.code() == Some(127) {
                    return Err(MISSING.into());
                }
                return Err(format!("exited at start ({status})"));
            }
            if !logged_ready {
                logged_ready = std::fs::read_to_string(log)
                    .map(|text| text.contains("Ready to accept connections"))
                    .unwrap_or(false);
            }
            let log_only = self.config.tls.is_some() || !self.config.prefix.is_empty();
            if logged_ready && (log_only || self.ping()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready within {START_WAIT:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A plain-TCP PING (with AUTH when a password is set).
    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut request = String::new();
        if let Some(password) = &self.config.password {
            request.push_str(&format!(
                "*2\r\n$4\r\nAUTH\r\n${}\r\n{password}\r\n",
                password.len()
            ));
        }
        request.push_str("*1\r\n$4\r\nPING\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        if self.config.password.is_some() {
            if reader.read_line(&mut line).is_err() || !line.starts_with("+OK") {
                return false;
            }
            line.clear();
        }
        reader.read_line(&mut line).is_ok() && line.starts_with("+PONG")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port free on `bind` (or, for an address of another network namespace, free here: a fresh
/// namespace has nothing listening anyway).
fn free_port(bind: IpAddr) -> u16 {
    let listener = TcpListener::bind(SocketAddr::new(bind, 0))
        .or_else(|_| TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)))
        .unwrap_or_else(|e| panic!("cannot bind a free port on {bind}: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("cannot read the free port on {bind}: {e}"))
        .port()
}

fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "ibauth-redis-{}-{}-{nanos:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

fn read_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(30);
    let mut tail = lines[start..].join("\n");
    tail.push('\n');
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_keep_the_port_and_drop_cleans_up() {
        let mut server = RedisServer::start();
        let (port, dir) = (server.port(), server.dir().to_owned());
        assert_eq!(server.url(), format!("redis://127.0.0.1:{port}/0"));
        assert!(server.ping());
        server.stop();
        assert!(!server.is_running() && !server.ping());
        server.start_again();
        assert_eq!(server.port(), port);
        assert!(server.ping());
        server.kill();
        assert!(!server.ping());
        server.restart();
        assert!(server.ping());
        drop(server);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    #[test]
    fn servers_started_in_parallel_get_ports_of_their_own() {
        let servers: Vec<RedisServer> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(RedisServer::start)).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("started"))
                .collect()
        });
        let mut ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 4);
        assert!(servers.iter().all(RedisServer::ping));
    }

    #[test]
    fn a_missing_redis_server_says_how_to_install_it() {
        let failed = std::panic::catch_unwind(|| {
            RedisServer::builder()
                .exec_prefix(&["env", "PATH=/nonexistent"])
                .start()
        })
        .expect_err("no redis-server on that PATH");
        let message = failed.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            message.contains("apt-get install redis-server"),
            "{message}"
        );
    }

    #[test]
    fn a_password_is_required_and_carried_in_the_url() {
        let server = RedisServer::builder().password("pw-123").start();
        assert!(server.url().starts_with("redis://:pw-123@127.0.0.1:"));
        assert!(server.ping());
    }
}
