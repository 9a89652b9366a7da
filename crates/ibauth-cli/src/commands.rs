//! `login`, `status`, `tickle`, `token`, `logout` against a config file, sharing the token file
//! with every other ibauth process: stored tokens are reused while valid, a login happens only
//! when none is, and under the store's lock (so processes started together log in once).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ibauth::manager::Policy;
use ibauth::oauth1a::{self, Oauth1aClient, ThirdPartyClient, login};
use ibauth::store::shared::{self, Source};
use ibauth::store::{StoredTokens, TokenStore};
use ibauth::{AuthStatus, Config, Error, Oauth2Client};
use serde_json::json;

use crate::flow::{self, Cmd};
use crate::render::{Out, config_fail, fail, not_authenticated};

/// Stored tokens are reused only if valid at least this much longer.
const REUSE_MARGIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub enum Action {
    Login {
        force: bool,
    },
    Status,
    Tickle,
    Token {
        method: String,
        path: String,
        curl: bool,
    },
    Logout,
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Login { .. } => "login",
            Action::Status => "status",
            Action::Tickle => "tickle",
            Action::Token { .. } => "token",
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

/// The third-party settings from the command line.
#[derive(Debug, Clone)]
pub struct ThirdParty {
    pub flow: login::Flow,
    pub timeout: Option<Duration>,
    pub max_age: Duration,
}

pub async fn run(
    out: Out,
    config: Option<&Path>,
    action: Action,
    oauth1a_flag: bool,
    third_party: Option<ThirdParty>,
) -> ExitCode {
    let policy = match Policy::load(config) {
        Ok(policy) => policy,
        Err(e) => return config_fail(out, e),
    };
    let store = crate::keepalive::token_store(&policy);
    if let Some(options) = third_party {
        let client = match oauth1a::config::load_third_party(config).map(ThirdPartyClient::new) {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return fail(out, &e),
            Err(e) => return config_fail(out, e),
        };
        out.heading(&format!(
            "ibauth {} (OAuth 1.0a third party, consumer {})",
            action.name(),
            client.config().consumer_key()
        ));
        // Without a token file the grant lives as long as this command.
        let store = store.unwrap_or_else(|| Arc::new(ibauth::store::MemoryStore::new()));
        let options = login::LoginOptions {
            max_age: options.max_age,
            flow: options.flow,
            timeout: options.timeout,
        };
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
        let mut say = |text: &str| {
            out.clear_progress();
            eprintln!("{text}");
        };
        let t = Instant::now();
        let session = match login::login(&client, &store, &options, &mut stdin, &mut say).await {
            Ok((session, fresh)) => {
                out.step(
                    "authorization",
                    t.elapsed(),
                    if fresh {
                        "authorised in the browser; grant and live session token stored"
                    } else {
                        "reused the stored grant"
                    },
                    json!({ "fresh": fresh }),
                );
                session
            }
            Err(e) => return fail(out, &Error::from(e)),
        };
        return execute(out, session, Some(store), action, policy.compete).await;
    }
    if wants_oauth1a(oauth1a_flag, config) {
        let client = match oauth1a::config::load(config).map(Oauth1aClient::new) {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return fail(out, &e),
            Err(e) => return config_fail(out, e),
        };
        out.heading(&format!(
            "ibauth {} (OAuth 1.0a) at {}",
            action.name(),
            client.base_url()
        ));
        execute(out, client, store, action, policy.compete).await
    } else {
        let client = match Config::load(config).map(Oauth2Client::new) {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return fail(out, &e),
            Err(e) => return config_fail(out, e),
        };
        out.heading(&format!(
            "ibauth {} at {}",
            action.name(),
            client.api_base()
        ));
        execute(out, client, store, action, policy.compete).await
    }
}

async fn execute<C: Cmd>(
    out: Out,
    mut client: C,
    store: Option<Arc<dyn TokenStore>>,
    action: Action,
    compete: bool,
) -> ExitCode {
    let mut session = Session {
        out,
        store,
        stored: None,
        compete,
        initialised: None,
    };
    let result = match action {
        Action::Login { force } => session.login(&mut client, force).await,
        Action::Status => session.status(&mut client, false).await,
        Action::Tickle => session.status(&mut client, true).await,
        Action::Token { method, path, curl } => {
            session.token(&mut client, &method, &path, curl).await
        }
        Action::Logout => session.logout(&mut client).await.map(|()| None),
    };
    match result {
        Ok(Some(status)) if !status.authenticated => not_authenticated(out, &status),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(out, &e),
    }
}

/// One command's view of the token file.
struct Session {
    out: Out,
    store: Option<Arc<dyn TokenStore>>,
    /// The document the client's tokens came from or were saved as.
    stored: Option<StoredTokens>,
    /// `compete` for `ssodh/init`.
    compete: bool,
    /// The flags of the `ssodh/init` that followed this command's own login, if it logged in.
    initialised: Option<AuthStatus>,
}

impl Session {
    /// Valid tokens in `client`: the stored ones, or a login (under the lock) that is saved.
    async fn tokens<C: Cmd>(&mut self, client: &mut C, force: bool) -> Result<(), Error> {
        let Some(store) = self.store.clone() else {
            return self.sign_in(client).await;
        };
        let t = Instant::now();
        if !force && let Some(stored) = shared::restore(client, &store, REUSE_MARGIN).await? {
            self.report(client, Source::Stored, &stored, t.elapsed());
            self.stored = Some(stored);
            return Ok(());
        }
        self.refresh(client, force).await
    }

    /// A login under the store's lock (or the tokens another process just stored).
    async fn refresh<C: Cmd>(&mut self, client: &mut C, force: bool) -> Result<(), Error> {
        let Some(store) = self.store.clone() else {
            return self.sign_in(client).await;
        };
        let (out, compete) = (self.out, self.compete);
        out.progress("logging in (or waiting for another ibauth process that is)");
        let t = Instant::now();
        let mut initialised = None;
        // A login is always followed by `ssodh/init`: new tokens open a new SSO session, which
        // holds no brokerage session yet.
        let login = async |c: &mut C| {
            c.sign_in(out).await?;
            initialised = Some(flow::init(c, out, compete).await?);
            Ok(())
        };
        let (source, stored) = if force {
            (
                Source::Refreshed,
                shared::replace(client, &store, login).await?,
            )
        } else {
            shared::refresh(client, &store, REUSE_MARGIN, true, login).await?
        };
        self.initialised = initialised;
        if source == Source::Adopted {
            self.report(client, source, &stored, t.elapsed());
        }
        self.stored = Some(stored);
        Ok(())
    }

    /// A login without a store.
    async fn sign_in<C: Cmd>(&mut self, client: &mut C) -> Result<(), Error> {
        client.sign_in(self.out).await?;
        self.initialised = Some(flow::init(client, self.out, self.compete).await?);
        Ok(())
    }

    fn report<C: Cmd>(&self, client: &C, source: Source, stored: &StoredTokens, took: Duration) {
        let now = client.now_unix();
        let age = stored.token_age(now).as_secs();
        let left = stored.session_token_expiry().map(|e| e.saturating_sub(now));
        let what = match source {
            Source::Stored => "reused stored tokens",
            Source::Adopted => "took the tokens another process just stored",
            Source::Refreshed => "logged in",
        };
        self.out.step(
            "tokens",
            took,
            &format!(
                "{what}: login {} ago, expire in {}",
                human(age),
                left.map_or("?".into(), human)
            ),
            json!({
                "source": match source {
                    Source::Stored => "stored",
                    Source::Adopted => "adopted",
                    Source::Refreshed => "login",
                },
                "token_age_s": age,
                "expires_in_s": left,
            }),
        );
    }

    /// Runs `op`; on a 401 (tokens revoked or expired server-side) refreshes once and retries.
    async fn retrying<C: Cmd, T>(
        &mut self,
        client: &mut C,
        op: impl AsyncFn(&mut C, Out) -> Result<T, Error>,
    ) -> Result<T, Error> {
        match op(client, self.out).await {
            Err(e) if e.status() == Some(401) && self.store.is_some() => {
                tracing::info!(error = %e, "stored tokens were rejected; refreshing");
                self.refresh(client, false).await?;
                op(client, self.out).await
            }
            other => other,
        }
    }

    async fn save_session<C: Cmd>(&self, client: &C, session: String) {
        if let Some(store) = &self.store
            && let Some(mut doc) = client.stored_tokens(client.now_unix())
        {
            doc.session_id = Some(session);
            if let Err(e) = shared::save(store, doc).await {
                tracing::warn!(error = %e, "cannot store the session id");
            }
        }
    }

    async fn login<C: Cmd>(
        &mut self,
        client: &mut C,
        force: bool,
    ) -> Result<Option<AuthStatus>, Error> {
        self.tokens(client, force).await?;
        if let Some(status) = self.initialised.take() {
            return Ok(Some(status));
        }
        let compete = self.compete;
        let status = self
            .retrying(client, async |c: &mut C, out| {
                flow::init(c, out, compete).await
            })
            .await?;
        Ok(Some(status))
    }

    /// `status` (and `tickle`, which also initialises the brokerage session when needed).
    async fn status<C: Cmd>(
        &mut self,
        client: &mut C,
        init: bool,
    ) -> Result<Option<AuthStatus>, Error> {
        let compete = self.compete;
        self.tokens(client, false).await?;
        let (mut status, mut session) = self
            .retrying(client, async |c: &mut C, out| {
                flow::tickle(c, out, None).await
            })
            .await?;
        if init && !status.authenticated {
            flow::init(client, self.out, compete).await?;
            (status, session) = flow::tickle(client, self.out, None).await?;
        }
        let changed = self.stored.as_ref().and_then(|s| s.session_id.as_deref()) != Some(&session);
        if changed {
            self.save_session(client, session).await;
        }
        self.summary(client);
        Ok(Some(status))
    }

    /// Token ages and expiries, and the API host.
    fn summary<C: Cmd>(&self, client: &C) {
        let now = client.now_unix();
        let tokens: Vec<_> = client
            .tokens()
            .iter()
            .map(|t| {
                json!({
                    "kind": t.kind.name(),
                    "age_s": now.saturating_sub(t.obtained_at),
                    "expires_in_s": t.expires_at.saturating_sub(now),
                })
            })
            .collect();
        let text = client
            .tokens()
            .iter()
            .map(|t| {
                format!(
                    "{} expires in {}",
                    t.kind.name(),
                    human(t.expires_at.saturating_sub(now))
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let login_age = self.stored.as_ref().map(|s| s.token_age(now).as_secs());
        self.out.result(
            &format!(
                "  api {}; {text}{}",
                client.api_base(),
                login_age.map_or(String::new(), |a| format!("; logged in {} ago", human(a)))
            ),
            json!({
                "api_base": client.api_base(),
                "tokens": tokens,
                "token_age_s": login_age,
            }),
        );
    }

    async fn token<C: Cmd>(
        &mut self,
        client: &mut C,
        method: &str,
        path: &str,
        curl: bool,
    ) -> Result<Option<AuthStatus>, Error> {
        self.tokens(client, false).await?;
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad_request("method", "is not an HTTP method"))?;
        let url = client
            .request_url(path)
            .map_err(|_| bad_request("path", "is not a path such as /v1/api/iserver/accounts"))?;
        let header = client.authorization(&method, &url)?;
        let value = header
            .to_str()
            .map_err(|_| bad_request("token", "is not printable"))?
            .to_owned();
        let text = if curl {
            let post = if method == reqwest::Method::GET {
                String::new()
            } else {
                format!(" -X {method}")
            };
            format!("curl{post} -H 'Authorization: {value}' '{url}'")
        } else {
            value.clone()
        };
        self.out.result(
            &text,
            json!({ "authorization": value, "method": method.as_str(), "url": url.as_str(), "curl": curl.then_some(&text) }),
        );
        Ok(None)
    }

    async fn logout<C: Cmd>(&mut self, client: &mut C) -> Result<(), Error> {
        let Some(store) = self.store.clone() else {
            self.sign_in(client).await?;
            return flow::logout(client, self.out).await;
        };
        // Nothing stored, or only expired tokens: there is no session of ours to end.
        let Some(stored) = shared::restore(client, &store, Duration::ZERO).await? else {
            self.out.result(
                "  nothing to log out: no valid stored tokens",
                json!({ "step": "logout", "nothing_stored": true }),
            );
            return Ok(());
        };
        flow::logout(client, self.out).await?;
        shared::forget(&store, &stored).await
    }
}

fn bad_request(key: &str, reason: &str) -> Error {
    Error::Config(ibauth::ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    })
}

/// `90 s`, `12 min`, `5 h`, `3 d`.
fn human(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(5), "5 s");
        assert_eq!(human(600), "10 min");
        assert_eq!(human(86_399), "23 h");
        assert_eq!(human(3 * 86_400), "3 d");
    }
}
