//! Security headers on every answer of Tollgate's own (not the product's, nor forward-auth's to
//! its proxy): a strict Content-Security-Policy (the pages use no script, no inline style and are
//! never framed), no MIME sniffing, a referrer that leaves only as an origin, and HSTS when the
//! site is served over https.

use axum::http::{header, HeaderValue};
use axum::response::Response;

use crate::state::AppState;

const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Add the security headers to `response`, unless it is the product's or meant for a proxy.
pub(crate) fn secure(state: &AppState, response: &mut Response) {
    let extensions = response.extensions();
    if extensions.get::<super::gateway::FromProduct>().is_some() || extensions.get::<super::gateway::ForProxy>().is_some() {
        return; // the product's own page with its own policy, or no page at all
    }
    let headers = response.headers_mut();
    // A page that loads Clerk's SDK sets its own, wider policy (`http::accounts`).
    headers.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("strict-origin-when-cross-origin"));
    if state.secure_cookies {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000; includeSubDomains"));
    }
}
