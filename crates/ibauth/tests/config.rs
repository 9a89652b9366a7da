//! Configuration loading (YAML, `IBAUTH_*` variables, builder) and private-key errors, end to
//! end through the public API. Every failure is checked for its exact variant and for a message
//! that names the key or file and says what to do.
//!
//! The keys under `tests/fixtures/` are throwaway test keys (see its README). Tests never change
//! the process's current directory (they run in parallel); each works in its own temp folder.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ibauth::secrecy::ExposeSecret;
use ibauth::{Config, ConfigError, KeyError, SigningKey};

// ---------------------------------------------------------------------------------------------
// Helpers

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// A fixture key as a user keeps it: a copy only its owner can read. Git checks the fixtures
/// out readable by all, and ibauth refuses a key file other users can access.
fn key_fixture(name: &str) -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ibauth-config-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(fixture("")).unwrap() {
            let from = entry.unwrap().path();
            let to = dir.join(from.file_name().unwrap());
            std::fs::copy(&from, &to).unwrap();
            owner_only(&to);
        }
        dir
    });
    dir.join(name)
}

fn owner_only(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

/// A temp folder unique to one test of this process, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("ibauth-config-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Copies a fixture to `keys/<name>` inside the folder.
    fn copy_key(&self, name: &str) -> PathBuf {
        let path = self.0.join("keys").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::copy(fixture(name), &path).unwrap();
        owner_only(&path);
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Exactly the keys the Python ibauth reads; the key path is relative to the YAML's folder.
const PYTHON_YAML: &str = "\
client_id: TESTCLIENT
client_key_id: main
credential: myusername
private_key_file: keys/rsa2048_pkcs8.pem
domain: 5.api.ibkr.com
";

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(path: &Path) -> Result<Config, ConfigError> {
    Config::load_with_env(Some(path), no_env())
}

/// A folder holding the 2048-bit key and a config.yaml of `yaml`; returns (folder, yaml path).
fn setup(test: &str, yaml: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(test);
    dir.copy_key("rsa2048_pkcs8.pem");
    let path = dir.write("config.yaml", yaml);
    (dir, path)
}

/// [`PYTHON_YAML`] plus `extra` lines.
fn setup_with(test: &str, extra: &str) -> (TempDir, PathBuf) {
    setup(test, &format!("{PYTHON_YAML}{extra}"))
}

/// Loads an otherwise complete config whose `private_key_file` is the fixture `key`.
fn load_with_key(test: &str, key: &str) -> (TempDir, Result<Config, ConfigError>) {
    let dir = TempDir::new(test);
    dir.copy_key(key);
    let yaml = format!(
        "client_id: TESTCLIENT\nclient_key_id: main\ncredential: myusername\nprivate_key_file: keys/{key}\n"
    );
    let path = dir.write("config.yaml", &yaml);
    let result = load(&path);
    (dir, result)
}

/// The key error a config with the fixture `key` fails with.
fn key_error(test: &str, key: &str) -> KeyError {
    match load_with_key(test, key).1 {
        Err(ConfigError::Key(err)) => err,
        Err(other) => panic!("{key}: expected a key error, got {other:?}: {other}"),
        Ok(_) => panic!("{key}: expected a key error, but the config loaded"),
    }
}

fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "{text:?} does not contain {part:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Loading

#[test]
fn python_ibauth_yaml_loads_with_key_relative_to_the_yaml_folder() {
    let (dir, path) = setup("python_yaml", PYTHON_YAML);
    // The key exists only next to the YAML, not in the current directory.
    assert!(!Path::new("keys/rsa2048_pkcs8.pem").exists());
    assert_ne!(std::env::current_dir().unwrap(), dir.path());

    let config = load(&path).unwrap();
    assert_eq!(config.client_id(), "TESTCLIENT");
    assert_eq!(config.client_key_id(), "main");
    assert_eq!(config.credential().expose_secret(), "myusername");
    assert_eq!(config.api_base().as_str(), "https://5.api.ibkr.com/");
    assert_eq!(config.signing_key().bits(), 2048);
    let expected = SigningKey::from_pem_file(&key_fixture("rsa2048_pkcs8.pem")).unwrap();
    assert_eq!(
        config.signing_key().public_key_pem(),
        expected.public_key_pem()
    );
    // Defaults for everything the Python config does not have.
    assert_eq!(config.public_ip(), None);
    assert_eq!(config.timeout(), ibauth::DEFAULT_TIMEOUT);
    assert_eq!(
        config.ip_lookup_urls().len(),
        ibauth::DEFAULT_IP_LOOKUP_URLS.len()
    );
    assert!(config.publish());
    assert!(config.compete());
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}

#[test]
fn domain_defaults_to_api_ibkr_com() {
    let yaml = PYTHON_YAML.replace("domain: 5.api.ibkr.com\n", "");
    let (_dir, path) = setup("default_domain", &yaml);
    let config = load(&path).unwrap();
    assert_eq!(config.api_base().as_str(), "https://api.ibkr.com/");
}

#[test]
fn extra_keys_base_url_public_ip_and_timeout() {
    let (_dir, path) = setup_with(
        "extra_keys",
        "base_url: https://proxy.example.com/ibkr/\npublic_ip: 203.0.113.7\ntimeout: 2.5\n",
    );
    let config = load(&path).unwrap();
    // base_url wins over domain.
    assert_eq!(
        config.api_base().as_str(),
        "https://proxy.example.com/ibkr/"
    );
    assert_eq!(config.public_ip(), Some(Ipv4Addr::new(203, 0, 113, 7)));
    assert_eq!(config.timeout(), Duration::from_millis(2500));
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());
}

#[test]
fn plain_http_base_url_is_refused_off_loopback() {
    let (_dir, path) = setup_with("http_refused", "base_url: http://api.ibkr.com\n");
    let err = load(&path).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if key == "base_url"),
        "{err:?}"
    );
    assert_contains(
        &err.to_string(),
        &["`base_url`", "plain http is refused", "use https"],
    );
}

