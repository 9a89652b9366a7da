//! Fault injection: make the sandbox misbehave the way IBKR does (dropped or competing
//! sessions, expired tokens, error statuses, slowness, nightly resets) so recovery code can be
//! tested in seconds. Applied by a middleware in front of every endpoint.

use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::paths::api_relative;
use crate::reply::Reject;
use crate::state::{Shared, lock};

/// Applies the scripted failures and delays to REST API (`/v1/api`, `/v1/portal`), `/gw` and
/// `/oauth2` requests (not to the `/ip` helper).
pub(crate) async fn middleware(
    AxumState(shared): AxumState<Shared>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let applies =
        api_relative(path).is_some() || path.starts_with("/gw/") || path.starts_with("/oauth2/");
    if !applies {
        return next.run(request).await;
    }
    let (fail, delay, cut) = {
        let mut state = lock(&shared);
        let fail = state.faults.fail_next.pop_front();
        let cut = fail.is_none() && state.faults.cut_next > 0;
        if cut {
            state.faults.cut_next -= 1;
        }
        if fail.is_some() || cut {
            state.faults.injected += 1;
        }
        (fail, state.faults.delay, cut)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    match fail {
        Some(fail) => {
            let mut response = Reject::ibkr(fail.status, fail.message).into_response();
            if let Some(secs) = fail.retry_after
                && let Ok(value) = HeaderValue::from_str(&secs.to_string())
            {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
            if response.status() == StatusCode::OK {
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            response
        }
        None if cut => cut_off(next.run(request).await).await,
        None => next.run(request).await,
    }
}

/// Sends the first half of `response`'s body, then fails the stream, so the server closes
/// the connection mid-response as a dying proxy or an IBKR restart would.
async fn cut_off(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = vec![
        Ok(half),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "sandbox fault: connection closed mid-response",
        )),
    ];
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(
        parts,
        axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
    )
}
