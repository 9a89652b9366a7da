//! Who is calling a REST API endpoint (`/v1/api` or `/v1/portal`): a bearer token (OAuth 2.0) or an HMAC-SHA256-signed
//! OAuth 1.0a request, resolved to its SSO session and user. Every authenticated endpoint —
//! the brokerage session and the API alike — goes through here, so all are checked the same way.

use std::net::IpAddr;

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
    /// The address the request came from.
    pub peer: IpAddr,
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
    /// The address the request came from.
    pub peer: IpAddr,
}

/// The live SSO session behind `req`; an expired one is removed with the brokerage session it
/// held. A bearer token is only accepted from the address its SSO session was opened for.
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
    let credential = session.credential.clone();
    if oauth1a.is_none() {
        check_bound_ip(state, &token, req.peer)?;
    }
    Ok(Caller {
        session: token,
        credential,
        peer: req.peer,
    })
}

/// Refuses the bearer token `key` of a live SSO session when `peer` is not the address the
/// session was opened for, as IBKR binds an OAuth 2.0 SSO session to the `ip` of its JWT
/// (an OAuth 1.0a live session token works from any host, so only bearers come here). The
/// refusal is IBKR's plain 401, which tells the caller nothing about why; the sandbox counts
/// it in `ip_mismatches` and logs it. The session itself stays usable from its own address.
pub(crate) fn check_bound_ip(state: &mut State, key: &str, peer: IpAddr) -> Result<(), Reject> {
    if !state.bind_sso_ip {
        return Ok(());
    }
    let Some(session) = state.sso.get(key) else {
        return Err(Reject::unauthenticated());
    };
    // An IPv4 peer may arrive as an IPv6-mapped address on a dual-stack socket.
    if peer.to_canonical() == IpAddr::V4(session.ip) {
        return Ok(());
    }
    let (bound, credential) = (session.ip, session.credential.clone());
    state.counters.ip_mismatches += 1;
    state.activity.user(&credential).ip_mismatches += 1;
    tracing::info!(
        %bound,
        peer = %peer.to_canonical(),
        "sandbox refused a bearer token used from another address than its SSO session's"
    );
    Err(Reject::unauthenticated())
}
