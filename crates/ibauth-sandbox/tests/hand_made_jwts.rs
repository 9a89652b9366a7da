//! Hand-made requests to the sandbox's OAuth endpoints, bypassing the library's JWT code: the
//! token endpoint (`POST /oauth2/api/v1/token`, form body as in the spec) and the SSO-session
//! endpoint (`POST /gw/api/v1/sso-sessions`, body = JWT-B). Each JWT is assembled byte by byte
//! here and signed with `SigningKey::sign_sha256` (RSASSA-PKCS1-v1_5 SHA-256), so the tests can
//! send what a correct client never would: `alg: none`, HS256, replays, tampered payloads.
//! Every refusal must be `application/problem+json` whose `status` is the HTTP status.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{CLIENT_ID, KID, LOCALHOST, T0, USER, clock, http, key, sandbox};
use ibauth::secrecy::{ExposeSecret, SecretString};
use ibauth_sandbox::{Counters, Sandbox};
use serde_json::{Value, json};

const FORM: &str = "application/x-www-form-urlencoded";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The JOSE header as the spec has it, with `alg` and `kid` free.
fn header(alg: &str, kid: &str) -> String {
    format!(r#"{{"alg":"{alg}","kid":"{kid}","typ":"JWT"}}"#)
}

/// JWT-A's claims in the spec's order, with `exp`/`iat` free.
fn claims(iss: &str, sub: &str, aud: &str, exp: u64, iat: u64) -> String {
    format!(r#"{{"iss":"{iss}","sub":"{sub}","aud":"{aud}","exp":{exp},"iat":{iat}}}"#)
}

/// The spec's JWT-A at `now`: `exp` = now + 20, `iat` = now − 10.
fn spec_claims(now: u64) -> String {
    claims(CLIENT_ID, CLIENT_ID, "/token", now + 20, now - 10)
}

/// `b64(header).b64(claims)`.
fn signing_input(header: &str, claims: &str) -> String {
    format!("{}.{}", b64(header), b64(claims))
}

/// A compact JWS signed RS256 with the registered key.
fn rs256(header: &str, claims: &str) -> String {
    let input = signing_input(header, claims);
    let signature = key().sign_sha256(input.as_bytes());
    assert_eq!(signature.len(), 256);
    format!("{input}.{}", b64(signature))
}

/// The token request's form body, fields in the spec's order.
fn form(grant_type: &str, assertion: &str, assertion_type: &str, scope: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", grant_type)
        .append_pair("client_assertion", assertion)
        .append_pair("client_assertion_type", assertion_type)
        .append_pair("scope", scope)
        .finish()
}

fn token_form(assertion: &str) -> String {
    form(
        "client_credentials",
        assertion,
        ASSERTION_TYPE,
        "sso-sessions.write",
    )
}

/// A complete answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

async fn post(
    url: &str,
    content_type: Option<&str>,
    authorization: Option<&str>,
    body: String,
) -> Answer {
    let http = http();
    let mut request = http.reqwest().post(url).body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    if let Some(auth) = authorization {
        request = request.header("authorization", auth);
    }
    let response = request.send().await.expect("the sandbox answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    Answer {
        status,
        content_type,
        body,
    }
}

/// POSTs a form to the token endpoint.
async fn post_token(sandbox: &Sandbox, body: String) -> Answer {
    post_token_as(sandbox, Some(FORM), body).await
}

async fn post_token_as(sandbox: &Sandbox, content_type: Option<&str>, body: String) -> Answer {
    let url = format!("{}/oauth2/api/v1/token", sandbox.base_url());
    post(&url, content_type, None, body).await
}

/// POSTs a JWT-B to the SSO-session endpoint with `access` as the bearer.
async fn post_sso(sandbox: &Sandbox, access: &str, content_type: &str, jwt: String) -> Answer {
    let url = format!("{}/gw/api/v1/sso-sessions", sandbox.base_url());
    post(
        &url,
        Some(content_type),
        Some(&format!("Bearer {access}")),
        jwt,
    )
    .await
}

/// Checks a successful token answer and returns the access token.
#[track_caller]
fn assert_token(answer: &Answer) -> String {
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.content_type, "application/json");
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(answer.body["scope"], "sso-sessions.write");
    assert_eq!(answer.body["expires_in"], 86_399);
    let token = answer.body["access_token"].as_str().unwrap();
    assert_eq!(token.len(), 64);
    token.to_owned()
}

/// Checks a problem+json refusal: status, content type, body shape, and the detail.
#[track_caller]
fn assert_problem(answer: &Answer, status: u16, detail: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(
        answer.content_type, "application/problem+json",
        "{answer:?}"
    );
    let body = &answer.body;
    assert_eq!(body["status"], status, "{answer:?}");
    assert_eq!(body["type"], "about:blank");
    let title = match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        415 => "Unsupported Media Type",
        _ => unreachable!(),
    };
    assert_eq!(body["title"], title);
    assert_eq!(body["detail"], detail, "{answer:?}");
    assert_eq!(body.as_object().unwrap().len(), 4, "{answer:?}");
}

