//! The product's lane: in gateway mode, a request for a path no route of Tollgate's has goes from
//! the accept loop (`http::serve`) straight to the gateway's handler (`http::gateway::proxy`),
//! wrapped in the same outer steps the router gives it — the request's span and log, Clerk's
//! handshake, the security headers on Tollgate's own answers — as plain calls, not the router's
//! dispatch and boxed layers: every page, asset and API call of the product pays for this path.
//! The decision is on the canonical path (`http::edge`) with the matcher the router uses, over the
//! same list of paths (`http::router::OwnPaths`), so both ends agree on what is Tollgate's.

use axum::extract::{Request, State};
use axum::response::Response;

use super::router::OwnPaths;
use super::{clerk_handshake, gateway, headers, trace};
use crate::state::AppState;

#[derive(Clone)]
pub(crate) struct ProductLane {
    state: AppState,
    own: OwnPaths,
}

impl ProductLane {
    /// The lane for Tollgate's own router in gateway mode (without a product, the router answers all).
    pub(crate) fn new(state: &AppState, own: &OwnPaths) -> Option<ProductLane> {
        state.gateway.is_some().then(|| ProductLane { state: state.clone(), own: own.clone() })
    }

    /// Whether `path` (canonical) is the product's.
    pub(crate) fn takes(&self, path: &str) -> bool {
        !self.own.owns(path)
    }

    /// The product's answer, as the router's fallback would give it.
    pub(crate) async fn serve(&self, request: Request) -> Response {
        let state = &self.state;
        trace::traced(request, |request| async move {
            let mut response = clerk_handshake::resolved(state, request, |request| gateway::proxy(State(state.clone()), request)).await;
            headers::secure(state, &mut response);
            response
        })
        .await
    }
}
