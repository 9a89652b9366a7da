//! Hand-made OAuth 1.0a requests to the sandbox, as IBKR's guide and samples build them: a
//! generated credential set (its own DH prime), the live session token agreed by hand with
//! the library's primitives, and HMAC-SHA256 headers whose base string the test chooses —
//! OAuth parameters only (ibind), with query and form parameters unencoded (IBKR's guide and
//! samples) or encoded (RFC 5849) — with nonces as short as the guide's (7 characters).
//!
//! Every test binary compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ibauth::oauth1a::{
    DhGroup, DhSecret, Nonce, Signer, authorization_header, authorize, base_string,
    live_session_token, lst_matches, oauth_params, percent_encode, prepend,
};
use ibauth::secrecy::{ExposeSecret, SecretSlice, SecretString};
use ibauth::{DecryptionKey, SigningKey};
use ibauth_sandbox::{
    CredentialSet, SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL, SANDBOX_PASSWORD, Sandbox,
    SandboxBuilder,
};
use serde_json::Value;

/// The realm of the set's first-party consumer.
pub const REALM: &str = "limited_poa";
/// A user whose account is a paper account.
pub const PAPER_USER: &str = "paperuser";

/// Now, in Unix seconds (the sandbox runs on the system clock here).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// A nonce of 7 characters, like those in IBKR's guide, unique in this process.
pub fn short_nonce() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("g{:06}", NEXT.fetch_add(1, Ordering::Relaxed) % 1_000_000)
}

/// A credential set in a fresh temp folder, removed on drop.
pub struct TempSet {
    pub dir: PathBuf,
    pub set: CredentialSet,
}

impl TempSet {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ibauth-sandbox-{name}-{}-{}",
            std::process::id(),
            short_nonce()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let set = CredentialSet::load_or_create(&dir).expect("credential set");
        Self { dir, set }
    }

    pub fn signature_key(&self) -> SigningKey {
        SigningKey::from_pem_file(&self.dir.join("signature_key.pem")).expect("signature key")
    }

    pub fn decryption_key(&self) -> DecryptionKey {
        DecryptionKey::from_pem_file(&self.dir.join("encryption_key.pem")).expect("encryption key")
    }

    /// The consumers' group, as the set's `dhparam.pem` has it.
    pub fn group(&self) -> DhGroup {
        DhGroup::from_hex(self.set.dh_prime_hex(), 2).expect("the set's prime")
    }

    /// A sandbox with the set's client, consumers and users (one of them on paper).
    pub fn builder(&self) -> SandboxBuilder {
        Sandbox::builder()
            .register(self.set.registration())
            .register_consumer(self.set.consumer_registration())
            .register_consumer(self.set.third_party_registration())
            .user(SANDBOX_CREDENTIAL, SANDBOX_PASSWORD, false)
            .user(PAPER_USER, SANDBOX_PASSWORD, true)
    }
}

impl Drop for TempSet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An answer: status and JSON body (`Null` if not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

pub async fn reply(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, body, text }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("http client")
}

/// Which parameters the HMAC base string lists, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// OAuth parameters only: ibind and IBKR's current Python sample.
    OauthOnly,
    /// OAuth, query and form parameters, values as sent but unencoded (IBKR's guide and
    /// samples: `conids=265598,8314`).
    Guide,
    /// OAuth, query and form parameters, each percent-encoded first (RFC 5849 §3.4.1.3.2).
    Rfc5849,
}

/// An OAuth 1.0a session agreed by hand: the access token and the live session token.
pub struct Session {
    pub base_url: String,
    pub consumer: String,
    pub realm: String,
    pub token: String,
    pub lst: SecretSlice<u8>,
}

/// Agrees a live session token by hand for `user` (issued an access token here), with a
/// 7-character nonce, exactly as IBKR's guide describes: prepend = hex of the decrypted
/// secret; A = g^a mod p in the consumer's group; RSA-SHA256 over prepend + base string;
/// K = B^a mod p; LST = HMAC-SHA1(K, prepend); check the server's signature.
pub async fn hand_made_lst(
    sandbox: &Sandbox,
    set: &TempSet,
    api: &str,
    user: &str,
) -> Result<Session, Reply> {
    let (token, secret) = sandbox
        .issue_access_token(SANDBOX_CONSUMER_KEY, user)
        .expect("the consumer is registered");
    let prepend = prepend(&set.decryption_key(), &SecretString::from(secret)).expect("prepend");
    let group = set.group();
    let a = DhSecret::random();
    let challenge = group.challenge(&a);
    let url = format!("{}{api}/oauth/live_session_token", sandbox.base_url());
    let params = oauth_params(
        SANDBOX_CONSUMER_KEY,
        Some(&token),
        &Nonce {
            nonce: short_nonce(),
            timestamp: now(),
        },
        "RSA-SHA256",
        &[("diffie_hellman_challenge", &challenge)],
    );
    let key = set.signature_key();
    let signer = Signer::RsaSha256 {
        key: &key,
        prepend: &prepend,
    };
    let header = authorize(&signer, REALM, "POST", &url, &params);
    let answer = reply(
        http()
            .post(&url)
            .header("authorization", header)
            .header("content-length", "0")
            .send()
            .await
            .expect("the sandbox answers"),
    )
    .await;
    if answer.status != 200 {
        return Err(answer);
    }
    let response = answer.body["diffie_hellman_response"]
        .as_str()
        .expect("diffie_hellman_response");
    let k = group.shared_secret(response, &a).expect("a usable B");
    let lst = live_session_token(&k, &prepend).expect("an LST");
    let signature = answer.body["live_session_token_signature"]
        .as_str()
        .expect("live_session_token_signature");
    assert!(
        lst_matches(&lst, SANDBOX_CONSUMER_KEY, signature),
        "the LST agreed by hand validates"
    );
    let lst = SecretSlice::from(STANDARD.decode(lst.expose_secret()).expect("base64 LST"));
    Ok(Session {
        base_url: sandbox.base_url().to_owned(),
        consumer: SANDBOX_CONSUMER_KEY.to_owned(),
        realm: REALM.to_owned(),
        token,
        lst,
    })
}

