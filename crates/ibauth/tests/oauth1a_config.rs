//! OAuth 1.0a configuration: the `oauth1a:` YAML section, `IBAUTH_OAUTH1A_*`, ibind's
//! `IBIND_*`, keys as files or inline PEM, the DH prime as hex or `dhparam.pem`.

use std::path::{Path, PathBuf};

use ibauth::ConfigError;
use ibauth::oauth1a::config::{load_with_env, requested_by_env};

const PRIME: &str = "ffffffffffffffffc90fdaa22168c234c4c6628b80dc1cd129024e088a67cc74020bbea63b139b22514a08798e3404ddef9519b3cd3a431b302b0a6df25f14374fe1356d6d51c245e485b576625e7ec6f44c42e9a637ed6b0bff5cb6f406b7edee386bfb5a899fa5ae9f24117c4b1fe649286651ece45b3dc2007cb8a163bf0598da48361c55d39a69163fa8fd24cf5f83655d23dca3ad961c62f356208552bb9ed529077096966d670c354e4abc9804f1746c08ca18217c32905e462e36ce3be39e772c180e86039b2783a2ec07a28fb5c55df06f4c52c9de2bcbf6955817183995497cea956ae515d2261898fa051015728e5a8aacaa68ffffffffffffffff";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ibauth-o1a-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A secret encrypted to the fixture key, so the client can decrypt it.
fn secret() -> String {
    // The vectors' secret is encrypted to the vectors' encryption key; use that pair.
    let v: serde_json::Value = serde_json::from_str(include_str!("vectors/oauth1a.json")).unwrap();
    v["access_token_secret"].as_str().unwrap().to_owned()
}

fn encryption_pem() -> String {
    let v: serde_json::Value = serde_json::from_str(include_str!("vectors/oauth1a.json")).unwrap();
    v["encryption_key_pem"].as_str().unwrap().to_owned()
}

const NO_ENV: &[(&str, &str)] = &[];

/// Writes a private key file only its owner can read: ibauth refuses one other users can.
fn write_key(path: &Path, pem: &[u8]) -> String {
    std::fs::write(path, pem).unwrap();
    chmod(path, 0o600);
    path.display().to_string()
}

/// A fixture key copied into `dir`, owner-only (Git checks the fixtures out readable by all).
fn fixture_key(dir: &Path, name: &str) -> String {
    write_key(
        &dir.join(name),
        &std::fs::read(fixtures().join(name)).unwrap(),
    )
}

fn chmod(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

#[test]
fn yaml_section_with_files_and_dhparam_resolves_against_the_yaml_folder() {
    let dir = temp("yaml");
    write_key(&dir.join("enc.pem"), encryption_pem().as_bytes());
    write_key(
        &dir.join("sig.pem"),
        &std::fs::read(fixtures().join("rsa2048_pkcs1.pem")).unwrap(),
    );
    // A PKCS#3 dhparam.pem of RFC 3526 group 14, generator 2 (what `openssl dhparam` writes).
    std::fs::write(
        dir.join("dhparam.pem"),
        ibauth::pem_encode("DH PARAMETERS", &dh_der()),
    )
    .unwrap();
    let yaml = format!(
        "client_id: X\noauth1a:\n  consumer_key: ABCDEFGHI\n  access_token: \"0123456789abcdef0123\"\n  access_token_secret: \"{}\"\n  signature_key_file: sig.pem\n  encryption_key_file: enc.pem\n  dh_param_file: dhparam.pem\n  rest_url: http://127.0.0.1:9/v1/api\n",
        secret()
    );
    std::fs::write(dir.join("config.yaml"), yaml).unwrap();
    let config = load_with_env(Some(&dir.join("config.yaml")), NO_ENV).unwrap();
    assert_eq!(config.consumer_key(), "ABCDEFGHI");
    assert_eq!(config.rest_base().as_str(), "http://127.0.0.1:9/v1/api/");
    let debug = format!("{config:?}");
    assert!(!debug.contains(&secret()), "secret in Debug");
    assert!(debug.contains("DhGroup(2048 bits)"), "{debug}");
}

fn dh_der() -> Vec<u8> {
    let mut p = vec![0u8];
    p.extend(
        (0..PRIME.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&PRIME[i..i + 2], 16).unwrap()),
    );
    let mut body = vec![0x02, 0x82, 0x01, 0x01];
    body.extend(&p);
    body.extend([0x02, 0x01, 0x02]);
    let mut der = vec![0x30, 0x82, (body.len() >> 8) as u8, body.len() as u8];
    der.extend(body);
    der
}

