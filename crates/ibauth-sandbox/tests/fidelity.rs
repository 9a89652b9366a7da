//! The sandbox accepts every request form IBKR's own samples and guide use (spec: "Forms
//! IBKR's own samples and guide use"), each sent here by hand exactly as described: the SSO
//! session's 200 answer, `ssodh/init` parameters as JSON, form or query, 7-character nonces,
//! query and form parameters signed or not, the WebSocket without its cookie, `/v1/portal`,
//! a DH prime per consumer, `isPaper` from the grant, and the nightly reset.

mod hand_signed;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use hand_signed::{Call, Form, PAPER_USER, Session, TempSet, hand_made_lst, http, reply};
use ibauth::oauth1a::{
    DhGroup, DhSecret, LstError, Nonce, Oauth1aClient, Oauth1aConfig, Signer, authorize,
    live_session_token, lst_matches, oauth_params, prepend,
};
use ibauth::secrecy::{ExposeSecret, SecretString};
use ibauth::{Config, Error, FixedClock, Oauth2Client};
use ibauth_sandbox::{
    ClientRegistration, NightlyReset, RFC3526_PRIME_2048, SANDBOX_CLIENT_ID, SANDBOX_CONSUMER_KEY,
    SANDBOX_CREDENTIAL, SANDBOX_DH_PRIMES, SANDBOX_KEY_ID, Sandbox,
};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// An OAuth 2.0 client of the set against `sandbox`, on `clock` if given.
fn oauth2_client(set: &TempSet, sandbox: &Sandbox, user: &str, client_id: &str) -> Oauth2Client {
    let config = Config::builder()
        .client_id(client_id)
        .client_key_id(SANDBOX_KEY_ID)
        .credential(user)
        .private_key(set.set.key().clone())
        .base_url(sandbox.base_url())
        .public_ip("127.0.0.1".parse().expect("an IP"))
        .build()
        .expect("config");
    Oauth2Client::new(config).expect("client")
}

/// A bearer token (SSO session without a brokerage session) for the set's user.
async fn bearer(set: &TempSet, sandbox: &Sandbox) -> String {
    let mut client = oauth2_client(set, sandbox, SANDBOX_CREDENTIAL, SANDBOX_CLIENT_ID);
    client.request_access_token().await.expect("access token");
    let bearer = client.create_sso_session().await.expect("SSO session");
    bearer.token.expose_secret().to_owned()
}

/// A bearer-authenticated call with an optional body and content type.
async fn bearer_call(
    sandbox: &Sandbox,
    bearer: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<(&str, &str)>,
) -> hand_signed::Reply {
    let mut request = http()
        .request(method, format!("{}{path}", sandbox.base_url()))
        .header("authorization", format!("Bearer {bearer}"));
    request = match body {
        Some((content_type, body)) => request
            .header("content-type", content_type)
            .body(body.to_owned()),
        None => request.header("content-length", "0"),
    };
    reply(request.send().await.expect("the sandbox answers")).await
}

