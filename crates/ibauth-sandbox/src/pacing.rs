//! Pacing over HTTP: the arrival stamp on every request, the penalty box in front of
//! `/v1/api`, and the check an authenticated endpoint makes before serving. The limits and the
//! windows are in `state::pacing`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State as AxumState};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::paths::api_relative;
use crate::reply::Reject;
use crate::state::{Shared, State, lock};

/// When a request reached the sandbox, on the monotonic clock, before any fault delay or lock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival(pub Instant);

/// Stamps every request with its [`Arrival`].
pub(crate) async fn stamp_arrival(mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(Arrival(Instant::now()));
    next.run(request).await
}

/// Refuses every `/v1/api` request from an address in the penalty box, before anything else
/// looks at it.
pub(crate) async fn penalty_box(
    AxumState(shared): AxumState<Shared>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_canonical());
    if let (true, Some(ip)) = (api_relative(path).is_some(), peer) {
        let mut state = lock(&shared);
        let left = state
            .pacing
            .as_mut()
            .and_then(|p| p.penalty_left(ip, Instant::now()));
        if let Some(left) = left {
            state.counters.penalty_rejections += 1;
            tracing::info!(%ip, ?left, "sandbox refused a request: penalty box");
            return Reject::too_many_requests(retry_after(left)).into_response();
        }
    }
    next.run(request).await
}

/// Counts an authenticated request of `credential` against its budgets, or refuses it (and
/// boxes `peer`) when it would exceed one.
pub(crate) fn check(
    state: &mut State,
    credential: &str,
    method: &str,
    path: &str,
    peer: IpAddr,
    arrival: Instant,
) -> Result<(), Reject> {
    let Some(pacer) = state.pacing.as_mut() else {
        return Ok(());
    };
    let relative = api_relative(path).unwrap_or(path);
    let ip = peer.to_canonical();
    match pacer.admit(credential, method, relative, ip, arrival, Instant::now()) {
        Ok(()) => Ok(()),
        Err(left) => {
            state.counters.pacing_violations += 1;
            tracing::info!(%ip, method, path = relative, "sandbox refused a request: pacing violation");
            Err(Reject::too_many_requests(retry_after(left)))
        }
    }
}

/// Seconds to announce in `Retry-After`: the penalty left, rounded up, at least 1 (a client
/// told 0 would retry at once into the same full window).
fn retry_after(left: Duration) -> u64 {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    secs.max(1)
}