/// A signed request to build and send.
pub struct Call<'a> {
    pub method: &'a str,
    /// The API prefix: `/v1/api` or `/v1/portal`.
    pub api: &'a str,
    /// The path under it, with any query (`/iserver/marketdata/snapshot?conids=1`).
    pub path: &'a str,
    /// A form body (`application/x-www-form-urlencoded`), if any.
    pub form_body: Option<&'a str>,
    pub form: Form,
    pub nonce: String,
    pub timestamp: u64,
    /// The realm in the header, when not the consumer's (the realm is never signed).
    pub realm: Option<&'a str>,
    /// The URL the signature is computed for, when not the one called.
    pub signed_url: Option<String>,
}

impl<'a> Call<'a> {
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Self {
            method,
            api: "/v1/api",
            path,
            form_body: None,
            form: Form::OauthOnly,
            nonce: short_nonce(),
            timestamp: now(),
            realm: None,
            signed_url: None,
        }
    }
}

impl Session {
    /// The `Authorization` header of `call`.
    pub fn header(&self, call: &Call<'_>) -> String {
        let url = format!("{}{}{}", self.base_url, call.api, call.path);
        let signed_url = call.signed_url.clone().unwrap_or(url);
        let (bare, query) = signed_url.split_once('?').unwrap_or((&signed_url, ""));
        let oauth = oauth_params(
            &self.consumer,
            Some(&self.token),
            &Nonce {
                nonce: call.nonce.clone(),
                timestamp: call.timestamp,
            },
            "HMAC-SHA256",
            &[],
        );
        let request: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .chain(url::form_urlencoded::parse(
                call.form_body.unwrap_or("").as_bytes(),
            ))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let base = match call.form {
            Form::OauthOnly => base_string(call.method, bare, &oauth),
            Form::Guide => {
                // IBKR's sample: one dictionary of every parameter, joined unencoded.
                let mut all: BTreeMap<String, String> = oauth.clone();
                all.extend(request);
                base_string(call.method, bare, &all)
            }
            Form::Rfc5849 => {
                let mut pairs: Vec<(String, String)> = oauth
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .chain(request)
                    .map(|(k, v)| (percent_encode(&k), percent_encode(&v)))
                    .collect();
                pairs.sort();
                let joined = pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("&");
                format!(
                    "{}&{}&{}",
                    call.method,
                    percent_encode(bare),
                    percent_encode(&joined)
                )
            }
        };
        let signature = Signer::HmacSha256 { lst: &self.lst }.sign(&base);
        authorization_header(call.realm.unwrap_or(&self.realm), &oauth, &signature)
    }

    /// Sends `call` with `authorization` (from [`Session::header`], possibly altered).
    pub async fn send_with(&self, call: &Call<'_>, authorization: &str) -> Reply {
        self.send_through(&http(), call, authorization).await
    }

    /// Signs and sends `call` from the local address `from` (any of 127.0.0.0/8 on Linux).
    pub async fn send_from(&self, call: &Call<'_>, from: std::net::IpAddr) -> Reply {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .local_address(from)
            .build()
            .expect("http client");
        self.send_through(&client, call, &self.header(call)).await
    }

    async fn send_through(
        &self,
        client: &reqwest::Client,
        call: &Call<'_>,
        authorization: &str,
    ) -> Reply {
        let url = format!("{}{}{}", self.base_url, call.api, call.path);
        let method = reqwest::Method::from_bytes(call.method.as_bytes()).expect("a method");
        let mut request = client
            .request(method, &url)
            .header("authorization", authorization);
        request = match call.form_body {
            Some(body) => request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body.to_owned()),
            None => request.header("content-length", "0"),
        };
        reply(request.send().await.expect("the sandbox answers")).await
    }

    /// Signs and sends `call`.
    pub async fn send(&self, call: &Call<'_>) -> Reply {
        self.send_with(call, &self.header(call)).await
    }
}