#[tokio::test]
async fn the_spec_shaped_assertion_matches_the_library_and_is_accepted() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let assertion = rs256(&header("RS256", KID), &spec_claims(T0));

    // The library signs exactly these bytes without its jti, and sends exactly this form.
    let library = ibauth::oauth2::client_assertion_with_jti(&key(), KID, CLIENT_ID, T0, None);
    assert_eq!(library.expose_secret(), assertion);
    let library_form = ibauth::oauth2::token_request_body(&SecretString::from(assertion.clone()));
    assert_eq!(library_form.expose_secret(), token_form(&assertion));

    let token = assert_token(&post_token(&sandbox, token_form(&assertion)).await);
    assert_eq!(sandbox.issued_tokens(), vec![token]);
    assert_eq!(sandbox.counters().access_tokens, 1);
}

#[tokio::test]
async fn alg_none_with_an_empty_signature_is_refused() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    for kid in [KID, ""] {
        let unsigned = format!("{}.", signing_input(&header("none", kid), &spec_claims(T0)));
        let answer = post_token(&sandbox, token_form(&unsigned)).await;
        assert_problem(
            &answer,
            401,
            "invalid_client: unsupported alg `none`: only RS256 is accepted",
        );
    }
    assert_eq!(
        sandbox.counters(),
        Counters {
            rejections: 2,
            ..Counters::default()
        }
    );
}

#[tokio::test]
async fn hs256_keyed_with_the_public_key_is_refused() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    // The classic key-confusion forgery: HMAC keyed with the (public) registered key.
    for secret in [key().public_key_der(), key().public_key_pem().into_bytes()] {
        let input = signing_input(&header("HS256", KID), &spec_claims(T0));
        let mac_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
        let tag = aws_lc_rs::hmac::sign(&mac_key, input.as_bytes());
        let forged = format!("{input}.{}", b64(tag.as_ref()));
        let answer = post_token(&sandbox, token_form(&forged)).await;
        assert_problem(
            &answer,
            401,
            "invalid_client: unsupported alg `HS256`: only RS256 is accepted",
        );
    }
    assert_eq!(sandbox.counters().access_tokens, 0);
}

#[tokio::test]
async fn an_assertion_with_a_jti_is_accepted_once_then_refused_as_replayed() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let with_jti = |jti: &str| {
        format!(
            r#"{{"iss":"{CLIENT_ID}","sub":"{CLIENT_ID}","aud":"/token","exp":{},"iat":{},"jti":"{jti}"}}"#,
            T0 + 20,
            T0 - 10
        )
    };
    let assertion = rs256(&header("RS256", KID), &with_jti("4f1c-one"));

    assert_token(&post_token(&sandbox, token_form(&assertion)).await);
    let replay = post_token(&sandbox, token_form(&assertion)).await;
    assert_problem(
        &replay,
        401,
        "invalid_client: client assertion replayed (jti seen before)",
    );
    // Still refused a little later, while the assertion itself is still valid.
    clock.advance(15);
    let replay = post_token(&sandbox, token_form(&assertion)).await;
    assert_eq!(replay.status, 401);
    // Another jti is fine.
    let other = rs256(&header("RS256", KID), &with_jti("4f1c-two"));
    assert_token(&post_token(&sandbox, token_form(&other)).await);

    assert_eq!(
        sandbox.counters(),
        Counters {
            access_tokens: 2,
            rejections: 2,
            ..Counters::default()
        }
    );
}

