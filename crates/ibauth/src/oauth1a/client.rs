use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderValue};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::Deserialize;
use url::Url;

use super::{
    DhGroup, DhSecret, LstError, Nonce, Signer, authorize, live_session_token, lst_matches,
    oauth_params, prepend,
};
use crate::brokerage::{
    AuthStatus, Authorizer, BrokerageClient, Connected, Logout, SsoValidation, Tickle,
};
use crate::client::{AuthMethod, BoxFuture, Client};
use crate::clock::{Clock, SystemClock};
use crate::config::{DEFAULT_TIMEOUT, parse_base_url};
use crate::error::{ConfigError, Error, Step};
use crate::http::{HttpClient, Reply};
use crate::key::{DecryptionKey, SigningKey};
use crate::store::{StoredLst, StoredTokens};
use crate::tokens::{TokenExpiry, TokenKind, lenient_u64, sane_lifetime};

/// IBKR's demo consumer, valid only with the `test_realm` realm.
pub const TEST_CONSUMER: &str = "TESTCONS";
/// The default REST base.
pub const DEFAULT_REST_URL: &str = "https://api.ibkr.com/v1/api/";
/// The default WebSocket URL.
pub const DEFAULT_WS_URL: &str = "wss://api.ibkr.com/v1/api/ws";

/// OAuth 1.0a (first party) credentials and settings.
///
/// `Debug` shows no secret.
#[derive(Clone)]
pub struct Oauth1aConfig {
    consumer_key: String,
    realm: String,
    access_token: String,
    access_token_secret: SecretString,
    signature_key: SigningKey,
    encryption_key: Arc<DecryptionKey>,
    dh: DhGroup,
    rest_url: Url,
    ws_url: Url,
    timeout: Duration,
    ca_pem: Option<Vec<u8>>,
    publish: bool,
    compete: bool,
}

impl fmt::Debug for Oauth1aConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oauth1aConfig")
            .field("consumer_key", &self.consumer_key)
            .field("realm", &self.realm)
            .field("access_token", &"[REDACTED]")
            .field("access_token_secret", &"[REDACTED]")
            .field("signature_key", &self.signature_key)
            .field("encryption_key", &self.encryption_key)
            .field("dh", &self.dh)
            .field("rest_url", &self.rest_url.as_str())
            .finish_non_exhaustive()
    }
}

impl Oauth1aConfig {
    /// Credentials with the defaults: realm `limited_poa` (`test_realm` for `TESTCONS`), REST
    /// base `https://api.ibkr.com/v1/api/`, 10 s timeout, `publish`/`compete` on.
    pub fn new(
        consumer_key: impl Into<String>,
        access_token: impl Into<String>,
        access_token_secret: SecretString,
        signature_key: SigningKey,
        encryption_key: DecryptionKey,
        dh: DhGroup,
    ) -> Self {
        let consumer_key = consumer_key.into();
        let realm = default_realm(&consumer_key).to_owned();
        Self {
            consumer_key,
            realm,
            access_token: access_token.into(),
            access_token_secret,
            signature_key,
            encryption_key: Arc::new(encryption_key),
            dh,
            rest_url: Url::parse(DEFAULT_REST_URL).unwrap_or_else(|_| unreachable!()),
            ws_url: Url::parse(DEFAULT_WS_URL).unwrap_or_else(|_| unreachable!()),
            timeout: DEFAULT_TIMEOUT,
            ca_pem: None,
            publish: true,
            compete: true,
        }
    }

