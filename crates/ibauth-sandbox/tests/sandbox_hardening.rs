//! Attacks on the sandbox (which users run on their machines) and the strict refusals that
//! must hold beside the accepted forms: OAuth 1.0a bad signatures, replayed, empty or burnt
//! nonces, wrong realms, stale timestamps, duplicate parameters; replayed and over-long JWTs
//! and unknown `crit` headers; unbounded admin numbers and bodies; the admin API turned off;
//! credential files written through planted symbolic links.

mod hand_signed;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt as _, StreamExt as _};
use hand_signed::{Call, Form, Reply, TempSet, hand_made_lst, http, reply};
use ibauth::oauth1a::{Nonce, Signer, authorize, oauth_params};
use ibauth::secrecy::{ExposeSecret, SecretSlice};
use ibauth_sandbox::{
    CredentialSet, SANDBOX_CLIENT_ID, SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL, SANDBOX_KEY_ID,
    Sandbox, SandboxError,
};
use serde_json::{Value, json};

/// A sandbox with the set's consumers and an agreed OAuth 1.0a session with its bridge.
async fn oauth1a_session(name: &str) -> (TempSet, Sandbox, hand_signed::Session) {
    let set = TempSet::new(name);
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
    (set, sandbox, session)
}

#[track_caller]
fn assert_refused(answer: &Reply, status: u16, error: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(answer.body["error"], error, "{answer:?}");
}

#[tokio::test]
async fn signed_requests_stay_strict() {
    let (_set, sandbox, session) = oauth1a_session("strict").await;
    let rejections = sandbox.counters().rejections;

    // Another key: a bad signature, in every listing of the parameters.
    let forger = hand_signed::Session {
        lst: SecretSlice::from(vec![7u8; 20]),
        base_url: session.base_url.clone(),
        consumer: session.consumer.clone(),
        realm: session.realm.clone(),
        token: session.token.clone(),
    };
    for form in [Form::OauthOnly, Form::Guide, Form::Rfc5849] {
        let call = Call {
            form,
            ..Call::new(
                "GET",
                "/iserver/marketdata/snapshot?conids=265598&fields=31",
            )
        };
        assert_refused(&forger.send(&call).await, 401, "invalid signature");
    }

    // A replayed nonce, in any listing, and an empty one.
    let call = Call::new("POST", "/tickle");
    assert_eq!(session.send(&call).await.status, 200);
    assert_refused(&session.send(&call).await, 401, "nonce already used");
    let again = Call {
        nonce: call.nonce.clone(),
        form: Form::Guide,
        ..Call::new("POST", "/tickle?x=1")
    };
    assert_refused(&session.send(&again).await, 401, "nonce already used");
    let empty = Call {
        nonce: String::new(),
        ..Call::new("POST", "/tickle")
    };
    assert_refused(&session.send(&empty).await, 401, "invalid nonce");

    // The wrong realm, stale and future timestamps.
    let wrong_realm = Call {
        realm: Some("test_realm"),
        ..Call::new("POST", "/tickle")
    };
    assert_refused(
        &session.send(&wrong_realm).await,
        401,
        "id: 1, error: invalid consumer",
    );
    for timestamp in [hand_signed::now() - 600, hand_signed::now() + 600] {
        let call = Call {
            timestamp,
            ..Call::new("POST", "/tickle")
        };
        assert_refused(&session.send(&call).await, 401, "timestamp out of range");
    }

    // Duplicate OAuth parameters: twice in the header (same or other value), or also in the
    // query or the form body.
    let call = Call::new("POST", "/tickle");
    let header = session.header(&call);
    for extra in [
        format!(", oauth_nonce=\"{}\"", call.nonce),
        ", oauth_nonce=\"other12\"".to_owned(),
        format!(", oauth_token=\"{}\"", session.token),
        ", oauth_signature=\"AAAA\"".to_owned(),
    ] {
        let answer = session.send_with(&call, &format!("{header}{extra}")).await;
        assert_eq!(answer.status, 401, "{extra}: {answer:?}");
        let error = answer.body["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("duplicate OAuth parameter"),
            "{extra}: {error}"
        );
    }
    for call in [
        Call {
            form: Form::Guide,
            ..Call::new("POST", "/tickle?oauth_nonce=abc1234")
        },
        Call {
            form: Form::Guide,
            form_body: Some("oauth_token=0123&compete=true"),
            ..Call::new("POST", "/iserver/auth/ssodh/init")
        },
    ] {
        let answer = session.send(&call).await;
        assert_eq!(answer.status, 401, "{answer:?}");
        assert!(
            answer.body["error"]
                .as_str()
                .unwrap_or_default()
                .starts_with("duplicate OAuth parameter")
        );
    }
    assert_eq!(sandbox.counters().rejections, rejections + 15);
    // Through all of that the session is intact.
    assert_eq!(
        session.send(&Call::new("POST", "/tickle")).await.status,
        200
    );
}

