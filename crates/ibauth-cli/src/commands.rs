//! `login`, `status`, `tickle`, `logout` against a config file.
//!
//! Until tokens are kept between runs, each command signs in afresh.

use std::path::Path;
use std::process::ExitCode;

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

pub async fn run(out: Out, config: Option<&Path>, action: Action) -> ExitCode {
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
    match act(&mut client, out, action).await {
        Ok(Some(status)) if !status.authenticated => not_authenticated(out, &status),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(out, &e),
    }
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
