//! The service each client connection is served by: the access list, the access log and CORS
//! around every request, then the proxy straight away for a path passed on to IBKR — the hot
//! path, a request a client makes many times a second — and the router for the few answered
//! here.
//!
//! The proxy is called directly rather than as the router's fallback: the router's layers
//! (route lookup, a boxed middleware, the handler's extractors) each move the request and its
//! future once more, a few percent of the gateway's CPU a request (docs/benchmarks.md).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use tower_service::Service;

use crate::proxy;
use crate::router;
use crate::state::Shared;

/// Makes a [`Front`] for each accepted connection (its peer's address).
#[derive(Clone)]
pub(crate) struct MakeFront {
    state: Shared,
    routes: Router,
}

impl MakeFront {
    pub(crate) fn new(state: Shared) -> Self {
        Self {
            routes: router::router(state.clone()),
            state,
        }
    }
}

impl Service<SocketAddr> for MakeFront {
    type Response = Front;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Front, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, peer: SocketAddr) -> Self::Future {
        std::future::ready(Ok(Front {
            state: self.state.clone(),
            routes: self.routes.clone(),
            peer,
        }))
    }
}

/// One client connection's service.
#[derive(Clone)]
pub(crate) struct Front {
    state: Shared,
    routes: Router,
    peer: SocketAddr,
}

impl<B> Service<axum::http::Request<B>> for Front
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let state = self.state.clone();
        let peer = self.peer;
        let request = request.map(Body::new);
        if let Some(refusal) = router::refusal(&state, peer, &request) {
            return Box::pin(std::future::ready(Ok(refusal)));
        }
        let path = request.uri().path();
        if proxy::forwarded_path(path) && !router::is_local(path) {
            return Box::pin(async move {
                Ok(router::access_log(request, |request| {
                    router::cors(&state, request, |request| proxy::forward(&state, request))
                })
                .await)
            });
        }
        let mut routes = self.routes.clone();
        Box::pin(async move {
            Ok(router::access_log(request, |mut request: Request| {
                request.extensions_mut().insert(ConnectInfo(peer));
                router::cors(&state, request, |request| async move {
                    let response = match routes.call(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    // A forwarded answer's times, put there by the router's fallback.
                    let timing = response.extensions().get::<proxy::Timing>().copied();
                    (response, timing)
                })
            })
            .await)
        })
    }
}
