//! The authenticated `/v1/api` endpoints — the brokerage session and the Web API calls — in
//! one pipeline: bounded body, authentication (bearer or OAuth 1.0a signature), pacing, then
//! the endpoint.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, State as AxumState};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::authn::{self, Caller};
use crate::pacing::{self, Arrival};
use crate::paths::api_relative;
use crate::reply::{Reject, answer};
use crate::state::{Shared, State, lock};
use crate::{api, brokerage, ssodh};

/// Largest accepted request body, here and on every other endpoint: a JWT, a token form, an
/// order ticket or `ssodh/init` is far smaller.
pub(crate) const MAX_BODY: usize = 64 * 1024;

/// Serves one authenticated `/v1/api` request.
pub(crate) async fn handler(
    AxumState(s): AxumState<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    arrival: Option<Extension<Arrival>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let arrival = arrival.map_or_else(Instant::now, |Extension(Arrival(at))| at);
    let path = uri.path();
    let endpoint = api_relative(path).unwrap_or(path).trim_start_matches('/');
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        lock(&s).counters.rejections += 1;
        tracing::info!(
            endpoint,
            "sandbox refused a request: body over {MAX_BODY} bytes"
        );
        return Reject::ibkr(413, format!("Payload Too Large: at most {MAX_BODY} bytes"))
            .into_response();
    };
    answer(&s, endpoint, StatusCode::OK, |state| {
        let req = authn::Req {
            method: method.as_str(),
            url: format!("{}{path}", state.base_url),
            headers: &headers,
            query: uri.query(),
            body: &body,
            peer: peer.ip(),
        };
        let caller = authn::authenticate(state, &req)?;
        pacing::check(
            state,
            &caller.credential,
            method.as_str(),
            path,
            peer.ip(),
            arrival,
        )?;
        dispatch(state, &caller, endpoint, &req, arrival)
    })
}

fn dispatch(
    state: &mut State,
    caller: &Caller,
    endpoint: &str,
    req: &authn::Req<'_>,
    arrival: Instant,
) -> Result<Value, Reject> {
    let (query, body) = (req.query, req.body);
    match endpoint {
        "sso/validate" => brokerage::validate(state, caller),
        "iserver/auth/ssodh/init" => {
            let params = ssodh::InitParams::from_request(query, req.content_type(), body)?;
            brokerage::init(state, caller, params)
        }
        "iserver/auth/status" => brokerage::status(state, caller),
        "tickle" => brokerage::tickle(state, caller, arrival),
        "logout" => brokerage::logout(state, caller),
        "iserver/accounts" => api::iserver_accounts(state, caller),
        "portfolio/accounts" => api::portfolio_accounts(state, caller),
        "iserver/marketdata/snapshot" => api::snapshot(state, caller, query),
        "iserver/account/orders" => api::live_orders(state, caller),
        other => match order_account(other) {
            Some(account) => api::place_orders(state, caller, account, body),
            None => Err(Reject::ibkr(404, "Not Found")),
        },
    }
}

/// The `{accountId}` of `iserver/account/{accountId}/orders`.
fn order_account(endpoint: &str) -> Option<&str> {
    endpoint
        .strip_prefix("iserver/account/")?
        .strip_suffix("/orders")
        .filter(|account| !account.is_empty() && !account.contains('/'))
}
