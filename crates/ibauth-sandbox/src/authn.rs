//! Who is calling a `/v1/api` endpoint: a bearer token (OAuth 2.0) or an HMAC-SHA256-signed
//! OAuth 1.0a request, resolved to its SSO session and user. Every authenticated endpoint —
//! the brokerage session and the API alike — goes through here, so all are checked the same way.

use axum::http::HeaderMap;

use crate::oauth1a;
use crate::oauth2::bearer;
use crate::reply::Reject;
use crate::state::State;

/// What authentication needs of a request.
pub(crate) struct Req<'a> {
    pub method: &'a str,
    /// The advertised URL of the request (sandbox base URL + path, no query), which OAuth 1.0a
    /// signs.
    pub url: String,
    pub headers: &'a HeaderMap,
}

/// An authenticated caller.
pub(crate) struct Caller {
    /// The key of its SSO session (the bearer token, or `oauth1a:<access token>`).
    pub session: String,
    /// Its user (IBKR username).
    pub credential: String,
}

/// The live SSO session behind `req`; an expired one is removed with the brokerage session it
/// held.
pub(crate) fn authenticate(state: &mut State, req: &Req<'_>) -> Result<Caller, Reject> {
    let oauth1a = req
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("OAuth "));
    let token = match oauth1a {
        Some(header) => oauth1a::verify_signed_request(state, header, req.method, &req.url)?,
        None => bearer(req.headers)
            .ok_or_else(Reject::unauthenticated)?
            .to_owned(),
    };
    let now = state.now();
    let session = state.sso.get(&token).ok_or_else(Reject::unauthenticated)?;
    if session.expires_at <= now {
        let credential = session.credential.clone();
        state.sso.remove(&token);
        if state.has_bridge(&token, &credential) {
            state.brokerage.remove(&credential);
        }
        return Err(Reject::unauthenticated());
    }
    Ok(Caller {
        session: token,
        credential: session.credential.clone(),
    })
}
