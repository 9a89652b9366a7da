//! OAuth 1.0a third party: a request token (RSA-SHA256, no prepend), the user's authorisation
//! in a browser, the access token for the verifier — whose result goes straight into the
//! live-session-token flow.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use ibauth::oauth1a::{ThirdPartyClient, config};
//! let client = ThirdPartyClient::new(config::load_third_party(None)?)?;
//! let request = client.request_token().await?;
//! println!("open {}", client.authorize_url(&request));
//! let pasted = String::from("https://127.0.0.1:8443/cb?oauth_token=…&oauth_verifier=…");
//! let verifier = ibauth::oauth1a::parse_verifier(&pasted, &request)?;
//! let grant = client.access_token(&request, &verifier).await?;
//! let mut session = ibauth::oauth1a::Oauth1aClient::new(client.session_config(&grant))?;
//! session.connect().await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;

use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::Oauth1aConfig;
use super::signing::{Nonce, Signer, authorize, oauth_params};
use crate::clock::{Clock, SystemClock};
use crate::error::{ConfigError, Error, Step};
use crate::http::{HttpClient, Reply};

/// IBKR's authorisation page.
pub const DEFAULT_AUTHORIZE_URL: &str = "https://www.interactivebrokers.com/authorize";

/// Third-party settings: the consumer (keys, DH group, realm, URLs) and where the user
/// authorises — the authorisation page and the registered callback (`None`: out of band).
#[derive(Debug, Clone)]
pub struct ThirdPartyConfig {
    /// The consumer's settings; its access token is filled in from the grant.
    template: Oauth1aConfig,
    authorize_url: Url,
    callback: Option<Url>,
}

impl ThirdPartyConfig {
    pub(crate) fn from_template(template: Oauth1aConfig) -> Self {
        Self {
            template,
            authorize_url: Url::parse(DEFAULT_AUTHORIZE_URL).unwrap_or_else(|_| unreachable!()),
            callback: None,
        }
    }

    /// The consumer's settings from an [`Oauth1aConfig`] (its access token is ignored).
    pub fn new(consumer: Oauth1aConfig) -> Self {
        Self::from_template(consumer)
    }

    /// The authorisation page (default IBKR's; the sandbox serves its own).
    pub fn authorize_url(mut self, url: &str) -> Result<Self, ConfigError> {
        self.authorize_url = crate::config::parse_base_url("authorize_url", url)?;
        Ok(self)
    }

    /// The callback URL registered with IBKR for this consumer, exactly (scheme, host, port,
    /// path and case all count).
    pub fn callback_url(mut self, url: &str) -> Result<Self, ConfigError> {
        let parsed = Url::parse(url.trim()).map_err(|e| ConfigError::Invalid {
            key: "oauth1a.callback_url".into(),
            reason: format!("`{}` is not a URL ({e})", url.trim()),
        })?;
        self.callback = Some(parsed);
        Ok(self)
    }

    /// The registered callback, if any.
    pub fn callback(&self) -> Option<&Url> {
        self.callback.as_ref()
    }

    /// The consumer key.
    pub fn consumer_key(&self) -> &str {
        self.template.consumer_key()
    }

    /// The consumer's settings (keys, DH group, realm, URLs); its access token is empty.
    pub fn template(&self) -> &Oauth1aConfig {
        &self.template
    }

    /// The REST base the exchanges and the session use.
    pub fn rest_base(&self) -> &Url {
        self.template.rest_base()
    }
}

/// A request token on its way to the user's authorisation. Not a secret on its own: it is
/// shown in the authorisation URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestToken {
    /// The token.
    pub token: String,
    /// The callback it was requested with (`oob` or the registered URL).
    pub callback: String,
}

/// What `oauth/access_token` grants: the access token, its secret (encrypted to the consumer's
/// encryption key) and whether the account is a paper account.
#[derive(Clone)]
pub struct AccessGrant {
    /// The access token.
    pub access_token: String,
    /// Its secret, base64 of an RSA ciphertext.
    pub access_token_secret: SecretString,
    /// A paper-trading account.
    pub is_paper: bool,
}

impl fmt::Debug for AccessGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessGrant")
            .field("access_token", &"[REDACTED]")
            .field("access_token_secret", &"[REDACTED]")
            .field("is_paper", &self.is_paper)
            .finish()
    }
}