    /// The realm; a mismatch with the consumer (`TESTCONS` ↔ `test_realm`) is warned about.
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        if self.realm != default_realm(&self.consumer_key) {
            tracing::warn!(
                consumer = %self.consumer_key,
                realm = %self.realm,
                expected = default_realm(&self.consumer_key),
                "realm does not match the consumer: IBKR answers `invalid consumer`"
            );
        }
        self
    }

    /// REST base URL (plain http only on loopback). While the WebSocket URL is still the
    /// default, it follows to the same host (`wss://host/v1/api/ws`, `ws://` for plain http);
    /// [`ws_url`](Self::ws_url) sets it apart.
    pub fn rest_url(mut self, url: &str) -> Result<Self, ConfigError> {
        let mut url = parse_base_url("rest_url", url)?;
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        if self.ws_url.as_str() == DEFAULT_WS_URL {
            let mut ws = host_root(&url);
            let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
            if ws.set_scheme(scheme).is_ok() {
                ws.set_path(&format!("{}v1/api/ws", ws.path()));
                self.ws_url = ws;
            }
        }
        self.rest_url = url;
        Ok(self)
    }

    /// WebSocket URL (`ws://` only on loopback).
    pub fn ws_url(mut self, url: &str) -> Result<Self, ConfigError> {
        let parsed = Url::parse(url.trim()).map_err(|e| ConfigError::Invalid {
            key: "ws_url".into(),
            reason: format!("`{}` is not a URL ({e})", url.trim()),
        })?;
        let ok = match parsed.scheme() {
            "wss" => true,
            "ws" => crate::config::is_loopback(&parsed),
            _ => false,
        };
        if !ok {
            return Err(ConfigError::Invalid {
                key: "ws_url".into(),
                reason: "must be wss:// (ws:// only on loopback)".into(),
            });
        }
        self.ws_url = parsed;
        Ok(self)
    }

    /// Timeout of every HTTP call and of the WebSocket handshake (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Extra trusted CA certificates (PEM).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// `compete` flag of `ssodh/init`.
    pub fn compete(mut self, compete: bool) -> Self {
        self.compete = compete;
        self
    }

    /// The `publish` flag of `ssodh/init`.
    pub fn publishes(&self) -> bool {
        self.publish
    }

    /// The `compete` flag of `ssodh/init`.
    pub fn competes(&self) -> bool {
        self.compete
    }

    /// The consumer key.
    pub fn consumer_key(&self) -> &str {
        &self.consumer_key
    }

    pub(crate) fn timeout_value(&self) -> Duration {
        self.timeout
    }

    /// The extra trusted CA certificates (PEM), if any.
    pub fn ca(&self) -> Option<&[u8]> {
        self.ca_pem.as_deref()
    }

    pub(crate) fn signature_key(&self) -> &SigningKey {
        &self.signature_key
    }

    /// The same consumer with another access token (a third-party grant).
    pub(crate) fn with_access_token(mut self, token: &str, secret: SecretString) -> Self {
        self.access_token = token.to_owned();
        self.access_token_secret = secret;
        self
    }

    /// The realm in use.
    pub fn realm_in_use(&self) -> &str {
        &self.realm
    }

    /// The Diffie-Hellman group.
    pub fn dh_group(&self) -> &DhGroup {
        &self.dh
    }

    /// The REST base URL.
    pub fn rest_base(&self) -> &Url {
        &self.rest_url
    }
}

fn default_realm(consumer_key: &str) -> &'static str {
    if consumer_key == TEST_CONSUMER {
        "test_realm"
    } else {
        "limited_poa"
    }
}

/// A validated live session token (about 24 h).
#[derive(Clone)]
pub struct LiveSessionToken {
    token: SecretString,
    key: Arc<SecretSlice<u8>>,
    /// When it was obtained (Unix seconds, local clock).
    pub obtained_at: u64,
    /// When it expires (Unix milliseconds, from IBKR).
    pub expires_at_ms: u64,
}

impl fmt::Debug for LiveSessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveSessionToken")
            .field("token", &"[REDACTED]")
            .field("obtained_at", &self.obtained_at)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

impl LiveSessionToken {
    /// The token (base64), for storing.
    pub fn token(&self) -> &SecretString {
        &self.token
    }
}

/// OAuth 1.0a: every request signed with HMAC-SHA256 keyed by the live session token, with a
/// fresh nonce and timestamp on every call (retries included).
#[derive(Clone)]
pub struct HmacAuthorizer {
    consumer_key: String,
    access_token: String,
    realm: String,
    lst: Arc<SecretSlice<u8>>,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for HmacAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacAuthorizer([REDACTED])")
    }
}