#[tokio::test]
async fn an_assertion_without_jti_is_accepted_once_then_refused_as_replayed() {
    // IBKR's own OAuth 2.0 sample sends no jti: its assertion works, once. The same bytes
    // again are a replay (RFC 7523 §3), whoever sends them.
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let assertion = rs256(&header("RS256", KID), &spec_claims(T0));
    assert_token(&post_token(&sandbox, token_form(&assertion)).await);
    let replay = post_token(&sandbox, token_form(&assertion)).await;
    assert_problem(
        &replay,
        401,
        "invalid_client: client assertion replayed (the same assertion was used before; add a unique jti)",
    );
    // Another second gives other bytes: accepted.
    let next = rs256(&header("RS256", KID), &spec_claims(T0 + 1));
    clock.advance(1);
    assert_token(&post_token(&sandbox, token_form(&next)).await);
    // The library's own assertions carry a fresh jti: two in the same second both work.
    for _ in 0..2 {
        let library = ibauth::oauth2::client_assertion(&key(), KID, CLIENT_ID, T0 + 1);
        assert_token(&post_token(&sandbox, token_form(library.expose_secret())).await);
    }
    assert_eq!(sandbox.counters().access_tokens, 4);
    assert_eq!(sandbox.counters().rejections, 1);
}

#[tokio::test]
async fn a_wrong_audience_is_refused() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    for aud in ["/wrong", "https://api.ibkr.com/oauth2/api/v1/token", ""] {
        let assertion = rs256(
            &header("RS256", KID),
            &claims(CLIENT_ID, CLIENT_ID, aud, T0 + 20, T0 - 10),
        );
        let answer = post_token(&sandbox, token_form(&assertion)).await;
        assert_problem(&answer, 401, "invalid_client: aud must be \"/token\"");
    }
    // An audience list is fine if it holds "/token" (RFC 7523), not otherwise.
    let list = |aud: &str| {
        format!(
            r#"{{"iss":"{CLIENT_ID}","sub":"{CLIENT_ID}","aud":{aud},"exp":{},"iat":{}}}"#,
            T0 + 20,
            T0 - 10
        )
    };
    let with_token = rs256(&header("RS256", KID), &list(r#"["other","/token"]"#));
    assert_token(&post_token(&sandbox, token_form(&with_token)).await);
    let without = rs256(&header("RS256", KID), &list(r#"["other"]"#));
    let answer = post_token(&sandbox, token_form(&without)).await;
    assert_problem(&answer, 401, "invalid_client: aud must be \"/token\"");
}

#[tokio::test]
async fn an_assertion_living_too_long_is_refused() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let signed = |lifetime: u64| {
        rs256(
            &header("RS256", KID),
            &claims(CLIENT_ID, CLIENT_ID, "/token", T0 - 10 + lifetime, T0 - 10),
        )
    };
    let answer = post_token(&sandbox, token_form(&signed(3600))).await;
    assert_problem(
        &answer,
        401,
        "invalid_client: client assertion lifetime too long",
    );
    // The limit is 300 s (Lifetimes::default().max_assertion_lifetime).
    let answer = post_token(&sandbox, token_form(&signed(301))).await;
    assert_eq!(answer.status, 401);
    assert_token(&post_token(&sandbox, token_form(&signed(300))).await);

    // exp not after iat.
    let answer = post_token(&sandbox, token_form(&signed(0))).await;
    assert_problem(&answer, 401, "client assertion exp is not after iat");
}

#[tokio::test]
async fn iss_and_sub_must_both_be_the_client_id() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    for (iss, sub) in [(CLIENT_ID, "SOMEONE"), (CLIENT_ID, ""), (CLIENT_ID, USER)] {
        let assertion = rs256(
            &header("RS256", KID),
            &claims(iss, sub, "/token", T0 + 20, T0 - 10),
        );
        let answer = post_token(&sandbox, token_form(&assertion)).await;
        assert_problem(
            &answer,
            401,
            "invalid_client: iss and sub must both be the client_id",
        );
    }
    // Without iss the sandbox cannot even tell whose key to use.
    let assertion = rs256(
        &header("RS256", KID),
        &format!(
            r#"{{"sub":"{CLIENT_ID}","aud":"/token","exp":{},"iat":{}}}"#,
            T0 + 20,
            T0 - 10
        ),
    );
    let answer = post_token(&sandbox, token_form(&assertion)).await;
    assert_problem(&answer, 401, "invalid_client: assertion has no iss");
    assert_eq!(sandbox.counters().access_tokens, 0);
}

#[tokio::test]
async fn a_tampered_payload_fails_the_signature() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let header = header("RS256", KID);
    let genuine = rs256(&header, &spec_claims(T0));
    let signature = genuine.rsplit('.').next().unwrap();
    // Same signature, payload changed to live an hour longer.
    let tampered_claims = claims(CLIENT_ID, CLIENT_ID, "/token", T0 + 3590, T0 - 10);
    let tampered = format!("{}.{signature}", signing_input(&header, &tampered_claims));
    let answer = post_token(&sandbox, token_form(&tampered)).await;
    assert_problem(
        &answer,
        401,
        "invalid_client: signature does not verify with the key registered for kid `main`",
    );
    // One flipped bit in the signature is just as bad.
    let mut sig = URL_SAFE_NO_PAD.decode(signature).unwrap();
    sig[100] ^= 1;
    let flipped = format!("{}.{}", signing_input(&header, &spec_claims(T0)), b64(&sig));
    let answer = post_token(&sandbox, token_form(&flipped)).await;
    assert_eq!(answer.status, 401);
    // The genuine one still works.
    assert_token(&post_token(&sandbox, token_form(&genuine)).await);
}

