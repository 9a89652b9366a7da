//! A throw-away PostgreSQL cluster: [`PgServer::start`] makes one in a temporary directory,
//! listening on 127.0.0.1 on a free port (and on a unix socket in that directory), with trust
//! authentication and `fsync` off; dropping it stops it and removes everything.
//!
//! The server programs (`initdb`, `pg_ctl`, `postgres`) are looked up in `$IBAUTH_PG_BIN`,
//! then on `PATH`, then under `/usr/lib/postgresql/*/bin` (where Debian's `postgresql` package
//! puts them, off `PATH`); missing, the start fails with how to install them
//! (`apt-get install postgresql`, which `scripts/test.sh` does). They refuse to run as root:
//! when this process is root they run as the `postgres` user, in a directory it owns.
//!
//! A cluster is made once per test process (`initdb`, about a second) and copied for each
//! server (a tenth of that), so tests can start servers of their own in parallel.
//!
//! ```no_run
//! use ibauth_testsupport::postgres::PgServer;
//!
//! let mut pg = PgServer::start();
//! let url = pg.url(); // postgres://postgres@127.0.0.1:PORT/postgres
//! pg.stop(); // the database went away…
//! pg.start_again(); // …and came back, same port, same data
//! # let _ = url;
//! ```

use std::ffi::CString;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// What to install when the programs are missing.
const INSTALL_HINT: &str = "install PostgreSQL's server programs: apt-get install postgresql (scripts/test.sh installs it), or set IBAUTH_PG_BIN to the directory holding initdb, pg_ctl and postgres";

/// Prefix of every directory this module makes in the temporary directory.
const PREFIX: &str = "ibauth-pg-";

/// How a [`PgServer`] is made.
#[derive(Debug, Clone)]
pub struct PgServerBuilder {
    listen: String,
    password: Option<String>,
    tls: Option<(String, String)>,
    settings: Vec<(String, String)>,
}

impl Default for PgServerBuilder {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1".into(),
            password: None,
            tls: None,
            settings: Vec::new(),
        }
    }
}

impl PgServerBuilder {
    /// The addresses to listen on (`listen_addresses`: `127.0.0.1` by default; `0.0.0.0` or
    /// an address inside a network namespace for tests across hosts). The unix socket is
    /// always there too.
    pub fn listen(mut self, addresses: &str) -> Self {
        self.listen = addresses.to_owned();
        self
    }

    /// Requires this password for the `postgres` user over TCP (SCRAM); the unix socket stays
    /// trusted.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Serves TLS with this certificate chain and private key (PEM).
    pub fn tls(mut self, cert_pem: &str, key_pem: &str) -> Self {
        self.tls = Some((cert_pem.to_owned(), key_pem.to_owned()));
        self
    }

