//! A [`Session`] from the command line's flags: the config file, the method asked for, the
//! third-party flow, and the steps reported as they happen.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use ibauth::oauth1a::login::{Flow, Interactive};
use ibauth::policy::Policy;
use ibauth::{AuthConfig, AuthMethod, Error, Session, Step};
use serde_json::json;

use crate::render::Out;

/// The third-party settings from the command line.
#[derive(Debug, Clone)]
pub struct ThirdParty {
    pub flow: Flow,
    pub timeout: Option<Duration>,
    pub max_age: Duration,
}

/// What the flags ask for.
#[derive(Debug, Clone)]
pub struct Flags<'a> {
    pub config: Option<&'a Path>,
    pub oauth1a: bool,
    pub third_party: Option<ThirdParty>,
    /// `--store`: the fleet's shared store, over the config's `store:` and IBAUTH_STORE.
    pub store: Option<ibauth::coord::StoreUrl>,
}

impl Flags<'_> {
    /// The method asked for on the command line, if any.
    pub fn method(&self) -> Option<AuthMethod> {
        if self.third_party.is_some() {
            Some(AuthMethod::ThirdParty)
        } else if self.oauth1a {
            Some(AuthMethod::OAuth1a)
        } else {
            None
        }
    }
}

/// An opened session, and whether a third-party authorisation was asked for.
pub struct Opened {
    pub session: Session,
    pub asked: Arc<AtomicBool>,
}

/// Login steps worth a line: each request of a login, reported as it completes. Tickles, status
/// calls and logouts are reported by the commands themselves, with what they found.
fn reported(step: Step) -> bool {
    matches!(
        step,
        Step::PublicIp
            | Step::AccessToken
            | Step::SsoSession
            | Step::Validate
            | Step::SsodhInit
            | Step::LiveSessionToken
            | Step::RequestToken
            | Step::OauthAccessToken
    )
}

pub async fn open(out: Out, flags: &Flags<'_>) -> Result<Opened, Error> {
    let policy = Policy::load(flags.config)?;
    open_with_policy(out, flags, policy).await
}

pub async fn open_with_policy(
    out: Out,
    flags: &Flags<'_>,
    policy: Policy,
) -> Result<Opened, Error> {
    let config = AuthConfig::load(flags.config, flags.method())?;
    open_config(out, flags, config, policy).await
}

/// A session for credentials loaded by the caller (the gateway adds conf.yaml's host): a
/// member of the fleet `--store` (or the config's `store:`) names, when one does.
pub async fn open_config(
    out: Out,
    flags: &Flags<'_>,
    config: AuthConfig,
    mut policy: Policy,
) -> Result<Opened, Error> {
    if let Some(store) = &flags.store {
        policy.store = Some(store.clone());
    }
    let fleet = policy.clone();
    let mut builder = Session::builder(config).policy(policy);
    // The store opened and the key read before anything is asked of the user or of IBKR.
    builder = ibauth_fleet::join(builder, &fleet).await?;
    builder = builder.observe(Arc::new(move |x: &ibauth::http::Exchange| {
        if !reported(x.step) {
            return;
        }
        let status = x.status.map_or("no answer".to_owned(), |s| s.to_string());
        out.step(
            x.step.name(),
            x.elapsed,
            &format!("{} {} → {status}", x.method, x.path),
            json!({ "status": x.status }),
        );
    }));
    let asked = Arc::new(AtomicBool::new(false));
    if let Some(tp) = &flags.third_party {
        let say = Box::new(move |text: &str| {
            out.clear_progress();
            eprintln!("{}", crate::render::terminal_safe(text));
        });
        let input = Box::new(tokio::io::BufReader::new(tokio::io::stdin()));
        let interactive = Interactive::new(tp.flow, tp.timeout, input, say);
        let shared = interactive.asked();
        builder = builder
            .authorize_with(Box::new(interactive))
            .grant_max_age(tp.max_age);
        return Ok(Opened {
            session: builder.build()?,
            asked: shared,
        });
    }
    Ok(Opened {
        session: builder.build()?,
        asked,
    })
}