#[tokio::test]
async fn malformed_and_kidless_jwts_are_refused() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let genuine = rs256(&header("RS256", KID), &spec_claims(T0));
    let two_parts = genuine.rsplit_once('.').unwrap().0.to_owned();
    let cases = [
        (
            two_parts,
            "invalid_client: malformed JWT: expected three dot-separated parts",
        ),
        (
            format!("{genuine}.extra"),
            "invalid_client: malformed JWT: expected three dot-separated parts",
        ),
        (
            format!("!!!.{}", genuine.split_once('.').unwrap().1),
            "invalid_client: malformed JWT: header is not base64url",
        ),
        (
            rs256(r#"{"alg":"RS256","typ":"JWT"}"#, &spec_claims(T0)),
            "invalid_client: JWT header has no kid",
        ),
        (
            rs256(&header("RS256", ""), &spec_claims(T0)),
            "invalid_client: JWT header has no kid",
        ),
    ];
    for (assertion, detail) in cases {
        let answer = post_token(&sandbox, token_form(&assertion)).await;
        assert_problem(&answer, 401, detail);
    }
    let answer = post_token(&sandbox, "grant_type=client_credentials&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&scope=sso-sessions.write".into()).await;
    assert_problem(&answer, 400, "invalid_request: client_assertion missing");
}

#[tokio::test]
async fn a_wrong_grant_type_scope_or_assertion_type_is_400() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let a = rs256(&header("RS256", KID), &spec_claims(T0));
    let cases = [
        (
            form("password", &a, ASSERTION_TYPE, "sso-sessions.write"),
            "unsupported_grant_type: expected client_credentials",
        ),
        (
            form("", &a, ASSERTION_TYPE, "sso-sessions.write"),
            "unsupported_grant_type: expected client_credentials",
        ),
        (
            form("client_credentials", &a, ASSERTION_TYPE, "openid"),
            "invalid_scope: expected sso-sessions.write",
        ),
        (
            form("client_credentials", &a, ASSERTION_TYPE, ""),
            "invalid_scope: expected sso-sessions.write",
        ),
        (
            form(
                "client_credentials",
                &a,
                "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
                "sso-sessions.write",
            ),
            "invalid_request: wrong client_assertion_type",
        ),
    ];
    for (body, detail) in cases {
        assert_problem(&post_token(&sandbox, body).await, 400, detail);
    }
    // Extra scopes next to the required one are fine.
    let body = form(
        "client_credentials",
        &a,
        ASSERTION_TYPE,
        "openid sso-sessions.write",
    );
    assert_token(&post_token(&sandbox, body).await);
    assert_eq!(sandbox.counters().rejections, 5);
}

#[tokio::test]
async fn a_token_request_that_is_not_a_form_is_415() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let a = rs256(&header("RS256", KID), &spec_claims(T0));
    let as_json = json!({
        "grant_type": "client_credentials",
        "client_assertion": a,
        "client_assertion_type": ASSERTION_TYPE,
        "scope": "sso-sessions.write",
    })
    .to_string();
    for (content_type, body) in [
        (Some("application/json"), as_json),
        (Some("text/plain"), token_form(&a)),
        (None, token_form(&a)),
    ] {
        let answer = post_token_as(&sandbox, content_type, body).await;
        assert_problem(&answer, 415, "expected application/x-www-form-urlencoded");
    }
    // A charset parameter is fine.
    let answer = post_token_as(
        &sandbox,
        Some("application/x-www-form-urlencoded; charset=utf-8"),
        token_form(&a),
    )
    .await;
    assert_token(&answer);
}

