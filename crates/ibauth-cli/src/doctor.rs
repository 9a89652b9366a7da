//! `ibauth doctor`: checks a configuration before it burns a login, and says how to fix each
//! problem. Nothing here logs in: the network checks are DNS, a TLS handshake and the server's
//! `Date` (from an unauthenticated request).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use ibauth::oauth1a::{self, Oauth1aClient};
use ibauth::policy::Policy;
use ibauth::store::{FileStore, StoreError, default_token_file};
use ibauth::{AuthConfig, AuthMethod, Config, ConfigBuilder, ConfigError, KeyError, SigningKey};
use serde_json::json;
use url::Url;

use crate::render::{Out, code};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

struct Check {
    name: String,
    level: Level,
    detail: String,
    fix: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Check>);

impl Report {
    fn ok(&mut self, name: &str, detail: impl Into<String>) {
        self.push(name, Level::Ok, detail, None::<String>);
    }
    fn warn(&mut self, name: &str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Level::Warn, detail, Some(fix));
    }
    fn fail(&mut self, name: &str, detail: impl Into<String>, fix: Option<impl Into<String>>) {
        self.push(name, Level::Fail, detail, fix);
    }
    fn push(
        &mut self,
        name: &str,
        level: Level,
        detail: impl Into<String>,
        fix: Option<impl Into<String>>,
    ) {
        self.0.push(Check {
            name: name.to_owned(),
            level,
            detail: detail.into(),
            fix: fix.map(Into::into),
        });
    }
}

pub struct Options<'a> {
    pub config: Option<&'a Path>,
    /// The method asked for on the command line (`--oauth1a`, `--third-party`).
    pub method: Option<AuthMethod>,
    pub public_key: Option<&'a Path>,
    /// `--store`: the fleet's shared store, over the config's `store:`.
    pub store: Option<ibauth::coord::StoreUrl>,
}

pub async fn run(out: Out, opts: Options<'_>) -> ExitCode {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut report = Report::default();
    let file = opts
        .config
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("IBAUTH_CONFIG").map(PathBuf::from))
        .or_else(|| Some(PathBuf::from(ibauth::DEFAULT_CONFIG_FILE)).filter(|p| p.exists()));
    match &file {
        Some(path) if path.exists() => report.ok("config file", path.display().to_string()),
        Some(path) => report.fail(
            "config file",
            format!("{} not found", path.display()),
            Some("pass --config PATH, set IBAUTH_CONFIG, or supply IBAUTH_* variables"),
        ),
        None => report.ok("config file", "none: settings from the environment"),
    }

    let method = match AuthConfig::choose_method_with_env(file.as_deref(), opts.method, &env) {
        Ok(method) => {
            report.ok("auth method", method.label());
            method
        }
        Err(e) => {
            report.fail("auth method", e.to_string(), Some(fix_for(&e)));
            return render(out, &report);
        }
    };
    let has_oauth2 = file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .is_some_and(|t| t.lines().any(|l| l.starts_with("client_id:")))
        || env.iter().any(|(k, _)| k == "IBAUTH_CLIENT_ID");
    let section = oauth1a::config::file_has_section(file.as_deref().unwrap_or(Path::new("")));
    let mut hosts: Vec<(Url, Option<Vec<u8>>)> = Vec::new();

    if has_oauth2 || method == AuthMethod::OAuth2 {
        oauth2(
            &mut report,
            file.as_deref(),
            &env,
            opts.public_key,
            &mut hosts,
        );
    }
    match method {
        AuthMethod::ThirdParty => {
            third_party_checks(&mut report, file.as_deref(), &env, &mut hosts)
        }
        AuthMethod::OAuth1a => oauth1a_checks(&mut report, file.as_deref(), &env, &mut hosts),
        AuthMethod::OAuth2 if section => {
            oauth1a_checks(&mut report, file.as_deref(), &env, &mut hosts)
        }
        AuthMethod::OAuth2 => {}
    }
    hosts.dedup_by(|a, b| a.0.host_str() == b.0.host_str() && a.0.port() == b.0.port());
    for (url, ca) in &hosts {
        out.progress(&format!("reaching {url}"));
        network(&mut report, url, ca.as_deref()).await;
    }
    let policy = Policy::load_with_env(file.as_deref(), &env).unwrap_or_default();
    match opts.store.or(policy.store.clone()) {
        Some(url) => {
            out.progress(&format!("reaching {}", url.redacted()));
            fleet_store(&mut report, &url, &policy).await;
        }
        None => token_file(&mut report, file.as_deref(), &env),
    }
    render(out, &report)
}

