//! The step (of `http::outer`) that takes a browser back from Clerk's handshake (`auth::clerk::handshake`), once
//! per request and before any handler, since resolving a nonce spends it: a development instance
//! answers with the 307 back to the page (the cookies set on the way); a production instance lets
//! the request go on, decided by the handshake's session token, and adds its `Set-Cookie` lines
//! to whatever the answer is (Tollgate's own, or the product's).

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::{Failure, Surface};
use crate::auth::clerk::handshake::Resolution;
use crate::auth::clerk::{ResolvedHandshake, Verdict};
use crate::state::AppState;

/// `answer` for `request` once its handshake, if it carries one, is resolved (`http::outer`).
pub(crate) async fn resolved<Answer>(state: &AppState, request: Request, answer: impl FnOnce(Request) -> Answer) -> Response
where
    Answer: std::future::Future<Output = Response>,
{
    let Some(clerk) = state.clerk.as_ref().filter(|clerk| clerk.may_carry_handshake(&request)) else {
        return answer(request).await;
    };
    let (mut parts, body) = request.into_parts();
    let resolution = match clerk.resolve_handshake(&parts).await {
        Ok(Some(resolution)) => resolution,
        Ok(None) => return answer(Request::from_parts(parts, body)).await,
        Err(e) => return Failure::from_auth(Surface::of(&parts), e).into_response(),
    };
    let set_cookies = match resolution {
        Resolution::Redirect(headers) => return (StatusCode::TEMPORARY_REDIRECT, headers).into_response(),
        Resolution::Ignored => {
            parts.extensions.insert(ResolvedHandshake(None));
            None
        }
        Resolution::Decided { signed_in, set_cookies } => {
            let verdict = signed_in.filter(|claims| !claims.pending).map_or(Verdict::SignedOut, Verdict::SignedIn);
            parts.extensions.insert(ResolvedHandshake(Some(verdict)));
            Some(set_cookies)
        }
    };
    let mut response = answer(Request::from_parts(parts, body)).await;
    for line in set_cookies.iter().flat_map(|headers| headers.get_all(header::SET_COOKIE)) {
        response.headers_mut().append(header::SET_COOKIE, line.clone());
    }
    response
}
