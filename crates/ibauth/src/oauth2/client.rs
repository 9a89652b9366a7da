use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::{
    CLIENT_ASSERTION_TYPE, REST_PATH, SCOPE, SSO_SESSIONS_PATH, TOKEN_PATH, client_assertion,
    sso_session_request,
};
use crate::brokerage::{
    AuthStatus, BearerAuthorizer, BrokerageClient, Connected, Logout, SsoValidation, Tickle,
};
use crate::client::{AuthMethod, BoxFuture, Client};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, parse_base_url};
use crate::error::{ConfigError, Error, Step};
use crate::http::{HttpClient, Reply};
use crate::public_ip;
use crate::store::{StoredBearer, StoredToken, StoredTokens};
use crate::tokens::{
    MAX_TOKEN_LIFETIME, TokenExpiry, TokenKind, lenient_u64, sane_lifetime, sane_time_left,
};

/// The OAuth 2.0 access token (about 24 h), which opens SSO sessions.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The token itself.
    pub token: SecretString,
    /// `token_type` (normally `Bearer`).
    pub token_type: String,
    /// Granted scope.
    pub scope: Option<String>,
    /// When it was issued (Unix seconds, local clock).
    pub obtained_at: u64,
    /// When it expires (Unix seconds), from `expires_in`.
    pub expires_at: Option<u64>,
}

/// The SSO bearer token that authorises the brokerage session's calls.
#[derive(Debug, Clone)]
pub struct BearerToken {
    /// The token itself.
    pub token: SecretString,
    /// IBKR's `active` flag.
    pub active: bool,
    /// The public IP the session is bound to.
    pub ip: Ipv4Addr,
    /// When it was issued (Unix seconds, local clock).
    pub obtained_at: u64,
    /// When it expires (Unix seconds): the `exp` requested, refined by `sso/validate`'s
    /// `EXPIRES` and tickle's `ssoExpires`.
    pub expires_at: u64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct SsoSessionAnswer {
    #[serde(default)]
    active: Option<bool>,
    access_token: Option<String>,
}

/// An OAuth 2.0 client: each login step as its own method, and [`connect`](Self::connect) for
/// all of them.
///
/// The API host can be changed at any time ([`set_domain`](Self::set_domain)); every later call
/// uses it.
#[derive(Debug)]
pub struct Oauth2Client {
    config: Config,
    http: HttpClient,
    clock: Arc<dyn Clock>,
    api_base: Url,
    brokerage: BrokerageClient,
    access: Option<AccessToken>,
    bearer: Option<BearerToken>,
    last_ip: Option<Ipv4Addr>,
    /// An absurd expiry was warned about: a tickle repeats it every minute.
    expiry_warned: bool,
}

impl Oauth2Client {
    /// A client on the system clock.
    pub fn new(config: Config) -> Result<Self, Error> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A client on the given clock (tests pin it to reproduce signatures).
    pub fn with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        let http = HttpClient::new(config.timeout(), config.ca_pem())?;
        Ok(Self::with_http(config, clock, http))
    }

