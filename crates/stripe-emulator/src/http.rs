//! Every route and layer of the emulator on one screen, plus the API request extractor.

use std::sync::Arc;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

use crate::app::Emulator;
use crate::error::ApiError;
use crate::form::Params;
use crate::resources::{
    billing_portal, checkout, customers, events, invoices, payment_intents, payment_methods, prices, products, subscriptions,
    webhook_endpoints,
};
use crate::store::{new_id, IdempotencyEntry, RequestInfo, API_VERSION};

/// The largest request body accepted (Stripe's own limit is far below this for form posts).
const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn router(emulator: Emulator) -> Router {
    let api = Router::new()
        .route("/v1/products", get(products::list).post(products::create))
        .route("/v1/products/{id}", get(products::retrieve).post(products::update).delete(products::delete))
        .route("/v1/prices", get(prices::list).post(prices::create))
        .route("/v1/prices/{id}", get(prices::retrieve).post(prices::update))
        .route("/v1/customers", get(customers::list).post(customers::create))
        .route("/v1/customers/{id}", get(customers::retrieve).post(customers::update).delete(customers::delete))
        .route("/v1/customers/{id}/payment_methods", get(payment_methods::list_for_customer))
        .route("/v1/payment_methods", get(payment_methods::list).post(payment_methods::create))
        .route("/v1/payment_methods/{id}", get(payment_methods::retrieve).post(payment_methods::update))
        .route("/v1/payment_methods/{id}/attach", post(payment_methods::attach))
        .route("/v1/payment_methods/{id}/detach", post(payment_methods::detach))
        .route("/v1/checkout/sessions", get(checkout::list).post(checkout::create))
        .route("/v1/checkout/sessions/{id}", get(checkout::retrieve))
        .route("/v1/checkout/sessions/{id}/expire", post(checkout::expire))
        .route("/v1/checkout/sessions/{id}/line_items", get(checkout::line_items))
        .route("/v1/subscriptions", get(subscriptions::list).post(subscriptions::create))
        .route("/v1/subscriptions/{id}", get(subscriptions::retrieve).post(subscriptions::update).delete(subscriptions::cancel))
        .route("/v1/invoices", get(invoices::list))
        .route("/v1/invoices/{id}", get(invoices::retrieve))
        .route("/v1/payment_intents", get(payment_intents::list))
        .route("/v1/payment_intents/{id}", get(payment_intents::retrieve))
        .route("/v1/events", get(events::list))
        .route("/v1/events/{id}", get(events::retrieve))
        .route("/v1/webhook_endpoints", get(webhook_endpoints::list).post(webhook_endpoints::create))
        .route(
            "/v1/webhook_endpoints/{id}",
            get(webhook_endpoints::retrieve).post(webhook_endpoints::update).delete(webhook_endpoints::delete),
        )
        .route("/v1/billing_portal/sessions", post(billing_portal::create))
        .fallback(unrecognized_url)
        .method_not_allowed_fallback(unrecognized_url)
        // Order, outermost first: Stripe's response headers, then the API key, then idempotency,
        // so a 401 is never stored under an idempotency key (as in Stripe).
        .layer(middleware::from_fn_with_state(emulator.clone(), idempotency))
        .layer(middleware::from_fn(require_api_key))
        .layer(middleware::from_fn_with_state(emulator.clone(), stripe_headers));

    let pages = Router::new()
        .route("/c/pay/{id}", get(crate::pages::checkout_page).post(crate::pages::checkout_submit))
        .route("/p/session/{id}", get(crate::pages::portal_page))
        .route("/p/session/{id}/{action}", post(crate::pages::portal_action))
        .layer(middleware::from_fn_with_state(emulator.clone(), same_site_only));

    let control = Router::new()
        .route("/_emulator/health", get(|| async { Json(serde_json::json!({"ok": true})) }))
        .route("/_emulator/reset", post(crate::resources::control::reset))
        .route("/_emulator/deliveries", get(crate::resources::control::deliveries))
        .route("/_emulator/stats", get(crate::resources::control::stats))
        .route("/_emulator/checkout/sessions/{id}/complete", post(crate::resources::control::complete_checkout))
        .route("/_emulator/clock/advance", post(crate::resources::control::advance_clock))
        .route("/_emulator/webhook_endpoints/{id}/test_delivery", post(crate::resources::control::test_delivery))
        .layer(middleware::from_fn_with_state(emulator.clone(), same_site_only));

    Router::new().merge(pages).merge(control).merge(api).with_state(emulator)
}

