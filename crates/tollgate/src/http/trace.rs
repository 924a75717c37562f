//! One span per request (request id, method, matched route) in which each failure is logged once,
//! with its internal cause; the request id goes back in `X-Request-Id`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use tracing::Instrument;

use super::error::ErrorDetail;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `answer` for `request` inside its span, logged and counted (`http::outer`).
pub(crate) async fn traced<Answer>(request: Request, answer: impl FnOnce(Request) -> Answer) -> Response
where
    Answer: std::future::Future<Output = Response>,
{
    // 64 random bits in hex: unique enough to find one request's lines, cheap on every request
    // (written on the stack; its one copy is the header's).
    let mut id = [0u8; 16];
    let _ = hex::encode_to_slice(rand::random::<u64>().to_be_bytes(), &mut id);
    let request_id = std::str::from_utf8(&id).unwrap_or_default();
    // A clone of the matched path shares its text (no copy per request).
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", |p| p.as_str());
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    // The client as the edge read it (`TRUSTED_PROXIES`), not the proxy in front.
    let client = request.extensions().get::<crate::gateway::headers::ClientAddr>().map(|c| c.ip());
    let span = tracing::info_span!("request", id = %request_id, method = %method, route = %route, client = tracing::field::Empty);
    if let Some(client) = client {
        span.record("client", tracing::field::display(client));
    }
    let started = Instant::now();
    let mut response = answer(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    let elapsed_ms = elapsed * 1000.0;
    // Labels from bounded sets only: the route template, a known method, the status.
    let route_label = if response.extensions().get::<super::gateway::FromProduct>().is_some() { "upstream" } else { route };
    crate::telemetry::metrics::observe_http(route_label, method, status, elapsed);
    let _entered = span.enter();
    match response.extensions().get::<ErrorDetail>() {
        Some(ErrorDetail(detail)) if status >= 500 => tracing::error!(status, elapsed_ms, error = %detail, "request failed"),
        Some(ErrorDetail(detail)) => tracing::info!(status, elapsed_ms, reason = %detail, "request refused"),
        None if crate::telemetry::access_log() => tracing::info!(status, elapsed_ms, "request"),
        None => tracing::debug!(status, elapsed_ms, "request"),
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(X_REQUEST_ID, v);
    }
    response
}
