//! `ibauth demo`: the whole OAuth 2.0 flow against an in-process sandbox.

use std::process::ExitCode;
use std::time::Instant;

use ibauth::oauth1a::{DhGroup, Oauth1aClient, Oauth1aConfig};
use ibauth::secrecy::SecretString;
use ibauth::{Config, DecryptionKey, Error, Oauth2Client, SigningKey};
use ibauth_sandbox::{ClientRegistration, ConsumerRegistration, RFC3526_PRIME_2048, Sandbox};
use serde_json::json;

use crate::flow;
use crate::render::{Out, code, fail};

const CLIENT_ID: &str = "DEMOCLIENT";
const KEY_ID: &str = "demo";
const CREDENTIAL: &str = "demouser";

pub async fn run(out: Out, tls: bool, tickles: u32, oauth1a: bool) -> ExitCode {
    let result = if oauth1a {
        demo_oauth1a(out, tls, tickles).await
    } else {
        demo(out, tls, tickles).await
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(DemoError::Client(e)) => fail(out, &e),
        Err(DemoError::Setup(message)) => {
            eprintln!("error: demo setup failed: {message}");
            ExitCode::from(code::OTHER)
        }
    }
}

enum DemoError {
    Client(Error),
    Setup(String),
}

impl From<Error> for DemoError {
    fn from(e: Error) -> Self {
        DemoError::Client(e)
    }
}

async fn demo(out: Out, tls: bool, tickles: u32) -> Result<(), DemoError> {
    let total = Instant::now();
    let t = Instant::now();
    let key = SigningKey::generate().map_err(|e| DemoError::Setup(e.to_string()))?;
    let sandbox = Sandbox::builder()
        .tls(tls)
        .register(
            ClientRegistration::new(CLIENT_ID)
                .key(KEY_ID, &key)
                .credential(CREDENTIAL),
        )
        .start()
        .await
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    out.heading(&format!(
        "ibauth demo: OAuth 2.0 against the embedded IBKR sandbox at {}",
        sandbox.base_url()
    ));
    out.step(
        "setup",
        t.elapsed(),
        "generated an RSA-2048 key, registered it, started the sandbox",
        json!({ "sandbox": sandbox.base_url(), "tls": tls }),
    );

    let mut builder = Config::builder()
        .client_id(CLIENT_ID)
        .client_key_id(KEY_ID)
        .credential(CREDENTIAL)
        .private_key(key)
        .base_url(sandbox.base_url())
        // The sandbox answers the caller's address like a public-IP service would.
        .ip_lookup_urls([sandbox.ip_lookup_url()]);
    if let Some(ca) = sandbox.ca_pem() {
        builder = builder.ca_pem(ca);
    }
    let mut client = Oauth2Client::new(builder.build().map_err(Error::from)?)?;

    let login = Instant::now();
    flow::sign_in(&mut client, out).await?;
    let (status, login_ms) = brokerage_steps(&mut client, out, login, tickles).await?;
    finish(out, sandbox, &status, login_ms, total).await;
    Ok(())
}

const CONSUMER: &str = "DEMOCONSU";

async fn demo_oauth1a(out: Out, tls: bool, tickles: u32) -> Result<(), DemoError> {
    let total = Instant::now();
    let t = Instant::now();
    let setup = |e: &dyn std::fmt::Display| DemoError::Setup(e.to_string());
    let signature = SigningKey::generate().map_err(|e| setup(&e))?;
    let encryption = SigningKey::generate().map_err(|e| setup(&e))?;
    let sandbox = Sandbox::builder()
        .tls(tls)
        .register_consumer(ConsumerRegistration::new(CONSUMER, &signature, &encryption))
        .start()
        .await
        .map_err(|e| setup(&e))?;
    let (token, secret) = sandbox
        .issue_access_token(CONSUMER, CREDENTIAL)
        .ok_or_else(|| setup(&"the sandbox did not issue an access token"))?;
    out.heading(&format!(
        "ibauth demo: OAuth 1.0a against the embedded IBKR sandbox at {}",
        sandbox.base_url()
    ));
    out.step(
        "setup",
        t.elapsed(),
        "generated signature and encryption keys, registered the consumer, issued an access token",
        json!({ "sandbox": sandbox.base_url(), "tls": tls }),
    );
    let dh = DhGroup::from_hex(RFC3526_PRIME_2048, 2).map_err(|e| setup(&e))?;
    let decryption = DecryptionKey::from_pem(&encryption.to_pkcs8_pem()).map_err(|e| setup(&e))?;
    let mut config = Oauth1aConfig::new(
        CONSUMER,
        token,
        SecretString::from(secret),
        signature,
        decryption,
        dh,
    )
    .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
    .map_err(Error::from)?;
    if let Some(ca) = sandbox.ca_pem() {
        config = config.ca_pem(ca);
    }
    let mut client = Oauth1aClient::new(config)?;

    let login = Instant::now();
    flow::live_session_token(&mut client, out).await?;
    let (status, login_ms) = brokerage_steps(&mut client, out, login, tickles).await?;
    finish(out, sandbox, &status, login_ms, total).await;
    Ok(())
}

/// `ssodh/init` (ending the login that started at `login`), the tickles, and logout — the same
/// for both auth methods. Returns the flags after init and the login time in ms.
async fn brokerage_steps(
    client: &mut impl ibauth::manager::Client,
    out: Out,
    login: Instant,
    tickles: u32,
) -> Result<(ibauth::AuthStatus, f64), Error> {
    let status = flow::init(client, out, true).await?;
    let login_ms = login.elapsed().as_secs_f64() * 1000.0;
    for i in 1..=tickles {
        flow::tickle(client, out, Some((i, tickles))).await?;
    }
    flow::logout(client, out).await?;
    Ok((status, login_ms))
}

/// The closing line: how long the login took, and what the sandbox saw.
async fn finish(
    out: Out,
    sandbox: Sandbox,
    status: &ibauth::AuthStatus,
    login_ms: f64,
    total: Instant,
) {
    let counters = sandbox.counters();
    sandbox.shutdown().await;
    out.result(
        &format!(
            "done: logged in ({}) in {login_ms:.1} ms, {} tickles, logged out; {:.1} ms in all",
            crate::render::flags(status),
            counters.tickles,
            total.elapsed().as_secs_f64() * 1000.0
        ),
        json!({
            "step": "done",
            "login_ms": (login_ms * 1000.0).round() / 1000.0,
            "total_ms": (total.elapsed().as_secs_f64() * 1e6).round() / 1000.0,
            "authenticated": status.authenticated,
            "sandbox": counters,
        }),
    );
}