#[test]
fn ibind_variables_alone_are_a_whole_configuration_and_ours_override_them() {
    let dir = temp("ibind");
    let sig = fixture_key(&dir, "rsa2048_pkcs8.pem");
    write_key(&dir.join("enc.pem"), encryption_pem().as_bytes());
    let secret = secret();
    let mut env = vec![
        ("IBIND_USE_OAUTH", "True".to_owned()),
        ("IBIND_OAUTH1A_CONSUMER_KEY", "IBINDCONS".to_owned()),
        (
            "IBIND_OAUTH1A_ACCESS_TOKEN",
            "0123456789abcdef0123".to_owned(),
        ),
        ("IBIND_OAUTH1A_ACCESS_TOKEN_SECRET", secret),
        ("IBIND_OAUTH1A_DH_PRIME", PRIME.to_owned()),
        ("IBIND_OAUTH1A_SIGNATURE_KEY_FP", sig),
        (
            "IBIND_OAUTH1A_ENCRYPTION_KEY_FP",
            dir.join("enc.pem").display().to_string(),
        ),
        (
            "IBIND_OAUTH1A_REST_URL",
            "http://localhost:1/v1/api/".to_owned(),
        ),
    ];
    assert!(requested_by_env(&env));
    // No file named, none in the working directory (the crate folder has no config.yaml).
    assert!(!std::path::Path::new("config.yaml").exists());
    let config = load_with_env(None, &env).unwrap();
    assert_eq!(config.consumer_key(), "IBINDCONS");
    assert_eq!(config.rest_base().as_str(), "http://localhost:1/v1/api/");

    env.push(("IBAUTH_OAUTH1A_CONSUMER_KEY", "OURSCONSU".to_owned()));
    assert_eq!(
        load_with_env(None, &env).unwrap().consumer_key(),
        "OURSCONSU"
    );

    // Inline PEM works for keys too.
    env.push(("IBAUTH_OAUTH1A_ENCRYPTION_KEY", encryption_pem()));
    env.retain(|(k, _)| *k != "IBIND_OAUTH1A_ENCRYPTION_KEY_FP");
    assert!(load_with_env(None, &env).is_ok());
}

#[test]
fn nothing_requested_without_oauth1a_variables() {
    assert!(!requested_by_env(&[
        ("IBAUTH_CLIENT_ID", "x"),
        ("IBIND_USE_OAUTH", "False")
    ]));
}