    /// A client that sends through `http` (a [`crate::Session`] passes its paced one).
    pub fn with_http(config: Config, clock: Arc<dyn Clock>, http: HttpClient) -> Self {
        let api_base = config.api_base().clone();
        let brokerage = BrokerageClient::new(http.clone(), rest_base(&api_base));
        Self {
            config,
            http,
            clock,
            api_base,
            brokerage,
            access: None,
            bearer: None,
            last_ip: None,
            expiry_warned: false,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The clock the client signs and times tokens with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The API host in use (`https://api.ibkr.com/`): the OAuth endpoints hang off it.
    pub fn api_base(&self) -> &Url {
        &self.api_base
    }

    /// The REST base in use (`https://api.ibkr.com/v1/api/`): the brokerage and API calls.
    pub fn rest_base(&self) -> &Url {
        self.brokerage.rest_base()
    }

    /// The HTTP client every request goes through.
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// Switches to another API host (`api.ibkr.com`, `5.api.ibkr.com`, …); every later call goes
    /// there. Tokens are kept: IBKR's hosts share them.
    pub fn set_domain(&mut self, domain: &str) -> Result<(), ConfigError> {
        let domain = domain.trim();
        if domain.is_empty() || domain.contains('/') {
            return Err(ConfigError::Invalid {
                key: "domain".into(),
                reason: "must be a host name such as 5.api.ibkr.com".into(),
            });
        }
        self.set_base_url(&format!("https://{domain}"))
    }

    /// Switches to another base URL (plain http only on loopback).
    pub fn set_base_url(&mut self, base_url: &str) -> Result<(), ConfigError> {
        let url = parse_base_url("base_url", base_url)?;
        let brokerage = BrokerageClient::new(self.http.clone(), rest_base(&url));
        tracing::info!(from = %self.api_base, to = %url, "API host switched");
        self.api_base = url;
        self.brokerage = brokerage;
        Ok(())
    }

    /// A fingerprint of the credentials (client id, key id, credential): stored tokens are
    /// only used by the client they were issued to. No credential can be read back from it.
    pub fn identity(&self) -> String {
        crate::store::fingerprint(&[
            "oauth2",
            self.config.client_id(),
            self.config.client_key_id(),
            self.config.credential().expose_secret(),
        ])
    }

    /// The tokens held, as a document to store (`created_at` = `now`; keep the stored one
    /// across renewals). `None` without a bearer token.
    pub fn stored_tokens(&self, now: u64) -> Option<StoredTokens> {
        let bearer = self.bearer.as_ref()?;
        let mut doc = StoredTokens::new("oauth2", self.identity(), self.api_base.to_string(), now);
        doc.access_token = self.access.as_ref().map(|a| StoredToken {
            token: a.token.clone(),
            token_type: a.token_type.clone(),
            scope: a.scope.clone(),
            obtained_at: a.obtained_at,
            expires_at: a.expires_at,
        });
        doc.bearer = Some(StoredBearer {
            token: bearer.token.clone(),
            ip: bearer.ip,
            obtained_at: bearer.obtained_at,
            expires_at: bearer.expires_at,
        });
        Some(doc)
    }

    /// Takes over stored tokens. Refused (nothing changes) if they belong to other
    /// credentials or another auth method, or hold no bearer token.
    pub fn restore_tokens(&mut self, stored: &StoredTokens) -> bool {
        if stored.method != "oauth2" || stored.identity != self.identity() {
            return false;
        }
        let Some(bearer) = &stored.bearer else {
            return false;
        };
        self.access = stored.access_token.as_ref().map(|a| AccessToken {
            token: a.token.clone(),
            token_type: a.token_type.clone(),
            scope: a.scope.clone(),
            obtained_at: a.obtained_at,
            expires_at: a.expires_at,
        });
        self.bearer = Some(BearerToken {
            token: bearer.token.clone(),
            active: true,
            ip: bearer.ip,
            obtained_at: bearer.obtained_at,
            expires_at: bearer.expires_at,
        });
        self.last_ip = Some(bearer.ip);
        true
    }

    /// The current access token, if any.
    pub fn access_token(&self) -> Option<&AccessToken> {
        self.access.as_ref()
    }

    /// The current bearer token, if any.
    pub fn bearer_token(&self) -> Option<&BearerToken> {
        self.bearer.as_ref()
    }

    /// The brokerage-session client (for calls beyond the ones wrapped here).
    pub fn brokerage(&self) -> &BrokerageClient {
        &self.brokerage
    }

    /// An authorizer for the current bearer token.
    pub fn authorizer(&self, step: Step) -> Result<BearerAuthorizer, Error> {
        let bearer = self.bearer.as_ref().ok_or(Error::NotReady {
            step,
            reason: "no bearer token yet: call connect() (or create_sso_session()) first",
        })?;
        BearerAuthorizer::new(&bearer.token)
    }

    fn endpoint(&self, path: &str) -> Url {
        join(&self.api_base, path)
    }

    /// Step 1: signs a client assertion and exchanges it for an access token.
    pub async fn request_access_token(&mut self) -> Result<&AccessToken, Error> {
        let step = Step::AccessToken;
        let now = self.clock.now_unix();
        let assertion = client_assertion(
            self.config.signing_key(),
            self.config.client_key_id(),
            self.config.client_id(),
            now,
        );
        tracing::debug!(
            client_id = self.config.client_id(),
            "requesting access token"
        );
        let request = self
            .http
            .reqwest()
            .post(self.endpoint(TOKEN_PATH))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(token_request_body(&assertion).expose_secret().to_owned());
        let reply = self.http.send(step, request).await?;
        let token = access_token_from(&reply, now)?;
        tracing::info!(
            expires_in_s = token.expires_at.map(|at| at.saturating_sub(now)),
            "access token obtained"
        );
        Ok(self.access.insert(token))
    }

    /// The public IP: from the config, or looked up (and a warning if it changed since the
    /// last login, because IBKR binds the SSO session to it).
    pub async fn public_ip(&mut self) -> Result<Ipv4Addr, Error> {
        let ip = match self.config.public_ip() {
            Some(ip) => ip,
            None => public_ip::lookup(&self.http, self.config.ip_lookup_urls()).await?,
        };
        if let Some(previous) = self.last_ip.filter(|p| *p != ip) {
            tracing::warn!(%previous, current = %ip, "public IP changed since the last login; IBKR binds the session to it");
        }
        self.last_ip = Some(ip);
        Ok(ip)
    }

    /// Step 2: opens an SSO session bound to the public IP, giving the bearer token.
    pub async fn create_sso_session(&mut self) -> Result<&BearerToken, Error> {
        let step = Step::SsoSession;
        let access = self.access.as_ref().ok_or(Error::NotReady {
            step,
            reason: "no access token yet: call request_access_token() first",
        })?;
        let access_header = BearerAuthorizer::new(&access.token)?.header();
        let ip = self.public_ip().await?;
        let now = self.clock.now_unix();
        let jwt = sso_session_request(
            self.config.signing_key(),
            self.config.client_key_id(),
            self.config.client_id(),
            self.config.credential(),
            ip,
            now,
        );
        tracing::debug!(%ip, "requesting SSO session");
        let request = self
            .http
            .reqwest()
            .post(self.endpoint(SSO_SESSIONS_PATH))
            .header(AUTHORIZATION, access_header)
            .header(CONTENT_TYPE, "application/jwt")
            .body(jwt.expose_secret().to_owned());
        let reply = self.http.send(step, request).await?;
        let bearer = bearer_token_from(&reply, ip, now)?;
        tracing::info!(%ip, "SSO session opened");
        Ok(self.bearer.insert(bearer))
    }

    /// Step 3: `sso/validate`. Refines the bearer token's expiry from `EXPIRES`.
    pub async fn validate(&mut self) -> Result<SsoValidation, Error> {
        let auth = self.authorizer(Step::Validate)?;
        let validation = self.brokerage.validate(&auth).await?;
        if let Some(left) = validation.expires_in() {
            self.refine_bearer_expiry("EXPIRES", left);
        }
        // USER_NAME is the credential: log the numeric id instead.
        tracing::info!(
            user_id = validation.user_id,
            result = validation.result,
            "SSO session validated"
        );
        Ok(validation)
    }

    /// Step 4: `ssodh/init` with the configured `publish`/`compete`.
    pub async fn init_brokerage_session(&self) -> Result<AuthStatus, Error> {
        self.init_brokerage_session_with(self.config.compete())
            .await
    }

    /// `ssodh/init` with an explicit `compete`.
    pub async fn init_brokerage_session_with(&self, compete: bool) -> Result<AuthStatus, Error> {
        let auth = self.authorizer(Step::SsodhInit)?;
        let status = self
            .brokerage
            .init(&auth, self.config.publish(), compete)
            .await?;
        tracing::info!(
            authenticated = status.authenticated,
            competing = status.competing,
            connected = status.connected,
            "brokerage session initialised"
        );
        Ok(status)
    }

    /// `iserver/auth/status`.
    pub async fn auth_status(&self) -> Result<AuthStatus, Error> {
        let auth = self.authorizer(Step::AuthStatus)?;
        self.brokerage.status(&auth).await
    }

    /// `tickle`: keeps the session alive. Refines the bearer token's expiry from `ssoExpires`.
    pub async fn tickle(&mut self) -> Result<Tickle, Error> {
        let auth = self.authorizer(Step::Tickle)?;
        let tickle = self.brokerage.tickle(&auth).await?;
        if let Some(left) = tickle.sso_expires_in() {
            self.refine_bearer_expiry("ssoExpires", left);
        }
        let status = tickle.auth_status();
        // The session id doubles as the WebSocket cookie: log only enough to tell sessions apart.
        tracing::debug!(
            session = tickle.session_short(),
            authenticated = status.authenticated,
            competing = status.competing,
            connected = status.connected,
            "tickle"
        );
        Ok(tickle)
    }

    /// Where the WebSocket is on the current host, authorised by the bearer token.
    pub fn websocket_endpoint(&self) -> Result<crate::ws::WsEndpoint, Error> {
        let auth = self.authorizer(Step::WebSocket)?;
        let mut url = join(&self.api_base, "/v1/api/ws");
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).map_err(|()| Error::Protocol {
            step: Step::WebSocket,
            status: 0,
            detail: "cannot derive the WebSocket URL".into(),
        })?;
        Ok(crate::ws::WsEndpoint {
            url,
            authorization: Some(auth.header()),
            ca_pem: self.config.ca_pem().map(<[u8]>::to_vec),
            timeout: self.config.timeout(),
        })
    }

    /// An authenticated WebSocket on the current host: the bearer token and the `api` cookie
    /// from a fresh tickle.
    /// It reconnects by itself (after a fresh tickle) when the server closes it.
    pub async fn connect_websocket(&self) -> Result<crate::ws::IbkrWebSocket, Error> {
        let auth = self.authorizer(Step::WebSocket)?;
        crate::ws::open_reconnecting(
            self.brokerage.clone(),
            auth,
            self.websocket_endpoint()?,
            self.http.max_body(),
        )
        .await
    }

    /// `logout`: ends the brokerage session and forgets the bearer token.
    pub async fn logout(&mut self) -> Result<Logout, Error> {
        let auth = self.authorizer(Step::Logout)?;
        let logout = self.brokerage.logout(&auth).await?;
        self.bearer = None;
        tracing::info!(already_gone = logout.already_gone, "logged out");
        Ok(logout)
    }

    /// All four steps: access token → SSO session → validate → `ssodh/init`.
    pub async fn connect(&mut self) -> Result<Connected, Error> {
        self.request_access_token().await?;
        self.create_sso_session().await?;
        let validation = self.validate().await?;
        let status = self.init_brokerage_session().await?;
        Ok(Connected {
            validation: Some(validation),
            status,
        })
    }

    /// The server's time left on the SSO session (`field`), at most
    /// [`MAX_TOKEN_LIFETIME`]: an absurd value neither overflows nor stops the renewals.
    fn refine_bearer_expiry(&mut self, field: &'static str, left: Duration) {
        let now = self.clock.now_unix();
        let secs = sane_time_left(TokenKind::Bearer, field, left, !self.expiry_warned);
        self.expiry_warned |= left > MAX_TOKEN_LIFETIME;
        if let Some(bearer) = self.bearer.as_mut() {
            bearer.expires_at = now.saturating_add(secs);
        }
    }
}

impl Client for Oauth2Client {
    fn method(&self) -> AuthMethod {
        AuthMethod::OAuth2
    }
    fn login(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.request_access_token().await?;
            self.create_sso_session().await?;
            self.validate().await.map(|_| ())
        })
    }
    fn renew<'a>(&'a mut self, kinds: &'a [TokenKind]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let now = self.clock().now_unix();
            // A new bearer needs a live access token: renew it first if it is also running out.
            let access_stale = self
                .access_token()
                .is_none_or(|a| a.expires_at.is_some_and(|e| e <= now.saturating_add(1)));
            if kinds.contains(&TokenKind::AccessToken)
                || (kinds.contains(&TokenKind::Bearer) && access_stale)
            {
                self.request_access_token().await?;
            }
            if kinds.contains(&TokenKind::Bearer) {
                self.create_sso_session().await?;
                self.validate().await?;
            }
            Ok(())
        })
    }
    fn init(&mut self, compete: bool) -> BoxFuture<'_, Result<AuthStatus, Error>> {
        Box::pin(self.init_brokerage_session_with(compete))
    }
    fn status(&mut self) -> BoxFuture<'_, Result<AuthStatus, Error>> {
        Box::pin(self.auth_status())
    }
    fn tickle(&mut self) -> BoxFuture<'_, Result<Tickle, Error>> {
        Box::pin(Oauth2Client::tickle(self))
    }
    fn logout(&mut self) -> BoxFuture<'_, Result<Logout, Error>> {
        Box::pin(Oauth2Client::logout(self))
    }
    fn authorizer(&self) -> Result<Arc<dyn crate::brokerage::Authorizer>, Error> {
        Ok(Arc::new(Oauth2Client::authorizer(self, Step::Api)?))
    }
    fn websocket(&self) -> Result<crate::ws::WsEndpoint, Error> {
        Oauth2Client::websocket_endpoint(self)
    }
    fn tokens(&self) -> Vec<TokenExpiry> {
        let access = self.access_token().and_then(|a| {
            a.expires_at.map(|expires_at| TokenExpiry {
                kind: TokenKind::AccessToken,
                obtained_at: a.obtained_at,
                expires_at,
            })
        });
        let bearer = self.bearer_token().map(|b| TokenExpiry {
            kind: TokenKind::Bearer,
            obtained_at: b.obtained_at,
            expires_at: b.expires_at,
        });
        access.into_iter().chain(bearer).collect()
    }
    fn has_session_token(&self) -> bool {
        self.bearer_token().is_some()
    }
    fn now_unix(&self) -> u64 {
        self.clock().now_unix()
    }
    fn api_base(&self) -> &Url {
        Oauth2Client::api_base(self)
    }
    fn rest_base(&self) -> &Url {
        Oauth2Client::rest_base(self)
    }
    fn switch_host(&mut self, host: &str) -> Result<(), ConfigError> {
        if host.contains("://") {
            self.set_base_url(host)
        } else {
            self.set_domain(host)
        }
    }
    fn identity(&self) -> String {
        Oauth2Client::identity(self)
    }
    fn stored_tokens(&self, now: u64) -> Option<StoredTokens> {
        Oauth2Client::stored_tokens(self, now)
    }
    fn restore_tokens(&mut self, stored: &StoredTokens) -> bool {
        Oauth2Client::restore_tokens(self, stored)
    }
    fn http(&self) -> &HttpClient {
        Oauth2Client::http(self)
    }
    fn publish(&self) -> bool {
        self.config().publish()
    }
}

