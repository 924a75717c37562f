//! The layers around the API and the hosted pages: Stripe's response headers and rate limit, the
//! API key, idempotency, and the same-site guard of pages and control endpoints.

use std::io::Write as _;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::api::form::Params;
use crate::engine::Emulator;
use crate::model::{new_id, ApiError, API_VERSION};
use crate::store::IdempotencyEntry;

/// The largest request body accepted (Stripe's own limit is far below this for form posts).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The hosted pages and control endpoints answer only requests addressed to this emulator (its
/// public host or loopback: a page on another site cannot reach them through DNS rebinding) and
/// refuse form posts sent from another site (the page of a site the developer visits, say).
pub async fn same_site_only(State(emulator): State<Emulator>, request: Request, next: Next) -> Response {
    let host_of = |authority: &str| authority.rsplit_once(':').map_or(authority, |(host, _)| host).to_ascii_lowercase();
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(host_of).unwrap_or_default();
    let own_host = emulator.public_url.split("://").nth(1).map(host_of).unwrap_or_default();
    if !["localhost", "127.0.0.1", "[::1]", own_host.as_str()].contains(&host.as_str()) {
        return ApiError::new(StatusCode::FORBIDDEN, "invalid_request_error", "This emulator does not answer for that host.")
            .into_response();
    }
    if request.method() != Method::GET {
        let from_elsewhere = request.headers().get("sec-fetch-site").is_some_and(|v| v == "cross-site")
            || request.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).is_some_and(|origin| {
                let authority = origin.split("://").nth(1).unwrap_or_default();
                request.headers().get(header::HOST).and_then(|h| h.to_str().ok()) != Some(authority)
            });
        if from_elsewhere {
            return ApiError::new(StatusCode::FORBIDDEN, "invalid_request_error", "Cross-site form posts are refused.").into_response();
        }
    }
    next.run(request).await
}

pub async fn unrecognized_url(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("Unrecognized request URL ({method}: {}).", uri.path()))
}

/// A request id for each call, and the `Request-Id` / `Stripe-Version` headers Stripe answers with.
pub async fn stripe_headers(State(emulator): State<Emulator>, mut request: Request, next: Next) -> Response {
    emulator.api_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let request_id = new_id("req_");
    let version = request.headers().get("stripe-version").and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(v) = &version {
        if !valid_api_version(v) {
            return ApiError::invalid(format!("Invalid Stripe API version: {v}"), None, "api_version_invalid").into_response();
        }
    }
    request.extensions_mut().insert(RequestId(request_id.clone()));
    emulator.delete_expired_test_clocks();
    let called = (request.method().clone(), request.uri().path().to_string());
    // Stripe's limiter runs before anything else, idempotency included: a 429 is never replayed.
    let mut response = if emulator.admit_request() {
        next.run(request).await
    } else {
        let mut limited = ApiError::rate_limited().into_response();
        limited.headers_mut().insert("stripe-rate-limited-reason", HeaderValue::from_static("global-rate"));
        limited
    };
    if emulator.recorder.is_some() {
        response = record(&emulator, &called, response).await;
    }
    if !emulator.config.latency.is_zero() {
        tokio::time::sleep(emulator.config.latency).await;
    }
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(version.as_deref().unwrap_or(API_VERSION)) {
        headers.insert("stripe-version", v);
    }
    response
}

/// Append an answer to the record file (`--record-responses`) as `{method, path, status, body}`.
async fn record(emulator: &Emulator, (method, path): &(Method, String), response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, usize::MAX).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "the answer could not be recorded").into_response();
    };
    if let (Ok(body), Some(recorder)) = (serde_json::from_slice::<serde_json::Value>(&bytes), &emulator.recorder) {
        let line = serde_json::json!({ "method": method.as_str(), "path": path, "status": parts.status.as_u16(), "body": body });
        let mut file = recorder.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(err) = writeln!(file, "{line}") {
            tracing::error!(%err, "cannot record a response");
        }
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// `YYYY-MM-DD` optionally followed by `.name` (`2025-03-31.basil`).
fn valid_api_version(v: &str) -> bool {
    let (date, name) = v.split_once('.').unwrap_or((v, "x"));
    let b = date.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Clone)]
pub struct RequestId(pub String);

/// Any `sk_test_…` or `rk_test_…` key, as a Bearer token or as the user of Basic auth (`curl -u sk_test_…:`).
pub async fn require_api_key(request: Request, next: Next) -> Response {
    match api_key(request.headers()) {
        Ok(_) => next.run(request).await,
        Err(err) => err.into_response(),
    }
}

