//! `login`, `status`, `tickle`, `logout` against a config file.
//!
//! Until tokens are kept between runs, each command signs in afresh.

use std::path::Path;
use std::process::ExitCode;

use ibauth::oauth1a::{self, Oauth1aClient};
use ibauth::{Config, Error, Oauth2Client};

use crate::flow;
use crate::render::{Out, config_fail, fail, not_authenticated};

#[derive(Debug, Clone, Copy)]
pub enum Action {
    Login,
    Status,
    Tickle,
    Logout,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Login => "login",
            Action::Status => "status",
            Action::Tickle => "tickle",
            Action::Logout => "logout",
        }
    }
}

/// Whether to use OAuth 1.0a: asked for, or implied by the environment or a file that only has
/// an `oauth1a:` section.
pub fn wants_oauth1a(flag: bool, config: Option<&Path>) -> bool {
    let env: Vec<(String, String)> = std::env::vars().collect();
    if flag || oauth1a::config::requested_by_env(&env) {
        return true;
    }
    let file = config
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("IBAUTH_CONFIG").map(Into::into))
        .unwrap_or_else(|| ibauth::DEFAULT_CONFIG_FILE.into());
    let has_oauth2 = std::fs::read_to_string(&file)
        .map(|t| t.lines().any(|l| l.starts_with("client_id:")))
        .unwrap_or(false);
    oauth1a::config::file_has_section(&file) && !has_oauth2
}

pub async fn run(out: Out, config: Option<&Path>, action: Action, oauth1a_flag: bool) -> ExitCode {
    if wants_oauth1a(oauth1a_flag, config) {
        return run_oauth1a(out, config, action).await;
    }
    let config = match Config::load(config) {
        Ok(config) => config,
        Err(e) => return config_fail(out, e),
    };
    let mut client = match Oauth2Client::new(config) {
        Ok(client) => client,
        Err(e) => return fail(out, &e),
    };
    out.heading(&format!(
        "ibauth {} at {}",
        action.name(),
        client.api_base()
    ));
    finish(out, act(&mut client, out, action).await)
}

async fn act(
    client: &mut Oauth2Client,
    out: Out,
    action: Action,
) -> Result<Option<ibauth::AuthStatus>, Error> {
    flow::sign_in(client, out).await?;
    match action {
        Action::Login => Ok(Some(flow::init(client, out).await?)),
        Action::Status => Ok(Some(flow::tickle(client, out, None).await?)),
        Action::Tickle => {
            flow::init(client, out).await?;
            Ok(Some(flow::tickle(client, out, None).await?))
        }
        Action::Logout => {
            flow::logout(client, out).await?;
            Ok(None)
        }
    }
}

async fn run_oauth1a(out: Out, config: Option<&Path>, action: Action) -> ExitCode {
    let config = match oauth1a::config::load(config) {
        Ok(config) => config,
        Err(e) => return config_fail(out, e),
    };
    let mut client = match Oauth1aClient::new(config) {
        Ok(client) => client,
        Err(e) => return fail(out, &e),
    };
    out.heading(&format!(
        "ibauth {} (OAuth 1.0a) at {}",
        action.name(),
        client.brokerage().rest_base()
    ));
    let result = async {
        flow::live_session_token(&mut client, out).await?;
        match action {
            Action::Login => Ok(Some(flow::init(&mut client, out).await?)),
            Action::Status => Ok(Some(flow::tickle(&mut client, out, None).await?)),
            Action::Tickle => {
                flow::init(&mut client, out).await?;
                Ok(Some(flow::tickle(&mut client, out, None).await?))
            }
            Action::Logout => {
                flow::logout(&mut client, out).await?;
                Ok(None)
            }
        }
    }
    .await;
    finish(out, result)
}

fn finish(out: Out, result: Result<Option<ibauth::AuthStatus>, Error>) -> ExitCode {
    match result {
        Ok(Some(status)) if !status.authenticated => not_authenticated(out, &status),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(out, &e),
    }
}