#[test]
fn plain_http_base_url_is_accepted_on_loopback() {
    let (_dir, path) = setup_with("http_loopback", "base_url: http://127.0.0.1:9\n");
    let config = load(&path).unwrap();
    assert_eq!(config.api_base().as_str(), "http://127.0.0.1:9/");
}

// ---------------------------------------------------------------------------------------------
// Environment

#[test]
fn env_overrides_the_file() {
    let (_dir, path) = setup_with("env_overrides", "public_ip: 203.0.113.7\ntimeout: 30\n");
    let pkcs1 = key_fixture("rsa2048_pkcs1.pem");
    let vars = env(&[
        ("IBAUTH_CLIENT_ID", "ENVCLIENT"),
        ("IBAUTH_CLIENT_KEY_ID", "envkid"),
        ("IBAUTH_CREDENTIAL", "envuser"),
        ("IBAUTH_PRIVATE_KEY_FILE", pkcs1.to_str().unwrap()),
        ("IBAUTH_DOMAIN", "1.api.ibkr.com"),
        ("IBAUTH_PUBLIC_IP", "198.51.100.1"),
        ("IBAUTH_TIMEOUT", "2.5"),
        // Not ours, or empty: ignored.
        ("PATH", "/usr/bin"),
        ("CLIENT_ID", "nope"),
    ]);
    let config = Config::load_with_env(Some(&path), vars).unwrap();
    assert_eq!(config.client_id(), "ENVCLIENT");
    assert_eq!(config.client_key_id(), "envkid");
    assert_eq!(config.credential().expose_secret(), "envuser");
    assert_eq!(config.api_base().as_str(), "https://1.api.ibkr.com/");
    assert_eq!(config.public_ip(), Some(Ipv4Addr::new(198, 51, 100, 1)));
    assert_eq!(config.timeout(), Duration::from_millis(2500));
    let expected = SigningKey::from_pem_file(&pkcs1).unwrap();
    assert_eq!(
        config.signing_key().public_key_pem(),
        expected.public_key_pem()
    );
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());

    // IBAUTH_BASE_URL wins over the file's and the environment's domain.
    let vars = env(&[
        ("IBAUTH_DOMAIN", "1.api.ibkr.com"),
        ("IBAUTH_BASE_URL", "http://127.0.0.1:9"),
    ]);
    let config = Config::load_with_env(Some(&path), vars).unwrap();
    assert_eq!(config.api_base().as_str(), "http://127.0.0.1:9/");

    // An empty variable does not blank out the file's value.
    let config = Config::load_with_env(Some(&path), env(&[("IBAUTH_CLIENT_ID", "")])).unwrap();
    assert_eq!(config.client_id(), "TESTCLIENT");
}