fn api_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let no_key = || {
        ApiError::unauthorized("You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').")
    };
    let value = headers.get(header::AUTHORIZATION).ok_or_else(no_key)?.to_str().map_err(|_| no_key())?;
    let key = if let Some(token) = value.strip_prefix("Bearer ") {
        token.trim().to_string()
    } else if let Some(basic) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(basic.trim()).map_err(|_| no_key())?;
        String::from_utf8_lossy(&decoded).split(':').next().unwrap_or_default().to_string()
    } else {
        return Err(no_key());
    };
    if key.is_empty() {
        return Err(no_key());
    }
    let test_key = (key.starts_with("sk_test_") || key.starts_with("rk_test_")) && key.len() > 8;
    if !test_key {
        let shown = if key.len() > 8 { format!("{}{}", &key[..8.min(key.len())], "*".repeat(4)) } else { key.clone() };
        return Err(ApiError::unauthorized(format!("Invalid API Key provided: {shown}")));
    }
    Ok(key)
}

/// `Idempotency-Key` on POST: the first response is stored and replayed for the same key and
/// parameters; other parameters under the same key are an `idempotency_error`.
pub async fn idempotency(State(emulator): State<Emulator>, request: Request, next: Next) -> Response {
    let key = request.headers().get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    let Some(key) = key.filter(|_| request.method() == Method::POST) else {
        return next.run(request).await;
    };
    if key.is_empty() || key.len() > 255 {
        return ApiError::invalid("Idempotency-Key must be between 1 and 255 characters long.", None, "idempotency_key_invalid")
            .into_response();
    }
    let (parts, body) = request.into_parts();
    let bytes = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => return ApiError::too_large().into_response(),
    };
    let fingerprint = format!(
        "{} {}?{}",
        parts.method,
        parts.uri.path(),
        Params::parse(&bytes).map(|p| p.fingerprint()).unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned())
    );
    {
        let mut store = emulator.lock();
        match store.idempotency.get(&key) {
            Some(IdempotencyEntry::Done { fingerprint: stored, status, body }) => {
                if *stored != fingerprint {
                    return mismatch(&key);
                }
                let mut response = (StatusCode::from_u16(*status).unwrap_or(StatusCode::OK), body.as_ref().clone()).into_response();
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
                if let Ok(v) = HeaderValue::from_str(&key) {
                    headers.insert("idempotency-key", v);
                }
                return response;
            }
            Some(IdempotencyEntry::InFlight { fingerprint: stored }) => {
                if *stored != fingerprint {
                    return mismatch(&key);
                }
                return ApiError {
                    code: Some("idempotency_key_in_use".into()),
                    ..ApiError::new(
                        StatusCode::CONFLICT,
                        "idempotency_error",
                        "There is currently another in-progress request using this Stripe-Idempotency-Key. Please try again later.",
                    )
                }
                .into_response();
            }
            None => {
                store.idempotency.insert(key.clone(), IdempotencyEntry::InFlight { fingerprint: fingerprint.clone() });
            }
        }
    }
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(IdempotencyKey(key.clone()));
    let response = next.run(request).await;
    let status = response.status();
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap_or_default();
    {
        let mut store = emulator.lock();
        // Requests rejected before the endpoint ran (bad parameters, conflicts, rate limits) are not
        // stored, so the same key may be retried with corrected parameters, as in Stripe.
        let stored = !matches!(status, StatusCode::BAD_REQUEST | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS);
        if stored {
            let entry = IdempotencyEntry::Done { fingerprint, status: status.as_u16(), body: Arc::new(bytes.to_vec()) };
            store.remember_idempotent(key.clone(), entry);
        } else {
            store.idempotency.remove(&key);
        }
    }
    let mut response = Response::from_parts(parts, Body::from(bytes));
    if let Ok(v) = HeaderValue::from_str(&key) {
        response.headers_mut().insert("idempotency-key", v);
    }
    response
}

fn mismatch(key: &str) -> Response {
    ApiError::idempotency(format!(
        "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."
    ))
    .into_response()
}

#[derive(Clone)]
pub struct IdempotencyKey(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions() {
        assert!(valid_api_version("2025-03-31.basil"));
        assert!(valid_api_version("2020-08-27"));
        assert!(!valid_api_version("latest"));
        assert!(!valid_api_version("2025-3-31"));
    }

    #[test]
    fn keys() {
        let mut h = HeaderMap::new();
        assert!(api_key(&h).is_err());
        h.insert(header::AUTHORIZATION, "Bearer sk_test_123".parse().unwrap());
        assert_eq!(api_key(&h).unwrap(), "sk_test_123");
        h.insert(header::AUTHORIZATION, "Bearer pk_test_123".parse().unwrap());
        assert!(api_key(&h).is_err());
        h.insert(header::AUTHORIZATION, "Basic c2tfdGVzdF9hYmM6".parse().unwrap()); // sk_test_abc:
        assert_eq!(api_key(&h).unwrap(), "sk_test_abc");
    }
}
