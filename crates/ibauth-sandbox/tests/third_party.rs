//! OAuth 1.0a third party against the sandbox over real HTTP: request token, the
//! authorisation page (as a browser would submit it), access token, then the live session
//! token and an authenticated tickle; and every refusal a user can meet.

use std::sync::OnceLock;
use std::time::Duration;

use ibauth::Error;
use ibauth::oauth1a::{
    DhGroup, Oauth1aClient, Oauth1aConfig, ThirdPartyClient, ThirdPartyConfig, VerifierError,
    parse_verifier,
};
use ibauth::secrecy::SecretString;
use ibauth::{DecryptionKey, SigningKey};
use ibauth_sandbox::{ConsumerRegistration, Lifetimes, RFC3526_PRIME_2048, Sandbox};

const CONSUMER: &str = "THIRDPRTY";
const CALLBACK: &str = "https://127.0.0.1:8443/ibauth/callback";
const USER: &str = "carol";
const PASSWORD: &str = "correct horse";

struct Keys {
    signature: SigningKey,
    encryption: SigningKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        signature: SigningKey::generate().unwrap(),
        encryption: SigningKey::generate().unwrap(),
    })
}

async fn sandbox(lifetimes: Lifetimes) -> Sandbox {
    let k = keys();
    Sandbox::builder()
        .register_consumer(
            ConsumerRegistration::new(CONSUMER, &k.signature, &k.encryption)
                .third_party(Some(CALLBACK)),
        )
        .register_consumer(ConsumerRegistration::new(
            "FIRSTPRTY",
            &k.signature,
            &k.encryption,
        ))
        .register_consumer(ConsumerRegistration::new(
            "TESTCONS",
            &k.signature,
            &k.encryption,
        ))
        .user(USER, PASSWORD, true)
        .lifetimes(lifetimes)
        .start()
        .await
        .unwrap()
}

fn config(sandbox: &Sandbox, consumer: &str, callback: Option<&str>) -> ThirdPartyConfig {
    let k = keys();
    let consumer = Oauth1aConfig::new(
        consumer,
        "",
        SecretString::from(String::new()),
        k.signature.clone(),
        DecryptionKey::from_pem(&k.encryption.to_pkcs8_pem()).unwrap(),
        DhGroup::from_hex(RFC3526_PRIME_2048, 2).unwrap(),
    )
    .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
    .unwrap()
    .timeout(Duration::from_secs(5));
    let mut config = ThirdPartyConfig::new(consumer)
        .authorize_url(&format!("{}/authorize", sandbox.base_url()))
        .unwrap();
    if let Some(callback) = callback {
        config = config.callback_url(callback).unwrap();
    }
    config
}

/// What a person does on the authorisation page: log in, press a button. Returns where the
/// browser is sent (the callback URL with the verifier) or the page shown.
async fn authorise(url: &url::Url, username: &str, password: &str, action: &str) -> String {
    let http = reqwest_client();
    let page = http.get(url.as_str()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("id=\"approve\"") && html.contains("id=\"deny\""),
        "{html}"
    );
    let token = url
        .query_pairs()
        .find(|(k, _)| k == "oauth_token")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("oauth_token", &token)
        .append_pair("username", username)
        .append_pair("password", password)
        .append_pair("action", action)
        .finish();
    let answer = http
        .post(url.as_str().split('?').next().unwrap())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    match answer.headers().get("location") {
        Some(to) => to.to_str().unwrap().to_owned(),
        None => answer.text().await.unwrap(),
    }
}

fn reqwest_client() -> reqwest::Client {
    ibauth::HttpClient::new(Duration::from_secs(5), None)
        .unwrap()
        .reqwest()
        .clone()
}