/// A fleet's shared store (instead of the token file): its key, then the store itself.
async fn fleet_store(report: &mut Report, url: &ibauth::coord::StoreUrl, policy: &Policy) {
    match ibauth::coord::Keyring::from_env(policy.store_key_file.as_deref()) {
        Ok(ring) => {
            let ids = ring.ids();
            report.ok(
                "store key",
                match ids.as_slice() {
                    [current] => format!("key {current}"),
                    [current, older @ ..] => format!(
                        "key {current} seals; {} open what they sealed (retire them once `ibauth status` shows the document sealed with {current})",
                        older.join(", ")
                    ),
                    [] => String::new(),
                },
            );
        }
        Err(e) => report.fail(
            "store key",
            e.to_string(),
            Some("`ibauth store-key FILE` makes one; every host of the fleet needs the same file (mode 0600), named by IBAUTH_STORE_KEY_FILE or `store_key_file:`"),
        ),
    }
    let connect = ibauth_fleet::connect(url);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(coord)) => report.ok(
            "shared store",
            format!(
                "{}: reachable and ready (lease ttl {} s)",
                coord.describe(),
                policy.lease_ttl.as_secs_f64()
            ),
        ),
        Ok(Err(e)) => report.fail(
            "shared store",
            e.to_string(),
            Some("check the URL (`store:`, IBAUTH_STORE or --store), that the server runs and this host may reach it"),
        ),
        Err(_) => report.fail(
            "shared store",
            format!("{}: no answer within 10 s", url.redacted()),
            Some("check that the server runs and that a firewall lets this host reach it"),
        ),
    }
}

/// The key file checks common to every RSA key: exists, private, PEM shape, RSA ≥ 2048.
fn key_file(report: &mut Report, setting: &str, path: &Path) -> Option<SigningKey> {
    let name = format!("key {setting}");
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            report.fail(
                &name,
                format!("{}: {e}", path.display()),
                Some(format!(
                    "check `{setting}` (relative paths resolve against the config file's folder)"
                )),
            );
            return None;
        }
    };
    let Ok(text) = String::from_utf8(bytes) else {
        report.fail(
            &name,
            format!("{} is not a text PEM file (binary DER?)", path.display()),
            Some(format!(
                "convert it: openssl pkey -inform DER -in {} -out key.pem",
                path.display()
            )),
        );
        return None;
    };
    if text.contains('\r') {
        report.warn(
            &name,
            format!("{} has Windows (CRLF) line endings", path.display()),
            format!(
                "accepted; to be safe with other tools: dos2unix {}",
                path.display()
            ),
        );
    }
    let padded = text
        .lines()
        .filter(|l| !l.is_empty() && l.trim_end_matches('\r') != l.trim())
        .count();
    if padded > 0 {
        report.warn(
            &name,
            format!("{padded} line(s) with leading or trailing spaces"),
            "accepted; a copy-paste artefact: re-save the key without them",
        );
    }
    match SigningKey::from_pem_file(path) {
        Ok(key) => {
            report.ok(
                &name,
                format!("{}: RSA {} bits", path.display(), key.bits()),
            );
            Some(key)
        }
        Err(e @ KeyError::Exposed { .. }) => {
            // Refused for its mode alone: still check what it holds, so one run of doctor
            // lists every problem of the key.
            report.fail(&name, e.to_string(), Some(fix_for_key(&e)));
            match SigningKey::from_pem(&text) {
                Ok(key) => Some(key),
                Err(e) => {
                    report.fail(&name, e.to_string(), Some(fix_for_key(&e)));
                    None
                }
            }
        }
        Err(e) => {
            report.fail(&name, e.to_string(), Some(fix_for_key(&e)));
            None
        }
    }
}

/// What to do about a configuration error (its message names the setting).
fn fix_for(e: &ConfigError) -> String {
    match e {
        ConfigError::FileNotFound { .. } => {
            "pass --config PATH, set IBAUTH_CONFIG, or supply IBAUTH_* variables".into()
        }
        ConfigError::FileUnreadable { path, .. } => {
            format!("check the permissions of {}", path.display())
        }
        ConfigError::MalformedYaml { .. } => "fix the YAML at the place named".into(),
        ConfigError::Missing { key, env } => {
            format!("add `{key}: …` to the config file, or set {env}")
        }
        ConfigError::Invalid { key, .. } => format!("correct `{key}` as described"),
        ConfigError::Key(k) => fix_for_key(k),
        _ => "correct the setting named".into(),
    }
}

