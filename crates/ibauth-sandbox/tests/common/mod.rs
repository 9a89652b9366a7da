//! Helpers shared by the sandbox's integration tests: one RSA key pair per test binary (key
//! generation is the slow part), a sandbox with the test client registered, a client config
//! pointing at it, and exact checks on `ibauth::Error`.
//!
//! Every test binary compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ibauth::{Config, ConfigBuilder, Error, FixedClock, Oauth2Client, SigningKey, Step};
use ibauth_sandbox::{ClientRegistration, Lifetimes, Sandbox};

/// The registered client id.
pub const CLIENT_ID: &str = "TESTCLIENT";
/// The registered key id.
pub const KID: &str = "main";
/// The registered credential (IBKR username).
pub const USER: &str = "alice";
/// The time every fixed clock starts at (the spec's vectors use it too).
pub const T0: u64 = 1_700_000_000;
/// Where connections to the sandbox come from.
pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The key registered with the sandbox under [`KID`].
pub fn key() -> SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().expect("key generation"))
        .clone()
}

/// A second key, never registered.
pub fn other_key() -> SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().expect("key generation"))
        .clone()
}

/// [`CLIENT_ID`] with [`key`] under [`KID`], serving [`USER`].
pub fn registration() -> ClientRegistration {
    ClientRegistration::new(CLIENT_ID)
        .key(KID, &key())
        .credential(USER)
}

/// A clock at [`T0`], to share between a sandbox and its clients.
pub fn clock() -> Arc<FixedClock> {
    Arc::new(FixedClock::new(T0))
}

/// A plain-HTTP sandbox on `clock` with default lifetimes and the test client registered.
pub async fn sandbox(clock: &Arc<FixedClock>) -> Sandbox {
    sandbox_with(clock, Lifetimes::default()).await
}

/// As [`sandbox`], with `lifetimes`.
pub async fn sandbox_with(clock: &Arc<FixedClock>, lifetimes: Lifetimes) -> Sandbox {
    Sandbox::builder()
        .clock(clock.clone())
        .lifetimes(lifetimes)
        .register(registration())
        .start()
        .await
        .expect("sandbox starts")
}

/// A config for the registered client against `base_url`, public IP 127.0.0.1.
pub fn config(base_url: &str) -> ConfigBuilder {
    config_without_public_ip(base_url).public_ip(LOCALHOST)
}

/// A config for the registered client against `base_url` that looks its public IP up.
pub fn config_without_public_ip(base_url: &str) -> ConfigBuilder {
    Config::builder()
        .client_id(CLIENT_ID)
        .client_key_id(KID)
        .credential(USER)
        .private_key(key())
        .base_url(base_url)
}

/// A client for `config` on `clock`.
pub fn client(config: ConfigBuilder, clock: &Arc<FixedClock>) -> Oauth2Client {
    Oauth2Client::with_clock(config.build().expect("config builds"), clock.clone())
        .expect("client builds")
}

/// Checks that `err` is `Error::Rejected` with exactly this step, status and message, and
/// returns its hint.
#[track_caller]
pub fn assert_rejected(
    err: &Error,
    want_step: Step,
    want_status: u16,
    want_message: &str,
) -> Option<&'static str> {
    match err {
        Error::Rejected {
            step,
            status,
            message,
            hint,
            ..
        } => {
            assert_eq!(*step, want_step, "step of: {err}");
            assert_eq!(*status, want_status, "status of: {err}");
            assert_eq!(message, want_message, "message of: {err}");
            assert_eq!(err.step(), Some(want_step));
            assert_eq!(err.status(), Some(want_status));
            *hint
        }
        other => panic!("expected Error::Rejected at {want_step:?}, got {other:?}"),
    }
}

/// Checks that `err` is `Error::NotReady` at `want_step`.
#[track_caller]
pub fn assert_not_ready(err: &Error, want_step: Step) {
    match err {
        Error::NotReady { step, reason } => {
            assert_eq!(*step, want_step, "{err}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected Error::NotReady at {want_step:?}, got {other:?}"),
    }
}

/// A plain HTTP client for hand-made requests (the library's own reqwest client).
pub fn http() -> ibauth::HttpClient {
    ibauth::HttpClient::new(Duration::from_secs(10), None).expect("http client")
}

/// A temp folder unique to one test of this process, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(test: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("ibauth-sandbox-test-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
