//! The third-party method as a [`Client`]: a consumer plus the grant a user gave it, which turns
//! into an ordinary first-party [`Oauth1aClient`] once the grant is known. The grant is kept
//! with the tokens (it outlives them: a new live session token needs only the grant), and a
//! missing or too old grant is asked for through an [`Authorize`] hook — interactive in the
//! command line, absent (an error that says what to run) in a background service.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::Oauth1aClient;
use super::login::LoginError;
use super::third_party::{AccessGrant, ThirdPartyClient, ThirdPartyConfig};
use crate::brokerage::{AuthStatus, Authorizer, Logout, Tickle};
use crate::client::{AuthMethod, BoxFuture, Client};
use crate::clock::Clock;
use crate::error::{ConfigError, Error, Step};
use crate::http::HttpClient;
use crate::store::{StoredGrant, StoredTokens};
use crate::tokens::{TokenExpiry, TokenKind};
use crate::ws::WsEndpoint;

/// Asks the user to authorise the consumer (a browser, or a pasted redirect) and returns the
/// grant. [`super::login::Interactive`] is the command line's.
pub trait Authorize: Send {
    /// Runs one authorisation for `client`'s consumer.
    fn authorize<'a>(
        &'a mut self,
        client: &'a ThirdPartyClient,
    ) -> BoxFuture<'a, Result<AccessGrant, LoginError>>;
}

/// Grants older than this are not reused by default: the user authorises again.
pub const DEFAULT_GRANT_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);

/// A third-party consumer with (once authorised) its user's grant.
pub struct GrantedClient {
    consumer: ThirdPartyClient,
    http: HttpClient,
    clock: Arc<dyn Clock>,
    grant: Option<(AccessGrant, u64)>,
    session: Option<Oauth1aClient>,
    authorize: Option<Box<dyn Authorize>>,
    max_age: Duration,
    /// A host switched to before the grant arrived, applied to the session once it exists.
    host: Option<String>,
    api_base: Url,
    rest_base: Url,
}

impl std::fmt::Debug for GrantedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantedClient")
            .field("consumer_key", &self.consumer.config().consumer_key())
            .field("granted", &self.grant.is_some())
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl GrantedClient {
    /// A client for `config`'s consumer, sending through `http`; without a grant until one is
    /// restored from a store or asked for.
    pub fn new(
        config: ThirdPartyConfig,
        clock: Arc<dyn Clock>,
        http: HttpClient,
    ) -> Result<Self, Error> {
        let consumer = ThirdPartyClient::with_http(config, clock.clone(), http.clone());
        let rest_base = consumer.config().rest_base().clone();
        let api_base = super::client::host_root(&rest_base);
        Ok(Self {
            consumer,
            http,
            clock,
            grant: None,
            session: None,
            authorize: None,
            max_age: DEFAULT_GRANT_MAX_AGE,
            host: None,
            api_base,
            rest_base,
        })
    }

    /// Asks through `authorize` when there is no usable grant.
    pub fn with_authorize(mut self, authorize: Box<dyn Authorize>) -> Self {
        self.authorize = Some(authorize);
        self
    }

    /// Grants older than `max_age` are not reused.
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The consumer's exchanges.
    pub fn consumer(&self) -> &ThirdPartyClient {
        &self.consumer
    }

    /// Whether a grant is held, and whether it is a paper account's.
    pub fn grant_is_paper(&self) -> Option<bool> {
        self.grant.as_ref().map(|(g, _)| g.is_paper)
    }

    fn grant_fresh(&self) -> bool {
        let now = self.clock.now_unix();
        self.grant.as_ref().is_some_and(|(_, granted_at)| {
            Duration::from_secs(now.saturating_sub(*granted_at)) < self.max_age
        })
    }

    fn open_session(&mut self, grant: AccessGrant, granted_at: u64) -> Result<(), Error> {
        let mut session = Oauth1aClient::with_http(
            self.consumer.session_config(&grant),
            self.clock.clone(),
            self.http.clone(),
        )?;
        if let Some(host) = &self.host {
            Client::switch_host(&mut session, host)?;
        }
        self.session = Some(session);
        self.grant = Some((grant, granted_at));
        Ok(())
    }

    fn session(&mut self, step: Step) -> Result<&mut Oauth1aClient, Error> {
        self.session.as_mut().ok_or(Error::NotReady {
            step,
            reason: "no authorisation yet: the user must authorise this consumer first (`ibauth --third-party login`)",
        })
    }

    fn session_ref(&self, step: Step) -> Result<&Oauth1aClient, Error> {
        self.session.as_ref().ok_or(Error::NotReady {
            step,
            reason: "no authorisation yet: the user must authorise this consumer first (`ibauth --third-party login`)",
        })
    }

    /// The stored document as the inner first-party client sees it.
    fn as_first_party(&self, stored: &StoredTokens) -> Option<StoredTokens> {
        let session = self.session.as_ref()?;
        let mut doc = stored.clone();
        doc.method = AuthMethod::OAuth1a.name().to_owned();
        doc.identity = session.identity();
        Some(doc)
    }

    fn grant_from(&self, stored: &StoredTokens) -> Option<(AccessGrant, u64)> {
        let grant = stored.grant.as_ref()?;
        if stored.identity != self.identity_of() || grant.consumer_key != self.consumer_key() {
            return None;
        }
        Some((
            AccessGrant {
                access_token: grant.access_token.expose_secret().to_owned(),
                access_token_secret: grant.access_token_secret.clone(),
                is_paper: grant.is_paper,
            },
            grant.granted_at.unwrap_or(stored.created_at),
        ))
    }

    fn consumer_key(&self) -> &str {
        self.consumer.config().consumer_key()
    }

    fn identity_of(&self) -> String {
        crate::store::fingerprint(&[AuthMethod::ThirdParty.name(), self.consumer_key()])
    }

    async fn login_inner(&mut self) -> Result<(), Error> {
        if !self.grant_fresh() {
            let Some(mut authorize) = self.authorize.take() else {
                return Err(Error::Login(format!(
                    "no authorisation of consumer {} younger than {} days is stored: the user must authorise it (`ibauth --third-party login`)",
                    self.consumer_key(),
                    self.max_age.as_secs() / 86_400
                )));
            };
            let asked = authorize.authorize(&self.consumer).await;
            self.authorize = Some(authorize);
            let grant = asked.map_err(Error::from)?;
            let now = self.clock.now_unix();
            self.open_session(grant, now)?;
        }
        self.session(Step::LiveSessionToken)?
            .request_live_session_token()
            .await
            .map(|_| ())
    }
}

