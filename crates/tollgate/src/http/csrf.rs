//! Cross-site request protection for everything that changes state (except the webhooks, which
//! are signed): the request's `Origin`, when sent, must be our own, and a per-browser token from the
//! `tollgate_csrf` cookie must come back as the `csrf` form field or the `X-CSRF-Token` header.

use axum::body::{to_bytes, Body};
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method};
use axum::response::{IntoResponse, Response};

use super::error::{Failure, Surface};
use crate::auth::cookie;
use crate::state::AppState;

/// The CSRF cookie's name (`__Host-` prefixed under https, like the session's).
pub(crate) fn csrf_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-tollgate_csrf"
    } else {
        "tollgate_csrf"
    }
}

fn token_cookie(state: &AppState, token: &str) -> HeaderValue {
    let name = csrf_cookie_name(state.secure_cookies);
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={token}; Path=/; HttpOnly; SameSite=Lax{secure}")).expect("cookie text is ASCII")
}

/// A `Set-Cookie` with a fresh token (sign-in rotates it).
pub(crate) fn new_token_cookie(state: &AppState) -> HeaderValue {
    token_cookie(state, &tollgate_core::random_token(32))
}
/// Posts that prove themselves with a signature instead.
const SIGNED_WEBHOOKS: [&str; 2] = ["/api/stripe-webhook", "/api/clerk-webhook"];
/// Form posts are small; a larger one is refused before it is read.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The token to embed in forms rendered for this request.
#[derive(Clone)]
pub(crate) struct CsrfToken(pub(crate) String);

impl FromRequestParts<AppState> for CsrfToken {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<CsrfToken>().cloned().unwrap_or(CsrfToken(String::new())))
    }
}

fn valid_token(t: &str) -> bool {
    t.len() == 32 && t.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Browsers send `Sec-Fetch-Mode` (all current ones) and a `Mozilla/` user agent; curl and SDKs
/// send neither.
fn from_a_browser(headers: &axum::http::HeaderMap) -> bool {
    headers.contains_key("sec-fetch-mode")
        || headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).is_some_and(|ua| ua.starts_with("Mozilla/"))
}

/// `answer` for `request` if it passes the cross-site check (`http::outer`'s steps of Tollgate's
/// own routes), with the token cookie set on the answer when the browser had none.
pub(crate) async fn protected<Answer>(state: &AppState, request: Request, answer: impl FnOnce(Request) -> Answer) -> Response
where
    Answer: std::future::Future<Output = Response>,
{
    // Stripe's and Clerk's deliveries are no browser's: no token to make, no cookie to set.
    if SIGNED_WEBHOOKS.contains(&request.uri().path()) {
        return answer(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let existing = cookie(&parts, csrf_cookie_name(state.secure_cookies)).filter(|t| valid_token(t)).map(str::to_string);
    let token = existing.clone().unwrap_or_else(|| tollgate_core::random_token(32));
    parts.extensions.insert(CsrfToken(token.clone()));
    let unsafe_method = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let mut request = Request::from_parts(parts, body);
    if unsafe_method {
        let (parts, body) = request.into_parts();
        let surface = Surface::of(&parts);
        if let Some(origin) = parts.headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            if origin != state.public_origin {
                return Failure::forbidden(surface, "This request came from another site and was refused.").into_response();
            }
        }
        let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
            return Failure::too_large(surface).into_response();
        };
        let sent = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| form_urlencoded::parse(&bytes).find(|(k, _)| k == "csrf").map(|(_, v)| v.into_owned()));
        let lacking = match (&existing, &sent) {
            (Some(a), Some(b)) if a == b => None,
            (None, _) => Some("the CSRF cookie (GET a page first and send its Set-Cookie back)"),
            (Some(_), None) => Some("the `csrf` form field or the X-CSRF-Token header, holding the CSRF cookie's value"),
            (Some(_), Some(_)) => Some("a `csrf` form field or X-CSRF-Token header that matches the CSRF cookie (the one sent does not)"),
        };
        if let Some(lacking) = lacking {
            // A person in a browser reloads; a script is told what it left out.
            let message = if from_a_browser(&parts.headers) {
                "This form has expired. Reload the page and try again.".to_string()
            } else {
                format!(
                    "Refused by cross-site request protection: this request lacks {lacking} ({}).",
                    csrf_cookie_name(state.secure_cookies)
                )
            };
            return Failure::forbidden(surface, &message).into_response();
        }
        request = Request::from_parts(parts, Body::from(bytes));
    }
    let mut response = answer(request).await;
    if existing.is_none() {
        response.headers_mut().append(header::SET_COOKIE, token_cookie(state, &token));
    }
    response
}