#[test]
fn invalid_env_values_name_the_variable() {
    let (_dir, path) = setup("env_invalid", PYTHON_YAML);
    let err = Config::load_with_env(Some(&path), env(&[("IBAUTH_TIMEOUT", "soon")])).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if key == "IBAUTH_TIMEOUT"),
        "{err:?}"
    );
    assert_contains(&err.to_string(), &["IBAUTH_TIMEOUT", "number of seconds"]);

    let err = Config::load_with_env(
        Some(&path),
        env(&[("IBAUTH_BASE_URL", "http://api.ibkr.com")]),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if key == "base_url"),
        "{err:?}"
    );
    assert_contains(&err.to_string(), &["plain http is refused"]);
}

#[test]
fn ibauth_config_in_the_env_names_the_file() {
    let (_dir, path) = setup("env_config", PYTHON_YAML);
    let vars = env(&[("IBAUTH_CONFIG", path.to_str().unwrap())]);
    let config = Config::load_with_env(None, vars).unwrap();
    assert_eq!(config.client_id(), "TESTCLIENT");
    assert_eq!(config.api_base().as_str(), "https://5.api.ibkr.com/");
    // IBAUTH_CONFIG is known: no "unknown variable" warning.
    assert!(config.warnings().is_empty(), "{:?}", config.warnings());

    // An explicit path wins over IBAUTH_CONFIG.
    let vars = env(&[("IBAUTH_CONFIG", "/nonexistent/ibauth/config.yaml")]);
    let config = Config::load_with_env(Some(&path), vars).unwrap();
    assert_eq!(config.client_id(), "TESTCLIENT");

    // A missing IBAUTH_CONFIG file is reported as such.
    let missing = path.with_file_name("absent.yaml");
    let vars = env(&[("IBAUTH_CONFIG", missing.to_str().unwrap())]);
    let err = Config::load_with_env(None, vars).unwrap_err();
    assert!(
        matches!(&err, ConfigError::FileNotFound { path } if *path == missing),
        "{err:?}"
    );
}