/// JWT-B's claims in the spec's order.
fn sso_claims(ip: &str, credential: &str, iss: &str, exp: u64, iat: u64) -> String {
    format!(r#"{{"ip":"{ip}","credential":"{credential}","iss":"{iss}","exp":{exp},"iat":{iat}}}"#)
}

#[tokio::test]
async fn the_sso_session_endpoint_verifies_jwt_b() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let assertion = rs256(&header("RS256", KID), &spec_claims(T0));
    let access = assert_token(&post_token(&sandbox, token_form(&assertion)).await);
    let jwt = |claims: &str| rs256(&header("RS256", KID), claims);
    let good = jwt(&sso_claims("127.0.0.1", USER, CLIENT_ID, T0 + 86_400, T0));

    // The library's JWT-B without its jti is byte for byte the spec's.
    let library = ibauth::oauth2::sso_session_request_with_jti(
        &key(),
        KID,
        CLIENT_ID,
        &SecretString::from(USER),
        LOCALHOST,
        T0,
        None,
    );
    assert_eq!(library.expose_secret(), good);

    let refusals = [
        (
            post_sso(&sandbox, &access, "application/json", good.clone()).await,
            415,
            "expected application/jwt",
        ),
        (
            post_sso(&sandbox, "not-a-token", "application/jwt", good.clone()).await,
            401,
            "invalid access token",
        ),
        (
            post_sso(
                &sandbox,
                &access,
                "application/jwt",
                format!(
                    "{}.",
                    signing_input(
                        &header("none", KID),
                        &sso_claims("127.0.0.1", USER, CLIENT_ID, T0 + 60, T0)
                    )
                ),
            )
            .await,
            401,
            "unsupported alg `none`: only RS256 is accepted",
        ),
        (
            post_sso(
                &sandbox,
                &access,
                "application/jwt",
                jwt(&sso_claims("127.0.0.1", USER, "SOMEONE", T0 + 60, T0)),
            )
            .await,
            401,
            "iss must be the client_id of the access token",
        ),
        (
            post_sso(
                &sandbox,
                &access,
                "application/jwt",
                jwt(&sso_claims("::1", USER, CLIENT_ID, T0 + 60, T0)),
            )
            .await,
            400,
            "ip claim is not an IPv4 address",
        ),
        (
            post_sso(
                &sandbox,
                &access,
                "application/jwt",
                jwt(&sso_claims("127.0.0.2", USER, CLIENT_ID, T0 + 60, T0)),
            )
            .await,
            403,
            "ip claim 127.0.0.2 does not match the request's source address 127.0.0.1",
        ),
    ];
    let refused = refusals.len() as u64;
    for (answer, status, detail) in refusals {
        assert_problem(&answer, status, detail);
    }
    // Without any Authorization header.
    let url = format!("{}/gw/api/v1/sso-sessions", sandbox.base_url());
    let answer = post(&url, Some("application/jwt"), None, good.clone()).await;
    assert_problem(&answer, 401, "access token required");

    let answer = post_sso(&sandbox, &access, "application/jwt", good).await;
    // 200 with {access_token, active, token_type}, as IBKR answers.
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["active"], true);
    assert_eq!(answer.body["token_type"], "Bearer");
    assert_eq!(
        answer.body.as_object().map(|o| o.len()),
        Some(3),
        "{answer:?}"
    );
    let bearer = answer.body["access_token"].as_str().unwrap();
    assert_ne!(bearer, access);
    assert_eq!(
        sandbox.flags_for_bearer(bearer),
        Some(ibauth_sandbox::Flags {
            authenticated: false,
            competing: false,
            connected: false,
        })
    );
    assert_eq!(
        sandbox.counters(),
        Counters {
            access_tokens: 1,
            sso_sessions: 1,
            rejections: refused + 1,
            ..Counters::default()
        }
    );
}

/// An `exp` near `u64::MAX` must be refused (expired or too long), not crash the handler.
///
/// Ignored until the sandbox is fixed: `check_window` in `crates/ibauth-sandbox/src/oauth2.rs`
/// computes `exp + skew` without overflow checks, which panics in debug builds (the connection
/// is dropped with no answer) and wraps to a small number in release builds.
#[tokio::test]
async fn an_exp_at_the_end_of_time_is_refused_not_a_crash() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let assertion = rs256(
        &header("RS256", KID),
        &claims(CLIENT_ID, CLIENT_ID, "/token", u64::MAX, T0 - 10),
    );
    let answer = post_token(&sandbox, token_form(&assertion)).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.content_type, "application/problem+json");
    assert_eq!(sandbox.counters().access_tokens, 0);
}