fn rejected(err: &Error) -> (ibauth::Step, u16, String, Option<&'static str>) {
    match err {
        Error::Rejected {
            step,
            status,
            message,
            hint,
            ..
        } => (*step, *status, message.clone(), *hint),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn the_whole_flow_ends_in_an_authenticated_session() {
    let sandbox = sandbox(Lifetimes::default()).await;
    let client = ThirdPartyClient::new(config(&sandbox, CONSUMER, Some(CALLBACK))).unwrap();
    let request = client.request_token().await.unwrap();
    assert_eq!(request.token.len(), 20);
    assert_eq!(request.callback, CALLBACK);
    let url = client.authorize_url(&request);
    let redirect = authorise(&url, USER, PASSWORD, "approve").await;
    assert!(redirect.starts_with(&format!("{CALLBACK}?oauth_token={}", request.token)));
    let verifier = parse_verifier(&redirect, &request).unwrap();
    let grant = client.access_token(&request, &verifier).await.unwrap();
    assert!(grant.is_paper, "carol has a paper account");

    let mut session = Oauth1aClient::new(client.session_config(&grant)).unwrap();
    let status = session.connect().await.unwrap().status;
    assert!(status.authenticated);
    assert!(session.tickle().await.unwrap().auth_status().authenticated);
    let counters = sandbox.counters();
    assert_eq!(
        (
            counters.request_tokens,
            counters.oauth_access_tokens,
            counters.live_session_tokens
        ),
        (1, 1, 1)
    );

    // Single use: the same request token and verifier again.
    let again = client.access_token(&request, &verifier).await.unwrap_err();
    let (step, status, message, hint) = rejected(&again);
    assert_eq!((step, status), (ibauth::Step::OauthAccessToken, 401));
    assert_eq!(message, "request token expired or unknown");
    assert!(hint.unwrap().contains("log in again"));
}

#[tokio::test]
async fn out_of_band_shows_the_verifier_to_paste() {
    let sandbox = sandbox(Lifetimes::default()).await;
    let client = ThirdPartyClient::new(config(&sandbox, CONSUMER, None)).unwrap();
    let request = client.request_token().await.unwrap();
    assert_eq!(request.callback, "oob");
    let page = authorise(&client.authorize_url(&request), USER, PASSWORD, "approve").await;
    let verifier = page
        .split("<code id=\"verifier\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap()
        .to_owned();
    let verifier = parse_verifier(&verifier, &request).unwrap();
    client.access_token(&request, &verifier).await.unwrap();
}

#[tokio::test]
async fn every_refusal_says_what_to_do() {
    // The sandbox counts whole seconds: a request token lives 2–3 s here, long enough for the
    // steps below on a slow machine (a 1 s lifetime could end between two of them), short
    // enough to wait out at the end.
    let sandbox = sandbox(Lifetimes {
        request_token: Duration::from_secs(3),
        ..Lifetimes::default()
    })
    .await;

    // A first-party consumer, and an unknown one: IBKR's `invalid consumer`, with the list.
    for consumer in ["FIRSTPRTY", "NOSUCHONE"] {
        let client = ThirdPartyClient::new(config(&sandbox, consumer, None)).unwrap();
        let err = client.request_token().await.unwrap_err();
        let (step, status, message, hint) = rejected(&err);
        assert_eq!(
            (step, status),
            (ibauth::Step::RequestToken, 401),
            "{consumer}"
        );
        assert!(message.contains("invalid consumer"), "{message}");
        let hint = hint.unwrap();
        assert!(
            hint.contains("first-party") && hint.contains("TESTCONS") && hint.contains("paper")
        );
    }

    // A callback other than the registered one.
    let client = ThirdPartyClient::new(config(
        &sandbox,
        CONSUMER,
        Some("https://127.0.0.1:8443/ibauth/Callback"),
    ))
    .unwrap();
    let err = client.request_token().await.unwrap_err();
    let (_, _, message, hint) = rejected(&err);
    assert!(message.contains(CALLBACK), "{message}");
    assert!(hint.unwrap().contains("exactly"));

    let client = ThirdPartyClient::new(config(&sandbox, CONSUMER, Some(CALLBACK))).unwrap();

    // Denied in the browser.
    let request = client.request_token().await.unwrap();
    let redirect = authorise(&client.authorize_url(&request), USER, PASSWORD, "deny").await;
    assert_eq!(
        parse_verifier(&redirect, &request).unwrap_err(),
        VerifierError::Denied
    );
    let err = client
        .access_token(&request, &SecretString::from("anything".to_owned()))
        .await
        .unwrap_err();
    assert!(rejected(&err).3.unwrap().contains("denied"));

    // A wrong password gets the page again, not a redirect.
    let request = client.request_token().await.unwrap();
    let page = authorise(&client.authorize_url(&request), USER, "wrong", "approve").await;
    assert!(page.contains("Wrong username or password"), "{page}");

    // A verifier from another login.
    let first = client.request_token().await.unwrap();
    let second = client.request_token().await.unwrap();
    let redirect = authorise(&client.authorize_url(&first), USER, PASSWORD, "approve").await;
    assert!(matches!(
        parse_verifier(&redirect, &second),
        Err(VerifierError::OtherToken { .. })
    ));
    let verifier = parse_verifier(&redirect, &first).unwrap();
    let err = client.access_token(&second, &verifier).await.unwrap_err();
    assert!(rejected(&err).2.contains("not authorized yet"));

    // An expired request token (lifetime 3 s here).
    let request = client.request_token().await.unwrap();
    let url = client.authorize_url(&request);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let page = reqwest_client()
        .get(url.as_str())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("expired"), "{page}");
    let err = client
        .access_token(&request, &SecretString::from("0".repeat(20)))
        .await
        .unwrap_err();
    let (_, _, message, hint) = rejected(&err);
    assert_eq!(message, "request token expired or unknown");
    assert!(hint.unwrap().contains("log in again"));
}