/// The test process runs in the crate folder, which has no config.yaml.
fn assert_no_default_config_file() {
    assert_eq!(
        std::env::current_dir().unwrap(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
    );
    assert!(
        !Path::new(ibauth::DEFAULT_CONFIG_FILE).exists(),
        "precondition: no ./config.yaml in the crate folder"
    );
}

#[test]
fn env_alone_is_a_whole_configuration_without_config_yaml() {
    assert_no_default_config_file();
    let key = key_fixture("rsa2048_pkcs8.pem");
    assert!(key.is_absolute());
    let vars = env(&[
        ("IBAUTH_CLIENT_ID", "ENVCLIENT"),
        ("IBAUTH_CLIENT_KEY_ID", "main"),
        ("IBAUTH_CREDENTIAL", "envuser"),
        ("IBAUTH_PRIVATE_KEY_FILE", key.to_str().unwrap()),
        ("IBAUTH_DOMAIN", "5.api.ibkr.com"),
    ]);
    let config = Config::load_with_env(None, vars).unwrap();
    assert_eq!(config.client_id(), "ENVCLIENT");
    assert_eq!(config.credential().expose_secret(), "envuser");
    assert_eq!(config.api_base().as_str(), "https://5.api.ibkr.com/");
    assert_eq!(config.signing_key().bits(), 2048);
}

#[test]
fn env_without_enough_settings_and_no_file_is_file_not_found() {
    assert_no_default_config_file();
    for vars in [
        no_env(),
        env(&[("IBAUTH_CLIENT_ID", "ENVCLIENT")]),
        env(&[
            ("IBAUTH_CLIENT_ID", "ENVCLIENT"),
            ("IBAUTH_CLIENT_KEY_ID", "main"),
            ("IBAUTH_CREDENTIAL", "envuser"),
        ]),
    ] {
        let err = Config::load_with_env(None, vars.clone()).unwrap_err();
        assert!(
            matches!(&err, ConfigError::FileNotFound { path } if path == Path::new("config.yaml")),
            "{vars:?}: {err:?}"
        );
        assert_contains(
            &err.to_string(),
            &[
                "config.yaml",
                "not found",
                "--config",
                "IBAUTH_CONFIG",
                "IBAUTH_*",
            ],
        );
    }
}

#[test]
fn unknown_env_var_warns_with_did_you_mean() {
    let (_dir, path) = setup("env_typo", PYTHON_YAML);
    let vars = env(&[
        ("IBAUTH_CLIENTID", "typo"),
        ("IBAUTH_ZZZZZZZZZZZZZZZZ", "x"),
    ]);
    let config = Config::load_with_env(Some(&path), vars).unwrap();
    assert_eq!(config.client_id(), "TESTCLIENT");
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    let typo = warnings
        .iter()
        .find(|w| w.contains("IBAUTH_CLIENTID"))
        .unwrap();
    assert_contains(typo, &["unknown variable", "did you mean IBAUTH_CLIENT_ID"]);
    let far = warnings.iter().find(|w| w.contains("IBAUTH_ZZZZ")).unwrap();
    assert!(!far.contains("did you mean"), "{far}");
}

// ---------------------------------------------------------------------------------------------
// Builder

#[test]
fn builder_with_a_loaded_signing_key() {
    let key = SigningKey::from_pem_file(&key_fixture("rsa2048_pkcs1.pem")).unwrap();
    let config = Config::builder()
        .client_id("TESTCLIENT")
        .client_key_id("main")
        .credential("myusername")
        .private_key(key.clone())
        .domain("5.api.ibkr.com")
        .public_ip(Ipv4Addr::new(203, 0, 113, 7))
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    assert_eq!(config.client_id(), "TESTCLIENT");
    assert_eq!(config.client_key_id(), "main");
    assert_eq!(config.credential().expose_secret(), "myusername");
    assert_eq!(config.api_base().as_str(), "https://5.api.ibkr.com/");
    assert_eq!(config.public_ip(), Some(Ipv4Addr::new(203, 0, 113, 7)));
    assert_eq!(config.timeout(), Duration::from_secs(3));
    assert_eq!(config.signing_key().public_key_pem(), key.public_key_pem());
}

#[test]
fn builder_with_a_private_key_file() {
    let config = Config::builder()
        .client_id("TESTCLIENT")
        .client_key_id("main")
        .credential("myusername")
        .private_key_file(key_fixture("rsa2048_pkcs8.pem"))
        .build()
        .unwrap();
    assert_eq!(config.api_base().as_str(), "https://api.ibkr.com/");
    assert_eq!(config.signing_key().bits(), 2048);

    // The key file is checked in build().
    let err = Config::builder()
        .client_id("TESTCLIENT")
        .client_key_id("main")
        .credential("myusername")
        .private_key_file(key_fixture("rsa1024_pkcs8.pem"))
        .build()
        .unwrap_err();
    assert!(
        matches!(err, ConfigError::Key(KeyError::TooSmall { .. })),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Bad configuration

#[test]
fn each_missing_required_key_is_named_with_its_env_var() {
    for (key, var) in [
        ("client_id", "IBAUTH_CLIENT_ID"),
        ("client_key_id", "IBAUTH_CLIENT_KEY_ID"),
        ("credential", "IBAUTH_CREDENTIAL"),
        ("private_key_file", "IBAUTH_PRIVATE_KEY_FILE"),
    ] {
        let yaml: String = PYTHON_YAML
            .lines()
            .filter(|line| !line.starts_with(&format!("{key}:")))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_ne!(yaml, PYTHON_YAML);
        let (_dir, path) = setup(&format!("missing_{key}"), &yaml);
        let err = load(&path).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Missing { key: k, env: e } if *k == key && *e == var),
            "{key}: {err:?}"
        );
        assert_contains(
            &err.to_string(),
            &[&format!("`{key}`"), &format!("add `{key}: …`"), var],
        );

        // A blank value is as good as missing.
        let blank = format!("{yaml}{key}: \"  \"\n");
        let (_dir, path) = setup(&format!("blank_{key}"), &blank);
        let err = load(&path).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Missing { key: k, .. } if *k == key),
            "{key}: {err:?}"
        );
    }
}

