//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

/// Authenticate to the Interactive Brokers Web API (OAuth 2.0) and manage the brokerage session.
#[derive(Debug, Parser)]
#[command(name = "ibauth", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// Config file (default: $IBAUTH_CONFIG, else ./config.yaml). IBAUTH_* variables override it.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Use OAuth 1.0a (the `oauth1a:` section, IBAUTH_OAUTH1A_* or ibind's IBIND_* variables).
    /// Chosen automatically when the environment asks for it or the file has only that section.
    #[arg(long, global = true)]
    pub oauth1a: bool,

    /// Print JSON (one object per line) instead of text.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr (before the command: `ibauth -q status`).
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,

    /// OAuth 1.0a third party: the consumer in the `oauth1a:` section (no access token there);
    /// the user authorises in a browser, and the grant is kept in the token file.
    #[arg(long, global = true)]
    pub third_party: bool,

    /// Third party: how the user authorises when no valid grant is stored.
    #[arg(long, global = true, value_enum, default_value_t = FlowArg::Auto, value_name = "FLOW")]
    pub flow: FlowArg,

    /// Third party: seconds to wait for the authorisation (0 = forever).
    #[arg(long, global = true, default_value_t = 300, value_name = "SECS")]
    pub auth_timeout: u64,

    /// Third party: a stored grant older than this many seconds is not reused.
    #[arg(long, global = true, default_value_t = 7 * 86_400, value_name = "SECS")]
    pub max_age: u64,

    /// A fleet's shared store instead of the token file: postgres://… or redis://… — every
    /// process on every host that names it shares one login [default: `store:` in the config,
    /// or IBAUTH_STORE]. Needs the fleet's key (IBAUTH_STORE_KEY_FILE, IBAUTH_STORE_KEY or
    /// `store_key_file:`; `ibauth store-key` makes one). See docs/fleet.md.
    #[arg(long, global = true, value_name = "URL", value_parser = parse_store)]
    pub store: Option<StoreArg>,

    /// Colour: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto, value_name = "WHEN")]
    pub color: Color,

    #[command(subcommand)]
    pub command: Command,
}