impl Authorizer for HmacAuthorizer {
    fn authorization(&self, method: &Method, url: &Url) -> Result<HeaderValue, Error> {
        let nonce = Nonce::fresh(self.clock.now_unix());
        let params = oauth_params(
            &self.consumer_key,
            Some(&self.access_token),
            &nonce,
            "HMAC-SHA256",
            &[],
        );
        let signer = Signer::HmacSha256 { lst: &self.lst };
        let header = authorize(&signer, &self.realm, method.as_str(), url.as_str(), &params);
        let mut value = HeaderValue::from_str(&header).map_err(|_| Error::Protocol {
            step: Step::Tickle,
            status: 0,
            detail: "the consumer key or access token has characters not allowed in a header"
                .into(),
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

#[derive(Deserialize)]
struct LstAnswer {
    diffie_hellman_response: Option<String>,
    live_session_token_signature: Option<String>,
    #[serde(default)]
    live_session_token_expiration: Option<serde_json::Value>,
}

/// An OAuth 1.0a (first party) client: live session token, then the brokerage session.
#[derive(Debug)]
pub struct Oauth1aClient {
    config: Oauth1aConfig,
    prepend: SecretString,
    http: HttpClient,
    clock: Arc<dyn Clock>,
    /// The host root of `rest_url` (`https://api.ibkr.com/`).
    api_base: Url,
    brokerage: BrokerageClient,
    lst: Option<LiveSessionToken>,
}

impl Oauth1aClient {
    /// A client on the system clock. Decrypts the access-token secret once, here, so a wrong
    /// encryption key or a garbled secret fails before anything is sent.
    pub fn new(config: Oauth1aConfig) -> Result<Self, Error> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A client on the given clock.
    pub fn with_clock(config: Oauth1aConfig, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        let http = HttpClient::new(config.timeout, config.ca_pem.as_deref())?;
        Self::with_http(config, clock, http)
    }

    /// A client that sends through `http` (a [`crate::Session`] passes its paced one).
    pub fn with_http(
        config: Oauth1aConfig,
        clock: Arc<dyn Clock>,
        http: HttpClient,
    ) -> Result<Self, Error> {
        let prepend =
            prepend(&config.encryption_key, &config.access_token_secret).map_err(|source| {
                Error::Lst {
                    step: Step::LiveSessionToken,
                    source,
                }
            })?;
        let brokerage = BrokerageClient::new(http.clone(), config.rest_url.clone());
        let api_base = host_root(&config.rest_url);
        Ok(Self {
            config,
            prepend,
            http,
            clock,
            api_base,
            brokerage,
            lst: None,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &Oauth1aConfig {
        &self.config
    }

    /// The HTTP client every request goes through.
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// A fingerprint of the consumer key and access token: stored tokens are only used by the
    /// client they were issued to. Neither can be read back from it.
    pub fn identity(&self) -> String {
        crate::store::fingerprint(&[
            "oauth1a",
            &self.config.consumer_key,
            &self.config.access_token,
        ])
    }

    /// The live session token, as a document to store (`created_at` = `now`).
    pub fn stored_tokens(&self, now: u64) -> Option<StoredTokens> {
        let lst = self.lst.as_ref()?;
        let mut doc = StoredTokens::new(
            "oauth1a",
            self.identity(),
            self.config.rest_url.to_string(),
            now,
        );
        doc.live_session_token = Some(StoredLst {
            token: lst.token.clone(),
            obtained_at: lst.obtained_at,
            expires_at_ms: lst.expires_at_ms,
        });
        Some(doc)
    }

    /// Takes over a stored live session token. Refused (nothing changes) if it belongs to
    /// another consumer or access token, or is not valid base64.
    pub fn restore_tokens(&mut self, stored: &StoredTokens) -> bool {
        if stored.method != "oauth1a" || stored.identity != self.identity() {
            return false;
        }
        let Some(lst) = &stored.live_session_token else {
            return false;
        };
        let Ok(key) = STANDARD.decode(lst.token.expose_secret()) else {
            return false;
        };
        self.lst = Some(LiveSessionToken {
            token: lst.token.clone(),
            key: Arc::new(SecretSlice::from(key)),
            obtained_at: lst.obtained_at,
            expires_at_ms: lst.expires_at_ms,
        });
        true
    }

    /// The current live session token, if any.
    pub fn live_session_token(&self) -> Option<&LiveSessionToken> {
        self.lst.as_ref()
    }

    /// The brokerage-session client.
    pub fn brokerage(&self) -> &BrokerageClient {
        &self.brokerage
    }

    /// The clock the client signs and times tokens with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The API host in use (`https://api.ibkr.com/`).
    pub fn api_base(&self) -> &Url {
        &self.api_base
    }

    /// The REST base in use (`https://api.ibkr.com/v1/api/`): the brokerage and API calls.
    pub fn rest_base(&self) -> &Url {
        &self.config.rest_url
    }

    /// Switches to another API host (`api.ibkr.com`, `5.api.ibkr.com`, …): REST and WebSocket
    /// calls follow. The live session token is kept (IBKR's hosts share it); it is the host
    /// that requests are signed for that changes.
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

    /// Switches to another base URL (`https://host[:port]`, plain http only on loopback); the
    /// REST base becomes `{base}/v1/api/` and the WebSocket `ws(s)://host[:port]/v1/api/ws`.
    pub fn set_base_url(&mut self, base_url: &str) -> Result<(), ConfigError> {
        let base = crate::config::parse_base_url("base_url", base_url)?;
        let root = base.as_str().trim_end_matches('/');
        let ws_root = match root.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}"),
            Some((_, rest)) => format!("ws://{rest}"),
            None => root.to_owned(),
        };
        let config = self
            .config
            .clone()
            .rest_url(&format!("{root}/v1/api/"))?
            .ws_url(&format!("{ws_root}/v1/api/ws"))?;
        tracing::info!(from = %self.config.rest_url, to = %config.rest_url, "API host switched");
        self.brokerage = BrokerageClient::new(self.http.clone(), config.rest_url.clone());
        self.api_base = host_root(&config.rest_url);
        self.config = config;
        Ok(())
    }

    /// Diffie-Hellman with IBKR for a new live session token, validated against IBKR's
    /// signature of it.
    pub async fn request_live_session_token(&mut self) -> Result<&LiveSessionToken, Error> {
        let step = Step::LiveSessionToken;
        let secret = DhSecret::random();
        let challenge = self.config.dh.challenge(&secret);
        let nonce = Nonce::fresh(self.clock.now_unix());
        let params = oauth_params(
            &self.config.consumer_key,
            Some(&self.config.access_token),
            &nonce,
            "RSA-SHA256",
            &[("diffie_hellman_challenge", &challenge)],
        );
        let url = self
            .config
            .rest_url
            .join("oauth/live_session_token")
            .map_err(|e| Error::Protocol {
                step,
                status: 0,
                detail: e.to_string(),
            })?;
        let signer = Signer::RsaSha256 {
            key: &self.config.signature_key,
            prepend: &self.prepend,
        };
        let mut header = HeaderValue::from_str(&authorize(
            &signer,
            &self.config.realm,
            "POST",
            url.as_str(),
            &params,
        ))
        .map_err(|_| Error::Protocol {
            step,
            status: 0,
            detail: "the consumer key or access token has characters not allowed in a header"
                .into(),
        })?;
        header.set_sensitive(true);
        let request = self
            .http
            .reqwest()
            .post(url)
            .header(AUTHORIZATION, header)
            .header(CONTENT_LENGTH, "0");
        let reply = self.http.send(step, request).await?;
        let lst = live_session_token_from(
            &reply,
            &self.config.dh,
            &secret,
            &self.prepend,
            &self.config.consumer_key,
            self.clock.now_unix(),
        )?;
        tracing::info!(
            expires_at_ms = lst.expires_at_ms,
            "live session token obtained and validated"
        );
        Ok(self.lst.insert(lst))
    }

    /// An authorizer for the current live session token.
    pub fn authorizer(&self, step: Step) -> Result<HmacAuthorizer, Error> {
        let lst = self.lst.as_ref().ok_or(Error::NotReady {
            step,
            reason: "no live session token yet: call connect() (or request_live_session_token()) first",
        })?;
        Ok(HmacAuthorizer {
            consumer_key: self.config.consumer_key.clone(),
            access_token: self.config.access_token.clone(),
            realm: self.config.realm.clone(),
            lst: lst.key.clone(),
            clock: self.clock.clone(),
        })
    }

    /// Live session token, then `ssodh/init`.
    pub async fn connect(&mut self) -> Result<Connected, Error> {
        self.request_live_session_token().await?;
        let status = self.init_brokerage_session().await?;
        Ok(Connected {
            validation: None,
            status,
        })
    }

    /// `ssodh/init`.
    pub async fn init_brokerage_session(&self) -> Result<AuthStatus, Error> {
        self.init_brokerage_session_with(self.config.compete).await
    }

    /// `ssodh/init` with an explicit `compete`.
    pub async fn init_brokerage_session_with(&self, compete: bool) -> Result<AuthStatus, Error> {
        let auth = self.authorizer(Step::SsodhInit)?;
        self.brokerage
            .init(&auth, self.config.publish, compete)
            .await
    }

    /// `sso/validate`.
    pub async fn validate(&mut self) -> Result<SsoValidation, Error> {
        self.brokerage
            .validate(&self.authorizer(Step::Validate)?)
            .await
    }

    /// `iserver/auth/status`.
    pub async fn auth_status(&self) -> Result<AuthStatus, Error> {
        self.brokerage
            .status(&self.authorizer(Step::AuthStatus)?)
            .await
    }

    /// `tickle`.
    pub async fn tickle(&mut self) -> Result<Tickle, Error> {
        self.brokerage.tickle(&self.authorizer(Step::Tickle)?).await
    }

    /// Where the WebSocket is: `?oauth_token=<access token>` on the configured URL.
    pub fn websocket_endpoint(&self) -> crate::ws::WsEndpoint {
        let mut url = self.config.ws_url.clone();
        url.query_pairs_mut()
            .append_pair("oauth_token", &self.config.access_token);
        crate::ws::WsEndpoint {
            url,
            authorization: None,
            ca_pem: self.config.ca_pem.clone(),
            timeout: self.config.timeout,
        }
    }

    /// An authenticated WebSocket: `?oauth_token=<access token>` and the `api` cookie from a
    /// fresh tickle.
    /// It reconnects by itself (after a fresh tickle) when the server closes it.
    pub async fn connect_websocket(&self) -> Result<crate::ws::IbkrWebSocket, Error> {
        crate::ws::open_reconnecting(
            self.brokerage.clone(),
            self.authorizer(Step::WebSocket)?,
            self.websocket_endpoint(),
            self.http.max_body(),
        )
        .await
    }

    /// `logout`.
    pub async fn logout(&mut self) -> Result<Logout, Error> {
        let logout = self
            .brokerage
            .logout(&self.authorizer(Step::Logout)?)
            .await?;
        self.lst = None;
        Ok(logout)
    }
}

impl Client for Oauth1aClient {
    fn method(&self) -> AuthMethod {
        AuthMethod::OAuth1a
    }
    fn login(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move { self.request_live_session_token().await.map(|_| ()) })
    }
    fn renew<'a>(&'a mut self, kinds: &'a [TokenKind]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            if kinds.contains(&TokenKind::LiveSessionToken) {
                self.request_live_session_token().await?;
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
        Box::pin(Oauth1aClient::tickle(self))
    }
    fn logout(&mut self) -> BoxFuture<'_, Result<Logout, Error>> {
        Box::pin(Oauth1aClient::logout(self))
    }
    fn authorizer(&self) -> Result<Arc<dyn Authorizer>, Error> {
        Ok(Arc::new(Oauth1aClient::authorizer(self, Step::Api)?))
    }
    fn websocket(&self) -> Result<crate::ws::WsEndpoint, Error> {
        Ok(Oauth1aClient::websocket_endpoint(self))
    }
    fn tokens(&self) -> Vec<TokenExpiry> {
        self.live_session_token()
            .filter(|t| t.expires_at_ms > 0)
            .map(|t| TokenExpiry {
                kind: TokenKind::LiveSessionToken,
                obtained_at: t.obtained_at,
                expires_at: t.expires_at_ms / 1000,
            })
            .into_iter()
            .collect()
    }
    fn has_session_token(&self) -> bool {
        self.live_session_token().is_some()
    }
    fn now_unix(&self) -> u64 {
        self.clock().now_unix()
    }
    fn api_base(&self) -> &Url {
        Oauth1aClient::api_base(self)
    }
    fn rest_base(&self) -> &Url {
        Oauth1aClient::rest_base(self)
    }
    fn switch_host(&mut self, host: &str) -> Result<(), ConfigError> {
        if host.contains("://") {
            self.set_base_url(host)
        } else {
            self.set_domain(host)
        }
    }
    fn identity(&self) -> String {
        Oauth1aClient::identity(self)
    }
    fn stored_tokens(&self, now: u64) -> Option<StoredTokens> {
        Oauth1aClient::stored_tokens(self, now)
    }
    fn restore_tokens(&mut self, stored: &StoredTokens) -> bool {
        Oauth1aClient::restore_tokens(self, stored)
    }
    fn http(&self) -> &HttpClient {
        Oauth1aClient::http(self)
    }
    fn publish(&self) -> bool {
        self.config().publishes()
    }
}

/// The live session token from IBKR's answer to `oauth/live_session_token`: the shared secret
/// from its `diffie_hellman_response` (refused outside `[2, p − 2]`), the token derived with
/// `prepend`, checked against its `live_session_token_signature`, and its expiry believed
/// within bounds ([`lst_expiry_ms`]).
pub(crate) fn live_session_token_from(
    reply: &Reply,
    dh: &DhGroup,
    secret: &DhSecret,
    prepend: &SecretString,
    consumer_key: &str,
    now: u64,
) -> Result<LiveSessionToken, Error> {
    let step = Step::LiveSessionToken;
    let lst_err = |source| Error::Lst { step, source };
    let answer: LstAnswer = reply.json(step)?;
    let missing = |field: &str| Error::Protocol {
        step,
        status: 200,
        detail: format!("no {field} in the answer"),
    };
    let response = answer
        .diffie_hellman_response
        .ok_or_else(|| missing("diffie_hellman_response"))?;
    let signature = answer
        .live_session_token_signature
        .ok_or_else(|| missing("live_session_token_signature"))?;
    let k = dh.shared_secret(&response, secret).map_err(lst_err)?;
    let token = live_session_token(&k, prepend).ok_or(lst_err(LstError::Mismatch))?;
    if !lst_matches(&token, consumer_key, &signature) {
        return Err(lst_err(LstError::Mismatch));
    }
    let key = STANDARD
        .decode(token.expose_secret())
        .map_err(|_| lst_err(LstError::Mismatch))?;
    let expires_at_ms = lst_expiry_ms(answer.live_session_token_expiration.as_ref(), now);
    Ok(LiveSessionToken {
        token,
        key: Arc::new(SecretSlice::from(key)),
        obtained_at: now,
        expires_at_ms,
    })
}

/// IBKR's `live_session_token_expiration` (epoch ms) as believed at `now` (epoch s): kept when
/// its lifetime is plausible, else clamped ([`sane_lifetime`]) — an LST "expiring" now, in the
/// past (or a clock far off) or in the year 3000 neither loops the renewals nor overflows.
/// `0` when absent or not a number: unknown, renewed only when IBKR refuses it.
fn lst_expiry_ms(value: Option<&serde_json::Value>, now: u64) -> u64 {
    let Some(ms) = value.filter(|v| !v.is_null()).and_then(|v| {
        let ms = lenient_u64(v);
        if ms.is_none() {
            tracing::warn!(
                "live_session_token_expiration is not a usable number; the LST's expiry is unknown"
            );
        }
        ms
    }) else {
        return 0;
    };
    let left = (ms / 1000).saturating_sub(now);
    let believed = sane_lifetime(
        TokenKind::LiveSessionToken,
        "live_session_token_expiration",
        left,
    );
    if believed == left {
        ms
    } else {
        now.saturating_add(believed).saturating_mul(1000)
    }
}

/// The host root of a REST base: `https://api.ibkr.com/v1/api/` → `https://api.ibkr.com/`; a
/// base without the usual `/v1/api/` suffix keeps its path up to the last segment.
pub(crate) fn host_root(rest: &Url) -> Url {
    let mut root = rest.clone();
    let path = rest.path();
    let prefix = path
        .strip_suffix("/v1/api/")
        .or_else(|| path.strip_suffix("/v1/api"))
        .unwrap_or("");
    root.set_path(&format!("{prefix}/"));
    root.set_query(None);
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lst_expiry_is_kept_when_plausible_and_clamped_otherwise() {
        use serde_json::json;
        let now = 1_700_000_000;
        let expiry = |v: serde_json::Value| lst_expiry_ms(Some(&v), now);
        let day_ms = (now + 86_400) * 1000 + 123;
        assert_eq!(expiry(json!(day_ms)), day_ms, "IBKR's ~24 h kept to the ms");
        assert_eq!(expiry(json!(day_ms.to_string())), day_ms);
        let floor = (now + 2) * 1000;
        let ceiling = (now + 48 * 3600) * 1000;
        assert_eq!(expiry(json!(now * 1000)), floor, "expiring now");
        assert_eq!(expiry(json!(0)), floor, "1970");
        assert_eq!(expiry(json!((now - 3600) * 1000)), floor, "an hour ago");
        assert_eq!(expiry(json!(u64::MAX)), ceiling);
        assert_eq!(expiry(json!(1e300)), ceiling);
        assert_eq!(expiry(json!(-1)), 0, "not a number: unknown");
        assert_eq!(expiry(json!("soon")), 0);
        assert_eq!(lst_expiry_ms(None, now), 0);
        assert_eq!(expiry(json!(null)), 0);
    }
}