#[test]
fn explicit_missing_config_file_is_file_not_found() {
    let dir = TempDir::new("explicit_missing");
    let path = dir.path().join("nope.yaml");
    let err = load(&path).unwrap_err();
    assert!(
        matches!(&err, ConfigError::FileNotFound { path: p } if *p == path),
        "{err:?}"
    );
    assert_contains(
        &err.to_string(),
        &[
            path.to_str().unwrap(),
            "not found",
            "--config",
            "IBAUTH_CONFIG",
        ],
    );
}

#[test]
fn directory_as_config_file_is_unreadable() {
    let dir = TempDir::new("dir_as_config");
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(&err, ConfigError::FileUnreadable { path, .. } if path == dir.path()),
        "{err:?}"
    );
    assert_contains(
        &err.to_string(),
        &["cannot read config file", dir.path().to_str().unwrap()],
    );
}

#[cfg(unix)]
#[test]
fn unreadable_config_file_is_file_unreadable() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = setup("chmod_000", PYTHON_YAML);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&path).is_ok() {
        // Running as root (or with CAP_DAC_OVERRIDE): permissions do not stop reads.
        eprintln!("skipped: a mode 000 file is still readable for this user");
        return;
    }
    let err = load(&path).unwrap_err();
    assert!(
        matches!(&err, ConfigError::FileUnreadable { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert_contains(
        &err.to_string(),
        &["cannot read config file", path.to_str().unwrap()],
    );
}

#[test]
fn malformed_yaml_is_reported_without_quoting_secrets() {
    let yaml = "client_key_id: main\nclient_id: [unclosed\ncredential: SuperSecret123\nprivate_key_file: keys/rsa2048_pkcs8.pem\n";
    let (_dir, path) = setup("malformed_yaml", yaml);
    let err = load(&path).unwrap_err();
    assert!(
        matches!(&err, ConfigError::MalformedYaml { path: p, .. } if *p == path),
        "{err:?}"
    );
    let text = err.to_string();
    assert_contains(&text, &[path.to_str().unwrap(), "not valid YAML"]);
    assert!(!text.contains("SuperSecret123"), "{text}");
    assert!(!format!("{err:?}").contains("SuperSecret123"), "{err:?}");

    // The secret on the line that is wrong is not quoted either.
    let yaml = "client_id: TESTCLIENT\ncredential: \"SuperSecret123\n";
    let (_dir, path) = setup("malformed_yaml_quote", yaml);
    let err = load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::MalformedYaml { .. }), "{err:?}");
    assert!(!err.to_string().contains("SuperSecret123"), "{err}");
}

#[test]
fn yaml_list_instead_of_mapping_is_malformed() {
    let (_dir, path) = setup(
        "yaml_list",
        "- client_id: TESTCLIENT\n- client_key_id: main\n",
    );
    let err = load(&path).unwrap_err();
    assert!(
        matches!(&err, ConfigError::MalformedYaml { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert_contains(
        &err.to_string(),
        &[path.to_str().unwrap(), "not valid YAML"],
    );
}

#[test]
fn list_value_for_a_scalar_key_is_invalid() {
    let (_dir, path) = setup_with("list_value", "public_ip: [1.2.3.4]\n");
    let err = load(&path).unwrap_err();
    // Values are read as text, so a list where text belongs is a YAML type error that points
    // at the line and column of the offending value.
    assert!(
        matches!(&err, ConfigError::MalformedYaml { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert_contains(&err.to_string(), &["expected string", "line"]);
}

#[test]
fn unknown_key_warns_with_did_you_mean() {
    let yaml = format!("{PYTHON_YAML}cliend_id: TYPO\n");
    let (_dir, path) = setup("yaml_typo", &yaml);
    let config = load(&path).unwrap();
    assert_eq!(config.client_id(), "TESTCLIENT");
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_contains(
        &warnings[0],
        &[
            "unknown key `cliend_id`",
            path.to_str().unwrap(),
            "did you mean `client_id`",
        ],
    );
}

#[test]
fn invalid_public_ip_names_the_key() {
    for (value, reason) in [
        ("\"2001:db8::1\"", "IPv6"),
        ("\"::1\"", "IPv6"),
        ("not-an-ip", "`not-an-ip` is not an IPv4 address"),
        ("1.2.3", "not an IPv4 address"),
    ] {
        let (_dir, path) = setup_with("public_ip", &format!("public_ip: {value}\n"));
        let err = load(&path).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "public_ip"),
            "{value}: {err:?}"
        );
        assert_contains(&err.to_string(), &["setting `public_ip`", reason]);
    }
}

#[test]
fn invalid_timeout_names_the_key() {
    // (`1e400` would not get this far: the YAML parser refuses non-finite floats.)
    for value in ["0", "0.0", "-1", "soon", "\"\"", "1e30"] {
        let (_dir, path) = setup_with("timeout", &format!("timeout: {value}\n"));
        let err = load(&path).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Invalid { key, .. } if key == "timeout"),
            "{value}: {err:?}"
        );
        assert_contains(&err.to_string(), &["setting `timeout`", "seconds"]);
    }
    // Over the maximum.
    let (_dir, path) = setup_with("timeout_big", "timeout: 601\n");
    let err = load(&path).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if key == "timeout"),
        "{err:?}"
    );
    assert_contains(&err.to_string(), &["setting `timeout`", "600 seconds"]);
}