impl Client for GrantedClient {
    fn method(&self) -> AuthMethod {
        AuthMethod::ThirdParty
    }
    fn login(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.login_inner())
    }
    fn renew<'a>(&'a mut self, kinds: &'a [TokenKind]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move { Client::renew(self.session(Step::LiveSessionToken)?, kinds).await })
    }
    fn init(&mut self, compete: bool) -> BoxFuture<'_, Result<AuthStatus, Error>> {
        Box::pin(async move { Client::init(self.session(Step::SsodhInit)?, compete).await })
    }
    fn status(&mut self) -> BoxFuture<'_, Result<AuthStatus, Error>> {
        Box::pin(async move { Client::status(self.session(Step::AuthStatus)?).await })
    }
    fn tickle(&mut self) -> BoxFuture<'_, Result<Tickle, Error>> {
        Box::pin(async move { Client::tickle(self.session(Step::Tickle)?).await })
    }
    fn logout(&mut self) -> BoxFuture<'_, Result<Logout, Error>> {
        Box::pin(async move { Client::logout(self.session(Step::Logout)?).await })
    }
    fn authorizer(&self) -> Result<Arc<dyn Authorizer>, Error> {
        Client::authorizer(self.session_ref(Step::Api)?)
    }
    fn websocket(&self) -> Result<WsEndpoint, Error> {
        Client::websocket(self.session_ref(Step::WebSocket)?)
    }
    fn tokens(&self) -> Vec<TokenExpiry> {
        self.session
            .as_ref()
            .map(Client::tokens)
            .unwrap_or_default()
    }
    fn has_session_token(&self) -> bool {
        self.session.as_ref().is_some_and(Client::has_session_token)
    }
    fn now_unix(&self) -> u64 {
        self.clock.now_unix()
    }
    fn api_base(&self) -> &Url {
        self.session
            .as_ref()
            .map_or(&self.api_base, |s| Oauth1aClient::api_base(s))
    }
    fn rest_base(&self) -> &Url {
        self.session
            .as_ref()
            .map_or(&self.rest_base, |s| Oauth1aClient::rest_base(s))
    }
    fn switch_host(&mut self, host: &str) -> Result<(), ConfigError> {
        if let Some(session) = self.session.as_mut() {
            Client::switch_host(session, host)?;
        }
        self.host = Some(host.to_owned());
        Ok(())
    }
    fn identity(&self) -> String {
        self.identity_of()
    }
    fn stored_tokens(&self, now: u64) -> Option<StoredTokens> {
        let (grant, granted_at) = self.grant.as_ref()?;
        let mut doc = Client::stored_tokens(self.session.as_ref()?, now)?;
        doc.method = AuthMethod::ThirdParty.name().to_owned();
        doc.identity = self.identity_of();
        doc.grant = Some(StoredGrant {
            consumer_key: self.consumer_key().to_owned(),
            access_token: SecretString::from(grant.access_token.clone()),
            access_token_secret: grant.access_token_secret.clone(),
            is_paper: grant.is_paper,
            granted_at: Some(*granted_at),
        });
        Some(doc)
    }
    fn restore_tokens(&mut self, stored: &StoredTokens) -> bool {
        if stored.method != AuthMethod::ThirdParty.name() {
            return false;
        }
        let Some((grant, granted_at)) = self.grant_from(stored) else {
            return false;
        };
        if self.open_session(grant, granted_at).is_err() {
            return false;
        }
        match (self.as_first_party(stored), self.session.as_mut()) {
            (Some(doc), Some(session)) => Client::restore_tokens(session, &doc),
            _ => false,
        }
    }
    fn adopt_credentials(&mut self, stored: &StoredTokens) {
        if stored.method != AuthMethod::ThirdParty.name() {
            return;
        }
        let held = self.grant.as_ref().map(|(g, _)| g.access_token.clone());
        if let Some((grant, granted_at)) = self.grant_from(stored)
            && held.as_deref() != Some(grant.access_token.as_str())
            && let Err(e) = self.open_session(grant, granted_at)
        {
            tracing::warn!(error = %e, "the stored grant cannot be used");
        }
    }
    fn http(&self) -> &HttpClient {
        &self.http
    }
    fn publish(&self) -> bool {
        self.consumer.config().template().publishes()
    }
}