    /// Any other `postgresql.conf` setting (the value as the file wants it, quotes included).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Makes the cluster and starts it; panics with what went wrong (and how to fix it).
    pub fn start(self) -> PgServer {
        let bin = bin_dir().unwrap_or_else(|e| panic!("{e}"));
        let owner = server_user().unwrap_or_else(|e| panic!("{e}"));
        sweep_stale();
        let dir = fresh_dir();
        make_dir(&dir, owner);
        let data = dir.join("data");
        if self.password.is_some() {
            // The password goes in at initdb time: no template.
            let pwfile = dir.join("pwfile");
            std::fs::write(&pwfile, self.password.as_deref().unwrap_or_default())
                .unwrap_or_else(|e| panic!("writing {}: {e}", pwfile.display()));
            chown(&pwfile, owner);
            initdb(
                &bin,
                owner,
                &data,
                &[
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    &format!("--pwfile={}", pwfile.display()),
                ],
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let _ = std::fs::remove_file(&pwfile);
        } else {
            let template = template(&bin, owner).unwrap_or_else(|e| panic!("{e}"));
            let out = run(Command::new("cp").arg("-a").arg(template).arg(&data), owner);
            check(&out, "copying the template cluster").unwrap_or_else(|e| panic!("{e}"));
        }
        let auth = if self.password.is_some() {
            "scram-sha-256"
        } else {
            "trust"
        };
        // Every address: the tests decide who can reach the listening addresses.
        let hba = format!(
            "local all all trust\nhost all all 0.0.0.0/0 {auth}\nhost all all ::/0 {auth}\n"
        );
        write_owned(&data.join("pg_hba.conf"), &hba, owner);
        // fsync off: fast, and still durable across a crash of the server (kill) — only the
        // machine's crash would lose data. synchronous_commit stays on: a commit that was
        // answered survives `kill`, as on a real server.
        let mut conf = String::from(
            "\n# ibauth-testsupport\nfsync = off\nfull_page_writes = off\n\
             shared_buffers = 16MB\nmax_connections = 100\nlogging_collector = off\n\
             log_min_messages = warning\ndynamic_shared_memory_type = posix\n",
        );
        conf.push_str(&format!("listen_addresses = '{}'\n", self.listen));
        conf.push_str(&format!("unix_socket_directories = '{}'\n", dir.display()));
        if let Some((cert, key)) = &self.tls {
            write_owned(&data.join("server.crt"), cert, owner);
            write_owned(&data.join("server.key"), key, owner);
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        for (name, value) in &self.settings {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", conf_path.display()));
        text.push_str(&conf);
        write_owned(&conf_path, &text, owner);

        let mut server = PgServer {
            dir,
            data,
            bin,
            owner,
            listen: self.listen,
            password: self.password,
            port: 0,
            running: false,
        };
        // A free port can be taken by someone else before the server binds it: try others.
        let mut last = String::new();
        for _ in 0..8 {
            server.port = free_port(&server.listen);
            match server.pg_start() {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("PostgreSQL did not start: {last}");
    }
}

/// A running (or stopped) throw-away PostgreSQL server; dropped, it is stopped and its
/// directory removed.
#[derive(Debug)]
pub struct PgServer {
    dir: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    listen: String,
    password: Option<String>,
    port: u16,
    running: bool,
}

impl PgServer {
    /// A server on 127.0.0.1 (and a unix socket), trust authentication.
    pub fn start() -> PgServer {
        PgServerBuilder::default().start()
    }

    /// How to make one with other settings.
    pub fn builder() -> PgServerBuilder {
        PgServerBuilder::default()
    }

    /// `postgres://postgres@HOST:PORT/postgres` (the password in it when one was set), HOST
    /// the listening address (127.0.0.1 when it listens on every address).
    pub fn url(&self) -> String {
        self.url_for(&self.host())
    }

    /// The same for another host name or address that reaches this server (a name the
    /// certificate is for, an address in a network namespace).
    pub fn url_for(&self, host: &str) -> String {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let auth = match &self.password {
            Some(p) => format!("postgres:{}@", percent(p)),
            None => "postgres@".into(),
        };
        format!("postgres://{auth}{host}:{}/postgres", self.port)
    }

    /// A URL over the unix socket: `postgres://postgres@%2Ftmp%2F…:PORT/postgres`.
    pub fn socket_url(&self) -> String {
        format!(
            "postgres://postgres@{}:{}/postgres",
            percent(&self.dir.display().to_string()),
            self.port
        )
    }

    /// The host in [`url`](Self::url).
    pub fn host(&self) -> String {
        let first = self.listen.split(',').next().unwrap_or("").trim();
        match first {
            "" | "*" | "0.0.0.0" => "127.0.0.1".into(),
            "::" => "::1".into(),
            other => other.to_owned(),
        }
    }

    /// The TCP port (the same across [`stop`](Self::stop) and
    /// [`start_again`](Self::start_again)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// Whether it runs now.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Stops it cleanly (`pg_ctl stop -m fast`: sessions are ended, then it shuts down);
    /// the data stays for [`start_again`](Self::start_again).
    pub fn stop(&mut self) {
        if self.running {
            self.pg_stop("fast").unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Stops it at once (`pg_ctl stop -m immediate`: every process quits without cleanup, as
    /// in a crash; the next start recovers).
    pub fn kill(&mut self) {
        if self.running {
            self.pg_stop("immediate").unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Starts it again after [`stop`](Self::stop) or [`kill`](Self::kill), on the same port
    /// with the same data.
    pub fn start_again(&mut self) {
        if self.running {
            return;
        }
        let started = Instant::now();
        loop {
            match self.pg_start() {
                Ok(()) => return,
                // The port may linger a moment after an immediate stop.
                Err(e) if started.elapsed() < Duration::from_secs(10) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("PostgreSQL did not start again: {e}"),
            }
        }
    }

    /// The server's log so far (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn pg_ctl(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("pg_ctl"));
        cmd.arg("-D").arg(&self.data);
        cmd
    }

    fn pg_start(&mut self) -> Result<(), String> {
        let out = run(
            self.pg_ctl()
                .arg("-l")
                .arg(self.dir.join("log"))
                .arg("-o")
                .arg(format!("-p {}", self.port))
                .args(["-w", "-t", "30", "start"]),
            self.owner,
        );
        if out.status.success() {
            self.running = true;
            return Ok(());
        }
        // pg_ctl may have left a postmaster that failed later: make sure nothing runs.
        let _ = self.pg_stop("immediate");
        self.running = false;
        Err(format!(
            "pg_ctl start: {}{}\n--- server log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 40)
        ))
    }

    fn pg_stop(&mut self, mode: &str) -> Result<(), String> {
        let out = run(
            self.pg_ctl().args(["-m", mode, "-w", "-t", "30", "stop"]),
            self.owner,
        );
        self.running = false;
        if out.status.success() || !self.data.join("postmaster.pid").exists() {
            return Ok(());
        }
        Err(format!(
            "pg_ctl stop -m {mode}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running || self.data.join("postmaster.pid").exists() {
            let _ = self.pg_stop("immediate");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`.
pub fn bin_dir() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(find_bin_dir).clone()
}

fn find_bin_dir() -> Result<PathBuf, String> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    if let Some(dir) = std::env::var_os("IBAUTH_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if complete(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "IBAUTH_PG_BIN={} does not hold initdb, pg_ctl and postgres",
                dir.display()
            ))
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() {
                // Debian links only some programs onto PATH: use the real directory.
                let real = dir
                    .join("initdb")
                    .canonicalize()
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .unwrap_or(dir.clone());
                if complete(&real) {
                    return Ok(real);
                }
                if complete(&dir) {
                    return Ok(dir);
                }
            }
        }
    }
    // /usr/lib/postgresql/<major>/bin, the newest major first.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir).ok_or_else(|| {
        format!("PostgreSQL's initdb, pg_ctl and postgres are not on PATH nor under /usr/lib/postgresql/*/bin: {INSTALL_HINT}")
    })
}

/// The uid and gid to run the server as: `postgres` when this process is root (the server
/// refuses root), this process's own otherwise (`None`).
fn server_user() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").map_err(|e| e.to_string())?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives the use of pwd's strings
    // (only the ids are read).
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(format!(
            "running as root, and PostgreSQL refuses root: there is no `postgres` user to run it as; {INSTALL_HINT} (its package creates the user)"
        ));
    }
    Ok(Some((pwd.pw_uid, pwd.pw_gid)))
}

/// Runs `cmd` (as `owner` when given), with PostgreSQL's environment variables cleared.
fn run(cmd: &mut Command, owner: Option<(u32, u32)>) -> Output {
    for var in [
        "PGDATA",
        "PGPORT",
        "PGHOST",
        "PGUSER",
        "PGDATABASE",
        "PGOPTIONS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("LC_ALL", "C").stdin(Stdio::null());
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
        // A working directory the server user can enter.
        cmd.current_dir(std::env::temp_dir());
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}; {INSTALL_HINT}", cmd.get_program()))
}

fn check(out: &Output, what: &str) -> Result<(), String> {
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn initdb(
    bin: &Path,
    owner: Option<(u32, u32)>,
    data: &Path,
    extra: &[&str],
) -> Result<(), String> {
    let out = run(
        Command::new(bin.join("initdb"))
            .arg("-D")
            .arg(data)
            .args([
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ])
            .args(extra),
        owner,
    );
    check(&out, "initdb")
}

/// A cluster made once per process (trust authentication), copied for each server.
fn template(bin: &Path, owner: Option<(u32, u32)>) -> Result<PathBuf, String> {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!(
                "{PREFIX}template-{}-{}",
                std::process::id(),
                random_tag()
            ));
            make_dir(&dir, owner);
            let data = dir.join("data");
            initdb(bin, owner, &data, &["--auth=trust"])?;
            Ok(data)
        })
        .clone()
}

/// A new directory name, unique in this process and across processes.
fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "{PREFIX}{}-{n}-{}",
        std::process::id(),
        random_tag()
    ))
}

fn random_tag() -> String {
    let mut b = [0u8; 4];
    if let Ok(f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = (&f).read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn make_dir(dir: &Path, owner: Option<(u32, u32)>) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    chown(dir, owner);
}

fn chown(path: &Path, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// Writes a file the server reads (mode 0600, owned by the server's user).
fn write_owned(path: &Path, text: &str, owner: Option<(u32, u32)>) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    chown(path, owner);
}

/// A port free on the listening address now.
fn free_port(listen: &str) -> u16 {
    let first = listen.split(',').next().unwrap_or("").trim();
    let addr = match first {
        "" | "*" => "0.0.0.0",
        "localhost" => "127.0.0.1",
        other => other,
    };
    let bind = if addr.contains(':') {
        format!("[{addr}]:0")
    } else {
        format!("{addr}:0")
    };
    TcpListener::bind(&bind)
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on {bind}: {e}"))
}

/// Removes what test processes that are gone left behind (a test killed before its servers
/// were dropped), stopping any server still running there.
fn sweep_stale() {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                continue;
            };
            let rest = rest.strip_prefix("template-").unwrap_or(rest);
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let path = entry.path();
            let data = path.join("data");
            if data.join("postmaster.pid").exists()
                && let Ok(bin) = bin_dir()
            {
                let owner = server_user().ok().flatten();
                let _ = run(
                    Command::new(bin.join("pg_ctl")).arg("-D").arg(&data).args([
                        "-m",
                        "immediate",
                        "-w",
                        "-t",
                        "10",
                        "stop",
                    ]),
                    owner,
                );
            }
            let _ = std::fs::remove_dir_all(&path);
        }
    });
}

fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_stops_and_starts_again_on_its_port() {
        let started = Instant::now();
        let mut pg = PgServer::start();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let port = pg.port();
        assert!(pg.url().starts_with("postgres://postgres@127.0.0.1:"));
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(pg.socket_dir().join(format!(".s.PGSQL.{port}")).exists());
        pg.stop();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        pg.start_again();
        assert_eq!(pg.port(), port);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        pg.kill();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        pg.start_again();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        let dir = pg.socket_dir().to_path_buf();
        drop(pg);
        assert!(!dir.exists(), "dropped, its directory is gone");
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }

    #[test]
    fn servers_start_in_parallel_on_distinct_ports() {
        let servers: Vec<PgServer> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3).map(|_| s.spawn(PgServer::start)).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut ports: Vec<u16> = servers.iter().map(PgServer::port).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 3);
    }

    #[test]
    fn urls_carry_the_password_encoded_and_bracket_ipv6() {
        let pg = PgServer {
            dir: "/nonexistent/x y".into(),
            data: "/nonexistent/x y/data".into(),
            bin: "/nonexistent".into(),
            owner: None,
            listen: "0.0.0.0".into(),
            password: Some("p@ss word".into()),
            port: 5999,
            running: false,
        };
        assert_eq!(
            pg.url(),
            "postgres://postgres:p%40ss%20word@127.0.0.1:5999/postgres"
        );
        assert_eq!(
            pg.url_for("::1"),
            "postgres://postgres:p%40ss%20word@[::1]:5999/postgres"
        );
        assert_eq!(
            pg.socket_url(),
            "postgres://postgres@%2Fnonexistent%2Fx%20y:5999/postgres"
        );
    }
}
