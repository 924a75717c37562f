//! Every request gets an overall deadline: whatever it waits on (a slow Stripe, a lease held
//! elsewhere), it is answered 503 with `Retry-After` within [`REQUEST_DEADLINE`].

use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{Failure, Surface};

/// Longer than any one Stripe call (6 s) plus a waiting sync (10 s), shorter than a proxy's patience.
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(25);

pub(crate) async fn request_deadline(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let surface = Surface::of(&parts);
    let request = Request::from_parts(parts, body);
    match tokio::time::timeout(REQUEST_DEADLINE, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Failure::timed_out(surface).into_response(),
    }
}