/// Why a pasted redirect or verifier cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifierError {
    /// The user denied the authorisation.
    #[error("the authorisation was denied in the browser; log in again and choose Approve")]
    Denied,
    /// The redirect belongs to another request token (an old tab, another login).
    #[error(
        "this redirect is for another request token ({found}, expected {expected}): use the page opened by this login, or start again"
    )]
    OtherToken {
        /// The token in the redirect.
        found: String,
        /// This login's request token.
        expected: String,
    },
    /// Neither a redirect URL with `oauth_verifier` nor a bare verifier.
    #[error(
        "no verifier found: paste the whole address the browser was sent to (with oauth_verifier=…), or just the verifier"
    )]
    Missing,
}

#[derive(Deserialize)]
struct RequestTokenAnswer {
    oauth_token: Option<String>,
}

#[derive(Deserialize)]
struct AccessTokenAnswer {
    oauth_token: Option<String>,
    oauth_token_secret: Option<String>,
    #[serde(default)]
    is_paper: Option<bool>,
}

/// The third-party exchanges.
#[derive(Debug)]
pub struct ThirdPartyClient {
    config: ThirdPartyConfig,
    http: HttpClient,
    clock: Arc<dyn Clock>,
}

impl ThirdPartyClient {
    /// A client on the system clock.
    pub fn new(config: ThirdPartyConfig) -> Result<Self, Error> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A client on the given clock.
    pub fn with_clock(config: ThirdPartyConfig, clock: Arc<dyn Clock>) -> Result<Self, Error> {
        let http = HttpClient::new(config.template.timeout_value(), config.template.ca())?;
        Ok(Self::with_http(config, clock, http))
    }

    /// A client that sends through `http`.
    pub fn with_http(config: ThirdPartyConfig, clock: Arc<dyn Clock>, http: HttpClient) -> Self {
        Self {
            config,
            http,
            clock,
        }
    }

    /// The settings.
    pub fn config(&self) -> &ThirdPartyConfig {
        &self.config
    }