/// The hosted pages and control endpoints answer only requests addressed to this emulator (its
/// public host or loopback: a page on another site cannot reach them through DNS rebinding) and
/// refuse form posts sent from another site (the page of a site the developer visits, say).
async fn same_site_only(State(emulator): State<Emulator>, request: Request, next: Next) -> Response {
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

async fn unrecognized_url(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", format!("Unrecognized request URL ({method}: {}).", uri.path()))
}

/// A request id for each call, and the `Request-Id` / `Stripe-Version` headers Stripe answers with.
async fn stripe_headers(State(emulator): State<Emulator>, mut request: Request, next: Next) -> Response {
    emulator.api_requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let request_id = new_id("req_");
    let version = request.headers().get("stripe-version").and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(v) = &version {
        if !valid_api_version(v) {
            return ApiError::invalid(format!("Invalid Stripe API version: {v}"), None, "api_version_invalid").into_response();
        }
    }
    request.extensions_mut().insert(RequestId(request_id.clone()));
    // Stripe's limiter runs before anything else, idempotency included: a 429 is never replayed.
    let mut response = if emulator.admit_request() {
        next.run(request).await
    } else {
        let mut limited = ApiError::rate_limited().into_response();
        limited.headers_mut().insert("stripe-rate-limited-reason", HeaderValue::from_static("global-rate"));
        limited
    };
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
struct RequestId(String);

/// Any `sk_test_…` or `rk_test_…` key, as a Bearer token or as the user of Basic auth (`curl -u sk_test_…:`).
async fn require_api_key(request: Request, next: Next) -> Response {
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
        let decoded = decode_base64(basic.trim()).ok_or_else(no_key)?;
        decoded.split(':').next().unwrap_or_default().to_string()
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

/// Standard base64 (only for Basic auth), without a dependency for one header.
fn decode_base64(input: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::new();
    for c in input.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `Idempotency-Key` on POST: the first response is stored and replayed for the same key and
/// parameters; other parameters under the same key are an `idempotency_error`.
async fn idempotency(State(emulator): State<Emulator>, request: Request, next: Next) -> Response {
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
struct IdempotencyKey(String);

/// A parsed API request: the form parameters (query string, then body) and who sent it.
pub struct ApiRequest {
    pub params: Params,
    pub info: RequestInfo,
    /// The request path, used as a list's `url`.
    pub path: String,
}

/// More expansions than any real request needs; each costs a walk of the response.
const MAX_EXPANSIONS: usize = 50;

impl ApiRequest {
    pub fn expand(&self) -> Result<Vec<String>, ApiError> {
        let paths = self.params.str_list("expand")?;
        if paths.len() > MAX_EXPANSIONS {
            return Err(ApiError::invalid(
                format!("You may expand at most {MAX_EXPANSIONS} properties in one request."),
                Some("expand"),
                "parameter_invalid_value",
            ));
        }
        Ok(paths)
    }
}

impl FromRequest<Emulator> for ApiRequest {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &Emulator) -> Result<Self, ApiError> {
        let request_id = request.extensions().get::<RequestId>().map(|r| r.0.clone());
        let idempotency_key = request.extensions().get::<IdempotencyKey>().map(|k| k.0.clone());
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let is_json =
            request.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with("application/json"));
        let body: Bytes = to_bytes(request.into_body(), MAX_BODY_BYTES).await.map_err(|_| ApiError::too_large())?;
        if is_json && !body.is_empty() {
            return Err(ApiError::bad_request(
                "Invalid request: the v1 API takes form-encoded bodies (Content-Type: application/x-www-form-urlencoded), not JSON.",
            ));
        }
        let mut params = Params::parse(query.as_bytes())?;
        params.extend(&body)?;
        Ok(ApiRequest { params, info: RequestInfo { id: request_id, idempotency_key }, path })
    }
}

/// A JSON response from a stored object, after applying the request's `expand[]`.
pub fn respond(emulator: &Emulator, request: &ApiRequest, object: &Value) -> Result<JsonBody, ApiError> {
    let expand = request.expand()?;
    emulator.read(|store| crate::expand::render(store, object, &expand).map(JsonBody))
}

/// A serialised JSON response body.
pub struct JsonBody(pub Vec<u8>);

impl JsonBody {
    pub fn of(value: &Value) -> JsonBody {
        JsonBody(serde_json::to_vec(value).unwrap_or_default())
    }
}

impl IntoResponse for JsonBody {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], self.0).into_response()
    }
}

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