#[tokio::test]
async fn a_forged_request_cannot_burn_a_nonce() {
    let (_set, _sandbox, session) = oauth1a_session("burn").await;
    let forger = hand_signed::Session {
        lst: SecretSlice::from(vec![1u8; 20]),
        base_url: session.base_url.clone(),
        consumer: session.consumer.clone(),
        realm: session.realm.clone(),
        token: session.token.clone(),
    };
    let call = Call::new("POST", "/tickle");
    assert_refused(&forger.send(&call).await, 401, "invalid signature");
    // The genuine request with the same nonce still works: only verified nonces are kept.
    assert_eq!(session.send(&call).await.status, 200);
}

#[tokio::test]
async fn token_endpoints_refuse_duplicate_parameters() {
    let set = TempSet::new("dup-lst");
    let sandbox = set.builder().start().await.expect("sandbox");
    let (token, _) = sandbox
        .issue_access_token(SANDBOX_CONSUMER_KEY, SANDBOX_CREDENTIAL)
        .expect("token");
    let key = set.signature_key();
    let prepend = ibauth::secrecy::SecretString::from(String::new());
    for (path, consumer, realm, token) in [
        (
            "oauth/live_session_token",
            SANDBOX_CONSUMER_KEY,
            "limited_poa",
            Some(token.as_str()),
        ),
        ("oauth/request_token", "TESTCONS", "test_realm", None),
    ] {
        let url = format!("{}/v1/api/{path}", sandbox.base_url());
        let params = oauth_params(
            consumer,
            token,
            &Nonce::fresh(hand_signed::now()),
            "RSA-SHA256",
            &[("diffie_hellman_challenge", "02")],
        );
        let header = authorize(
            &Signer::RsaSha256 {
                key: &key,
                prepend: &prepend,
            },
            realm,
            "POST",
            &url,
            &params,
        );
        let header = format!("{header}, oauth_consumer_key=\"{consumer}\"");
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
        assert_refused(
            &answer,
            401,
            "duplicate OAuth parameter `oauth_consumer_key`",
        );
    }
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact RS256 JWS of `header` and `claims` signed with the set's key.
fn jws(set: &TempSet, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = set.set.key().sign_sha256(input.as_bytes());
    format!("{input}.{}", b64(signature))
}

fn jose() -> Value {
    json!({"alg": "RS256", "kid": SANDBOX_KEY_ID, "typ": "JWT"})
}

async fn post_token(sandbox: &Sandbox, assertion: &str) -> Reply {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_assertion", assertion)
        .append_pair(
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        )
        .append_pair("scope", "sso-sessions.write")
        .finish();
    reply(
        http()
            .post(format!("{}/oauth2/api/v1/token", sandbox.base_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("answer"),
    )
    .await
}

async fn post_sso(sandbox: &Sandbox, access: &str, jwt: &str) -> Reply {
    reply(
        http()
            .post(format!("{}/gw/api/v1/sso-sessions", sandbox.base_url()))
            .header("authorization", format!("Bearer {access}"))
            .header("content-type", "application/jwt")
            .body(jwt.to_owned())
            .send()
            .await
            .expect("answer"),
    )
    .await
}

#[track_caller]
fn assert_problem(answer: &Reply, status: u16, detail: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(answer.body["detail"], detail, "{answer:?}");
}

#[tokio::test]
async fn jwts_are_used_once_live_boundedly_and_without_crit() {
    let set = TempSet::new("jwts");
    let sandbox = set.builder().start().await.expect("sandbox");
    let now = hand_signed::now();
    let assertion_claims = |jti: Option<&str>| {
        let mut claims = json!({
            "iss": SANDBOX_CLIENT_ID, "sub": SANDBOX_CLIENT_ID, "aud": "/token",
            "exp": now + 20, "iat": now - 10,
        });
        if let Some(jti) = jti {
            claims["jti"] = json!(jti);
        }
        claims
    };

    // crit, whatever it lists (even null or empty), at both endpoints.
    for crit in [json!(["exp"]), json!(["b64"]), json!([]), Value::Null] {
        let mut header = jose();
        header["crit"] = crit.clone();
        let answer = post_token(&sandbox, &jws(&set, &header, &assertion_claims(None))).await;
        assert_problem(
            &answer,
            401,
            "invalid_client: JWT header lists critical extensions (crit) the server does not understand",
        );
    }

    // The library's assertion (with its jti) once, never twice; a hand-made one with the same
    // jti but other bytes neither.
    let library =
        ibauth::oauth2::client_assertion(set.set.key(), SANDBOX_KEY_ID, SANDBOX_CLIENT_ID, now);
    let first = post_token(&sandbox, library.expose_secret()).await;
    assert_eq!(first.status, 200, "{first:?}");
    let access = first.body["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    assert_problem(
        &post_token(&sandbox, library.expose_secret()).await,
        401,
        "invalid_client: client assertion replayed (jti seen before)",
    );
    let jti = serde_json::from_slice::<Value>(
        &URL_SAFE_NO_PAD
            .decode(library.expose_secret().split('.').nth(1).expect("payload"))
            .expect("base64url"),
    )
    .expect("claims")["jti"]
        .as_str()
        .expect("a jti")
        .to_owned();
    let mut claims = assertion_claims(Some(&jti));
    claims["exp"] = json!(now + 19);
    assert_problem(
        &post_token(&sandbox, &jws(&set, &jose(), &claims)).await,
        401,
        "invalid_client: client assertion replayed (jti seen before)",
    );

    // JWT-B: a crit header, a lifetime beyond 24 h plus skew, and replays.
    let sso_claims = |exp: u64, jti: Option<&str>| {
        let mut claims = json!({
            "ip": "127.0.0.1", "credential": SANDBOX_CREDENTIAL, "iss": SANDBOX_CLIENT_ID,
            "exp": exp, "iat": now,
        });
        if let Some(jti) = jti {
            claims["jti"] = json!(jti);
        }
        claims
    };
    let mut critical = jose();
    critical["crit"] = json!(["exp"]);
    assert_problem(
        &post_sso(
            &sandbox,
            &access,
            &jws(&set, &critical, &sso_claims(now + 60, None)),
        )
        .await,
        401,
        "JWT header lists critical extensions (crit) the server does not understand",
    );
    for exp in [now + 86_461, now + 10 * 365 * 86_400, u64::MAX] {
        let answer = post_sso(
            &sandbox,
            &access,
            &jws(&set, &jose(), &sso_claims(exp, None)),
        )
        .await;
        assert_eq!(answer.status, 401, "exp {exp}: {answer:?}");
    }
    let longest = jws(&set, &jose(), &sso_claims(now + 86_460, None));
    assert_eq!(post_sso(&sandbox, &access, &longest).await.status, 200);
    assert_problem(
        &post_sso(&sandbox, &access, &longest).await,
        401,
        "SSO session request replayed (the same jti, or the same JWT without one, was used before)",
    );
    let with_jti = jws(&set, &jose(), &sso_claims(now + 60, Some("b-1")));
    assert_eq!(post_sso(&sandbox, &access, &with_jti).await.status, 200);
    let same_jti = jws(&set, &jose(), &sso_claims(now + 61, Some("b-1")));
    assert_eq!(post_sso(&sandbox, &access, &same_jti).await.status, 401);
    // The library's JWT-B carries a fresh jti: two sessions in the same second both open.
    for _ in 0..2 {
        let jwt = ibauth::oauth2::sso_session_request(
            set.set.key(),
            SANDBOX_KEY_ID,
            SANDBOX_CLIENT_ID,
            &ibauth::secrecy::SecretString::from(SANDBOX_CREDENTIAL),
            "127.0.0.1".parse().expect("an IP"),
            now,
        );
        assert_eq!(
            post_sso(&sandbox, &access, jwt.expose_secret())
                .await
                .status,
            200
        );
    }
    assert_eq!(sandbox.counters().sso_sessions, 4);
}

async fn admin(sandbox: &Sandbox, action: &str, body: Value) -> Reply {
    reply(
        http()
            .post(format!("{}/__sandbox/{action}", sandbox.base_url()))
            .json(&body)
            .send()
            .await
            .expect("answer"),
    )
    .await
}

#[tokio::test]
async fn the_admin_api_bounds_every_number_and_text() {
    let set = TempSet::new("admin-bounds");
    let sandbox = set.builder().start().await.expect("sandbox");
    let long = "x".repeat(2000);
    let refused = [
        ("fail_next", json!({"status": 500, "n": 10_001})),
        ("fail_next", json!({"status": 500, "n": -1})),
        ("fail_next", json!({"status": 500, "n": 1.5})),
        ("fail_next", json!({"status": 0})),
        ("fail_next", json!({"status": 99})),
        ("fail_next", json!({"status": 600})),
        ("fail_next", json!({"status": 65_536 + 500})),
        ("fail_next", json!({"status": 500, "retry_after": 86_401})),
        ("fail_next", json!({"status": 500, "retry_after": u64::MAX})),
        ("fail_next", json!({"status": 500, "message": long})),
        ("fail_next", json!({"status": 500, "message": 7})),
        ("cut", json!({"n": u64::MAX})),
        ("delay", json!({"ms": 60_001})),
        ("delay", json!({"ms": u64::MAX})),
        ("drop_session", json!({"credential": "x".repeat(257)})),
        ("drop_session", json!({})),
        ("pacing", json!({"enabled": true, "penalty_ms": u64::MAX})),
        (
            "pacing",
            json!({"enabled": true, "global_per_second": 100_001}),
        ),
        (
            "pacing",
            json!({"enabled": true, "global": {"count": 1, "per_ms": u64::MAX}}),
        ),
        (
            "pacing",
            json!({"enabled": true, "global": {"count": u64::MAX, "per_ms": 1000}}),
        ),
        (
            "pacing",
            json!({"enabled": true, "endpoints": [{"path": "/tickle", "count": 1, "per_ms": 86_400_001}]}),
        ),
        (
            "pacing",
            json!({"enabled": true, "endpoints": [{"path": "x".repeat(300), "count": 1, "per_ms": 1}]}),
        ),
    ];
    for (action, body) in &refused {
        let answer = admin(&sandbox, action, body.clone()).await;
        assert_eq!(answer.status, 400, "{action} {body}: {answer:?}");
    }
    // In total too: ten full requests fill the queue, the eleventh is refused.
    for _ in 0..10 {
        let answer = admin(&sandbox, "fail_next", json!({"status": 503, "n": 10_000})).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let answer = admin(&sandbox, "fail_next", json!({"status": 503, "n": 1})).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    // Still serving, and the edges of each range are accepted.
    for (action, body) in [
        ("delay", json!({"ms": 0})),
        (
            "pacing",
            json!({"enabled": true, "penalty_ms": 604_800_000, "global": {"count": 100_000, "per_ms": 86_400_000}}),
        ),
        ("pacing", json!({"enabled": false})),
    ] {
        let answer = admin(&sandbox, action, body.clone()).await;
        assert_eq!(answer.status, 200, "{action} {body}: {answer:?}");
    }
    let counters = reply(
        http()
            .get(format!("{}/__sandbox/counters", sandbox.base_url()))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(counters.status, 200);
    assert_eq!(counters.body["faults_injected"], 0);
}

#[tokio::test]
async fn the_admin_api_can_be_turned_off() {
    let set = TempSet::new("admin-off");
    let sandbox = set.builder().admin(false).start().await.expect("sandbox");
    for (method, path) in [
        (reqwest::Method::GET, "counters"),
        (reqwest::Method::GET, "orders"),
        (reqwest::Method::POST, "fail_next"),
        (reqwest::Method::POST, "expire_tokens"),
    ] {
        let answer = reply(
            http()
                .request(method, format!("{}/__sandbox/{path}", sandbox.base_url()))
                .json(&json!({"status": 500}))
                .send()
                .await
                .expect("answer"),
        )
        .await;
        assert_eq!(answer.status, 404, "{path}: {answer:?}");
    }
    // The in-process handle still works, and nothing was scripted.
    assert_eq!(sandbox.counters().faults_injected, 0);
    let session = hand_made_lst(&sandbox, &set, "/v1/api", SANDBOX_CREDENTIAL).await;
    assert!(session.is_ok());
}

#[tokio::test]
async fn every_body_is_bounded() {
    let set = TempSet::new("bodies");
    let sandbox = set.builder().start().await.expect("sandbox");
    let big = "a".repeat(65 * 1024);
    for path in [
        "/oauth2/api/v1/token",
        "/gw/api/v1/sso-sessions",
        "/authorize",
        "/__sandbox/fail_next",
        "/v1/api/iserver/auth/ssodh/init",
        "/v1/portal/iserver/auth/ssodh/init",
    ] {
        let answer = http()
            .post(format!("{}{path}", sandbox.base_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", "Bearer nothing")
            .body(big.clone())
            .send()
            .await
            .expect("answer");
        assert_eq!(answer.status().as_u16(), 413, "{path}");
    }
}

#[tokio::test]
async fn a_socket_message_is_bounded() {
    let (_set, sandbox, session) = oauth1a_session("ws-bound").await;
    let id = session.send(&Call::new("POST", "/tickle")).await.body["session"]
        .as_str()
        .expect("session id")
        .to_owned();
    let url = format!(
        "{}/v1/api/ws?oauth_token={}",
        sandbox.base_url().replacen("http", "ws", 1),
        session.token
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("handshake");
    let waiting = socket.next().await.expect("a message").expect("a frame");
    assert!(
        waiting
            .to_text()
            .unwrap_or_default()
            .contains("waiting for session")
    );
    // A megabyte where a session id belongs: the server closes the socket.
    let huge = json!({ "session": format!("{id}{}", "x".repeat(1 << 20)) }).to_string();
    let _ = socket
        .send(tokio_tungstenite::tungstenite::Message::Text(huge.into()))
        .await;
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
                    break frame.map(|f| u16::from(f.code));
                }
                Some(Ok(other)) => assert!(
                    !other.to_text().unwrap_or_default().contains("system"),
                    "{other:?}"
                ),
                Some(Err(_)) | None => break None,
            }
        }
    })
    .await
    .expect("closed within 5 s");
    assert!(matches!(end, None | Some(1009)), "{end:?}");
    assert_eq!(sandbox.counters().ws_connections, 0);
}

#[cfg(unix)]
mod files {
    use std::os::unix::fs::{PermissionsExt as _, symlink};

    use super::*;

    fn fresh(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ibauth-sandbox-links-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::symlink_metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn a_planted_temp_link_does_not_redirect_the_private_key() {
        let dir = fresh("tmp");
        let victim = fresh("tmp-victim");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(&victim, "precious").expect("victim");
        // The names the old code wrote through, and a guess at the new pattern.
        for name in [
            "private_key.tmp",
            "signature_key.tmp",
            "config.tmp",
            ".private_key.pem.0.tmp",
        ] {
            symlink(&victim, dir.join(name)).expect("link");
        }
        let set = CredentialSet::load_or_create(&dir).expect("the set is written beside the links");
        set.write_config("http://127.0.0.1:1", None)
            .expect("config");
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "precious"
        );
        let key = dir.join("private_key.pem");
        assert!(
            std::fs::symlink_metadata(&key)
                .expect("key")
                .file_type()
                .is_file()
        );
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&dir.join("config.yaml")), 0o600);
        // Nothing of ours is left behind besides the planted links.
        let leftovers: Vec<String> = std::fs::read_dir(&dir)
            .expect("listing")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.ends_with(".tmp")
                    && !std::fs::symlink_metadata(dir.join(n))
                        .is_ok_and(|m| m.file_type().is_symlink())
            })
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&victim);
    }

    #[test]
    fn links_at_the_destinations_are_refused() {
        let victim = fresh("dest-victim");
        std::fs::write(&victim, "precious").expect("victim");
        // A link where the config goes: refused, the target untouched.
        let dir = fresh("dest");
        let set = CredentialSet::load_or_create(&dir).expect("set");
        std::fs::remove_file(dir.join("config.yaml")).ok();
        symlink(&victim, dir.join("config.yaml")).expect("link");
        let err = set
            .write_config("http://127.0.0.1:1", None)
            .expect_err("a link at config.yaml");
        assert!(matches!(err, SandboxError::File { .. }), "{err:?}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "precious"
        );

        // A link where a private key is read: not used, whatever it points at.
        let other = fresh("dest-key");
        std::fs::create_dir_all(&other).expect("dir");
        let planted = fresh("dest-planted.pem");
        std::fs::write(
            &planted,
            ibauth::SigningKey::generate().expect("key").to_pkcs8_pem(),
        )
        .expect("planted key");
        symlink(&planted, other.join("private_key.pem")).expect("link");
        let err = CredentialSet::load_or_create(&other).expect_err("a linked key");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // A folder the sandbox creates is private.
        assert_eq!(mode(&dir), 0o700);
        for path in [&dir, &other] {
            let _ = std::fs::remove_dir_all(path);
        }
        let _ = std::fs::remove_file(&victim);
        let _ = std::fs::remove_file(&planted);
    }
}