#[test]
fn missing_settings_are_named_with_their_section_and_variable() {
    let err = load_with_env(None, &[("IBIND_USE_OAUTH", "True")]).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Missing {
                key: "oauth1a.consumer_key",
                env: "IBAUTH_OAUTH1A_CONSUMER_KEY"
            }
        ),
        "{err:?}"
    );
    let env = [
        ("IBIND_OAUTH1A_CONSUMER_KEY", "ABCDEFGHI"),
        ("IBIND_OAUTH1A_ACCESS_TOKEN", "0123456789abcdef0123"),
        ("IBIND_OAUTH1A_ACCESS_TOKEN_SECRET", "AAAA"),
    ];
    let err = load_with_env(None, &env).unwrap_err();
    assert!(
        matches!(
            err,
            ConfigError::Missing {
                key: "oauth1a.signature_key_file",
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn bad_dh_and_bad_secret_say_what_to_fix() {
    let dir = temp("bad");
    let sig = fixture_key(&dir, "rsa2048_pkcs8.pem");
    write_key(&dir.join("enc.pem"), encryption_pem().as_bytes());
    std::fs::write(
        dir.join("notdh.pem"),
        std::fs::read(fixtures().join("certificate.pem")).unwrap(),
    )
    .unwrap();
    let enc = dir.join("enc.pem").display().to_string();
    let secret = secret();
    let base = |extra: (&'static str, String)| {
        vec![
            ("IBAUTH_OAUTH1A_CONSUMER_KEY", "ABCDEFGHI".to_owned()),
            (
                "IBAUTH_OAUTH1A_ACCESS_TOKEN",
                "0123456789abcdef0123".to_owned(),
            ),
            ("IBAUTH_OAUTH1A_ACCESS_TOKEN_SECRET", secret.clone()),
            ("IBAUTH_OAUTH1A_SIGNATURE_KEY_FILE", sig.clone()),
            ("IBAUTH_OAUTH1A_ENCRYPTION_KEY_FILE", enc.clone()),
            extra,
        ]
    };
    let err = load_with_env(
        None,
        &base((
            "IBAUTH_OAUTH1A_DH_PARAM_FILE",
            dir.join("notdh.pem").display().to_string(),
        )),
    )
    .unwrap_err();
    assert!(err.to_string().contains("DH PARAMETERS"), "{err}");
    let err = load_with_env(None, &base(("IBAUTH_OAUTH1A_DH_PRIME", "ff".repeat(32)))).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if key == "oauth1a.dh_prime"),
        "{err:?}"
    );
    let err =
        load_with_env(None, &base(("IBAUTH_OAUTH1A_DH_GENERATOR", "two".into()))).unwrap_err();
    assert!(err.to_string().contains("dh_generator"), "{err}");

    // A secret that is not base64: the client refuses at construction with what to do.
    let mut env = base(("IBAUTH_OAUTH1A_DH_PRIME", PRIME.to_owned()));
    env[2].1 = "not base64!".into();
    let config = load_with_env(None, &env).unwrap();
    let err = ibauth::oauth1a::Oauth1aClient::new(config).unwrap_err();
    assert!(err.to_string().contains("copy it again"), "{err}");
}

#[cfg(unix)]
#[test]
fn key_files_other_users_can_access_are_refused_however_they_are_named() {
    let dir = temp("exposed");
    let sig = fixture_key(&dir, "rsa2048_pkcs8.pem");
    let enc = write_key(&dir.join("enc.pem"), encryption_pem().as_bytes());
    let env = |extra: &[(&'static str, &str)]| {
        let mut env = vec![
            ("IBAUTH_OAUTH1A_CONSUMER_KEY", "ABCDEFGHI".to_owned()),
            (
                "IBAUTH_OAUTH1A_ACCESS_TOKEN",
                "0123456789abcdef0123".to_owned(),
            ),
            ("IBAUTH_OAUTH1A_ACCESS_TOKEN_SECRET", secret()),
            ("IBAUTH_OAUTH1A_DH_PRIME", PRIME.to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    };
    let refused = |env: &[(&'static str, String)], file: &str| {
        let err = load_with_env(None, env).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Key(ibauth::KeyError::Exposed { path, .. })
                if path.display().to_string() == file),
            "{file}: {err:?}"
        );
        assert!(
            err.to_string().contains(&format!("chmod 600 {file}")),
            "{err}"
        );
    };
    let ours = [
        ("IBAUTH_OAUTH1A_SIGNATURE_KEY_FILE", sig.as_str()),
        ("IBAUTH_OAUTH1A_ENCRYPTION_KEY_FILE", enc.as_str()),
    ];
    let ibind = [
        ("IBIND_OAUTH1A_SIGNATURE_KEY_FP", sig.as_str()),
        ("IBIND_OAUTH1A_ENCRYPTION_KEY_FP", enc.as_str()),
    ];
    // ibind's *_KEY variables may hold a path too.
    let ibind_key = [
        ("IBIND_OAUTH1A_SIGNATURE_KEY", sig.as_str()),
        ("IBIND_OAUTH1A_ENCRYPTION_KEY", enc.as_str()),
    ];
    for names in [ours, ibind, ibind_key] {
        assert!(load_with_env(None, &env(&names)).is_ok(), "0600: {names:?}");
        for (mode, file) in [(0o644, &sig), (0o640, &enc)] {
            chmod(Path::new(file), mode);
            refused(&env(&names), file);
            chmod(Path::new(file), 0o600);
        }
    }
    // The same keys as inline PEM are no file's business.
    chmod(Path::new(&sig), 0o644);
    let inline = std::fs::read_to_string(&sig).unwrap();
    let env = env(&[
        ("IBAUTH_OAUTH1A_SIGNATURE_KEY", inline.as_str()),
        ("IBAUTH_OAUTH1A_ENCRYPTION_KEY_FILE", enc.as_str()),
    ]);
    assert!(load_with_env(None, &env).is_ok());
}