/// How a third-party login asks for the user's authorisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowArg {
    /// The browser where one can be opened and a callback is registered, else manual.
    Auto,
    /// A local HTTPS callback and the system browser.
    Browser,
    /// Print the URL, paste the redirect (or the verifier) on stdin.
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 other error, 2 usage, 3 configuration, 4 rejected by IBKR, \
5 network, timeout or pacing wait too long, 6 session not authenticated.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole OAuth 2.0 flow against an embedded sandbox: no config, no network.
    #[command(
        after_help = "Example:\n  ibauth demo\n  ibauth demo --tls --json\n  ibauth demo --oauth1a"
    )]
    Demo {
        /// Use HTTPS (the sandbox generates a CA that the client trusts).
        #[arg(long)]
        tls: bool,
        /// Number of tickles before logging out.
        #[arg(long, default_value_t = 3)]
        tickles: u32,
        /// Use OAuth 1.0a (live session token by Diffie-Hellman, HMAC-SHA256-signed requests).
        #[arg(long)]
        oauth1a: bool,
    },
    /// Log in (or reuse the stored tokens while valid), initialise the brokerage session, and
    /// store the tokens in the token file for the other commands and processes.
    #[command(
        after_help = "Example:\n  ibauth login --config config.yaml\n  ibauth login --force --json\n  ibauth login --third-party --flow manual"
    )]
    Login {
        /// Get new tokens even if valid ones are stored.
        #[arg(long)]
        force: bool,
    },
    /// Show the stored session: tickle it with the stored tokens and report the flags, token
    /// ages and expiries, and the API host. Read-only: it never logs in (exit 6 when there is
    /// no valid stored session).
    #[command(after_help = "Example:\n  ibauth status\n  ibauth status --json")]
    Status,
    /// Tickle the session, logging in if needed (or taking the tokens another process stored),
    /// and initialise the brokerage session if it is not authenticated.
    #[command(after_help = "Example:\n  ibauth tickle")]
    Tickle,
    /// Call any Web API endpoint with the stored session (logging in if needed), paced under
    /// IBKR's limits; the answer's JSON on stdout (pretty on a terminal). Exits 4 on an error
    /// status.
    #[command(
        after_help = "Example:\n  ibauth api GET portfolio/accounts\n  ibauth api GET iserver/marketdata/snapshot -q conids=265598 -q fields=31,84,86\n  ibauth api POST iserver/account/U1234567/orders --data @order.json\n  ibauth api DELETE iserver/account/U1234567/order/1234"
    )]
    Api {
        /// The HTTP method (GET, POST, PUT, DELETE, …).
        method: String,
        /// The endpoint, relative to /v1/api/ (`portfolio/accounts`) or absolute
        /// (`/v1/api/portfolio/accounts`).
        path: String,
        /// A query parameter (repeatable).
        #[arg(short = 'q', long = "query", value_name = "KEY=VALUE")]
        query: Vec<String>,
        /// The JSON body, or `@FILE` to read it from a file (`@-`: stdin).
        #[arg(short = 'd', long, value_name = "JSON|@FILE")]
        data: Option<String>,
    },
    /// Print the `Authorization` header value for a request (OAuth 2.0: the bearer; OAuth
    /// 1.0a: a signature for exactly this method and path), or a ready curl command line.
    #[command(
        after_help = "Example:\n  curl -H \"Authorization: $(ibauth token)\" https://api.ibkr.com/v1/api/iserver/accounts\n  ibauth token --curl --method POST --path /v1/api/tickle"
    )]
    Token {
        /// The request's method (OAuth 1.0a signs it).
        #[arg(long, default_value = "GET")]
        method: String,
        /// The request's path on the API host (OAuth 1.0a signs it).
        #[arg(long, default_value = "/v1/api/iserver/accounts")]
        path: String,
        /// Print a curl command line instead of the header value.
        #[arg(long)]
        curl: bool,
    },
    /// Log out the stored session and forget its tokens (nothing to do if none is stored).
    #[command(after_help = "Example:\n  ibauth logout")]
    Logout,
    /// Open the authenticated WebSocket with the stored session (logging in if needed) and print
    /// each message (one JSON per line) until Ctrl-C; a session it opened itself it logs out of.
    #[command(after_help = "Example:\n  ibauth ws --oauth1a\n  ibauth ws --count 3")]
    Ws {
        /// Stop after this many messages.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Keep the brokerage session alive until Ctrl-C/SIGTERM: tickle, recover, log out once.
    #[command(
        after_help = "Example:\n  ibauth keepalive --health 127.0.0.1:8080\n  ibauth keepalive --json --interval 30"
    )]
    Keepalive {
        /// Seconds between tickles [default: `tickle_interval` in the config file, or
        /// IBAUTH_TICKLE_INTERVAL, or 60].
        #[arg(long, value_name = "SECS")]
        interval: Option<f64>,
        /// Serve /livez, /readyz and /status on this address.
        #[arg(long, value_name = "ADDR")]
        health: Option<SocketAddr>,
    },
    /// A drop-in replacement for IBKR's Client Portal Gateway and IBeam on this session: serve
    /// the Web API on localhost:5000 to clients that send no credentials (ibind without OAuth,
    /// IBeam setups, `curl -k`), with health checks on 5001, until Ctrl-C/SIGTERM (then drain
    /// and log out once). Settings: these flags, then IBeam's IBEAM_* variables, then the
    /// gateway's conf.yaml (--conf), then the defaults. Logs at info by default (-q: errors,
    /// -v: debug), one JSON object per line with --json; the access log's target is
    /// ibauth_gateway::access. Needs an account with OAuth access: see docs/gateway.md.
    #[command(
        after_help = "Example:\n  ibauth gateway\n  ibauth gateway --conf clientportal.gw/root/conf.yaml\n  ibauth gateway --plain --listen 127.0.0.1:5000 --health off\n  ibauth --oauth1a --json gateway --state-dir /var/lib/ibauth\n  curl -k https://localhost:5000/v1/api/iserver/auth/status"
    )]
    Gateway {
        /// Where clients connect (repeatable) [default: the port of IBEAM_GATEWAY_BASE_URL or
        /// conf.yaml's listenPort, else 5000, on every IPv4 and IPv6 interface: [::]:5000].
        #[arg(long, value_name = "ADDR")]
        listen: Vec<SocketAddr>,
        /// IBKR's gateway configuration (clientportal.gw/root/conf.yaml), read unchanged:
        /// listenPort, listenSsl, proxyRemoteHost, cors and ips are used, every other key is
        /// reported once.
        #[arg(long, value_name = "PATH")]
        conf: Option<PathBuf>,
        /// Plain HTTP instead of HTTPS (as `listenSsl: false`).
        #[arg(long, conflicts_with_all = ["cert", "key"])]
        plain: bool,
        /// HTTPS with this certificate chain (PEM) instead of a self-signed certificate.
        #[arg(long, value_name = "PEM", requires = "key")]
        cert: Option<PathBuf>,
        /// The private key (PEM) for --cert.
        #[arg(long, value_name = "PEM", requires = "cert")]
        key: Option<PathBuf>,
        /// Where the self-signed certificate (DIR/tls/) and, unless the config names one, the
        /// token file (DIR/tokens.json) are kept [default: ibauth's state folder,
        /// ~/.local/state/ibauth].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// The health server (/livez, /readyz, /status, /activate, /deactivate): an address,
        /// or `off` [default: [::]:5001, or the port of IBEAM_HEALTH_SERVER_PORT].
        #[arg(long, value_name = "ADDR|off", value_parser = parse_health)]
        health: Option<Health>,
        /// What a client's logout does: `shared` answers it here and the session goes on for
        /// every other client; `pass` ends the session.
        #[arg(long, value_enum, value_name = "MODE")]
        logout: Option<LogoutArg>,
        /// Longest a request waits for its turn under IBKR's pacing limits before the gateway
        /// answers 429 with Retry-After itself [default: 10].
        #[arg(long, value_name = "SECS")]
        max_wait: Option<f64>,
        /// Start dormant: logged out, clients answered 503, until POST /activate on the
        /// health port (as IBEAM_START_ACTIVE=false).
        #[arg(long)]
        inactive: bool,
    },
    /// Check a configuration without logging in, and say how to fix each problem: key files
    /// (present, private, PEM shape, RSA ≥ 2048), the registered public key, DH parameters,
    /// the access-token secret, consumer and realm, DNS, TLS, clock skew, the token file.
    #[command(
        after_help = "Exits 3 if any check fails.\n\nExample:\n  ibauth doctor\n  ibauth doctor --public-key public.pem --json"
    )]
    Doctor {
        /// The public key you registered with IBKR, to check it matches private_key_file.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
    /// Make the key that seals a fleet's tokens in its shared store (AES-256: 32 random bytes,
    /// base64): printed on stdout, or written to FILE with mode 0600 (never over an existing
    /// file). --rotate FILE puts a new key first in an existing key file and keeps the old
    /// ones after it (the first key seals, every key opens); --retire FILE keeps only the first.
    /// Prints the key's id, never the key, when writing a file.
    #[command(
        name = "store-key",
        after_help = "Example:\n  ibauth store-key /etc/ibauth/store.key\n  ibauth store-key > store.key && chmod 600 store.key\n  ibauth store-key --rotate /etc/ibauth/store.key\n  ibauth store-key --retire /etc/ibauth/store.key"
    )]
    StoreKey {
        /// The key file to create (mode 0600; refused if it exists). Without it, the key goes
        /// to stdout.
        #[arg(value_name = "FILE", conflicts_with_all = ["rotate", "retire"])]
        file: Option<PathBuf>,
        /// Rotate: a new key first in this existing key file, the old keys kept after it.
        #[arg(long, value_name = "FILE", conflicts_with = "retire")]
        rotate: Option<PathBuf>,
        /// After a rotation, once `ibauth status` shows the document sealed with the current
        /// key: keep only the first (current) key of this key file.
        #[arg(long, value_name = "FILE")]
        retire: Option<PathBuf>,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  ibauth completions bash > ~/.local/share/bash-completion/completions/ibauth\n  ibauth completions zsh > ~/.zfunc/_ibauth"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Many OAuth 1.0a sessions (third-party grants, one per user, and first-party users with
    /// their own consumers: --consumer) kept alive by workers that
    /// share them through a PostgreSQL store: enroll grants, run workers (on as many hosts as
    /// you like), read the queue.
    #[command(
        after_help = "The consumer (keys, DH parameters, REST URL) is the `oauth1a:` section of the config file, without an access token; more with --consumer NAME=CONFIG (grants name theirs with \"consumer\": \"NAME\").\n\nExample:\n  ibauth --config consumer.yaml fleet --store postgres://ibauth@db/ibauth enroll grants.jsonl\n  ibauth --config consumer.yaml fleet --store postgres://ibauth@db/ibauth run --workers 4\n  ibauth --config consumer.yaml fleet --consumer alice=alice.yaml --consumer bob=bob.yaml --store postgres://ibauth@db/ibauth run\n  ibauth fleet --store postgres://ibauth@db/ibauth stats"
    )]
    Fleet {
        /// The key file that seals session documents [default: `store_key_file`, or
        /// IBAUTH_STORE_KEY_FILE / IBAUTH_STORE_KEY].
        #[arg(long, value_name = "FILE")]
        store_key_file: Option<PathBuf>,
        /// A named consumer besides the default one (repeatable): CONFIG is an ibauth config
        /// whose `oauth1a:` section is that consumer (a first-party user's own consumer key,
        /// keys, DH parameters and realm; its access token is not used; read from the file alone, not
        /// the environment). Grants name it with
        /// "consumer": "NAME"; a runner without it leaves those sessions to one that has it.
        #[arg(long = "consumer", value_name = "NAME=CONFIG", value_parser = parse_consumer)]
        consumers: Vec<(String, PathBuf)>,
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Serve a local IBKR auth emulator with a generated credential set, until Ctrl-C.
    #[command(
        after_help = "Example:\n  ibauth sandbox --dir ./sandbox --tls\n  ibauth --config ./sandbox/config.yaml login"
    )]
    Sandbox {
        /// Folder for the credential set (keys, config.yaml, ca.pem); reused if present.
        #[arg(long, value_name = "DIR", default_value = "sandbox")]
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5000")]
        listen: SocketAddr,
        /// Serve HTTPS with a generated CA (written to DIR/ca.pem).
        #[arg(long)]
        tls: bool,
        /// Access-token lifetime in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 86_399)]
        access_token_ttl: u64,
        /// SSO-session (bearer) lifetime in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 86_400)]
        sso_session_ttl: u64,
        /// Drop every brokerage session daily at this time, as IBKR's nightly maintenance
        /// does (01:00 regional time): HH:MM (UTC), or HH:MM±HH:MM for a UTC offset, e.g.
        /// 01:00-05:00 for US/Eastern standard time.
        #[arg(long, value_name = "HH:MM[±HH:MM]")]
        nightly_reset: Option<ibauth_sandbox::NightlyReset>,
        /// Do not serve the test-only admin API (/__sandbox/…), which lets anyone who reaches
        /// the port drop sessions and script failures.
        #[arg(long)]
        no_admin: bool,
        /// Tickles of one user from two source addresses this close together count as
        /// concurrent ticklers (reported at /__sandbox/users): e.g. 5s, 500ms, 2m.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_window)]
        tickler_window: std::time::Duration,
    },
}

