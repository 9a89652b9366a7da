//! Helpers for the Web API and pacing tests: a sandbox with an OAuth 2.0 client and an OAuth
//! 1.0a consumer registered, a login by either method through the real ibauth clients, and
//! hand-made requests signed by the client's own authorizer.
#![allow(dead_code)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::{HeaderValue, Method};
use ibauth::oauth1a::{DhGroup, Oauth1aClient, Oauth1aConfig};
use ibauth::secrecy::SecretString;
use ibauth::{Authorizer, DecryptionKey, Oauth2Client, SigningKey, Step};
use ibauth_sandbox::{ConsumerRegistration, RFC3526_PRIME_2048, Sandbox, SandboxBuilder};
use serde_json::Value;
use url::Url;

use crate::common;

/// The OAuth 1.0a consumer.
pub const CONSUMER: &str = "APICONSUM";
/// The OAuth 1.0a consumer's user (the OAuth 2.0 one is `common::USER`).
pub const OAUTH1A_USER: &str = "bob";

/// How a test logs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Oauth2,
    Oauth1a,
}

/// Both methods, for tests that must hold for each.
pub const BOTH: [Auth; 2] = [Auth::Oauth2, Auth::Oauth1a];

struct ConsumerKeys {
    signature: SigningKey,
    encryption: SigningKey,
}

fn consumer_keys() -> &'static ConsumerKeys {
    static KEYS: OnceLock<ConsumerKeys> = OnceLock::new();
    KEYS.get_or_init(|| ConsumerKeys {
        signature: SigningKey::generate().expect("key generation"),
        encryption: SigningKey::generate().expect("key generation"),
    })
}

/// The consumer's signature and encryption keys (for clients built outside this module).
pub fn consumer_key_pair() -> (SigningKey, SigningKey) {
    let k = consumer_keys();
    (k.signature.clone(), k.encryption.clone())
}

/// A sandbox builder (system clock) with both the OAuth 2.0 client and the consumer registered.
pub fn builder() -> SandboxBuilder {
    let k = consumer_keys();
    Sandbox::builder()
        .register(common::registration())
        .register_consumer(ConsumerRegistration::new(
            CONSUMER,
            &k.signature,
            &k.encryption,
        ))
}

/// Starts `builder`, shareable between sessions.
pub async fn start(builder: SandboxBuilder) -> Arc<Sandbox> {
    Arc::new(builder.start().await.expect("sandbox starts"))
}

/// A sandbox from [`builder`], shareable between sessions.
pub async fn sandbox() -> Arc<Sandbox> {
    start(builder()).await
}

enum Client {
    Oauth2(Oauth2Client),
    Oauth1a(Oauth1aClient),
}

/// One logged-in user of a sandbox.
pub struct Session {
    pub sandbox: Arc<Sandbox>,
    pub auth: Auth,
    client: Client,
    http: reqwest::Client,
}

