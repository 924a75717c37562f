//! The steps around every answer, outermost first: the request's span, log and metrics
//! (`http::trace`), the security headers on Tollgate's own answers (`http::headers`), and a
//! browser's way back from Clerk's handshake (`http::clerk_handshake`). The router runs them as
//! one layer; the product's lane (`http::lane`) calls them the same way, without the router.
//! Tollgate's own routes then take two more: the request deadline (`http::deadline`) and the
//! cross-site check (`http::csrf`), one layer too. One layer for several steps: each of axum's
//! `from_fn` layers clones the service inside it and boxes a future on every request.

use std::future::Future;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::{clerk_handshake, csrf, deadline, headers, trace};
use crate::state::AppState;

/// The router's layer.
pub(crate) async fn outer_steps(State(state): State<AppState>, request: Request, next: Next) -> Response {
    around(&state, request, |request| next.run(request)).await
}

/// The router's layer around its own routes (inside [`outer_steps`], outside the body limit).
pub(crate) async fn own_route_steps(State(state): State<AppState>, request: Request, next: Next) -> Response {
    deadline::within_deadline(request, |request| csrf::protected(&state, request, |request| next.run(request))).await
}

/// `answer` for `request`, inside the outer steps.
pub(crate) async fn around<Answer>(state: &AppState, request: Request, answer: impl FnOnce(Request) -> Answer) -> Response
where
    Answer: Future<Output = Response>,
{
    trace::traced(request, |request| async move {
        let mut response = clerk_handshake::resolved(state, request, answer).await;
        headers::secure(state, &mut response);
        response
    })
    .await
}