/// `ibauth fleet …`.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Store each grant of FILE (sealed) and queue it, due now. FILE has one JSON object per
    /// line: {"user", "consumer", "oauth_token", "oauth_token_secret"} (`consumer` optional: a
    /// --consumer NAME; the secret as the portal gives it, encrypted, first party too); grants
    /// already stored are kept as they are.
    Enroll {
        /// The grants file (JSON lines).
        file: PathBuf,
    },
    /// Keep the enrolled sessions alive until Ctrl-C/SIGTERM: claim due sessions, log in where
    /// needed (rate-limited), tickle, hand them back. Run it on several hosts to share the work.
    Run {
        /// Worker tasks in this process.
        #[arg(long, value_name = "N", default_value_t = 2)]
        workers: usize,
        /// Sessions a worker claims at once.
        #[arg(long, value_name = "N", default_value_t = 200)]
        batch: usize,
        /// Sessions a worker handles at once.
        #[arg(long, value_name = "N", default_value_t = 32)]
        concurrency: usize,
        /// Time between two tickles of a session.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_window)]
        tickle_every: std::time::Duration,
        /// How long a claim lasts: a dead worker's sessions are taken over after it.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_window)]
        hold: std::time::Duration,
        /// How long an idle worker waits before claiming again.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_window)]
        poll: std::time::Duration,
        /// When a failed tickle or login is tried again.
        #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_window)]
        retry_after: std::time::Duration,
        /// Logins per second (IBKR rate-limits them).
        #[arg(long, value_name = "RATE", default_value_t = 2.0)]
        login_rate: f64,
        /// Logins allowed at once after a quiet spell.
        #[arg(long, value_name = "N", default_value_t = 4)]
        login_burst: u32,
        /// The login rate is per process, not shared by the fleet through the store.
        #[arg(long)]
        login_rate_per_process: bool,
        /// Print this process's counts every DURATION (and always when it stops).
        #[arg(long, value_name = "DURATION", value_parser = parse_window)]
        stats_every: Option<std::time::Duration>,
    },
    /// Take the grants of FILE (same format as enroll) out: no longer kept alive, their
    /// sessions logged out, their documents removed. Ones a worker holds right now are left:
    /// run it again after the hold.
    Retire {
        /// The grants file (JSON lines).
        file: PathBuf,
    },
    /// How many sessions are queued, due, being worked on, and how late the most overdue is.
    Stats,
}

