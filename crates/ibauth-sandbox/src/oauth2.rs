//! `POST /oauth2/api/v1/token` and `POST /gw/api/v1/sso-sessions`, verified for real.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::jwt;
use crate::reply::Reject;
use crate::state::{AccessGrant, SsoSession, State, random_hex};

const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    aud: Value,
    exp: u64,
    iat: u64,
    #[serde(default)]
    jti: Option<String>,
}

#[derive(Deserialize)]
struct SsoClaims {
    ip: String,
    credential: String,
    iss: String,
    exp: u64,
    iat: u64,
    #[serde(default)]
    jti: Option<String>,
}

#[derive(Deserialize)]
struct IssuerOnly {
    #[serde(default)]
    iss: Option<String>,
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// What identifies one verified JWT for replay detection: its `jti` for its issuer or,
/// without one, its exact bytes. Hashed, so a long `jti` costs no more memory than a short one.
fn replay_key(kind: &str, issuer: &str, jti: Option<&str>, token: &str) -> String {
    let identity = match jti {
        Some(jti) => format!("{kind}\0{issuer}\0jti\0{jti}"),
        None => format!("{kind}\0{issuer}\0bytes\0{}", token.trim()),
    };
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, identity.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks `iat`/`exp` against the clock, with skew.
fn check_window(state: &State, iat: u64, exp: u64, what: &str) -> Result<(), Reject> {
    let now = state.now();
    let skew = state.lifetimes.clock_skew.as_secs();
    if exp.saturating_add(skew) < now {
        return Err(Reject::problem(401, format!("{what} expired")));
    }
    if iat > now.saturating_add(skew) {
        return Err(Reject::problem(
            401,
            format!("{what} issued in the future (iat); check the clock"),
        ));
    }
    if exp <= iat {
        return Err(Reject::problem(401, format!("{what} exp is not after iat")));
    }
    Ok(())
}

/// The token endpoint: verifies the client assertion and issues an access token.
pub(crate) fn token(state: &mut State, headers: &HeaderMap, body: &[u8]) -> Result<Value, Reject> {
    if !content_type(headers).starts_with("application/x-www-form-urlencoded") {
        return Err(Reject::problem(
            415,
            "expected application/x-www-form-urlencoded",
        ));
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    if field("grant_type") != "client_credentials" {
        return Err(Reject::problem(
            400,
            "unsupported_grant_type: expected client_credentials",
        ));
    }
    if field("client_assertion_type") != CLIENT_ASSERTION_TYPE {
        return Err(Reject::problem(
            400,
            "invalid_request: wrong client_assertion_type",
        ));
    }
    if !field("scope").split(' ').any(|s| s == "sso-sessions.write") {
        return Err(Reject::problem(
            400,
            "invalid_scope: expected sso-sessions.write",
        ));
    }
    let assertion = form
        .get("client_assertion")
        .ok_or_else(|| Reject::problem(400, "invalid_request: client_assertion missing"))?;
    let unverified =
        jwt::parse(assertion).map_err(|e| Reject::problem(401, format!("invalid_client: {e}")))?;
    let issuer: IssuerOnly = unverified.peek().unwrap_or(IssuerOnly { iss: None });
    let client_id = issuer
        .iss
        .ok_or_else(|| Reject::problem(401, "invalid_client: assertion has no iss"))?;
    let client = state
        .clients
        .get(&client_id)
        .ok_or_else(|| Reject::problem(401, "invalid_client: unknown client_id"))?;
    let key = client.keys.get(&unverified.kid).ok_or_else(|| {
        Reject::problem(
            401,
            format!("invalid_client: unknown kid `{}`", unverified.kid),
        )
    })?;
    let claims: AssertionClaims = unverified
        .verify(key)
        .map_err(|e| Reject::problem(401, format!("invalid_client: {e}")))?;
    if claims.iss != client_id || claims.sub != client_id {
        return Err(Reject::problem(
            401,
            "invalid_client: iss and sub must both be the client_id",
        ));
    }
    let aud_ok = match &claims.aud {
        Value::String(a) => a == "/token",
        Value::Array(list) => list.iter().any(|a| a.as_str() == Some("/token")),
        _ => false,
    };
    if !aud_ok {
        return Err(Reject::problem(
            401,
            "invalid_client: aud must be \"/token\"",
        ));
    }
    check_window(state, claims.iat, claims.exp, "client assertion")?;
    if claims.exp - claims.iat > state.lifetimes.max_assertion_lifetime.as_secs() {
        return Err(Reject::problem(
            401,
            "invalid_client: client assertion lifetime too long",
        ));
    }
    // RFC 7523 §3: an assertion is used once. Without a `jti` (IBKR's own sample sends none)
    // its exact bytes are what must not come again.
    if !state.remember_jti(
        &replay_key("assertion", &client_id, claims.jti.as_deref(), assertion),
        claims.exp,
    ) {
        let what = if claims.jti.is_some() {
            "jti seen before"
        } else {
            "the same assertion was used before; add a unique jti"
        };
        return Err(Reject::problem(
            401,
            format!("invalid_client: client assertion replayed ({what})"),
        ));
    }
    let ttl = state.lifetimes.access_token.as_secs();
    let token = state.issue(32);
    let expires_at = state.now() + ttl;
    state.access.insert(
        token.clone(),
        AccessGrant {
            client_id,
            expires_at,
        },
    );
    state.counters.access_tokens += 1;
    Ok(json!({
        "access_token": token,
        "token_type": "Bearer",
        "scope": "sso-sessions.write",
        "expires_in": ttl,
    }))
}

/// The SSO-session endpoint: access token + JWT-B bound to the caller's IP → bearer token.
pub(crate) fn sso_session(
    state: &mut State,
    headers: &HeaderMap,
    body: &[u8],
    peer: IpAddr,
) -> Result<Value, Reject> {
    let now = state.now();
    let access = bearer(headers).ok_or_else(|| Reject::problem(401, "access token required"))?;
    let grant = state
        .access
        .get(access)
        .ok_or_else(|| Reject::problem(401, "invalid access token"))?;
    if grant.expires_at <= now {
        return Err(Reject::problem(401, "access token expired"));
    }
    let client_id = grant.client_id.clone();
    if !content_type(headers).starts_with("application/jwt") {
        return Err(Reject::problem(415, "expected application/jwt"));
    }
    let text = std::str::from_utf8(body).map_err(|_| Reject::problem(400, "body is not a JWT"))?;
    let unverified = jwt::parse(text).map_err(|e| Reject::problem(401, e.to_string()))?;
    let client = state
        .clients
        .get(&client_id)
        .ok_or_else(|| Reject::problem(401, "client no longer registered"))?;
    let key = client
        .keys
        .get(&unverified.kid)
        .ok_or_else(|| Reject::problem(401, format!("unknown kid `{}`", unverified.kid)))?;
    let claims: SsoClaims = unverified
        .verify(key)
        .map_err(|e| Reject::problem(401, e.to_string()))?;
    if claims.iss != client_id {
        return Err(Reject::problem(
            401,
            "iss must be the client_id of the access token",
        ));
    }
    if !client.credentials.contains(&claims.credential) {
        return Err(Reject::problem(401, "unknown credential for this client"));
    }
    check_window(state, claims.iat, claims.exp, "SSO session request")?;
    // Clients ask for 24 hours; a request valid for longer would be a standing credential.
    let longest = state
        .lifetimes
        .max_sso_request_lifetime
        .as_secs()
        .saturating_add(state.lifetimes.clock_skew.as_secs());
    if claims.exp - claims.iat > longest {
        return Err(Reject::problem(
            401,
            format!("SSO session request lifetime too long (exp - iat over {longest} s)"),
        ));
    }
    let peer = match peer {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => ip.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    };
    let claimed: Ipv4Addr = claims
        .ip
        .parse()
        .map_err(|_| Reject::problem(400, "ip claim is not an IPv4 address"))?;
    if claimed != peer {
        return Err(Reject::problem(
            403,
            format!("ip claim {claimed} does not match the request's source address {peer}"),
        ));
    }
    if !state.remember_jti(
        &replay_key("sso", &client_id, claims.jti.as_deref(), text),
        claims.exp,
    ) {
        return Err(Reject::problem(
            401,
            "SSO session request replayed (the same jti, or the same JWT without one, was used before)",
        ));
    }
    let bearer = state.issue(32);
    let expires_at = claims
        .exp
        .min(now.saturating_add(state.lifetimes.sso_session.as_secs()));
    let paper = state.paper_users.contains(&claims.credential);
    let credential = claims.credential;
    state.sso.insert(
        bearer.clone(),
        SsoSession {
            client_id,
            credential: credential.clone(),
            ip: claimed,
            session_id: random_hex(16),
            created_at: now,
            expires_at,
            paper,
        },
    );
    state.counters.sso_sessions += 1;
    state.note_session_opened(&credential, &bearer);
    state.activity.user(&credential).logins_oauth2 += 1;
    Ok(json!({ "access_token": bearer, "active": true, "token_type": "Bearer" }))
}