#[test]
fn number_like_values_keep_their_spelling() {
    // A username or key id that looks like a number must reach IBKR exactly as written.
    let yaml = "client_id: 0x1F\nclient_key_id: \"1.10\"\ncredential: 00123\nprivate_key_file: keys/rsa2048_pkcs8.pem\n";
    let (_dir, path) = setup("number_like", yaml);
    let config = load(&path).unwrap();
    assert_eq!(config.client_key_id(), "1.10"); // quoted: fine already
    assert_eq!(config.credential().expose_secret(), "00123");
    assert_eq!(config.client_id(), "0x1F");
}

// ---------------------------------------------------------------------------------------------
// Private keys

#[test]
fn missing_key_file_is_not_found() {
    let dir = TempDir::new("key_missing");
    let path = dir.write(
        "config.yaml",
        "client_id: TESTCLIENT\nclient_key_id: main\ncredential: myusername\nprivate_key_file: keys/absent.pem\n",
    );
    let err = load(&path).unwrap_err();
    let expected = dir.path().join("keys/absent.pem");
    assert!(
        matches!(&err, ConfigError::Key(KeyError::NotFound { path: p }) if *p == expected),
        "{err:?}"
    );
    assert_contains(
        &err.to_string(),
        &[
            expected.to_str().unwrap(),
            "not found",
            "check `private_key_file`",
            "config file's folder",
        ],
    );
}

#[cfg(unix)]
#[test]
fn a_key_file_other_users_can_read_is_refused_with_the_chmod_to_run() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, path) = setup("exposed", PYTHON_YAML);
    let key = dir.path().join("keys/rsa2048_pkcs8.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = load(&path).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Key(KeyError::Exposed { path: p, mode: 0o644 }) if *p == key),
        "{err:?}"
    );
    assert_contains(
        &err.to_string(),
        &[&format!("chmod 600 {}", key.display()), "other users"],
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(load(&path).is_ok());
}

#[test]
fn encrypted_keys_say_how_to_decrypt() {
    let legacy = fixture_text("rsa2048_encrypted_pkcs1.pem");
    assert!(legacy.contains("Proc-Type: 4,ENCRYPTED"), "fixture header");
    assert!(fixture_text("rsa2048_encrypted_pkcs8.pem").contains("BEGIN ENCRYPTED PRIVATE KEY"));
    for name in ["rsa2048_encrypted_pkcs8.pem", "rsa2048_encrypted_pkcs1.pem"] {
        let err = key_error(&format!("encrypted_{name}"), name);
        assert!(matches!(err, KeyError::Encrypted { .. }), "{name}: {err:?}");
        assert_contains(
            &err.to_string(),
            &[
                name,
                "encrypted",
                "openssl pkey -in KEY.pem -out key-plain.pem",
            ],
        );
    }
}

