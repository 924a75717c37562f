//! Every request gets an overall deadline: whatever it waits on (a slow Stripe, a lease held
//! elsewhere), it is answered 503 with `Retry-After` within [`REQUEST_DEADLINE`].

use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use super::error::{Failure, Surface};

/// Longer than any one Stripe call (6 s) plus a waiting sync (10 s), shorter than a proxy's patience.
pub(crate) const REQUEST_DEADLINE: Duration = Duration::from_secs(25);

/// `answer` for `request`, or the 503 once [`REQUEST_DEADLINE`] has passed (`http::outer`'s steps
/// of Tollgate's own routes).
pub(crate) async fn within_deadline<Answer>(request: Request, answer: impl FnOnce(Request) -> Answer) -> Response
where
    Answer: std::future::Future<Output = Response>,
{
    let (parts, body) = request.into_parts();
    let surface = Surface::of(&parts);
    let request = Request::from_parts(parts, body);
    match tokio::time::timeout(REQUEST_DEADLINE, answer(request)).await {
        Ok(response) => response,
        Err(_) => Failure::timed_out(surface).into_response(),
    }
}
