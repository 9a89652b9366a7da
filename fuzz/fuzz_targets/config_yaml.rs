//! The YAML config file, as every reader of it reads it: the OAuth 2.0 settings
//! (`ConfigBuilder::yaml_file`, then `build`), the `oauth1a:` section (first and third party),
//! the session policy with its `pacing:` section, and the auth-method probe.
//!
//! Input: the file's text. Files it names are never read: the keys, DH prime and CA come from
//! the environment given to the loaders (which wins over the file), or from code.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use ibauth::pacing::{Limit, Method, Pacer};
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
            // A timeout that ends every call at once is no timeout to accept.
            let timeout = ibauth::fuzzing::oauth1a_timeout(&config);
            assert!(!timeout.is_zero() && timeout <= Duration::from_secs(600));
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
            // Every limit's text form reads back as the same limit (it is how they are shown).
            let rules = &policy.pacing;
            for limit in rules
                .global
                .iter()
                .chain(rules.endpoints.iter().map(|r| &r.limit))
            {
                let again = limit.to_string().parse::<Limit>();
                assert_eq!(again.as_ref(), Ok(limit), "{limit}");
            }
            // The rules drive a pacer: a turn now, or a refusal — never a panic or a wait.
            let pacer = Pacer::new(policy.pacing.clone());
            let paths = rules.endpoints.iter().map(|r| r.path.as_str());
            ibauth_fuzz::runtime().block_on(async {
                for path in ["/iserver/accounts", "/tickle"]
                    .into_iter()
                    .chain(paths)
                    .take(4)
                {
                    for method in [Method::GET, Method::POST] {
                        let _ = pacer.acquire_within(&method, path, Duration::ZERO).await;
                    }
                    pacer.pause(&Method::GET, path, None);
                }
            });
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