#[test]
fn non_rsa_keys_are_refused() {
    for (name, found) in [
        ("ec_p256_sec1.pem", "an EC key"),
        ("ec_p256_pkcs8.pem", "not an RSA key"),
        ("ed25519_pkcs8.pem", "not an RSA key"),
    ] {
        let err = key_error(&format!("not_rsa_{name}"), name);
        assert!(
            matches!(&err, KeyError::NotRsa { found: f, .. } if *f == found),
            "{name}: {err:?}"
        );
        assert_contains(
            &err.to_string(),
            &[name, "RSA key", "openssl genrsa -out private_key.pem 2048"],
        );
    }
}

#[test]
fn rsa_keys_under_2048_bits_are_too_small() {
    for name in ["rsa1024_pkcs8.pem", "rsa1024_pkcs1.pem"] {
        let err = key_error(&format!("too_small_{name}"), name);
        assert!(matches!(err, KeyError::TooSmall { .. }), "{name}: {err:?}");
        assert_contains(
            &err.to_string(),
            &[
                name,
                "shorter than 2048 bits",
                "openssl genrsa -out private_key.pem 2048",
            ],
        );
    }
}

#[test]
fn certificate_or_public_key_is_not_a_private_key() {
    for (name, found) in [
        ("certificate.pem", "certificate"),
        ("rsa2048_public.pem", "public key"),
    ] {
        let err = key_error(&format!("not_private_{name}"), name);
        assert!(
            matches!(&err, KeyError::NotPrivate { found: f, .. } if *f == found),
            "{name}: {err:?}"
        );
        assert_contains(
            &err.to_string(),
            &[
                name,
                found,
                "not a private key",
                "point the setting at the private key file",
            ],
        );
    }
}

#[test]
fn garbage_key_file_is_malformed() {
    let err = key_error("garbage", "garbage.pem");
    assert!(matches!(err, KeyError::Malformed { .. }), "{err:?}");
    assert_contains(
        &err.to_string(),
        &[
            "garbage.pem",
            "not a usable PEM private key",
            "-----BEGIN PRIVATE KEY-----",
        ],
    );
}

#[test]
fn crlf_key_loads() {
    assert!(
        fixture_text("rsa2048_pkcs1_crlf.pem").contains("\r\n"),
        "fixture has CRLF"
    );
    let (_dir, config) = load_with_key("crlf", "rsa2048_pkcs1_crlf.pem");
    let config = config.unwrap();
    let expected = SigningKey::from_pem_file(&key_fixture("rsa2048_pkcs1.pem")).unwrap();
    assert_eq!(
        config.signing_key().public_key_pem(),
        expected.public_key_pem()
    );
}

#[test]
fn pkcs1_and_pkcs8_of_one_key_are_the_same_key() {
    let (_d1, pkcs1) = load_with_key("same_key_pkcs1", "rsa2048_pkcs1.pem");
    let (_d8, pkcs8) = load_with_key("same_key_pkcs8", "rsa2048_pkcs8.pem");
    let (pkcs1, pkcs8) = (pkcs1.unwrap(), pkcs8.unwrap());
    let public = pkcs1.signing_key().public_key_pem();
    assert_eq!(public, pkcs8.signing_key().public_key_pem());
    assert_eq!(public, fixture_text("rsa2048_public.pem"));
    assert_eq!(
        pkcs1.signing_key().sign_sha256(b"hello"),
        pkcs8.signing_key().sign_sha256(b"hello")
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets

#[test]
fn debug_shows_neither_credential_nor_key() {
    let secret = "SuperSecretUser42";
    let yaml = PYTHON_YAML.replace("myusername", secret);
    let (_dir, path) = setup("debug", &yaml);
    let config = load(&path).unwrap();
    assert_eq!(config.credential().expose_secret(), secret);

    let builder = Config::builder()
        .credential(secret)
        .private_key(config.signing_key().clone());
    for debug in [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{builder:?}"),
    ] {
        assert!(!debug.contains(secret), "{debug}");
        for name in ["rsa2048_pkcs8.pem", "rsa2048_pkcs1.pem"] {
            for line in fixture_text(name).lines() {
                if line.starts_with("-----") {
                    continue;
                }
                assert!(!debug.contains(line), "{name} line {line:?} in {debug}");
            }
        }
    }
}