/// The access token from the token endpoint's answer (step 1), its lifetime clamped: a
/// lifetime of 0 or 2^64 − 1 s must neither loop the renewals nor overflow.
pub(crate) fn access_token_from(reply: &Reply, now: u64) -> Result<AccessToken, Error> {
    let step = Step::AccessToken;
    let answer: TokenAnswer = reply.json(step)?;
    let token = answer
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or(Error::Protocol {
            step,
            status: 200,
            detail: "no access_token in the answer".into(),
        })?;
    let expires_in = match answer.expires_in.as_ref() {
        None | Some(serde_json::Value::Null) => None,
        Some(value) => match lenient_u64(value) {
            Some(secs) => Some(sane_lifetime(TokenKind::AccessToken, "expires_in", secs)),
            None => {
                tracing::warn!(
                    "the access token's expires_in is not a usable number; its expiry is unknown"
                );
                None
            }
        },
    };
    Ok(AccessToken {
        token: SecretString::from(token),
        token_type: answer.token_type.unwrap_or_else(|| "Bearer".into()),
        scope: answer.scope,
        obtained_at: now,
        expires_at: expires_in.map(|s| now.saturating_add(s)),
    })
}

/// The bearer token from the SSO-session endpoint's answer (step 2).
pub(crate) fn bearer_token_from(
    reply: &Reply,
    ip: Ipv4Addr,
    now: u64,
) -> Result<BearerToken, Error> {
    let step = Step::SsoSession;
    let answer: SsoSessionAnswer = reply.json(step)?;
    let token = answer
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or(Error::Protocol {
            step,
            status: 200,
            detail: "no access_token (bearer) in the answer".into(),
        })?;
    Ok(BearerToken {
        token: SecretString::from(token),
        active: answer.active.unwrap_or(true),
        ip,
        obtained_at: now,
        expires_at: now.saturating_add(super::SSO_SESSION_LIFETIME_SECS),
    })
}

/// The token request's form body, in the order IBKR's reference client sends it.
pub fn token_request_body(assertion: &SecretString) -> SecretString {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_assertion", assertion.expose_secret())
        .append_pair("client_assertion_type", CLIENT_ASSERTION_TYPE)
        .append_pair("scope", SCOPE)
        .finish();
    SecretString::from(body)
}

/// `base` + an absolute endpoint path, keeping any path prefix of `base`.
fn join(base: &Url, absolute_path: &str) -> Url {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{absolute_path}"));
    url
}

fn rest_base(api_base: &Url) -> Url {
    join(api_base, REST_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_a_base_path_prefix() {
        let base = Url::parse("http://127.0.0.1:5000/prefix/").unwrap();
        assert_eq!(
            join(&base, TOKEN_PATH).as_str(),
            "http://127.0.0.1:5000/prefix/oauth2/api/v1/token"
        );
        let base = Url::parse("https://api.ibkr.com").unwrap();
        assert_eq!(rest_base(&base).as_str(), "https://api.ibkr.com/v1/api/");
    }
}