fn fix_for_key(e: &KeyError) -> String {
    match e {
        KeyError::NotFound { .. } => {
            "check the path (relative paths resolve against the config file's folder)".into()
        }
        KeyError::Unreadable { path, .. } => format!("chmod 600 {} (and own it)", path.display()),
        KeyError::Exposed { path, .. } => format!("chmod 600 {}", path.display()),
        KeyError::Encrypted { .. } => {
            "decrypt it once: openssl pkey -in KEY.pem -out key-plain.pem".into()
        }
        KeyError::NotRsa { .. } | KeyError::TooSmall { .. } => {
            "generate an RSA key of 2048 bits or more (openssl genrsa -out key.pem 2048) and register its public key with IBKR".into()
        }
        KeyError::NotPrivate { .. } => "point the setting at the private key file".into(),
        _ => "re-export the key as PEM (openssl pkey -in KEY -out key.pem)".into(),
    }
}

fn oauth2(
    report: &mut Report,
    file: Option<&Path>,
    env: &[(String, String)],
    public_key: Option<&Path>,
    hosts: &mut Vec<(Url, Option<Vec<u8>>)>,
) {
    let mut builder = ConfigBuilder::default();
    if let Some(f) = file.filter(|f| f.exists()) {
        match builder.clone().yaml_file(f) {
            Ok(b) => builder = b,
            Err(e) => return report.fail("oauth2", e.to_string(), Some(fix_for(&e))),
        }
    }
    let builder = match builder.env_vars(env.iter().cloned()) {
        Ok(b) => b,
        Err(e) => return report.fail("oauth2", e.to_string(), Some(fix_for(&e))),
    };
    let key = builder
        .private_key_path()
        .map(Path::to_path_buf)
        .and_then(|p| key_file(report, "private_key_file", &p));
    match Config::load_with_env(file, env.iter().cloned()) {
        Ok(config) => {
            report.ok(
                "oauth2",
                format!("client {} at {}", config.client_id(), config.api_base()),
            );
            hosts.push((
                config.api_base().clone(),
                config.ca_pem().map(<[u8]>::to_vec),
            ));
        }
        Err(e) => report.fail("oauth2", e.to_string(), Some(fix_for(&e))),
    }
    if let Some(public) = public_key {
        match (key, std::fs::read_to_string(public)) {
            (_, Err(e)) => report.fail(
                "public key",
                format!("{}: {e}", public.display()),
                Some("pass the public key file you registered with IBKR"),
            ),
            (None, Ok(_)) => report.fail(
                "public key",
                "cannot compare: the private key did not load",
                Some("fix the private key first (above)"),
            ),
            (Some(key), Ok(text)) => {
                if same_public_key(&text, &key) {
                    report.ok(
                        "public key",
                        format!("{} matches the private key", public.display()),
                    );
                } else {
                    report.fail(
                        "public key",
                        format!("{} is not the public half of the private key", public.display()),
                        Some("register the public key of this private key with IBKR (openssl pkey -in private.pem -pubout), or use the matching private key"),
                    );
                }
            }
        }
    }
}

/// Whether the PEM `text` (SPKI `PUBLIC KEY`) is `key`'s public key.
fn same_public_key(text: &str, key: &SigningKey) -> bool {
    let normalise = |pem: &str| -> String {
        pem.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("-----"))
            .collect()
    };
    normalise(text) == normalise(&key.public_key_pem())
}

/// The consumer's files: keys and DH parameters. False if a setting is unusable.
fn consumer_files(report: &mut Report, file: Option<&Path>, env: &[(String, String)]) -> bool {
    match oauth1a::config::files_with_env(file, env) {
        Ok(files) => {
            for (setting, path) in files {
                if setting == "dh_param_file" {
                    if !path.exists() {
                        report.fail(
                            "dh parameters",
                            format!("{} not found", path.display()),
                            Some(
                                "check `oauth1a.dh_param_file`, or give `oauth1a.dh_prime` as hex",
                            ),
                        );
                    }
                } else {
                    key_file(report, &format!("oauth1a.{setting}"), &path);
                }
            }
        }
        Err(e) => {
            report.fail("oauth1a", e.to_string(), Some(fix_for(&e)));
            return false;
        }
    }
    true
}

