//! The product's lane: in gateway mode, a request for a path no route of Tollgate's has goes from
//! the accept loop (`http::serve`) straight to the gateway (`http::gateway::to_the_product`, what
//! the router's fallback calls too), inside the same outer steps the router gives it
//! (`http::outer`: the request's span and log, Clerk's handshake, the security headers on
//! Tollgate's own answers) as plain calls, not the router's dispatch and boxed layers: every page,
//! asset and API call of the product pays for this path. The decision is on the canonical path
//! (`http::edge`) with the matcher the router uses, over the same list of paths
//! (`http::router::OwnPaths`), so both ends agree on what is Tollgate's.

use axum::extract::Request;
use axum::response::Response;

use super::router::OwnPaths;
use super::{gateway, outer};
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

    /// The state a request of the product's is answered with, when `path` (canonical) is the
    /// product's (one shared count is taken per request, not more).
    pub(crate) fn takes(&self, path: &str) -> Option<AppState> {
        (!self.own.owns(path)).then(|| self.state.clone())
    }
}

/// The product's answer to `request`, as the router's fallback would give it.
pub(crate) async fn serve(state: AppState, request: Request) -> Response {
    outer::around(&state, request, |request| gateway::to_the_product(&state, request)).await
}