    async fn signed_post(
        &self,
        step: Step,
        path: &str,
        token: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Result<Reply, Error> {
        let url = self
            .config
            .template
            .rest_base()
            .join(path)
            .map_err(|e| Error::Protocol {
                step,
                status: 0,
                detail: e.to_string(),
            })?;
        let nonce = Nonce::fresh(self.clock.now_unix());
        let params = oauth_params(
            self.config.consumer_key(),
            token,
            &nonce,
            "RSA-SHA256",
            extra,
        );
        let empty = SecretString::from(String::new());
        let signer = Signer::RsaSha256 {
            key: self.config.template.signature_key(),
            prepend: &empty,
        };
        let mut header = HeaderValue::from_str(&authorize(
            &signer,
            self.config.template.realm_in_use(),
            "POST",
            url.as_str(),
            &params,
        ))
        .map_err(|_| Error::Protocol {
            step,
            status: 0,
            detail: "the consumer key has characters not allowed in a header".into(),
        })?;
        header.set_sensitive(true);
        let request = self
            .http
            .reqwest()
            .post(url)
            .header(AUTHORIZATION, header)
            .header(CONTENT_LENGTH, "0");
        self.http.send(step, request).await
    }

    /// Step 1: `oauth/request_token`, with the registered callback (or `oob`).
    pub async fn request_token(&self) -> Result<RequestToken, Error> {
        let step = Step::RequestToken;
        let callback = self
            .config
            .callback
            .as_ref()
            .map_or_else(|| "oob".to_owned(), |u| u.as_str().to_owned());
        let reply = self
            .signed_post(
                step,
                "oauth/request_token",
                None,
                &[("oauth_callback", &callback)],
            )
            .await?;
        let request = request_token_from(&reply, callback)?;
        tracing::info!("request token obtained");
        Ok(request)
    }

    /// Step 2: where the user authorises the request token.
    pub fn authorize_url(&self, request: &RequestToken) -> Url {
        let mut url = self.config.authorize_url.clone();
        url.query_pairs_mut()
            .append_pair("oauth_token", &request.token);
        url
    }

    /// Step 3: `oauth/access_token` for the verifier the user's authorisation produced.
    pub async fn access_token(
        &self,
        request: &RequestToken,
        verifier: &SecretString,
    ) -> Result<AccessGrant, Error> {
        let step = Step::OauthAccessToken;
        let reply = self
            .signed_post(
                step,
                "oauth/access_token",
                Some(&request.token),
                &[("oauth_verifier", verifier.expose_secret())],
            )
            .await?;
        let grant = access_grant_from(&reply)?;
        tracing::info!(is_paper = grant.is_paper, "access token granted");
        Ok(grant)
    }

    /// The first-party settings for the granted access token: hand them to
    /// [`Oauth1aClient`](super::Oauth1aClient) for the live session token.
    pub fn session_config(&self, grant: &AccessGrant) -> Oauth1aConfig {
        self.config
            .template
            .clone()
            .with_access_token(&grant.access_token, grant.access_token_secret.clone())
    }
}

/// The request token from IBKR's answer to `oauth/request_token` (asked with `callback`).
pub(crate) fn request_token_from(reply: &Reply, callback: String) -> Result<RequestToken, Error> {
    let step = Step::RequestToken;
    let answer: RequestTokenAnswer = reply.json(step)?;
    let token = answer.oauth_token.ok_or(Error::Protocol {
        step,
        status: 200,
        detail: "no oauth_token in the answer".into(),
    })?;
    Ok(RequestToken { token, callback })
}

/// The grant from IBKR's answer to `oauth/access_token`.
pub(crate) fn access_grant_from(reply: &Reply) -> Result<AccessGrant, Error> {
    let step = Step::OauthAccessToken;
    let answer: AccessTokenAnswer = reply.json(step)?;
    let missing = |field: &str| Error::Protocol {
        step,
        status: 200,
        detail: format!("no {field} in the answer"),
    };
    Ok(AccessGrant {
        access_token: answer.oauth_token.ok_or_else(|| missing("oauth_token"))?,
        access_token_secret: SecretString::from(
            answer
                .oauth_token_secret
                .ok_or_else(|| missing("oauth_token_secret"))?,
        ),
        is_paper: answer.is_paper.unwrap_or(false),
    })
}

/// The verifier from what the user pasted: the whole redirect URL (checked to belong to
/// `request`), its query string, or the bare verifier.
pub fn parse_verifier(input: &str, request: &RequestToken) -> Result<SecretString, VerifierError> {
    let input = input.trim();
    let query = match input.split_once('?') {
        Some((_, q)) => q,
        None if input.contains('=') => input,
        None if !input.is_empty() && input.chars().all(|c| c.is_ascii_alphanumeric()) => {
            return Ok(SecretString::from(input.to_owned()));
        }
        None => return Err(VerifierError::Missing),
    };
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if let Some(found) = get("oauth_token")
        && found != request.token
    {
        return Err(VerifierError::OtherToken {
            found,
            expected: request.token.clone(),
        });
    }
    if get("denied").is_some() || get("error").is_some() {
        return Err(VerifierError::Denied);
    }
    get("oauth_verifier")
        .filter(|v| !v.is_empty())
        .map(SecretString::from)
        .ok_or(VerifierError::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RequestToken {
        RequestToken {
            token: "25ebcc75204da80b73f4".into(),
            callback: "oob".into(),
        }
    }

    #[test]
    fn verifiers_from_every_shape_users_paste() {
        let v = |s: &str| parse_verifier(s, &request()).map(|v| v.expose_secret().to_owned());
        assert_eq!(
            v("https://127.0.0.1:8443/cb?oauth_token=25ebcc75204da80b73f4&oauth_verifier=61c1")
                .unwrap(),
            "61c1"
        );
        assert_eq!(
            v("  oauth_token=25ebcc75204da80b73f4&oauth_verifier=ab12\n").unwrap(),
            "ab12"
        );
        assert_eq!(v("61c107d4cf34ac6d9f2b").unwrap(), "61c107d4cf34ac6d9f2b");
        assert_eq!(
            v("https://x/cb?oauth_token=ffffffffffffffffffff&oauth_verifier=1"),
            Err(VerifierError::OtherToken {
                found: "ffffffffffffffffffff".into(),
                expected: "25ebcc75204da80b73f4".into()
            })
        );
        assert_eq!(
            v("https://x/cb?oauth_token=25ebcc75204da80b73f4&denied=true"),
            Err(VerifierError::Denied)
        );
        assert_eq!(v("https://x/cb?foo=1"), Err(VerifierError::Missing));
        assert_eq!(v(""), Err(VerifierError::Missing));
        assert_eq!(v("not a verifier!"), Err(VerifierError::Missing));
    }

    #[test]
    fn a_grant_never_debugs_its_secret() {
        let grant = AccessGrant {
            access_token: "0123456789abcdef0123".into(),
            access_token_secret: SecretString::from("c2VjcmV0".to_owned()),
            is_paper: true,
        };
        let shown = format!("{grant:?}");
        assert!(
            !shown.contains("0123456789") && !shown.contains("c2VjcmV0"),
            "{shown}"
        );
    }
}