/// The DH group and the realm of a consumer's settings.
fn consumer_settings(report: &mut Report, config: &oauth1a::Oauth1aConfig) {
    match config.dh_group().audit() {
        Ok(what) => report.ok("dh parameters", what),
        Err(problem) => report.fail(
            "dh parameters",
            problem,
            Some(
                "use the DH parameters (dhparam.pem) generated for your consumer in IBKR's portal",
            ),
        ),
    }
    let consumer = config.consumer_key().to_owned();
    let realm = config.realm_in_use().to_owned();
    let expected = if consumer == "TESTCONS" {
        "test_realm"
    } else {
        "limited_poa"
    };
    if realm == expected {
        report.ok("realm", format!("consumer {consumer} with realm {realm}"));
    } else {
        report.fail(
            "realm",
            format!("consumer {consumer} with realm {realm}: IBKR answers `invalid consumer`"),
            Some(format!("set `oauth1a.realm: {expected}`")),
        );
    }
}

fn oauth1a_checks(
    report: &mut Report,
    file: Option<&Path>,
    env: &[(String, String)],
    hosts: &mut Vec<(Url, Option<Vec<u8>>)>,
) {
    if !consumer_files(report, file, env) {
        return;
    }
    let config = match oauth1a::config::load_with_env(file, env) {
        Ok(config) => config,
        Err(e) => return report.fail("oauth1a", e.to_string(), Some(fix_for(&e))),
    };
    consumer_settings(report, &config);
    let base = config.rest_base().clone();
    let ca = config.ca().map(<[u8]>::to_vec);
    // Decrypting the access-token secret happens here: a wrong encryption key or a garbled
    // secret fails before anything is sent.
    match Oauth1aClient::new(config) {
        Ok(_) => report.ok(
            "access token",
            "the secret is valid base64 and decrypts with the encryption key",
        ),
        Err(e) => report.fail(
            "access token",
            e.to_string(),
            Some("copy the access token secret again from IBKR's portal, and check `oauth1a.encryption_key_file`"),
        ),
    }
    if let Ok(root) = base.join("/") {
        hosts.push((root, ca));
    }
}

/// Third party: the consumer without an access token (the grant comes from the user), and the
/// callback the browser flow will serve.
fn third_party_checks(
    report: &mut Report,
    file: Option<&Path>,
    env: &[(String, String)],
    hosts: &mut Vec<(Url, Option<Vec<u8>>)>,
) {
    if !consumer_files(report, file, env) {
        return;
    }
    let config = match oauth1a::config::load_third_party_with_env(file, env) {
        Ok(config) => config,
        Err(e) => return report.fail("third party", e.to_string(), Some(fix_for(&e))),
    };
    consumer_settings(report, config.template());
    match config.callback() {
        None => report.ok(
            "callback",
            "none: the user pastes the verifier (manual flow)",
        ),
        Some(callback) => match oauth1a::login::check_callback(callback, None) {
            Ok(()) => report.ok(
                "callback",
                format!("{callback}: served locally over HTTPS by the browser flow"),
            ),
            Err(e) => report.warn(
                "callback",
                e.to_string(),
                "the manual flow still works: `ibauth --third-party --flow manual login`",
            ),
        },
    }
    if let Ok(root) = config.rest_base().join("/") {
        hosts.push((root, config.template().ca().map(<[u8]>::to_vec)));
    }
}

async fn network(report: &mut Report, url: &Url, ca: Option<&[u8]>) {
    let host = url.host_str().unwrap_or_default().to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let name = format!("host {host}");
    match tokio::net::lookup_host((host.as_str(), port)).await {
        Ok(addrs) => {
            let addrs: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            report.ok(&name, format!("resolves to {}", addrs.join(", ")));
        }
        Err(e) => {
            return report.fail(
                &name,
                format!("DNS lookup failed: {e}"),
                Some("check the host name (domain/base_url) and this machine's DNS"),
            );
        }
    }
    let http = match ibauth::HttpClient::new(Duration::from_secs(10), ca) {
        Ok(h) => h,
        Err(e) => return report.fail(&name, e.to_string(), Some(fix_for(&e))),
    };
    let probe = url.join("/v1/api/tickle").unwrap_or_else(|_| url.clone());
    let started = Instant::now();
    let sent_at = SystemTime::now();
    let reply = match http.reqwest().get(probe).send().await {
        Ok(r) => r,
        Err(e) => {
            let text = source_text(&e);
            let fix = if text.to_lowercase().contains("certificate") {
                "the server's certificate is not trusted: for a private CA (the sandbox's) set `ca_file`"
            } else {
                "check the network path to the host (firewall, proxy) and that the host is up"
            };
            return report.fail(&format!("tls {host}"), text, Some(fix));
        }
    };
    let rtt = started.elapsed();
    let how = if url.scheme() == "https" {
        "certificate verified"
    } else {
        "plain http: loopback only"
    };
    report.ok(
        &format!("tls {host}"),
        format!(
            "answered HTTP {} in {:.0} ms ({how})",
            reply.status().as_u16(),
            rtt.as_secs_f64() * 1000.0
        ),
    );
    let Some(date) = reply
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok())
    else {
        return report.warn(
            "clock",
            "the server sent no Date header",
            "skew not measured",
        );
    };
    // The server stamped its Date somewhere inside the round trip: compare with its middle.
    let local = sent_at + rtt / 2;
    let skew = match date.duration_since(local) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    let text = format!("{skew:+.1} s against the server's Date");
    if skew.abs() > 30.0 {
        report.fail(
            "clock",
            text,
            Some(
                "sync the system clock (NTP): signed timestamps outside IBKR's window are refused",
            ),
        );
    } else if skew.abs() > 5.0 {
        report.warn("clock", text, "sync the system clock (NTP)");
    } else {
        report.ok("clock", text);
    }
}