#[tokio::test]
async fn sso_sessions_answers_200_with_access_token_active_and_token_type() {
    let set = TempSet::new("sso200");
    let sandbox = set.builder().start().await.expect("sandbox");
    let now = hand_signed::now();
    // IBKR's OAuth 2.0 sample: no jti in either JWT.
    let assertion = ibauth::oauth2::client_assertion_with_jti(
        set.set.key(),
        SANDBOX_KEY_ID,
        SANDBOX_CLIENT_ID,
        now,
        None,
    );
    let token = reply(
        http()
            .post(format!("{}/oauth2/api/v1/token", sandbox.base_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                ibauth::oauth2::token_request_body(&assertion)
                    .expose_secret()
                    .to_owned(),
            )
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(token.status, 200, "{token:?}");
    let access = token.body["access_token"].as_str().expect("access token");
    let jwt_b = ibauth::oauth2::sso_session_request_with_jti(
        set.set.key(),
        SANDBOX_KEY_ID,
        SANDBOX_CLIENT_ID,
        &SecretString::from(SANDBOX_CREDENTIAL),
        "127.0.0.1".parse().expect("an IP"),
        now,
        None,
    );
    let sso = reply(
        http()
            .post(format!("{}/gw/api/v1/sso-sessions", sandbox.base_url()))
            .header("authorization", format!("Bearer {access}"))
            .header("content-type", "application/jwt")
            .body(jwt_b.expose_secret().to_owned())
            .send()
            .await
            .expect("answer"),
    )
    .await;
    // What IBKR's sample reads only on 200, in the OpenAPI's shape.
    assert_eq!(sso.status, 200, "{sso:?}");
    let mut keys: Vec<&str> = sso
        .body
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["access_token", "active", "token_type"]);
    assert_eq!(sso.body["active"], true);
    assert_eq!(sso.body["token_type"], "Bearer");
    let bearer = sso.body["access_token"].as_str().expect("bearer");
    let validate = bearer_call(
        &sandbox,
        bearer,
        reqwest::Method::GET,
        "/v1/api/sso/validate",
        None,
    )
    .await;
    assert_eq!(validate.body["USER_NAME"], SANDBOX_CREDENTIAL);

    // The library takes any 2xx: its whole login works.
    let mut client = oauth2_client(&set, &sandbox, SANDBOX_CREDENTIAL, SANDBOX_CLIENT_ID);
    assert!(client.connect().await.expect("login").status.authenticated);
}

#[tokio::test]
async fn ssodh_init_takes_its_flags_as_json_form_or_query() {
    let set = TempSet::new("init-forms");
    let sandbox = set.builder().start().await.expect("sandbox");
    let (first, second) = (bearer(&set, &sandbox).await, bearer(&set, &sandbox).await);
    let init = "/v1/api/iserver/auth/ssodh/init";
    let post = reqwest::Method::POST;

    // JSON body, as IBKR's current samples.
    let answer = bearer_call(
        &sandbox,
        &first,
        post.clone(),
        init,
        Some(("application/json", r#"{"publish":true,"compete":true}"#)),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["authenticated"], true);
    assert_eq!(answer.body["fail"], "");

    // A form body saying compete=false: the other session keeps the brokerage session.
    let answer = bearer_call(
        &sandbox,
        &second,
        post.clone(),
        init,
        Some((
            "application/x-www-form-urlencoded",
            "publish=true&compete=false",
        )),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["authenticated"], false);
    assert_eq!(answer.body["competing"], true);

    // Query parameters saying compete=true: taken over.
    let answer = bearer_call(
        &sandbox,
        &second,
        post.clone(),
        &format!("{init}?publish=true&compete=true"),
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["authenticated"], true);
    let status = bearer_call(
        &sandbox,
        &first,
        post.clone(),
        "/v1/api/iserver/auth/status",
        None,
    )
    .await;
    assert_eq!(status.body["competing"], true);
    assert_eq!(status.body["authenticated"], false);

    // And the form body saying compete=true takes it back.
    let answer = bearer_call(
        &sandbox,
        &first,
        post,
        init,
        Some((
            "application/x-www-form-urlencoded",
            "compete=true&publish=true",
        )),
    )
    .await;
    assert_eq!(answer.body["authenticated"], true, "{answer:?}");
}

#[tokio::test]
async fn oauth1a_with_seven_character_nonces_from_the_live_session_token_on() {
    let set = TempSet::new("short-nonces");
    let sandbox = set.builder().start().await.expect("sandbox");
    let session = hand_made_lst(&sandbox, &set, "/v1/api", SANDBOX_CREDENTIAL)
        .await
        .expect("the LST request with a 7-character nonce is accepted");

    let call = Call::new("POST", "/tickle");
    assert_eq!(call.nonce.len(), 7);
    let tickle = session.send(&call).await;
    assert_eq!(tickle.status, 200, "{tickle:?}");
    assert_eq!(tickle.body["iserver"]["tickle"], true);
    assert!(
        tickle.body["session"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );

    // ssodh/init with its flags in a signed form body, as the guide lists them.
    let init = Call {
        form_body: Some("publish=true&compete=true"),
        form: Form::Guide,
        ..Call::new("POST", "/iserver/auth/ssodh/init")
    };
    let answer = session.send(&init).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["authenticated"], true);
    let status = session
        .send(&Call::new("POST", "/iserver/auth/status"))
        .await;
    assert_eq!(status.body["authenticated"], true, "{status:?}");
    assert_eq!(status.body["fail"], "");
    let tickle = session.send(&Call::new("GET", "/tickle")).await;
    assert_eq!(tickle.body["iserver"]["tickle"], true);
    assert_eq!(tickle.body["iserver"]["authStatus"]["authenticated"], true);
    assert_eq!(tickle.body["iserver"]["authStatus"]["fail"], "");
    assert_eq!(sandbox.counters().rejections, 0);
}

#[tokio::test]
async fn query_and_form_parameters_verify_signed_or_unsigned() {
    let set = TempSet::new("params");
    let sandbox = set.builder().start().await.expect("sandbox");
    let session = hand_made_lst(&sandbox, &set, "/v1/api", SANDBOX_CREDENTIAL)
        .await
        .expect("LST");
    let init = session
        .send(&Call {
            form_body: Some("publish=true&compete=true"),
            ..Call::new("POST", "/iserver/auth/ssodh/init")
        })
        .await;
    assert_eq!(init.body["authenticated"], true, "{init:?}");

    // The spec's example query, with a comma that the encodings treat differently.
    let snapshot = "/iserver/marketdata/snapshot?conids=265598,8314&fields=31,84";
    for form in [Form::OauthOnly, Form::Guide, Form::Rfc5849] {
        let answer = session
            .send(&Call {
                form,
                ..Call::new("GET", snapshot)
            })
            .await;
        assert_eq!(answer.status, 200, "{form:?}: {answer:?}");
        assert_eq!(answer.body.as_array().map(Vec::len), Some(2), "{form:?}");
        let answer = session
            .send(&Call {
                form,
                form_body: Some("publish=true&compete=true"),
                ..Call::new("POST", "/iserver/auth/ssodh/init")
            })
            .await;
        assert_eq!(answer.status, 200, "{form:?}: {answer:?}");
    }

    // Signed over other query values than those sent: refused in either listing.
    for form in [Form::Guide, Form::Rfc5849] {
        let call = Call {
            form,
            signed_url: Some(format!(
                "{}/v1/api/iserver/marketdata/snapshot?conids=1&fields=31,84",
                sandbox.base_url()
            )),
            ..Call::new("GET", snapshot)
        };
        let answer = session.send(&call).await;
        assert_eq!(answer.status, 401, "{form:?}: {answer:?}");
        assert_eq!(answer.body["error"], "invalid signature");
    }
    // A signed form body other than the one sent: refused.
    let call = Call {
        form: Form::Guide,
        form_body: Some("publish=true&compete=true"),
        ..Call::new("POST", "/iserver/auth/ssodh/init")
    };
    let header = session.header(&Call {
        form_body: Some("publish=true&compete=false"),
        nonce: call.nonce.clone(),
        timestamp: call.timestamp,
        form: Form::Guide,
        ..Call::new("POST", "/iserver/auth/ssodh/init")
    });
    let answer = session.send_with(&call, &header).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(sandbox.counters().rejections, 3);
}

#[tokio::test]
async fn the_portal_prefix_serves_the_api_and_signs_its_own_urls() {
    let set = TempSet::new("portal");
    let sandbox = set.builder().start().await.expect("sandbox");
    // OAuth 1.0a, every step under /v1/portal, signed for the /v1/portal URLs.
    let session = hand_made_lst(&sandbox, &set, "/v1/portal", SANDBOX_CREDENTIAL)
        .await
        .expect("LST at /v1/portal");
    let portal = |call: Call<'static>| Call {
        api: "/v1/portal",
        ..call
    };
    let init = session
        .send(&portal(Call {
            form_body: Some("publish=true&compete=true"),
            ..Call::new("POST", "/iserver/auth/ssodh/init")
        }))
        .await;
    assert_eq!(init.body["authenticated"], true, "{init:?}");
    for (method, path) in [
        ("POST", "/tickle"),
        ("GET", "/sso/validate"),
        ("GET", "/iserver/accounts"),
        ("GET", "/portfolio/accounts"),
        ("POST", "/iserver/auth/status"),
    ] {
        let answer = session.send(&portal(Call::new(method, path))).await;
        assert_eq!(answer.status, 200, "{method} {path}: {answer:?}");
    }
    // Signed for the /v1/api URL but sent to /v1/portal: not the same request.
    let call = Call {
        signed_url: Some(format!("{}/v1/api/tickle", sandbox.base_url())),
        ..portal(Call::new("POST", "/tickle"))
    };
    let answer = session.send(&call).await;
    assert_eq!(
        (answer.status, answer.body["error"].clone()),
        (401, json!("invalid signature"))
    );

    // OAuth 2.0 bearer calls under /v1/portal.
    let bearer = bearer(&set, &sandbox).await;
    let post = reqwest::Method::POST;
    let init = bearer_call(
        &sandbox,
        &bearer,
        post.clone(),
        "/v1/portal/iserver/auth/ssodh/init",
        Some(("application/json", r#"{"publish":true,"compete":true}"#)),
    )
    .await;
    assert_eq!(init.body["authenticated"], true, "{init:?}");
    let tickle = bearer_call(&sandbox, &bearer, post, "/v1/portal/tickle", None).await;
    assert_eq!(tickle.body["iserver"]["authStatus"]["authenticated"], true);

    // A Client Portal Gateway client: the library pointed at /v1/portal/.
    let (token, secret) = sandbox
        .issue_access_token(SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL)
        .expect("token");
    let config = Oauth1aConfig::new(
        SANDBOX_CONSUMER_KEY,
        token,
        SecretString::from(secret),
        set.signature_key(),
        set.decryption_key(),
        set.group(),
    )
    .rest_url(&format!("{}/v1/portal/", sandbox.base_url()))
    .expect("REST URL");
    let mut client = Oauth1aClient::new(config).expect("client");
    assert!(
        client
            .connect()
            .await
            .expect("login at /v1/portal")
            .status
            .authenticated
    );
    assert!(
        client
            .tickle()
            .await
            .expect("tickle")
            .auth_status()
            .authenticated
    );
    assert_eq!(sandbox.counters().rejections, 1);
}

/// The next text message, as JSON.
async fn next_json<S>(socket: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a message within 5 s")
            .expect("the socket is open")
            .expect("a frame");
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("JSON"),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// Opens `url` with `headers` (no cookie unless given).
async fn open(
    url: &str,
    headers: &[(&str, String)],
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = url.into_client_request().expect("a WebSocket URL");
    for (name, value) in headers {
        request.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
            value.parse().expect("a header value"),
        );
    }
    tokio_tungstenite::connect_async(request)
        .await
        .expect("the handshake is accepted")
        .0
}

#[tokio::test]
async fn a_socket_without_cookie_is_authenticated_by_its_first_message() {
    let set = TempSet::new("ws-session");
    let sandbox = set
        .builder()
        .ws_heartbeat(Duration::from_secs(60))
        .start()
        .await
        .expect("sandbox");
    let ws_base = sandbox.base_url().replacen("http", "ws", 1);

    // OAuth 1.0a: the access token in the query, no cookie.
    let session = hand_made_lst(&sandbox, &set, "/v1/api", SANDBOX_CREDENTIAL)
        .await
        .expect("LST");
    let tickle = session.send(&Call::new("POST", "/tickle")).await;
    let id = tickle.body["session"]
        .as_str()
        .expect("session id")
        .to_owned();
    let url = format!("{ws_base}/v1/api/ws?oauth_token={}", session.token);
    let mut socket = open(&url, &[]).await;
    assert_eq!(
        next_json(&mut socket).await,
        json!({"message": "waiting for session"})
    );
    socket
        .send(Message::Text(json!({ "session": id }).to_string().into()))
        .await
        .expect("sent");
    let system = next_json(&mut socket).await;
    assert_eq!(system["topic"], "system");
    assert_eq!(system["success"], SANDBOX_CREDENTIAL);
    assert_eq!(system["isPaper"], false);
    let sts = next_json(&mut socket).await;
    assert_eq!(sts["topic"], "sts");
    socket
        .send(Message::Text("tic".into()))
        .await
        .expect("sent");
    assert_eq!(next_json(&mut socket).await["topic"], "tic");
    assert_eq!(sandbox.counters().ws_connections, 1);

    // A wrong or unknown session is refused: the socket is closed with a policy violation.
    for claimed in [
        json!({ "session": "not-the-session" }),
        json!({"other": id}),
        json!("tic"),
    ] {
        let mut socket = open(&url, &[]).await;
        assert_eq!(
            next_json(&mut socket).await["message"],
            "waiting for session"
        );
        socket
            .send(Message::Text(claimed.to_string().into()))
            .await
            .expect("sent");
        let closed = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("an answer");
        match closed {
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 1008, "{claimed}");
            }
            other => panic!("{claimed}: expected a close frame, got {other:?}"),
        }
    }
    assert_eq!(sandbox.counters().ws_connections, 1);
    assert_eq!(sandbox.counters().rejections, 3);

    // OAuth 2.0: the bearer, no cookie; then the JSON cookie form is taken at once.
    let mut client = oauth2_client(&set, &sandbox, SANDBOX_CREDENTIAL, SANDBOX_CLIENT_ID);
    client.connect().await.expect("login");
    let id = client.tickle().await.expect("tickle").session;
    let bearer = format!(
        "Bearer {}",
        client.bearer_token().expect("bearer").token.expose_secret()
    );
    let url = format!("{ws_base}/v1/api/ws");
    let mut socket = open(&url, &[("authorization", bearer.clone())]).await;
    assert_eq!(
        next_json(&mut socket).await["message"],
        "waiting for session"
    );
    socket
        .send(Message::Text(json!({ "session": id }).to_string().into()))
        .await
        .expect("sent");
    assert_eq!(next_json(&mut socket).await["topic"], "system");
    let cookie = format!("api={}", json!({ "session": id }));
    let mut socket = open(&url, &[("authorization", bearer), ("cookie", cookie)]).await;
    assert_eq!(next_json(&mut socket).await["topic"], "system");
    assert_eq!(sandbox.counters().ws_connections, 3);
}

#[tokio::test]
async fn is_paper_follows_the_grant() {
    let set = TempSet::new("paper");
    let sandbox = set.builder().start().await.expect("sandbox");
    let ws_base = sandbox.base_url().replacen("http", "ws", 1);
    for (user, paper) in [(PAPER_USER, true), (SANDBOX_CREDENTIAL, false)] {
        let session: Session = hand_made_lst(&sandbox, &set, "/v1/api", user)
            .await
            .expect("LST");
        let id = session.send(&Call::new("POST", "/tickle")).await.body["session"]
            .as_str()
            .expect("session id")
            .to_owned();
        let url = format!("{ws_base}/v1/api/ws?oauth_token={}", session.token);
        let mut socket = open(&url, &[("cookie", format!("api={id}"))]).await;
        let system = next_json(&mut socket).await;
        assert_eq!(system["success"], user);
        assert_eq!(system["isPaper"], paper, "{user}");
    }
    // OAuth 2.0: a paper user's session is a paper one too.
    sandbox.register(
        ClientRegistration::new("PAPERCLIENT")
            .key(SANDBOX_KEY_ID, set.set.key())
            .credential(PAPER_USER),
    );
    let mut client = oauth2_client(&set, &sandbox, PAPER_USER, "PAPERCLIENT");
    client.connect().await.expect("login");
    let mut socket = client.connect_websocket().await.expect("socket");
    let text = tokio::time::timeout(Duration::from_secs(5), socket.next_text())
        .await
        .expect("a message")
        .expect("open")
        .expect("text");
    let system: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(system["isPaper"], true);
    socket.close().await;
}

#[tokio::test]
async fn each_consumer_has_its_own_safe_prime_and_a_hard_coded_group_fails() {
    let set = TempSet::new("dh");
    let prime = set.set.dh_prime_hex();
    assert!(SANDBOX_DH_PRIMES.contains(&prime));
    assert_ne!(prime, RFC3526_PRIME_2048);
    // The set's dhparam.pem holds the same prime (as `openssl dhparam` writes it).
    let pem = std::fs::read_to_string(set.dir.join("dhparam.pem")).expect("dhparam.pem");
    assert!(pem.starts_with("-----BEGIN DH PARAMETERS-----"), "{pem}");
    let again = TempSet::new("dh");
    assert_ne!(again.dir, set.dir);
    let sandbox = set.builder().start().await.expect("sandbox");

    // The right group: the whole login works, for the first party and TESTCONS alike.
    let session = hand_made_lst(&sandbox, &set, "/v1/api", SANDBOX_CREDENTIAL).await;
    assert!(session.is_ok());

    // A client that assumes RFC 3526: the server's LST is another one. Chosen here with
    // A below the consumer's prime, so the server takes the challenge and answers.
    let (token, secret) = sandbox
        .issue_access_token(SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL)
        .expect("token");
    let prepend = prepend(&set.decryption_key(), &SecretString::from(secret)).expect("prepend");
    let assumed = DhGroup::from_hex(RFC3526_PRIME_2048, 2).expect("RFC 3526");
    let below = |hex: &str| (hex.len(), hex) < (prime.len(), prime);
    let (a, challenge) = std::iter::repeat_with(|| {
        let a = DhSecret::random();
        let challenge = assumed.challenge(&a);
        (a, challenge)
    })
    .find(|(_, challenge)| below(challenge))
    .expect("a challenge below the prime");
    let url = format!("{}/v1/api/oauth/live_session_token", sandbox.base_url());
    let params = oauth_params(
        SANDBOX_CONSUMER_KEY,
        Some(&token),
        &Nonce::fresh(hand_signed::now()),
        "RSA-SHA256",
        &[("diffie_hellman_challenge", &challenge)],
    );
    let key = set.signature_key();
    let header = authorize(
        &Signer::RsaSha256 {
            key: &key,
            prepend: &prepend,
        },
        hand_signed::REALM,
        "POST",
        &url,
        &params,
    );
    let answer = reply(
        http()
            .post(&url)
            .header("authorization", header)
            .header("content-length", "0")
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let k = assumed
        .shared_secret(
            answer.body["diffie_hellman_response"].as_str().expect("B"),
            &a,
        )
        .expect("K");
    let lst = live_session_token(&k, &prepend).expect("LST");
    let signature = answer.body["live_session_token_signature"]
        .as_str()
        .expect("signature");
    assert!(!lst_matches(&lst, SANDBOX_CONSUMER_KEY, signature));

    // The library with a hard-coded group never gets a session, against the first-party
    // consumer or TESTCONS.
    for consumer in [SANDBOX_CONSUMER_KEY, "TESTCONS"] {
        let (token, secret) = sandbox
            .issue_access_token(consumer, SANDBOX_CREDENTIAL)
            .expect("token");
        let config = Oauth1aConfig::new(
            consumer,
            token,
            SecretString::from(secret),
            set.signature_key(),
            set.decryption_key(),
            DhGroup::from_hex(RFC3526_PRIME_2048, 2).expect("RFC 3526"),
        )
        .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
        .expect("REST URL");
        let err = Oauth1aClient::new(config)
            .expect("client")
            .connect()
            .await
            .expect_err("a hard-coded group fails");
        // A mismatch; or, should the challenge exceed the consumer's prime, a refusal of it.
        match &err {
            Error::Lst {
                source: LstError::Mismatch,
                ..
            } => {}
            Error::Rejected {
                status: 400,
                message,
                ..
            } if message.contains("diffie_hellman_challenge") => {}
            other => panic!("{consumer}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_shipped_primes_are_safe_primes() {
    for prime in SANDBOX_DH_PRIMES {
        let audit = DhGroup::from_hex(prime, 2)
            .expect("parses")
            .audit()
            .expect("a safe prime");
        assert_eq!(audit, "2048-bit safe prime, generator 2");
    }
}

#[tokio::test]
async fn the_nightly_reset_drops_sessions_at_the_configured_time() {
    // 2023-11-15 05:59:58 UTC, two seconds before 01:00 at UTC−5.
    let clock = Arc::new(FixedClock::new(1_700_027_998));
    let set = TempSet::new("nightly");
    let schedule: NightlyReset = "01:00-05:00".parse().expect("a schedule");
    let sandbox = set
        .builder()
        .clock(clock.clone())
        .nightly_reset(schedule)
        .start()
        .await
        .expect("sandbox");
    let config = Config::builder()
        .client_id(SANDBOX_CLIENT_ID)
        .client_key_id(SANDBOX_KEY_ID)
        .credential(SANDBOX_CREDENTIAL)
        .private_key(set.set.key().clone())
        .base_url(sandbox.base_url())
        .public_ip("127.0.0.1".parse().expect("an IP"))
        .build()
        .expect("config");
    let mut client = Oauth2Client::with_clock(config, clock.clone()).expect("client");
    client.connect().await.expect("login");
    let before = client.tickle().await.expect("tickle").session;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sandbox.has_brokerage_session(SANDBOX_CREDENTIAL), "not yet");

    let dropped = || async {
        for _ in 0..50 {
            if !sandbox.has_brokerage_session(SANDBOX_CREDENTIAL) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    clock.advance(3);
    assert!(dropped().await, "dropped at 01:00-05:00");
    let tickle = client.tickle().await.expect("tickle");
    assert!(!tickle.auth_status().authenticated);
    assert_ne!(tickle.session, before);

    // Once a day: later the same day nothing happens; the next night it does again.
    client.init_brokerage_session().await.expect("init");
    clock.advance(3600);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(sandbox.has_brokerage_session(SANDBOX_CREDENTIAL));
    clock.advance(86_400 - 3600);
    assert!(dropped().await, "dropped the next night");
}
