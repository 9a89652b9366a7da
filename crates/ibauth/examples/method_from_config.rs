//! The auth method chosen at run time, from the config file: the same code serves OAuth 2.0 and
//! OAuth 1.0a. A config holding both (OAuth 2.0 keys at the top, an `oauth1a:` section) means
//! OAuth 2.0; `--oauth1a` on a command line (here `Some(AuthMethod::OAuth1a)`) or an `auth:`
//! key in the file picks OAuth 1.0a. Either way the result is a `Session` — a value whose type
//! does not depend on the method — or, one level down, a `Box<dyn Client>`.
//!
//! It runs against an in-process sandbox with a generated credential set (keys and
//! `config.yaml` in a temporary folder), so it needs no setup:
//!
//! ```text
//! cargo run -p ibauth --example method_from_config
//! ```

use std::error::Error;
use std::path::Path;

use ibauth::oauth1a::Oauth1aClient;
use ibauth::{AuthConfig, AuthMethod, Client, Oauth2Client, Session};
use ibauth_sandbox::{CredentialSet, SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL, Sandbox};

/// The method each way of choosing gave, and the account it saw.
#[derive(Debug)]
pub struct Outcome {
    /// (how the method was chosen, the method, the selected account).
    pub runs: Vec<(&'static str, AuthMethod, String)>,
    /// The method the `Box<dyn Client>` was built for.
    pub client_method: AuthMethod,
}

/// The same code whatever the method: a session from the config, one call, a logout.
async fn selected_account(
    path: &Path,
    method: Option<AuthMethod>,
) -> Result<(AuthMethod, String), Box<dyn Error>> {
    let session = Session::from_config(Some(path), method)?.build()?;
    let accounts: serde_json::Value = session.get("iserver/accounts").await?.json()?;
    session.logout().await?;
    let account = accounts["selectedAccount"].as_str().unwrap_or_default();
    Ok((session.method(), account.to_owned()))
}

/// One level down: a client of whichever method the config names.
fn client_for(config: AuthConfig) -> Result<Box<dyn Client>, Box<dyn Error>> {
    Ok(match config {
        AuthConfig::OAuth2(c) => Box::new(Oauth2Client::new(c)?),
        AuthConfig::OAuth1a(c) => Box::new(Oauth1aClient::new(c)?),
        AuthConfig::ThirdParty(_) => return Err("this example has no third-party consumer".into()),
    })
}

pub async fn run() -> Result<Outcome, Box<dyn Error>> {
    // Keys, the sandbox, and config.yaml with both methods (as `ibauth sandbox` writes it).
    let dir = std::env::temp_dir().join(format!("ibauth-example-config-{}", std::process::id()));
    let set = CredentialSet::load_or_create(&dir)?;
    let sandbox = Sandbox::builder()
        .register(set.registration())
        .register_consumer(set.consumer_registration())
        .start()
        .await?;
    let (token, secret) = sandbox
        .issue_access_token(SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL)
        .ok_or("the sandbox has no such consumer")?;
    let config = set.write_config_with(sandbox.base_url(), None, Some((&token, &secret)))?;
    // Not printed: it holds the OAuth 1.0a access token secret.
    println!("config: {}", config.display());

    let mut runs = Vec::new();
    // 1. As written: OAuth 2.0 keys are present, so OAuth 2.0.
    let (method, account) = selected_account(&config, None).await?;
    runs.push(("the file as written", method, account));
    // 2. Asked for in code, as `ibauth --oauth1a` does.
    let (method, account) = selected_account(&config, Some(AuthMethod::OAuth1a)).await?;
    runs.push(("asked for (--oauth1a)", method, account));
    // 3. An `auth:` key in the file.
    let chosen = dir.join("config-oauth1a.yaml");
    let text = std::fs::read_to_string(&config)?;
    std::fs::write(&chosen, format!("auth: oauth1a\n{text}"))?;
    let (method, account) = selected_account(&chosen, None).await?;
    runs.push(("the auth: key", method, account));
    for (how, method, account) in &runs {
        println!("{how:<22} → {:<11} account {account}", method.label());
    }

    let client = client_for(AuthConfig::load(Some(&chosen), None)?)?;
    println!("Box<dyn Client> for {}", client.method().label());

    sandbox.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Outcome {
        runs,
        client_method: client.method(),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    run().await.map(|_| ())
}