/// `--store`: the URL, or why it is not one. Parsed here rather than by clap, whose errors
/// repeat the value given — and a store URL may hold a password.
#[derive(Clone)]
pub struct StoreArg(pub Result<ibauth::coord::StoreUrl, String>);

impl std::fmt::Debug for StoreArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(url) => write!(f, "{url:?}"),
            Err(e) => write!(f, "invalid ({e})"),
        }
    }
}

fn parse_store(text: &str) -> Result<StoreArg, String> {
    Ok(StoreArg(ibauth::coord::StoreUrl::parse(text)))
}

/// A positive duration written `<n>ms`, `<n>s`, `<n>m` or `<n>h` (a bare number is seconds).
fn parse_consumer(text: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = text
        .split_once('=')
        .ok_or("expected NAME=CONFIG, e.g. alice=alice.yaml")?;
    if !ibauth_fleet::runner::valid_consumer_name(name) {
        return Err(format!(
            "consumer name {name:?}: 1 to 64 letters, digits, '-', '_' or '.'"
        ));
    }
    if path.is_empty() {
        return Err("expected NAME=CONFIG: the config file is missing".into());
    }
    Ok((name.to_owned(), PathBuf::from(path)))
}

fn parse_window(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let amount: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 5s or 500ms"))?;
    let millis = match unit.trim() {
        "ms" => Some(amount),
        "" | "s" => amount.checked_mul(1000),
        "m" => amount.checked_mul(60_000),
        "h" => amount.checked_mul(3_600_000),
        _ => return Err(format!("`{text}`: the unit must be ms, s, m or h")),
    };
    match millis {
        Some(ms) if (1..=86_400_000).contains(&ms) => Ok(std::time::Duration::from_millis(ms)),
        _ => Err(format!("`{text}`: the window must be from 1ms to 24h")),
    }
}

/// `--health`: an address, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    At(SocketAddr),
    Off,
}

fn parse_health(text: &str) -> Result<Health, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(Health::Off);
    }
    text.parse().map(Health::At).map_err(|_| {
        format!("`{text}` is not an address such as 127.0.0.1:5001 or [::]:5001, nor `off`")
    })
}

/// `--logout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogoutArg {
    /// Answered by the gateway: the session goes on for every other client.
    Shared,
    /// Passed on: the session ends, for every client.
    Pass,
}
