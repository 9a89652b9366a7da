//! Who is calling a REST API endpoint (`/v1/api` or `/v1/portal`): a bearer token (OAuth 2.0) or an HMAC-SHA256-signed
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
    /// The query string, if any.
    pub query: Option<&'a str>,
    /// The body (bounded by the caller).
    pub body: &'a [u8],
}

impl Req<'_> {
    /// The `Content-Type` header, if readable.
    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
    }

    /// Query and form-body parameters, decoded: what IBKR's guide includes in the signed
    /// parameter list.
    fn request_params(&self) -> Vec<(String, String)> {
        let form_body = self.content_type().is_some_and(|t| {
            t.trim()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
        let query = self.query.unwrap_or("").as_bytes();
        let body: &[u8] = if form_body { self.body } else { b"" };
        url::form_urlencoded::parse(query)
            .chain(url::form_urlencoded::parse(body))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
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
        Some(header) => oauth1a::verify_signed_request(
            state,
            header,
            req.method,
            &req.url,
            &req.request_params(),
        )?,
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
