//! The YAML config file, as every reader of it reads it: the OAuth 2.0 settings
//! (`ConfigBuilder::yaml_file`, then `build`), the `oauth1a:` section (first and third party),
//! the session policy with its `pacing:` section, and the auth-method probe.
//!
//! Input: the file's text. Files it names are never read: the keys, DH prime and CA come from
//! the environment given to the loaders (which wins over the file), or from code.
#![no_main]

use std::sync::OnceLock;

use ibauth::policy::Policy;
use ibauth::{AuthConfig, ConfigBuilder};
use libfuzzer_sys::fuzz_target;

fn env() -> &'static [(&'static str, String)] {
    static ENV: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    ENV.get_or_init(|| {
        let pem = ibauth_fuzz::key().to_pkcs8_pem();
        let ca = ibauth_fuzz::scratch("config_yaml").join("ca.pem");
        ibauth_fuzz::write_private(&ca, b"");
        vec![
            ("IBAUTH_OAUTH1A_SIGNATURE_KEY", pem.clone()),
            ("IBAUTH_OAUTH1A_ENCRYPTION_KEY", pem),
            (
                "IBAUTH_OAUTH1A_DH_PRIME",
                ibauth::oauth1a::RFC3526_PRIME_2048.to_owned(),
            ),
            ("IBAUTH_OAUTH1A_CA_FILE", ca.display().to_string()),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let env = env();
    let path = ibauth_fuzz::scratch("config_yaml").join("config.yaml");
    ibauth_fuzz::write_private(&path, data);
    let none: &[(&str, &str)] = &[];

    // OAuth 2.0: the file, then everything checked, with the key and CA given in code.
    if let Ok(builder) = ConfigBuilder::default().yaml_file(&path) {
        let built = builder
            .private_key(ibauth_fuzz::key().clone())
            .ca_pem(Vec::new())
            .build();
        if let Ok(config) = built {
            assert!(!config.timeout().is_zero());
            assert!(!config.ip_lookup_urls().is_empty());
            let _ = format!("{config:?}");
        }
    }

    // OAuth 1.0a.
    let _ = ibauth::oauth1a::config::file_has_section(&path);
    let _ = ibauth::oauth1a::config::files_with_env(Some(&path), none);
    match ibauth::oauth1a::config::load_with_env(Some(&path), env) {
        Ok(config) => {
            let _ = format!("{config:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Err(e) = ibauth::oauth1a::config::load_third_party_with_env(Some(&path), env) {
        let _ = e.to_string();
    }

    // The session policy and its pacing rules.
    match Policy::load_with_env(Some(&path), none) {
        Ok(policy) => {
            assert!(policy.max_body >= ibauth::policy::MIN_MAX_BODY);
            assert!(policy.max_body <= ibauth::policy::MAX_MAX_BODY);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }

    // Which method the file asks for.
    if let Err(e) = AuthConfig::choose_method_with_env(Some(&path), None, none) {
        let _ = e.to_string();
    }
});