fn source_text(e: &reqwest::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = std::error::Error::source(e);
    while let Some(inner) = cur {
        parts.push(inner.to_string());
        cur = inner.source();
    }
    parts.join(": ")
}

fn token_file(report: &mut Report, file: Option<&Path>, env: &[(String, String)]) {
    let policy = Policy::load_with_env(file, env).unwrap_or_default();
    let Some(path) = policy.token_file.or_else(default_token_file) else {
        return report.warn(
            "token file",
            "no token_file and no home folder",
            "set `token_file` (or IBAUTH_TOKEN_FILE) so tokens survive restarts",
        );
    };
    let shown = path.display().to_string();
    if !path.exists() {
        return report.ok(
            "token file",
            format!("{shown}: none yet (the next login writes it)"),
        );
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match FileStore::new(&path).inspect() {
        Ok(entries) if entries.is_empty() => report.ok("token file", format!("{shown}: empty")),
        Ok(entries) => {
            for doc in entries {
                let left = doc
                    .session_token_expiry()
                    .map(|e| i128::from(e) - i128::from(now));
                let text = format!(
                    "{shown}: {} login {} s old, {}",
                    doc.method,
                    doc.token_age(now).as_secs(),
                    match left {
                        Some(l) if l > 0 => format!("expires in {l} s"),
                        Some(_) => "expired".into(),
                        None => "no session token".into(),
                    }
                );
                if left.is_some_and(|l| l > 0) {
                    report.ok("token file", text);
                } else {
                    report.warn("token file", text, "the next command logs in again");
                }
            }
        }
        Err(StoreError::Corrupt { problem, .. }) => report.warn(
            "token file",
            format!("{shown} is corrupt ({problem})"),
            "the next login moves it aside (kept) and writes a new one",
        ),
        Err(e @ StoreError::Exposed { .. }) => report.fail(
            "token file",
            e.to_string(),
            Some(format!("chmod 600 {shown}, or delete it and log in again")),
        ),
        Err(e @ StoreError::NewerSchema { .. }) => report.fail(
            "token file",
            e.to_string(),
            Some("upgrade ibauth, or point token_file elsewhere"),
        ),
        Err(e) => report.fail(
            "token file",
            e.to_string(),
            Some("fix its permissions or remove it"),
        ),
    }
}

fn render(out: Out, report: &Report) -> ExitCode {
    let failed = report.0.iter().any(|c| c.level == Level::Fail);
    out.clear_progress();
    if out.json {
        let checks: Vec<_> = report
            .0
            .iter()
            .map(|c| {
                json!({
                    "check": c.name,
                    "status": match c.level { Level::Ok => "ok", Level::Warn => "warn", Level::Fail => "fail" },
                    "detail": c.detail,
                    "fix": c.fix,
                })
            })
            .collect();
        println!(
            "{}",
            crate::render::json_line(&json!({ "ok": !failed, "checks": checks }))
        );
    } else {
        for c in &report.0 {
            let tag = match c.level {
                Level::Ok => out.paint("  ok ", crate::render::GREEN),
                Level::Warn => out.paint(" warn", crate::render::YELLOW),
                Level::Fail => out.paint(" FAIL", crate::render::RED),
            };
            let safe = crate::render::terminal_safe;
            println!("{tag}  {:<32} {}", c.name, safe(&c.detail));
            if let Some(fix) = &c.fix {
                println!("       {:<32} fix: {}", "", safe(fix));
            }
        }
        let fails = report.0.iter().filter(|c| c.level == Level::Fail).count();
        if failed {
            println!("{fails} check(s) failed");
        } else {
            println!("all checks passed");
        }
    }
    if failed {
        ExitCode::from(code::CONFIG)
    } else {
        ExitCode::SUCCESS
    }
}