/// One answer: status, `Retry-After`, and the body as JSON (`Null` if it is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Session {
    /// Logs in by `auth` and opens the brokerage session (`ssodh/init`).
    pub async fn connect(auth: Auth, sandbox: Arc<Sandbox>) -> Self {
        let mut session = Self::without_bridge(auth, sandbox).await;
        session.init().await;
        session
    }

    /// Logs in by `auth` (tokens only) without opening the brokerage session.
    pub async fn without_bridge(auth: Auth, sandbox: Arc<Sandbox>) -> Self {
        let client = match auth {
            Auth::Oauth2 => {
                let config = common::config(sandbox.base_url())
                    .build()
                    .expect("config builds");
                let mut client = Oauth2Client::new(config).expect("client builds");
                client.request_access_token().await.expect("access token");
                client.create_sso_session().await.expect("SSO session");
                Client::Oauth2(client)
            }
            Auth::Oauth1a => {
                let k = consumer_keys();
                let (token, secret) = sandbox
                    .issue_access_token(CONSUMER, OAUTH1A_USER)
                    .expect("consumer registered");
                let config = Oauth1aConfig::new(
                    CONSUMER,
                    token,
                    SecretString::from(secret),
                    k.signature.clone(),
                    DecryptionKey::from_pem(&k.encryption.to_pkcs8_pem()).expect("key"),
                    DhGroup::from_hex(RFC3526_PRIME_2048, 2).expect("DH group"),
                )
                .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
                .expect("rest url");
                let mut client = Oauth1aClient::new(config).expect("client builds");
                client
                    .request_live_session_token()
                    .await
                    .expect("live session token");
                Client::Oauth1a(client)
            }
        };
        Self {
            sandbox,
            auth,
            client,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        }
    }

    /// `ssodh/init` through the client.
    pub async fn init(&mut self) {
        let status = match &mut self.client {
            Client::Oauth2(c) => c.init_brokerage_session().await,
            Client::Oauth1a(c) => c.init_brokerage_session().await,
        }
        .expect("ssodh/init");
        assert!(status.authenticated && status.connected);
    }

    /// Opens the client's WebSocket (a tickle, then the handshake); OAuth 2.0 sessions only.
    pub async fn connect_websocket(&mut self) -> Result<ibauth::ws::IbkrWebSocket, ibauth::Error> {
        match &mut self.client {
            Client::Oauth2(c) => c.connect_websocket().await,
            Client::Oauth1a(_) => panic!("connect_websocket is for OAuth 2.0 sessions"),
        }
    }

    /// The user logged in.
    pub fn user(&self) -> &'static str {
        match self.auth {
            Auth::Oauth2 => common::USER,
            Auth::Oauth1a => OAUTH1A_USER,
        }
    }

    /// `{base}/v1/api/{path_and_query}`.
    pub fn url(&self, path_and_query: &str) -> Url {
        Url::parse(&format!(
            "{}/v1/api/{path_and_query}",
            self.sandbox.base_url()
        ))
        .expect("url")
    }

    /// The client's `Authorization` value for `method url`: the same bearer every time (OAuth
    /// 2.0), or a fresh HMAC-SHA256 signature with a new nonce (OAuth 1.0a).
    pub fn authorization(&self, method: &Method, url: &Url) -> HeaderValue {
        match &self.client {
            Client::Oauth2(c) => c
                .authorizer(Step::Tickle)
                .expect("logged in")
                .authorization(method, url),
            Client::Oauth1a(c) => c
                .authorizer(Step::Tickle)
                .expect("logged in")
                .authorization(method, url),
        }
        .expect("authorization header")
    }

    /// `method path_and_query`, signed for exactly that URL, with a JSON `body` if given.
    pub async fn call(&self, method: Method, path_and_query: &str, body: Option<&Value>) -> Reply {
        let url = self.url(path_and_query);
        let authorization = self.authorization(&method, &url);
        let body = body.map(|b| b.to_string().into_bytes());
        self.send(method, &url, Some(authorization), body).await
    }

    /// `GET path_and_query`, signed.
    pub async fn get(&self, path_and_query: &str) -> Reply {
        self.call(Method::GET, path_and_query, None).await
    }

    /// Sends `method url` as given: `authorization` (or none) and `body` (empty if `None`).
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        authorization: Option<HeaderValue>,
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut request = self.http.request(method.clone(), url.clone());
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        if method != Method::GET {
            request = request
                .header("content-type", "application/json")
                .body(body.unwrap_or_default());
        }
        let response = request.send().await.expect("the sandbox answers");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await.expect("body");
        Reply {
            status,
            retry_after,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// The account the sandbox derives for this user, from the `userId` a tickle reports.
    pub async fn expected_account(&self) -> String {
        let tickle = self.call(Method::POST, "tickle", None).await;
        assert_eq!(tickle.status, 200, "{tickle:?}");
        let user_id = tickle.body["userId"].as_u64().expect("userId");
        format!("U{:07}", user_id % 10_000_000)
    }
}

/// `{"error":"not authenticated","statusCode":401}`.
pub fn not_authenticated() -> Value {
    serde_json::json!({"error": "not authenticated", "statusCode": 401})
}

/// `{"error":"Bad Request: no bridge","statusCode":400}`.
pub fn no_bridge() -> Value {
    serde_json::json!({"error": "Bad Request: no bridge", "statusCode": 400})
}
