//! The login steps of `demo`, each timed and reported: the low-level clients step by step, to
//! show what a session does for you.

use std::time::Instant;

use ibauth::oauth1a::Oauth1aClient;
use ibauth::{AuthStatus, Client, Error, Oauth2Client};
use serde_json::json;

use crate::render::{Out, flags, flags_json};

/// Access token → SSO session → validate, each reported.
pub async fn sign_in(client: &mut Oauth2Client, out: Out) -> Result<(), Error> {
    let t = Instant::now();
    let access = client.request_access_token().await?;
    let expires_in = access
        .expires_at
        .map(|e| e.saturating_sub(access.obtained_at));
    out.step(
        "access_token",
        t.elapsed(),
        &match expires_in {
            Some(s) => format!("POST /oauth2/api/v1/token, expires in {s} s"),
            None => "POST /oauth2/api/v1/token".to_owned(),
        },
        json!({ "expires_in": expires_in }),
    );

    let t = Instant::now();
    let bearer = client.create_sso_session().await?;
    let ip = bearer.ip;
    out.step(
        "sso_session",
        t.elapsed(),
        &format!("POST /gw/api/v1/sso-sessions, bound to {ip}"),
        json!({ "ip": ip.to_string() }),
    );

    let t = Instant::now();
    let validation = client.validate().await?;
    let expires = validation.expires_in().map(|d| d.as_secs());
    out.step(
        "validate",
        t.elapsed(),
        // USER_NAME is the credential, which is a secret: show the numeric user id.
        &format!(
            "GET /v1/api/sso/validate, user id {}, expires in {} s",
            validation.user_id.map_or("?".to_owned(), |id| id.to_string()),
            expires.map_or("?".to_owned(), |s| s.to_string())
        ),
        json!({ "user_id": validation.user_id, "result": validation.result, "expires_in": expires }),
    );
    Ok(())
}

/// `ssodh/init`, reported.
pub async fn init(client: &mut impl Client, out: Out, compete: bool) -> Result<AuthStatus, Error> {
    let t = Instant::now();
    let status = client.init(compete).await?;
    out.step(
        "ssodh_init",
        t.elapsed(),
        &format!("POST /v1/api/iserver/auth/ssodh/init, {}", flags(&status)),
        flags_json(&status),
    );
    Ok(status)
}

/// The OAuth 1.0a live session token, reported.
pub async fn live_session_token(client: &mut Oauth1aClient, out: Out) -> Result<(), Error> {
    let t = Instant::now();
    let lst = client.request_live_session_token().await?;
    out.step(
        "live_session_token",
        t.elapsed(),
        "POST /v1/api/oauth/live_session_token, Diffie-Hellman, validated",
        json!({ "expires_at_ms": lst.expires_at_ms }),
    );
    Ok(())
}

/// One tickle, reported; the flags and the session id.
pub async fn tickle(
    client: &mut impl Client,
    out: Out,
    nth: Option<(u32, u32)>,
) -> Result<(AuthStatus, String), Error> {
    let t = Instant::now();
    let tickle = client.tickle().await?;
    crate::render::tickle(out, &tickle, t.elapsed(), nth);
    Ok((tickle.auth_status().clone(), tickle.session))
}

/// Logout, reported.
pub async fn logout(client: &mut impl Client, out: Out) -> Result<(), Error> {
    let t = Instant::now();
    let logout = client.logout().await?;
    out.step(
        "logout",
        t.elapsed(),
        if logout.already_gone {
            "POST /v1/api/logout, session was already gone"
        } else {
            "POST /v1/api/logout"
        },
        json!({ "status": logout.status, "already_gone": logout.already_gone }),
    );
    Ok(())
}
